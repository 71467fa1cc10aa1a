"""Typed events: the SFU's only output to the outside.

Two kinds:

- ``Event``: addressed to one participant, through the ``emit`` callback given to
  ``Room.join`` (the signaling server turns each into a wire message, docs/protocol.md; an
  embedder, a recorder or a relay reads them as they are);
- ``LifecycleEvent``: to the SFU's ``listeners`` (webhooks, logs, a cluster registry).

The values inside (``TrackInfo``, ``ParticipantInfo``, ``RoomInfo``) are snapshots, safe to
keep or send to another process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """A published track as others see it."""

    sid: str
    kind: str
    source: str
    name: str
    muted: bool
    width: int
    height: int
    mime: str
    mid: str
    simulcast: bool
    layers: tuple[str, ...]  # the simulcast rids, lowest first; () without simulcast


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    """A participant as others see it."""

    sid: str
    identity: str
    name: str
    metadata: str
    tracks: tuple[TrackInfo, ...]
    #: the application's key/value attributes (LiveKit's participant attributes)
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ParticipantRef:
    """Who: enough to name a participant in an event."""

    sid: str
    identity: str
    name: str


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A room as its participants see it."""

    name: str
    sid: str
    metadata: str
    locked: bool = False  # newcomers are refused (Room.set_locked)


@dataclass(frozen=True, slots=True)
class OfferedTrack:
    """Which track an m-section of a subscriber offer carries."""

    mid: str
    track_sid: str
    participant_sid: str
    kind: str
    source: str


class Event:
    """An event for one participant's client."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ParticipantJoined(Event):
    """Someone joined the room (or was moved into it)."""

    participant: ParticipantInfo


@dataclass(frozen=True, slots=True)
class ParticipantLeft(Event):
    """Someone left the room (``reason``: left, disconnected, moved, removed, ...)."""

    participant_sid: str
    identity: str
    reason: str


@dataclass(frozen=True, slots=True)
class ParticipantUpdated(Event):
    """Someone's name or metadata changed (also sent to that participant)."""

    participant: ParticipantInfo


@dataclass(frozen=True, slots=True)
class RoomUpdated(Event):
    """The room's metadata changed."""

    room: RoomInfo


@dataclass(frozen=True, slots=True)
class Moved(Event):
    """You were moved to another room (breakout rooms): who is there now."""

    room: RoomInfo
    participants: tuple[ParticipantInfo, ...]


@dataclass(frozen=True, slots=True)
class TrackPublished(Event):
    """Someone published a track."""

    participant_sid: str
    track: TrackInfo


@dataclass(frozen=True, slots=True)
class TrackUnpublished(Event):
    """Someone stopped publishing a track."""

    participant_sid: str
    track_sid: str
    track: TrackInfo | None = None  # what it was (for lifecycle events)


@dataclass(frozen=True, slots=True)
class TrackMuted(Event):
    """A track was muted or unmuted (to the others; to its owner when a host did it)."""

    participant_sid: str
    track_sid: str
    muted: bool


@dataclass(frozen=True, slots=True)
class DataReceived(Event):
    """A data message (chat, app data) from another participant, or from the server."""

    sender: ParticipantRef | None
    topic: str
    payload: Any
    timestamp_ms: int
    reliable: bool = True  # False: may be dropped on the way (LiveKit's lossy packets)
    #: ``(format, bytes)``: the message as its sender's protocol encoded it (``("livekit",
    #: <DataPacket>)``), forwarded as it is to clients of that protocol; None for JSON data
    encoded: tuple[str, bytes] | None = None
    #: only for clients that read ``encoded`` (``payload`` means nothing to the others)
    encoded_only: bool = False


@dataclass(frozen=True, slots=True)
class ActiveSpeakerChanged(Event):
    """Who speaks now (None: nobody)."""

    participant_sid: str | None


@dataclass(frozen=True, slots=True)
class LayersWanted(Event):
    """To a publisher: send only these simulcast layers of a track (dynacast)."""

    track_sid: str
    rids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SubscriberOffer(Event):
    """The server's offer on the subscribe connection: answer it with its id."""

    offer_id: str
    sdp: str
    tracks: tuple[OfferedTrack, ...]


@dataclass(frozen=True, slots=True)
class SectionsWanted(Event):
    """To a client on a single connection (it makes every offer): offer again, with this many
    more receive-only audio and video m-sections, so that the answer can carry the tracks it
    must receive (LiveKit's ``media_sections_requirement``; 0 and 0: just offer again)."""

    num_audios: int
    num_videos: int


@dataclass(frozen=True, slots=True)
class NegotiationFailed(Event):
    """The server could not apply the client's answer to one of its offers."""

    offer_id: str
    message: str


@dataclass(frozen=True, slots=True)
class Leave(Event):
    """You are disconnected (replaced by a newer session, removed, room closed, ...)."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionFailed(Event):
    """Inside the core: a participant's connection failed (ICE); its room removes it."""

    participant_sid: str
    reason: str


class LifecycleEvent:
    """An event for the SFU's listeners; ``name`` is the webhook event name."""

    __slots__ = ()
    name: ClassVar[str] = ""


@dataclass(frozen=True, slots=True)
class RoomStarted(LifecycleEvent):
    """A room was created."""

    name: ClassVar[str] = "room_started"
    room: RoomInfo


@dataclass(frozen=True, slots=True)
class RoomFinished(LifecycleEvent):
    """A room closed."""

    name: ClassVar[str] = "room_finished"
    room: RoomInfo


@dataclass(frozen=True, slots=True)
class ParticipantEntered(LifecycleEvent):
    """A participant joined (or was moved into) a room."""

    name: ClassVar[str] = "participant_joined"
    room: RoomInfo
    participant: ParticipantRef


@dataclass(frozen=True, slots=True)
class ParticipantExited(LifecycleEvent):
    """A participant left (or was moved out of) a room."""

    name: ClassVar[str] = "participant_left"
    room: RoomInfo
    participant: ParticipantRef
    reason: str


@dataclass(frozen=True, slots=True)
class TrackAdded(LifecycleEvent):
    """A track was published in a room."""

    name: ClassVar[str] = "track_published"
    room: RoomInfo
    participant: ParticipantRef
    track: TrackInfo


@dataclass(frozen=True, slots=True)
class TrackRemoved(LifecycleEvent):
    """A track was unpublished (or its participant left)."""

    name: ClassVar[str] = "track_unpublished"
    room: RoomInfo
    participant: ParticipantRef
    track: TrackInfo
