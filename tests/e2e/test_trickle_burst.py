"""A burst of ICE candidates is ordinary, not a flood: a client gathers one per address,
protocol, port and (before bundling) m-section, so on a machine with a few interfaces it trickles
hundreds in a second. CI saw LiveKit's Rust SDK disconnected for "flooding" by its candidates.
Both signaling protocols take 300 candidates at once, every one of them, and still end a flood
of other messages."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from livekit.protocol import rtc

from signaling import livekit as lk_signaling
from tests.e2e.test_livekit_bad_input import QUERY, _next, _ping
from tests.support.inprocess import KEY, SECRET, LocalServer
from tests.support.lkdrive import livekit_token
from tests.support.media import check_video, until
from visio_client import Client
from visio_client.media import PatternVideoTrack
from visio_sfu.participant import Participant

pytestmark = pytest.mark.timeout(90)

BURST = 300


def candidate(i: int) -> dict:
    """A host candidate on 127.0.0.1 (a port nothing listens on: checks to it fail, locally)."""
    return {
        "candidate": f"candidate:{i} 1 udp 2122260223 127.0.0.1 {40000 + i} typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }


@pytest.fixture
def trickled(monkeypatch) -> list[str]:
    """Targets of the candidates that reached a participant (past the rate limits)."""
    seen: list[str] = []
    real = Participant.add_ice_candidate

    async def counting(self, target, cand):
        seen.append(target)
        await real(self, target, cand)

    monkeypatch.setattr(Participant, "add_ice_candidate", counting)
    return seen


async def test_the_web_protocol_takes_a_burst_of_candidates(trickled):
    async with LocalServer() as server:
        alice = Client(server.url, server.token("burst", "alice"))
        await alice.connect()
        await alice.publish(PatternVideoTrack(0))
        bob = Client(server.url, server.token("burst", "bob"))
        await bob.connect()
        await until(lambda: bob.remote_tracks, what="bob receives alice")
        for i in range(BURST):  # no wait between them
            await alice.send({"type": "trickle", "target": "publisher", "candidate": candidate(i)})
        assert (await alice.request({"type": "ping"}))["type"] == "pong"
        await until(lambda: len(trickled) >= BURST, what="every candidate handled")
        assert len(trickled) == BURST
        codes = [e.get("code") for e in alice.events if e.get("type") == "error"]
        assert "rate_limited" not in codes, codes
        assert not alice.ws.closed
        await check_video(bob.remote_tracks[0], 0, frames=3)  # her connection still works
        # other messages keep their own, smaller budget: a flood of pings still ends it
        for _ in range(400):
            if alice.ws.closed:
                break
            await alice.send({"type": "ping"})
        await until(lambda: alice.ws.closed, what="the flooder disconnected")
        assert alice.ws.close_code == 4029
        for c in (alice, bob):
            await c.close()


async def test_the_livekit_protocol_takes_a_burst_of_candidates(trickled):
    async with LocalServer() as server, aiohttp.ClientSession() as http:
        token = livekit_token(KEY, SECRET, "carol", "lk-burst")
        ws_url = server.url.replace("http", "ws", 1)
        carol = await http.ws_connect(f"{ws_url}/rtc?{QUERY}&access_token={token}")
        join = await _next(carol, "join")
        sid = join.participant.sid
        for i in range(BURST):
            request = rtc.SignalRequest(
                trickle=rtc.TrickleRequest(
                    candidateInit=json.dumps(candidate(i)), target=rtc.SignalTarget.SUBSCRIBER
                )
            )
            await carol.send_bytes(request.SerializeToString())
        await _ping(carol, 7)  # still connected, and answered
        session = lk_signaling.SESSIONS[sid]
        await until(lambda: session.received["trickle"] >= BURST, what="every candidate read")
        assert session.received["trickle"] == BURST
        await until(lambda: len(trickled) >= BURST, what="every candidate handled")
        assert trickled == ["subscriber"] * BURST
        # other requests keep their own budget: a flood of pings ends the connection
        for ts in range(400):
            if carol.closed:
                break
            ping = rtc.SignalRequest(ping_req=rtc.Ping(timestamp=ts))
            try:
                await carol.send_bytes(ping.SerializeToString())
            except ConnectionError:
                break
        msg = await carol.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.BINARY:
            msg = await carol.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await asyncio.sleep(0)
        await carol.close()
