"""TURN credentials (signaling/turn.py) and their settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from signaling.config import ConfigError, load_config
from signaling.turn import credentials, ice_servers, tag

SECRET = "a-turn-secret-of-32-characters-at-least"


def test_credentials_follow_the_shared_secret_scheme():
    """username <expiry>:<tag>; password base64(HMAC-SHA1(secret, username)): what coturn's
    use-auth-secret checks (tests/browser/test_turn.py has coturn accept them)."""
    username, password = credentials(SECRET, "alice", ttl=3600, now=1_000_000)
    assert username == f"1003600:{tag(SECRET, 'alice')}"
    expected = hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(password) == expected
    assert credentials("another secret", "alice", 3600, 1_000_000)[1] != password


@pytest.mark.parametrize(
    "identity",
    ["alice", "u:https://idp.example.org:sub-1", "Ann Smith", 'o\'brien "x"', "é" * 128],
)
def test_the_username_never_shows_the_identity_and_coturn_takes_it(identity):
    """STUN carries the username in clear and coturn logs it, refuses spaces and quotes in it,
    and browsers drop a TURN server whose username is over 509 bytes: a short tag stands for
    the identity, the same for the same person."""
    username, _ = credentials(SECRET, identity, 60, 0)
    expiry, rest = username.split(":", 1)
    assert expiry == "60" and re.fullmatch(r"[A-Za-z0-9_-]{16}", rest), username
    assert identity not in username
    assert credentials(SECRET, identity, 60, 0)[0] == username
    assert tag(SECRET, identity) != tag(SECRET, identity + "x")


def test_ice_servers_are_given_only_when_configured():
    assert ice_servers([], [], None, "alice", 60) == []
    assert ice_servers(["stun:stun.example.org:3478"], [], None, "a", 60) == [
        {"urls": ["stun:stun.example.org:3478"]}
    ]
    (turn,) = ice_servers([], ["turns:turn.example.org:443?transport=tcp"], SECRET, "bob", 60, 10)
    assert turn["urls"] == ["turns:turn.example.org:443?transport=tcp"]
    assert turn["username"].startswith("70:") and turn["credential"]


GOOD = {"VISIO_TURN_URLS": "turn:t.example.org:3478?transport=udp", "VISIO_TURN_SECRET": SECRET}


@pytest.mark.parametrize(
    "env, why",
    [
        ({"VISIO_TURN_URLS": "turn:t.example.org"}, "turn_secret"),
        ({"VISIO_TURN_SECRET": SECRET}, "turn_urls is empty"),
        ({**GOOD, "VISIO_TURN_SECRET": "short"}, "32 characters"),
        ({**GOOD, "VISIO_TURN_TTL": "5"}, "turn_ttl"),
        ({**GOOD, "VISIO_TURN_TTL": str(30 * 86400)}, "turn_ttl"),
        ({**GOOD, "VISIO_STUN_URLS": "turn:t.example.org"}, "stun_urls"),
        # what browsers refuse (libwebrtc): every join would fail
        ({**GOOD, "VISIO_TURN_URLS": "http://t.example.org"}, "turn_urls"),
        ({**GOOD, "VISIO_TURN_URLS": "stun:t.example.org"}, "turn_urls"),
        ({**GOOD, "VISIO_TURN_URLS": "turns://t.example.org:443"}, "turn_urls"),
        ({**GOOD, "VISIO_TURN_URLS": "turn:user@t.example.org"}, "turn_urls"),
        ({**GOOD, "VISIO_TURN_URLS": "turn:t.example.org:3478?transport=tls"}, "turn_urls"),
        ({**GOOD, "VISIO_TURN_URLS": "turn:t.example.org:99999"}, "turn_urls"),
        ({**GOOD, "VISIO_TURN_URLS": "turn:?transport=udp"}, "turn_urls"),
        ({**GOOD, "VISIO_TURN_URLS": "turn:[::1"}, "turn_urls"),
        ({**GOOD, "VISIO_STUN_URLS": "stun:s.example.org?transport=udp"}, "stun_urls"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_error(env, why):
    with pytest.raises(ConfigError, match=re.escape(why)):
        load_config(env=env)


def test_good_urls_are_taken_and_the_secret_is_not_shown():
    env = {
        **GOOD,
        "VISIO_TURN_URLS": "turn:t.example.org:3478?transport=udp,turns:[2001:db8::1]:443,"
        "turn:192.0.2.1",
        "VISIO_STUN_URLS": "stun:s.example.org:3478",
    }
    config = load_config(env=env)
    assert len(config.turn_urls) == 3 and config.stun_urls == ["stun:s.example.org:3478"]
    assert SECRET not in repr(config)
