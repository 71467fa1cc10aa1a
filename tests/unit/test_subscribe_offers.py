"""SDP shapes that real clients send and accept (seen in Chromium, Firefox and GStreamer).

- Subscriber offers: a released slot (an ``inactive`` m-section) and a slot reused by a new track
  must each carry an msid no other m-section has: Chromium rejects a whole offer with
  "Duplicate a=msid lines detected" (every released slot carried ``a=msid:- -``).
- Candidates trickled before the answer wait for it.
"""

from __future__ import annotations

import asyncio
import re

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from visio_sfu.events import SubscriberOffer
from visio_sfu.publisher import Codec, Publisher
from visio_sfu.subscribe import SubscribeConnection as Subscriber


def track(sid: str, kind: str) -> Publisher:
    codec = Codec("video/VP8", 90000, 96) if kind == "video" else Codec("audio/opus", 48000, 111, 2)
    return Publisher(sid, "PA_" + sid, kind, "camera", "0", codec, {}, lambda b: True, 1)


def sections(sdp: str) -> list[dict]:
    """Per m-section: kind, mid, direction, msid."""
    out = []
    for part in re.split(r"\r?\n(?=m=)", sdp)[1:]:
        lines = part.splitlines()
        direction = next(
            (x[2:] for x in lines if x[2:] in ("sendrecv", "sendonly", "recvonly", "inactive")),
            "sendrecv",
        )
        out.append(
            {
                "kind": lines[0][2:].split()[0],
                "mid": next((x[6:] for x in lines if x.startswith("a=mid:")), None),
                "direction": direction,
                "msid": next((x[7:] for x in lines if x.startswith("a=msid:")), None),
            }
        )
    return out


class Browserish:
    """The far end of a subscriber connection: answers each offer (aiortc)."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.offers: asyncio.Queue[SubscriberOffer] = asyncio.Queue()

    def emit(self, event: object) -> None:
        if isinstance(event, SubscriberOffer):
            self.offers.put_nowait(event)

    async def answer(self, subscriber: Subscriber, trickle: bool = False) -> SubscriberOffer:
        """Answer the next offer; ``trickle``: as a browser does, without end-of-candidates."""
        offer = await asyncio.wait_for(self.offers.get(), 10)
        await self.pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        done = subscriber.negotiations + 1
        sdp = self.pc.localDescription.sdp
        if trickle:
            sdp = sdp.replace("a=end-of-candidates\r\n", "")
        subscriber.on_answer(offer.offer_id, sdp)
        for _ in range(200):  # until the subscriber has applied the answer
            if subscriber.negotiations >= done:
                break
            await asyncio.sleep(0.01)
        return offer


def assert_unique_msids(offer: dict) -> None:
    msids = [s["msid"] for s in sections(offer.sdp) if s["msid"]]
    assert len(msids) == len(set(msids)), msids


async def test_released_and_reused_slots_have_unique_msids():
    far = Browserish()
    sub = Subscriber("PA_me", far.emit, lambda reason: None)
    try:
        kinds = ["video", "audio"] * 2
        tracks = [track(sid, kind) for sid, kind in zip("ABCD", kinds, strict=True)]
        for t in tracks:
            sub.add(t)
        first = await far.answer(sub)
        assert_unique_msids(first)
        assert [s["direction"] for s in sections(first.sdp)] == ["sendonly"] * 4
        # two leave: their four slots are released in one offer
        for t in tracks:
            sub.remove(t.sid)
        released = await far.answer(sub)
        assert_unique_msids(released)
        assert [s["direction"] for s in sections(released.sdp)] == ["inactive"] * 4
        assert released.tracks == ()
        # a newcomer's tracks take two released slots; the other two stay released
        newcomer = [track("E", "video"), track("F", "audio")]
        for t in newcomer:
            sub.add(t)
        reused = await far.answer(sub)
        assert_unique_msids(reused)
        shape = sections(reused.sdp)
        assert len(shape) == 4, "released slots are reused, not added"
        by_mid = {s["mid"]: s for s in shape}
        for info in reused.tracks:
            section = by_mid[info.mid]
            assert section["direction"] == "sendonly"
            assert section["msid"] == f"{info.participant_sid} {info.track_sid}"
        assert sorted(s["direction"] for s in shape) == ["inactive"] * 2 + ["sendonly"] * 2
        # and released again, with the earlier-released slots still distinct
        sub.remove("E")
        again = await far.answer(sub)
        assert_unique_msids(again)
    finally:
        await sub.close()
        await far.pc.close()


async def test_candidates_trickled_before_the_answer_wait_for_it():
    far = Browserish()
    sub = Subscriber("PA_me", far.emit, lambda reason: None)
    try:
        sub.add(track("A", "video"))
        candidate = {
            "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        }
        await sub.add_ice_candidate(candidate)  # the answer is not there yet: kept
        assert sub._early_candidates == [candidate]
        await far.answer(sub, trickle=True)
        assert sub._early_candidates == []  # added once the answer was applied
        remote = sub.transport.pc.getTransceivers()[0].receiver.transport.transport
        assert any(c.port == 40000 for c in remote.getRemoteCandidates())
    finally:
        await sub.close()
        await far.pc.close()


async def test_a_negotiation_on_a_closed_connection_is_not_an_error(caplog):
    """A connection closed under a renegotiation (its participant dropped, or the server
    stopping, before the subscriber is closed) logs no error with a traceback: seen at every
    server shutdown with people in a meeting."""
    far = Browserish()
    sub = Subscriber("PA_me", far.emit, lambda reason: None)
    try:
        sub.add(track("A", "video"))
        await far.answer(sub)
        await sub.transport.pc.close()  # dropped: the subscriber is not closed yet
        sub.remove("A")  # someone else leaves meanwhile: a new offer is due
        for _ in range(200):
            if sub._task is None:
                break
            await asyncio.sleep(0.01)
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert errors == [], [r.getMessage() for r in errors]
    finally:
        await sub.close()
        await far.pc.close()
