"""Access tokens: LiveKit-style JWT claims, HS256, verified before any WebSocket upgrade.

Messages never contain the token nor a secret, and every value they quote from a token passes
through :func:`printable` (no line breaks or control characters reach a log or a client).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

logger = logging.getLogger(__name__)

#: the largest token accepted, in the query string or the Authorization header (the HTTP
#: server's line limits are set above it: see ``signaling.app.HTTP_LINE_LIMIT``)
MAX_TOKEN_BYTES = 8 * 1024
ALGORITHM = "HS256"
#: the largest JWKS document read from an identity provider
MAX_JWKS_BYTES = 1024 * 1024
#: how long keys past their max-age are still used while the provider cannot be reached
MAX_STALE = 24 * 3600.0
#: a token's lifetime unless said otherwise (seconds)
DEFAULT_TTL = 6 * 3600
#: the longest identity (``sub``), display name and room name accepted, in characters
MAX_IDENTITY_CHARS = MAX_NAME_CHARS = MAX_ROOM_CHARS = 128


def printable(value: object, limit: int = 200) -> str:
    """``value`` as one line of visible text, for logs and error messages that quote something
    a client sent: line breaks, control, format (bidi) and separator characters are escaped
    (``\\n``, ``\\x00``, ``\\u202e``), and the text is cut at about ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    out = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        for ch in text[:limit]
    )
    if cut or len(out) > limit:
        out = out[:limit] + "\N{HORIZONTAL ELLIPSIS}"
    return out


class TokenError(Exception):
    """A token that cannot be accepted; ``code`` is the protocol error code. The message is
    made :func:`printable`, so it is safe to log and to send back."""

    def __init__(self, message: str, code: str = "invalid_token") -> None:
        super().__init__(printable(message, 300))
        self.code = code


# The rules on what a join token names, shared by the token verifier (what /rtc accepts) and
# whatever mints tokens from a request's values (/dev/token), so that one never issues a token
# the other refuses. Each returns the value, or raises TokenError saying what is wrong with
# ``what`` (the claim's or the parameter's name).


def check_identity(value: object, what: str = "claim 'sub'") -> str:
    """An identity: 1 to MAX_IDENTITY_CHARS printable characters (it is logged and shown: no
    line break or control character)."""
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_IDENTITY_CHARS
        or not value.isprintable()
    ):
        raise TokenError(f"{what} must be 1 to {MAX_IDENTITY_CHARS} printable characters")
    return value


def check_room(value: object, what: str = "video.room", required: bool = False) -> str:
    """A room name: a string of at most MAX_ROOM_CHARS characters, not empty if ``required``
    (a join token's room; an admin token's may be empty: no room)."""
    if not isinstance(value, str) or len(value) > MAX_ROOM_CHARS:
        raise TokenError(f"{what} must be a string of at most {MAX_ROOM_CHARS} characters")
    if required and not value:
        raise TokenError(f"{what} must not be empty (1 to {MAX_ROOM_CHARS} characters)")
    return value


#: what a shown name never holds besides control characters: the bidirectional embeddings,
#: overrides and isolates (a name that reads reversed, or reverses what follows it) and the
#: line and paragraph separators
_HIDDEN_IN_NAMES = frozenset(
    chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)
)


def display_name(value: str) -> str:
    """A name as the others are shown it: without control characters (a NUL, a bell, a line
    break: boxes on a tile, broken log lines) or the bidirectional overrides and isolates
    that make it read otherwise, and no spaces at its ends. Anything else is kept (accents,
    non-breaking spaces, emoji with their joiners)."""
    return "".join(
        ch for ch in value if ch not in _HIDDEN_IN_NAMES and unicodedata.category(ch) != "Cc"
    ).strip()


def check_name(value: object, what: str = "name") -> str:
    """A display name: a string of at most MAX_NAME_CHARS characters (what a ``join`` message
    accepts; a longer name in a token is cut there), as shown (``display_name``)."""
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise TokenError(f"{what} must be a string of at most {MAX_NAME_CHARS} characters")
    return display_name(value)


SOURCES = ("camera", "microphone", "screen_share", "screen_share_audio")
#: (claim, attribute, default) of every boolean grant, LiveKit's names
FLAGS = (
    ("roomJoin", "room_join", False),
    ("roomCreate", "room_create", False),
    ("roomList", "room_list", False),
    ("roomAdmin", "room_admin", False),
    ("roomRecord", "room_record", False),
    ("roomHost", "room_host", False),
    ("canPublish", "can_publish", True),
    ("canSubscribe", "can_subscribe", True),
    ("canPublishData", "can_publish_data", True),
    ("hidden", "hidden", False),
    ("canUpdateOwnMetadata", "can_update_own_metadata", False),
    ("roomTranscribe", "room_transcribe", False),
)


@dataclass(frozen=True)
class VideoGrant:
    """What the holder may do: join its room, publish which sources, administer rooms."""

    room: str = ""
    room_join: bool = False
    room_create: bool = False
    room_list: bool = False
    room_admin: bool = False
    room_record: bool = False  # may start and stop recording its room (signaling/recording.py)
    #: host of its room's meeting (signaling/meeting.py): mute others, stop their video or
    #: screen share, remove them, lock the room, lower hands; roomAdmin implies it
    room_host: bool = False
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    hidden: bool = False
    can_update_own_metadata: bool = False  # may choose its name and metadata when joining
    room_transcribe: bool = False  # may start and stop transcription, get the notes
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
        room = check_room(claims.get("room", ""))
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

    @property
    def is_host(self) -> bool:
        """Host of the meeting in its room (roomHost, or roomAdmin, which allows more)."""
        return self.room_host or self.room_admin

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
    #: the token's ``attributes`` (LiveKit): key/value strings a front end reads
    attributes: tuple[tuple[str, str], ...] = ()


def mint_token(
    api_key: str,
    api_secret: str,
    identity: str,
    room: str,
    name: str = "",
    ttl: int = DEFAULT_TTL,
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
    #: seconds before an unknown key id may force a new JWKS fetch (stops fetch floods); also
    #: the shortest time fetched keys are kept, whatever the provider's max-age says
    refresh_cooldown: float = 30.0
    #: seconds a JWKS fetch may take
    jwks_timeout: float = 5.0
    #: seconds after a failed JWKS fetch before the next one (tokens needing it fail at once)
    jwks_failure_cooldown: float = 30.0
    #: seconds fetched keys are kept when the response has no Cache-Control max-age (at most 1 day)
    jwks_max_age: float = 3600.0


class JwksCache:
    """One identity provider's signing keys (its JWKS), fetched with aiohttp.

    - One fetch at a time: every verification that needs the keys waits for the same fetch.
    - Keys are kept for the response's ``Cache-Control: max-age`` (``jwks_max_age`` without
      one), bounded to [``refresh_cooldown``, 1 day]; an unknown key id refetches at most every
      ``refresh_cooldown`` seconds.
    - A fetch that fails (unreachable, slower than ``jwks_timeout``, not a usable JWKS) is not
      retried for ``jwks_failure_cooldown`` seconds: meanwhile tokens signed with a known key are
      still accepted (for at most a day past its max-age) and the others are refused at once.
    """

    def __init__(self, provider: IdentityProvider) -> None:
        self.provider = provider
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetches = 0
        self._expires = 0.0  # monotonic time the keys go stale
        self._fetched_at = float("-inf")
        self._failed_until = 0.0
        self._inflight: asyncio.Future | None = None

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key ``kid``, fetching the JWKS if needed; TokenError if there is none."""
        now = time.monotonic()
        key = self.keys.get(kid)
        if key is not None and now < self._expires:
            return key
        if now < self._failed_until:
            return self._stale(key, now)
        recent = now - self._fetched_at < self.provider.refresh_cooldown
        if key is None and now < self._expires and recent:
            raise TokenError("token key id (kid) unknown to the identity provider")
        ok = await self._refresh()
        key = self.keys.get(kid)
        if not ok:
            return self._stale(key, time.monotonic())
        if key is None:
            raise TokenError("token key id (kid) unknown to the identity provider")
        return key

    async def sole_key(self, algorithm: str) -> jwt.PyJWK:
        """The provider's one key for ``algorithm``, for a token that names no key id (an
        OpenID Connect provider with a single key may leave ``kid`` out); TokenError if it
        has none or several."""
        if not self.keys or time.monotonic() >= self._expires:
            if time.monotonic() >= self._failed_until:
                await self._refresh()
        found = [k for k in self.keys.values() if k.algorithm_name == algorithm]
        if len(found) != 1:
            raise TokenError("token has no key id (kid) and the provider has not one key for it")
        return found[0]

    def _stale(self, key: jwt.PyJWK | None, now: float) -> jwt.PyJWK:
        if key is not None and now < self._expires + MAX_STALE:
            return key
        raise TokenError("identity provider keys unavailable")

    async def _refresh(self) -> bool:
        """Fetch the JWKS, or wait for the fetch already under way; whether it succeeded."""
        task = self._inflight
        if task is None:
            task = self._inflight = asyncio.ensure_future(self._fetch())

            def done(_task: asyncio.Future) -> None:
                if self._inflight is task:
                    self._inflight = None

            task.add_done_callback(done)
        # shielded: a client that hangs up does not cancel the fetch the others wait for
        return await asyncio.shield(task)

    async def _fetch(self) -> bool:
        p = self.provider
        self.fetches += 1
        try:
            timeout = aiohttp.ClientTimeout(total=p.jwks_timeout)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(p.jwks_url, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise ValueError(f"HTTP status {response.status}")
                body = await response.content.read(MAX_JWKS_BYTES + 1)
                max_age = _max_age(response.headers.get("Cache-Control", ""))
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
            keys = _signing_keys(json.loads(body))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._failed_until = time.monotonic() + p.jwks_failure_cooldown
            logger.warning(
                "identity provider %s: cannot fetch its keys from %s (%s); next attempt in %g s",
                printable(p.issuer),
                printable(p.jwks_url),
                printable(str(exc) or type(exc).__name__),
                p.jwks_failure_cooldown,
            )
            return False
        now = time.monotonic()
        age = p.jwks_max_age if max_age is None else max_age
        self.keys = keys
        self._fetched_at = now
        self._expires = now + min(max(age, p.refresh_cooldown), 86400.0)
        self._failed_until = 0.0
        return True


def _max_age(cache_control: str) -> float | None:
    """The max-age of a Cache-Control header (0 for no-cache or no-store), or None."""
    directives = cache_control.lower()
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    match = re.search(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,9})", directives)
    return float(match.group(1)) if match else None


def _signing_keys(document: object) -> dict[str, jwt.PyJWK]:
    """A JWKS document's usable public signing keys by key id; ValueError if it has none.
    Symmetric (``oct``) keys are never taken from a URL."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys = {}
    for item in document["keys"]:
        if not isinstance(item, dict) or item.get("kty") in (None, "oct"):
            continue
        kid = item.get("kid")
        if not isinstance(kid, str) or not kid or item.get("use", "sig") != "sig":
            continue
        try:
            keys[kid] = jwt.PyJWK(item)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            logger.info("JWKS key %s skipped: %s", printable(kid), printable(exc))
    if not keys:
        raise ValueError("no usable signing key with a key id")
    return keys


class TokenVerifier:
    """Checks access tokens: HS256 with the API keys (several, for rotation), or RS256/ES256
    from configured identity providers, whose JWKS is fetched and cached (JwksCache)."""

    def __init__(
        self,
        api_keys: dict[str, str],
        leeway: float = 10,
        providers: list[IdentityProvider] | None = None,
    ) -> None:
        self.api_keys = dict(api_keys)
        self.leeway = leeway
        self.providers = {p.issuer: p for p in providers or []}
        self.jwks = {p.issuer: JwksCache(p) for p in self.providers.values()}

    def _unverified(self, token: str) -> tuple[dict, dict]:
        if not isinstance(token, str) or not token:
            raise TokenError("access_token is required")
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError(f"token too large (more than {MAX_TOKEN_BYTES} bytes)")
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
        # a server API token may have no identity: livekit-server-sdk (Node) writes no 'sub'
        required = ["exp", "sub", "iss"] if require_join else ["exp", "iss"]
        claims = self._decode(token, secret, [ALGORITHM], {"require": required})
        return self._identity(claims, VideoGrant.from_claims(claims.get("video")), require_join)

    async def verify_async(self, token: str, require_join: bool = True) -> Identity:
        """Verify any accepted token, fetching an identity provider's keys when needed."""
        header, unverified = self._unverified(token)
        issuer = unverified.get("iss")
        provider = self.providers.get(issuer) if isinstance(issuer, str) else None
        if provider is None:
            return self.verify(token, require_join)
        key = await self._provider_key(provider, header)
        claims = self._decode(
            token,
            key,
            [header["alg"]],
            {"require": ["exp", "iss", "aud"]},
            audience=provider.audience,
            issuer=provider.issuer,
        )
        return self._identity(_mapped_claims(provider, claims), None, require_join, provider)

    async def _provider_key(self, provider: IdentityProvider, header: dict) -> object:
        """The public key a provider's token names, of the token's own algorithm."""
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in provider.algorithms:
            raise TokenError("token algorithm not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("token has no key id (kid)")
        key = await self.jwks[provider.issuer].key(kid)
        if key.algorithm_name != alg:
            # e.g. an RS256 token naming an EC key: refused before any signature check
            raise TokenError(f"token algorithm {alg} does not match its key ({key.algorithm_name})")
        return key.key

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
        except jwt.InvalidKeyError:
            raise TokenError("token key not usable for its algorithm") from None
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
        identity = claims.get("sub", None if require_join else "")
        name = claims.get("name", "")
        metadata = claims.get("metadata", "")
        for label, value in (("sub", identity), ("name", name), ("metadata", metadata)):
            if not isinstance(value, str):
                raise TokenError(f"claim '{label}' must be a string")
        if identity == "" and not require_join:
            pass  # a server API token: LiveKit's server SDKs sign them with an empty 'sub'
        else:
            check_identity(identity)
        issuer = provider.issuer if provider is not None else claims["iss"]
        attributes = _attributes(claims.get("attributes"))
        return Identity(
            identity,
            display_name(name[:MAX_NAME_CHARS]),
            metadata[:4096],
            issuer,
            grant,
            claims["exp"],
            attributes,
        )


MAX_ATTRIBUTES = 64  # attributes in a token; keys of 128, values of 1024 characters at most


def _attributes(claim: object) -> tuple[tuple[str, str], ...]:
    """The ``attributes`` claim (string keys and values, LiveKit's); TokenError if malformed."""
    if claim is None:
        return ()
    if not isinstance(claim, dict) or len(claim) > MAX_ATTRIBUTES:
        raise TokenError(f"claim 'attributes' must be an object of at most {MAX_ATTRIBUTES} keys")
    for key, value in claim.items():
        if not isinstance(value, str) or len(key) > 128 or len(value) > 1024:
            raise TokenError("claim 'attributes' must map short strings to strings")
    return tuple(sorted(claim.items()))


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


_TOKENISH = re.compile(
    r"(?i)(access_token=|bearer\s+)[^\s&'\"]+"  # a query parameter or a header's value
    r"|eyJ[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*){0,2}"  # a JWT, or its start: '{"' in base64
    r"|[A-Za-z0-9_\-]{20,}\.[A-Za-z0-9_\-.]+"  # anything else shaped like a JWT
)


def redact_tokens(text: str) -> str:
    """``text`` with every token, or part of one, replaced by ``<token>``."""
    return _TOKENISH.sub(lambda m: (m.group(1) or "") + "<token>", text)


def _safe(text: str) -> str:
    """An error text with anything shaped like a token removed, made printable."""
    return printable(redact_tokens(text))


def parse_duration(text: str) -> int:
    """'6h', '30m', '90s', '2d' or plain seconds, as seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(text))
    if not match:
        raise ValueError(f"invalid duration {text!r} (examples: 90s, 30m, 6h, 2d)")
    value = int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if value <= 0:
        raise ValueError("duration must be positive")
    return value
