"""ICE servers for clients: STUN, and TURN with time-limited credentials.

People behind firewalls that block UDP, or that let only TCP 443 out, connect through a TURN
relay. The server does not relay itself: it hands each client, in its ``joined`` message,
credentials for the operator's TURN server (coturn) that expire, made from a secret the two
share (coturn's ``use-auth-secret``, the "TURN REST API" scheme of
draft-uberti-behave-turn-rest): username ``<expiry>:<tag>``, password the base64 of its
HMAC-SHA1 under the secret. The tag stands for the participant's identity without showing it
(an HMAC of it: the same person gets the same tag, which coturn logs; STUN carries the
username in clear, and coturn refuses spaces and quotes in it). A leaked password opens a
relay until its expiry only (coturn checks it when a relay is requested, and a relay opened
before then lives on while used), and the secret never leaves the two servers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config

#: what browsers accept (libwebrtc: no user@, no query on stun:, transport udp or tcp only)
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
_STUN = re.compile(rf"stun:{_HOST}(?::(\d{{1,5}}))?")
_TURN = re.compile(rf"turns?:{_HOST}(?::(\d{{1,5}}))?(?:\?transport=(?:udp|tcp))?")


def check_url(url: str, kind: str) -> str | None:
    """Why ``url`` is no ``kind`` ("stun" or "turn": turn: and turns:) URL a browser takes
    (RFC 7064, RFC 7065), or None: one a browser refuses would stop it from joining."""
    match = (_STUN if kind == "stun" else _TURN).fullmatch(url)
    if match is None or (match.group(1) and not 0 < int(match.group(1)) < 65536):
        forms = "stun:host[:port]" if kind == "stun" else "turn(s):host[:port][?transport=udp|tcp]"
        return f"{url!r} is not a {kind} URL ({forms})"
    return None


def tag(secret: str, identity: str) -> str:
    """A short stand-in for ``identity`` in TURN usernames: the same for the same person,
    nothing a reader can turn back into the identity, only letters, digits, - and _."""
    digest = hmac.new(secret.encode(), b"identity:" + identity.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:12]).decode()


def credentials(secret: str, identity: str, ttl: int, now: float | None = None) -> tuple[str, str]:
    """(username, password) for ``identity`` valid ``ttl`` seconds from ``now``."""
    expiry = int(now if now is not None else time.time()) + ttl
    username = f"{expiry}:{tag(secret, identity)}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(
    stun_urls: list[str],
    turn_urls: list[str],
    turn_secret: str | None,
    identity: str,
    ttl: int,
    now: float | None = None,
) -> list[dict]:
    """What a client puts in its RTCPeerConnection's ``iceServers`` (WebRTC's RTCIceServer
    dictionaries): the STUN servers, and the TURN servers with credentials of its own."""
    servers: list[dict] = []
    if stun_urls:
        servers.append({"urls": list(stun_urls)})
    if turn_urls and turn_secret:
        username, password = credentials(turn_secret, identity, ttl, now)
        servers.append({"urls": list(turn_urls), "username": username, "credential": password})
    return servers


def ice_servers_of(config: Config, identity: str) -> list[dict]:
    """``ice_servers`` for a participant of this server, from its settings (both signaling
    protocols hand them out at join and resume)."""
    c = config
    return ice_servers(c.stun_urls, c.turn_urls, c.turn_secret, identity, c.turn_ttl)
