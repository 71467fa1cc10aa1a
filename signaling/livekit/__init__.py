"""LiveKit's signaling protocol beside visio-sfu's JSON one (docs/livekit.md).

LiveKit's client SDKs connect to ``<url>/rtc`` with LiveKit's query parameters (``protocol``,
``sdk``...): ``wants`` tells them from the web client's JSON connections on the same path, and
``rtc_handler`` serves them with protobuf frames (session.py), two peer connections each.
``/rtc/v1`` is LiveKit's single-peer-connection mode (``v1_handler``): its ``join_request``
(base64url of a WrappedJoinRequest, gzip or not, holding a JoinRequest with the client's first
offer) is read before the upgrade; it is served to the SDKs of ``V1_SDKS`` and answered 404 for
the others, which then fall back to ``/rtc``. ``/rtc/validate`` and ``/rtc/v1/validate``
answer in LiveKit's form (200, or 401 / 400 with the reason as text; 404 where v1 is not
served, which is what makes an SDK fall back).
"""

from __future__ import annotations

import base64
import binascii
import logging
import weakref
import zlib

from aiohttp import web
from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from ..auth import Identity, TokenError, printable
from .session import LiveKitSession, leave_message, release

logger = logging.getLogger(__name__)

#: the LiveKit sessions serving a participant now, by participant sid (for resumes)
SESSIONS: weakref.WeakValueDictionary[str, LiveKitSession] = weakref.WeakValueDictionary()
#: the query parameters every LiveKit SDK sends on /rtc, and the web client never does
MARKERS = ("protocol", "sdk", "auto_subscribe")
#: the SDKs served on /rtc/v1 (one peer connection): livekit-client, tested in Chromium; the
#: Rust-based SDKs (Python, Swift, Kotlin...) are answered 404 there and use /rtc
V1_SDKS = frozenset({models.ClientInfo.SDK.JS})
#: the largest join_request accepted, as sent (base64) and once decompressed
MAX_JOIN_REQUEST = 64 * 1024
#: how many single-connection (v1) joins and resumes this process served
V1_COUNTS = {"joins": 0, "resumes": 0}


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


def read_join_request(raw: str) -> rtc.JoinRequest:
    """The JoinRequest of a /rtc/v1 ``join_request`` (base64url, padded or not, of a
    WrappedJoinRequest whose ``join_request`` is gzip-compressed or not); ValueError saying
    what is wrong."""
    if not raw:
        raise ValueError("no join_request")
    if len(raw) > MAX_JOIN_REQUEST:
        raise ValueError("join_request too large")
    try:
        data = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("join_request is not base64url") from None
    wrapped = rtc.WrappedJoinRequest()
    try:
        wrapped.ParseFromString(data)
    except DecodeError:
        raise ValueError("join_request is not a WrappedJoinRequest") from None
    payload = wrapped.join_request
    if wrapped.compression == rtc.WrappedJoinRequest.Compression.GZIP:
        inflater = zlib.decompressobj(wbits=31)  # gzip framing
        try:
            payload = inflater.decompress(payload, MAX_JOIN_REQUEST)
        except zlib.error:
            raise ValueError("join_request is not gzip") from None
        if inflater.unconsumed_tail:
            raise ValueError("join_request too large")
        if not inflater.eof:
            raise ValueError("join_request is not gzip: truncated")
    elif wrapped.compression != rtc.WrappedJoinRequest.Compression.NONE:
        raise ValueError("join_request: unknown compression")
    join = rtc.JoinRequest()
    try:
        join.ParseFromString(payload)
    except DecodeError:
        raise ValueError("join_request does not hold a JoinRequest") from None
    return join


def _v1_request(request: web.Request) -> rtc.JoinRequest | web.Response:
    """The JoinRequest of a /rtc/v1 request, else the answer to give: 400 if it cannot be
    read, 404 if its SDK is not served on v1 (it falls back to /rtc)."""
    try:
        join = read_join_request(request.query.get("join_request", ""))
    except ValueError as exc:
        logger.info("refused a LiveKit v1 request from %s: %s", printable(request.remote, 64), exc)
        return _text(400, f"invalid join request: {exc}")
    if join.client_info.sdk not in V1_SDKS:
        return _not_found()
    return join


async def rtc_handler(request: web.Request) -> web.StreamResponse:
    """WebSocket /rtc from a LiveKit SDK: a new participant, or (``reconnect=1&sid=``) the
    participant whose WebSocket dropped, with its peer connections as they are."""
    return await _serve(
        request,
        auto_subscribe=request.query.get("auto_subscribe") != "0",
        resume_sid=request.query.get("sid", "") if request.query.get("reconnect") == "1" else None,
    )


async def v1_handler(request: web.Request) -> web.StreamResponse:
    """WebSocket /rtc/v1 (LiveKit's single peer connection): the join request and the
    client's first offer come in the query; then as /rtc, on one peer connection."""
    join = _v1_request(request)
    if isinstance(join, web.Response):
        return join
    return await _serve(
        request,
        auto_subscribe=join.connection_settings.auto_subscribe,
        resume_sid=join.participant_sid if join.reconnect else None,
        v1=join,
    )


async def _serve(
    request: web.Request,
    auto_subscribe: bool,
    resume_sid: str | None,
    v1: rtc.JoinRequest | None = None,
) -> web.StreamResponse:
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
    single = v1 is not None
    session = LiveKitSession(
        ws, identity, sfu, config, auto_subscribe=auto_subscribe, single_pc=single
    )
    if resume_sid is not None:
        sid = resume_sid
        room = sfu.room(identity.grant.room)
        p = room.participants.get(sid) if room is not None else None
        if (
            room is None
            or p is None
            or p.identity != identity.identity
            or not p.data_channels
            or (p.single is not None) != single
        ):
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
        if single:
            V1_COUNTS["resumes"] += 1
            logger.info("LiveKit v1 (one peer connection): %s resumed", sid)
    else:
        try:
            await session.join()
        except Exception as exc:
            logger.info("LiveKit join refused for <%s>: %s", printable(identity.identity), exc)
            await ws.send_bytes(leave_message("join_failure").SerializeToString())
            await ws.close()
            return ws
        if v1 is not None:
            assert session.participant is not None
            V1_COUNTS["joins"] += 1
            logger.info(
                "LiveKit v1 (one peer connection): %s joined as %s",
                printable(identity.identity),
                session.participant.sid,
            )
            if v1.HasField("publisher_offer") and v1.publisher_offer.sdp:
                await session.on_offer_safely(v1.publisher_offer)
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


async def validate_v1(request: web.Request) -> web.Response:
    """GET /rtc/v1/validate: 200 if the join would be accepted; 400 for a join request that
    cannot be read, 401 for a token refused, 404 for an SDK not served on v1 (it falls back
    to /rtc)."""
    join = _v1_request(request)
    if isinstance(join, web.Response):
        return join
    return await validate(request)


def _not_found() -> web.Response:
    return _text(404, "single peer connection mode is not served to this SDK: use /rtc")


def setup(app: web.Application) -> None:
    """Add LiveKit's HTTP paths (the v0 WebSocket is /rtc itself: see ``wants``)."""
    app.router.add_get("/rtc/validate", validate)
    app.router.add_get("/rtc/v1", v1_handler)
    app.router.add_get("/rtc/v1/validate", validate_v1)
