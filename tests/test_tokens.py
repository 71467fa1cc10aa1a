"""Access tokens, configuration and the CLI."""

import base64
import json
import subprocess
import sys
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from signaling.auth import TokenError, TokenVerifier, mint_token, parse_duration
from signaling.cli import main
from signaling.config import DEV_API_KEY, ConfigError, load_config

KEY, SECRET = "key1", "s" * 40
verifier = TokenVerifier({KEY: SECRET})


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**over):
    now = int(time.time())
    base = {
        "iss": KEY,
        "sub": "alice",
        "nbf": now,
        "exp": now + 3600,  # long enough for a slow collection-to-run gap
        "video": {"room": "r", "roomJoin": True},
    }
    base.update(over)
    return base


def test_round_trip_with_grants():
    token = mint_token(KEY, SECRET, "alice", "demo", name="Alice", can_publish=False)
    ident = verifier.verify(token)
    assert (ident.identity, ident.name, ident.grant.room) == ("alice", "Alice", "demo")
    assert not ident.grant.can_publish and ident.grant.can_subscribe


@pytest.mark.parametrize(
    "token, reason",
    [
        (mint_token(KEY, SECRET, "a", "r", now=time.time() - 7200, ttl=60), "expired"),
        (mint_token(KEY, SECRET, "a", "r", now=time.time() + 3600), "not yet valid"),
        (mint_token(KEY, "x" * 40, "a", "r"), "signature"),
        (mint_token("other", SECRET, "a", "r"), "unknown api key"),
        ("garbage", "malformed"),
        ("a" * 9000, "too large"),
        (jwt.encode(claims(video={"room": "r"}), SECRET, algorithm="HS256"), "joining"),
        (jwt.encode(claims(video={"roomJoin": True}), SECRET, algorithm="HS256"), "joining"),
        (
            jwt.encode(claims(video={"room": "r", "roomJoin": "yes"}), SECRET, algorithm="HS256"),
            "true or false",
        ),
        (
            jwt.encode(
                {k: v for k, v in claims().items() if k != "exp"}, SECRET, algorithm="HS256"
            ),
            "exp",
        ),
        (b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims()) + ".", "algorithm"),
        (jwt.encode(claims(), SECRET * 2, algorithm="HS512"), "algorithm"),
    ],
)
def test_refused_tokens(token, reason):
    with pytest.raises(TokenError) as err:
        verifier.verify(token)
    assert reason in str(err.value).lower()
    assert SECRET not in str(err.value) and token[:40] not in str(err.value) or len(token) < 12


def test_rs256_and_tampered_tokens_are_refused():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TokenError):
        verifier.verify(jwt.encode(claims(), private, algorithm="RS256"))
    header, _payload, signature = mint_token(KEY, SECRET, "alice", "r").split(".")
    forged = header + "." + b64(claims(sub="admin")) + "." + signature
    with pytest.raises(TokenError, match="signature"):
        verifier.verify(forged)


def test_leeway_and_rotation():
    late = mint_token(KEY, SECRET, "a", "r", now=time.time() - 65, ttl=60)
    assert verifier.verify(late).identity == "a"  # 5 s past exp, within the 10 s leeway
    both = TokenVerifier({"old": "o" * 40, "new": "n" * 40})
    assert both.verify(mint_token("old", "o" * 40, "a", "r")).api_key == "old"
    assert both.verify(mint_token("new", "n" * 40, "a", "r")).api_key == "new"


def test_durations():
    assert [parse_duration(x) for x in ("90s", "30m", "6h", "2d", "15")] == [
        90,
        1800,
        21600,
        172800,
        15,
    ]
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_config_precedence(tmp_path):
    assert load_config(env={}).dev  # no key configured: development mode
    path = tmp_path / "visio.toml"
    path.write_text('port = 9000\nempty_timeout = 5\n[keys]\nk = "' + "s" * 32 + '"\n')
    config = load_config(str(path), env={"VISIO_PORT": "9100"}, overrides={"host": "0.0.0.0"})
    assert (config.port, config.host, config.empty_timeout, config.dev) == (
        9100,
        "0.0.0.0",
        5,
        False,
    )
    assert "s" * 32 not in repr(config)
    with pytest.raises(ConfigError, match="port"):
        load_config(env={"VISIO_PORT": "http"})
    with pytest.raises(ConfigError, match="32"):
        load_config(env={"VISIO_API_KEY": "k", "VISIO_API_SECRET": "short"})
    with pytest.raises(ConfigError, match="unknown setting"):
        path.write_text("colour = 1\n")
        load_config(str(path), env={})
    keys = load_config(env={"VISIO_KEYS": f"a:{'x' * 32},b:{'y' * 32}"}).api_keys
    assert set(keys) == {"a", "b"}


def test_cli_token_verifies(capsys):
    assert (
        main(["token", "--room", "demo", "--identity", "bob", "--ttl", "1h", "--no-publish"]) == 0
    )
    token = capsys.readouterr().out.strip()
    dev = load_config(env={})
    ident = TokenVerifier(dev.api_keys).verify(token)
    assert ident.api_key == DEV_API_KEY and not ident.grant.can_publish
    assert main(["token", "--room", "d", "--identity", "b", "--ttl", "later"]) == 2


def test_serve_help_documents_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "signaling.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in (
        "--host",
        "--port",
        "--config",
        "--dev",
        "--ice-address",
        "VISIO_API_KEY",
        "VISIO_KEYS",
        "VISIO_ICE_ADDRESSES",
    ):
        assert option in out


def test_rooms_cli_drives_the_admin_api(capsys):
    from tests.support.server import ServerProcess

    server = ServerProcess()
    try:
        assert main(["rooms", "--url", server.url, "create", "board", "--metadata", "m"]) == 0
        assert json.loads(capsys.readouterr().out)["name"] == "board"
        assert main(["rooms", "--url", server.url, "list"]) == 0
        assert [r["name"] for r in json.loads(capsys.readouterr().out)["rooms"]] == ["board"]
        assert main(["rooms", "--url", server.url, "participants", "board"]) == 0
        assert json.loads(capsys.readouterr().out) == {"participants": []}
        assert main(["rooms", "--url", server.url, "remove", "board", "nobody"]) == 1
        assert "404" in capsys.readouterr().err
        assert main(["rooms", "--url", server.url, "delete", "board"]) == 0
        capsys.readouterr()
        assert main(["rooms", "--url", server.url, "delete", "board"]) == 1
    finally:
        server.stop()


def test_serve_on_a_port_in_use_says_so_without_a_traceback(tmp_path):
    """A new user's second `visio-sfu serve` (or a port another program holds): a clear line,
    exit status 2, no worker process left behind, and no banner before it (the development
    mode's key and URL, "listening on": printed only once the ports are bound)."""
    import socket

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    media_port = media.getsockname()[1]
    serve = [sys.executable, "-m", "signaling.cli", "serve", "--data-dir", str(tmp_path)]
    try:
        cases = [
            # the HTTP port taken: alone, and as the front of two workers (the default on a
            # machine with two cores or more)
            (["--port", str(port), "--workers", w, "--udp-port", "0"], f"127.0.0.1:{port}")
            for w in ("1", "2")
        ]
        # the media port taken (one process: it is bound at start-up, before the HTTP port)
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
        free.close()
        cases.append(
            (
                ["--port", str(free_port), "--workers", "1", "--udp-port", str(media_port)]
                + ["--ice-address", "127.0.0.1"],
                f"port {media_port}",
            )
        )
        for options, what in cases:
            done = subprocess.run(serve + options, capture_output=True, text=True, timeout=120)
            out = done.stdout + done.stderr
            assert done.returncode == 2, out
            assert f"cannot listen on {what}" in done.stderr, out
            assert "the address is in use" in done.stderr, out
            assert "Traceback" not in done.stderr, done.stderr
            assert "DEVELOPMENT MODE" not in out and "API secret" not in out, out
            assert f"listening on http://127.0.0.1:{port}" not in out, out
            assert f"listening on http://127.0.0.1:{free_port}" not in out, out
    finally:
        held.close()
        media.close()
