"""Access tokens: LiveKit-style JWT claims, HS256, verified before any WebSocket upgrade.

Messages never contain the token nor a secret.
"""

from __future__ import annotations

import asyncio
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


SOURCES = ("camera", "microphone", "screen_share", "screen_share_audio")
#: (claim, attribute, default) of every boolean grant, LiveKit's names
FLAGS = (
    ("roomJoin", "room_join", False),
    ("roomCreate", "room_create", False),
    ("roomList", "room_list", False),
    ("roomAdmin", "room_admin", False),
    ("canPublish", "can_publish", True),
    ("canSubscribe", "can_subscribe", True),
    ("canPublishData", "can_publish_data", True),
    ("hidden", "hidden", False),
)


@dataclass(frozen=True)
class VideoGrant:
    """What the holder may do: join its room, publish which sources, administer rooms."""

    room: str = ""
    room_join: bool = False
    room_create: bool = False
    room_list: bool = False
    room_admin: bool = False
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    hidden: bool = False
    can_publish_sources: tuple[str, ...] | None = None  # None: every source

    def to_claims(self) -> dict[str, Any]:
        """As JWT claims (camelCase)."""
        out: dict[str, Any] = {"room": self.room}
        for claim, attr, _default in FLAGS:
            out[claim] = getattr(self, attr)
        if self.can_publish_sources is not None:
            out["canPublishSources"] = list(self.can_publish_sources)
        return out

    @classmethod
    def from_claims(cls, claims: object) -> VideoGrant:
        """Read the ``video`` claim, checking every type; raise TokenError if malformed."""
        if not isinstance(claims, dict):
            raise TokenError("token has no video grant")
        room = claims.get("room", "")
        if not isinstance(room, str) or len(room) > 128:
            raise TokenError("video.room must be a string of at most 128 characters")
        flags = {}
        for key, attr, default in FLAGS:
            value = claims.get(key, default)
            if not isinstance(value, bool):
                raise TokenError(f"video.{key} must be true or false")
            flags[attr] = value
        sources = claims.get("canPublishSources")
        if sources is not None:
            if not isinstance(sources, list) or not all(x in SOURCES for x in sources):
                raise TokenError(f"video.canPublishSources must list some of {', '.join(SOURCES)}")
            sources = tuple(sources)
        return cls(room=room, can_publish_sources=sources, **flags)

    def may_publish(self, source: str) -> bool:
        """Whether this grant allows publishing a track of ``source``."""
        if not self.can_publish:
            return False
        return self.can_publish_sources is None or source in self.can_publish_sources


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
    grant: VideoGrant | None = None,
) -> str:
    """Sign an access token for ``identity`` (joining ``room``, unless ``grant`` says else)."""
    now = int(time.time() if now is None else now)
    if grant is None:
        grant = VideoGrant(
            room=room,
            room_join=True,
            can_publish=can_publish,
            can_subscribe=can_subscribe,
            can_publish_data=can_publish_data,
        )
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


@dataclass(frozen=True)
class IdentityProvider:
    """A trusted issuer of RS256/ES256 tokens, its keys published as a JWKS."""

    issuer: str
    audience: str
    jwks_url: str
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    identity_claim: str = "sub"
    name_claim: str = "name"
    room_claim: str = "room"  # claim naming the room; else ``rooms`` below
    rooms: tuple[str, ...] = ()  # rooms any of its users may join ("*" = any)
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    #: seconds before an unknown key id may force a new JWKS fetch (stops fetch floods)
    refresh_cooldown: float = 30.0


class TokenVerifier:
    """Checks access tokens: HS256 with the API keys (several, for rotation), or RS256/ES256
    from configured identity providers, whose JWKS is fetched and cached (PyJWKClient)."""

    def __init__(
        self,
        api_keys: dict[str, str],
        leeway: float = 10,
        providers: list[IdentityProvider] | None = None,
    ) -> None:
        self.api_keys = dict(api_keys)
        self.leeway = leeway
        self.providers = {p.issuer: p for p in providers or []}
        self._jwks: dict[str, jwt.PyJWKClient] = {}

    def _unverified(self, token: str) -> tuple[dict, dict]:
        if not isinstance(token, str) or not token:
            raise TokenError("access_token is required")
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError("token too large")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenError("token malformed") from None
        return header, claims

    def verify(self, token: str, require_join: bool = True) -> Identity:
        """Verify an API-key token; raise TokenError with a clear reason otherwise."""
        header, unverified = self._unverified(token)
        issuer = unverified.get("iss")
        if isinstance(issuer, str) and issuer in self.providers:
            raise TokenError("identity-provider tokens need verify_async")
        if header.get("alg") != ALGORITHM:
            raise TokenError("token algorithm not accepted (HS256 only)")
        secret = self.api_keys.get(issuer) if isinstance(issuer, str) else None
        if secret is None:
            raise TokenError("unknown API key (iss)")
        claims = self._decode(token, secret, [ALGORITHM], {"require": ["exp", "sub", "iss"]})
        return self._identity(claims, VideoGrant.from_claims(claims.get("video")), require_join)

    async def verify_async(self, token: str, require_join: bool = True) -> Identity:
        """Verify any accepted token; fetching an identity provider's keys off the loop."""
        _header, unverified = self._unverified(token)
        issuer = unverified.get("iss")
        provider = self.providers.get(issuer) if isinstance(issuer, str) else None
        if provider is None:
            return self.verify(token, require_join)
        loop = asyncio.get_running_loop()
        key = await loop.run_in_executor(None, self._provider_key, provider, token)
        claims = self._decode(
            token,
            key,
            list(provider.algorithms),
            {"require": ["exp", "iss", "aud"]},
            audience=provider.audience,
            issuer=provider.issuer,
        )
        return self._identity(_mapped_claims(provider, claims), None, require_join, provider)

    def _provider_key(self, provider: IdentityProvider, token: str) -> object:
        client = self._jwks.get(provider.issuer)
        if client is None:
            options = {"cache_keys": True, "lifespan": 3600, "timeout": 5}
            try:
                client = jwt.PyJWKClient(
                    provider.jwks_url, cooldown_duration=provider.refresh_cooldown, **options
                )
            except TypeError:  # PyJWT before the cooldown option
                client = jwt.PyJWKClient(provider.jwks_url, **options)
            self._jwks[provider.issuer] = client
        try:
            return client.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError:
            raise TokenError("identity provider keys unavailable") from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"token key not accepted: {_safe(str(exc))}") from None

    def _decode(
        self, token: str, key: object, algorithms: list[str], options: dict, **kwargs: Any
    ) -> dict:
        try:
            return jwt.decode(
                token, key, algorithms=algorithms, leeway=self.leeway, options=options, **kwargs
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired", "expired_token") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token not yet valid (nbf)") from None
        except jwt.InvalidSignatureError:
            raise TokenError("token signature invalid") from None
        except jwt.InvalidAlgorithmError:
            raise TokenError("token algorithm not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"token lacks the '{exc.claim}' claim") from None
        except jwt.InvalidAudienceError:
            raise TokenError("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise TokenError("token issuer not accepted") from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"token invalid: {_safe(str(exc))}") from None

    @staticmethod
    def _identity(
        claims: dict,
        grant: VideoGrant | None,
        require_join: bool,
        provider: IdentityProvider | None = None,
    ) -> Identity:
        if grant is None:
            grant = VideoGrant.from_claims(claims.get("video"))
        if require_join and (not grant.room_join or not grant.room):
            raise TokenError("token does not grant joining a room")
        identity = claims.get("sub")
        name = claims.get("name", "")
        metadata = claims.get("metadata", "")
        for label, value in (("sub", identity), ("name", name), ("metadata", metadata)):
            if not isinstance(value, str):
                raise TokenError(f"claim '{label}' must be a string")
        if not identity or len(identity) > 128:
            raise TokenError("claim 'sub' must be 1 to 128 characters")
        issuer = provider.issuer if provider is not None else claims["iss"]
        return Identity(identity, name[:128], metadata[:4096], issuer, grant, claims["exp"])


def _mapped_claims(provider: IdentityProvider, claims: dict) -> dict:
    """An identity provider's claims mapped onto ours (sub, name, video grant)."""
    room = claims.get(provider.room_claim, "")
    if not isinstance(room, str):
        raise TokenError(f"claim '{provider.room_claim}' must be a string")
    allowed = "*" in provider.rooms or room in provider.rooms or (room and not provider.rooms)
    grant = {
        "room": room,
        "roomJoin": bool(room) and bool(allowed),
        "canPublish": provider.can_publish,
        "canSubscribe": provider.can_subscribe,
        "canPublishData": provider.can_publish_data,
    }
    return {
        "sub": claims.get(provider.identity_claim),
        "name": claims.get(provider.name_claim, "") or "",
        "exp": claims["exp"],
        "video": grant,
    }


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
