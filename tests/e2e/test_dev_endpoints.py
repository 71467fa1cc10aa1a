"""The development and read-only endpoints a new user met first: /dev/token issued tokens that
/rtc refused (identity=%00, an empty room silently "demo", a room silently cut to 128, a ttl
ignored); POST /metrics answered 200 on a server with workers; /dev/stats showed zeros there."""

from __future__ import annotations

import json

import aiohttp
import jwt
import pytest

from signaling.app import VERIFIER
from signaling.auth import TokenError, mint_token
from signaling.config import DEV_API_KEY, DEV_API_SECRET
from tests.support.inprocess import LocalServer
from tests.support.server import ServerProcess
from visio_client.protocol import SignalingConnection

pytestmark = pytest.mark.timeout(180)

#: endpoints that only read: GET and HEAD answer, any other method is 405
READ_ONLY = ("/metrics", "/healthz", "/dev/stats", "/dev/token")
WRITES = ("POST", "PUT", "PATCH", "DELETE")


async def fetch(http: aiohttp.ClientSession, method: str, url: str) -> tuple[int, object]:
    async with http.request(method, url) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


async def test_dev_token_refuses_what_rtc_would_refuse():
    refused = {
        "identity=%00": "identity",
        "identity=a%0Ab": "identity",
        "identity=": "identity",
        "identity=" + "i" * 129: "identity",
        "room=": "room",
        "room=" + "r" * 129: "room",
        "name=" + "n" * 129: "name",
        "ttl=-5": "ttl",
        "ttl=0": "ttl",
        "ttl=abc": "ttl",
        "ttl=": "ttl",
        "ttl=1.5": "ttl",
        f"ttl={7 * 86400 + 1}": "ttl",
        "ttl=8d": "ttl",
        "ttl=99999999999999999999999": "ttl",
    }
    async with LocalServer(dev=True) as s, aiohttp.ClientSession() as http:
        verifier = s.app[VERIFIER]
        for query, what in refused.items():
            status, body = await fetch(http, "GET", f"{s.url}/dev/token?{query}")
            assert status == 400, (query, status, body)
            assert isinstance(body, dict) and body["code"] == "bad_request", (query, body)
            assert body["message"].startswith(what), (query, body)
            assert body["message"].isprintable(), body
        # what is accepted verifies as /rtc verifies it, with what was asked
        accepted = {
            "": ("demo", None, 6 * 3600),  # the documented defaults
            "room=r&identity=alice&name=Alice": ("r", "alice", 6 * 3600),
            "room=" + "r" * 128 + "&identity=" + "i" * 128 + "&name=" + "n" * 128: (
                "r" * 128,
                "i" * 128,
                6 * 3600,
            ),
            "room=r&ttl=90": ("r", None, 90),
            "room=r&ttl=30m": ("r", None, 1800),
            f"room=r&ttl={7 * 86400}": ("r", None, 7 * 86400),
            "room=r&identity=bob&host=1&ttl=2d": ("r", "bob", 2 * 86400),
        }
        for query, (room, identity, ttl) in accepted.items():
            status, body = await fetch(http, "GET", f"{s.url}/dev/token?{query}")
            assert status == 200, (query, body)
            assert isinstance(body, dict)
            claims = jwt.decode(body["token"], DEV_API_SECRET, algorithms=["HS256"])
            assert claims["exp"] - claims["nbf"] == ttl == body["ttl"], (query, claims)
            assert claims["video"]["room"] == room == body["room"]
            if identity is None:
                assert body["identity"].startswith("guest-")
            else:
                assert body["identity"] == identity
            ident = verifier.verify(body["token"])  # what /rtc does before the upgrade
            assert ident.grant.room == room and ident.identity == body["identity"]
        # and the WebSocket itself takes one: no 401
        status, body = await fetch(http, "GET", f"{s.url}/dev/token?room=r&identity=x")
        assert isinstance(body, dict)
        conn = SignalingConnection(s.url, body["token"], session=http)
        await conn.connect()
        joined = await conn.request({"type": "join", "name": "X"}, timeout=10)
        assert joined.get("type") != "error", joined
        await conn.close()
        # a name is shown without control characters or bidirectional overrides, whichever
        # way it comes (the token's name, the join message's), not refused: "Eve" here
        status, body = await fetch(http, "GET", f"{s.url}/dev/token?room=r&name=Eve%01%07")
        assert isinstance(body, dict)
        assert verifier.verify(body["token"]).name == "Eve"
        conn = SignalingConnection(s.url, body["token"], session=http)
        await conn.connect()
        joined = await conn.request({"type": "join"}, timeout=10)
        assert joined["participant"]["name"] == "Eve", joined
        await conn.close()
        own = s.token("r", "ana", can_update_own_metadata=True)  # (no name; may name itself)
        conn = SignalingConnection(s.url, own, session=http)
        await conn.connect()
        joined = await conn.request({"type": "join", "name": " \u202eevE\n"}, timeout=10)
        assert joined["participant"]["name"] == "evE", joined
        await conn.close()
        # the rule is the verifier's: a token naming what /dev/token refuses is refused there
        for claim in ("\x00", "i" * 129, ""):
            with pytest.raises(TokenError, match="claim 'sub' must be 1 to 128 printable"):
                verifier.verify(mint_token(DEV_API_KEY, DEV_API_SECRET, claim, "r"))


async def check_methods(base: str) -> None:
    """GET and HEAD of every read-only endpoint answer 200; other methods 405."""
    async with aiohttp.ClientSession() as http:
        for path in READ_ONLY:
            for method in ("GET", "HEAD"):
                status, _ = await fetch(http, method, base + path)
                assert status == 200, (method, path, status)
            for method in WRITES:
                status, body = await fetch(http, method, base + path)
                assert status == 405, (method, path, status, body)


async def test_read_only_endpoints_refuse_other_methods_in_one_process():
    async with LocalServer(dev=True) as s:
        await check_methods(s.url)


@pytest.fixture(scope="module")
def workers_server():
    server = ServerProcess(extra=["--workers", "2"], start_timeout=90)
    yield server
    server.stop()


async def test_read_only_endpoints_refuse_other_methods_with_workers(workers_server):
    """--workers 2: POST /metrics (and /healthz) were answered by the front with 200."""
    await check_methods(workers_server.url)


async def test_dev_stats_adds_up_every_worker(workers_server):
    """--workers 2: the front's /dev/stats showed its own SFU, which has no rooms: zeros with
    meetings on."""
    url = workers_server.url
    sockets: list[SignalingConnection] = []
    async with aiohttp.ClientSession() as http:
        try:
            for room, identity in (("st-a", "a1"), ("st-a", "a2"), ("st-b", "b1")):
                status, body = await fetch(
                    http, "GET", f"{url}/dev/token?room={room}&identity={identity}"
                )
                assert status == 200 and isinstance(body, dict), body
                conn = SignalingConnection(url, body["token"], session=http)
                sockets.append(conn)
                await conn.connect()
                joined = await conn.request({"type": "join", "name": identity}, timeout=30)
                assert joined.get("type") != "error", joined
            status, stats = await fetch(http, "GET", f"{url}/dev/stats")
            assert status == 200 and isinstance(stats, dict), stats
            assert stats["rooms"] == 2 and stats["participants"] == 3, stats
            assert sorted(r["name"] for r in stats["per_room"]) == ["st-a", "st-b"], stats
            assert {r["worker"] for r in stats["per_room"]} == {0, 1}, stats  # one each
            assert [w["worker"] for w in stats["workers"]] == [0, 1], stats
            assert sum(w["participants"] for w in stats["workers"]) == 3, stats
            assert "unreachable" not in stats and isinstance(stats["drops"], dict), stats
        finally:
            for conn in sockets:
                await conn.close()


async def test_a_room_link_without_a_room_leads_home():
    """/r/ and /r name no meeting: the home page, where one is named (query kept), not a
    bare 404."""
    async with LocalServer(dev=True) as s, aiohttp.ClientSession() as http:
        for path, home in (("/r/", "/"), ("/r", "/"), ("/r/?lang=fr", "/?lang=fr")):
            async with http.get(s.url + path, allow_redirects=False) as r:
                assert (r.status, r.headers.get("Location")) == (302, home), path
            async with http.get(s.url + path) as r:
                assert r.status == 200 and "<html" in (await r.text()).lower(), path
