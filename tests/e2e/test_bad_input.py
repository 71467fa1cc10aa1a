"""Bad input never crashes the server nor disturbs another room.

A healthy two-person meeting runs in one room while a misbehaving client throws bad tokens,
bad JSON, bad SDP, garbage datagrams and RTP with unknown SSRCs at the server in another room.
Each gets a clear error (or a silent drop, for media); the meeting keeps forwarding.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time

import aiohttp
import pytest

from signaling.auth import mint_token
from signaling.config import DEV_API_KEY, DEV_API_SECRET
from tests.support.media import check_video, join, until
from tests.support.server import ServerProcess
from visio_client import Client
from visio_client.media import PatternVideoTrack
from visio_sfu.rtp.header import build_rtp

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def server():
    s = ServerProcess()
    yield s
    s.stop()


async def http_refusal(server: ServerProcess, token: str | None) -> tuple[int, dict]:
    url = f"{server.url}/rtc" + (f"?access_token={token}" if token is not None else "")
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        body = await r.json() if r.status != 101 else {}
        return r.status, body


class RawSocket:
    """A signaling socket driven by hand, to send anything."""

    def __init__(self, server: ServerProcess, token: str) -> None:
        self.server, self.token = server, token

    async def __aenter__(self) -> RawSocket:
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(f"{self.server.url}/rtc?access_token={self.token}")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()
        await self.http.close()

    async def ask(self, payload: str | bytes | dict) -> dict:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        if isinstance(payload, bytes):
            await self.ws.send_bytes(payload)
        else:
            await self.ws.send_str(payload)
        msg = await self.ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        return json.loads(msg.data)


async def test_bad_input_gets_errors_and_other_rooms_keep_working(server):
    alice = await join(server, "healthy", 0)
    bob = Client(server.url, server.token("healthy", "bob"))
    await bob.connect()
    await until(lambda: any(r.kind == "video" for r in bob.remote_tracks), what="bob gets video")
    video = next(r for r in bob.remote_tracks if r.kind == "video")
    await check_video(video, 0, frames=3)
    try:
        # -- tokens: refused before the upgrade, with a JSON reason ---------------------
        now = int(time.time())
        expired = mint_token(DEV_API_KEY, DEV_API_SECRET, "x", "r", ttl=60, now=now - 3600)
        future = mint_token(DEV_API_KEY, DEV_API_SECRET, "x", "r", ttl=60, now=now + 3600)
        wrong_key = mint_token(DEV_API_KEY, "another-secret-another-secret-0123", "x", "r")
        unknown_issuer = mint_token("nobody", DEV_API_SECRET, "x", "r")
        for token, needle in [
            (None, "required"),
            ("", "required"),
            ("not.a.jwt", ""),
            ("%%%", ""),
            (expired, "expired"),
            (future, "not yet valid"),
            (wrong_key, "signature"),
            (unknown_issuer, "key"),
        ]:
            status, body = await http_refusal(server, token)
            assert status == 401, (token, status)
            assert body["code"] and needle in body["message"].lower(), body

        # -- messages: each gets its error, the session goes on ------------------------
        token = server.token("mischief", "mallory")
        async with RawSocket(server, token) as raw:
            assert (await raw.ask("not json"))["code"] == "bad_json"
            assert (await raw.ask("[1, 2]"))["code"] == "bad_json"
            assert (await raw.ask(b"\x00\x01"))["code"] == "bad_json"
            assert (await raw.ask({"no": "type"}))["code"] == "bad_request"
            assert (await raw.ask({"type": "offer", "id": 1, "sdp": "x"}))["code"] == "not_joined"
            assert (await raw.ask({"type": "teleport", "id": 2}))["code"] == "unknown_type"
            refused = await raw.ask({"type": "join", "id": 3, "room": "healthy"})
            assert refused["code"] == "permission_denied" and refused["id"] == 3
            assert (await raw.ask({"type": "join", "id": 4}))["type"] == "joined"
            assert (await raw.ask({"type": "offer", "id": 5, "sdp": 5}))["code"] == "bad_request"
            bad = await raw.ask({"type": "offer", "id": 6, "sdp": "v=0\r\nm=garbage\r\n"})
            assert bad["code"] == "bad_sdp" and bad["id"] == 6
            bad = await raw.ask({"type": "offer", "id": 7, "sdp": "totally not sdp"})
            assert bad["code"] == "bad_sdp"
            big = {"type": "data", "id": 8, "payload": "x" * 300_000}
            assert "larger" in (await raw.ask(big))["message"]
            too_big_data = {"type": "data", "id": 9, "payload": "x" * 20_000}
            assert (await raw.ask(too_big_data))["code"] == "bad_request"
            mute = {"type": "mute", "id": 10, "track": "TR_nope", "muted": True}
            assert (await raw.ask(mute))["code"] == "not_found"
            mute["muted"] = "yes"
            assert (await raw.ask(mute))["code"] == "bad_request"
            trickle = {
                "type": "trickle",
                "id": 11,
                "target": "publisher",
                "candidate": {"candidate": "garbage"},
            }
            assert (await raw.ask(trickle))["type"] == "error"
            answer = {"type": "answer", "id": "s99", "target": "subscriber", "sdp": "v=0"}
            assert (await raw.ask(answer))["type"] == "error"
            deep = "[" * 100_000 + "]" * 100_000
            assert (await raw.ask(deep))["type"] == "error"
            assert (await raw.ask({"type": "ping", "id": 12}))["type"] == "pong"

        # -- media: garbage datagrams and unknown SSRCs are dropped silently --------------
        ports = {
            int(p)
            for p in re.findall(
                r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+)",
                alice.publisher.remoteDescription.sdp,
            )
        }
        assert ports, "the server's answer has a 127.0.0.1 candidate"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for i in range(300):
                first = bytes([(0x80, 0x16, 0x00, 0xFF)[i % 4]])
                for port in ports:
                    udp.sendto(first + os.urandom(i % 200 + 1), ("127.0.0.1", port))
        dtls = alice.publisher.getTransceivers()[0].sender.transport
        for i in range(50):
            await dtls._send_rtp(build_rtp(96 + i % 30, i, i * 3000, 0xDEAD0000 + i, b"\x10" * 50))

        # -- the healthy room still forwards, the server is alive ----------------------
        await check_video(video, 0, frames=5)
        assert server.get("/healthz")["status"] == "ok"
        extra = Client(server.url, server.token("healthy", "carol"))
        await extra.connect()
        await extra.publish(PatternVideoTrack(2))
        await until(lambda: len(bob.remote_tracks) >= 3, what="bob gets carol")
        carol_video = next(
            r for r in bob.remote_tracks if r.participant_sid == extra.joined["participant"]["sid"]
        )
        await check_video(carol_video, 2, frames=3)
        await extra.close()
    finally:
        await alice.close()
        await bob.close()
    log = server.output(tail=None)
    assert "Traceback" not in log
    # development mode prints its own key and secret once at start-up, by design; after that
    # no token and no secret may appear, whatever the clients sent
    after_start = log.split("listening on", 1)[1]
    assert "eyJ" not in after_start, "a token in the log"
    assert DEV_API_SECRET not in after_start, "a secret in the log"


async def test_vanishing_peer_is_removed():
    """A client whose socket dies without a word is removed once its resume grace is over
    (2 s here; docs/protocol.md, Resuming); the others are told."""
    server = ServerProcess(env={"VISIO_RESUME_GRACE": "2"})
    try:
        a = await join(server, "vanish", 0)
        b = Client(server.url, server.token("vanish", "b"))
        await b.connect()
        await until(lambda: len(b.remote_tracks) >= 2, what="b receives a")
        await a.ws.close()  # no leave message
        await a.publisher.close()
        await a.subscriber.close()
        left = await b.wait_for("participant_left")
        assert left["reason"] == "disconnected"
        await until(lambda: server.get("/dev/stats")["participants"] == 1, what="a removed")
        await b.close()
        await asyncio.sleep(0)
    finally:
        server.stop()
