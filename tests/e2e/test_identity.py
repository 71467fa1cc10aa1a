"""Sign-in (OIDC), rooms people own, media tokens by policy, the waiting room: HTTP level.

A real OpenID Connect provider (oidc-provider-mock, its own process) signs users in through its
login form; the rooms tests run against SQLite and against a real PostgreSQL cluster started
for the module. The ID token checks (issuer, audience, nonce, expiry) use a provider written
here that signs real RS256 tokens with whatever claims the test wants.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from signaling.auth import TokenVerifier
from signaling.identity import IDENTITY
from signaling.recording import RECORDINGS
from signaling.transcription import TRANSCRIPTION
from tests.support.inprocess import KEY, SECRET, LocalServer, free_port
from tests.support.oidc import USERS, OidcProvider, serve_signed_in
from tests.support.postgres import PostgresCluster
from visio_sfu.transcript import Transcript

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def provider():
    p = OidcProvider(users=USERS)
    yield p
    p.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request):
    """None (SQLite, the default: a file in the data directory), or a real PostgreSQL."""
    if request.param == "sqlite":
        yield None
        return
    cluster = PostgresCluster()
    yield cluster.url
    cluster.stop()


def _server(provider, tmp_path_factory, database_url: str | None = None) -> LocalServer:
    oidc = {"issuer": provider.issuer, "client_id": "visio", "client_secret": "s3cret-visio"}
    data_dir = str(tmp_path_factory.mktemp("data"))
    return LocalServer(oidc=oidc, data_dir=data_dir, database_url=database_url)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(provider, tmp_path_factory):
    """Rooms and sessions in SQLite (the default: a file in the data directory)."""
    async with _server(provider, tmp_path_factory) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rooms_server(provider, database, tmp_path_factory):
    """The rooms tests run on SQLite and on PostgreSQL."""
    async with _server(provider, tmp_path_factory, database) as s:
        yield s


def _client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(http: aiohttp.ClientSession, server, sub: str, next_path: str = "/") -> str:
    """Through the provider's login form; returns where the server sent the browser."""
    async with http.get(
        f"{server.url}/auth/login", params={"next": next_path}, allow_redirects=False
    ) as r:
        assert r.status == 302, await r.text()
        authorize = r.headers["Location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["nonce"][0] and query["state"][0]
    async with http.post(authorize, data={"sub": sub}, allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        callback = r.headers["Location"]
    async with http.get(callback, allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        cookie = r.cookies["visio_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]
        return r.headers["Location"]


async def call(http, method: str, url: str, body: object = None, **kw) -> tuple[int, dict]:
    async with http.request(method, url, json=body, **kw) as r:
        return r.status, await r.json(content_type=None)


async def test_sign_in_and_owned_rooms(rooms_server):
    server = rooms_server
    async with _client() as alice, _client() as bob, _client() as guest:
        assert await sign_in(alice, server, "alice", "/r/next-place") == "/r/next-place"
        status, me = await call(alice, "GET", f"{server.url}/auth/me")
        assert me["user"]["subject"] == "alice" and me["user"]["name"] == "Alice Martin"
        assert me["user"]["email"] == "alice@example.org"
        assert me["dev_tokens"] is False  # only meetings (or token links) can be entered
        assert (await call(guest, "GET", f"{server.url}/auth/me"))[1]["user"] is None
        status, body = await call(guest, "POST", f"{server.url}/api/meetings", {"name": "x"})
        assert status == 401 and body["code"] == "not_signed_in"
        status, room = await call(
            alice, "POST", f"{server.url}/api/meetings", {"name": "Weekly", "access": "trusted"}
        )
        assert status == 201 and room["name"] == "Weekly" and room["access"] == "trusted"
        slug = room["slug"]
        assert len(slug) == 14 and slug.count("-") == 2
        status, other = await call(
            alice, "POST", f"{server.url}/api/meetings", {"name": "Board", "access": "restricted"}
        )
        assert other["slug"] != slug
        status, mine = await call(alice, "GET", f"{server.url}/api/meetings")
        assert [m["name"] for m in mine["meetings"]] == ["Board", "Weekly"]
        url = f"{server.url}/api/meetings/{slug}"
        status, room = await call(
            alice, "PATCH", url, {"name": "Weekly sync", "hosts": ["Bob@Example.org"]}
        )
        assert status == 200 and room["name"] == "Weekly sync"
        assert room["hosts"] == ["bob@example.org"]
        status, room = await call(alice, "PATCH", url, {"access": "nobody"})
        assert status == 400 and "access" in room["message"]
        status, room = await call(alice, "PATCH", url, {"access": "public"})
        assert status == 200 and room["access"] == "public" and room["hosts"] == ["bob@example.org"]
        # bob is a host of it but does not own it: he cannot change or delete it
        await sign_in(bob, server, "bob")
        assert (await call(bob, "GET", f"{server.url}/api/meetings"))[1]["meetings"] == []
        status, body = await call(bob, "PATCH", url, {"name": "mine now"})
        assert status == 404 and body["code"] == "not_found"
        assert (await call(bob, "DELETE", url))[0] == 404
        # a browser on another site cannot act with alice's cookie
        status, body = await call(alice, "DELETE", url, headers={"Origin": "http://evil.example"})
        assert status == 403 and body["code"] == "bad_origin"
        status, body = await call(alice, "DELETE", f"{server.url}/api/meetings/{other['slug']}")
        assert status == 200
        status, mine = await call(alice, "GET", f"{server.url}/api/meetings")
        assert [m["slug"] for m in mine["meetings"]] == [slug]
        # what was stored survives in the database: read it back through a fresh store
        store = server.app[IDENTITY].store
        assert (await store.room(slug)).hosts == ("bob@example.org",)


async def test_media_tokens_follow_the_room_policy(rooms_server):
    server = rooms_server
    verifier = TokenVerifier({KEY: SECRET})
    async with _client() as alice, _client() as bob, _client() as carol, _client() as guest:
        for http, sub in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            await sign_in(http, server, sub)
        status, room = await call(
            alice, "POST", f"{server.url}/api/meetings", {"name": "Policy", "access": "trusted"}
        )
        slug = room["slug"]
        await call(
            alice, "PATCH", f"{server.url}/api/meetings/{slug}", {"invited": ["carol@example.org"]}
        )
        token_url = f"{server.url}/api/meetings/{slug}/token"

        async def entry(http, name="Someone"):
            status, body = await call(http, "POST", token_url, {"name": name})
            if status == 200:
                identity = verifier.verify(body["token"])
                assert identity.grant.room == slug and identity.grant.room_join
                return "host" if identity.grant.room_host else "enter", identity
            assert status == 403 and body["code"] == "must_wait", body
            return "wait", None

        role, who = await entry(alice, "The Boss")  # signed in: the provider's name is kept
        assert role == "host" and who.identity == "u:alice" and who.name == "Alice Martin"
        # a host records and transcribes the meeting (issue 14's controls in the web client)
        assert who.grant.room_record and who.grant.room_transcribe
        role, who = await entry(bob)
        assert role == "enter"  # trusted: signed-in users enter
        assert not (who.grant.room_record or who.grant.room_transcribe)  # not a host
        assert (await entry(guest))[0] == "wait"  # ... guests wait
        await call(alice, "PATCH", f"{server.url}/api/meetings/{slug}", {"access": "restricted"})
        assert (await entry(bob))[0] == "wait"  # restricted: only invited users and hosts
        assert (await entry(carol))[0] == "enter"
        assert (await entry(guest))[0] == "wait"
        await call(alice, "PATCH", f"{server.url}/api/meetings/{slug}", {"hosts": ["bob"]})
        assert (await entry(bob))[0] == "host"  # a host by subject
        await call(alice, "PATCH", f"{server.url}/api/meetings/{slug}", {"access": "public"})
        role, who = await entry(guest, "Dana")
        assert role == "enter" and who.identity.startswith("guest-") and who.name == "Dana"
        status, body = await call(guest, "POST", f"{server.url}/api/meetings/nope/token", {})
        assert status == 404


async def _start_login(http, server) -> tuple[str, dict]:
    async with http.get(f"{server.url}/auth/login", allow_redirects=False) as r:
        authorize = r.headers["Location"]
    async with http.post(authorize, data={"sub": "alice"}, allow_redirects=False) as r:
        callback = r.headers["Location"]
    return callback, {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}


async def _refused(http, url: str) -> tuple[str, str]:
    async with http.get(url, allow_redirects=False) as r:
        assert r.status == 400
        assert "visio_session" not in r.cookies
        text = await r.text()
    code = text.split('data-code="', 1)[1].split('"', 1)[0]
    message = text.split("<p id=auth-error>", 1)[1].split("</p>", 1)[0]
    return code, message


async def test_two_sign_ins_at_once_in_one_browser(server):
    """Two tabs: each sign-in keeps its own binding cookie, both complete."""
    async with _client() as http:
        first, _ = await _start_login(http, server)
        second, _ = await _start_login(http, server)
        for callback in (second, first):
            async with http.get(callback, allow_redirects=False) as r:
                assert r.status == 302, await r.text()


async def test_tampered_state_and_replayed_code_are_refused(server):
    async with _client() as http:
        callback, query = await _start_login(http, server)
        base = callback.split("?", 1)[0]
        tampered = {**query, "state": query["state"][:-2] + "xy"}
        code, message = await _refused(http, f"{base}?{urlencode(tampered)}")
        assert code == "invalid_state" and "altered or already used" in message
        # the real state was not consumed by the forgery: the sign-in completes
        async with http.get(callback, allow_redirects=False) as r:
            assert r.status == 302 and "visio_session" in r.cookies
        # the same answer again: its state was used
        code, message = await _refused(http, callback)
        assert code == "invalid_state"
        # the used code with a fresh state of this browser: the provider refuses it
        fresh, fresh_query = await _start_login(http, server)
        replay = {"code": query["code"], "state": fresh_query["state"]}
        code, message = await _refused(http, f"{base}?{urlencode(replay)}")
        assert code == "code_rejected" and "invalid_grant" in message
    async with _client() as other:  # a state started by another browser (login CSRF)
        _, query2 = await _start_login(other, server)
    async with _client() as victim:
        code, message = await _refused(victim, f"{base}?{urlencode(query2)}")
        assert code == "invalid_state" and "not started by this browser" in message


async def test_expired_or_forged_session_is_refused(rooms_server):
    server = rooms_server
    async with _client() as http:
        await sign_in(http, server, "alice")
        cookie = next(c for c in http.cookie_jar if c.key == "visio_session")
        secret = cookie.value.rsplit(".", 1)[0]
        assert (await call(http, "GET", f"{server.url}/api/meetings"))[0] == 200
        await server.app[IDENTITY].store.expire_session(secret)
        status, body = await call(http, "GET", f"{server.url}/api/meetings")
        assert status == 401 and body["code"] == "not_signed_in"
        assert (await call(http, "GET", f"{server.url}/auth/me"))[1]["user"] is None
    async with _client() as http:
        await sign_in(http, server, "alice")
        cookie = next(c for c in http.cookie_jar if c.key == "visio_session")
        forged = cookie.value[:-3] + ("abc" if not cookie.value.endswith("abc") else "abd")
    async with _client() as fresh:
        for cookie in (forged, "\u00e9t\u00e9.\u00e9t\u00e9", "x" * 500, "no-dot"):
            status, body = await call(
                fresh, "GET", f"{server.url}/api/meetings", cookies={"visio_session": cookie}
            )
            assert status == 401 and body["code"] == "not_signed_in", cookie


async def test_logout_ends_the_session_here_and_at_the_provider(server, provider):
    async with _client() as http:
        await sign_in(http, server, "alice")
        status, body = await call(http, "POST", f"{server.url}/auth/logout")
        assert status == 200
        assert body["redirect"].startswith(provider.discovery["end_session_endpoint"] + "?")
        query = parse_qs(urlsplit(body["redirect"]).query)
        assert query["post_logout_redirect_uri"] == [f"{server.url}/"]
        assert query["id_token_hint"][0].count(".") == 2
        assert (await call(http, "GET", f"{server.url}/auth/me"))[1]["user"] is None


# -- the waiting room ---------------------------------------------------------------------------
async def _hosting(http, server, name: str, access: str) -> tuple[str, str]:
    """A new meeting of the signed-in ``http`` and its owner's media token."""
    status, room = await call(
        http, "POST", f"{server.url}/api/meetings", {"name": name, "access": access}
    )
    assert status == 201
    status, entry = await call(
        http, "POST", f"{server.url}/api/meetings/{room['slug']}/token", {"name": "Owner"}
    )
    return room["slug"], entry["token"]


async def _host_socket(http, server, token: str):
    ws = await http.ws_connect(f"{server.url.replace('http', 'ws')}/rtc?access_token={token}")
    await ws.send_json({"type": "join", "id": 1})
    while True:
        msg = await ws.receive_json(timeout=20)
        if msg["type"] == "joined":
            return ws


async def _next(ws, kind: str, timeout: float = 20, key: str = "") -> dict:
    """The next message of type ``kind`` (with field ``key``), skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive_json(timeout=max(0.1, deadline - time.monotonic()))
        if msg.get("type") == kind and (not key or key in msg):
            return msg


async def test_waiting_room_admit_deny_and_no_retry_loop(server):
    verifier = TokenVerifier({KEY: SECRET})
    async with _client() as alice, _client() as guest, _client() as guest2:
        await sign_in(alice, server, "alice")
        slug, token = await _hosting(alice, server, "Lobby", "trusted")
        host = await _host_socket(alice, server, token)
        await host.send_json({"type": "lobby", "id": 2})
        assert (await _next(host, "lobby"))["waiting"] == []
        lobby_url = f"{server.url.replace('http', 'ws')}/lobby/{slug}"

        async def knock_as(http, name: str):
            """As the web client does: ask for a token (must_wait), then knock."""
            status, body = await call(
                http, "POST", f"{server.url}/api/meetings/{slug}/token", {"name": name}
            )
            assert status == 403 and body["code"] == "must_wait"
            ws = await http.ws_connect(lobby_url)
            await ws.send_json({"type": "knock", "name": name})
            return ws, await ws.receive_json(timeout=20)

        # a guest knocks: the host is told at once, and admits them
        g1, waiting = await knock_as(guest, "Gabriel")
        assert waiting["type"] == "waiting" and waiting["hosts_present"] is True
        knock = await _next(host, "lobby", key="knock")
        assert knock["knock"]["name"] == "Gabriel" and knock["knock"]["signed_in"] is False
        assert [w["name"] for w in knock["waiting"]] == ["Gabriel"]
        await host.send_json({"type": "lobby_admit", "id": 3, "waiting": knock["knock"]["id"]})
        admitted = await g1.receive_json(timeout=20)
        assert admitted["type"] == "admitted"
        identity = verifier.verify(admitted["token"])
        assert identity.grant.room == slug and not identity.grant.room_host
        assert identity.name == "Gabriel"
        decided = await _next(host, "lobby_decided")
        assert decided["admitted"] == [knock["knock"]["id"]]
        # another guest is denied: told at once, no token, and cannot knock again for a while
        g2, waiting = await knock_as(guest2, "Mallory")
        assert waiting["type"] == "waiting"
        knock = await _next(host, "lobby", key="knock")
        await host.send_json({"type": "lobby_deny", "id": 4, "all": True})
        denied = await g2.receive_json(timeout=20)
        assert denied == {"type": "denied", "retry_after": 30}
        assert "token" not in json.dumps(denied)
        for _ in range(3):
            g3, again = await knock_as(guest2, "Mallory")
            assert again["type"] == "error" and again["code"] == "rate_limited"
            assert 0 < again["retry_after"] <= 30
            await g3.close()
        # other guests from the same address (one NAT) still knock; once three of them were
        # denied, the address waits too: clearing one's cookies is no way round
        for n in range(2):
            async with _client() as other:
                ws, waiting = await knock_as(other, f"Neighbour {n}")
                assert waiting["type"] == "waiting"
                knock = await _next(host, "lobby", key="knock")
                await host.send_json({"type": "lobby_deny", "waiting": knock["knock"]["id"]})
                assert (await ws.receive_json(timeout=20))["type"] == "denied"
        async with _client() as fresh:
            ws, again = await knock_as(fresh, "Mallory again")
            assert again["type"] == "error" and again["code"] == "rate_limited"
        # a signed-in user not invited to a restricted room waits (counted by subject, not by
        # address); leaving takes them off the hosts' list
        await call(alice, "PATCH", f"{server.url}/api/meetings/{slug}", {"access": "restricted"})
        async with _client() as carol:
            await sign_in(carol, server, "carol")
            g4 = await carol.ws_connect(lobby_url)
            await g4.send_json({"type": "knock", "name": "Carol"})
            assert (await g4.receive_json(timeout=20))["type"] == "waiting"
            knock = await _next(host, "lobby", key="knock")
            assert knock["knock"]["signed_in"] is True
            assert knock["knock"]["name"] == "Carol Petit"  # the provider's name
            await g4.close()
            assert (await _next(host, "lobby"))["waiting"] == []
        await call(alice, "PATCH", f"{server.url}/api/meetings/{slug}", {"access": "trusted"})
        # a participant who is not a host may not decide
        async with _client() as bob:
            await sign_in(bob, server, "bob")
            status, entry = await call(
                bob, "POST", f"{server.url}/api/meetings/{slug}/token", {"name": "Bob"}
            )
            bob_ws = await _host_socket(bob, server, entry["token"])
            await bob_ws.send_json({"type": "lobby_admit", "id": 5, "all": True})
            error = await _next(bob_ws, "error")
            assert error["code"] == "permission_denied"
            await bob_ws.close()
        await host.close()


# -- ID token checks, against a provider whose tokens the test writes ---------------------------
class FakeIssuer:
    """Discovery, JWKS, authorize and token endpoints signing RS256 ID tokens with the claims
    ``mode`` asks for: the real ones, or another issuer, audience, nonce, an expired token."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.mode = "good"
        self.codes: dict[str, str] = {}  # code -> nonce
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        self.runner = web.AppRunner(app)

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return web.json_response({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})

    async def authorize(self, request: web.Request) -> web.Response:
        code = f"code-{len(self.codes)}"
        self.codes[code] = request.query["nonce"]
        query = urlencode({"code": code, "state": request.query["state"]})
        raise web.HTTPFound(f"{request.query['redirect_uri']}?{query}")

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        nonce = self.codes.pop(str(form["code"]))
        now = int(time.time())
        claims = {"iss": self.url, "aud": "visio", "sub": "zoe", "iat": now, "exp": now + 300}
        claims["nonce"] = nonce
        if self.mode == "issuer":
            claims["iss"] = "http://127.0.0.1:1/another-issuer"
        elif self.mode == "audience":
            claims["aud"] = "another-client"
        elif self.mode == "nonce":
            claims["nonce"] = "not-the-nonce-of-this-sign-in"
        elif self.mode == "expired":
            claims["iat"], claims["exp"] = now - 7200, now - 3600
        id_token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "k1"})
        return web.json_response(
            {"access_token": "at", "token_type": "Bearer", "id_token": id_token}
        )


async def test_id_token_checks(tmp_path):
    issuer = FakeIssuer()
    await issuer.start()
    try:
        async with LocalServer(
            oidc={"issuer": issuer.url, "client_id": "visio"}, data_dir=str(tmp_path)
        ) as server:
            expected = {
                "issuer": "the ID token comes from another issuer",
                "audience": "the ID token was issued for another client (audience)",
                "nonce": "the ID token's nonce does not match this sign-in",
                "expired": "the ID token has expired",
            }
            for mode, message in expected.items():
                issuer.mode = mode
                async with _client() as http:
                    async with http.get(f"{server.url}/auth/login") as r:
                        assert r.status == 400  # redirects followed back to the callback
                        text = await r.text()
                    assert 'data-code="id_token_invalid"' in text, text
                    assert message.replace("'", "&#x27;") in text, (mode, text)
                    assert "visio_session" not in {c.key for c in http.cookie_jar}
            issuer.mode = "good"
            async with _client() as http:
                async with http.get(f"{server.url}/auth/login?next=/x", allow_redirects=True) as r:
                    assert str(r.url).endswith("/x")
                me = await call(http, "GET", f"{server.url}/auth/me")
                assert me[1]["user"]["subject"] == "zoe"
    finally:
        await issuer.runner.cleanup()


async def test_without_oidc_nothing_changes():
    async with LocalServer() as server, aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/auth/me") as r:  # the web client asks: no error
            assert r.status == 200 and await r.json() == {"enabled": False, "user": None}
        async with http.get(f"{server.url}/api/meetings") as r:
            assert r.status in (401, 404)
        assert IDENTITY not in server.app
        await asyncio.sleep(0)


async def test_cookies_redirects_and_limits(provider, tmp_path):
    """Served as https://visio.example.org (public_url): Secure cookies and that callback;
    ``next`` stays on this site; a flood of sign-ins from one address is cut short."""
    oidc = {"issuer": provider.issuer, "client_id": "visio"}
    async with (
        LocalServer(
            oidc=oidc, data_dir=str(tmp_path), public_url="https://visio.example.org"
        ) as server,
        _client() as http,
    ):
        async with http.get(f"{server.url}/auth/login?next=/r/abc", allow_redirects=False) as r:
            assert r.status == 302
            query = parse_qs(urlsplit(r.headers["Location"]).query)
            bound = r.cookies[f"visio_login_{query['state'][0][:12]}"]
            assert bound["secure"] and bound["httponly"] and bound["samesite"] == "Lax"
            assert query["redirect_uri"] == ["https://visio.example.org/auth/callback"]
            assert "client_secret" not in query
        ident = server.app[IDENTITY]
        for bad in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            async with http.get(
                f"{server.url}/auth/login", params={"next": bad}, allow_redirects=False
            ) as r:
                state = parse_qs(urlsplit(r.headers["Location"]).query)["state"][0]
                assert ident.pending[state].next_path == "/"

        async def start() -> int:
            async with http.get(f"{server.url}/auth/login", allow_redirects=False) as r:
                return r.status

        # 40 at once (a burst of 20 is allowed, then 2 a second)
        statuses = await asyncio.gather(*(start() for _ in range(40)))
        assert 429 in statuses and 302 in statuses


async def test_deleting_a_meeting_ends_it_for_good(server):
    async with _client() as alice:
        await sign_in(alice, server, "alice")
        slug, token = await _hosting(alice, server, "Brief", "public")
        ws = await _host_socket(alice, server, token)
        assert (await call(alice, "DELETE", f"{server.url}/api/meetings/{slug}"))[0] == 200
        assert (await _next(ws, "leave"))["reason"] == "room_deleted"
        await ws.close()
        # the token is still valid for hours: coming back closes the meeting again at once
        ws = await _host_socket(alice, server, token)
        assert (await _next(ws, "leave"))["reason"] == "room_deleted"
        await ws.close()
        status, body = await call(
            alice, "POST", f"{server.url}/api/meetings/{slug}/token", {"name": "Alice"}
        )
        assert status == 404


async def test_the_meeting_notes_and_recordings_bear_the_meetings_name(server, tmp_path):
    """Not only its unguessable address: "Meeting notes: Revue d'équipe", Revue_d_equipe-….md,
    and "title" in a recording's manifest (started by the host, whose token grants it)"""
    service = server.app[TRANSCRIPTION]
    recordings = server.app[RECORDINGS]
    recordings.directory = tmp_path
    async with _client() as alice:
        await sign_in(alice, server, "alice")
        slug, token = await _hosting(alice, server, "Revue d'équipe", "trusted")
        ws = await _host_socket(alice, server, token)
        await ws.send_json({"type": "start_recording", "id": 2})
        started = await _next(ws, "recording_state")
        recording = started["recording"]["id"]
        await ws.send_json({"type": "stop_recording", "id": 3})
        await _next(ws, "recording_stopped")
        await ws.close()
        manifest = json.loads((tmp_path / recording / "manifest.json").read_text())
        assert manifest["room"] == slug and manifest["title"] == "Revue d'équipe"
        title = await service._title(slug)
        assert title == "Revue d'équipe"
        assert await service._title("not-a-meeting") == ""  # a room nobody owns: its name
        notes = Transcript(slug, id="TX_1", title=title)
        content, filename = await service.export(notes, "md", notes=False)
        assert content.startswith("# Meeting notes: Revue d'équipe\n"), content
        assert filename == "Revue_d_equipe-TX_1.md"


@pytest.fixture(scope="module")
def workers_server(provider, tmp_path_factory):
    """``serve --workers 2``: meetings live in worker processes behind the front."""
    s = serve_signed_in(provider, tmp_path_factory.mktemp("workers"), "--workers", "2")
    yield s
    s.stop()


async def test_waiting_room_with_workers(workers_server):
    """The lobby socket is relayed to the worker holding the meeting, where its hosts are;
    the front and both workers share the cookie key and the database."""
    server = workers_server
    async with _client() as alice, _client() as bob, _client() as guest:
        await sign_in(alice, server, "alice")
        slug, token = await _hosting(alice, server, "Workers", "restricted")
        host = await _host_socket(alice, server, token)
        # a signed-in user (the cookie reaches the worker: bob is known there) and a guest
        await sign_in(bob, server, "bob")
        ws_url = f"{server.url.replace('http', 'ws')}/lobby/{slug}"
        for http, name in ((bob, "Bob Durand"), (guest, "Gabriel")):
            status, body = await call(
                http, "POST", f"{server.url}/api/meetings/{slug}/token", {"name": name}
            )
            assert status == 403 and body["code"] == "must_wait"
        waiting = {}
        for http, name in ((bob, "Bob Durand"), (guest, "Gabriel")):
            ws = await http.ws_connect(ws_url)
            await ws.send_json({"type": "knock", "name": name})
            assert (await ws.receive_json(timeout=20))["type"] == "waiting"
            knock = await _next(host, "lobby", key="knock")
            assert knock["knock"]["name"] == name
            assert knock["knock"]["signed_in"] is (name == "Bob Durand")
            waiting[name] = ws
        await host.send_json({"type": "lobby_admit", "id": 9, "all": True})
        for name, ws in waiting.items():
            admitted = await ws.receive_json(timeout=20)
            assert admitted["type"] == "admitted", (name, admitted)
            joined = await _host_socket(guest, server, admitted["token"])
            who = await _next(host, "participant_joined")
            assert who["participant"]["name"] == name
            await joined.close()
        # deleting the meeting (at the front) closes its room (in a worker) for good
        assert (await call(alice, "DELETE", f"{server.url}/api/meetings/{slug}"))[0] == 200
        assert (await _next(host, "leave"))["reason"] == "room_deleted"
        await host.close()
        again = await _host_socket(alice, server, token)
        assert (await _next(again, "leave"))["reason"] == "room_deleted"
        await again.close()


async def test_bad_input_gets_clear_errors(server):
    """Malformed requests to the meetings API and the lobby: a clear error, nothing breaks."""
    async with _client() as alice, _client() as guest:
        await sign_in(alice, server, "alice")
        url = f"{server.url}/api/meetings"
        async with alice.post(
            url, data=b"{not json", headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400 and (await r.json())["code"] == "bad_json"
        for body, says in (
            ({"name": ""}, "name"),
            ({"name": "x" * 129}, "name"),
            ({"name": "bell\x07"}, "name"),
            ({"name": "ok", "access": "everyone"}, "access"),
            ([1, 2], "JSON object"),
        ):
            status, answer = await call(alice, "POST", url, body)
            assert status == 400 and says in answer["message"], (body, answer)
        slug, token = await _hosting(alice, server, "Edge", "trusted")
        for body, says in (
            ({"hosts": 5}, "hosts"),
            ({"invited": ["ok@example.org", "bad\x00one"]}, "invited"),
            ({"name": None}, "name"),
        ):
            status, answer = await call(alice, "PATCH", f"{url}/{slug}", body)
            assert status == 400 and says in answer["message"], (body, answer)
        lobby_url = f"{server.url.replace('http', 'ws')}/lobby/{slug}"
        for message, code in (
            ("not json", "bad_request"),
            (json.dumps({"type": "hello"}), "bad_request"),
            (json.dumps({"type": "knock", "name": "\u202e\u0000"}), "bad_request"),
        ):
            ws = await guest.ws_connect(lobby_url)
            await ws.send_str(message)
            answer = await ws.receive_json(timeout=20)
            assert answer["type"] == "error" and answer["code"] == code, (message, answer)
            await ws.close()
        ws = await guest.ws_connect(f"{server.url.replace('http', 'ws')}/lobby/no-such-room")
        await ws.send_json({"type": "knock", "name": "Eve"})
        assert (await ws.receive_json(timeout=20))["code"] == "not_found"
        await ws.close()
        host = await _host_socket(alice, server, token)
        await host.send_json({"type": "lobby_admit", "id": 7})
        assert (await _next(host, "error"))["code"] == "bad_request"
        await host.send_json({"type": "lobby_deny", "id": 8, "waiting": "W_nobody"})
        assert (await _next(host, "error"))["code"] == "not_found"
        await host.send_json({"type": "lobby_admit", "id": 9, "all": "yes"})
        assert (await _next(host, "error"))["code"] == "bad_request"
        await host.close()


async def test_a_session_ends_after_session_ttl(provider, tmp_path):
    oidc = {"issuer": provider.issuer, "client_id": "visio", "client_secret": "s", "session_ttl": 1}
    async with LocalServer(oidc=oidc, data_dir=str(tmp_path)) as server, _client() as http:
        await sign_in(http, server, "bob")
        assert (await call(http, "GET", f"{server.url}/auth/me"))[1]["user"]["subject"] == "bob"
        cookie = {
            "visio_session": next(c.value for c in http.cookie_jar if c.key == "visio_session")
        }
        async with _client() as now:
            status, _ = await call(now, "GET", f"{server.url}/api/meetings", cookies=cookie)
            assert status == 200
        await asyncio.sleep(1.2)
        async with _client() as later:  # the cookie sent all the same: the server refuses it
            status, body = await call(later, "GET", f"{server.url}/api/meetings", cookies=cookie)
            assert status == 401 and body["code"] == "not_signed_in"
            me = await call(later, "GET", f"{server.url}/auth/me", cookies=cookie)
            assert me[1]["user"] is None


async def test_a_guest_who_comes_early_is_shown_to_the_host_who_joins(server):
    async with _client() as alice, _client() as guest:
        await sign_in(alice, server, "alice")
        slug, token = await _hosting(alice, server, "Early", "trusted")
        await call(guest, "POST", f"{server.url}/api/meetings/{slug}/token", {"name": "Early"})
        ws = await guest.ws_connect(f"{server.url.replace('http', 'ws')}/lobby/{slug}")
        await ws.send_json({"type": "knock", "name": "Early bird"})
        waiting = await ws.receive_json(timeout=20)
        assert waiting["type"] == "waiting" and waiting["hosts_present"] is False
        host = await _host_socket(alice, server, token)
        await host.send_json({"type": "lobby", "id": 2})
        listed = await _next(host, "lobby")
        assert [w["name"] for w in listed["waiting"]] == ["Early bird"]
        await host.send_json({"type": "lobby_admit", "id": 3, "waiting": waiting["id"]})
        assert (await ws.receive_json(timeout=20))["type"] == "admitted"
        await host.close()
