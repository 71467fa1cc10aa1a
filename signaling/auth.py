"""Access tokens: LiveKit-style JWT claims, HS256, verified before any WebSocket upgrade.

Messages never contain the token nor a secret.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import jwt

MAX_TOKEN_BYTES = 8 * 1024
ALGORITHM = "HS256"


class TokenError(Exception):
    """A token that cannot be accepted; ``code`` is the protocol error code."""

    def __init__(self, message: str, code: str = "invalid_token") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class VideoGrant:
    """What the holder may do in its room."""

    room: str = ""
    room_join: bool = False
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True

    def to_claims(self) -> dict[str, Any]:
        """As JWT claims (camelCase)."""
        return {
            "room": self.room,
            "roomJoin": self.room_join,
            "canPublish": self.can_publish,
            "canSubscribe": self.can_subscribe,
            "canPublishData": self.can_publish_data,
        }

    @classmethod
    def from_claims(cls, claims: object) -> VideoGrant:
        """Read the ``video`` claim, checking every type; raise TokenError if malformed."""
        if not isinstance(claims, dict):
            raise TokenError("token has no video grant")
        room = claims.get("room", "")
        if not isinstance(room, str):
            raise TokenError("video.room must be a string")
        flags = {}
        for key, attr, default in (
            ("roomJoin", "room_join", False),
            ("canPublish", "can_publish", True),
            ("canSubscribe", "can_subscribe", True),
            ("canPublishData", "can_publish_data", True),
        ):
            value = claims.get(key, default)
            if not isinstance(value, bool):
                raise TokenError(f"video.{key} must be true or false")
            flags[attr] = value
        return cls(room=room, **flags)


@dataclass(frozen=True)
class Identity:
    """A verified token's holder."""

    identity: str
    name: str
    metadata: str
    api_key: str
    grant: VideoGrant
    expires_at: float


def mint_token(
    api_key: str,
    api_secret: str,
    identity: str,
    room: str,
    name: str = "",
    ttl: int = 6 * 3600,
    can_publish: bool = True,
    can_subscribe: bool = True,
    can_publish_data: bool = True,
    metadata: str = "",
    now: float | None = None,
) -> str:
    """Sign an access token for ``identity`` to join ``room``."""
    now = int(time.time() if now is None else now)
    grant = VideoGrant(room, True, can_publish, can_subscribe, can_publish_data)
    claims: dict[str, Any] = {
        "iss": api_key,
        "sub": identity,
        "nbf": now,
        "exp": now + int(ttl),
        "video": grant.to_claims(),
    }
    if name:
        claims["name"] = name
    if metadata:
        claims["metadata"] = metadata
    return jwt.encode(claims, api_secret, algorithm=ALGORITHM)


class TokenVerifier:
    """Checks access tokens against the configured API keys (several, for rotation)."""

    def __init__(self, api_keys: dict[str, str], leeway: float = 10) -> None:
        self.api_keys = dict(api_keys)
        self.leeway = leeway

    def verify(self, token: str) -> Identity:
        """The token's identity and grant; raise TokenError with a clear reason otherwise."""
        if not isinstance(token, str) or not token:
            raise TokenError("access_token is required")
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError("token too large")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenError("token malformed") from None
        if header.get("alg") != ALGORITHM:
            raise TokenError("token algorithm not accepted (HS256 only)")
        issuer = unverified.get("iss")
        secret = self.api_keys.get(issuer) if isinstance(issuer, str) else None
        if secret is None:
            raise TokenError("unknown API key (iss)")
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                leeway=self.leeway,
                options={"require": ["exp", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired", "expired_token") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token not yet valid (nbf)") from None
        except jwt.InvalidSignatureError:
            raise TokenError("token signature invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"token lacks the '{exc.claim}' claim") from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"token invalid: {_safe(str(exc))}") from None
        grant = VideoGrant.from_claims(claims.get("video"))
        if not grant.room_join or not grant.room:
            raise TokenError("token does not grant joining a room")
        identity = claims["sub"]
        name = claims.get("name", "")
        metadata = claims.get("metadata", "")
        for label, value in (("sub", identity), ("name", name), ("metadata", metadata)):
            if not isinstance(value, str):
                raise TokenError(f"claim '{label}' must be a string")
        if not identity or len(identity) > 128:
            raise TokenError("claim 'sub' must be 1 to 128 characters")
        return Identity(identity, name[:128], metadata[:4096], issuer, grant, claims["exp"])


def _safe(text: str) -> str:
    return re.sub(r"[A-Za-z0-9_\-]{20,}\.[A-Za-z0-9_\-.]+", "<token>", text)[:200]


def parse_duration(text: str) -> int:
    """'6h', '30m', '90s', '2d' or plain seconds, as seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(text))
    if not match:
        raise ValueError(f"invalid duration {text!r} (examples: 90s, 30m, 6h, 2d)")
    value = int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if value <= 0:
        raise ValueError("duration must be positive")
    return value
