"""SubscribeConnection's offer/answer state machine, on a fake transport (no sockets): offers
batch changes, one at a time; slots are released and reused with unique msids; an answer that
never comes is offered again; candidates wait for the first answer; a client's offer is
answered (WHEP)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fake_transport import FakeTransport
from visio_sfu.errors import TransportError
from visio_sfu.events import NegotiationFailed, SubscriberOffer
from visio_sfu.publisher import Codec, Publisher
from visio_sfu.subscribe import SubscribeConnection


def track(sid: str, kind: str = "video") -> Publisher:
    codec = Codec("video/VP8", 90000, 96) if kind == "video" else Codec("audio/opus", 48000, 111)
    return Publisher(sid, "PA_" + sid, kind, "camera", "0", codec, {}, lambda b: True, 1)


class Client:
    """The far end: collects the connection's events."""

    def __init__(self) -> None:
        self.events: asyncio.Queue = asyncio.Queue()

    async def offer(self) -> SubscriberOffer:
        while True:
            event = await asyncio.wait_for(self.events.get(), 5)
            if isinstance(event, SubscriberOffer):
                return event


def connection(client: Client) -> SubscribeConnection:
    return SubscribeConnection(
        "PA_me", client.events.put_nowait, lambda reason: None, transport_factory=FakeTransport
    )


async def answered(sub: SubscribeConnection, offer: SubscriberOffer) -> None:
    done = sub.negotiations + 1
    sub.on_answer(offer.offer_id, "v=0\r\nm=video 9 x 96\r\n")
    for _ in range(100):
        if sub.negotiations >= done:
            return
        await asyncio.sleep(0)
    raise AssertionError("answer not applied")


async def test_changes_are_batched_and_slots_reused_with_unique_msids():
    client = Client()
    sub = connection(client)
    transport: FakeTransport = sub.transport
    a, b = track("A"), track("B", "audio")
    sub.add(a)
    sub.add(b)
    first = await client.offer()
    assert [t.track_sid for t in first.tracks] == ["A", "B"] and first.offer_id == "s1"
    sub.add(track("C"))  # while s1 waits: goes in the next offer, not another one
    await asyncio.sleep(0.01)
    assert len(transport.offers) == 1
    await answered(sub, first)
    second = await client.offer()
    assert [t.track_sid for t in second.tracks] == ["A", "B", "C"]
    assert a.downtracks and a.downtracks[0].bound  # bound once negotiated
    await answered(sub, second)
    sub.remove("A")
    sub.remove("C")
    released = await client.offer()
    await answered(sub, released)
    msids = [s.msid for s in transport.slots]
    assert len(set(msids)) == len(msids)
    assert [s.direction for s in transport.slots] == ["inactive", "sendonly", "inactive"]
    sub.add(track("D"))  # takes a released video slot, no new m-section
    reused = await client.offer()
    assert len(transport.slots) == 3
    assert {t.track_sid: t.mid for t in reused.tracks}["D"] in ("0", "2")
    assert len({s.msid for s in transport.slots}) == 3
    await sub.close()
    assert transport.closed and not a.downtracks


async def test_an_unanswered_offer_is_offered_again(monkeypatch):
    import visio_sfu.subscribe as module

    monkeypatch.setattr(module, "ANSWER_TIMEOUT", 0.05)
    client = Client()
    sub = connection(client)
    sub.add(track("A"))
    first = await client.offer()
    again = await client.offer()  # nobody answered: the server offers again
    assert again.offer_id != first.offer_id
    with pytest.raises(TransportError):
        sub.on_answer(first.offer_id, "v=0\r\nm=video 9 x 96\r\n")  # too late for that one
    await answered(sub, again)
    await sub.close()


async def test_a_rejected_answer_is_reported():
    client = Client()
    sub = connection(client)

    async def refuse(sdp: str) -> None:
        from visio_sfu.errors import TransportError

        raise TransportError("answer rejected: bad")

    sub.transport.apply_answer = refuse
    sub.add(track("A"))
    offer = await client.offer()
    sub.on_answer(offer.offer_id, "v=0\r\nm=video 9 x 96\r\n")
    event = await asyncio.wait_for(client.events.get(), 5)
    assert isinstance(event, NegotiationFailed) and event.offer_id == offer.offer_id
    await sub.close()


async def test_candidates_wait_for_the_first_answer():
    client = Client()
    sub = connection(client)
    sub.add(track("A"))
    offer = await client.offer()
    await sub.add_ice_candidate({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"})
    assert sub.transport.candidates == []
    await answered(sub, offer)
    assert len(sub.transport.candidates) == 1
    await sub.add_ice_candidate(None)
    assert sub.transport.candidates[-1] is None
    await sub.close()


async def test_a_clients_offer_is_answered_with_the_tracks_it_can_take():
    client = Client()
    sub = connection(client)
    offer = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=recvonly\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n"
    )
    v, a = track("V"), track("A", "audio")
    answer = await sub.answer(offer, [v, a])
    assert "a=mid:0" in answer and sub.negotiations == 1
    directions = [s.direction for s in sub.transport.slots]
    assert directions == ["sendonly", "sendonly", "inactive"]
    assert v.downtracks[0].bound and a.downtracks[0].bound
    with pytest.raises(TransportError):
        await sub.answer(offer, [v])  # only once, before any offer of its own
    await sub.close()


async def test_a_reused_slot_is_bound_by_the_answer_to_the_offer_that_carries_it():
    """Breakout rooms: a track given a slot that was negotiated before (it has a mid) while an
    offer is out, where that slot is still inactive, is bound only after the answer to the next
    offer: bound earlier, it would send what the client drops; reusing the slot's munger starts
    a new epoch (no hole in the numbering for what it did not send meanwhile)."""
    client = Client()
    sub = connection(client)
    sub.add(track("A"))
    first = await client.offer()
    await answered(sub, first)
    sub.remove("A")  # the slot is released ...
    second = await client.offer()
    await answered(sub, second)  # ... and free once that is answered
    sub.add(track("X", "audio"))  # something else to offer: an offer goes out ...
    third = await client.offer()
    c = track("C")
    dt = sub.add(c)  # ... and C takes the free slot (mid "0") while it waits
    assert [t.track_sid for t in third.tracks] == ["X"], "C is not in this offer"
    await answered(sub, third)
    assert not dt.bound, "bound by the answer to an offer where its section is inactive"
    fourth = await client.offer()
    assert {t.track_sid: t.mid for t in fourth.tracks}["C"] == "0"
    await answered(sub, fourth)
    assert dt.bound
    await sub.close()
