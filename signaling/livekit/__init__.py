"""LiveKit's signaling protocol beside visio-sfu's JSON one (docs/livekit.md).

LiveKit's client SDKs connect to ``<url>/rtc`` with LiveKit's query parameters (``protocol``,
``sdk``...): ``wants`` tells them from the web client's JSON connections on the same path, and
``rtc_handler`` serves them with protobuf frames (session.py). ``/rtc/validate`` answers in
LiveKit's form (200, or 401 with the reason as text); ``/rtc/v1`` (single peer connection) is
answered 404, as are ``/rtc/v1/validate`` and the paths under it, which makes the SDKs fall
back to ``/rtc``.
"""

from __future__ import annotations

import logging
import weakref

from aiohttp import web

from ..auth import Identity, TokenError, printable
from .session import LiveKitSession, leave_message, release

logger = logging.getLogger(__name__)

#: the LiveKit sessions serving a participant now, by participant sid (for resumes)
SESSIONS: weakref.WeakValueDictionary[str, LiveKitSession] = weakref.WeakValueDictionary()
#: the query parameters every LiveKit SDK sends on /rtc, and the web client never does
MARKERS = ("protocol", "sdk", "auto_subscribe")


def wants(request: web.Request) -> bool:
    """Whether a connection to /rtc comes from a LiveKit SDK (protobuf frames)."""
    return any(key in request.query for key in MARKERS)


def _token(request: web.Request) -> str:
    token = request.query.get("access_token", "")
    if not token:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
    return token


def _text(status: int, text: str) -> web.Response:
    """An error as LiveKit's server writes it: plain text, which the SDKs show."""
    return web.Response(status=status, text=text, headers={"Access-Control-Allow-Origin": "*"})


async def _identity(request: web.Request) -> Identity | web.Response:
    from ..app import CONFIG, JOIN_LIMITER, VERIFIER, origin_allowed

    app = request.app
    config = app[CONFIG]
    if not origin_allowed(request, config.allowed_origins, config.public_url):
        return _text(403, "this Origin may not connect")
    if not app[JOIN_LIMITER].allow(request.remote or "?"):
        return _text(429, "too many connections from this address")
    token = _token(request)
    if not token:
        return _text(401, "no authorization token")
    try:
        return await app[VERIFIER].verify_async(token)
    except TokenError as exc:
        logger.info("refused a LiveKit connection from %s: %s", printable(request.remote, 64), exc)
        return _text(401, f"invalid token: {exc}")


async def rtc_handler(request: web.Request) -> web.StreamResponse:
    """WebSocket /rtc from a LiveKit SDK: a new participant, or (``reconnect=1&sid=``) the
    participant whose WebSocket dropped, with its peer connections as they are."""
    from ..app import CONFIG, SFU_KEY
    from ..app import SESSIONS as APP_SESSIONS

    found = await _identity(request)
    if isinstance(found, web.Response):
        return found
    identity = found
    config = request.app[CONFIG]
    sfu = request.app[SFU_KEY]
    ws = web.WebSocketResponse(max_msg_size=config.max_message_bytes, heartbeat=None)
    if not ws.can_prepare(request).ok:
        return _text(400, "expected a WebSocket upgrade")
    await ws.prepare(request)
    session = LiveKitSession(
        ws, identity, sfu, config, auto_subscribe=request.query.get("auto_subscribe") != "0"
    )
    if request.query.get("reconnect") == "1":
        sid = request.query.get("sid", "")
        room = sfu.room(identity.grant.room)
        p = room.participants.get(sid) if room is not None else None
        if room is None or p is None or p.identity != identity.identity or not p.data_channels:
            # unknown to us: the client starts again with a full join
            await ws.send_bytes(
                leave_message("state_mismatch", action=2).SerializeToString()  # RECONNECT
            )
            await ws.close()
            return ws
        holder = SESSIONS.get(sid)
        if holder is not None and holder is not session:
            release(holder, p)
        session.resume(room, p)
    else:
        try:
            await session.join()
        except Exception as exc:
            logger.info("LiveKit join refused for <%s>: %s", printable(identity.identity), exc)
            await ws.send_bytes(leave_message("join_failure").SerializeToString())
            await ws.close()
            return ws
    assert session.participant is not None
    SESSIONS[session.participant.sid] = session
    request.app[APP_SESSIONS].add(session)
    await session.run()
    return ws


async def validate(request: web.Request) -> web.Response:
    """GET /rtc/validate: 200 if the token would be accepted, else 401 with the reason."""
    found = await _identity(request)
    if isinstance(found, web.Response):
        return found
    return _text(200, "success")


async def not_found(request: web.Request) -> web.Response:
    """/rtc/v1 and /rtc/v1/validate: 404, so that the SDKs fall back to /rtc (two peer
    connections), which is what visio-sfu serves."""
    return _text(404, "single peer connection mode is not supported: use /rtc")


def setup(app: web.Application) -> None:
    """Add LiveKit's HTTP paths (the WebSocket is /rtc itself: see ``wants``)."""
    app.router.add_get("/rtc/validate", validate)
    app.router.add_get("/rtc/v1", not_found)
    app.router.add_get("/rtc/v1/validate", not_found)
