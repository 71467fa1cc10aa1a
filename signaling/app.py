"""The aiohttp application: WebSocket signaling, the web client, health and dev tokens."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import socket
import traceback
import weakref
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from visio_sfu import SFU
from visio_sfu.transport import set_ice_addresses, set_udp_mux, udp_mux
from visio_sfu.udpmux import UdpMux

from . import livekit
from .api import AdminAPI
from .auth import (
    DEFAULT_TTL,
    MAX_TOKEN_BYTES,
    IdentityProvider,
    TokenError,
    TokenVerifier,
    VideoGrant,
    check_identity,
    check_name,
    check_room,
    mint_token,
    parse_duration,
    printable,
    redact_tokens,
)
from .config import DEV_API_KEY, Config, ConfigError
from .features import SETUPS
from .limits import PerKeyLimiter
from .livekit_api import RoomService
from .livekit_webhooks import LiveKitWebhookNotifier
from .metrics import setup_metrics
from .session import Session, SessionCounters
from .webhooks import WebhookNotifier

logger = logging.getLogger(__name__)
#: aiohttp's own messages about requests (malformed ones, handler failures), made safe
http_logger = logging.getLogger("signaling.http")

#: the longest request line and header the HTTP server reads: above MAX_TOKEN_BYTES, so that
#: a token of up to MAX_TOKEN_BYTES reaches the verifier through the query string
#: (``GET /rtc?access_token=...``) or ``Authorization: Bearer ...`` alike; a longer line is
#: refused by aiohttp with 400 before any handler runs (aiohttp's default is 8190 bytes)
HTTP_LINE_LIMIT = MAX_TOKEN_BYTES + 2048

CONFIG = web.AppKey("config", Config)
SFU_KEY = web.AppKey("sfu", SFU)
VERIFIER = web.AppKey("verifier", TokenVerifier)
SESSIONS = web.AppKey("sessions", weakref.WeakSet)
WEBHOOKS = web.AppKey("webhooks", WebhookNotifier)
JOIN_LIMITER = web.AppKey("join_limiter", PerKeyLimiter)
COUNTERS = web.AppKey("counters", SessionCounters)


def static_dir() -> Path:
    """Where the web client lives: installed beside this package, or in the source tree."""
    installed = Path(__file__).parent / "static"
    if (installed / "index.html").exists():
        return installed
    return Path(__file__).resolve().parent.parent / "static"


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


class SafeRequestLog(logging.Filter):
    """Keeps tokens and forged lines out of aiohttp's request errors. A request the HTTP parser
    refuses (a line longer than HTTP_LINE_LIMIT, bad syntax) is logged at INFO by its class
    alone, never with its text, which holds the start of the request line (the token); any
    other message and traceback has whatever looks like a token replaced by ``<token>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed request from %s: %s (HTTP %s)"
            record.args = (printable(remote, 64), type(exc).__name__, exc.code)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            return True
        record.msg = printable(redact_tokens(record.getMessage()), 2000)
        record.args = ()
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_text = redact_tokens(text)
        return True


http_logger.addFilter(SafeRequestLog())


def _origin_key(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, lower case, default ports filled in."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def origin_allowed(request: web.Request, allowed: list[str], public_url: str | None = None) -> bool:
    """A browser's Origin must be listed in ``allowed``; else (none listed) be the origin of
    ``public_url``; else (development set-ups) name the host the request was sent to. Only the
    first two resist DNS rebinding: a rebound name is in the Host header too."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser: tokens alone decide
    if allowed:
        return origin in allowed or "*" in allowed
    if public_url:
        key = _origin_key(origin)
        return key is not None and key == _origin_key(public_url)
    return urlsplit(origin).netloc == request.host


async def rtc_handler(request: web.Request) -> web.StreamResponse:
    """WebSocket /rtc?access_token=...: authenticate, then run a Session."""
    if livekit.wants(request):  # a LiveKit SDK: protobuf frames (signaling/livekit)
        return await livekit.rtc_handler(request)
    app = request.app
    config = app[CONFIG]
    if not origin_allowed(request, config.allowed_origins, config.public_url):
        return _json_error(403, "bad_origin", "this Origin may not connect")
    if not app[JOIN_LIMITER].allow(request.remote or "?"):
        return _json_error(429, "rate_limited", "too many connections from this address")
    token = request.query.get("access_token", "")
    if not token:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
    if not token:
        return _json_error(401, "invalid_token", "access_token is required")
    try:
        identity = await app[VERIFIER].verify_async(token)
    except TokenError as exc:
        logger.info("refused a connection from %s: %s", printable(request.remote, 64), exc)
        return _json_error(401, exc.code, str(exc))
    ws = web.WebSocketResponse(max_msg_size=4 * config.max_message_bytes, heartbeat=None)
    if not ws.can_prepare(request).ok:
        return _json_error(400, "bad_request", "expected a WebSocket upgrade")
    await ws.prepare(request)
    session = Session(ws, identity, app[SFU_KEY], config, app[COUNTERS])
    app[SESSIONS].add(session)
    await session.run()
    return ws


async def index_handler(request: web.Request) -> web.StreamResponse:
    """The web client's page, for / and /r/<room>."""
    path = static_dir() / "index.html"
    if not path.exists():
        return web.Response(text="visio-sfu: web client not installed", status=404)
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


async def no_room_handler(request: web.Request) -> web.StreamResponse:
    """/r/ (or /r) names no meeting: the home page, where one is named (its query kept)."""
    raise web.HTTPFound(request.rel_url.with_path("/").with_query(request.rel_url.query))


async def healthz(request: web.Request) -> web.Response:
    """Liveness: 200 while the server runs."""
    return web.json_response({"status": "ok", "rooms": len(request.app[SFU_KEY].rooms)})


#: the longest lifetime of a development token (/dev/token?ttl=): a week, as for TURN
#: credentials (turn_ttl); its default is DEFAULT_TTL, 6 hours
DEV_TOKEN_MAX_TTL = 7 * 86400


def dev_token_fields(query: Mapping[str, str]) -> tuple[str, str, str, int]:
    """(identity, name, room, ttl) of a /dev/token request, checked with the rules /rtc
    applies to a join token (signaling.auth.check_*), so that no token is issued that /rtc
    would refuse; TokenError saying which parameter is wrong. An omitted ``room`` is "demo",
    an omitted ``identity`` a new ``guest-...``, an omitted ``ttl`` DEFAULT_TTL (6 hours);
    an empty one is an error."""
    room = check_room(query.get("room", "demo"), "room", required=True)
    name = check_name(query.get("name", ""), "name")
    identity = query.get("identity")
    identity = f"guest-{secrets.token_hex(4)}" if identity is None else identity
    check_identity(identity, "identity")
    ttl = DEFAULT_TTL
    if "ttl" in query:
        try:
            ttl = parse_duration(query["ttl"])
        except ValueError:
            raise TokenError(
                "ttl must be a positive duration: seconds, or 90s, 30m, 6h, 2d"
            ) from None
        if ttl > DEV_TOKEN_MAX_TTL:
            raise TokenError(f"ttl must be at most {DEV_TOKEN_MAX_TTL} seconds (7 days)")
    return identity, name, room, ttl


async def dev_token(request: web.Request) -> web.Response:
    """A token for any room, in development mode only (the web client's default): 400 with
    what is wrong for a value /rtc would refuse (dev_token_fields)."""
    config = request.app[CONFIG]
    if not config.dev:
        raise web.HTTPNotFound()
    try:
        identity, name, room, ttl = dev_token_fields(request.query)
    except TokenError as exc:
        return _json_error(400, "bad_request", str(exc))
    key, secret = next(iter(config.api_keys.items()))
    grant = None
    if request.query.get("host") == "1":  # a meeting host: anyone, in development; one who
        # may also record and transcribe, so that every control of the web client can be tried
        grant = VideoGrant(
            room=room, room_join=True, room_host=True, room_record=True, room_transcribe=True
        )
    token = mint_token(key, secret, identity, room, name=name, ttl=ttl, grant=grant)
    return web.json_response({"token": token, "identity": identity, "room": room, "ttl": ttl})


async def stats_handler(request: web.Request) -> web.Response:
    """SFU counters (rooms, participants, packets); development mode only for now."""
    if not request.app[CONFIG].dev:
        raise web.HTTPNotFound()
    sfu = request.app[SFU_KEY]
    return web.json_response({**sfu.stats(), **sfu.leak_check()})


def _providers(config: Config) -> list[IdentityProvider]:
    out = []
    for idp in config.identity_providers:
        known = {k: v for k, v in idp.items() if k in IdentityProvider.__dataclass_fields__}
        for key in ("algorithms", "rooms"):
            if key in known:
                known[key] = tuple(known[key])
        try:
            out.append(IdentityProvider(**known))
        except TypeError as exc:
            raise ConfigError(f"[[idp]] {idp.get('issuer')}: {exc}") from None
    return out


def create_app(config: Config, sfu: SFU | None = None) -> web.Application:
    """Build the application around an SFU (a new one unless given)."""
    app = web.Application(
        client_max_size=1024 * 1024,
        handler_args={
            "max_line_size": HTTP_LINE_LIMIT,
            "max_field_size": HTTP_LINE_LIMIT,
            "access_log": None,  # tokens travel in the query string: never log request lines
            "logger": http_logger,
        },
    )
    if not config.dev and not config.allowed_origins and not config.public_url:
        logger.warning(
            "neither allowed_origins nor public_url is set: a browser's Origin is compared with "
            "the request's Host header, which a DNS-rebinding attacker controls; set public_url "
            "(VISIO_PUBLIC_URL) to the address people open, e.g. https://visio.example.org"
        )
    if config.ice_addresses:
        set_ice_addresses(config.ice_addresses)
    app[CONFIG] = config
    app[SFU_KEY] = sfu or SFU(
        empty_timeout=config.empty_timeout,
        max_participants=config.max_participants,
        max_tracks=config.max_tracks,
    )
    app[VERIFIER] = TokenVerifier(config.api_keys, providers=_providers(config))
    app[SESSIONS] = weakref.WeakSet()
    app[COUNTERS] = SessionCounters()
    rate = config.joins_per_second
    app[JOIN_LIMITER] = PerKeyLimiter(rate, max(4 * rate, 20))
    app.router.add_get("/rtc", rtc_handler)
    app.router.add_get("/", index_handler)
    app.router.add_get("/r/{room}", index_handler)
    app.router.add_get("/r/", no_room_handler)
    app.router.add_get("/r", no_room_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/dev/token", dev_token)
    app.router.add_get("/dev/stats", stats_handler)
    app.router.add_routes(AdminAPI(app[SFU_KEY], app[VERIFIER], config).routes())
    app.router.add_routes(RoomService(app[SFU_KEY], app[VERIFIER], config).routes())
    if config.webhook_urls:
        key, secret = next(iter(config.api_keys.items()))
        kind = LiveKitWebhookNotifier if config.webhook_format == "livekit" else WebhookNotifier
        notifier = kind(config.webhook_urls, key, secret)
        app[SFU_KEY].listeners.append(notifier)
        app[WEBHOOKS] = notifier
    setup_metrics(app, app[SFU_KEY], app[COUNTERS], app.get(WEBHOOKS))
    for setup_feature in SETUPS:  # signaling/features.py
        setup_feature(app)
    static = static_dir()
    if static.exists():
        app.router.add_static("/static/", static, append_version=False)
    app.on_shutdown.append(_on_shutdown)
    if config.udp_port:
        app.on_startup.append(_start_udp_mux)
        app.on_cleanup.append(_stop_udp_mux)
    return app


UDP_MUX = web.AppKey("udp_mux", UdpMux)


#: set by a front whose rooms live in worker processes: it has no media of its own
NO_MEDIA = web.AppKey("no_media", bool)


def udp_port_of(config: Config) -> int:
    """The UDP port this process's media uses: udp_port, or worker i's, udp_port + i."""
    worker = os.environ.get("VISIO_WORKER")
    return config.udp_port + (int(worker) if worker and worker.isdigit() else 0)


def media_port_error(
    config: Config, port: int, host: str, exc: OSError, worker: int | None = None
) -> str:
    """What to tell someone whose media port cannot be bound."""
    why = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE or "could not bind" in str(exc):
        why = "the address is in use (another server runs there?)"
    kinds = "UDP and TCP (--ice-tcp)" if config.ice_tcp else "UDP"
    whose = f", worker {worker}'s: udp_port + {worker}" if worker is not None else ""
    zero = "" if config.ice_tcp else ", or 0 for ephemeral ports"
    return (
        f"cannot listen on port {port} ({host}, {kinds}{whose}): {why}; choose another "
        f"with --udp-port (VISIO_UDP_PORT){zero}"
    )


def media_ports_free(config: Config, workers: int) -> str | None:
    """Before workers are started: whether each one's media port can be bound (None), or why
    not (a worker failing at start-up is a worse way to learn it)."""
    host, _ = media_hosts(config.ice_addresses)  # (an IPv6 socket that cannot: IPv4 alone)
    if config.udp_port + workers - 1 > 65535:
        return (
            f"{workers} workers need the ports {config.udp_port} to "
            f"{config.udp_port + workers - 1}: choose a lower --udp-port"
        )
    kinds = [socket.SOCK_DGRAM] + ([socket.SOCK_STREAM] if config.ice_tcp else [])
    for i in range(workers):
        port = config.udp_port + i
        for kind in kinds:
            try:
                with socket.socket(socket.AF_INET, kind) as probe:
                    if kind == socket.SOCK_STREAM:
                        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind((host, port))
            except OSError as exc:
                return media_port_error(config, port, host, exc, i)
    return None


async def _start_udp_mux(app: web.Application) -> None:
    """Every peer's media on one UDP port (visio_sfu/udpmux.py), bound before anyone joins."""
    if app.get(NO_MEDIA):
        return  # the workers have the ports
    config = app[CONFIG]
    port = udp_port_of(config)
    host, host6 = media_hosts(config.ice_addresses)
    try:
        mux = await UdpMux(
            port,
            host=host,
            advertise=config.public_ips or None,
            batch=config.batch_sends,
            tcp=config.ice_tcp,
            host6=host6,
        ).start()
    except OSError as exc:  # the command prints it and exits 2
        index = os.environ.get("VISIO_WORKER", "")
        worker = int(index) if index.isdigit() else None
        raise ConfigError(media_port_error(config, port, host, exc, worker)) from None
    app[UDP_MUX] = mux
    set_udp_mux(mux)


def media_hosts(ice_addresses: list[str]) -> tuple[str, str | None]:
    """The media port's IPv4 and IPv6 addresses to listen on: everywhere ("0.0.0.0", "::")
    unless ICE addresses are configured; one of a family configured: there only (a test's
    127.0.0.1 or ::1); none of IPv6 configured: no IPv6 socket."""
    if not ice_addresses:
        return "0.0.0.0", "::"
    v4 = [a for a in ice_addresses if ":" not in a]
    v6 = [a for a in ice_addresses if ":" in a]
    host = v4[0] if len(v4) == 1 else ("0.0.0.0" if v4 else "127.0.0.1")
    host6 = (v6[0] if len(v6) == 1 else "::") if v6 else None
    return host, host6


async def _stop_udp_mux(app: web.Application) -> None:
    mux = app.get(UDP_MUX)
    if mux is not None:
        if udp_mux() is mux:  # (another app of this process may have set its own since)
            set_udp_mux(None)
        mux.close()


async def _on_shutdown(app: web.Application) -> None:
    sessions = list(app[SESSIONS])
    for session in sessions:  # every client is told first (1012), none sees the others leave
        session.going_away()
    for session in sessions:
        await session.close("server_shutdown")
    await app[SFU_KEY].close()
    if WEBHOOKS in app:
        await app[WEBHOOKS].close()


def startup_banner(config: Config, banner: str = "visio-sfu") -> str:
    """What the server prints once it listens: in development mode (but by a worker, whose
    front prints it), that anyone may join, the API key and secret, a room to open; then
    ``<banner> listening on <url>``."""
    url = f"http://{config.host}:{config.port}"
    lines = []
    if config.dev and not os.environ.get("VISIO_WORKER"):
        lines += [
            "visio-sfu: DEVELOPMENT MODE: anyone may join any room",
            f"  API key:    {DEV_API_KEY}\n  API secret: {config.api_keys[DEV_API_KEY]}",
            f"  open:       {url}/r/demo?name=Alice",
        ]
    return "\n".join([*lines, f"{banner} listening on {url}"])


def run(config: Config, app: web.Application | None = None, banner: str = "visio-sfu") -> None:
    """Run the server (``app``, or a new one) until interrupted, on uvloop when available.
    Its banner (``startup_banner``) is printed once its HTTP and media ports are bound (the
    media port at start-up, before the HTTP port): a port that cannot be had gives its error
    alone, after no banner."""
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aioice").setLevel(logging.WARNING)
    logging.getLogger("aiortc").setLevel(logging.WARNING)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        logger.warning("uvloop not available; using the default event loop")
    web.run_app(
        app if app is not None else create_app(config),
        host=config.host,
        port=config.port,
        print=lambda _msg: print(startup_banner(config, banner), flush=True),
        access_log=None,
        shutdown_timeout=5,
    )
