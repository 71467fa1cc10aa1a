"""The ``ice_restart`` request (docs/protocol.md): the subscriber connection's next offer
carries new ICE credentials; bad requests and a flood of them are refused. A socket resumed
with ``keep`` keeps the peer connections. (That media goes on
after a restart is shown with Chromium: tests/browser/test_ice_restart_browser.py; aiortc,
which the Python client uses, cannot restart ICE itself.)"""

from __future__ import annotations

import pytest

from tests.support.inprocess import LocalServer
from tests.support.media import check_video, until
from visio_client import Client, ServerError
from visio_client.media import PatternVideoTrack, ToneAudioTrack
from visio_client.protocol import SignalingConnection
from visio_sfu.icerestart import ice_credentials

pytestmark = pytest.mark.timeout(60)


async def test_ice_restart_offers_new_credentials_and_floods_are_refused():
    async with LocalServer() as server:
        alice = Client(server.url, server.token("restart", "alice"))
        await alice.connect()
        await alice.publish(ToneAudioTrack(1))
        offers: list[str] = []
        bob = Client(server.url, server.token("restart", "bob"))
        bob.on_message = lambda m: offers.append(m["sdp"]) if m.get("type") == "offer" else None
        await bob.connect()
        await until(lambda: len(offers) >= 1, what="the first subscriber offer")
        first = ice_credentials(offers[-1])
        assert first is not None
        seen = len(offers)
        reply = await bob.request({"type": "ice_restart", "target": "subscriber"})
        assert reply["type"] == "ice_restarting" and reply["target"] == "subscriber"
        await until(lambda: len(offers) > seen, what="an offer after ice_restart")
        second = ice_credentials(offers[-1])
        assert second is not None and second[0] != first[0] and second[1] != first[1]
        for bad in ({"target": "publisher"}, {"target": 3}, {}):
            with pytest.raises(ServerError) as err:
                await bob.request({"type": "ice_restart", **bad})
            assert err.value.code == "bad_request", bad
        for _ in range(9):  # ten in a minute (the one above included)
            await bob.request({"type": "ice_restart", "target": "subscriber"})
        with pytest.raises(ServerError) as err:
            await bob.request({"type": "ice_restart", "target": "subscriber"})
        assert err.value.code == "rate_limited"
        for c in (alice, bob):
            await c.close()


async def test_a_socket_resumed_with_keep_keeps_the_connections():
    """Only the signalling socket dropped (a network change takes it down with the media
    path; the web client makes it again): ``join`` with ``resume`` and ``keep`` gives the
    participant back with its peer connections, tracks and subscriptions as they were
    (``kept``), and an offer it missed while away comes again. With a connection failed,
    ``keep`` falls back to fresh connections."""
    async with LocalServer() as server:
        alice = Client(server.url, server.token("keep", "alice"))
        alice.reconnect = False  # the test makes her socket again itself
        bob = Client(server.url, server.token("keep", "bob"))
        joined = await alice.connect()
        await alice.publish(PatternVideoTrack(5))
        await bob.connect()
        await until(lambda: bob.remote_tracks, what="bob receives alice")
        await check_video(bob.remote_tracks[0], 5)
        room = server.sfu.room("keep")
        p = room.participants[joined["participant"]["sid"]]
        publishing, subscriber = p.publishing.transport, p.subscriber
        await alice.signal.close(leave=False)  # the socket only: her peer connections stay
        await until(lambda: room.is_suspended(p), what="alice suspended")
        # meanwhile bob publishes: alice's offer goes nowhere
        await bob.publish(ToneAudioTrack(6))
        await until(lambda: subscriber.pending_offer() is not None, what="an offer for alice")
        missed = subscriber.pending_offer()[0]
        back = SignalingConnection(server.url, server.token("keep", "alice"))
        await back.connect()
        reply = await back.request({"type": "join", "resume": joined["resume"], "keep": True})
        assert reply["resumed"] is True and reply["kept"] is True
        assert reply["participant"]["sid"] == p.sid and reply["participant"]["tracks"]
        assert p.publishing.transport is publishing and p.subscriber is subscriber
        offer = await back.wait_for(lambda m: m.get("type") == "offer", timeout=5)
        assert offer["id"] == missed
        # bob never stopped receiving her video, and saw no unpublish
        await check_video(bob.remote_tracks[0], 5)
        assert not [e for e in bob.signal.events if e.get("type") == "track_unpublished"]
        # the same again, with her publisher connection failed: fresh connections
        await back.close(leave=False)
        await until(lambda: room.is_suspended(p), what="alice suspended again")
        await publishing.pc.close()
        again = SignalingConnection(server.url, server.token("keep", "alice"))
        await again.connect()
        reply2 = await again.request({"type": "join", "resume": reply["resume"], "keep": True})
        assert reply2["resumed"] is True and reply2["kept"] is False
        assert p.publishing.transport is not publishing and reply2["participant"]["tracks"] == []
        for c in (again, alice, bob):
            await c.close()
