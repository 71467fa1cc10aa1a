"""Meeting features (issue 15): raised hands, reactions and host controls.

Raised hands and reactions are the meeting's state, not the media's: they live here, per room,
and travel as this module's messages and events (docs/protocol.md, "Meeting"). Host controls
act through the SFU's public API: mute a microphone (Participant.set_muted, by the server: the
muted person is told), stop a camera or a screen share (Participant.unpublish, by the server:
its owner is told), remove someone (Room.remove, with a Leave), lock the room
(Room.set_locked). A host is a participant whose access token grants ``roomHost`` (or
``roomAdmin``, which allows more) for its room.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from visio_sfu import SFU, Participant, Room
from visio_sfu.events import Event, Leave, LifecycleEvent, ParticipantExited

from . import protocol as proto
from .limits import TokenBucket
from .protocol import ProtocolError, Reply, register_event, short_str
from .session import Session, register_handler

logger = logging.getLogger(__name__)

#: the reactions a participant may send (the web client shows them as emoji)
REACTIONS = ("thumbs_up", "clap", "heart", "laugh", "surprised", "party")
REACTION_RATE = 1.0  # reactions per second a participant may send, sustained ...
REACTION_BURST = 5  # ... after a burst of this many


# -- events ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RaisedHand:
    """A raised hand: whose, and since when (server time, ms since the epoch)."""

    participant_sid: str
    since_ms: int


@dataclass(frozen=True, slots=True)
class HandsChanged(Event):
    """The room's raised hands, in the order they were raised; ``participant`` raised or
    lowered theirs (``by``: the host who lowered it, else None)."""

    hands: tuple[RaisedHand, ...]
    participant_sid: str
    raised: bool
    by: str | None


@dataclass(frozen=True, slots=True)
class ReactionSent(Event):
    """Someone reacted (one of REACTIONS)."""

    participant_sid: str
    reaction: str
    timestamp_ms: int


def _hands(hands: tuple[RaisedHand, ...]) -> list[dict]:
    return [{"participant": h.participant_sid, "since": h.since_ms} for h in hands]


def hands_wire(event: HandsChanged) -> dict:
    """The wire form of HandsChanged."""
    return {
        "type": "hands",
        "hands": _hands(event.hands),
        "participant": event.participant_sid,
        "raised": event.raised,
        "by": event.by,
    }


def reaction_wire(event: ReactionSent) -> dict:
    """The wire form of ReactionSent."""
    return {
        "type": "reaction",
        "participant": event.participant_sid,
        "reaction": event.reaction,
        "ts": event.timestamp_ms,
    }


# -- state of a room's meeting -----------------------------------------------------------------
@dataclass
class Meeting:
    """One room's raised hands (in order) and its participants' reaction allowances."""

    hands: dict[str, int] = field(default_factory=dict)  # participant sid -> raised at (ms)
    reactions: dict[str, TokenBucket] = field(default_factory=dict)

    def queue(self) -> tuple[RaisedHand, ...]:
        return tuple(RaisedHand(sid, ms) for sid, ms in self.hands.items())


_MEETINGS: weakref.WeakKeyDictionary[Room, Meeting] = weakref.WeakKeyDictionary()


def meeting_of(room: Room) -> Meeting:
    """The meeting state of ``room`` (made on first use, gone with the room)."""
    found = _MEETINGS.get(room)
    if found is None:
        found = _MEETINGS[room] = Meeting()
    return found


def lower(room: Room, sid: str, by: str | None = None) -> bool:
    """Lower ``sid``'s hand in ``room`` (``by``: the host who did it); whether it was raised."""
    meeting = _MEETINGS.get(room)
    if meeting is None or meeting.hands.pop(sid, None) is None:
        return False
    room.broadcast(HandsChanged(meeting.queue(), sid, False, by))
    return True


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- requests ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoFields:
    """A request with no fields of its own (meeting, raise_hand, mute_all)."""

    @classmethod
    def parse(cls, msg: dict) -> NoFields:
        return cls()


@dataclass(frozen=True)
class Target:
    """A request about one participant (by sid): lower_hand (optional: yourself),
    mute_participant, remove_participant."""

    participant: str

    @classmethod
    def parse(cls, msg: dict) -> Target:
        return cls(short_str(msg, "participant", 64))


@dataclass(frozen=True)
class ReactionRequest:
    """reaction: one of REACTIONS."""

    reaction: str

    @classmethod
    def parse(cls, msg: dict) -> ReactionRequest:
        reaction = short_str(msg, "reaction", 32, required=True)
        if reaction not in REACTIONS:
            raise ProtocolError("bad_request", f"reaction must be one of {', '.join(REACTIONS)}")
        return cls(reaction)


@dataclass(frozen=True)
class StopTrack:
    """stop_track: a host stops another participant's track (camera, screen share)."""

    participant: str
    track: str

    @classmethod
    def parse(cls, msg: dict) -> StopTrack:
        return cls(
            short_str(msg, "participant", 64, required=True),
            short_str(msg, "track", 64, required=True),
        )


@dataclass(frozen=True)
class LockRoom:
    """lock_room: a host locks or unlocks the room."""

    locked: bool

    @classmethod
    def parse(cls, msg: dict) -> LockRoom:
        return cls(proto.field(msg, "locked", bool))


# -- handlers ----------------------------------------------------------------------------------
def _visible(session: Session) -> tuple[Room, Participant]:
    room = session._room()
    p = session._joined()
    if p.permissions.hidden:
        raise ProtocolError("permission_denied", "hidden participants take no part in this")
    return room, p


def _host(session: Session, what: str) -> tuple[Room, Participant]:
    room = session._room()
    if not session.identity.grant.is_host:
        raise ProtocolError("permission_denied", f"only a host may {what} (grant roomHost)")
    return room, session._joined()


def _target(room: Room, sid: str) -> Participant:
    p = room.participants.get(sid)
    if p is None or p.permissions.hidden:
        raise ProtocolError("not_found", "no such participant in this room")
    return p


async def on_meeting(session: Session, req: NoFields) -> Reply:
    """meeting: what the client needs to show the meeting's features."""
    room = session._room()
    return Reply(
        "meeting_state",
        {
            "host": session.identity.grant.is_host,
            "locked": room.locked,
            "hands": _hands(meeting_of(room).queue()),
            "reactions": list(REACTIONS),
        },
    )


async def on_raise_hand(session: Session, req: NoFields) -> Reply:
    """raise_hand: your hand goes to the end of the queue (where it is, if raised already)."""
    room, p = _visible(session)
    meeting = meeting_of(room)
    if p.sid not in meeting.hands:
        meeting.hands[p.sid] = _now_ms()
        room.broadcast(HandsChanged(meeting.queue(), p.sid, True, None))
    return Reply("hand_raised", {"position": list(meeting.hands).index(p.sid) + 1})


async def on_lower_hand(session: Session, req: Target) -> Reply:
    """lower_hand: yours, or (a host) someone else's."""
    room = session._room()
    me = session._joined()
    sid = req.participant or me.sid
    if sid != me.sid:
        _host(session, "lower someone else's hand")
        _target(room, sid)
    lower(room, sid, by=me.sid if sid != me.sid else None)
    return Reply("hand_lowered", {"participant": sid})


async def on_reaction(session: Session, req: ReactionRequest) -> Reply:
    """reaction: shown on your tile, for everyone (you included)."""
    room, p = _visible(session)
    buckets = meeting_of(room).reactions
    bucket = buckets.get(p.sid)
    if bucket is None:
        bucket = buckets[p.sid] = TokenBucket(REACTION_RATE, REACTION_BURST)
    if not bucket.try_take():
        raise ProtocolError("rate_limited", "too many reactions: wait a moment")
    room.broadcast(ReactionSent(p.sid, req.reaction, _now_ms()))
    return Reply("reaction_sent", {})


def _mute_microphones(p: Participant) -> list[str]:
    muted = []
    for track in list(p.tracks.values()):
        if track.source == "microphone" and not track.muted:
            p.set_muted(track.sid, True, by_server=True)
            muted.append(track.sid)
    return muted


async def on_mute_participant(session: Session, req: Target) -> Reply:
    """mute_participant (host): mute someone's microphone; they are told (track_muted). Only
    they may unmute it."""
    room, _me = _host(session, "mute someone")
    target = _target(room, req.participant)
    return Reply(
        "participant_muted", {"participant": target.sid, "tracks": _mute_microphones(target)}
    )


async def on_mute_all(session: Session, req: NoFields) -> Reply:
    """mute_all (host): mute every other participant's microphone."""
    room, me = _host(session, "mute everyone")
    muted = [
        sid
        for p in list(room.participants.values())
        if p is not me and not p.permissions.hidden
        for sid in _mute_microphones(p)
    ]
    return Reply("all_muted", {"tracks": muted})


async def on_stop_track(session: Session, req: StopTrack) -> Reply:
    """stop_track (host): unpublish someone's track (camera, screen share); its owner is told
    (track_unpublished with its own sid) and stops sending it."""
    room, _me = _host(session, "stop someone's video")
    target = _target(room, req.participant)
    if req.track not in target.tracks:
        raise ProtocolError("not_found", "no such track of this participant")
    target.unpublish(req.track, by_server=True)
    return Reply("track_stopped", {"participant": target.sid, "track": req.track})


async def on_remove_participant(session: Session, req: Target) -> Reply:
    """remove_participant (host): they receive leave (reason removed), the others
    participant_left (reason removed). Lock the room to keep them from coming back."""
    room, me = _host(session, "remove someone")
    target = _target(room, req.participant)
    if target is me:
        raise ProtocolError("bad_request", "to leave, send leave")
    target.emit(Leave("removed"))
    await room.remove(target, "removed")
    logger.info("room %s: %s removed by host %s", room.name, target.sid, me.sid)
    return Reply("participant_removed", {"participant": target.sid})


async def on_lock_room(session: Session, req: LockRoom) -> Reply:
    """lock_room (host): newcomers are refused while locked (join answers room_locked); hosts
    may still join. Everyone receives room_updated."""
    room, _me = _host(session, "lock the room")
    room.set_locked(req.locked)
    return Reply("room_lock_updated", {"locked": room.locked})


#: the message types this module adds: (type, handler, request class)
MESSAGES: list[tuple[str, Callable[..., Any], type]] = [
    ("meeting", on_meeting, NoFields),
    ("raise_hand", on_raise_hand, NoFields),
    ("lower_hand", on_lower_hand, Target),
    ("reaction", on_reaction, ReactionRequest),
    ("mute_participant", on_mute_participant, Target),
    ("mute_all", on_mute_all, NoFields),
    ("stop_track", on_stop_track, StopTrack),
    ("remove_participant", on_remove_participant, Target),
    ("lock_room", on_lock_room, LockRoom),
]


def _on_lifecycle(sfu: SFU, event: LifecycleEvent) -> None:
    """A participant who leaves (or is moved out) lowers its hand."""
    if isinstance(event, ParticipantExited):
        room = sfu.room(event.room.name)
        if room is not None and room.sid == event.room.sid:
            lower(room, event.participant.sid)
            meeting = _MEETINGS.get(room)
            if meeting is not None:
                meeting.reactions.pop(event.participant.sid, None)


def setup(app: web.Application) -> None:
    """Register the meeting's messages and events (signaling/features.py)."""
    from .app import SFU_KEY  # here: app.py imports the features, which import this module

    for kind, handler, request in MESSAGES:
        register_handler(kind, handler, request)
    register_event(HandsChanged, hands_wire)
    register_event(ReactionSent, reaction_wire)
    sfu = app[SFU_KEY]
    sfu.listeners.append(lambda event: _on_lifecycle(sfu, event))
