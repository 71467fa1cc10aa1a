"""ICE servers for clients: STUN, and TURN with time-limited credentials.

People behind firewalls that block UDP, or that let only TCP 443 out, connect through a TURN
relay. The server does not relay itself: it hands each client, in its ``joined`` message,
credentials for the operator's TURN server (coturn) that expire, made from a secret the two
share (coturn's ``use-auth-secret``, the "TURN REST API" scheme of
draft-uberti-behave-turn-rest): username ``<expiry>:<identity>``, password the base64 of its
HMAC-SHA1 under the secret. A leaked password is good until its expiry only, and the secret
never leaves the two servers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

SCHEMES = ("stun:", "turn:", "turns:")


def check_url(url: str) -> str | None:
    """Why ``url`` is no STUN or TURN URL (RFC 7064, RFC 7065), or None."""
    scheme = next((s for s in SCHEMES if url.startswith(s)), "")
    if not scheme or len(url) == len(scheme) or any(c.isspace() for c in url):
        return f"{url!r} is not a stun:, turn: or turns: URL"
    return None


def credentials(secret: str, identity: str, ttl: int, now: float | None = None) -> tuple[str, str]:
    """(username, password) for ``identity`` valid ``ttl`` seconds from ``now``."""
    expiry = int(now if now is not None else time.time()) + ttl
    username = f"{expiry}:{identity}"
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
