"""TURN credentials (signaling/turn.py) and their settings."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from signaling.config import ConfigError, load_config
from signaling.turn import credentials, ice_servers


def test_credentials_follow_the_shared_secret_scheme():
    """username <expiry>:<identity>; password base64(HMAC-SHA1(secret, username)): what
    coturn's use-auth-secret checks (tests/browser/test_turn.py has coturn accept them)."""
    username, password = credentials("s3cret", "alice", ttl=3600, now=1_000_000)
    assert username == "1003600:alice"
    expected = hmac.new(b"s3cret", b"1003600:alice", hashlib.sha1).digest()
    assert base64.b64decode(password) == expected
    assert credentials("other", "alice", 3600, 1_000_000)[1] != password


def test_ice_servers_are_given_only_when_configured():
    assert ice_servers([], [], None, "alice", 60) == []
    assert ice_servers(["stun:stun.example.org:3478"], [], None, "a", 60) == [
        {"urls": ["stun:stun.example.org:3478"]}
    ]
    (turn,) = ice_servers([], ["turns:turn.example.org:443?transport=tcp"], "k", "bob", 60, 10)
    assert turn["urls"] == ["turns:turn.example.org:443?transport=tcp"]
    assert turn["username"] == "70:bob" and turn["credential"]


@pytest.mark.parametrize(
    "env, why",
    [
        ({"VISIO_TURN_URLS": "turn:t.example.org"}, "turn_secret"),
        ({"VISIO_TURN_URLS": "http://t.example.org", "VISIO_TURN_SECRET": "k"}, "turn_urls"),
        ({"VISIO_TURN_URLS": "stun:t.example.org", "VISIO_TURN_SECRET": "k"}, "turn_urls"),
        ({"VISIO_STUN_URLS": "turn:t.example.org"}, "stun_urls"),
        ({"VISIO_TURN_URLS": "turn:t", "VISIO_TURN_SECRET": "k", "VISIO_TURN_TTL": "5"}, "ttl"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_error(env, why):
    with pytest.raises(ConfigError, match=why):
        load_config(env=env)


def test_the_secret_is_not_shown():
    config = load_config(env={"VISIO_TURN_URLS": "turn:t.example.org", "VISIO_TURN_SECRET": "k9"})
    assert "k9" not in repr(config)
