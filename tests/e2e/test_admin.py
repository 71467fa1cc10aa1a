"""Admin API (every endpoint, authorised and not), webhooks, and identity-provider tokens."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from signaling import webhooks
from tests.support.inprocess import KEY, SECRET, LocalServer, free_port
from tests.support.media import check_video, until
from visio_client import Client
from visio_client.media import PatternVideoTrack

pytestmark = pytest.mark.timeout(120)


async def test_every_admin_endpoint_authorised_and_not():
    async with LocalServer() as s:
        lister = s.token("*", "ops", room_join=False, room_list=True)
        creator = s.token("*", "ops", room_join=False, room_create=True)
        admin = s.token("board", "ops", room_join=False, room_admin=True)
        other_admin = s.token("elsewhere", "ops", room_join=False, room_admin=True)
        plain = s.token("board", "user")

        assert (await s.api("GET", "/api/rooms", None))[0] == 401
        assert (await s.api("GET", "/api/rooms", "garbage"))[0] == 401
        assert (await s.api("GET", "/api/rooms", plain))[0] == 403
        assert (await s.api("POST", "/api/rooms", lister, {"name": "board"}))[0] == 403
        status, room = await s.api(
            "POST",
            "/api/rooms",
            creator,
            {"name": "board", "max_participants": 5, "empty_timeout": 60, "metadata": "m"},
        )
        assert status == 201 and room["max_participants"] == 5 and room["metadata"] == "m"
        assert (await s.api("POST", "/api/rooms", creator, {"name": "board"}))[0] == 409
        assert (await s.api("POST", "/api/rooms", creator, {"name": 5}))[0] == 400
        assert (await s.api("POST", "/api/rooms", creator, [1]))[0] == 400
        status, listing = await s.api("GET", "/api/rooms", lister)
        assert status == 200 and [r["name"] for r in listing["rooms"]] == ["board"]

        alice = Client(s.url, s.token("board", "alice"))
        await alice.connect()
        published = await alice.publish(PatternVideoTrack(0))
        bob = Client(s.url, s.token("board", "bob"))
        await bob.connect()
        await until(lambda: bob.remote_tracks, what="bob receives alice")

        base = "/api/rooms/board"
        for method, path, body in [
            ("GET", f"{base}/participants", None),
            ("PATCH", base, {"metadata": "x"}),
            ("PATCH", f"{base}/participants/alice", {"name": "A"}),
            ("POST", f"{base}/participants/alice/mute", {"track": published[0]["sid"]}),
            ("POST", f"{base}/data", {"payload": 1}),
            ("DELETE", f"{base}/participants/bob", None),
        ]:
            assert (await s.api(method, path, other_admin, body))[0] == 403, (method, path)
            assert (await s.api(method, path, lister, body))[0] == 403, (method, path)

        status, people = await s.api("GET", f"{base}/participants", admin)
        assert status == 200
        assert sorted(p["identity"] for p in people["participants"]) == ["alice", "bob"]
        status, updated = await s.api("PATCH", base, admin, {"metadata": "agenda"})
        assert status == 200 and updated["metadata"] == "agenda"
        assert (await bob.wait_for("room_updated"))["room"]["metadata"] == "agenda"
        status, p = await s.api(
            "PATCH", f"{base}/participants/alice", admin, {"name": "Alice B.", "metadata": "chair"}
        )
        assert status == 200 and p["name"] == "Alice B."
        assert (await bob.wait_for("participant_updated"))["participant"]["metadata"] == "chair"
        sid = published[0]["sid"]
        status, track = await s.api(
            "POST", f"{base}/participants/alice/mute", admin, {"track": sid, "muted": True}
        )
        assert status == 200 and track["muted"] is True
        assert (await bob.wait_for("track_muted"))["muted"] is True
        assert (await alice.wait_for("track_muted"))["track"] == sid
        assert (
            await s.api("POST", f"{base}/participants/alice/mute", admin, {"track": "TR_nope"})
        )[0] == 404
        status, sent = await s.api(
            "POST", f"{base}/data", admin, {"topic": "notice", "payload": {"text": "5 minutes"}}
        )
        assert status == 200 and sent["delivered"] == 2
        notice = await alice.wait_for("data")
        assert notice["from"] is None and notice["payload"] == {"text": "5 minutes"}
        assert (await s.api("DELETE", f"{base}/participants/nobody", admin))[0] == 404
        status, _ = await s.api("DELETE", f"{base}/participants/bob", admin)
        assert status == 200
        assert (await bob.wait_for("leave"))["reason"] == "removed"
        await until(lambda: bob.ws.closed, what="bob's socket closed")

        assert (await s.api("DELETE", base, creator))[0] == 403  # creating is not deleting
        assert (await s.api("DELETE", base, other_admin))[0] == 403
        status, _ = await s.api("DELETE", base, admin)
        assert status == 200 and s.sfu.room("board") is None
        assert (await alice.wait_for("leave"))["reason"] == "room_deleted"
        assert (await s.api("DELETE", base, admin))[0] == 404
        await alice.close()
        await bob.close()


class Receiver:
    """A local webhook receiver that fails its first ``failures`` requests."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.events: list[dict] = []
        self.calls = 0
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls <= self.failures:
            return web.Response(status=503)
        body = await request.read()
        self.events.append(webhooks.verify(body, request.headers["Authorization"], {KEY: SECRET}))
        return web.Response(text="ok")

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


async def test_webhooks_signed_retried_and_never_in_the_way():
    async with Receiver(failures=2) as receiver:
        dead = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens there
        async with LocalServer(webhook_urls=[f"http://127.0.0.1:{receiver.port}/hook", dead]) as s:
            from signaling.app import WEBHOOKS

            s.app[WEBHOOKS].base_delay = 0.05
            alice = Client(s.url, s.token("hooks", "alice"))
            await alice.connect()
            await alice.publish(PatternVideoTrack(0))
            bob = Client(s.url, s.token("hooks", "bob"))
            await bob.connect()
            await until(lambda: bob.remote_tracks, what="media while a receiver is down")
            await check_video(bob.remote_tracks[0], 0, frames=3)
            await alice.leave()
            await until(lambda: len(receiver.events) >= 5, what="webhooks delivered")
            kinds = [e["event"] for e in receiver.events]
            for kind in (
                "room_started",
                "participant_joined",
                "track_published",
                "track_unpublished",
                "participant_left",
            ):
                assert kind in kinds, kinds
            assert receiver.calls > len(receiver.events)  # the first two were retried
            joined = next(e for e in receiver.events if e["event"] == "participant_joined")
            assert joined["room"]["name"] == "hooks" and "identity" in joined["participant"]
            await bob.close()
    forged = json.dumps({"event": "room_started"}).encode()
    with pytest.raises(ValueError):
        webhooks.verify(forged, webhooks.sign(b"{}", KEY, SECRET), {KEY: SECRET})


class IdentityProviderStub:
    """A local identity provider serving a JWKS made in the test; keys can rotate."""

    def __init__(self) -> None:
        self.port = free_port()
        self.keys: dict[str, object] = {}
        self.fetches = 0

    def add_key(self, kid: str, kind: str = "rsa") -> None:
        if kind == "rsa":
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())

    def token(self, kid: str, **claims) -> str:
        now = int(time.time())
        base = {
            "iss": "https://idp.test",
            "aud": "visio",
            "sub": "agent-007",
            "name": "Agent",
            "room": "federated",
            "exp": now + 300,
            "nbf": now,
        }
        base.update(claims)
        key = self.keys[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(base, key, algorithm=alg, headers={"kid": kid})

    async def jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        out = []
        for kid, key in self.keys.items():
            alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
            algo = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
            jwk = json.loads(algo.to_jwk(key.public_key()))
            out.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        return web.json_response({"keys": out})

    async def __aenter__(self):
        app = web.Application()
        app.router.add_get("/jwks.json", self.jwks)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()


async def test_identity_provider_tokens_with_jwks_and_rotation():
    async with IdentityProviderStub() as idp:
        idp.add_key("k1")
        idp.add_key("e1", "ec")
        provider = {
            "issuer": "https://idp.test",
            "audience": "visio",
            "jwks_url": f"http://127.0.0.1:{idp.port}/jwks.json",
            "rooms": ["*"],
            "refresh_cooldown": 0,
        }
        async with LocalServer(identity_providers=[provider]) as s:

            async def join(token: str) -> Client:
                client = Client(s.url, token)
                await client.connect()
                return client

            agent = await join(idp.token("k1"))
            assert agent.joined["participant"]["identity"] == "agent-007"
            assert agent.joined["room"]["name"] == "federated"
            assert (await join(idp.token("e1", sub="ec-user"))).joined  # ES256
            fetched = idp.fetches
            await join(idp.token("k1", sub="again"))
            assert idp.fetches == fetched, "the JWKS is cached"

            idp.add_key("k2")  # rotation: a new key id makes the verifier fetch again
            rotated = await join(idp.token("k2", sub="rotated"))
            assert rotated.joined and idp.fetches == fetched + 1

            for bad, reason in [
                (idp.token("k1", aud="someone-else"), "audience"),
                (idp.token("k1", exp=int(time.time()) - 100), "expired"),
                # HS/RS confusion: HS256 signed with the public key, claiming the IdP
                (
                    jwt.encode(
                        {
                            "iss": "https://idp.test",
                            "aud": "visio",
                            "sub": "x",
                            "room": "federated",
                            "exp": int(time.time()) + 60,
                        },
                        SECRET,
                        algorithm="HS256",
                        headers={"kid": "k1"},
                    ),
                    "algorithm",
                ),
            ]:
                with pytest.raises(Exception) as err:
                    await join(bad)
                assert reason in str(err.value).lower() or "401" in str(err.value)
            await asyncio.sleep(0)


async def test_unknown_idp_key_is_refused_clearly():
    async with IdentityProviderStub() as idp:
        idp.add_key("k1")
        provider = {
            "issuer": "https://idp.test",
            "audience": "visio",
            "jwks_url": f"http://127.0.0.1:{idp.port}/jwks.json",
            "rooms": ["*"],
        }
        async with LocalServer(identity_providers=[provider]) as s:
            stranger = IdentityProviderStub()
            stranger.add_key("k9")
            status, body = await s.api("GET", "/api/rooms", stranger.token("k9"))
            assert status == 401 and "key" in body["message"]
