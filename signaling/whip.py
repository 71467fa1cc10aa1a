"""WHIP ingest (RFC 9725) and WHEP playback: WebRTC over plain HTTP, for encoders and players
that speak no signaling protocol of ours (OBS, GStreamer, ffmpeg, broadcast players).

- ``POST /whip/<room>``: an SDP offer (``application/sdp``) and an access token (``Authorization:
  Bearer``, the same JWT as for /rtc: its room, ``canPublish``) publish the offer's tracks in the
  room, as a participant of the token's identity. The answer comes back with ``201 Created``
  and the session's URL (``Location``); its ICE candidates are all in the answer (no trickle
  needed), the server's STUN/TURN servers in ``Link: <url>; rel="ice-server"`` headers.
- ``POST /whep/<room>``: the same with receive-only sections (``canSubscribe``): the room's
  tracks, one per section, to a player.
- ``PATCH <session URL>`` (``application/trickle-ice-sdpfrag``): the client's trickled candidates.
- ``DELETE <session URL>``: the session ends (the participant leaves the room).

A session belongs to the identity of the token that made it: PATCH and DELETE need a token of
the same identity and room (403 otherwise). The participant goes when its connection fails
(ICE, consent freshness) or it is removed or replaced, like any other; its URL is then gone (404).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from types import SimpleNamespace
from urllib.parse import quote

from aiohttp import web

from visio_sfu import SFU
from visio_sfu.errors import PermissionDenied, RoomClosed, RoomFull, RoomLocked, TransportError
from visio_sfu.events import Event, Leave, SectionsWanted, TrackMuted
from visio_sfu.icerestart import ice_credentials
from visio_sfu.participant import Participant, Permissions
from visio_sfu.room import Room

from . import turn
from .auth import Identity, TokenError, TokenVerifier, printable
from .limits import PerKeyLimiter
from .protocol import ProtocolError
from .session import JOIN_GUARDS

logger = logging.getLogger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
#: the largest offer or candidate fragment read (a browser's offer with simulcast: 6-10 KB)
MAX_BODY = 64 * 1024
MAX_RESTARTS = 32  # ICE restarts a session may make (each one renews its credentials)
#: sessions the server holds at once (each is a participant: rooms' limits apply too)
MAX_SESSIONS = 10_000
#: seconds a new session has to connect (ICE and DTLS) before it is ended: a client that
#: never connects has no other way of leaving (no signaling channel)
CONNECT_TIMEOUT = 30.0
#: headers every answer carries: a player on another origin may read them (the token is a
#: bearer header, never a cookie: any origin may use it, none gets it by being a page)
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, Link, ETag, Accept-Post, Accept-Patch",
}


@dataclass
class HttpSession:
    """One WHIP or WHEP session: its participant, who made it, where it lives."""

    id: str
    kind: str  # "whip" or "whep"
    room: Room
    participant: Participant
    identity: str
    offer: str = ""  # the client's offer: answered again when tracks come and go (WHEP)
    ice_ufrag: str = ""  # the client's, from its offer: a fragment with another is a restart
    candidates: int = 0
    restarts: int = 0  # ICE restarts (PATCH with new credentials)
    earlier: set[str] = field(default_factory=set)  # the client's earlier ICE ufrags
    section: tuple[str, str] = ("audio", "0")  # the offer's first m-section: kind, mid
    refills: int = 0  # times its sections were given other tracks (WHEP)
    _refill: asyncio.Task | None = field(default=None, repr=False)
    _deadline: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def etag(self) -> str:
        """The session's entity tag: its id, and its ICE restarts' count after the first."""
        return f'"{self.id}.{self.restarts}"' if self.restarts else f'"{self.id}"'

    def want_refill(self) -> None:
        """A track waits for a section, or one was freed: a WHEP player never offers again,
        so its last offer is answered again here (Participant.reanswer), once the changes of
        this moment are all made."""
        if self.kind == "whep" and (self._refill is None or self._refill.done()):
            self._refill = asyncio.ensure_future(self._do_refill())

    async def _do_refill(self) -> None:
        await asyncio.sleep(0.05)  # tracks added or removed together: one answer
        try:
            # until nothing more can be placed (each answer may free or fill sections)
            for _ in range(8):
                if not await self.participant.reanswer(self.offer):
                    break
                self.refills += 1
        except (TransportError, ValueError) as exc:
            logger.info("WHEP %s: its sections could not be refilled: %s", self.id, exc)

    @property
    def url(self) -> str:
        return f"/{self.kind}/{quote(self.room.name, safe='')}/{self.id}"

    @property
    def connected(self) -> bool:
        """Whether its connection is up (ICE and DTLS)."""
        p = self.participant
        transport = p.single if p.single is not None else p.publishing.transport
        return transport is not None and transport.state == "connected"

    def ended(self) -> None:
        """It is over (DELETE, left, replaced, failed): its pending work is cancelled."""
        if self._refill is not None:
            self._refill.cancel()
        if self._deadline is not None:
            self._deadline.cancel()


def _error(status: int, code: str, message: str) -> web.Response:
    """An HTTP error with the JSON body every other endpoint uses."""
    return web.json_response({"code": code, "message": message}, status=status, headers=CORS)


def _bearer(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def _link_header(servers: list[dict]) -> list[str]:
    """RFC 9725 section 4.6: each STUN/TURN URL as a Link with rel="ice-server"."""
    links = []
    for server in servers:
        extra = ""
        if "username" in server:
            extra = (
                f'; username="{server["username"]}"; credential="{server["credential"]}"'
                '; credential-type="password"'
            )
        for url in server["urls"]:
            links.append(f'<{url}>; rel="ice-server"{extra}')
    return links


def with_ice_credentials(sdp: str, ufrag: str, pwd: str) -> str:
    """``sdp`` with every a=ice-ufrag and a=ice-pwd line replaced by these (CRLF lines)."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            line = f"a=ice-ufrag:{ufrag}"
        elif line.startswith("a=ice-pwd:"):
            line = f"a=ice-pwd:{pwd}"
        out.append(line)
    return "\r\n".join(out) + "\r\n" if out else ""


def without_candidates(sdp: str) -> str:
    """``sdp`` without its a=candidate and a=end-of-candidates lines (CRLF lines)."""
    lines = [
        line
        for line in sdp.splitlines()
        if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    ]
    return "\r\n".join(lines) + "\r\n" if lines else ""


def first_section(sdp: str) -> tuple[str, str]:
    """The kind and mid of an offer's first m-section ("audio", "0" if none says)."""
    kind, mid = "", ""
    for line in sdp.splitlines():
        if line.startswith("m=") and not kind:
            kind = line[2:].split(" ", 1)[0]
        elif line.startswith("a=mid:") and kind and not mid:
            mid = line[6:].strip()
    return kind or "audio", mid or "0"


def parse_sdpfrag(text: str) -> tuple[str, list[dict]]:
    """The ICE username fragment and the candidates of a trickle-ice-sdpfrag body (RFC 8840):
    ``({"candidate", "sdpMid"}...)``; a candidate is tied to the latest ``a=mid`` before it."""
    ufrag, mid, out = "", None, []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("a=ice-ufrag:"):
            ufrag = line[12:].strip()
        elif line.startswith("a=mid:"):
            mid = line[6:].strip()
        elif line.startswith("a=candidate:"):
            out.append({"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": 0})
    return ufrag, out


class HttpIngest:
    """The WHIP and WHEP endpoints of one server, and the sessions they made."""

    def __init__(
        self, sfu: SFU, verifier: TokenVerifier, config: object, limiter: PerKeyLimiter
    ) -> None:
        self.sfu = sfu
        self.verifier = verifier
        self.config = config
        self.limiter = limiter  # the joins' limit per address (joins_per_second)
        self.sessions: dict[str, HttpSession] = {}
        self.made = {"whip": 0, "whep": 0}  # sessions made since start

    def routes(self) -> list[web.RouteDef]:
        out = []
        for kind in ("whip", "whep"):
            out += [
                web.post(f"/{kind}/{{room}}", self.create),
                web.post(f"/{kind}/{{room}}/", self.create),  # (a URL pasted with its slash)
                web.options(f"/{kind}/{{room}}/", self.options),
                web.options(f"/{kind}/{{room}}", self.options),
                web.patch(f"/{kind}/{{room}}/{{id}}", self.patch),
                web.delete(f"/{kind}/{{room}}/{{id}}", self.delete),
                web.options(f"/{kind}/{{room}}/{{id}}", self.options),
            ]
        return out

    # -- helpers ----------------------------------------------------------------------------
    async def _identity(self, request: web.Request) -> Identity | web.Response:
        token = _bearer(request)
        if not token:
            return _error(
                401, "invalid_token", "an access token is required (Authorization: Bearer)"
            )
        try:
            ident = await self.verifier.verify_async(token)
        except TokenError as exc:
            logger.info(
                "%s refused from %s: %s", request.path[:64], printable(request.remote, 64), exc
            )
            return _error(401, exc.code, str(exc))
        if ident.grant.room != request.match_info["room"]:
            return _error(403, "permission_denied", "the token does not grant this room")
        return ident

    async def _body(self, request: web.Request, content_type: str) -> str | web.Response:
        if request.content_type != content_type:
            return _error(415, "bad_request", f"the body must be {content_type}")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _error(413, "too_large", f"the body is over {MAX_BODY} bytes")
        try:  # (read() keeps the body: a cluster's front may have read it to relay it)
            data = await request.read()  # at most the app's client_max_size
        except web.HTTPRequestEntityTooLarge:
            data = b"x" * (MAX_BODY + 1)
        if len(data) > MAX_BODY:
            return _error(413, "too_large", f"the body is over {MAX_BODY} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "bad_request", "the body is not UTF-8 text")

    async def _owned_session(self, request: web.Request) -> HttpSession | web.Response:
        """The session of the URL, if the request's token is its maker's (PATCH, DELETE)."""
        ident = await self._identity(request)
        if isinstance(ident, web.Response):
            return ident
        return self._session(request, ident)

    def _session(self, request: web.Request, ident: Identity) -> HttpSession | web.Response:
        kind = request.path.split("/")[1]
        session = self.sessions.get(request.match_info["id"])
        if session is None or session.kind != kind or session.room.name != ident.grant.room:
            return _error(404, "not_found", "no such session (ended, or never made)")
        if session.identity != ident.identity:
            return _error(403, "permission_denied", "this session belongs to someone else")
        return session

    async def options(self, request: web.Request) -> web.Response:
        """CORS preflight, and what a POST accepts (RFC 9725 section 4.2)."""
        return web.Response(
            status=204,
            headers={
                "Accept-Post": SDP,
                "Accept-Patch": SDPFRAG,
                "Access-Control-Allow-Methods": "POST, PATCH, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
                "Access-Control-Max-Age": "600",
                **CORS,
            },
        )

    # -- POST: a new session ------------------------------------------------------------------
    async def create(self, request: web.Request) -> web.Response:
        """``POST /whip/<room>`` or ``/whep/<room>``: answer the offer, make the session."""
        kind = request.path.split("/")[1]
        if not self.limiter.allow(request.remote or "?"):
            return _error(429, "rate_limited", "too many sessions made from this address")
        ident = await self._identity(request)
        if isinstance(ident, web.Response):
            return ident
        grant = ident.grant
        if kind == "whip" and not grant.can_publish:
            return _error(403, "permission_denied", "the token does not allow publishing")
        if kind == "whep" and not grant.can_subscribe:
            return _error(403, "permission_denied", "the token does not allow receiving")
        sdp = await self._body(request, SDP)
        if isinstance(sdp, web.Response):
            return sdp
        if len(self.sessions) >= MAX_SESSIONS:
            return _error(503, "busy", "the server holds too many WHIP/WHEP sessions")
        room = self.sfu.room(grant.room)
        if room is None:
            config = self.config
            if not (config.auto_create_rooms or grant.room_create):
                return _error(
                    404, "not_found", f"room {printable(grant.room, 64)!r} does not exist"
                )
            if config.max_rooms and len(self.sfu.rooms) >= config.max_rooms:
                return _error(503, "room_full", "the server has reached its room limit")
            room = self.sfu.get_or_create_room(grant.room)
        try:
            for guard in JOIN_GUARDS:  # the features' rules (a breakout room is entered by a move)
                guard(SimpleNamespace(sfu=self.sfu, identity=ident, config=self.config), room)  # type: ignore[arg-type]
        except ProtocolError as exc:
            return _error(403, exc.code, exc.message)
        sid = secrets.token_urlsafe(16)
        holder: dict[str, HttpSession] = {}

        def emit(event: Event) -> None:
            session = holder.get(sid)
            if session is None:
                return
            if isinstance(event, Leave):
                self.sessions.pop(sid, None)  # removed, replaced, its connection failed
                session.ended()
            elif isinstance(event, SectionsWanted):
                session.want_refill()
            elif isinstance(event, TrackMuted) and session.participant.subscriber is not None:
                # a live track takes a muted one's section (SectionsWanted follows if so)
                session.participant.subscriber.track_muted(event.track_sid, event.muted)

        perms = Permissions(
            can_publish=kind == "whip",
            can_subscribe=kind == "whep",
            can_publish_data=False,
            hidden=grant.hidden,
            can_publish_sources=grant.can_publish_sources,
        )
        name = ident.name or ident.identity
        try:
            p = await room.join(
                ident.identity,
                name,
                ident.metadata,
                perms,
                emit=emit,
                bypass_lock=grant.is_host,
                single_pc=kind == "whep",
                ends_with_connection=True,
                fixed_sections=kind == "whep",
            )
        except RoomFull as exc:
            return _error(503, "room_full", str(exc))
        except RoomClosed:
            return _error(503, "room_full", "the room is closing; try again")
        except RoomLocked:
            return _error(403, "room_locked", "the meeting is locked: a host may unlock it")
        # answered again for WHEP only; without candidates (a generation that may be gone)
        offer = without_candidates(sdp) if kind == "whep" else ""
        ufrag = (ice_credentials(sdp) or ("", ""))[0]  # (aiortc refused an offer without)
        session = HttpSession(sid, kind, room, p, ident.identity, offer, ufrag)
        session.section = first_section(sdp)
        holder[sid] = session
        try:
            answer = await self._answer(session, sdp)
        except (TransportError, PermissionDenied, ValueError) as exc:
            await room.remove(p, "bad_offer")
            status = 403 if isinstance(exc, PermissionDenied) else 400
            return _error(status, "bad_offer", f"the offer cannot be answered: {exc}")
        except BaseException:
            await room.remove(p, "bad_offer")
            raise
        if p.closed or p.sid not in room.participants:
            return _error(409, "gone", "the session was replaced or removed while it was made")
        self.sessions[sid] = session
        self.made[kind] += 1
        session._deadline = asyncio.get_running_loop().call_later(
            CONNECT_TIMEOUT, self._connect_deadline, session
        )
        logger.info(
            "room %s: %s session %s for %s",
            room.name,
            kind.upper(),
            p.sid,
            printable(ident.identity, 64),
        )
        headers = {"Location": session.url, "ETag": session.etag, **CORS}
        response = web.Response(status=201, text=answer, content_type=SDP, headers=headers)
        for link in _link_header(turn.ice_servers_of(self.config, ident.identity)):  # type: ignore[arg-type]
            response.headers.add("Link", link)
        return response

    async def _answer(self, session: HttpSession, sdp: str) -> str:
        """Apply the client's offer: publish what it sends (WHIP), or fill what it receives
        with the room's tracks (WHEP)."""
        from visio_sfu.sdp import parse_offer

        offered = [m for m in parse_offer(sdp) if m.kind in ("audio", "video")]
        if "a=fingerprint:" not in sdp:
            raise TransportError("the offer has no DTLS fingerprint (a=fingerprint)")
        p = session.participant
        if session.kind == "whip":
            if not any(m.sending for m in offered):
                raise TransportError("the offer sends nothing (WHIP publishes)")
            answer = await p.publish_offer(sdp)
            if not p.tracks:
                raise PermissionDenied("the token allows publishing none of the offer's tracks")
            return answer
        if not offered or any(m.sending for m in offered):
            raise TransportError("the offer receives nothing, or sends (WHEP: recvonly only)")
        answer, _mids = await p.single_offer(sdp)
        return answer

    # -- PATCH: trickled candidates, ICE restarts -------------------------------------------
    async def patch(self, request: web.Request) -> web.Response:
        """The client's trickled ICE candidates (RFC 8840 fragment: 204), or an ICE restart
        (a fragment with new credentials, RFC 9725 section 4.4.1: 200 with ours)."""
        session = await self._owned_session(request)
        if isinstance(session, web.Response):
            return session
        text = await self._body(request, SDPFRAG)
        if isinstance(text, web.Response):
            return text
        # RFC 9725 section 4.3.1: a fragment for another state of the session (its ETag)
        match = request.headers.get("If-Match")
        if match is not None and match.strip() not in ("*", session.etag):
            return _error(412, "precondition_failed", f"the session's ETag is {session.etag}")
        ufrag, candidates = parse_sdpfrag(text)
        if session.candidates + len(candidates) > 64:
            return _error(429, "too_many", "at most 64 candidates a session")
        p = session.participant
        if ufrag in session.earlier:  # late candidates of a generation restarted since
            return web.Response(status=204, headers=CORS)
        if ufrag and session.ice_ufrag and ufrag != session.ice_ufrag:
            return await self._restart(session, text, candidates)
        try:
            for candidate in candidates:
                if session.kind == "whip":
                    await p.add_ice_candidate("publisher", candidate)
                else:
                    await p.add_ice_candidate("subscriber", candidate)
                session.candidates += 1
        except TransportError as exc:
            return _error(400, "bad_candidate", str(exc))
        return web.Response(status=204, headers=CORS)

    async def _restart(
        self, session: HttpSession, text: str, candidates: list[dict]
    ) -> web.Response:
        """An ICE restart: the client's new credentials and candidates; our new ones back, as
        an sdpfrag (the client's network changed: the session and its media go on)."""
        credentials = ice_credentials(text)
        if credentials is None:
            return _error(400, "bad_request", "an ICE restart needs a=ice-ufrag and a=ice-pwd")
        if session.restarts >= MAX_RESTARTS:
            return _error(429, "too_many", f"at most {MAX_RESTARTS} ICE restarts a session")
        p = session.participant
        target = "publisher" if session.kind == "whip" else "subscriber"
        try:
            ufrag, pwd, ours = await p.restart_ice_with(target, *credentials)
        except (TransportError, ValueError) as exc:
            return _error(409, "not_connected", str(exc))
        session.restarts += 1
        session.earlier.add(session.ice_ufrag)
        session.ice_ufrag = credentials[0]
        # a later answer to the same offer (WHEP, Participant.reanswer) with its new ICE
        session.offer = with_ice_credentials(session.offer, *credentials)
        try:
            for candidate in candidates:
                await p.add_ice_candidate(target, candidate)
                session.candidates += 1
        except (TransportError, ValueError) as exc:
            return _error(400, "bad_candidate", str(exc))
        kind, mid = session.section
        body = [f"a=group:BUNDLE {mid}", f"m={kind} 9 UDP/TLS/RTP/SAVPF 0", f"a=mid:{mid}"]
        body += [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}"]
        body += [f"a={line}" for line in ours] + ["a=end-of-candidates", ""]
        headers = {"ETag": session.etag, **CORS}
        return web.Response(
            status=200, text="\r\n".join(body), content_type=SDPFRAG, headers=headers
        )

    # -- DELETE: the end ----------------------------------------------------------------------
    async def delete(self, request: web.Request) -> web.Response:
        """End the session: its participant leaves the room."""
        session = await self._owned_session(request)
        if isinstance(session, web.Response):
            return session
        self.sessions.pop(session.id, None)
        session.ended()
        p = session.participant
        room = self.sfu.room(p.room_name or "") or session.room  # moved: a breakout room
        await room.remove(p, "left")
        return web.Response(status=200, headers=CORS)

    def _connect_deadline(self, session: HttpSession) -> None:
        """CONNECT_TIMEOUT after the answer: a session still not connected is ended."""
        session._deadline = None
        if self.sessions.get(session.id) is not session or session.connected:
            return
        p = session.participant
        room = self.sfu.room(p.room_name or "") or session.room
        logger.info("%s session %s never connected: ended", session.kind.upper(), session.id)
        self.sessions.pop(session.id, None)
        session.ended()
        room.schedule_removal(p, "ice_timeout")


INGEST = web.AppKey("whip", HttpIngest)


def setup(app: web.Application) -> None:
    """Add the WHIP and WHEP routes (listed in signaling/features.py)."""
    from .app import CONFIG, JOIN_LIMITER, SFU_KEY, VERIFIER

    ingest = HttpIngest(app[SFU_KEY], app[VERIFIER], app[CONFIG], app[JOIN_LIMITER])
    app[INGEST] = ingest
    app.router.add_routes(ingest.routes())
