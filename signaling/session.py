"""Session: one WebSocket, one participant.

Reads JSON messages, validates them, drives the SFU through its public API, and writes the
SFU's events back. Every bad input gets an error message; the session and the room go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from aiohttp import WSMsgType, web

from visio_sfu import (
    SFU,
    Participant,
    PermissionDenied,
    Permissions,
    RestartRefused,
    RoomClosed,
    RoomFull,
    RoomLocked,
    TransportError,
)
from visio_sfu.events import DataReceived, Event
from visio_sfu.room import Room

from . import protocol as proto
from . import resume, turn
from .auth import Identity
from .config import Config
from .limits import MessageBudget, TokenBucket
from .protocol import ProtocolError, decode, error, parse_request

logger = logging.getLogger(__name__)


@dataclass
class SessionCounters:
    """What sessions count for /metrics beyond the SFU's own figures."""

    #: negotiations the client could not apply, by connection ("publisher"/"subscriber")
    negotiation_failures: dict[str, int] = dc_field(
        default_factory=lambda: {"publisher": 0, "subscriber": 0}
    )
    subscriber_restarts: int = 0  # fresh subscriber connections made after such a failure


class _RoomFullClose(ProtocolError):
    """The room is full: answer, then close the socket (4001)."""


REPORTS_LOGGED = 5  # negotiation failures a session may log per minute
MAX_ICE_RESTARTS = 10  # subscriber ICE restarts a session may ask for per minute
OUTBOX_LIMIT = 1024  # events queued for a client that does not read: beyond, it is dropped
_TOO_SLOW = (4002, b"too slow")  # outbox sentinels (tuples): close with this code
_DONE = (1000, b"")
#: the server is stopping (a restart, an upgrade): "service restart" (RFC 6455's registry), as a
#: cluster's relay says it; the client comes back at once as a new participant, and meanwhile
#: shows an outage, not the others leaving (docs/protocol.md)
_GOING_AWAY = (1012, b"server restart")


class Session:
    """Drives one participant from one WebSocket."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        identity: Identity,
        sfu: SFU,
        config: Config,
        counters: SessionCounters | None = None,
    ):
        self.ws = ws
        self.counters = counters or SessionCounters()
        self.identity = identity
        self.sfu = sfu
        self.config = config
        self.participant: Participant | None = None
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._closing = False
        self._budget = MessageBudget(config.message_rate)
        self._last_limit_error = 0.0
        self._reports: list[float] = []  # negotiation failures logged in the last minute
        self._ice_restarts: list[float] = []  # ICE restarts asked for in the last minute
        self._silent = False  # closed for silence: not kept for a resume
        self._going_away = False  # the server is stopping (going_away)

    # -- output ----------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Queue one of the SFU's events for the client, as its wire message."""
        if isinstance(event, DataReceived) and event.encoded_only:
            return  # another protocol's data (LiveKit's), with no meaning here
        self.send(proto.to_wire(event))

    def send(self, event: dict) -> None:
        """Queue a message for the client (synchronous, never blocks)."""
        if self._closing:
            return
        if self._outbox.qsize() >= OUTBOX_LIMIT:
            logger.warning("session %s: client does not read its events; closing", self._who())
            self._closing = True
            self._outbox.put_nowait(_TOO_SLOW)
            return
        self._outbox.put_nowait(event)

    async def _write_loop(self) -> None:
        while True:
            event = await self._outbox.get()
            if isinstance(event, tuple):  # a sentinel: close with its code
                await self.ws.close(code=event[0], message=event[1])
                return
            try:
                await self.ws.send_str(json.dumps(event, separators=(",", ":")))
            except (ConnectionError, RuntimeError):
                return
            if event.get("type") == "leave":
                self._closing = True
                await self.ws.close()
                return

    def _who(self) -> str:
        return self.participant.sid if self.participant else f"<{self.identity.identity}>"

    # -- input -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the socket until it closes, then remove the participant."""
        self._writer = asyncio.ensure_future(self._write_loop())
        reason = "disconnected"
        try:
            while not self._closing:
                try:
                    msg = await self.ws.receive(timeout=self.config.ping_timeout)
                except TimeoutError:
                    logger.info("session %s: silent for %ss", self._who(), self.config.ping_timeout)
                    self._silent = True
                    break
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    if msg.type == WSMsgType.TEXT:
                        message, failure = self._decode(msg.data)
                    else:
                        message = None
                        failure = ProtocolError("bad_json", "binary frames are not accepted")
                    # ICE candidates come in bursts (one per address, port and m-section: a
                    # hundred is ordinary): they have a budget of their own
                    kind = message["type"] if message is not None else None
                    if not self._within_rate(self._budget.bucket(kind)):
                        if self._closing:
                            reason = "rate_limited"
                            break
                        continue
                    if failure is not None:
                        self.send(error(failure.code, failure.message))
                    elif await self.handle_message(message) == "leave":
                        reason = "left"
                        break
                elif msg.type == WSMsgType.ERROR:
                    logger.info("session %s: socket error: %s", self._who(), self.ws.exception())
                    break
                else:  # CLOSE, CLOSING, CLOSED
                    break
        finally:
            await self.close(reason)

    def _within_rate(self, bucket: TokenBucket) -> bool:
        """Spend one message of ``bucket``; over it, one error a second, then disconnection."""
        left = bucket.take()
        if left >= 0:
            return True
        if left <= -bucket.burst:
            logger.warning("session %s: flooding; disconnected", self._who())
            self.send(error("rate_limited", "too many messages: disconnected"))
            self._outbox.put_nowait((4029, b"rate limited"))
            self._closing = True
            return False
        now = time.monotonic()
        if now - self._last_limit_error >= 1.0:
            self._last_limit_error = now
            self.send(error("rate_limited", "too many messages: slow down (this one was dropped)"))
        return False

    def going_away(self) -> None:
        """The server is stopping: what is queued is written, then the socket is closed with
        1012 (service restart), and nothing more is sent: not the others leaving as the server
        removes them one by one, which the client would show as people leaving (it shows an
        outage instead, and comes back). ``close`` removes the participant (server_shutdown)."""
        if self._going_away:
            return
        self._going_away = True
        if not self._closing:
            self._closing = True
            self._outbox.put_nowait(_GOING_AWAY)

    async def close(self, reason: str = "disconnected") -> None:
        """Remove the participant and stop writing."""
        if self._going_away:
            reason = "server_shutdown"  # not suspended: nobody will resume it here
        self._closing = True
        p, self.participant = self.participant, None
        if p is not None:
            room = self.sfu.room(p.room_name) if p.room_name else None
            grace = self.config.resume_grace
            if (
                reason == "disconnected"  # dropped without leaving: its client may come back
                and grace > 0
                and not self._silent
                and room is not None
                and room.participants.get(p.sid) is p
            ):
                room.suspend(p, grace)  # signaling/resume.py
                resume.registry(self.sfu).let_go(p.sid)
            else:
                if room is not None:
                    await room.remove(p, "disconnected" if reason == "rate_limited" else reason)
                await p.close()  # in no room (being moved): close it all the same
            del p  # hold nothing of the participant while the socket closes
        if self._writer is not None and not self._writer.done():
            self._outbox.put_nowait(_DONE)  # flush what is queued, then close
            try:
                await asyncio.wait_for(self._writer, 2)
            except (TimeoutError, asyncio.CancelledError):
                self._writer.cancel()
        if not self.ws.closed:
            await self.ws.close()

    def release(self, p: Participant) -> None:
        """Another connection resumed ``p`` (signaling/resume.py): let go of it without
        removing it, and close this socket (4004)."""
        if self.participant is p:
            self.participant = None
        if not self._closing:
            self._closing = True
            self._outbox.put_nowait((4004, b"resumed elsewhere"))

    def _decode(self, text: str) -> tuple[dict | None, ProtocolError | None]:
        """The message in a text frame, or why it is not one."""
        try:
            if len(text) > self.config.max_message_bytes:
                raise ProtocolError(
                    "bad_request", f"message larger than {self.config.max_message_bytes} bytes"
                )
            return decode(text), None
        except ProtocolError as exc:
            return None, exc

    async def handle_text(self, text: str) -> str | None:
        """Handle one text frame; returns the message type handled."""
        msg, failure = self._decode(text)
        if failure is not None:
            self.send(error(failure.code, failure.message))
            return None
        assert msg is not None
        return await self.handle_message(msg)

    async def handle_message(self, msg: dict) -> str | None:
        """Handle one decoded message; returns its type if it was handled."""
        msg_id = msg.get("id")
        try:
            kind = msg["type"]
            request = parse_request(msg)
            if kind not in ("join", "ping", "leave") and self.participant is None:
                raise ProtocolError("not_joined", "send 'join' first")
            reply = await HANDLERS[kind](self, request)
            if reply is not None:
                out = reply.to_wire()
                if msg_id is not None:
                    out["id"] = msg_id
                self.send(out)
            return kind
        except ProtocolError as exc:
            self.send(error(exc.code, exc.message, msg_id))
            if isinstance(exc, _RoomFullClose):  # the error first, then the close
                self._outbox.put_nowait((4001, b"room full"))
                self._closing = True
        except PermissionDenied as exc:
            self.send(error("permission_denied", str(exc), msg_id))
        except TransportError as exc:
            logger.info("session %s: %r", self._who(), str(exc)[:300])
            self.send(error("bad_sdp", str(exc), msg_id))
        except Exception:
            logger.exception("session %s: handler failed", self._who())
            self.send(error("internal", "the server failed to handle this message", msg_id))
        return None

    # -- handlers --------------------------------------------------------------------------
    async def on_join(self, req: proto.Join) -> proto.Reply | None:
        if self.participant is not None:
            raise ProtocolError("bad_request", "already joined")
        ident = self.identity
        grant = ident.grant
        if req.room and req.room != grant.room:
            raise PermissionDenied(f"the token does not grant room {req.room!r}")
        # the signed token says who this is: a name or metadata sent with join counts only
        # when the grant allows it (canUpdateOwnMetadata), or eve could join as "Alice (host)"
        if grant.can_update_own_metadata:
            name = req.name or ident.name or ident.identity
            metadata = req.metadata or ident.metadata
        else:
            name = ident.name or ident.identity
            metadata = ident.metadata
        room = self.sfu.room(grant.room)
        if room is None:
            if not (self.config.auto_create_rooms or grant.room_create):
                raise ProtocolError("not_found", f"room {grant.room!r} does not exist")
            if self.config.max_rooms and len(self.sfu.rooms) >= self.config.max_rooms:
                raise ProtocolError("room_full", "the server has reached its room limit")
            room = self.sfu.get_or_create_room(grant.room)
        for guard in JOIN_GUARDS:  # a feature's rule (a breakout room is entered by a move)
            guard(self, room)
        perms = Permissions(
            can_publish=grant.can_publish,
            can_subscribe=grant.can_subscribe,
            can_publish_data=grant.can_publish_data,
            hidden=grant.hidden,
            can_publish_sources=grant.can_publish_sources,
        )
        resumes = resume.registry(self.sfu) if self.config.resume_grace > 0 else None
        if req.resume and resumes is not None:
            taken = await resume.take_over(self, room, req.resume, perms, keep=req.keep)
            if taken is not None:  # the same participant, on this connection from now on
                back, kept = taken
                self.participant = back
                if kept and back.subscriber is not None:  # an offer sent while it was away
                    asyncio.get_running_loop().call_soon(back.subscriber.repeat_offer)
                here = self.sfu.room(back.room_name or "") or room  # moved: a breakout room
                return proto.joined(
                    here.info(),
                    back.info(),
                    back.permissions,
                    [o.info() for o in here.visible(back)],
                    resume=resumes.issue(self, back, room.name),
                    resumed=True,
                    ice_servers=turn.ice_servers_of(self.config, back.identity),
                    kept=kept,
                )
        try:
            p = await room.join(
                ident.identity, name, metadata, perms, emit=self.emit, bypass_lock=grant.is_host
            )
        except RoomFull as exc:
            raise _RoomFullClose("room_full", str(exc)) from None
        except RoomClosed:
            raise ProtocolError("room_full", "the room is closing; try again") from None
        except RoomLocked:
            msg = "the meeting is locked: a host may unlock it"
            raise ProtocolError("room_locked", msg) from None
        self.participant = p
        return proto.joined(
            room.info(),
            p.info(),
            perms,
            [o.info() for o in room.visible(p)],
            resume=resumes.issue(self, p, room.name) if resumes is not None else None,
            ice_servers=turn.ice_servers_of(self.config, p.identity),
        )

    async def on_add_track(self, req: proto.AddTrack) -> proto.Reply:
        p = self._joined()
        try:
            t = p.add_track(
                req.cid, req.kind, req.source, req.name, req.width, req.height, req.muted
            )
        except ValueError as exc:
            raise ProtocolError("bad_request", str(exc)) from None
        return proto.track_added(
            req.cid, t.sid, t.kind, t.source, t.name, t.width, t.height, t.muted
        )

    async def on_offer(self, req: proto.PublisherOffer) -> proto.Reply:
        p = self._joined()
        return proto.publisher_answer(await p.publish_offer(req.sdp))

    async def on_answer(self, req: proto.SubscriberAnswer) -> None:
        p = self._joined()
        if p.subscriber is None:
            raise PermissionDenied("not allowed to subscribe")
        if "m=" not in req.sdp:
            raise TransportError("answer SDP has no media section")
        p.subscriber.on_answer(req.offer_id, req.sdp)
        return None

    async def on_trickle(self, req: proto.Trickle) -> None:
        p = self._joined()
        try:
            await p.add_ice_candidate(req.target, req.candidate)
        except ValueError as exc:
            raise ProtocolError("bad_request", str(exc)) from None
        return None

    async def on_mute(self, req: proto.Mute) -> proto.Reply:
        p = self._joined()
        try:
            p.set_muted(req.track, req.muted)
        except KeyError:
            raise ProtocolError("not_found", f"no track {req.track!r} of yours") from None
        return proto.muted(req.track, req.muted)

    async def on_unpublish(self, req: proto.Unpublish) -> proto.Reply:
        p = self._joined()
        try:
            p.unpublish(req.track)
        except KeyError:
            raise ProtocolError("not_found", f"no track {req.track!r} of yours") from None
        return proto.unpublished(req.track)

    async def on_data(self, req: proto.Data) -> proto.Reply:
        p = self._joined()
        if not p.permissions.can_publish_data:
            raise PermissionDenied("not allowed to send data")
        size = len(json.dumps(req.payload))
        if size > self.config.max_data_bytes:
            raise ProtocolError(
                "bad_request", f"payload larger than {self.config.max_data_bytes} bytes"
            )
        self._room().send_data(p, req.topic, req.payload, list(req.to) if req.to else None)
        return proto.data_sent()

    async def on_subscription(self, req: proto.Subscription) -> proto.Reply:
        p = self._joined()
        try:
            self._room().set_subscribed(p, req.track, req.subscribed)
        except KeyError:
            raise ProtocolError("not_found", f"no track {req.track!r} to receive") from None
        return proto.subscription_updated(req.track, req.subscribed)

    async def on_track_settings(self, req: proto.TrackSettings) -> proto.Reply:
        p = self._joined()
        try:
            p.set_track_settings(req.track, req.visible, req.height, req.quality)
        except KeyError:
            raise ProtocolError("not_found", f"you do not receive track {req.track!r}") from None
        return proto.track_settings_updated(req.track)

    async def on_negotiation_failed(self, req: proto.NegotiationFailedReport) -> proto.Reply:
        """The client could not apply a negotiation: log it, count it, and for the subscriber
        connection start a fresh one (the client has discarded its own)."""
        self._joined()
        self.counters.negotiation_failures[req.target] += 1
        now = time.monotonic()
        self._reports = [t for t in self._reports if now - t < 60.0]
        if len(self._reports) < REPORTS_LOGGED:  # beyond, counted only: no log flood
            self._reports.append(now)
            # repr: the client's text cannot forge log lines (newlines, control characters)
            logger.warning(
                "session %s: the client could not apply the %s negotiation (offer %r): %r",
                self._who(),
                req.target,
                str(req.offer)[:64] if req.offer is not None else None,
                req.message[:500],
            )
        if req.target == "publisher":
            return proto.negotiation_failed_noted(req.target)
        try:
            await self._room().restart_subscriber(self._joined())
        except RestartRefused as exc:
            raise ProtocolError("rate_limited", str(exc)) from None
        self.counters.subscriber_restarts += 1
        return proto.subscriber_restarted()

    async def on_ice_restart(self, req: proto.IceRestart) -> proto.Reply:
        """The client's network changed: a subscriber offer with new ICE credentials follows
        (at most MAX_ICE_RESTARTS a minute: each one is a negotiation)."""
        p = self._joined()
        now = time.monotonic()
        self._ice_restarts = [t for t in self._ice_restarts if now - t < 60.0]
        if len(self._ice_restarts) >= MAX_ICE_RESTARTS:
            raise ProtocolError("rate_limited", f"at most {MAX_ICE_RESTARTS} ICE restarts a minute")
        self._ice_restarts.append(now)
        try:
            p.restart_ice()
        except TransportError as exc:
            raise ProtocolError("bad_request", str(exc)) from None
        return proto.ice_restarting(req.target)

    async def on_ping(self, req: proto.Ping) -> proto.Reply:
        return proto.pong(req.ts if req.ts is not None else time.time() * 1000)

    async def on_leave(self, req: proto.LeaveRequest) -> None:
        return None

    def _joined(self) -> Participant:
        if self.participant is None:
            raise ProtocolError("not_joined", "send 'join' first")
        return self.participant

    def _room(self) -> Room:
        p = self._joined()
        room = self.sfu.room(p.room_name) if p.room_name else None
        if room is None or room.participants.get(p.sid) is not p:
            raise ProtocolError("not_joined", "you are in no room")
        return room


HANDLERS: dict[str, Any] = {
    "join": Session.on_join,
    "add_track": Session.on_add_track,
    "offer": Session.on_offer,
    "answer": Session.on_answer,
    "trickle": Session.on_trickle,
    "mute": Session.on_mute,
    "unpublish": Session.on_unpublish,
    "data": Session.on_data,
    "subscription": Session.on_subscription,
    "track_settings": Session.on_track_settings,
    "negotiation_failed": Session.on_negotiation_failed,
    "ice_restart": Session.on_ice_restart,
    "ping": Session.on_ping,
    "leave": Session.on_leave,
}


#: checks a feature makes before a join enters ``room`` (raise ProtocolError to refuse)
JOIN_GUARDS: list[Callable[[Session, Room], None]] = []


def register_handler(kind: str, handler: Any, request: type | None = None) -> None:
    """Add a message type a feature module handles (``async handler(session, request)``,
    returning a protocol.Reply or None); ``request`` parses and validates it."""
    if kind in HANDLERS and HANDLERS[kind] is not handler:
        raise ValueError(f"message type {kind!r} is already handled")
    HANDLERS[kind] = handler
    if request is not None:
        proto.register_request(kind, request)
