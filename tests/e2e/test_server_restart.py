"""A server restarting under a meeting, and what a participant whose client closed its peer
connections leaves behind, with real aiortc peers.

- A server that stops closes every socket with 1012 (service restart) and tells nobody that the
  others left: clients show an outage and come back, instead of showing everyone leaving one
  by one before the outage (docs/protocol.md).
- A participant whose client closed its peer connections while its socket dropped waits for a
  resume with a closed subscriber connection. Someone publishing meanwhile must still publish
  (its subscription to the track is kept for the connection made on resume), and the
  resumed participant receives it.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.inprocess import LocalServer
from tests.support.media import check_video, until
from visio_client import Client
from visio_client.media import PatternVideoTrack, ToneAudioTrack

pytestmark = pytest.mark.timeout(90)


async def test_a_stopping_server_says_it_restarts_and_nobody_left():
    server = LocalServer()
    await server.__aenter__()
    clients = []
    try:
        for name in ("alice", "bob", "carol"):
            c = Client(server.url, server.token("down", name))
            await c.connect(name=name.title())
            clients.append(c)
        await clients[0].publish(PatternVideoTrack(1), ToneAudioTrack(1))
        await until(
            lambda: len(clients[1].remote_tracks) == 2 and len(clients[2].remote_tracks) == 2,
            what="bob and carol receive alice",
        )
    finally:
        await server.__aexit__(None, None, None)
    try:
        for c in clients:
            await until(lambda c=c: c.ws.closed, what="socket closed")
            assert c.ws.close_code == 1012, (c.joined["participant"]["identity"], c.ws.close_code)
            told = [e["type"] for e in c.events]
            assert "participant_left" not in told, told
            assert "track_unpublished" not in told, told
            assert not [e for e in c.events if e["type"] == "leave"], c.events[-5:]
    finally:
        for c in clients:
            await c.close()


async def _bob_hears_alice(server: LocalServer, name: str):
    """Bob and Alice in room ``name``, Bob receiving Alice's microphone: (bob, alice, Bob's
    joined message, the room, Bob's participant)."""
    bob = Client(server.url, server.token(name, "bob"))
    alice = Client(server.url, server.token(name, "alice"))
    joined = await bob.connect(name="Bob")
    await alice.connect(name="Alice")
    room = server.sfu.room(name)
    bob_p = room.participants[joined["participant"]["sid"]]
    await alice.publish(ToneAudioTrack(1))
    await until(lambda: len(bob.remote_tracks) == 1, what="bob receives alice's microphone")
    return bob, alice, joined, room, bob_p


async def test_a_closed_subscriber_connection_does_not_fail_anothers_publish():
    async with LocalServer() as server:
        bob, alice, joined, room, bob_p = await _bob_hears_alice(server, "closed")
        # Bob's page goes: its socket first (he is kept for a resume), then its connections
        await bob.signal.close(leave=False)
        await until(lambda: room.is_suspended(bob_p), what="bob suspended")
        await bob.subscriber.close()
        await bob.publisher.close()
        await until(
            lambda: bob_p.subscriber.transport.state == "closed",
            timeout=10,
            what="bob's subscriber connection closed by his client",
        )
        # Alice's camera now: published, whatever Bob's connection is (no InvalidStateError)
        await alice.publish(PatternVideoTrack(2), sources=["camera"])
        assert len(room.participants[alice.joined["participant"]["sid"]].tracks) == 2
        # Bob comes back: the same participant, receiving both of Alice's tracks
        again = Client(server.url, server.token("closed", "bob"))
        back = await again.connect(name="Bob", resume=joined["resume"])
        assert back["resumed"] is True and back["participant"]["sid"] == bob_p.sid
        await until(lambda: len(again.remote_tracks) == 2, what="bob receives both tracks")
        video = next(r for r in again.remote_tracks if r.kind == "video")
        await check_video(video, 2)
        for c in (alice, again, bob):
            await c.close()
        await asyncio.sleep(0)


async def test_a_connection_closing_takes_no_track_and_keeps_the_subscription():
    """A subscriber connection that started closing (aiortc closes its end when the client
    closes its own, over several awaits) counts as closed at once: a track added meanwhile
    is kept for the connection made on resume, not offered on it (aiortc refuses new
    transceivers from the first moment: InvalidStateError) and not lost."""
    async with LocalServer() as server:
        bob, alice, joined, room, bob_p = await _bob_hears_alice(server, "closing")
        (mic,) = room.participants[alice.joined["participant"]["sid"]].tracks.values()
        bob_p.subscriber.remove(mic.sid)
        transport = bob_p.subscriber.transport
        # closing takes awaits (a transceiver's stop here; on a relay or a stream, its
        # transport's): aiortc refuses new transceivers from the first, says closed at the end
        transceiver = transport.pc.getTransceivers()[0]
        stop = transceiver.stop

        async def slow_stop() -> None:
            await asyncio.sleep(0.2)
            await stop()

        transceiver.stop = slow_stop
        closing = asyncio.ensure_future(transport.pc.close())
        await asyncio.sleep(0.05)
        assert transport.pc.connectionState != "closed"  # (the gap)
        assert transport.state == "closed"
        kept = bob_p.subscriber.add(mic)  # no InvalidStateError
        assert bob_p.subscriber.downtracks[mic.sid] is kept and not kept.bound
        await closing
        for c in (alice, bob):
            await c.close()
