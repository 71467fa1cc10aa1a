"""Issue 13, token verification without a server: identity-provider keys (JWKS) fetched once at
a time, cached by max-age, not refetched for a while after a failure, bounded by a timeout; an
RS256 token naming an EC key; untrusted values never break a log line or an error message."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from signaling.auth import IdentityProvider, TokenError, TokenVerifier
from tests.support.inprocess import free_port

pytestmark = pytest.mark.timeout(60)

ISSUER = "https://idp.test"


class Jwks:
    """A JWKS endpoint on 127.0.0.1 that counts its requests; it can fail or be slow."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/jwks.json"
        self.keys: dict[str, object] = {}
        self.requests = 0
        self.status = 200
        self.delay = 0.0
        self.cache_control: str | None = None

    def add_key(self, kid: str, kind: str = "rsa") -> None:
        if kind == "rsa":
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())

    def token(self, kid: str, alg: str | None = None, headers: dict | None = None) -> str:
        key = self.keys[kid]
        alg = alg or ("RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256")
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": "visio", "sub": "agent", "room": "r", "exp": now + 300}
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, **(headers or {})})

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.Response(status=self.status)
        out = []
        for kid, key in self.keys.items():
            if isinstance(key, rsa.RSAPrivateKey):
                jwk, alg = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()), "RS256"
            else:
                jwk, alg = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()), "ES256"
            out.append({**json.loads(jwk), "kid": kid, "alg": alg, "use": "sig"})
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        return web.json_response({"keys": out}, headers=headers)

    async def __aenter__(self) -> Jwks:
        app = web.Application()
        app.router.add_get("/jwks.json", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def verifier_for(jwks: Jwks, **settings: object) -> TokenVerifier:
    provider = IdentityProvider(
        issuer=ISSUER, audience="visio", jwks_url=jwks.url, rooms=("*",), **settings
    )
    return TokenVerifier({}, providers=[provider])


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenError) as err:
        await verifier.verify_async(token)
    return str(err.value)


async def test_jwks_down_is_fetched_once_then_not_again_for_a_while():
    """Issue 13: 12 requests with an IdP token made 12 JWKS fetches while it was down."""
    async with Jwks() as idp:
        idp.add_key("k1")
        idp.status = 503
        verifier = verifier_for(idp)
        token = idp.token("k1")
        together = await asyncio.gather(
            *(verifier.verify_async(token) for _ in range(12)), return_exceptions=True
        )
        assert all(isinstance(r, TokenError) for r in together), together
        assert idp.requests == 1, f"{idp.requests} JWKS fetches for 12 concurrent tokens"
        for _ in range(12):
            assert "unavailable" in await refused(verifier, token)
        assert idp.requests == 1, "a failed fetch is not retried at once (negative cache)"


async def test_slow_jwks_times_out_and_one_fetch_serves_everyone():
    async with Jwks() as idp:
        idp.add_key("k1")
        idp.delay = 5.0
        verifier = verifier_for(idp, jwks_timeout=0.5, jwks_failure_cooldown=0.5)
        token = idp.token("k1")
        start = time.monotonic()
        results = await asyncio.gather(
            *(verifier.verify_async(token) for _ in range(10)), return_exceptions=True
        )
        assert time.monotonic() - start < 2.0, "the fetch timeout bounds every verification"
        assert all(isinstance(r, TokenError) for r in results)
        assert idp.requests == 1
        start = time.monotonic()
        await refused(verifier, token)  # within the failure cooldown: at once, no fetch
        assert time.monotonic() - start < 0.2 and idp.requests == 1
        idp.delay = 0.0  # the provider recovers; after the cooldown a fetch is tried again
        await asyncio.sleep(0.6)
        assert (await verifier.verify_async(token)).identity == "agent"
        assert idp.requests == 2


async def test_jwks_cache_honours_max_age_and_keeps_known_keys_during_an_outage():
    async with Jwks() as idp:
        idp.add_key("k1")
        idp.cache_control = "public, max-age=1"
        verifier = verifier_for(idp, refresh_cooldown=0)
        token = idp.token("k1")
        for _ in range(5):
            await verifier.verify_async(token)
        assert idp.requests == 1, "cached within its max-age"
        await asyncio.sleep(1.2)
        await verifier.verify_async(token)
        assert idp.requests == 2, "fetched again once the max-age is over"
        idp.status = 500
        await asyncio.sleep(1.2)
        assert (await verifier.verify_async(token)).identity == "agent", "known key kept"
        await verifier.verify_async(token)
        assert idp.requests == 3, "one failed refetch, then the negative cache"
        idp.add_key("k2")  # a key the server has never seen: refused, not fetched again
        assert "unavailable" in await refused(verifier, idp.token("k2"))
        assert idp.requests == 3


async def test_unknown_kid_refetches_at_most_every_refresh_cooldown():
    async with Jwks() as idp:
        idp.add_key("k1")
        verifier = verifier_for(idp, refresh_cooldown=30)
        await verifier.verify_async(idp.token("k1"))
        stranger = Jwks()
        stranger.add_key("k9")
        for _ in range(10):
            assert "unknown" in await refused(verifier, stranger.token("k9"))
        assert idp.requests == 1


async def test_rs256_token_naming_an_ec_key_is_refused_not_a_crash():
    """Issue 13: HTTP 500 and an ERROR traceback (a TypeError out of PyJWT)."""
    async with Jwks() as idp:
        idp.add_key("r1")
        idp.add_key("e1", "ec")
        verifier = verifier_for(idp)
        # signed with the RSA key, but naming the EC key
        token = jwt.encode(
            {"iss": ISSUER, "aud": "visio", "sub": "x", "room": "r", "exp": time.time() + 60},
            idp.keys["r1"],
            algorithm="RS256",
            headers={"kid": "e1"},
        )
        with pytest.raises(TokenError) as err:
            await verifier.verify_async(token)
        assert err.value.code == "invalid_token"
        assert "does not match its key" in str(err.value)
        es_on_rsa = jwt.encode(
            {"iss": ISSUER, "aud": "visio", "sub": "x", "room": "r", "exp": time.time() + 60},
            idp.keys["e1"],
            algorithm="ES256",
            headers={"kid": "r1"},
        )
        assert "does not match" in await refused(verifier, es_on_rsa)
        assert (await verifier.verify_async(idp.token("e1"))).identity == "agent"


async def test_a_forged_kid_never_reaches_an_error_message():
    """Issue 13: a newline in a JWT kid wrote a fake log line and came back in the 401 body."""
    async with Jwks() as idp:
        idp.add_key("k1")
        verifier = verifier_for(idp)
        forged = "nope\n2026-01-01 00:00:00,000 ERROR signaling.app: admin logged in\u202e"
        token = idp.token("k1", headers={"kid": forged})
        message = await refused(verifier, token)
        assert message.isprintable() and "admin logged in" not in message, message


def test_identities_with_control_characters_are_refused():
    """The identity (``sub``) is logged before a participant joins: no line break in it."""
    from signaling.auth import mint_token

    verifier = TokenVerifier({"k": "s" * 40})
    for sub in ("alice\n2026-01-01 ERROR forged", "bob\x1b[31m", "eve\u202e"):
        with pytest.raises(TokenError, match="printable"):
            verifier.verify(mint_token("k", "s" * 40, sub, "r"))
    assert verifier.verify(mint_token("k", "s" * 40, "zoë o'brien", "r")).identity


def test_printable_escapes_line_breaks_and_controls():
    from signaling.auth import TokenError, printable

    assert printable("a\nb\r\x00\u202e\u2028c") == "a\\nb\\r\\x00\\u202e\\u2028c"
    assert printable("é ok") == "é ok"
    long = printable("x" * 500, 50)
    assert len(long) == 51 and long.endswith("\N{HORIZONTAL ELLIPSIS}")
    assert str(TokenError("bad\nline")) == "bad\\nline"


def test_redact_tokens_removes_any_part_of_a_token():
    from signaling.auth import mint_token, redact_tokens

    token = mint_token("k", "s" * 40, "alice", "r")
    for text in (
        f"GET /rtc?access_token={token} HTTP/1.1",
        f"Authorization: Bearer {token}",
        f"b'/rtc?access_token={token[:100]}...'",
        f"b'{token[:60]}'",
        f"Got more than 8190 bytes when reading: b'Bearer {token[:90]}'",
    ):
        cleaned = redact_tokens(text)
        assert token[:20] not in cleaned and "<token>" in cleaned, cleaned
