"""Participant: one person in a room, with a publish and a subscribe connection.

The publish connection receives the participant's media (the client offers); its RTP is routed
to Publishers by SSRC, learnt from the SDP or from the MID header extension. The subscribe
connection (see subscriber.py) carries everyone else's tracks.
"""

from __future__ import annotations

import logging
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from struct import unpack_from
from typing import TYPE_CHECKING

from .publisher import Layer, Publisher
from .rtp import rtcp
from .rtp.extensions import RID, SDES_MID
from .rtp.header import find_extension, payload_offset
from .sdp import accept_simulcast, offered_simulcast, parse_offer
from .subscriber import Subscriber
from .transport import PeerTransport, TransportError

if TYPE_CHECKING:
    from .room import Room

logger = logging.getLogger(__name__)

SOURCES = ("camera", "microphone", "screen_share", "screen_share_audio")
QUALITIES = ("low", "medium", "high")
#: the bandwidth we let a publisher use (REMB); the adaptive layer refines it later
DEFAULT_PUBLISH_BITRATE = 4_000_000
MAX_RESTARTS = 5  # subscriber connection restarts a participant may ask for ...
RESTART_WINDOW = 60.0  # ... in this many seconds


def new_sid(prefix: str) -> str:
    """A random, URL-safe server id such as ``PA_3f9c...``."""
    return f"{prefix}_{secrets.token_hex(6)}"


class PermissionDenied(Exception):
    """The participant's grants do not allow this."""


class RestartRefused(Exception):
    """A participant asked for too many subscriber restarts in a short time."""


@dataclass
class Permissions:
    """What a participant may do, from its access token."""

    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    hidden: bool = False  # not shown to others (recorders, observers); may not publish
    can_publish_sources: tuple[str, ...] | None = None  # None: any source

    def to_dict(self) -> dict:
        """As the protocol shows it."""
        return {
            "canPublish": self.can_publish,
            "canSubscribe": self.can_subscribe,
            "canPublishData": self.can_publish_data,
            "hidden": self.hidden,
            "canPublishSources": (
                list(self.can_publish_sources) if self.can_publish_sources is not None else None
            ),
        }

    def may_publish(self, source: str | None = None) -> bool:
        """Whether publishing (a track of ``source``) is allowed."""
        if not self.can_publish or self.hidden:
            return False
        return (
            source is None
            or self.can_publish_sources is None
            or (source in self.can_publish_sources)
        )


@dataclass
class TrackRequest:
    """A track announced by ``add_track`` before it appears in an offer."""

    sid: str
    cid: str
    kind: str
    source: str
    name: str = ""
    width: int = 0
    height: int = 0


class Participant:
    """A participant: identity, grants, published tracks and the two connections."""

    #: every Participant object still in memory, for leak checks
    alive: weakref.WeakSet[Participant] = weakref.WeakSet()

    def __init__(
        self,
        room: Room,
        identity: str,
        name: str = "",
        metadata: str = "",
        permissions: Permissions | None = None,
        emit: Callable[[dict], None] | None = None,
    ) -> None:
        self.room = room
        self.sid = new_sid("PA")
        self.identity = identity
        self.name = name
        self.metadata = metadata
        self.permissions = permissions or Permissions()
        self._emit = emit
        self.tracks: dict[str, Publisher] = {}  # track sid -> Publisher
        self._requests: dict[str, TrackRequest] = {}  # cid -> announced track
        self._by_ssrc: dict[int, tuple[Publisher, Layer]] = {}
        self._by_mid: dict[str, Publisher] = {}
        self._mid_ext_id = 0
        self._rid_ext_id = 0
        self.rtcp_ssrc = secrets.randbits(32) or 1
        self.publish_transport: PeerTransport | None = None
        self.subscriber: Subscriber | None = None
        if self.permissions.can_subscribe:
            self.subscriber = Subscriber(self.sid, self.emit, self._failed)
        self.unknown_packets = 0
        self._restarts: list[float] = []
        self.closed = False
        Participant.alive.add(self)

    def info(self) -> dict:
        """The participant as the protocol describes it."""
        return {
            "sid": self.sid,
            "identity": self.identity,
            "name": self.name,
            "metadata": self.metadata,
            "tracks": [t.info() for t in self.tracks.values()],
        }

    def emit(self, event: dict) -> None:
        """Send an event to this participant's client (the signaling session)."""
        if self._emit is not None and not self.closed:
            try:
                self._emit(event)
            except Exception:
                logger.exception("event listener of %s failed", self.sid)

    def _failed(self, reason: str) -> None:
        if not self.closed:
            self.room.schedule_removal(self, reason)

    # -- publishing ----------------------------------------------------------------------
    def add_track(
        self,
        cid: str,
        kind: str,
        source: str = "",
        name: str = "",
        width: int = 0,
        height: int = 0,
    ) -> TrackRequest:
        """Announce a track the next publisher offer will carry (matched by msid = cid)."""
        if not self.permissions.may_publish():
            raise PermissionDenied("not allowed to publish")
        if kind not in ("audio", "video"):
            raise ValueError("kind must be 'audio' or 'video'")
        source = source or ("camera" if kind == "video" else "microphone")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}")
        if not self.permissions.may_publish(source):
            raise PermissionDenied(f"not allowed to publish {source}")
        limit = self.room.max_tracks
        if len(self.tracks) + len(self._requests) >= limit:
            raise ValueError(f"at most {limit} tracks per participant")
        req = TrackRequest(new_sid("TR"), cid, kind, source, name, width, height)
        self._requests[cid] = req
        return req

    async def publish_offer(self, sdp: str) -> str:
        """Negotiate the publish connection from the client's offer; returns the answer SDP."""
        if not self.permissions.may_publish():
            raise PermissionDenied("not allowed to publish")
        offered = parse_offer(sdp)
        sending = [m for m in offered if m.kind in ("audio", "video")]
        if len(sending) > self.room.max_tracks:
            raise TransportError(f"at most {self.room.max_tracks} media sections")
        if self.publish_transport is None:
            self.publish_transport = PeerTransport(
                on_rtp=self._on_rtp, on_rtcp=self._on_rtcp, on_state=self._on_publish_state
            )
        simulcast = offered_simulcast(sdp)
        answer = await self.publish_transport.answer(sdp)
        if self.closed:
            raise TransportError("participant left")
        for spec in simulcast.values():
            self._rid_ext_id = spec["extensions"][RID]
        self._sync_tracks(offered, simulcast)
        return accept_simulcast(answer, simulcast)

    def _sync_tracks(self, offered: list, simulcast: dict[str, dict]) -> None:
        negotiated = {m.mid: m for m in self.publish_transport.negotiated()}
        for media in negotiated.values():
            if SDES_MID in media.extensions:
                self._mid_ext_id = media.extensions[SDES_MID]
        for m in offered:
            if m.kind not in ("audio", "video"):
                continue
            existing = self._by_mid.get(m.mid)
            neg = negotiated.get(m.mid)
            codec = neg.media_codec() if neg is not None else None
            if not m.sending or codec is None:
                if existing is not None:
                    self.unpublish(existing.sid)
                continue
            if existing is not None:
                if not existing.simulcast:
                    for ssrc in m.ssrcs:
                        self._by_ssrc[ssrc] = (existing, existing.layers[0])
                continue
            req = self._requests.pop(m.msid_track, None)
            if req is None:
                req = next((r for r in self._requests.values() if r.kind == m.kind), None)
                if req is not None:
                    del self._requests[req.cid]
            if req is None:
                source = "camera" if m.kind == "video" else "microphone"
                if not self.permissions.may_publish(source):
                    continue  # not announced and not allowed: its media is never forwarded
                req = TrackRequest(new_sid("TR"), m.msid_track, m.kind, source)
            track = Publisher(
                sid=req.sid,
                participant_sid=self.sid,
                kind=m.kind,
                source=req.source,
                mid=m.mid,
                codec=codec,
                extensions=dict(neg.extensions),
                send_rtcp=self.publish_transport.send_rtcp,
                rtcp_ssrc=self.rtcp_ssrc,
                name=req.name,
                width=req.width,
                height=req.height,
                cid=req.cid,
                rids=simulcast[m.mid]["rids"] if m.mid in simulcast and m.kind == "video" else None,
                forwarding_delay=self.room.forwarding_delay,
                retired=self.room.retired,
            )
            self.tracks[track.sid] = track
            self._by_mid[m.mid] = track
            if not track.simulcast:  # simulcast SSRCs are learnt from the RID extension
                for ssrc in m.ssrcs:
                    self._by_ssrc[ssrc] = (track, track.layers[0])
            self.room.track_published(self, track)

    def unpublish(self, track_sid: str) -> Publisher:
        """Stop publishing a track; every subscriber is told."""
        track = self.tracks.pop(track_sid, None)
        if track is None:
            raise KeyError(track_sid)
        self._by_mid.pop(track.mid, None)
        for ssrc in [s for s, (t, _layer) in self._by_ssrc.items() if t is track]:
            del self._by_ssrc[ssrc]
        track.close()
        self.room.track_unpublished(self, track)
        return track

    def set_muted(self, track_sid: str, muted: bool, by_server: bool = False) -> Publisher:
        """Mute or unmute one of this participant's tracks (muted media is not forwarded).

        ``by_server``: an administrator did it; the participant's own client is told too.
        """
        track = self.tracks.get(track_sid)
        if track is None:
            raise KeyError(track_sid)
        if track.muted != muted:
            track.muted = muted
            if not muted:
                for dt in track.downtracks:
                    dt.restart()
            self.room.track_muted(self, track)
            if by_server:
                self.emit(
                    {
                        "type": "track_muted",
                        "participant": self.sid,
                        "track": track.sid,
                        "muted": muted,
                    }
                )
        return track

    def update(self, name: str | None = None, metadata: str | None = None) -> None:
        """Change name or metadata; everyone (this participant included) is told."""
        if name is not None:
            self.name = name
        if metadata is not None:
            self.metadata = metadata
        event = {"type": "participant_updated", "participant": self.info()}
        self.emit(event)
        if not self.permissions.hidden:
            self.room.broadcast(event, exclude=self)

    # -- media from the publisher --------------------------------------------------------
    def _on_rtp(self, data: bytes, now: float) -> None:
        if len(data) < 12:
            return
        entry = self._by_ssrc.get(unpack_from("!I", data, 8)[0])
        if entry is None:
            entry = self._learn_ssrc(data)
            if entry is None:
                return
        entry[0].on_rtp(data, now, entry[1])

    def _learn_ssrc(self, data: bytes) -> tuple[Publisher, Layer] | None:
        """Bind an unknown SSRC to a track (MID extension) and layer (RID), else drop."""
        track = layer = None
        if self._mid_ext_id and payload_offset(data) >= 0:
            mid = find_extension(data, self._mid_ext_id)
            if mid is not None:
                track = self._by_mid.get(bytes(mid).decode("ascii", "replace"))
        if track is not None and (data[1] & 0x7F) == track.codec.payload_type:
            if not track.simulcast:
                layer = track.layers[0]
            elif self._rid_ext_id:
                rid = find_extension(data, self._rid_ext_id)
                if rid is not None:
                    name = bytes(rid).decode("ascii", "replace")
                    layer = next((x for x in track.layers if x.rid == name), None)
        if layer is None:
            self.unknown_packets += 1
            if self.unknown_packets == 1:
                logger.info("participant %s: RTP with an unknown SSRC dropped", self.sid)
            return None
        entry = (track, layer)
        self._by_ssrc[unpack_from("!I", data, 8)[0]] = entry
        return entry

    def _on_rtcp(self, data: bytes) -> None:
        now = time.monotonic()
        for pt, _fmt, pkt in rtcp.iter_rtcp(data):
            if pt == rtcp.SR:
                sr = rtcp.parse_sr(pkt)
                if sr is not None:
                    entry = self._by_ssrc.get(sr[0])
                    if entry is not None:
                        entry[0].on_sender_report(sr[0], sr[1], sr[2], now)

    def _on_publish_state(self, state: str) -> None:
        if state == "failed":
            self._failed("ice_failed")

    def send_publisher_feedback(self) -> None:
        """Receiver report and REMB to the publisher, so that its sender can adapt."""
        transport = self.publish_transport
        if transport is None or not self.tracks:
            return
        blocks = [b for t in self.tracks.values() for b in t.receiver_report_blocks()]
        if not blocks:
            return
        ssrcs = [b[0] for b in blocks]
        packet = rtcp.build_rr(self.rtcp_ssrc, blocks[:31]) + rtcp.build_remb(
            self.rtcp_ssrc, DEFAULT_PUBLISH_BITRATE, ssrcs
        )
        transport.send_rtcp(packet)

    # -- subscription control -------------------------------------------------------------
    def set_subscribed(self, track_sid: str, subscribed: bool) -> None:
        """Receive (or stop receiving) another participant's track."""
        if self.subscriber is None:
            raise PermissionDenied("not allowed to subscribe")
        track = self.room.find_track(track_sid)
        if track is None or track.participant_sid == self.sid:
            raise KeyError(track_sid)
        if subscribed:
            self.subscriber.add(track)
        else:
            self.subscriber.remove(track_sid)

    def set_track_settings(
        self,
        track_sid: str,
        visible: bool | None = None,
        max_height: int | None = None,
        quality: str | None = None,
    ) -> None:
        """Adaptive stream and quality choice for a received track: shown or not, at what
        height at most, which quality at most (low, medium, high)."""
        dt = self.subscriber.downtracks.get(track_sid) if self.subscriber else None
        if dt is None:
            raise KeyError(track_sid)
        if visible is not None:
            dt.visible = visible
        if max_height is not None:
            dt.max_height = max_height
        if quality is not None:
            dt.max_layer = min(QUALITIES.index(quality), len(dt.track.layers) - 1)

    async def restart_subscriber(self) -> None:
        """Replace the subscribe connection with a fresh one that carries the same tracks,
        with the same settings; its first offer follows. For a client that could not apply an
        offer: it discards its connection and answers the new one, and media comes back.

        The old connection is closed first; the new one is made and given its tracks with no
        wait in between, so that a caller who answers the client right after this returns is
        sure its answer goes out before the new connection's first offer.

        Raises TransportError if the participant left, RestartRefused beyond ``MAX_RESTARTS``
        in ``RESTART_WINDOW`` seconds: a client that keeps failing must not make the server
        renegotiate without end.
        """
        old = self.subscriber
        if old is None:
            raise PermissionDenied("not allowed to subscribe")
        if self.closed:
            raise TransportError("participant left")
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW]
        if len(self._restarts) >= MAX_RESTARTS:
            raise RestartRefused(
                f"at most {MAX_RESTARTS} subscriber restarts in {RESTART_WINDOW:.0f} s"
            )
        self._restarts.append(now)
        kept = {
            dt.track.sid: (dt.visible, dt.max_height, dt.max_layer)
            for dt in old.downtracks.values()
        }
        known = {t.sid for t in self.room.tracks()}
        self.subscriber = None  # tracks published meanwhile wait for the new connection
        await old.close()
        if self.closed:
            raise TransportError("participant left")
        new = Subscriber(self.sid, self.emit, self._failed, first_offer=old.offers_made + 1)
        new.remb_bitrate = old.remb_bitrate  # the path did not change: keep its estimate
        self.subscriber = new
        for other in self.room.participants.values():
            if other is self:
                continue
            for track in other.tracks.values():
                if track.sid in kept:
                    dt = new.add(track)
                    dt.visible, dt.max_height, dt.max_layer = kept[track.sid]
                elif track.sid not in known:  # published while the old one closed
                    new.add(track)
        logger.info("participant %s: subscriber connection restarted", self.sid)

    # -- trickle and teardown ------------------------------------------------------------
    async def add_ice_candidate(self, target: str, candidate: dict | None) -> None:
        """A trickled client candidate for the publisher or subscriber connection."""
        if target == "publisher":
            if self.publish_transport is None:
                raise TransportError("no publisher connection yet: send an offer first")
            await self.publish_transport.add_ice_candidate(candidate)
        elif target == "subscriber":
            if self.subscriber is None:
                raise PermissionDenied("not allowed to subscribe")
            await self.subscriber.add_ice_candidate(candidate)
        else:
            raise ValueError("target must be 'publisher' or 'subscriber'")

    async def close(self) -> None:
        """Release everything: tracks, DownTracks, both connections."""
        if self.closed:
            return
        self.closed = True
        for track in list(self.tracks.values()):
            track.close()
        if self.subscriber is not None:
            await self.subscriber.close()
        if self.publish_transport is not None:
            await self.publish_transport.close()
        self._by_ssrc.clear()
        self._by_mid.clear()
