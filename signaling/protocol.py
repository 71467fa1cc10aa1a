"""Message validation for the JSON signaling protocol (docs/protocol.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from visio_sfu import events as ev
from visio_sfu.participant import Permissions

from .auth import MAX_NAME_CHARS, MAX_ROOM_CHARS, display_name

MAX_ID_LENGTH = 64


class ProtocolError(Exception):
    """A message the server refuses, with the protocol error code to send back."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode(text: str) -> dict:
    """Parse one text frame into a message object; raise ProtocolError if it is not one."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_json", "message must be a JSON object")
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("bad_request", "field 'type' must be a string")
    mid = msg.get("id")
    if mid is not None and not (
        (isinstance(mid, str) and len(mid) <= MAX_ID_LENGTH)
        or (isinstance(mid, int) and not isinstance(mid, bool))
    ):
        raise ProtocolError("bad_request", "field 'id' must be a short string or an integer")
    return msg


def field(msg: dict, name: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    """A typed field of a message; raise ProtocolError if missing or of the wrong type."""
    value = msg.get(name)
    if value is None:
        if required:
            raise ProtocolError("bad_request", f"field '{name}' is required")
        return None
    if isinstance(value, bool) and kind is not bool and bool not in _tuple(kind):
        raise ProtocolError("bad_request", f"field '{name}' has the wrong type")
    if not isinstance(value, kind):
        names = "/".join(k.__name__ for k in _tuple(kind))
        raise ProtocolError("bad_request", f"field '{name}' must be a {names}")
    return value


def short_str(msg: dict, name: str, limit: int = 256, required: bool = False) -> str:
    """A string field of bounded length ('' when absent and optional)."""
    value = field(msg, name, str, required)
    if value is None:
        return ""
    if len(value) > limit:
        raise ProtocolError("bad_request", f"field '{name}' is longer than {limit} characters")
    return value


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def error(code: str, message: str, msg_id: Any = None) -> dict:
    """An error message."""
    out: dict = {"type": "error", "code": code, "message": message}
    if msg_id is not None:
        out["id"] = msg_id
    return out


# -- the core's values and events on the wire ------------------------------------------------
# visio_sfu speaks typed events (visio_sfu/events.py); this is the one place that turns them
# into the JSON messages of docs/protocol.md.


def track_info(t: ev.TrackInfo) -> dict:
    """A track as the protocol describes it."""
    return {
        "sid": t.sid,
        "kind": t.kind,
        "source": t.source,
        "name": t.name,
        "muted": t.muted,
        "width": t.width,
        "height": t.height,
        "mime": t.mime,
        "mid": t.mid,
        "simulcast": t.simulcast,
        "layers": list(t.layers),
    }


def participant_info(p: ev.ParticipantInfo) -> dict:
    """A participant as the protocol describes it."""
    return {
        "sid": p.sid,
        "identity": p.identity,
        "name": p.name,
        "metadata": p.metadata,
        "tracks": [track_info(t) for t in p.tracks],
    }


def participant_ref(p: ev.ParticipantRef) -> dict:
    """Who, in short."""
    return {"sid": p.sid, "identity": p.identity, "name": p.name}


def room_info(r: ev.RoomInfo) -> dict:
    """A room as the protocol describes it."""
    return {"name": r.name, "sid": r.sid, "metadata": r.metadata, "locked": r.locked}


def permissions(p: Permissions) -> dict:
    """A participant's grants, in the protocol's (LiveKit's) camelCase."""
    return {
        "canPublish": p.can_publish,
        "canSubscribe": p.can_subscribe,
        "canPublishData": p.can_publish_data,
        "hidden": p.hidden,
        "canPublishSources": (
            list(p.can_publish_sources) if p.can_publish_sources is not None else None
        ),
    }


def to_wire(event: ev.Event) -> dict:
    """The JSON message for an event the SFU sends to a participant."""
    match event:
        case ev.SubscriberOffer(offer_id, sdp, tracks):
            return {
                "type": "offer",
                "target": "subscriber",
                "id": offer_id,
                "sdp": sdp,
                "tracks": [
                    {
                        "mid": t.mid,
                        "track": t.track_sid,
                        "participant": t.participant_sid,
                        "kind": t.kind,
                        "source": t.source,
                    }
                    for t in tracks
                ],
            }
        case ev.NegotiationFailed(offer_id, message):
            return error("bad_sdp", message, offer_id)
        case ev.ParticipantJoined(participant):
            return {"type": "participant_joined", "participant": participant_info(participant)}
        case ev.ParticipantLeft(sid, identity, reason):
            return {
                "type": "participant_left",
                "participant": {"sid": sid, "identity": identity},
                "reason": reason,
            }
        case ev.ParticipantUpdated(participant):
            return {"type": "participant_updated", "participant": participant_info(participant)}
        case ev.RoomUpdated(room):
            return {"type": "room_updated", "room": room_info(room)}
        case ev.Moved(room, participants):
            return {
                "type": "moved",
                "room": room_info(room),
                "participants": [participant_info(p) for p in participants],
            }
        case ev.TrackPublished(participant_sid, track):
            return {
                "type": "track_published",
                "participant": participant_sid,
                "track": track_info(track),
            }
        case ev.TrackUnpublished(participant_sid, track_sid):
            return {"type": "track_unpublished", "participant": participant_sid, "track": track_sid}
        case ev.TrackMuted(participant_sid, track_sid, muted):
            return {
                "type": "track_muted",
                "participant": participant_sid,
                "track": track_sid,
                "muted": muted,
            }
        case ev.DataReceived(sender, topic, payload, timestamp_ms):
            return {
                "type": "data",
                "from": participant_ref(sender) if sender is not None else None,
                "topic": topic,
                "payload": payload,
                "ts": timestamp_ms,
            }
        case ev.ActiveSpeakerChanged(participant_sid):
            return {"type": "active_speaker", "participant": participant_sid}
        case ev.LayersWanted(track_sid, rids):
            return {"type": "layers", "track": track_sid, "active": list(rids)}
        case ev.Leave(reason):
            return {"type": "leave", "reason": reason}
    writer = EVENT_WRITERS.get(type(event))
    if writer is not None:
        return writer(event)
    raise TypeError(f"no wire message for {type(event).__name__}")


#: wire writers for events that features define in their own modules (register_event)
EVENT_WRITERS: dict[type, Callable[[Any], dict]] = {}


def register_event(cls: type, writer: Callable[[Any], dict]) -> None:
    """Teach to_wire an event class a feature defines (recording, captions, hands...)."""
    EVENT_WRITERS[cls] = writer


def register_request(kind: str, cls: type) -> None:
    """Teach parse_request a message type a feature adds; ``cls.parse(msg)`` validates it."""
    if kind in REQUESTS and REQUESTS[kind] is not cls:
        raise ValueError(f"message type {kind!r} is already taken")
    REQUESTS[kind] = cls


def webhook(event: ev.LifecycleEvent) -> dict:
    """The JSON body (without id and time) of a webhook for a lifecycle event."""
    body: dict[str, Any] = {"room": room_info(event.room)}  # type: ignore[attr-defined]
    if isinstance(
        event, ev.ParticipantEntered | ev.ParticipantExited | ev.TrackAdded | ev.TrackRemoved
    ):
        body["participant"] = participant_ref(event.participant)
    if isinstance(event, ev.TrackAdded | ev.TrackRemoved):
        body["track"] = track_info(event.track)
    if isinstance(event, ev.ParticipantExited):
        body["reason"] = event.reason
    return body


# -- client requests: each message type a client may send, typed and validated ---------------


@dataclass(frozen=True)
class Join:
    """join: enter the token's room, with an optional display name and metadata; ``resume``:
    the resume token of a participant whose connection dropped (signaling/resume.py);
    ``keep``: its peer connections are still up, keep them (only the socket dropped)."""

    room: str
    name: str
    metadata: str
    resume: str = ""
    keep: bool = False

    @classmethod
    def parse(cls, msg: dict) -> Join:
        return cls(
            short_str(msg, "room", MAX_ROOM_CHARS),
            display_name(short_str(msg, "name", MAX_NAME_CHARS)),
            short_str(msg, "metadata", 4096),
            short_str(msg, "resume", 128),
            bool(field(msg, "keep", bool, required=False)),
        )


@dataclass(frozen=True)
class AddTrack:
    """add_track: announce a track the next publisher offer carries."""

    cid: str
    kind: str
    source: str
    name: str
    width: int
    height: int
    muted: bool = False  # published muted

    @classmethod
    def parse(cls, msg: dict) -> AddTrack:
        return cls(
            short_str(msg, "cid", 128, required=True),
            short_str(msg, "kind", 16, required=True),
            short_str(msg, "source", 32),
            short_str(msg, "name", 128),
            dimension(msg, "width"),
            dimension(msg, "height"),
            bool(field(msg, "muted", bool, required=False)),
        )


@dataclass(frozen=True)
class PublisherOffer:
    """offer: the client's offer on its publisher connection."""

    sdp: str

    @classmethod
    def parse(cls, msg: dict) -> PublisherOffer:
        if msg.get("target", "publisher") != "publisher":
            raise ProtocolError("bad_request", "clients only offer on the publisher connection")
        return cls(field(msg, "sdp", str))


@dataclass(frozen=True)
class SubscriberAnswer:
    """answer: the client's answer to the server's subscriber offer ``offer_id``."""

    offer_id: str | int | None
    sdp: str

    @classmethod
    def parse(cls, msg: dict) -> SubscriberAnswer:
        if msg.get("target", "subscriber") != "subscriber":
            raise ProtocolError("bad_request", "clients only answer on the subscriber connection")
        return cls(msg.get("id"), field(msg, "sdp", str))


@dataclass(frozen=True)
class Trickle:
    """trickle: an ICE candidate of the client (None: end of candidates)."""

    target: str
    candidate: dict | None

    @classmethod
    def parse(cls, msg: dict) -> Trickle:
        target = short_str(msg, "target", 16, required=True)
        candidate = msg.get("candidate")
        if candidate is not None and not isinstance(candidate, dict):
            raise ProtocolError("bad_request", "field 'candidate' must be an object or null")
        return cls(target, candidate)


@dataclass(frozen=True)
class Mute:
    """mute: mute or unmute one of your tracks."""

    track: str
    muted: bool

    @classmethod
    def parse(cls, msg: dict) -> Mute:
        return cls(short_str(msg, "track", 64, required=True), field(msg, "muted", bool))


@dataclass(frozen=True)
class Unpublish:
    """unpublish: stop publishing one of your tracks."""

    track: str

    @classmethod
    def parse(cls, msg: dict) -> Unpublish:
        return cls(short_str(msg, "track", 64, required=True))


@dataclass(frozen=True)
class Data:
    """data: a message for the others (or the identities in ``to``)."""

    topic: str
    payload: Any
    to: tuple[str, ...] | None

    @classmethod
    def parse(cls, msg: dict) -> Data:
        if "payload" not in msg:
            raise ProtocolError("bad_request", "field 'payload' is required")
        to = msg.get("to")
        if to is not None and (
            not isinstance(to, list) or not all(isinstance(x, str) for x in to) or len(to) > 256
        ):
            raise ProtocolError("bad_request", "field 'to' must be a list of identities")
        return cls(short_str(msg, "topic", 64), msg["payload"], tuple(to) if to else None)


@dataclass(frozen=True)
class Subscription:
    """subscription: receive (or stop receiving) another participant's track."""

    track: str
    subscribed: bool

    @classmethod
    def parse(cls, msg: dict) -> Subscription:
        return cls(short_str(msg, "track", 64, required=True), field(msg, "subscribed", bool))


@dataclass(frozen=True)
class TrackSettings:
    """track_settings: how a received video is shown (adaptive stream)."""

    track: str
    visible: bool | None
    height: int | None
    quality: str | None

    @classmethod
    def parse(cls, msg: dict) -> TrackSettings:
        quality = short_str(msg, "quality", 8) or None
        if quality is not None and quality not in ("low", "medium", "high"):
            raise ProtocolError("bad_request", "quality must be low, medium or high")
        return cls(
            short_str(msg, "track", 64, required=True),
            field(msg, "visible", bool, required=False),
            dimension(msg, "height") if "height" in msg else None,
            quality,
        )


@dataclass(frozen=True)
class NegotiationFailedReport:
    """negotiation_failed: the client could not apply a negotiation."""

    target: str
    offer: str | int | None
    message: str

    @classmethod
    def parse(cls, msg: dict) -> NegotiationFailedReport:
        target = short_str(msg, "target", 16, required=True)
        if target not in ("publisher", "subscriber"):
            raise ProtocolError("bad_request", "target must be 'publisher' or 'subscriber'")
        offer = msg.get("offer")
        if offer is not None and (isinstance(offer, bool) or not isinstance(offer, str | int)):
            raise ProtocolError("bad_request", "field 'offer' must be a string or an integer")
        message = field(msg, "message", str, required=False) or ""
        return cls(target, offer, message)


@dataclass(frozen=True)
class Ping:
    """ping: keep the connection alive; the answer echoes ``ts``."""

    ts: float | None

    @classmethod
    def parse(cls, msg: dict) -> Ping:
        ts = msg.get("ts")
        return cls(ts if isinstance(ts, int | float) and not isinstance(ts, bool) else None)


@dataclass(frozen=True)
class IceRestart:
    """ice_restart: the client's network changed; restart ICE on the subscriber connection
    (the publisher connection's is restarted by the client's own offer)."""

    target: str

    @classmethod
    def parse(cls, msg: dict) -> IceRestart:
        target = short_str(msg, "target", 16, required=True)
        if target != "subscriber":
            raise ProtocolError(
                "bad_request",
                "target must be 'subscriber' (restart the publisher's ICE with an offer)",
            )
        return cls(target)


@dataclass(frozen=True)
class LeaveRequest:
    """leave: leave the room."""

    @classmethod
    def parse(cls, msg: dict) -> LeaveRequest:
        return cls()


#: every message type a client may send, with its request class
REQUESTS: dict[str, type] = {
    "join": Join,
    "add_track": AddTrack,
    "offer": PublisherOffer,
    "answer": SubscriberAnswer,
    "trickle": Trickle,
    "mute": Mute,
    "unpublish": Unpublish,
    "data": Data,
    "subscription": Subscription,
    "track_settings": TrackSettings,
    "negotiation_failed": NegotiationFailedReport,
    "ice_restart": IceRestart,
    "ping": Ping,
    "leave": LeaveRequest,
}


def parse_request(msg: dict) -> Any:
    """The typed request for a decoded message; ProtocolError if unknown or invalid."""
    cls = REQUESTS.get(msg["type"])
    if cls is None:
        raise ProtocolError("unknown_type", f"unknown message type {msg['type'][:40]!r}")
    return cls.parse(msg)


def dimension(msg: dict, name: str) -> int:
    """A pixel size field: an integer from 0 to 16384 (0 when absent)."""
    value = field(msg, name, int, required=False)
    if value is None:
        return 0
    if not 0 <= value <= 16384:
        raise ProtocolError("bad_request", f"field '{name}' out of range")
    return value


# -- the server's answers to requests ------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """An answer to a request: ``type`` and the fields, in the protocol's names."""

    type: str
    fields: dict

    def to_wire(self) -> dict:
        """The JSON message (the session adds the request's id)."""
        return {"type": self.type, **self.fields}


def joined(
    room: ev.RoomInfo,
    me: ev.ParticipantInfo,
    grants: Permissions,
    others: list[ev.ParticipantInfo],
    resume: str | None = None,
    resumed: bool = False,
    ice_servers: list[dict] | None = None,
    kept: bool = False,
) -> Reply:
    """The answer to join; ``resume``: the token to resume this participant after a dropped
    connection; ``resumed``: this join resumed it (same sid); ``kept``: with its peer
    connections as they were; ``ice_servers``: the STUN and TURN servers its connections use
    (signaling/turn.py)."""
    fields = {
        "room": room_info(room),
        "participant": {**participant_info(me), "permissions": permissions(grants)},
        "participants": [participant_info(o) for o in others],
        "iceServers": ice_servers or [],
        "resumed": resumed,
        "kept": kept,
    }
    if resume is not None:
        fields["resume"] = resume
    return Reply("joined", fields)


def track_added(
    cid: str, sid: str, kind: str, source: str, name: str, w: int, h: int, muted: bool = False
) -> Reply:
    """The answer to add_track: the server's id for the announced track."""
    track = {
        "sid": sid,
        "kind": kind,
        "source": source,
        "name": name,
        "muted": muted,
        "width": w,
        "height": h,
    }
    return Reply("track_added", {"cid": cid, "track": track})


def publisher_answer(sdp: str) -> Reply:
    """The answer to a publisher offer."""
    return Reply("answer", {"target": "publisher", "sdp": sdp})


def muted(track: str, is_muted: bool) -> Reply:
    """The answer to mute."""
    return Reply("muted", {"track": track, "muted": is_muted})


def unpublished(track: str) -> Reply:
    """The answer to unpublish."""
    return Reply("unpublished", {"track": track})


def data_sent() -> Reply:
    """The answer to data."""
    return Reply("data_sent", {})


def subscription_updated(track: str, subscribed: bool) -> Reply:
    """The answer to subscription."""
    return Reply("subscription_updated", {"track": track, "subscribed": subscribed})


def track_settings_updated(track: str) -> Reply:
    """The answer to track_settings."""
    return Reply("track_settings_updated", {"track": track})


def pong(ts: float) -> Reply:
    """The answer to ping."""
    return Reply("pong", {"ts": ts})


def subscriber_restarted() -> Reply:
    """The answer to negotiation_failed for the subscriber connection."""
    return Reply("subscriber_restarted", {})


def ice_restarting(target: str) -> Reply:
    """The answer to ice_restart: an offer with new ICE credentials follows."""
    return Reply("ice_restarting", {"target": target})


def negotiation_failed_noted(target: str) -> Reply:
    """The answer to negotiation_failed for the publisher connection."""
    return Reply("negotiation_failed_noted", {"target": target})
