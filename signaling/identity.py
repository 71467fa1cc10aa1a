"""Sign-in with an OpenID Connect provider, rooms people own, media tokens from the session.

Active when the ``[oidc]`` table is configured (docs/identity.md); otherwise nothing here is
set up and the server works with tokens only, as before.

- ``GET /auth/login?next=/r/slug``: Authorization Code flow with PKCE (S256), a one-use
  ``state`` bound to this browser by a signed cookie, and a ``nonce`` (Authlib's OAuth client).
- ``GET /auth/callback``: the state is checked and consumed, the code exchanged, the ID token
  verified (signature with the provider's JWKS through signaling.auth.JwksCache; issuer,
  audience, expiry with PyJWT; nonce, azp, at_hash with Authlib's CodeIDToken); then a
  server-side session (signaling.store) and its signed, HttpOnly, SameSite=Lax cookie (Secure
  over TLS).
- ``POST /auth/logout``: the session is deleted; RP-initiated logout at the provider's
  ``end_session_endpoint`` when it advertises one. ``GET /auth/me``: who is signed in.
- ``/api/meetings``: the signed-in user's rooms (list, create, rename, access, hosts, invited
  users, delete). ``POST /api/meetings/{slug}/token``: a media token with the grants the room's
  policy gives, or 403 ``must_wait`` (signaling/lobby.py, the waiting room).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import jwt
from aiohttp import web

from visio_sfu import SFU
from visio_sfu.events import ParticipantEntered

from .auth import IdentityProvider, JwksCache, TokenError, VideoGrant, mint_token, printable
from .config import Config, ConfigError
from .limits import PerKeyLimiter
from .store import ACCESS_LEVELS, OwnedRoom, Store, User, database_url, default_data_dir

logger = logging.getLogger(__name__)

SESSION_COOKIE = "visio_session"
LOGIN_COOKIE = "visio_login"  # + "_" and the start of the state: one per sign-in under way


def login_cookie(state: str) -> str:
    """The cookie binding the sign-in ``state`` to this browser (two tabs signing in at once
    each have theirs)."""
    return f"{LOGIN_COOKIE}_{state[:12]}"


#: a guest's own id (signed, a day): the waiting room counts denials per guest, not only per
#: address, so that guests behind one NAT or proxy are not held back by another's denial
GUEST_COOKIE = "visio_guest"
LOGIN_TTL = 600  # seconds a sign-in may take at the provider
MAX_PENDING = 10000  # sign-ins under way at once (older ones are forgotten)
MAX_DOCUMENT_BYTES = 256 * 1024  # discovery document, token response
MAX_NAME = 128
TOKEN_TTL = 6 * 3600  # seconds a media token minted here lasts

IDENTITY = web.AppKey("identity", "Identity")


class SignInError(Exception):
    """A sign-in refused: ``code`` names the check, the message says why (shown to the user)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(printable(message, 300))
        self.code = code


@dataclass(frozen=True)
class OidcSettings:
    """The ``[oidc]`` table."""

    issuer: str
    client_id: str
    client_secret: str = ""  # empty: a public client (PKCE alone)
    scopes: str = "openid profile email"
    identity_claim: str = "sub"
    name_claim: str = "name"
    email_claim: str = "email"
    #: where the provider sends people back; default: public_url (or the request's origin)
    #: followed by /auth/callback
    redirect_url: str = ""
    post_logout_redirect_url: str = ""  # default: the site's root
    session_ttl: int = 8 * 3600  # seconds a sign-in lasts
    session_secret: str = ""  # signs cookies; default: a key kept in data_dir/session.key
    #: seconds a denied guest must wait before knocking again (doubling at each denial)
    lobby_retry_after: int = 30
    token_auth_method: str = ""  # client_secret_basic (default with a secret) or _post
    http_timeout: float = 10.0

    @classmethod
    def from_table(cls, table: dict) -> OidcSettings:
        """Check the [oidc] table; ConfigError says what is wrong."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"[oidc]: unknown setting(s) {', '.join(unknown)}")
        for required in ("issuer", "client_id"):
            if not isinstance(table.get(required), str) or not table[required].strip():
                raise ConfigError(f"[oidc]: '{required}' is required")
        values: dict[str, Any] = {}
        for name, value in table.items():
            kind = cls.__dataclass_fields__[name].type
            if kind == "str":
                if not isinstance(value, str):
                    raise ConfigError(f"[oidc]: '{name}' must be a string")
                values[name] = value.strip()
            elif kind == "int":
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    raise ConfigError(f"[oidc]: '{name}' must be a positive integer")
                values[name] = value
            else:
                if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                    raise ConfigError(f"[oidc]: '{name}' must be a positive number")
                values[name] = float(value)
        settings = cls(**values)
        if "openid" not in settings.scopes.split():
            raise ConfigError("[oidc]: scopes must include 'openid'")
        scheme = urlsplit(settings.issuer).scheme
        if scheme not in ("https", "http"):
            raise ConfigError("[oidc]: issuer must be an https:// URL")
        return settings


def _load_key(config: Config, settings: OidcSettings) -> bytes:
    """The key that signs cookies: configured, or made once and kept in the data directory.
    Made atomically (a complete file linked into place): the front and its workers
    (--workers), starting together, all read the one that won."""
    if settings.session_secret:
        return settings.session_secret.encode()
    path = Path(config.data_dir) if config.data_dir else default_data_dir()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_file = path / "session.key"
    if not key_file.exists():
        temp = path / f".session.key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_bytes(32).hex())
        try:
            os.link(temp, key_file)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            temp.unlink()
    try:
        key = bytes.fromhex(key_file.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{key_file}: unreadable cookie key ({exc}); delete it") from None
    if len(key) < 16:
        raise ConfigError(f"{key_file}: cookie key too short; delete it")
    return key


@dataclass
class Pending:
    """A sign-in under way at the provider."""

    nonce: str
    verifier: str
    next_path: str
    redirect_uri: str
    created: float


def _safe_next(value: str | None) -> str:
    """A local path to come back to ('/' unless it is one: no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value[:1000]


class Identity:
    """The sign-in, sessions and owned rooms of one server."""

    def __init__(self, config: Config, settings: OidcSettings, store: Store | None = None):
        self.config = config
        self.settings = settings
        self.store = store
        self.key = _load_key(config, settings)
        self.pending: OrderedDict[str, Pending] = OrderedDict()
        self.discovery: dict | None = None
        self.jwks: JwksCache | None = None
        self._discovery_lock = asyncio.Lock()
        #: sign-ins started and tokens asked for, per address: a flood of /auth/login cannot
        #: push others' sign-ins out, nor can meeting addresses be guessed in bulk
        self.limiter = PerKeyLimiter(2.0, 20)

    def allow(self, request: web.Request) -> bool:
        """Whether this address may start a sign-in or ask for a token now."""
        return self.limiter.allow(request.remote or "?")

    # -- signed values ------------------------------------------------------------------------
    def sign(self, value: str) -> str:
        """``value.mac``: only this server can make it."""
        mac = hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()[:43]
        return f"{value}.{mac}"

    def unsign(self, signed: str | None) -> str | None:
        """The value of a signed string, or None if it was not signed here."""
        if not signed or "." not in signed or len(signed) > 400 or not signed.isascii():
            return None  # (compare_digest takes ASCII text only)
        value, _, mac = signed.rpartition(".")
        good = hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()[:43]
        return value if hmac.compare_digest(mac, good) else None

    # -- the provider -------------------------------------------------------------------------
    async def provider(self) -> dict:
        """The provider's discovery document (fetched once; again after a failure)."""
        if self.discovery is not None:
            return self.discovery
        async with self._discovery_lock:
            if self.discovery is not None:
                return self.discovery
            issuer = self.settings.issuer.rstrip("/")
            url = f"{issuer}/.well-known/openid-configuration"
            try:
                timeout = aiohttp.ClientTimeout(total=self.settings.http_timeout)
                async with (
                    aiohttp.ClientSession(timeout=timeout) as http,
                    http.get(url, allow_redirects=False) as response,
                ):
                    if response.status != 200:
                        raise ValueError(f"HTTP status {response.status}")
                    body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
                document = json.loads(body)
                if not isinstance(document, dict):
                    raise ValueError("not a JSON object")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                logger.warning("OIDC discovery at %s failed: %s", printable(url), printable(exc))
                raise SignInError(
                    "provider_unavailable", "the identity provider cannot be reached"
                ) from None
            if document.get("issuer") != self.settings.issuer:
                raise SignInError(
                    "provider_misconfigured",
                    f"the provider calls itself {document.get('issuer')!r}, "
                    f"not {self.settings.issuer!r} (check [oidc] issuer)",
                )
            for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(document.get(field), str):
                    raise SignInError("provider_misconfigured", f"discovery lacks {field}")
            self.jwks = JwksCache(
                IdentityProvider(
                    self.settings.issuer, self.settings.client_id, document["jwks_uri"]
                )
            )
            self.discovery = document
            return document

    def _client(self, redirect_uri: str) -> Any:
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        s = self.settings
        method = s.token_auth_method or ("client_secret_basic" if s.client_secret else "none")
        return AsyncOAuth2Client(
            client_id=s.client_id,
            client_secret=s.client_secret or None,
            token_endpoint_auth_method=method,
            scope=s.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=s.http_timeout,
            follow_redirects=False,
        )

    def redirect_uri(self, request: web.Request) -> str:
        """Where the provider sends the browser back."""
        if self.settings.redirect_url:
            return self.settings.redirect_url
        base = self.config.public_url or f"{request.scheme}://{request.host}"
        return base.rstrip("/") + "/auth/callback"

    def secure(self, request: web.Request) -> bool:
        """Whether cookies get the Secure flag: served over TLS, or public_url is https."""
        public = self.config.public_url or ""
        return request.secure or public.startswith("https:")

    # -- sign-in ------------------------------------------------------------------------------
    async def login_url(self, request: web.Request, next_path: str) -> tuple[str, str]:
        """The provider's authorization URL and the state it carries (remembered here)."""
        from authlib.common.security import generate_token

        document = await self.provider()
        redirect_uri = self.redirect_uri(request)
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(48)
        async with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                document["authorization_endpoint"],
                state=state,
                code_verifier=verifier,
                nonce=nonce,
            )
        now = time.monotonic()
        while self.pending and (
            len(self.pending) >= MAX_PENDING
            or now - next(iter(self.pending.values())).created > LOGIN_TTL
        ):
            self.pending.popitem(last=False)
        self.pending[state] = Pending(nonce, verifier, next_path, redirect_uri, now)
        return url, state

    async def finish(self, request: web.Request) -> tuple[User, str]:
        """Check the provider's answer and exchange the code; the user and where to go."""
        query = request.query
        if "error" in query:
            raise SignInError(
                "provider_error",
                f"the identity provider refused: {query.get('error')} "
                f"{query.get('error_description', '')}".strip(),
            )
        state = query.get("state", "")
        code = query.get("code", "")
        if not state or not code:
            raise SignInError("invalid_request", "the answer lacks state or code")
        bound = self.unsign(request.cookies.get(login_cookie(state)))
        pending = self.pending.pop(state, None)
        if pending is None:
            raise SignInError(
                "invalid_state", "unknown, altered or already used sign-in state: sign in again"
            )
        if bound is None or not hmac.compare_digest(bound, state):
            raise SignInError(
                "invalid_state", "this sign-in was not started by this browser: sign in again"
            )
        if time.monotonic() - pending.created > LOGIN_TTL:
            raise SignInError("expired_state", "the sign-in took too long: sign in again")
        document = await self.provider()
        try:
            async with self._client(pending.redirect_uri) as client:
                token = await client.fetch_token(
                    document["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=pending.verifier,
                )
        except Exception as exc:  # authlib's OAuthError, httpx's errors, a bad body
            description = getattr(exc, "description", "") or str(exc)
            error = getattr(exc, "error", "") or type(exc).__name__
            raise SignInError(
                "code_rejected",
                f"the identity provider did not accept the code: {error} {description}".strip(),
            ) from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SignInError("id_token_invalid", "the provider sent no ID token")
        claims = await self.verify_id_token(id_token, pending.nonce, token.get("access_token"))
        s = self.settings
        subject = claims.get(s.identity_claim)
        if not isinstance(subject, str) or not subject or not subject.isprintable():
            raise SignInError("id_token_invalid", f"claim '{s.identity_claim}' missing")
        name, email = claims.get(s.name_claim), claims.get(s.email_claim)
        name = name if isinstance(name, str) else ""
        email = email if isinstance(email, str) else ""
        if not name:
            name = email.split("@")[0] if email else subject
        user = User(subject[:255], printable(name, 200), email[:255], id_token)
        return user, pending.next_path

    async def verify_id_token(self, id_token: str, nonce: str, access_token: object) -> dict:
        """The ID token's claims once every check passed; SignInError says which failed."""
        import warnings

        from authlib.oidc.core import CodeIDToken
        from joserfc.errors import JoseError as RfcError  # Authlib's own (1.6 on)

        with warnings.catch_warnings():  # authlib.jose: deprecated, still raised by older ones
            warnings.simplefilter("ignore")
            from authlib.jose.errors import JoseError

        await self.provider()
        assert self.jwks is not None
        s = self.settings
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise SignInError("id_token_invalid", "the ID token is malformed") from None
        kid, alg = header.get("kid"), header.get("alg")
        if alg not in ("RS256", "ES256", "PS256", "EdDSA", "RS384", "RS512", "ES384"):
            raise SignInError("id_token_invalid", f"ID token algorithm {alg!r} not accepted")
        try:
            if isinstance(kid, str) and kid:
                key = await self.jwks.key(kid)
            else:
                key = await self.jwks.sole_key(alg)
            if key.algorithm_name != alg:
                raise TokenError("ID token algorithm does not match its key")
            claims = jwt.decode(
                id_token,
                key.key,
                algorithms=[alg],
                audience=s.client_id,
                issuer=s.issuer,
                leeway=30,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except TokenError as exc:
            raise SignInError("id_token_invalid", str(exc)) from None
        except jwt.InvalidIssuerError:
            raise SignInError(
                "id_token_invalid", "the ID token comes from another issuer"
            ) from None
        except jwt.InvalidAudienceError:
            raise SignInError(
                "id_token_invalid", "the ID token was issued for another client (audience)"
            ) from None
        except jwt.ExpiredSignatureError:
            raise SignInError("id_token_invalid", "the ID token has expired") from None
        except jwt.InvalidSignatureError:
            raise SignInError("id_token_invalid", "the ID token's signature is invalid") from None
        except jwt.PyJWTError as exc:
            raise SignInError("id_token_invalid", f"the ID token is invalid: {exc}") from None
        params = {"nonce": nonce, "client_id": s.client_id}
        if isinstance(access_token, str):
            params["access_token"] = access_token
        checks = CodeIDToken(claims, header, params=params)
        try:
            checks.validate(leeway=30)
        except (JoseError, RfcError) as exc:
            what = getattr(exc, "claim_name", "") or getattr(exc, "claim", "") or exc.error
            if what == "nonce":
                raise SignInError(
                    "id_token_invalid", "the ID token's nonce does not match this sign-in"
                ) from None
            raise SignInError(
                "id_token_invalid", f"the ID token failed the '{what}' check"
            ) from None
        return claims

    async def user(self, request: web.Request) -> tuple[User | None, str | None]:
        """The signed-in user of this request (and its session secret), or (None, None)."""
        secret = self.unsign(request.cookies.get(SESSION_COOKIE))
        if secret is None or self.store is None:
            return None, None
        user = await self.store.session_user(secret)
        return (user, secret) if user is not None else (None, None)

    async def meeting_name(self, slug: str) -> str | None:
        """The name of the meeting whose room is ``slug`` (None: not a meeting people own)."""
        if self.store is None:
            return None
        room = await self.store.room(slug)
        return room.name if room is not None else None

    # -- rooms' policy ------------------------------------------------------------------------
    @staticmethod
    def role(room: OwnedRoom, user: User | None) -> str:
        """'host', 'enter' (directly) or 'wait' (the waiting room), for ``user`` (None: a
        guest) in ``room``."""
        if user is not None:
            names = user.names()  # e-mail addresses are kept in lower case on both sides
            if room.owner == user.subject or names & set(room.hosts):
                return "host"
            if room.access in ("public", "trusted"):
                return "enter"
            return "enter" if names & set(room.invited) else "wait"
        return "enter" if room.access == "public" else "wait"

    def media_token(
        self, room: OwnedRoom, identity: str, name: str, host: bool, signed_in: bool
    ) -> str:
        """A token for the SFU: join ``room`` (as a host when ``host``), 6 hours."""
        key, secret = next(iter(self.config.api_keys.items()))
        # hosts get roomCreate (this room only, docs/api.md): with auto_create_rooms off, the
        # meeting starts when a host arrives; and they may record and transcribe their meeting
        # (everyone in it is told: docs/notes.md)
        grant = VideoGrant(
            room=room.slug,
            room_join=True,
            room_host=host,
            room_create=host,
            room_record=host,
            room_transcribe=host,
        )
        # "meeting": the SFU room is an owned meeting's (closed_again checks it still is)
        metadata = json.dumps({"signed_in": signed_in, "meeting": room.slug})
        return mint_token(
            key,
            secret,
            identity,
            room.slug,
            ttl=TOKEN_TTL,
            name=name,
            grant=grant,
            metadata=metadata,
        )

    @staticmethod
    def identity_of(user: User | None) -> str:
        """The SFU identity: the user's subject (hashed if too long), or a new guest's."""
        if user is None:
            return f"guest-{secrets.token_hex(6)}"
        if len(user.subject) <= 120:
            return f"u:{user.subject}"
        return "u:" + hashlib.sha256(user.subject.encode()).hexdigest()[:40]


# -- HTTP -------------------------------------------------------------------------------------
def _page(status: int, code: str, message: str) -> web.Response:
    """A short page saying why the sign-in failed (the code as data-code, for tools)."""
    body = (
        "<!doctype html><meta charset=utf-8><title>Sign-in failed</title>"
        "<link rel=stylesheet href=/static/style.css>"
        f'<main class="auth-error" data-code="{html.escape(code)}"><h1>Sign-in failed</h1>'
        f"<p id=auth-error>{html.escape(message)}</p><p><a href=/>Back</a></p></main>"
    )
    return web.Response(status=status, text=body, content_type="text/html")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def _clean_name(value: object, default: str = "") -> str:
    """A name of 1 to MAX_NAME printable characters (spaces folded), else ``default``."""
    if not isinstance(value, str):
        return default
    text = " ".join(value.split())
    return text if text and len(text) <= MAX_NAME and text.isprintable() else default


def _redirect(
    request: web.Request, location: str, cookie: str, value: str, max_age: int, path: str
) -> web.Response:
    """A 302 to ``location`` setting a cookie: HttpOnly, SameSite=Lax, Secure over TLS."""
    response = web.Response(status=302, headers={"Location": location})
    response.set_cookie(
        cookie,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        secure=request.app[IDENTITY].secure(request),
        samesite="Lax",
    )
    return response


def display_name(user: User | None, asked: object) -> str:
    """The name others see: a signed-in user's is the provider's (no one passes for someone
    else), a guest's the one they typed ('' if unusable)."""
    if user is not None and user.name:
        return _clean_name(user.name, user.subject[:MAX_NAME])
    return _clean_name(asked, "")


async def login(request: web.Request) -> web.StreamResponse:
    """GET /auth/login?next=/r/slug: off to the provider."""
    ident = request.app[IDENTITY]
    if not ident.allow(request):
        return _page(429, "rate_limited", "too many sign-ins from this address: wait a moment")
    try:
        url, state = await ident.login_url(request, _safe_next(request.query.get("next")))
    except SignInError as exc:
        return _page(502, exc.code, str(exc))
    return _redirect(request, url, login_cookie(state), ident.sign(state), LOGIN_TTL, "/auth/")


async def callback(request: web.Request) -> web.StreamResponse:
    """GET /auth/callback: the provider's answer."""
    ident = request.app[IDENTITY]
    try:
        user, next_path = await ident.finish(request)
    except SignInError as exc:
        logger.info("sign-in refused (%s): %s", exc.code, exc)
        return _page(400, exc.code, str(exc))
    assert ident.store is not None
    secret = await ident.store.create_session(user, ident.settings.session_ttl)
    logger.info("signed in: %s", printable(user.subject, 64))
    response = _redirect(
        request, next_path, SESSION_COOKIE, ident.sign(secret), ident.settings.session_ttl, "/"
    )
    response.del_cookie(login_cookie(request.query.get("state", "")), path="/auth/")
    return response


async def logout(request: web.Request) -> web.Response:
    """POST /auth/logout: the session ends here; {"redirect": ...} ends it at the provider."""
    ident = request.app[IDENTITY]
    user, secret = await ident.user(request)
    redirect = "/"
    if secret is not None and ident.store is not None:
        await ident.store.delete_session(secret)
        document = ident.discovery or {}
        end = document.get("end_session_endpoint")
        if isinstance(end, str) and user is not None:
            back = ident.settings.post_logout_redirect_url or (
                (ident.config.public_url or f"{request.scheme}://{request.host}").rstrip("/") + "/"
            )
            query = {"client_id": ident.settings.client_id, "post_logout_redirect_uri": back}
            if user.id_token:
                query["id_token_hint"] = user.id_token
            redirect = f"{end}{'&' if '?' in end else '?'}{urlencode(query)}"
    response = web.json_response({"redirect": redirect})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def me(request: web.Request) -> web.Response:
    """GET /auth/me: who is signed in (null: nobody), and that sign-in exists here."""
    ident = request.app[IDENTITY]
    user, _ = await ident.user(request)
    # dev_tokens: /dev/token gives a token for any room (development mode), so a room that is
    # not a meeting can be entered too; without it the web client says there is no meeting
    body: dict[str, Any] = {
        "enabled": True,
        "login": "/auth/login",
        "user": None,
        "dev_tokens": ident.config.dev,
    }
    if user is not None:
        body["user"] = {
            "subject": user.subject,
            "name": user.name,
            "email": user.email,
            "expires_at": user.expires_at,
        }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def _same_origin(request: web.Request) -> bool:
    from .app import origin_allowed

    config = request.app[IDENTITY].config
    return origin_allowed(request, config.allowed_origins, config.public_url)


async def _signed_in(request: web.Request) -> User:
    if request.method != "GET" and not _same_origin(request):
        raise web.HTTPForbidden(
            text=json.dumps({"code": "bad_origin", "message": "cross-site request refused"}),
            content_type="application/json",
        )
    user, _ = await request.app[IDENTITY].user(request)
    if user is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"code": "not_signed_in", "message": "sign in first (or again)"}),
            content_type="application/json",
        )
    return user


async def _body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"code": "bad_json", "message": "expected a JSON object"}),
            content_type="application/json",
        )
    return body


def _people(body: dict, field: str) -> list[str] | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, str):
        value = value.replace(";", ",").replace("\n", ",").split(",")
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ValueError(f"{field} must be a list of e-mail addresses or subjects")
    out = []
    for item in value:
        item = item.strip()
        if not item:
            continue
        if len(item) > 255 or not item.isprintable():
            raise ValueError(f"{field}: {printable(item, 40)} is not a valid user")
        out.append(item.lower() if "@" in item else item)
    return out


async def list_meetings(request: web.Request) -> web.Response:
    """GET /api/meetings: the rooms the signed-in user owns."""
    user = await _signed_in(request)
    store = request.app[IDENTITY].store
    assert store is not None
    rooms = await store.rooms_of(user)
    return web.json_response({"meetings": [r.to_json() for r in rooms]})


async def create_meeting(request: web.Request) -> web.Response:
    """POST /api/meetings {name, access}: a new room, its owner the signed-in user."""
    user = await _signed_in(request)
    body = await _body(request)
    name = _clean_name(body.get("name"), "")
    access = body.get("access", "trusted")
    if not name:
        return _error(400, "bad_request", "name: 1 to 128 printable characters")
    if access not in ACCESS_LEVELS:
        return _error(400, "bad_request", f"access: one of {', '.join(ACCESS_LEVELS)}")
    store = request.app[IDENTITY].store
    assert store is not None
    try:
        room = await store.create_room(user.subject, name, access)
    except ValueError as exc:
        return _error(409, "limit", str(exc))
    return web.json_response(room.to_json(), status=201)


async def update_meeting(request: web.Request) -> web.Response:
    """PATCH /api/meetings/{slug} {name?, access?, hosts?, invited?}: its owner only."""
    user = await _signed_in(request)
    body = await _body(request)
    changes: dict[str, Any] = {}
    try:
        if "name" in body:
            changes["name"] = _clean_name(body["name"]) or None
            if changes["name"] is None:
                raise ValueError("name: 1 to 128 printable characters")
        if "access" in body:
            if body["access"] not in ACCESS_LEVELS:
                raise ValueError(f"access: one of {', '.join(ACCESS_LEVELS)}")
            changes["access"] = body["access"]
        for field in ("hosts", "invited"):
            people = _people(body, field)
            if people is not None:
                changes[field] = people
        store = request.app[IDENTITY].store
        assert store is not None
        room = await store.update_room(request.match_info["slug"], user.subject, **changes)
    except ValueError as exc:
        return _error(400, "bad_request", str(exc))
    if room is None:
        return _error(404, "not_found", "no such meeting of yours")
    return web.json_response(room.to_json())


async def delete_meeting(request: web.Request) -> web.Response:
    """DELETE /api/meetings/{slug}: its owner only; whoever is in it is removed."""
    from .app import SFU_KEY

    user = await _signed_in(request)
    slug = request.match_info["slug"]
    store = request.app[IDENTITY].store
    assert store is not None
    if not await store.delete_room(slug, user.subject):
        return _error(404, "not_found", "no such meeting of yours")
    if request.app[SFU_KEY].room(slug) is not None:
        await request.app[SFU_KEY].delete_room(slug)
    else:  # with workers or nodes, another process may hold it: through the admin API
        await _delete_elsewhere(request, slug)
    return web.json_response({"deleted": slug})


async def _delete_elsewhere(request: web.Request, slug: str) -> None:
    """DELETE /api/rooms/{slug} on this server's own port, which the front relays to the
    process holding the room (signaling/cluster); 404 (nobody in it) is fine."""
    try:
        from .cluster.front import FRONT
    except ImportError:  # the cluster's libraries are not installed: no front either
        return
    if FRONT not in request.app:
        return
    config = request.app[IDENTITY].config
    key, secret = next(iter(config.api_keys.items()))
    grant = VideoGrant(room=slug, room_admin=True)
    token = mint_token(key, secret, "visio-sfu-identity", slug, ttl=60, grant=grant)
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    url = f"http://{host}:{config.port}/api/rooms/{slug}"
    try:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.delete(url, headers={"Authorization": f"Bearer {token}"}) as response,
        ):
            if response.status not in (200, 204, 404):
                logger.warning("meeting %s deleted, its room not closed: %s", slug, response.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("meeting %s deleted, its room not closed: %s", slug, printable(exc))


async def meeting_token(request: web.Request) -> web.Response:
    """POST /api/meetings/{slug}/token {name}: a media token if the room's policy lets this
    person in directly; 403 must_wait if they must go through the waiting room."""
    if not _same_origin(request):
        return _error(403, "bad_origin", "cross-site request refused")
    ident = request.app[IDENTITY]
    assert ident.store is not None
    if not ident.allow(request):
        return _error(429, "rate_limited", "too many requests from this address: wait a moment")
    body = await _body(request)
    room = await ident.store.room(request.match_info["slug"])
    if room is None:
        return _error(404, "not_found", "no such meeting")
    user, _ = await ident.user(request)
    role = ident.role(room, user)
    name = display_name(user, body.get("name"))
    if not name:
        return _error(400, "bad_request", "name: 1 to 128 printable characters")
    info = {"slug": room.slug, "name": room.name, "access": room.access}
    if role == "wait":
        response = web.json_response(
            {"code": "must_wait", "message": "wait for a host to let you in", "meeting": info},
            status=403,
        )
        if user is None and ident.unsign(request.cookies.get(GUEST_COOKIE)) is None:
            response.set_cookie(
                GUEST_COOKIE,
                ident.sign(secrets.token_urlsafe(16)),
                max_age=86400,
                path="/",
                httponly=True,
                secure=ident.secure(request),
                samesite="Lax",
            )
        return response
    token = ident.media_token(room, ident.identity_of(user), name, role == "host", bool(user))
    return web.json_response({"token": token, "host": role == "host", "meeting": info})


async def meeting_info(request: web.Request) -> web.Response:
    """GET /api/meetings/{slug}/info: the meeting's name and what this person may do."""
    ident = request.app[IDENTITY]
    assert ident.store is not None
    room = await ident.store.room(request.match_info["slug"])
    if room is None:
        return _error(404, "not_found", "no such meeting")
    user, _ = await ident.user(request)
    return web.json_response(
        {
            "slug": room.slug,
            "name": room.name,
            "access": room.access,
            "role": ident.role(room, user),
        }
    )


def setup(app: web.Application) -> None:
    """Sign-in, owned rooms and the waiting room when [oidc] is configured (features.py)."""
    from .app import CONFIG

    config = app[CONFIG]
    if not config.oidc:
        return
    settings = OidcSettings.from_table(config.oidc)
    ident = Identity(config, settings)
    app[IDENTITY] = ident
    from .recording import RECORDINGS
    from .transcription import TRANSCRIPTION

    # the meeting notes and the recordings' manifests bear the meeting's name
    if TRANSCRIPTION in app:
        app[TRANSCRIPTION].titles = ident.meeting_name
    if RECORDINGS in app:
        app[RECORDINGS].titles = ident.meeting_name
    data_dir = Path(config.data_dir) if config.data_dir else default_data_dir()
    url = database_url(config.database_url, data_dir)

    async def start(app: web.Application) -> None:
        from .store import open_store

        ident.store = await open_store(url)
        purge = asyncio.ensure_future(_purge_hourly(ident.store))
        yield
        purge.cancel()
        await ident.store.close()

    app.cleanup_ctx.append(start)
    app.router.add_get("/auth/login", login)
    app.router.add_get("/auth/callback", callback)
    app.router.add_post("/auth/logout", logout)
    app.router.add_get("/auth/me", me)
    app.router.add_get("/api/meetings", list_meetings)
    app.router.add_post("/api/meetings", create_meeting)
    app.router.add_patch("/api/meetings/{slug}", update_meeting)
    app.router.add_delete("/api/meetings/{slug}", delete_meeting)
    app.router.add_post("/api/meetings/{slug}/token", meeting_token)
    app.router.add_get("/api/meetings/{slug}/info", meeting_info)
    from . import lobby
    from .app import SFU_KEY

    lobby.setup(app, ident)
    sfu = app[SFU_KEY]

    def closed_again(event: object) -> None:
        """Someone entering a meeting's room with a token minted before the meeting was
        deleted (tokens last 6 h) closes it again: its metadata names the meeting, and the
        database no longer has it. Works in whichever process holds the room."""
        if not isinstance(event, ParticipantEntered):
            return
        room = sfu.room(event.room.name)
        p = room.participants.get(event.participant.sid) if room is not None else None
        try:
            meeting = json.loads(p.metadata).get("meeting") if p is not None else None
        except (ValueError, AttributeError):
            meeting = None
        if meeting == event.room.name and ident.store is not None:
            asyncio.ensure_future(_close_if_deleted(ident.store, sfu, meeting))

    sfu.listeners.append(closed_again)


async def _close_if_deleted(store: Store, sfu: SFU, slug: str) -> None:
    try:
        if await store.room(slug) is None:
            await sfu.delete_room(slug)
    except Exception:  # a database away for a moment: the meeting goes on
        logger.exception("checking meeting %s failed", slug)


async def _purge_hourly(store: Store) -> None:
    while True:
        await asyncio.sleep(3600)
        try:
            await store.purge_sessions()
        except Exception:  # a database that is away for a while: next hour
            logger.exception("purging expired sessions failed")
