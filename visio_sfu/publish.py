"""PublishConnection: a participant's publish connection and the tracks it carries.

The client offers, we answer. Each sending m-section becomes a Publisher (matched to the track
the client announced with ``add_track``, by msid then by kind); a section that stops sending
unpublishes its track. The connection's RTP is routed to Publishers by the RtpRouter, its RTCP
(sender reports) read, and receiver reports and REMB sent back so the client's encoder adapts.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from .bwe import PublisherRate
from .errors import PermissionDenied, TransportError
from .publisher import Publisher
from .router import RtpRouter
from .rtp import rtcp
from .rtp.extensions import REPAIRED_RID, RID, SDES_MID
from .rtp.header import unwrap_rtx
from .sdp import (
    TRANSPORT_CC_URI,
    OfferedMedia,
    accept_simulcast,
    answer_transport_cc,
    answered_extension,
    keep_opus_options,
    offered_simulcast,
    parse_offer,
)
from .stats import DropReason, Stats
from .transport import PeerTransport
from .twcc_responder import TwccResponder

logger = logging.getLogger(__name__)

SOURCES = ("camera", "microphone", "screen_share", "screen_share_audio")
#: m-sections a single-connection client may offer, those it receives on included
MAX_SECTIONS = 256
#: the most bandwidth we let a publisher use (REMB); less when its uplink loses (PublisherRate)
DEFAULT_PUBLISH_BITRATE = 4_000_000


def new_sid(prefix: str) -> str:
    """A random, URL-safe server id such as ``PA_3f9c...``."""
    return f"{prefix}_{secrets.token_hex(6)}"


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
    muted: bool = False  # published muted
    #: the codec the client wants it sent in (``video/VP9``): first in our answer for its
    #: m-section, if offered; "" keeps the offer's order (LiveKit clients rely on the server
    #: for this: livekit-client offers VP8 first even when it publishes VP9)
    codec: str = ""


class PublishConnection:
    """The publish side of one participant."""

    def __init__(
        self,
        participant_sid: str,
        may_publish: Callable[[str | None], bool],
        stats: Stats,
        max_tracks: int,
        on_published: Callable[[Publisher], None],
        on_unpublished: Callable[[Publisher], None],
        on_failed: Callable[[str], None],
        transport_factory: Callable[..., PeerTransport] = PeerTransport,
        on_data: Callable[[str, bytes], None] | None = None,
        transport: PeerTransport | None = None,
        ends_with_connection: bool = False,
    ) -> None:
        """``on_data``: data-channel messages the client sends on this connection.
        ``ends_with_connection``: its closing (DTLS close) fails it too (a client without a
        signaling channel: WHIP).
        ``transport``: a connection shared with the participant's receiving side (a client on
        one peer connection: Participant ``single_pc``); its RTP comes here, its RTCP and state
        are the owner's to hand on (``handle_rtcp``, ``handle_state``)."""
        self.participant_sid = participant_sid
        self._on_data = on_data
        self._may_publish = may_publish
        self._stats = stats
        self.max_tracks = max_tracks
        self._on_published = on_published
        self._on_unpublished = on_unpublished
        self._on_failed = on_failed
        self._transport_factory = transport_factory
        self.tracks: dict[str, Publisher] = {}  # track sid -> Publisher
        self.requests: dict[str, TrackRequest] = {}  # cid -> announced track
        self.router = RtpRouter()
        self.rtcp_ssrc = secrets.randbits(32) or 1
        self.rate = PublisherRate(DEFAULT_PUBLISH_BITRATE)  # what its REMB says
        #: transport-cc feedback about what it sends, when its offer asked for it
        self.twcc: TwccResponder | None = None
        self.twcc_feedbacks = 0  # transport-cc feedback packets sent to it
        self.transport: PeerTransport | None = transport
        self.shared = transport is not None
        self.ends_with_connection = ends_with_connection
        if transport is not None:
            transport.on_rtp = self._on_rtp
        self.closed = False

    # -- announcing and negotiating ------------------------------------------------------
    def add_track(
        self,
        cid: str,
        kind: str,
        source: str = "",
        name: str = "",
        width: int = 0,
        height: int = 0,
        muted: bool = False,
        codec: str = "",
    ) -> TrackRequest:
        """Announce a track the next offer will carry (matched by msid = cid); ``muted``: it
        is published muted; ``codec``: the MIME type it should be sent in, if offered."""
        if not self._may_publish(None):
            raise PermissionDenied("not allowed to publish")
        if kind not in ("audio", "video"):
            raise ValueError("kind must be 'audio' or 'video'")
        source = source or ("camera" if kind == "video" else "microphone")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}")
        if not self._may_publish(source):
            raise PermissionDenied(f"not allowed to publish {source}")
        if len(self.tracks) + len(self.requests) >= self.max_tracks:
            raise ValueError(f"at most {self.max_tracks} tracks per participant")
        req = TrackRequest(new_sid("TR"), cid, kind, source, name, width, height, muted, codec)
        self.requests[cid] = req
        return req

    async def offer(self, sdp: str) -> str:
        """Apply the client's offer; returns our answer. Publishes and unpublishes tracks."""
        offered, prefer = self.read_offer(sdp)
        if self.transport is None:
            extra = {"on_data": self._on_data} if self._on_data is not None else {}
            self.transport = self._transport_factory(
                on_rtp=self._on_rtp, on_rtcp=self._on_rtcp, on_state=self._on_state, **extra
            )
        transport = self.transport
        answer = await (transport.answer(sdp, prefer) if prefer else transport.answer(sdp))
        if self.closed:  # left meanwhile: close() may have run before the transport existed
            await transport.close()
            raise TransportError("participant left")
        return self.answered(sdp, offered, answer)

    def read_offer(
        self, sdp: str, receiving: bool = False
    ) -> tuple[list[OfferedMedia], dict[str, str]]:
        """Check a client offer before it is applied: its m-sections, and the codec to put
        first for the tracks announced with one (mid -> MIME type). ``receiving``: the offer
        also has sections the client receives on (one peer connection): only those it sends
        on count against ``max_tracks``."""
        if self.closed:
            raise TransportError("participant left")
        offered = parse_offer(sdp)
        media = [m for m in offered if m.kind in ("audio", "video")]
        if receiving:
            if len(media) > MAX_SECTIONS:
                raise TransportError(f"at most {MAX_SECTIONS} media sections")
            media = [m for m in media if m.sending]
        if len(media) > self.max_tracks:
            raise TransportError(f"at most {self.max_tracks} media sections")
        if (media or not receiving) and not self._may_publish(None):
            raise PermissionDenied("not allowed to publish")
        prefer = {
            m.mid: req.codec
            for m in offered
            if (req := self.requests.get(m.msid_track)) is not None and req.codec
        }
        return offered, prefer

    def answered(self, sdp: str, offered: list[OfferedMedia], answer: str) -> str:
        """Our answer to ``sdp`` was made: publish and unpublish the tracks it sends, and
        return the answer completed (simulcast accepted, Opus options kept)."""
        simulcast = offered_simulcast(sdp)
        for spec in simulcast.values():
            self.router.rid_ext_id = spec["extensions"][RID]
            self.router.rrid_ext_id = spec["extensions"].get(REPAIRED_RID, 0)
        self._sync_tracks(offered, simulcast)
        answer = keep_opus_options(sdp, accept_simulcast(answer, simulcast))
        # transport-cc on the sections it sends: its own congestion control then follows
        # what arrives here (aiortc's answer leaves the extension out)
        sending = {m.mid for m in offered if m.kind in ("audio", "video") and m.sending}
        answer = answer_transport_cc(sdp, answer, sending)
        ext_id = answered_extension(answer, TRANSPORT_CC_URI) if sending else None
        if ext_id is None:
            self.twcc = None
        elif self.twcc is None or self.twcc.ext_id != ext_id:
            self.twcc = TwccResponder(ext_id, self.rtcp_ssrc)
        return answer

    def _sync_tracks(self, offered: list[OfferedMedia], simulcast: dict[str, dict]) -> None:
        assert self.transport is not None
        negotiated = {m.mid: m for m in self.transport.negotiated()}
        for media in negotiated.values():
            if SDES_MID in media.extensions:
                self.router.mid_ext_id = media.extensions[SDES_MID]
        by_mid = {t.mid: t for t in self.tracks.values()}
        for m in offered:
            if m.kind not in ("audio", "video"):
                continue
            existing = by_mid.get(m.mid)
            neg = negotiated.get(m.mid)
            codec = neg.media_codec() if neg is not None else None
            if not m.sending or codec is None or neg is None:
                if existing is not None:
                    self.unpublish(existing.sid)
                continue
            if existing is not None:
                self.router.announce(existing, m.ssrcs, m.rtx)
                continue
            req = self.requests.pop(m.msid_track, None)
            if req is None:
                req = next((r for r in self.requests.values() if r.kind == m.kind), None)
                if req is not None:
                    del self.requests[req.cid]
            if req is None:
                source = "camera" if m.kind == "video" else "microphone"
                if not self._may_publish(source):
                    continue  # not announced and not allowed: its media is never forwarded
                req = TrackRequest(new_sid("TR"), m.msid_track, m.kind, source)
            track = Publisher(
                sid=req.sid,
                participant_sid=self.participant_sid,
                kind=m.kind,
                source=req.source,
                mid=m.mid,
                codec=codec,
                extensions=dict(neg.extensions),
                send_rtcp=self.transport.send_rtcp,
                rtcp_ssrc=self.rtcp_ssrc,
                name=req.name,
                width=req.width,
                height=req.height,
                cid=req.cid,
                rids=lowest_first(simulcast[m.mid]["rids"])
                if m.mid in simulcast and m.kind == "video"
                else None,
                stats=self._stats,
                rtx_payload_type=_rtx_for(neg.codecs, codec.payload_type),
            )
            track.muted = req.muted  # before anyone hears of it: never forwarded unmuted
            self.tracks[track.sid] = track
            self.router.add(track, m.ssrcs, m.rtx)
            self._on_published(track)

    def unpublish(self, track_sid: str) -> Publisher:
        """Stop publishing a track (its subscribers are told through ``on_unpublished``)."""
        track = self.tracks.pop(track_sid, None)
        if track is None:
            raise KeyError(track_sid)
        self.router.remove(track)
        track.close()
        self._on_unpublished(track)
        return track

    # -- media from the client -----------------------------------------------------------
    def _on_rtp(self, data: bytes, now: float) -> None:
        if len(data) < 12:
            self._stats.retired_drops[DropReason.INVALID] += 1
            return
        twcc = self.twcc
        if twcc is not None:  # TwccResponder.record, inlined: every packet, padding too
            if len(twcc.packets) < twcc.limit:
                twcc.packets.append((data, now))
            else:
                twcc.dropped += 1
        entry = self.router.route(data)
        if entry is None:
            if self.router.unknown == 1:
                logger.info("participant %s: RTP of an unknown SSRC dropped", self.participant_sid)
            return
        track, layer, rtx = entry
        if rtx:  # a retransmission, most often one we asked for: the original inside
            if layer.ssrc is None:  # no packet of its stream yet: cannot be one we asked for
                track.drops[DropReason.PADDING] += 1
                return
            original = unwrap_rtx(data, track.codec.payload_type, layer.ssrc)
            if original is None:
                track.drops[DropReason.PADDING] += 1
                return
            track.on_rtp(bytes(original), now, layer)
            return
        track.on_rtp(data, now, layer)

    def _on_rtcp(self, data: bytes) -> None:
        now = time.monotonic()
        for pt, _fmt, pkt in rtcp.iter_rtcp(data):
            if pt == rtcp.SR:
                sr = rtcp.parse_sr(pkt)
                if sr is not None:
                    track = self.router.track_of_ssrc(sr[0])
                    if track is not None:
                        track.on_sender_report(sr[0], sr[1], sr[2], now)

    def _on_state(self, state: str) -> None:
        if state == "failed":
            self._on_failed("ice_failed")
        elif state == "closed" and self.ends_with_connection and not self.closed:
            self._on_failed("closed")

    def handle_rtcp(self, data: bytes) -> None:
        """A compound RTCP packet from the client, on a transport shared with the receiving
        side (which reads the same packet for what concerns it)."""
        self._on_rtcp(data)

    def send_feedback(self) -> None:
        """Receiver report and REMB to the client, so that its encoder can adapt."""
        transport = self.transport
        if transport is None or not self.tracks:
            return
        blocks = [b for t in self.tracks.values() for b in t.receiver_report_blocks()]
        if not blocks:
            return
        ssrcs = [b[0] for b in blocks]
        ingress = sum(layer.bitrate for t in self.tracks.values() for layer in t.layers)
        lost = max(b[1] for b in blocks) / 256
        remb = self.rate.update(ingress, lost, time.monotonic())
        packet = rtcp.build_rr(self.rtcp_ssrc, blocks[:31]) + rtcp.build_remb(
            self.rtcp_ssrc, remb, ssrcs
        )
        transport.send_rtcp(packet)

    def send_transport_feedback(self) -> None:
        """Transport-cc feedback on what arrived since the last call, if negotiated (the
        room's timer calls this every FEEDBACK_INTERVAL)."""
        twcc, transport = self.twcc, self.transport
        if twcc is None or transport is None or self.closed or not twcc.packets:
            return
        for packet in twcc.feedback():
            transport.send_rtcp(packet)
            self.twcc_feedbacks += 1

    async def add_ice_candidate(self, candidate: dict | None) -> None:
        """A candidate the client trickled for this connection."""
        if self.transport is None:
            raise TransportError("no publisher connection yet: send an offer first")
        await self.transport.add_ice_candidate(candidate)

    async def close(self) -> None:
        """Close every track and the connection."""
        if self.closed:
            return
        self.closed = True
        self._stats.retire(twcc_feedback_out=self.twcc_feedbacks)
        self.twcc_feedbacks = 0  # counted in the totals now, not in its room's
        for track in list(self.tracks.values()):
            track.close()
        self._stats.retired_drops[DropReason.UNKNOWN_SSRC] += self.router.unknown
        self.router.unknown = 0
        self.router.clear()
        if self.transport is not None and not self.shared:
            await self.transport.close()


#: the rids browsers and LiveKit's SDKs give simulcast layers: quarter, half, full size
RID_ORDER = {"q": 0, "h": 1, "f": 2}


def lowest_first(rids: list[str]) -> list[str]:
    """Simulcast rids lowest layer first. An offer lists them in the client's order (LiveKit's
    Rust SDK ``f;h;q``, browsers ``q;h;f``): the well-known names are put in size order, any
    other set stays in the offer's order."""
    if len(set(rids)) == len(rids) and all(r in RID_ORDER for r in rids):
        return sorted(rids, key=RID_ORDER.__getitem__)
    return list(rids)


def _rtx_for(codecs: list, payload_type: int) -> int | None:
    """The RTX payload type negotiated for a codec's payload type (its ``apt``), if any."""
    for c in codecs:
        if c.is_rtx and str((c.parameters or {}).get("apt")) == str(payload_type):
            return int(c.payload_type)
    return None
