"""A client that cannot apply a subscriber offer reports it (negotiation_failed) and gets a fresh
subscriber connection with the same tracks: media comes back by itself, the old connection is
released, the failure is counted in /metrics, and a client that keeps failing is refused."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.inprocess import LocalServer
from tests.support.media import check_audio, check_video, until
from visio_client import Client, ServerError
from visio_client.media import PatternVideoTrack, ToneAudioTrack
from visio_sfu.transport import PeerTransport, TransportError

pytestmark = pytest.mark.timeout(150)


async def metrics(server: LocalServer) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as r:
        text = await r.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(f"[{v}]" for v in sample.labels.values())
            out[key] = sample.value
    return out


def by_kind(client: Client) -> dict[str, object]:
    return {r.kind: r for r in client.remote_tracks}


async def test_a_reported_failure_gets_a_fresh_subscriber_connection():
    async with LocalServer() as server:
        alice = Client(server.url, server.token("rec", "alice"))
        bob = Client(server.url, server.token("rec", "bob"))
        await alice.connect()
        await alice.publish(PatternVideoTrack(1), ToneAudioTrack(1))
        await bob.connect()
        await until(lambda: len(bob.remote_tracks) == 2, what="bob receives alice")
        await check_video(by_kind(bob)["video"], 1)
        room = server.sfu.room("rec")
        bob_p = room.participants[bob.joined["participant"]["sid"]]
        old_subscriber = bob_p.subscriber
        old_pc = bob.subscriber
        transports = len(PeerTransport.open_transports)

        reply = await bob.restart_subscriber("injected: Failed to parse SessionDescription", "s1")
        assert reply["type"] == "subscriber_restarted"
        assert bob.subscriber is not old_pc and bob_p.subscriber is not old_subscriber
        assert old_subscriber.closed and not old_subscriber.downtracks
        # the new connection's first offer carries both tracks: media comes back
        await until(lambda: len(bob.remote_tracks) == 2, what="bob receives alice again")
        kinds = by_kind(bob)
        await check_video(kinds["video"], 1)
        await check_audio(kinds["audio"], 1)
        await until(lambda: old_pc.connectionState == "closed", what="old connection closed")
        assert len(PeerTransport.open_transports) == transports, "the old transport is released"
        figures = await metrics(server)
        assert figures["visio_negotiation_failures_total[subscriber]"] == 1
        assert figures["visio_negotiation_failures_total[publisher]"] == 0
        assert figures["visio_subscriber_restarts_total"] == 1

        # a track published afterwards reaches the new connection
        carol = Client(server.url, server.token("rec", "carol"))
        await carol.connect()
        await carol.publish(PatternVideoTrack(2))
        await until(lambda: len(bob.remote_tracks) == 3, what="bob receives carol")
        video = [
            r for r in bob.remote_tracks if r.participant_sid == carol.joined["participant"]["sid"]
        ]
        await check_video(video[0], 2)
        for c in (alice, bob, carol):
            await c.close()


async def test_an_offer_the_client_cannot_apply_is_recovered_by_itself():
    async with LocalServer() as server:
        alice = Client(server.url, server.token("auto", "alice"))
        bob = Client(server.url, server.token("auto", "bob"))
        await alice.connect()
        await bob.connect()
        await alice.publish(PatternVideoTrack(3))
        await until(lambda: len(bob.remote_tracks) == 1, what="bob receives alice's video")
        # the next offer fails in bob's peer connection, as Chromium failed on duplicate msids
        pc = bob.subscriber
        original = pc.setRemoteDescription

        async def fail_once(description):
            pc.setRemoteDescription = original
            raise ValueError("injected: Duplicate a=msid lines detected")

        pc.setRemoteDescription = fail_once
        await alice.publish(ToneAudioTrack(3))
        await until(lambda: bob.subscriber_restarts == 1, what="bob restarts its subscriber")
        await until(lambda: len(bob.remote_tracks) == 2, what="bob receives both tracks")
        kinds = by_kind(bob)
        await check_video(kinds["video"], 3)
        await check_audio(kinds["audio"], 3)
        for c in (alice, bob):
            await c.close()


async def test_bad_reports_and_endless_restarts_are_refused(caplog):
    caplog.set_level(logging.WARNING, logger="signaling.session")
    async with LocalServer() as server:
        bob = Client(server.url, server.token("bad", "bob"))
        await bob.connect()
        for bad in (
            {"target": "nowhere"},
            {"target": "subscriber", "offer": {"x": 1}},
            {"target": "subscriber", "message": 12},
            {},
        ):
            with pytest.raises(ServerError) as err:
                await bob.request({"type": "negotiation_failed", **bad})
            assert err.value.code == "bad_request", bad
        noted = await bob.request(
            {"type": "negotiation_failed", "target": "publisher", "message": "x\nFAKE LOG LINE"}
        )
        assert noted["type"] == "negotiation_failed_noted"
        # the client's text cannot forge a log line
        lines = [r.getMessage() for r in caplog.records if "could not apply" in r.getMessage()]
        assert len(lines) == 1 and "\n" not in lines[0] and "\\nFAKE LOG LINE" in lines[0], lines
        for _ in range(5):
            await bob.restart_subscriber("again")
        with pytest.raises(ServerError) as err:
            await bob.restart_subscriber("and again")
        assert err.value.code == "rate_limited"
        # every report is counted, but a session logs at most 5 a minute: no log flood
        lines = [r for r in caplog.records if "could not apply" in r.getMessage()]
        assert len(lines) == 5, len(lines)
        figures = await metrics(server)
        assert figures["visio_negotiation_failures_total[subscriber]"] == 6
        assert figures["visio_negotiation_failures_total[publisher]"] == 1
        # the session goes on: a ping is answered
        assert (await bob.request({"type": "ping", "ts": 1}))["type"] == "pong"
        await asyncio.sleep(0)
        await bob.close()


async def test_a_restart_for_a_participant_who_left_opens_nothing():
    async with LocalServer() as server:
        alice = Client(server.url, server.token("gone", "alice"))
        await alice.connect()
        room = server.sfu.room("gone")
        p = room.participants[alice.joined["participant"]["sid"]]
        await room.remove(p, "removed")
        transports = len(PeerTransport.open_transports)
        with pytest.raises(TransportError):
            await p.restart_subscriber(list)
        assert len(PeerTransport.open_transports) == transports
        await alice.close()
