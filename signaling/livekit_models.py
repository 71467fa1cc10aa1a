"""The basic mappings of visio-sfu's values onto LiveKit's protobuf models (livekit-protocol):
sources, qualities, a track, a permission, a participant or room snapshot. Shared by the
signaling (signaling/livekit/convert.py builds on them), the RoomService
(signaling/livekit_api.py) and LiveKit-format webhooks (signaling/livekit_webhooks.py).
"""

from __future__ import annotations

from livekit.protocol import models as lk

from visio_sfu.events import ParticipantRef, RoomInfo, TrackInfo
from visio_sfu.participant import Permissions

SOURCES = {
    "camera": lk.TrackSource.CAMERA,
    "microphone": lk.TrackSource.MICROPHONE,
    "screen_share": lk.TrackSource.SCREEN_SHARE,
    "screen_share_audio": lk.TrackSource.SCREEN_SHARE_AUDIO,
}
SOURCE_NAMES = {value: name for name, value in SOURCES.items()}
#: simulcast rids as LiveKit's qualities (by name: clients order them differently)
QUALITIES = {"q": lk.VideoQuality.LOW, "h": lk.VideoQuality.MEDIUM, "f": lk.VideoQuality.HIGH}


def track_proto(t: TrackInfo) -> lk.TrackInfo:
    """A published track as ``livekit.TrackInfo``."""
    info = lk.TrackInfo(
        sid=t.sid,
        type=lk.TrackType.VIDEO if t.kind == "video" else lk.TrackType.AUDIO,
        name=t.name,
        muted=t.muted,
        width=t.width,
        height=t.height,
        simulcast=t.simulcast,
        source=SOURCES.get(t.source, lk.TrackSource.UNKNOWN),
        mime_type=t.mime,
        mid=t.mid,
    )
    for rid in t.layers:
        quality = QUALITIES.get(rid)
        if quality is not None:
            info.layers.add(quality=quality, rid=rid)
    return info


def permission_proto(p: Permissions) -> lk.ParticipantPermission:
    """A participant's grants as ``livekit.ParticipantPermission``."""
    sources = (
        SOURCES.values()
        if p.can_publish_sources is None
        else (SOURCES[s] for s in p.can_publish_sources if s in SOURCES)
    )
    return lk.ParticipantPermission(
        can_subscribe=p.can_subscribe,
        can_publish=p.can_publish,
        can_publish_data=p.can_publish_data,
        can_publish_sources=list(sources) if p.can_publish_sources is not None else [],
        hidden=p.hidden,
    )


def participant_ref_proto(p: ParticipantRef, state: int) -> lk.ParticipantInfo:
    """Who, as ``livekit.ParticipantInfo`` (for webhooks: sid, identity, name, state)."""
    return lk.ParticipantInfo(sid=p.sid, identity=p.identity, name=p.name, state=state)  # type: ignore[arg-type]


def room_info_proto(r: RoomInfo) -> lk.Room:
    """A room snapshot (lifecycle events) as ``livekit.Room``: sid, name, metadata."""
    return lk.Room(sid=r.sid, name=r.name, metadata=r.metadata)
