"""visio-sfu's values as LiveKit's protobuf messages (livekit-protocol), and back.

Pure functions: no socket, no SFU. Sources, track types, video qualities and leave reasons are
mapped by name; simulcast layers by rid name (``q``/``h``/``f`` = LOW/MEDIUM/HIGH), never by
position, since LiveKit's SDKs list them in different orders.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import zlib
from collections.abc import Iterable

from google.protobuf.message import DecodeError
from livekit.protocol import models

from visio_sfu import events as ev

from ..livekit_models import QUALITIES, SOURCE_NAMES, permission_proto, track_proto

__all__ = ["permission_proto"]

SERVER_VERSION = "1.9.0"  # the LiveKit server version we answer like (the SDKs need one)
PROTOCOL = 16

QUALITY_NAMES = {
    models.VideoQuality.LOW: "low",
    models.VideoQuality.MEDIUM: "medium",
    models.VideoQuality.HIGH: "high",
}
REASONS = {
    "left": models.DisconnectReason.CLIENT_INITIATED,
    "replaced": models.DisconnectReason.DUPLICATE_IDENTITY,
    "removed": models.DisconnectReason.PARTICIPANT_REMOVED,
    "room_closed": models.DisconnectReason.ROOM_DELETED,
    "room_deleted": models.DisconnectReason.ROOM_DELETED,
    "server_shutdown": models.DisconnectReason.SERVER_SHUTDOWN,
    "ice_failed": models.DisconnectReason.MEDIA_FAILURE,
    "join_failure": models.DisconnectReason.JOIN_FAILURE,
    "state_mismatch": models.DisconnectReason.STATE_MISMATCH,
}


def source_name(source: int, kind: str) -> str:
    """visio-sfu's source name for a TrackSource (UNKNOWN: by kind)."""
    return SOURCE_NAMES.get(source, "camera" if kind == "video" else "microphone")


def layer_qualities(rids: Iterable[str]) -> list[int]:
    """VideoQuality of each rid, lowest layer first: by name for q/h/f, else by position from
    the top (the highest is HIGH)."""
    rids = list(rids)
    if all(r in QUALITIES for r in rids):
        return [QUALITIES[r] for r in rids]
    top = models.VideoQuality.HIGH
    return [max(top - (len(rids) - 1 - i), models.VideoQuality.LOW) for i in range(len(rids))]


def video_layers(track: ev.TrackInfo) -> list[models.VideoLayer]:
    """The layers of a video track: each simulcast layer (halving the size each step down),
    or one HIGH layer."""
    if track.kind != "video":
        return []
    rids = list(track.layers) or [""]
    qualities = layer_qualities(track.layers) if track.layers else [models.VideoQuality.HIGH]
    n = len(rids)
    out = []
    for i, (rid, quality) in enumerate(zip(rids, qualities, strict=True)):
        shift = n - 1 - i
        out.append(
            models.VideoLayer(
                quality=quality,
                width=track.width >> shift,
                height=track.height >> shift,
                rid=rid,
            )
        )
    return out


def track_info(track: ev.TrackInfo) -> models.TrackInfo:
    """A published track as LiveKit describes it, with the size of each video layer."""
    info = track_proto(track)
    del info.layers[:]
    info.layers.extend(video_layers(track))
    return info


def participant_info(
    info: ev.ParticipantInfo,
    version: int,
    joined_at: float = 0.0,
    attributes: dict[str, str] | None = None,
    perm: models.ParticipantPermission | None = None,
    state: models.ParticipantInfo.State.ValueType = models.ParticipantInfo.State.ACTIVE,
) -> models.ParticipantInfo:
    """A participant as LiveKit describes it; ``version`` must grow for each client."""
    out = models.ParticipantInfo(
        sid=info.sid,
        identity=info.identity,
        name=info.name,
        metadata=info.metadata,
        state=state,
        tracks=[track_info(t) for t in info.tracks],
        joined_at=int(joined_at),
        joined_at_ms=int(joined_at * 1000),
        version=version,
        is_publisher=bool(info.tracks),
    )
    out.attributes.update(info.attributes)
    if attributes:
        out.attributes.update(attributes)
    if perm is not None:
        out.permission.CopyFrom(perm)
    return out


def room(info: ev.RoomInfo, created: float, participants: int, empty_timeout: float) -> models.Room:
    """A room as LiveKit describes it."""
    return models.Room(
        sid=info.sid,
        name=info.name,
        metadata=info.metadata,
        empty_timeout=int(empty_timeout),
        departure_timeout=20,
        creation_time=int(created),
        creation_time_ms=int(created * 1000),
        num_participants=participants,
    )


def server_info() -> models.ServerInfo:
    """What the SDKs read to know which server they speak to."""
    return models.ServerInfo(
        edition=models.ServerInfo.Edition.Standard,
        version=SERVER_VERSION,
        protocol=PROTOCOL,
        node_id="visio-sfu",
    )


_MSID = re.compile(r"^a=msid:(PA_[0-9A-Za-z_-]+) (TR_[0-9A-Za-z_-]+)(?=\r?$)", re.MULTILINE)


def livekit_msid(sdp: str) -> str:
    """Write each ``a=msid:PA_x TR_y`` as ``a=msid:PA_x|TR_y TR_y``: LiveKit's Rust SDK drops
    a track whose stream id is not ``<participant sid>|<track sid>``."""
    return _MSID.sub(lambda m: f"a=msid:{m[1]}|{m[2]} {m[2]}", sdp)


def offer_number(offer_id: str) -> int:
    """The integer id LiveKit clients echo for our offer ``s<n>``."""
    return int(offer_id[1:]) if offer_id[1:].isdigit() else 0


def now_ms() -> int:
    """Wall-clock milliseconds."""
    return int(time.time() * 1000)


# -- data packets ---------------------------------------------------------------------------
CHAT_TOPIC = "chat"  # the web client's chat (docs/protocol.md, data)
LK_CHAT_TOPIC = "lk.chat"  # LiveKit's chat, as text streams


def read_data_packet(data: bytes) -> models.DataPacket | None:
    """A data-channel message as a DataPacket, or None if it is not one."""
    packet = models.DataPacket()
    try:
        packet.ParseFromString(data)
    except DecodeError:
        return None
    return packet


def json_view(packet: models.DataPacket) -> tuple[str, object] | None:
    """``(topic, payload)`` for clients of the JSON protocol, or None when the packet has no
    meaning on its own for them (a text stream's header or chunk; RPC; metrics...).

    - a user packet: its topic; a payload that is a JSON object or array as it is, else the
      text (for the ``chat`` topic, ``{"text": ...}`` as the web client's chat sends), else
      ``{"base64": ...}``;
    - a ChatMessage (LiveKit's older chat): ``chat``, ``{"text", "id"}``;
    - a text stream on ``lk.chat`` sent in one packet (header with inline content): ``chat``.
    """
    kind = packet.WhichOneof("value")
    if kind == "user":
        return packet.user.topic, payload_view(packet.user.topic, packet.user.payload)
    if kind == "chat_message":
        return CHAT_TOPIC, {"text": packet.chat_message.message, "id": packet.chat_message.id}
    if kind == "stream_header":
        header = packet.stream_header
        if header.topic == LK_CHAT_TOPIC and header.inline_content:
            data = inflate(header.inline_content, header.compression, MAX_TEXT)
            if data is not None:
                text = data.decode("utf-8", "replace")
                return CHAT_TOPIC, {"text": text, "id": header.stream_id}
    return None


MAX_TEXT = 64 * 1024  # the longest inflated text shown to JSON clients


def inflate(data: bytes, compression: int, limit: int) -> bytes | None:
    """A text stream's bytes as sent: raw deflate when ``compression`` says so (LiveKit's
    DEFLATE_RAW), at most ``limit`` bytes once inflated; None if they cannot be read."""
    if compression == models.DataStream.CompressionType.NONE:
        return data
    if compression != models.DataStream.CompressionType.DEFLATE_RAW:
        return None
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(data, limit)
    except zlib.error:
        return None
    return None if inflater.unconsumed_tail else out


def payload_view(topic: str, data: bytes) -> object:
    """A user packet's bytes as a JSON value (see json_view)."""
    import base64

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # (deep nesting: not read as JSON)
        value = None
    if isinstance(value, dict | list):
        return value
    return {"text": text} if topic == CHAT_TOPIC else text


def packets_for_json_data(
    sender: ev.ParticipantRef | None, topic: str, payload: object, timestamp_ms: int
) -> list[models.DataPacket]:
    """The LiveKit packets that carry a JSON-protocol data message: chat (``{"text": ...}`` on
    ``chat``) as a text stream on ``lk.chat`` (header, chunk, trailer: what LiveKit's chat
    components read), anything else as a user packet whose payload is the JSON text."""
    identity = sender.identity if sender is not None else ""
    sid = sender.sid if sender is not None else ""
    text = payload.get("text") if isinstance(payload, dict) else None
    if topic == CHAT_TOPIC and isinstance(text, str):
        data = text.encode()
        stream_id = secrets.token_hex(8)
        header = models.DataStream.Header(
            stream_id=stream_id,
            timestamp=timestamp_ms,
            topic=LK_CHAT_TOPIC,
            mime_type="text/plain",
            total_length=len(data),
            text_header=models.DataStream.TextHeader(),
        )
        return [
            models.DataPacket(participant_identity=identity, stream_header=header),
            models.DataPacket(
                participant_identity=identity,
                stream_chunk=models.DataStream.Chunk(
                    stream_id=stream_id, chunk_index=0, content=data
                ),
            ),
            models.DataPacket(
                participant_identity=identity,
                stream_trailer=models.DataStream.Trailer(stream_id=stream_id),
            ),
        ]
    body = json.dumps(payload, separators=(",", ":")).encode()
    user = models.UserPacket(
        participant_sid=sid, participant_identity=identity, payload=body, topic=topic
    )
    return [models.DataPacket(participant_identity=identity, user=user)]
