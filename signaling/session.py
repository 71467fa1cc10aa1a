"""Session: one WebSocket, one participant.

Reads JSON messages, validates them, drives the SFU through its public API, and writes the
SFU's events back. Every bad input gets an error message; the session and the room go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
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
    TransportError,
)

from .auth import Identity
from .config import Config
from .limits import TokenBucket
from .protocol import ProtocolError, decode, error, field, short_str

logger = logging.getLogger(__name__)


@dataclass
class SessionCounters:
    """What sessions count for /metrics beyond the SFU's own figures."""

    #: negotiations the client could not apply, by connection ("publisher"/"subscriber")
    negotiation_failures: dict[str, int] = dc_field(
        default_factory=lambda: {"publisher": 0, "subscriber": 0}
    )
    subscriber_restarts: int = 0  # fresh subscriber connections made after such a failure


REPORTS_LOGGED = 5  # negotiation failures a session may log per minute
OUTBOX_LIMIT = 1024  # events queued for a client that does not read: beyond, it is dropped
_TOO_SLOW = (4002, b"too slow")  # outbox sentinels (tuples): close with this code
_DONE = (1000, b"")


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
        self.messages = 0
        rate = config.message_rate
        self._bucket = TokenBucket(rate, max(2 * rate, 10))
        self._last_limit_error = 0.0
        self._reports: list[float] = []  # negotiation failures logged in the last minute

    # -- output ----------------------------------------------------------------------------
    def send(self, event: dict) -> None:
        """Queue an event for the client (called synchronously by the SFU)."""
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
                    break
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and not self._within_rate():
                    if self._closing:
                        reason = "rate_limited"
                        break
                    continue
                if msg.type == WSMsgType.TEXT:
                    if await self.handle_text(msg.data) == "leave":
                        reason = "left"
                        break
                elif msg.type == WSMsgType.BINARY:
                    self.send(error("bad_json", "binary frames are not accepted"))
                elif msg.type == WSMsgType.ERROR:
                    logger.info("session %s: socket error: %s", self._who(), self.ws.exception())
                    break
                else:  # CLOSE, CLOSING, CLOSED
                    break
        finally:
            await self.close(reason)

    def _within_rate(self) -> bool:
        """Spend one message of the rate; over it, one error a second, then disconnection."""
        left = self._bucket.take()
        if left >= 0:
            return True
        if left <= -self._bucket.burst:
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

    async def close(self, reason: str = "disconnected") -> None:
        """Remove the participant and stop writing."""
        self._closing = True
        p, self.participant = self.participant, None
        if p is not None:
            room = p.room
            await room.remove(p, "disconnected" if reason == "rate_limited" else reason)
            del p  # hold nothing of the participant while the socket closes
        if self._writer is not None and not self._writer.done():
            self._outbox.put_nowait(_DONE)  # flush what is queued, then close
            try:
                await asyncio.wait_for(self._writer, 2)
            except (TimeoutError, asyncio.CancelledError):
                self._writer.cancel()
        if not self.ws.closed:
            await self.ws.close()

    async def handle_text(self, text: str) -> str | None:
        """Handle one text frame; returns the message type handled."""
        self.messages += 1
        msg_id = None
        try:
            if len(text) > self.config.max_message_bytes:
                raise ProtocolError(
                    "bad_request", f"message larger than {self.config.max_message_bytes} bytes"
                )
            msg = decode(text)
            msg_id = msg.get("id")
            kind = msg["type"]
            handler = HANDLERS.get(kind)
            if handler is None:
                raise ProtocolError("unknown_type", f"unknown message type '{kind[:40]}'")
            if kind not in ("join", "ping", "leave") and self.participant is None:
                raise ProtocolError("not_joined", "send 'join' first")
            reply = await handler(self, msg)
            if reply is not None:
                if msg_id is not None:
                    reply["id"] = msg_id
                self.send(reply)
            return kind
        except ProtocolError as exc:
            self.send(error(exc.code, exc.message, msg_id))
        except PermissionDenied as exc:
            self.send(error("permission_denied", str(exc), msg_id))
        except TransportError as exc:
            logger.info("session %s: %s", self._who(), exc)
            self.send(error("bad_sdp", str(exc), msg_id))
        except Exception:
            logger.exception("session %s: handler failed", self._who())
            self.send(error("internal", "the server failed to handle this message", msg_id))
        return None

    # -- handlers --------------------------------------------------------------------------
    async def on_join(self, msg: dict) -> dict | None:
        if self.participant is not None:
            raise ProtocolError("bad_request", "already joined")
        ident = self.identity
        grant = ident.grant
        room_name = short_str(msg, "room", 128)
        if room_name and room_name != grant.room:
            raise PermissionDenied(f"the token does not grant room '{room_name}'")
        name = short_str(msg, "name", 128) or ident.name or ident.identity
        metadata = short_str(msg, "metadata", 4096) or ident.metadata
        room = self.sfu.room(grant.room)
        if room is None:
            if not (self.config.auto_create_rooms or grant.room_create):
                raise ProtocolError("not_found", f"room '{grant.room}' does not exist")
            if self.config.max_rooms and len(self.sfu.rooms) >= self.config.max_rooms:
                raise ProtocolError("room_full", "the server has reached its room limit")
            room = self.sfu.get_or_create_room(grant.room)
        perms = Permissions(
            can_publish=grant.can_publish,
            can_subscribe=grant.can_subscribe,
            can_publish_data=grant.can_publish_data,
            hidden=grant.hidden,
            can_publish_sources=grant.can_publish_sources,
        )
        try:
            p = await room.join(ident.identity, name, metadata, perms, emit=self.send)
        except RoomFull as exc:
            self.send(error("room_full", str(exc), msg.get("id")))
            self._outbox.put_nowait((4001, b"room full"))
            self._closing = True
            return None
        except RoomClosed:
            raise ProtocolError("room_full", "the room is closing; try again") from None
        self.participant = p
        return {
            "type": "joined",
            "room": room.info(),
            "participant": {**p.info(), "permissions": perms.to_dict()},
            "participants": [o.info() for o in room.visible(exclude=p)],
            "iceServers": [],
        }

    async def on_add_track(self, msg: dict) -> dict:
        p = self._joined()
        cid = short_str(msg, "cid", 128, required=True)
        kind = short_str(msg, "kind", 16, required=True)
        try:
            req = p.add_track(
                cid,
                kind,
                short_str(msg, "source", 32),
                short_str(msg, "name", 128),
                _dimension(msg, "width"),
                _dimension(msg, "height"),
            )
        except ValueError as exc:
            raise ProtocolError("bad_request", str(exc)) from None
        track = {
            "sid": req.sid,
            "kind": req.kind,
            "source": req.source,
            "name": req.name,
            "muted": False,
            "width": req.width,
            "height": req.height,
        }
        return {"type": "track_added", "cid": cid, "track": track}

    async def on_offer(self, msg: dict) -> dict:
        p = self._joined()
        target = msg.get("target", "publisher")
        if target != "publisher":
            raise ProtocolError("bad_request", "clients only offer on the publisher connection")
        sdp = field(msg, "sdp", str)
        answer = await p.publish_offer(sdp)
        return {"type": "answer", "target": "publisher", "sdp": answer}

    async def on_answer(self, msg: dict) -> None:
        p = self._joined()
        if msg.get("target", "subscriber") != "subscriber":
            raise ProtocolError("bad_request", "clients only answer on the subscriber connection")
        sdp = field(msg, "sdp", str)
        if p.subscriber is None:
            raise PermissionDenied("not allowed to subscribe")
        if "m=" not in sdp:
            raise TransportError("answer SDP has no media section")
        p.subscriber.on_answer(msg.get("id"), sdp)
        return None

    async def on_trickle(self, msg: dict) -> None:
        p = self._joined()
        target = short_str(msg, "target", 16, required=True)
        candidate = msg.get("candidate")
        if candidate is not None and not isinstance(candidate, dict):
            raise ProtocolError("bad_request", "field 'candidate' must be an object or null")
        try:
            await p.add_ice_candidate(target, candidate)
        except ValueError as exc:
            raise ProtocolError("bad_request", str(exc)) from None
        return None

    async def on_mute(self, msg: dict) -> dict:
        p = self._joined()
        sid = short_str(msg, "track", 64, required=True)
        muted = field(msg, "muted", bool)
        try:
            p.set_muted(sid, muted)
        except KeyError:
            raise ProtocolError("not_found", f"no track {sid} of yours") from None
        return {"type": "muted", "track": sid, "muted": muted}

    async def on_unpublish(self, msg: dict) -> dict:
        p = self._joined()
        sid = short_str(msg, "track", 64, required=True)
        try:
            p.unpublish(sid)
        except KeyError:
            raise ProtocolError("not_found", f"no track {sid} of yours") from None
        return {"type": "unpublished", "track": sid}

    async def on_data(self, msg: dict) -> dict:
        p = self._joined()
        if not p.permissions.can_publish_data:
            raise PermissionDenied("not allowed to send data")
        topic = short_str(msg, "topic", 64)
        if "payload" not in msg:
            raise ProtocolError("bad_request", "field 'payload' is required")
        payload = msg["payload"]
        size = len(json.dumps(payload))
        if size > self.config.max_data_bytes:
            raise ProtocolError(
                "bad_request", f"payload larger than {self.config.max_data_bytes} bytes"
            )
        to = msg.get("to")
        if to is not None and (
            not isinstance(to, list) or not all(isinstance(x, str) for x in to) or len(to) > 256
        ):
            raise ProtocolError("bad_request", "field 'to' must be a list of identities")
        p.room.send_data(p, topic, payload, to)
        return {"type": "data_sent"}

    async def on_subscription(self, msg: dict) -> dict:
        p = self._joined()
        sid = short_str(msg, "track", 64, required=True)
        subscribed = field(msg, "subscribed", bool)
        try:
            p.set_subscribed(sid, subscribed)
        except KeyError:
            raise ProtocolError("not_found", f"no track {sid} to receive") from None
        return {"type": "subscription_updated", "track": sid, "subscribed": subscribed}

    async def on_track_settings(self, msg: dict) -> dict:
        p = self._joined()
        sid = short_str(msg, "track", 64, required=True)
        visible = field(msg, "visible", bool, required=False)
        height = _dimension(msg, "height") if "height" in msg else None
        quality = short_str(msg, "quality", 8) or None
        if quality is not None and quality not in ("low", "medium", "high"):
            raise ProtocolError("bad_request", "quality must be low, medium or high")
        try:
            p.set_track_settings(sid, visible, height, quality)
        except KeyError:
            raise ProtocolError("not_found", f"you do not receive track {sid}") from None
        return {"type": "track_settings_updated", "track": sid}

    async def on_negotiation_failed(self, msg: dict) -> dict:
        """The client could not apply a negotiation: log it, count it, and for the subscriber
        connection start a fresh one (the client has discarded its own)."""
        p = self._joined()
        target = short_str(msg, "target", 16, required=True)
        if target not in ("publisher", "subscriber"):
            raise ProtocolError("bad_request", "target must be 'publisher' or 'subscriber'")
        offer = msg.get("offer")
        if offer is not None and not isinstance(offer, str | int):
            raise ProtocolError("bad_request", "field 'offer' must be a string or an integer")
        reason = field(msg, "message", str, required=False) or ""
        self.counters.negotiation_failures[target] += 1
        now = time.monotonic()
        self._reports = [t for t in self._reports if now - t < 60.0]
        if len(self._reports) < REPORTS_LOGGED:  # beyond, counted only: no log flood
            self._reports.append(now)
            # repr: the client's text cannot forge log lines (newlines, control characters)
            logger.warning(
                "session %s: the client could not apply the %s negotiation (offer %r): %r",
                self._who(),
                target,
                str(offer)[:64] if offer is not None else None,
                reason[:500],
            )
        if target == "publisher":
            return {"type": "negotiation_failed_noted", "target": target}
        try:
            await p.restart_subscriber()
        except RestartRefused as exc:
            raise ProtocolError("rate_limited", str(exc)) from None
        self.counters.subscriber_restarts += 1
        return {"type": "subscriber_restarted"}

    async def on_ping(self, msg: dict) -> dict:
        ts = msg.get("ts")
        return {"type": "pong", "ts": ts if isinstance(ts, int | float) else time.time() * 1000}

    async def on_leave(self, msg: dict) -> None:
        return None

    def _joined(self) -> Participant:
        if self.participant is None:
            raise ProtocolError("not_joined", "send 'join' first")
        return self.participant


def _dimension(msg: dict, name: str) -> int:
    value = field(msg, name, int, required=False)
    if value is None:
        return 0
    if not 0 <= value <= 16384:
        raise ProtocolError("bad_request", f"field '{name}' out of range")
    return value


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
    "ping": Session.on_ping,
    "leave": Session.on_leave,
}
