"""Breakout rooms (issue 16): a host splits a meeting into sub-rooms and brings everyone back,
nobody reconnecting (docs/protocol.md, "Breakout rooms").

A breakout room is a Room of the SFU of its own, named ``<meeting>~breakout~<random>`` and
entered only by being moved there (a join naming it is refused: ``session.JOIN_GUARDS``).
Moving someone is ``Room.detach`` then ``Room.attach``: their peer connections stay as they
are; the subscriber connection is renegotiated (m-sections only, same ICE and DTLS) to carry
the new room's tracks instead of the old one's, and the tracks they publish go with them.
Chat, raised hands, reactions, recording and transcription belong to a Room, so they follow
the person. The meeting's room and its breakout rooms stay open while the breakout runs
(``Room.keep_open``), even when empty.

Everyone in the meeting (the main room and every breakout room) receives ``breakout`` with
the rooms, who is where, where they are, the room a host assigned them and the time left;
at the end (a host's ``breakout_end``, or the timer) everyone is brought back to the main
room and the breakout rooms close; they close too when everyone has left the meeting. A host is
a participant whose token grants ``roomHost`` (or ``roomAdmin``); others may only go back and
forth between the main room (when the host allows it) and the breakout room they were assigned.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from visio_sfu import SFU, Participant, Room
from visio_sfu.events import (
    Event,
    Leave,
    LifecycleEvent,
    ParticipantEntered,
    ParticipantExited,
    ParticipantRef,
    RoomFinished,
)

from .meeting import NoFields  # breakout_end, breakout_state: no fields either
from .protocol import ProtocolError, Reply, register_event, short_str
from .session import JOIN_GUARDS, Session, register_handler

logger = logging.getLogger(__name__)

MAX_ROOMS = 20  # breakout rooms in one meeting
MAX_DURATION = 24 * 3600  # seconds a timer may run
MAX_TEXT = 1000  # characters of a broadcast message
MAIN = ""  # the main room's id in messages
SEPARATOR = "~breakout~"  # in the SFU's name of a breakout room


# -- events ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BreakoutUpdate(Event):
    """The breakout rooms as one participant sees them (its room, its assignment)."""

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BreakoutMessage(Event):
    """A host's message to every room of the meeting."""

    sender: ParticipantRef
    text: str
    timestamp_ms: int


def update_wire(event: BreakoutUpdate) -> dict:
    """The wire form of BreakoutUpdate."""
    return {"type": "breakout", **event.fields}


def message_wire(event: BreakoutMessage) -> dict:
    """The wire form of BreakoutMessage."""
    s = event.sender
    return {
        "type": "breakout_message",
        "from": {"sid": s.sid, "identity": s.identity, "name": s.name},
        "text": event.text,
        "ts": event.timestamp_ms,
    }


# -- state -------------------------------------------------------------------------------------
@dataclass
class SubRoom:
    """One breakout room: its id in messages ("1", "2"...), its name, its SFU room."""

    id: str
    name: str
    room: Room


def _refs(room: Room) -> list[dict]:
    return [{"sid": p.sid, "identity": p.identity, "name": p.name} for p in room.visible()]


@dataclass
class Breakout:
    """The breakout rooms of one meeting while they run."""

    service: Breakouts
    main: Room
    rooms: dict[str, SubRoom]
    allow_return: bool
    assigned: dict[str, str] = field(default_factory=dict)  # identity -> breakout room id
    ends_at: float | None = None  # time.time() when the timer brings everyone back
    timer: asyncio.TimerHandle | None = None
    ended: bool = False
    _update: asyncio.Handle | None = None

    def all_rooms(self) -> list[Room]:
        return [self.main, *(s.room for s in self.rooms.values())]

    def where(self, p: Participant) -> str:
        """The id of the room ``p`` is in (MAIN for the main room)."""
        for sub in self.rooms.values():
            if sub.room.participants.get(p.sid) is p:
                return sub.id
        return MAIN

    def room_of(self, room_id: str) -> Room:
        if room_id == MAIN:
            return self.main
        sub = self.rooms.get(room_id)
        if sub is None:
            raise ProtocolError("not_found", f"no breakout room {room_id[:20]!r}")
        return sub.room

    def find(self, sid: str) -> Participant:
        """A visible participant of the meeting, in whichever room."""
        for room in self.all_rooms():
            p = room.participants.get(sid)
            if p is not None and not p.permissions.hidden:
                return p
        raise ProtocolError("not_found", "no such participant in this meeting")

    def state(self, p: Participant | None, reason: str | None = None) -> dict[str, Any]:
        """What ``p`` is told: the rooms, who is where, where it is, the time left."""
        remaining = None
        if self.ends_at is not None:
            remaining = round(max(0.0, self.ends_at - time.time()), 1)
        return {
            "active": not self.ended,
            "main": {"id": MAIN, "name": self.main.name, "participants": _refs(self.main)},
            "rooms": [
                {"id": s.id, "name": s.name, "participants": _refs(s.room)}
                for s in self.rooms.values()
            ],
            "room": self.where(p) if p is not None and not self.ended else MAIN,
            "assigned": self.assigned.get(p.identity, MAIN) if p is not None else MAIN,
            "ends_at": int(self.ends_at * 1000) if self.ends_at is not None else None,
            "remaining": remaining,
            "allow_return": self.allow_return,
            "reason": reason,
        }

    def tell_everyone(self, reason: str | None = None) -> None:
        """Send everyone in the meeting its ``breakout`` state now."""
        self._update = None
        for room in self.all_rooms():
            for p in list(room.participants.values()):
                p.emit(BreakoutUpdate(self.state(p, reason)))

    def changed(self) -> None:
        """Someone came, left or was moved: everyone is told once, after this turn of the loop
        (a host moving ten people sends one update, after their ``moved``)."""
        if self._update is None and not self.ended:
            self._update = asyncio.get_running_loop().call_soon(self.tell_everyone)

    # -- moving ---------------------------------------------------------------------------
    def move(self, p: Participant, to: Room) -> None:
        """Move ``p`` (with its connections and tracks) to ``to``."""
        here = self.service.sfu.room(p.room_name or "")
        if here is None or here.participants.get(p.sid) is not p:
            raise ProtocolError("not_found", "this participant is in no room")
        if here is to:
            return
        if to.max_participants and len(to.participants) >= to.max_participants:
            raise ProtocolError("room_full", f"room {to.name!r} is full")
        moving = self.service.moving
        moving.add(p.sid)
        try:
            here.detach(p, "moved")
            try:
                to.attach(p)
            except Exception:
                here.attach(p)  # where it was: it must stay in a room
                raise
        finally:
            moving.discard(p.sid)
        self.changed()

    def set_timer(self, duration: float) -> None:
        """Bring everyone back in ``duration`` seconds (0: no timer)."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None
        self.ends_at = None
        if duration > 0:
            self.ends_at = time.time() + duration
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(duration, self.end, "timer")

    def end(self, reason: str = "ended") -> None:
        """Everyone back to the main room; the breakout rooms close."""
        if self.ended:
            return
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
        if self._update is not None:
            self._update.cancel()
        self.service.forget(self)
        main_open = not self.main.closed
        for sub in self.rooms.values():
            for p in list(sub.room.participants.values()):
                if main_open:
                    try:
                        self.move(p, self.main)
                        continue
                    except Exception:
                        logger.exception("breakout: %s could not be brought back", p.sid)
            sub.room.keep_open(False)
            self.service.spawn(sub.room.close("room_closed" if not main_open else "breakout_ended"))
        self.main.keep_open(False)
        for p in list(self.main.participants.values()):
            p.emit(BreakoutUpdate(self.state(p, reason)))
        logger.info("room %s: breakout rooms ended (%s)", self.main.name, reason)


class Breakouts:
    """The breakout rooms of one SFU's meetings."""

    def __init__(self, sfu: SFU) -> None:
        self.sfu = sfu
        self.by_room: dict[str, Breakout] = {}  # main or breakout room name -> its breakout
        self.moving: set[str] = set()  # sids being moved now (their Entered is no join)
        self._tasks: set[asyncio.Task] = set()
        sfu.listeners.append(self.on_event)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def of(self, room: Room) -> Breakout | None:
        """The running breakout ``room`` belongs to (as main room or breakout room)."""
        found = self.by_room.get(room.name)
        return found if found is not None and room in found.all_rooms() else None

    def start(
        self,
        main: Room,
        names: list[str],
        assignment: list[list[Participant]],
        duration: float,
        allow_return: bool,
    ) -> Breakout:
        """Open breakout rooms named ``names`` and move ``assignment[i]`` into room i."""
        rooms: dict[str, SubRoom] = {}
        for i, name in enumerate(names, 1):
            sfu_name = f"{main.name}{SEPARATOR}{secrets.token_urlsafe(9)}"
            room = self.sfu.get_or_create_room(sfu_name, max_participants=main.max_participants)
            room.keep_open(True)
            rooms[str(i)] = SubRoom(str(i), name, room)
        main.keep_open(True)
        breakout = Breakout(self, main, rooms, allow_return)
        self.by_room[main.name] = breakout
        for sub in rooms.values():
            self.by_room[sub.room.name] = breakout
        breakout.set_timer(duration)
        for sub, people in zip(rooms.values(), assignment, strict=False):
            for p in people:
                breakout.assigned[p.identity] = sub.id
                breakout.move(p, sub.room)
        breakout.changed()
        logger.info("room %s: %d breakout rooms opened", main.name, len(rooms))
        return breakout

    def forget(self, breakout: Breakout) -> None:
        for name, b in list(self.by_room.items()):
            if b is breakout:
                del self.by_room[name]

    def on_event(self, event: LifecycleEvent) -> None:
        """SFU listener: the meeting's comings and goings, a fresh join of someone assigned to
        a breakout room (taken there), a room that closes."""
        breakout = self.by_room.get(event.room.name)  # type: ignore[attr-defined]
        if breakout is None:
            return
        if isinstance(event, RoomFinished):
            if breakout.main.sid == event.room.sid:
                breakout.end("room_closed")
            else:  # a breakout room closed (an administrator deleted it)
                for key, sub in list(breakout.rooms.items()):
                    if sub.room.sid == event.room.sid:
                        del breakout.rooms[key]
                        self.by_room.pop(sub.room.name, None)
                breakout.changed()
            return
        room = self.sfu.room(event.room.name)  # type: ignore[attr-defined]
        if isinstance(event, ParticipantEntered | ParticipantExited):
            breakout.changed()
        if (
            isinstance(event, ParticipantExited)
            and event.reason != "moved"
            and not any(r.participants for r in breakout.all_rooms())
        ):
            breakout.end("empty")  # everyone left: nothing must stay open for nobody
            return
        if (
            isinstance(event, ParticipantEntered)
            and room is breakout.main
            and event.participant.sid not in self.moving
        ):
            # a join (not a move): someone assigned to a breakout room goes there, after its
            # joined answer, which the session sends once room.join returns
            asyncio.get_running_loop().call_soon(self._arrived, breakout, event.participant.sid)

    def _arrived(self, breakout: Breakout, sid: str) -> None:
        p = breakout.main.participants.get(sid)
        if p is None or breakout.ended:
            return
        for sub in breakout.rooms.values():  # the same person in another window: replaced
            old = sub.room.by_identity(p.identity)
            if old is not None and old is not p:
                old.emit(Leave("replaced"))
                self.spawn(sub.room.remove(old, "replaced"))
        target = breakout.rooms.get(breakout.assigned.get(p.identity, MAIN))
        if target is not None:
            try:
                breakout.move(p, target.room)
            except ProtocolError as exc:
                logger.info("breakout: %s stays in the main room: %s", sid, exc.message)


_SERVICES: weakref.WeakKeyDictionary[SFU, Breakouts] = weakref.WeakKeyDictionary()


def service(sfu: SFU) -> Breakouts:
    """The breakout rooms of ``sfu`` (made on first use)."""
    found = _SERVICES.get(sfu)
    if found is None:
        found = _SERVICES[sfu] = Breakouts(sfu)
    return found


def guard_join(session: Session, room: Room) -> None:
    """A join never enters a breakout room: a host moves people there."""
    breakout = service(session.sfu).of(room)
    if breakout is not None and breakout.main is not room:
        raise ProtocolError("not_found", "a breakout room is entered only when a host moves you")


# -- requests ----------------------------------------------------------------------------------
def _number(msg: dict, name: str, low: float, high: float, default: float) -> float:
    value = msg.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ProtocolError("bad_request", f"field '{name}' must be a number from {low} to {high}")
    return float(value)


def _bool(msg: dict, name: str, default: bool) -> bool:
    value = msg.get(name, default)
    if not isinstance(value, bool):
        raise ProtocolError("bad_request", f"field '{name}' must be true or false")
    return value


def _sids(value: object, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 1000:
        raise ProtocolError("bad_request", f"field '{name}' must be a list of participant sids")
    if not all(isinstance(x, str) and len(x) <= 64 for x in value):
        raise ProtocolError("bad_request", f"field '{name}' must be a list of participant sids")
    return tuple(value)


@dataclass(frozen=True)
class StartRequest:
    """breakout_start: ``count`` rooms, or ``rooms`` with names and (manual) participants;
    ``assign`` manual or random; ``duration`` seconds (0: no timer); ``allow_return``."""

    names: tuple[str, ...]
    manual: tuple[tuple[str, ...], ...]
    random: bool
    duration: float
    allow_return: bool

    @classmethod
    def parse(cls, msg: dict) -> StartRequest:
        rooms = msg.get("rooms")
        if rooms is not None:
            if not isinstance(rooms, list) or not 1 <= len(rooms) <= MAX_ROOMS:
                raise ProtocolError("bad_request", f"field 'rooms' must list 1 to {MAX_ROOMS}")
            names, manual = [], []
            for i, r in enumerate(rooms, 1):
                if not isinstance(r, dict):
                    raise ProtocolError("bad_request", "each room must be an object")
                names.append(short_str(r, "name", 64).strip() or f"Room {i}")
                manual.append(_sids(r.get("participants", []), "participants"))
        else:
            count = msg.get("count")
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_ROOMS:
                raise ProtocolError("bad_request", f"give 'rooms' or 'count' (1 to {MAX_ROOMS})")
            names, manual = [f"Room {i}" for i in range(1, count + 1)], [() for _ in range(count)]
        assign = short_str(msg, "assign", 16) or "manual"
        if assign not in ("manual", "random"):
            raise ProtocolError("bad_request", "assign must be 'manual' or 'random'")
        return cls(
            tuple(names),
            tuple(manual),
            assign == "random",
            _number(msg, "duration", 0, MAX_DURATION, 0),
            _bool(msg, "allow_return", True),
        )


@dataclass(frozen=True)
class MoveRequest:
    """breakout_move: ``participant`` (default: yourself) to the room ``room`` ("": main)."""

    participant: str
    room: str

    @classmethod
    def parse(cls, msg: dict) -> MoveRequest:
        room = msg.get("room")
        if not isinstance(room, str) or len(room) > 8:
            raise ProtocolError("bad_request", "field 'room' must be a room id ('' the main room)")
        return cls(short_str(msg, "participant", 64), room)


@dataclass(frozen=True)
class TimerRequest:
    """breakout_timer: everyone comes back in ``duration`` seconds (0: no timer)."""

    duration: float

    @classmethod
    def parse(cls, msg: dict) -> TimerRequest:
        if msg.get("duration") is None:
            raise ProtocolError("bad_request", "field 'duration' is required")
        return cls(_number(msg, "duration", 0, MAX_DURATION, 0))


@dataclass(frozen=True)
class BroadcastRequest:
    """breakout_broadcast: a text every room of the meeting receives."""

    text: str

    @classmethod
    def parse(cls, msg: dict) -> BroadcastRequest:
        text = short_str(msg, "text", MAX_TEXT, required=True).strip()
        if not text:
            raise ProtocolError("bad_request", "field 'text' is empty")
        return cls(text)


# -- handlers ----------------------------------------------------------------------------------
def _host(session: Session, what: str) -> None:
    if not session.identity.grant.is_host:
        raise ProtocolError("permission_denied", f"only a host may {what} (grant roomHost)")


def _running(session: Session) -> tuple[Breakout, Participant]:
    breakout = service(session.sfu).of(session._room())
    if breakout is None:
        raise ProtocolError("not_found", "no breakout rooms are open in this meeting")
    return breakout, session._joined()


async def on_start(session: Session, req: StartRequest) -> Reply:
    """breakout_start (host): open the rooms, move the people assigned to them."""
    _host(session, "open breakout rooms")
    main, me = session._room(), session._joined()
    svc = service(session.sfu)
    if svc.of(main) is not None:
        raise ProtocolError("already_running", "breakout rooms are already open")
    present = {p.sid: p for p in main.visible()}
    if req.random:
        people = [p for p in present.values() if p is not me]
        random.shuffle(people)
        assignment = [people[i :: len(req.names)] for i in range(len(req.names))]
    else:
        seen: set[str] = set()
        assignment = []
        for sids in req.manual:
            if any(s not in present or s in seen for s in sids):
                raise ProtocolError("not_found", "a participant listed is not in the main room")
            seen.update(sids)
            assignment.append([present[s] for s in sids])
    breakout = svc.start(main, list(req.names), assignment, req.duration, req.allow_return)
    return Reply("breakout_started", breakout.state(me))


async def on_move(session: Session, req: MoveRequest) -> Reply:
    """breakout_move: a host moves anyone anywhere (itself too: a visit); anyone else goes
    back to its assigned room, or to the main room when the host allows it."""
    breakout, me = _running(session)
    target = breakout.find(req.participant) if req.participant else me
    to = breakout.room_of(req.room)
    if not session.identity.grant.is_host:
        if target is not me:
            raise ProtocolError("permission_denied", "only a host may move others (roomHost)")
        allowed = req.room == breakout.assigned.get(me.identity, MAIN) or (
            req.room == MAIN and breakout.allow_return
        )
        if not allowed:
            raise ProtocolError("permission_denied", "you may not go to that room")
    elif target is not me:  # a host assigns someone (a host going somewhere only visits)
        if req.room == MAIN:
            breakout.assigned.pop(target.identity, None)
        else:
            breakout.assigned[target.identity] = req.room
    breakout.move(target, to)
    return Reply("breakout_moved", {"participant": target.sid, "room": req.room})


async def on_timer(session: Session, req: TimerRequest) -> Reply:
    """breakout_timer (host): set, change or clear the time everyone comes back."""
    _host(session, "set the breakout timer")
    breakout, me = _running(session)
    breakout.set_timer(req.duration)
    breakout.tell_everyone()
    return Reply("breakout_state", breakout.state(me))


async def on_broadcast(session: Session, req: BroadcastRequest) -> Reply:
    """breakout_broadcast (host): a message every room of the meeting receives."""
    _host(session, "send a message to every breakout room")
    breakout, me = _running(session)
    event = BreakoutMessage(me.ref(), req.text, int(time.time() * 1000))
    count = 0
    for room in breakout.all_rooms():
        for p in list(room.participants.values()):
            if not p.permissions.hidden:
                p.emit(event)
                count += 1
    return Reply("breakout_broadcast_sent", {"delivered": count})


async def on_end(session: Session, req: NoFields) -> Reply:
    """breakout_end (host): everyone back to the main room."""
    _host(session, "close the breakout rooms")
    breakout, _me = _running(session)
    breakout.end("ended")
    return Reply("breakout_ended", {})


async def on_state(session: Session, req: NoFields) -> Reply:
    """breakout_state: the breakout rooms now (``active`` false when none)."""
    p = session._joined()
    breakout = service(session.sfu).of(session._room())
    if breakout is None:
        return Reply("breakout_state", {"active": False, "host": session.identity.grant.is_host})
    return Reply("breakout_state", {**breakout.state(p), "host": session.identity.grant.is_host})


#: the message types this module adds: (type, handler, request class)
MESSAGES: list[tuple[str, Callable[..., Any], type]] = [
    ("breakout_start", on_start, StartRequest),
    ("breakout_move", on_move, MoveRequest),
    ("breakout_timer", on_timer, TimerRequest),
    ("breakout_broadcast", on_broadcast, BroadcastRequest),
    ("breakout_end", on_end, NoFields),
    ("breakout_state", on_state, NoFields),
]


def setup(app: web.Application) -> None:
    """Register the breakout messages, events and join guard (signaling/features.py)."""
    from .app import SFU_KEY  # here: app.py imports the features, which import this module

    for kind, handler, request in MESSAGES:
        register_handler(kind, handler, request)
    register_event(BreakoutUpdate, update_wire)
    register_event(BreakoutMessage, message_wire)
    if guard_join not in JOIN_GUARDS:
        JOIN_GUARDS.append(guard_join)
    service(app[SFU_KEY])
