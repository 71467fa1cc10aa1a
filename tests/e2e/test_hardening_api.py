"""Issue 13, the HTTP side of a live server: log forging, an RS256 token naming an EC key,
over-long tokens in the query string and the Authorization header, DNS rebinding (public_url)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import aiohttp
import jwt
import pytest

from signaling.auth import MAX_TOKEN_BYTES, VideoGrant, mint_token
from signaling.config import ConfigError, load_config
from tests.support.inprocess import KEY, SECRET, LocalServer
from tests.test_hardening_auth import ISSUER, Jwks

pytestmark = pytest.mark.timeout(120)


def admin_token(room: str, **grant: bool) -> str:
    return mint_token(KEY, SECRET, "ops", room, grant=VideoGrant(room=room, **grant))


def server_lines(caplog) -> list[str]:
    """Every record the server logged, formatted with its traceback as a log file has it."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return [fmt.format(r) for r in caplog.records]


async def get(url: str, **kwargs) -> tuple[int, dict | str]:
    async with aiohttp.ClientSession() as http, http.get(url, **kwargs) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


async def test_untrusted_values_never_forge_a_log_line_or_an_error(caplog):
    """Issue 13: a newline in a JWT kid wrote a fake timestamped line into the server log, and
    the same text came back in the 401 body."""
    caplog.set_level(logging.INFO)
    forged = "nope\n2026-01-01 00:00:00,000 ERROR signaling.app: admin logged in"
    async with Jwks() as idp:
        idp.add_key("k1")
        provider = {"issuer": ISSUER, "audience": "visio", "jwks_url": idp.url, "rooms": ["*"]}
        async with LocalServer(identity_providers=[provider]) as s:
            token = idp.token("k1", headers={"kid": forged})
            status, body = await get(f"{s.url}/rtc", params={"access_token": token})
            assert status == 401 and body["code"] == "invalid_token"
            assert "admin logged in" not in body["message"] and body["message"].isprintable()
            status, body = await s.api("GET", "/api/rooms", token)
            assert status == 401 and body["message"].isprintable()
            # a room name from the URL, quoted back in a 404
            path = "/api/rooms/x%0A2026-01-01%20ERROR%20forged/participants"
            status, body = await s.api("GET", path, admin_token("*", room_admin=True))
            assert status == 404 and body["message"].isprintable(), body
    for record in caplog.records:
        if record.name.startswith(("signaling", "aiohttp", "visio_sfu")):
            assert "\n" not in record.getMessage(), record.getMessage()
    assert not any("admin logged in" in line for line in server_lines(caplog))


async def test_rs256_token_naming_an_ec_key_gets_401_without_a_traceback(caplog):
    """Issue 13: HTTP 500 with an ERROR traceback."""
    caplog.set_level(logging.INFO)
    async with Jwks() as idp:
        idp.add_key("r1")
        idp.add_key("e1", "ec")
        provider = {"issuer": ISSUER, "audience": "visio", "jwks_url": idp.url, "rooms": ["*"]}
        async with LocalServer(identity_providers=[provider]) as s:
            claims = {
                "iss": ISSUER,
                "aud": "visio",
                "sub": "x",
                "room": "r",
                "exp": time.time() + 60,
            }
            token = jwt.encode(claims, idp.keys["r1"], algorithm="RS256", headers={"kid": "e1"})
            status, body = await get(f"{s.url}/rtc", params={"access_token": token})
            assert status == 401, body
            assert body["code"] == "invalid_token" and "does not match its key" in body["message"]
            status, body = await s.api("GET", "/api/rooms", token)
            assert status == 401 and body["code"] == "invalid_token"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def long_token(size: int) -> str:
    """A valid token of exactly ``size`` bytes (padded in its metadata)."""
    token = mint_token(KEY, SECRET, "big", "r", metadata="m")
    pad = "m"
    while len(token) < size:
        pad += "m" * max(1, (size - len(token)) * 3 // 4)
        token = mint_token(KEY, SECRET, "big", "r", metadata=pad)
    while len(token) > size:
        pad = pad[:-1]
        token = mint_token(KEY, SECRET, "big", "r", metadata=pad)
    return token


async def test_documented_token_limit_is_the_real_one_in_query_and_header(caplog):
    """Issue 13: the 8 KiB check could not be reached through the query string (aiohttp's
    8190-byte line limit answered first) and the refusal logged an ERROR with the token's
    first ~100 bytes."""
    caplog.set_level(logging.DEBUG)
    async with LocalServer() as s:
        fits = long_token(MAX_TOKEN_BYTES)
        assert len(fits) == MAX_TOKEN_BYTES
        too_big = "eyJ" + "A" * MAX_TOKEN_BYTES  # one past the limit
        huge = "eyJ" + "B" * 40000  # past the HTTP server's own line limit
        by_query = {"access_token": fits}
        by_header = {"Authorization": f"Bearer {fits}"}
        for kwargs in ({"params": by_query}, {"headers": by_header}):
            status, body = await get(f"{s.url}/rtc", **kwargs)
            assert (status, body["code"]) == (400, "bad_request"), (kwargs.keys(), body)
            assert "WebSocket" in body["message"]  # verified; only the upgrade is missing
        for kwargs in (
            {"params": {"access_token": too_big}},
            {"headers": {"Authorization": f"Bearer {too_big}"}},
        ):
            status, body = await get(f"{s.url}/rtc", **kwargs)
            assert status == 401 and "too large" in body["message"], body
        for kwargs in (
            {"params": {"access_token": huge}},
            {"headers": {"Authorization": f"Bearer {huge}"}},
        ):
            status, _body = await get(f"{s.url}/rtc", **kwargs)
            assert status == 400
        status, body = await s.api("GET", "/api/rooms", too_big)
        assert status == 401 and "too large" in body["message"]
    logged = "\n".join(server_lines(caplog))
    for secret in (fits[:16], fits[-16:], "eyJAAAA", "eyJBBBB", "AAAAAAAAAAAA", "BBBBBBBBBBBB"):
        assert secret not in logged, f"{secret!r} logged"
    assert "refused a malformed request" in logged
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_origin_is_checked_against_public_url_not_the_host_header(caplog):
    """Issue 13: with no allowed_origins, the Origin was compared with the Host header, which
    a rebound name controls."""
    caplog.set_level(logging.WARNING)
    async with LocalServer(public_url="https://visio.example.org") as s:
        url = f"{s.url}/rtc"
        params = {"access_token": s.token("r", "x")}
        rebound = {"Host": "evil.example:7880", "Origin": "http://evil.example:7880"}
        status, body = await get(url, params=params, headers=rebound)
        assert status == 403 and body["code"] == "bad_origin"
        for origin in ("https://visio.example.org", "https://VISIO.example.org:443"):
            headers = {"Host": "evil.example", "Origin": origin}
            status, body = await get(url, params=params, headers=headers)
            assert (status, body["code"]) == (400, "bad_request"), (origin, body)
        for origin in ("http://visio.example.org", "https://visio.example.org:8443", "null"):
            status, body = await get(url, params=params, headers={"Origin": origin})
            assert status == 403, origin
    assert not [r for r in caplog.records if "public_url" in r.getMessage()]
    async with LocalServer():  # production (keys configured), neither setting: a warning
        pass
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("public_url" in r.getMessage() for r in warnings)
    caplog.clear()
    async with LocalServer(dev=True):  # development mode: no warning
        pass
    async with LocalServer(allowed_origins=["https://visio.example.org"]):
        pass
    assert not [r for r in caplog.records if "public_url" in r.getMessage()]


def test_public_url_setting():
    config = load_config(env={"VISIO_PUBLIC_URL": "https://visio.example.org"})
    assert config.public_url == "https://visio.example.org"
    assert load_config(env={}, overrides={"public_url": "http://h:8080/"}).public_url
    for bad in ("visio.example.org", "ftp://visio.example.org", "https://", "https://h:99999"):
        with pytest.raises(ConfigError, match="public_url"):
            load_config(env={"VISIO_PUBLIC_URL": bad})
    out = subprocess.run(
        [sys.executable, "-m", "signaling.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--public-url" in out and "VISIO_PUBLIC_URL" in out
