"""DownTrack: one subscriber's copy of one published track (a Sink of its Publisher).

Takes the publisher's packets as bytes; the Forwarder decides, per packet, whether it goes out
(which layer, a switch at a keyframe) or is dropped, and why. What goes out has its SSRC,
payload type, sequence number, timestamp and header-extension ids rewritten (Munger) and is
handed to the subscriber's transport. Answers NACKs from the publisher's retransmission cache,
each packet at most once a round trip and within a byte budget, and writes the sender reports
for its stream.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from struct import pack, unpack_from
from typing import TYPE_CHECKING

from .forwarder import (
    ALL_TEMPORAL,
    FORWARD,
    SWITCH,
    TEMPORAL_LEVELS,
    Forwarder,
    SvcForwarder,
)
from .munger import PREVIOUS_EPOCH_FOR, Munger, seq_diff
from .rtp import rtcp
from .rtp.codecs import vp8_descriptor, vp8_rewrite
from .rtp.extensions import REPAIRED_RID, RID, SDES_MID
from .rtp.header import build_ext_table, payload_offset, rewrite_extensions, rewrite_header
from .rtp.vp9 import E_BIT
from .stats import DropReason, new_drops

if TYPE_CHECKING:
    from .publisher import Publisher

try:  # the compiled rewrite (visio_sfu/_batch.c); without it, the same in Python
    from ._batch import rewrite_rtp as _rewrite_rtp  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the build
    _rewrite_rtp = None

logger = logging.getLogger(__name__)

_NOT_BOUND = int(DropReason.NOT_BOUND)
_MUNGER_REJECT = int(DropReason.MUNGER_REJECT)
_SEND_FAILED = int(DropReason.SEND_FAILED)
_NACK_DUPLICATE = int(DropReason.NACK_DUPLICATE)
_NACK_BUDGET = int(DropReason.NACK_BUDGET)
_NACK_MISSING = int(DropReason.NACK_MISSING)
_INVALID = int(DropReason.INVALID)
SVC_SEQ_RING = 1024  # outgoing -> source sequence numbers remembered (VP9 SVC, for NACKs)
MAX_SVC_HOLE = 64  # a larger gap in a VP9 SVC stream is not waited for (a keyframe will come)
PADDING = bytes((0, 0, 0, 4))  # an RTP padding-only payload: four octets, the last its count

#: a packet is resent at most once per round trip (this long while no RTT is measured)
DEFAULT_RTT = 0.1
MIN_RESEND_INTERVAL = 0.02
#: a NACK for one of the last this many sequence numbers before the current epoch (what the
#: transceiver carried before: another track, or this one before a move) is answered with
#: padding, since nothing is left to resend (see DownTrack._fill_gap)
GAP_FILL = 512
#: retransmissions may cost this share of the layer's own rate (bytes), with a floor, and
#: save up at most BUDGET_SECONDS of it: a subscriber NACKing everything gets a bounded copy
RETRANSMIT_SHARE = 0.5
RETRANSMIT_FLOOR = 4_000  # bytes per second: enough to repair an audio track
BUDGET_SECONDS = 1.0

MAX_SVC_LAYER = 2  # the highest spatial layer of a VP9 SVC track a subscriber may get

RECENT = 32  # packets kept for probing
FREEZE = 0.5  # seconds without a forwarded video packet that count as a freeze
#: VP9 SVC with upper temporal layers dropped: a freeze is also over this many frame
#: intervals of what is forwarded (T0 of a 6 fps L3T3 publisher is 1.5 fps: 1.67 s)
FREEZE_FRAMES = 2.5

#: extensions that only mean something on the publisher's connection: never forwarded
PUBLISHER_ONLY_EXTENSIONS = frozenset({SDES_MID, RID, REPAIRED_RID})


def extension_table(publisher: dict[str, int], subscriber: dict[str, int]) -> bytes | None:
    """Translation table publisher id -> subscriber id (0 drops), or None if nothing changes."""
    mapping = {}
    identity = True
    for uri, pub_id in publisher.items():
        sub_id = 0 if uri in PUBLISHER_ONLY_EXTENSIONS else subscriber.get(uri, 0)
        mapping[pub_id] = sub_id
        if sub_id != pub_id:
            identity = False
    return None if identity else build_ext_table(mapping)


def rewrite_packet(
    data: bytes | bytearray, pt: int, seq: int, ts: int, ssrc: int, table: bytes | None
) -> tuple[bytearray, int]:
    """A copy of an RTP packet with payload type, sequence number, timestamp and SSRC
    rewritten (marker kept) and, unless ``table`` is None, its header-extension ids mapped
    (rewrite_extensions); returns it and where rewrite_extensions left a hole (-1: none).
    The Python fallback of ``visio_sfu._batch.rewrite_rtp``, which gives the same bytes."""
    buf = bytearray(data)
    rewrite_header(buf, pt, seq, ts, ssrc)
    return buf, (rewrite_extensions(buf, table) if table is not None else -1)


#: what the forwarding path rewrites each packet with: compiled when built
rewrite = _rewrite_rtp if _rewrite_rtp is not None else rewrite_packet


class _DownTrackPath:
    """``write`` when visio_sfu._batch is not built: the Python path for every packet. Its
    DownTrackCore does the steady state in C (the layer forwarded is the one chosen, the
    munger on this source, the publisher not back from a pause: the same bytes and state as
    ``_write``, tests/unit/test_downtrack_core.py) and hands anything else to ``_write``."""

    def write(
        self, data: bytes, ssrc: int, seq: int, ts: int, key: bool, now: float, layer: int = 0
    ) -> None:
        """Forward one publisher packet of ``layer`` to the subscriber, or count why not."""
        self._write(data, ssrc, seq, ts, key, now, layer)

    def _write(
        self, data: bytes, ssrc: int, seq: int, ts: int, key: bool, now: float, layer: int = 0
    ) -> None:
        raise NotImplementedError


if TYPE_CHECKING:
    _DownTrackBase = _DownTrackPath
else:
    try:
        from ._batch import DownTrackCore as _DownTrackBase
    except ImportError:  # pragma: no cover - depends on the build
        _DownTrackBase = _DownTrackPath


class DownTrack(_DownTrackBase):
    """Forwards one layer of one Publisher to one subscriber transport."""

    def __init__(
        self,
        track: Publisher,
        send_rtp: Callable[[bytes | bytearray], bool],
        subscriber_sid: str,
    ) -> None:
        self.track = track
        self.subscriber_sid = subscriber_sid
        self._send = send_rtp
        self.ssrc = 0
        self.payload_type = 0
        self.rtx_ssrc = 0  # 0: no RTX stream, retransmissions go on the media stream
        self.rtx_payload_type = 0
        self._rtx_seq = 0
        self.ext_table: bytes | None = None
        self.munger = Munger(track.codec.clock_rate)
        #: a VP9 SVC track: layers are chosen inside its one stream, and dropped packets leave
        #: no gap, so outgoing sequence numbers map to source ones through a ring (NACKs)
        self._svc = track.svc
        self.forwarder: Forwarder | SvcForwarder = (
            SvcForwarder() if self._svc else Forwarder(track.kind == "video")
        )
        self._svc_seqs = [-1] * SVC_SEQ_RING if self._svc else []
        self._svc_missing: dict[int, int] = {}  # source seq of a gap -> outgoing seq kept
        self.bound = False  # negotiated: ssrc, payload type and extensions known
        # what the subscriber asked for (subscription control and adaptive stream)
        self.visible = True
        self.max_height = 0  # 0 = no limit
        self.max_fps = 0.0  # 0 = no limit (VP9 SVC: caps the temporal layer)
        #: VP9 SVC: the temporal layer bandwidth allows (the allocator's level), before the
        #: frame-rate cap
        self.temporal_level = ALL_TEMPORAL
        self._temporal_cap = ALL_TEMPORAL
        #: the highest layer this track has (simulcast, or spatial in VP9 SVC)
        self.top_layer = MAX_SVC_LAYER if self._svc else len(track.layers) - 1
        self.max_layer = self.top_layer
        self.went_down_at = float("-inf")  # when bandwidth last made the allocator go down
        self._vp8 = track.simulcast and track.codec.mime.lower() == "video/vp8"
        self._vp8_switch = True
        self._pid_offset = 0
        self._tl0_offset = 0
        self._last_pid = -1
        self._last_tl0 = -1
        #: the VP8 offsets of the epoch before this one (its packets, resent, keep them),
        #: and that epoch (Munger.previous) they belong to
        self._prev_vp8_offsets = (0, 0)
        self._prev_vp8_epoch: tuple | None = None
        self.packets = 0
        self.bytes = 0
        self.drops = new_drops()  # packets not forwarded (or not resent), by DropReason
        self.nacks = 0
        self.retransmits = 0
        self.rtt: float | None = None  # seconds, from the subscriber's receiver reports
        self._resent: dict[int, float] = {}  # outgoing seq -> when it was last resent
        self._budget = RETRANSMIT_FLOOR * BUDGET_SECONDS  # bytes of retransmission left
        self._budget_at: float | None = None
        self._reports: dict[int, float] = {}  # our SR's middle NTP bits -> when it was sent
        self._retired = False
        self.fraction_lost = 0
        self.jitter = 0
        self.closed = False
        #: writes the connection's transport-wide sequence number into each packet just
        #: before it leaves (SubscribeConnection sets it when transport-cc was negotiated)
        self.stamp: Callable[[bytearray, float, int], None] | None = None
        #: the last packets sent, resent on the RTX stream to probe the path (duplicates the
        #: receiver discards, but their transport-wide numbers are counted)
        self.recent: deque[bytearray] = deque(maxlen=RECENT)
        #: video gaps over ``freeze_after`` seconds while the publisher sent and the subscriber
        #: wanted the video (not while it was paused: hidden, or given no layer)
        self.freezes = 0
        self.freeze_seconds = 0.0
        self.freeze_log: deque[tuple[float, float]] = deque(maxlen=32)  # (end, seconds)
        self._last_out = 0.0  # when a packet was last forwarded (video)
        self._last_in = 0.0  # when the publisher's last packet came (forwarded or not)
        #: the gap that counts as a freeze: FREEZE, longer for a VP9 SVC subscriber given a
        #: low frame rate (set with its temporal layer, see _update_freeze_after)
        self.freeze_after = FREEZE
        #: a gap in the publisher's packets longer than this is a pause, not a freeze of
        #: ours (FREEZE: the compiled write hands such a packet to _write, which knows)
        self.resume_gap = FREEZE

    # -- layer state (the Forwarder's) -------------------------------------------------
    @property
    def current_layer(self) -> int:
        """The layer forwarded now; -1 = none (a video waits for a keyframe)."""
        return self.forwarder.current

    @current_layer.setter
    def current_layer(self, value: int) -> None:
        self.forwarder.current = value

    @property
    def target_layer(self) -> int:
        """The layer to forward, from its next keyframe; -1 = paused."""
        return self.forwarder.target

    @property
    def switches(self) -> int:
        """Switches from one layer to another (each at a keyframe); starts are not counted."""
        return self.forwarder.switches

    @property
    def need_keyframe(self) -> bool:
        """True while waiting for a keyframe to start (or restart) forwarding."""
        return self.forwarder.waiting

    def bind(
        self,
        ssrc: int,
        payload_type: int,
        extensions: dict[str, int],
        rtx_ssrc: int = 0,
        rtx_payload_type: int = 0,
    ) -> None:
        """Set what the subscriber's connection negotiated for this track (with its RTX
        stream, if any: retransmissions then go there, RFC 4588)."""
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.rtx_ssrc = rtx_ssrc if rtx_payload_type else 0
        self.rtx_payload_type = rtx_payload_type
        self.ext_table = extension_table(self.track.extensions, extensions)
        self.bound = True
        self.restart()

    def restart(self) -> None:
        """Start again from a keyframe (new transport path, unmute, publisher change)."""
        layer = self.forwarder.restart()
        if layer >= 0:
            self.track.request_keyframe(layer=0 if self._svc else layer)

    def set_target(self, layer: int, now: float | None = None) -> None:
        """Forward ``layer`` from its next keyframe on (-1: pause now). A paused video is not
        frozen: the freeze clock stops, and starts again at ``now`` when it is wanted again."""
        if layer < 0:
            self._last_out = 0.0
        elif self.forwarder.target < 0:
            self._last_out = now or 0.0  # no time given: from the first packet forwarded
        if self.forwarder.set_target(layer):
            self.track.request_keyframe(now, 0 if self._svc else layer)

    @property
    def level(self) -> int:
        """The allocator's level for this track (allocator.LEVELS): the simulcast layer; for
        VP9 SVC, spatial layer 0 at temporal layer ``level`` below TEMPORAL_LEVELS (a lower
        frame rate), else spatial layer ``level - TEMPORAL_LEVELS`` at full rate; -1 = paused."""
        target = self.forwarder.target
        if not self._svc or target < 0:
            return target
        if target > 0:
            return target + TEMPORAL_LEVELS
        return min(self.temporal_level, TEMPORAL_LEVELS)

    def set_level(self, level: int, now: float | None = None) -> None:
        """Forward the allocator's ``level`` (see ``level``): spatial and temporal layers."""
        if not self._svc or level < 0:
            self.set_target(level, now)
            return
        self.temporal_level = level if level < TEMPORAL_LEVELS else ALL_TEMPORAL
        self.set_target(max(level - TEMPORAL_LEVELS, 0), now)
        self.cap_temporal(self._temporal_cap)

    def cap_temporal(self, cap: int) -> None:
        """VP9 SVC: forward no temporal layer above ``cap`` (the subscriber's frame rate).
        The allocator calls it every round, which keeps ``freeze_after`` up to date."""
        self._temporal_cap = cap
        fwd = self.forwarder
        assert isinstance(fwd, SvcForwarder)
        fwd.temporal_target = min(self.temporal_level, cap)
        self._update_freeze_after(fwd)

    def _update_freeze_after(self, fwd: SvcForwarder) -> None:
        """The freeze threshold for the frame rate forwarded: FREEZE_FRAMES intervals of the
        temporal layers forwarded (on the spatial layer chosen), FREEZE at least, and FREEZE
        when every layer is. The lower of the layers wanted and forwarded counts: going up
        takes effect at a switching point, so the gap before it keeps the longer threshold
        until the next round."""
        t = min(fwd.temporal, fwd.temporal_target)
        if t >= ALL_TEMPORAL:
            self.freeze_after = FREEZE
            return
        spatial = self.track.spatial
        fps = spatial[min(max(fwd.target, 0), len(spatial) - 1)].frame_rate(t)
        self.freeze_after = max(FREEZE, FREEZE_FRAMES / fps) if fps > 0 else FREEZE

    # -- hot path ----------------------------------------------------------------------
    def _write(
        self, data: bytes, ssrc: int, seq: int, ts: int, key: bool, now: float, layer: int = 0
    ) -> None:
        """write() in Python: every case (the compiled write does the steady state)."""
        if not self.bound:
            self.drops[_NOT_BOUND] += 1
            return
        if self._svc:
            self._write_svc(data, ssrc, seq, ts, key, now)
            return
        fwd = self.forwarder
        if TYPE_CHECKING:
            assert isinstance(fwd, Forwarder)
        video = fwd.video
        if video:
            arrived_before, self._last_in = self._last_in, now
            if now - arrived_before > self.resume_gap:
                self._publisher_resumed(arrived_before, now)
        if layer == fwd.current and layer == fwd.target:
            decision = FORWARD  # the common case, decided as Forwarder.decide would
        else:
            decision = fwd.decide(layer, key)
            if fwd.keyframe_wanted >= 0:
                self.track.request_keyframe(now, fwd.keyframe_wanted)  # throttled by the track
                fwd.keyframe_wanted = -1
            if decision < FORWARD:
                self.drops[decision] += 1
                return
            if decision == SWITCH:
                self._vp8_switch = True
        out = self.munger.translate(ssrc, seq, ts, now)
        if out is None:
            self.drops[_MUNGER_REJECT] += 1
            return
        buf, hole = rewrite(data, self.payload_type, out[0], out[1], self.ssrc, self.ext_table)
        if self._vp8:
            self._munge_vp8(buf)
        stamp = self.stamp
        if stamp is not None:
            stamp(buf, now, hole)
            self.recent.append(buf)
        if video:
            last = self._last_out
            if now - last > self.freeze_after and last > 0:
                self._freeze(now - last, now)
            self._last_out = now
        if self._send(buf):
            self.packets += 1
            self.bytes += len(buf)
        else:
            self._send_failed()

    def _send_failed(self) -> None:
        """The transport did not take a packet: counted; a video whose transport is not up yet
        starts again at a keyframe."""
        self.drops[_SEND_FAILED] += 1
        fwd = self.forwarder
        if fwd.video and self.packets == 0:
            fwd.current = -1

    def _freeze(self, seconds: float, end: float) -> None:
        """Count a freeze of ``seconds`` that ended at ``end``."""
        self.freezes += 1
        self.freeze_seconds += seconds
        self.freeze_log.append((end, seconds))

    def _publisher_resumed(self, stopped: float, now: float) -> None:
        """The publisher sent nothing from ``stopped`` to ``now`` (muted, its network): no
        freeze of ours. One that began before counts up to ``stopped``; the clock restarts."""
        last = self._last_out
        if last > 0:
            if stopped - last > self.freeze_after:
                self._freeze(stopped - last, stopped)
            self._last_out = now

    def _write_svc(self, data: bytes, ssrc: int, seq: int, ts: int, key: bool, now: float) -> None:
        """write() for a VP9 SVC track: drop what is above the chosen layers (leaving no gap
        in the outgoing numbering) and mark the end of each picture at the highest spatial
        layer forwarded."""
        fwd = self.forwarder
        assert isinstance(fwd, SvcForwarder)
        d = self.track.vp9  # the publisher parsed this packet's descriptor before fanning out
        if d is None:
            self.drops[_INVALID] += 1
            return
        arrived_before, self._last_in = self._last_in, now
        if now - arrived_before > FREEZE:
            self._publisher_resumed(arrived_before, now)
        munger = self.munger
        if munger.source != ssrc:
            self._svc_missing.clear()
        elif munger.started:
            ahead = seq_diff(seq, munger.highest_src_seq)
            if ahead <= 0:  # late: a retransmission of what the publisher lost on its way
                self._write_svc_late(data, seq, ts, d, now)
                return
            if 1 < ahead <= MAX_SVC_HOLE:  # a gap: keep outgoing numbers for what is missing
                for k in range(1, ahead):
                    src = (munger.highest_src_seq + k) & 0xFFFF
                    self._svc_missing[src] = (src + munger.seq_offset) & 0xFFFF
                while len(self._svc_missing) > 4 * MAX_SVC_HOLE:
                    del self._svc_missing[next(iter(self._svc_missing))]
        decision = fwd.decide_svc(d[0], d[1], d[2], d[3], key)
        if fwd.keyframe_wanted >= 0:
            self.track.request_keyframe(now, 0)  # one stream: its keyframe serves every layer
            fwd.keyframe_wanted = -1
        if decision < FORWARD:
            self.drops[decision] += 1
            self.munger.drop(ssrc, seq)
            return
        out = self.munger.translate(ssrc, seq, ts, now)
        if out is None:
            self.drops[_MUNGER_REJECT] += 1
            return
        buf, hole = rewrite(data, self.payload_type, out[0], out[1], self.ssrc, self.ext_table)
        marker = 0
        if d[0] & E_BIT and d[1] == fwd.current:
            marker = 0x80  # the last packet of the picture as this subscriber gets it
            buf[1] |= 0x80
        # what a NACK needs: the source packet, and the marker it went out with
        self._svc_seqs[out[0] % SVC_SEQ_RING] = (out[0] << 24) | (marker << 16) | seq
        last = self._last_out
        if now - last > self.freeze_after and last > 0:
            self._freeze(now - last, now)
        self._last_out = now
        if not self._send_svc(buf, now, hole) and self.packets == 0:
            fwd.current = -1  # transport not up yet: start again at a keyframe

    def _write_svc_late(
        self, data: bytes, seq: int, ts: int, d: tuple[int, int, int, bool], now: float
    ) -> None:
        """A VP9 SVC packet that fills a gap: sent with the outgoing number kept for it, or,
        when its layer is not forwarded, as a padding-only packet with that number, so that
        the subscriber sees no loss (it does not change the layer state: its picture is old)."""
        out_seq = self._svc_missing.pop(seq, None)
        if out_seq is None:
            self.drops[_MUNGER_REJECT] += 1  # older than the gaps we know, or sent already
            return
        fwd = self.forwarder
        assert isinstance(fwd, SvcForwarder)
        off = payload_offset(data)
        if 0 <= fwd.current and d[1] <= fwd.current and d[2] <= fwd.temporal:
            buf = bytearray(data)
            marker = 0x80 if d[0] & E_BIT and d[1] == fwd.current else 0
            self._svc_seqs[out_seq % SVC_SEQ_RING] = (out_seq << 24) | (marker << 16) | seq
        else:
            buf = bytearray(data[:off]) + PADDING  # header (and extensions) kept
            buf[0] |= 0x20
            marker = 0
        rewrite_header(buf, self.payload_type, out_seq, self.munger.rtp_time(ts), self.ssrc)
        buf[1] = (buf[1] & 0x7F) | marker
        self._send_svc(buf, now)

    def _send_svc(self, buf: bytearray, now: float, hole: int | None = None) -> bool:
        """Extensions (unless rewritten already: ``hole`` given), transport-wide number, send,
        count: the end of both VP9 SVC paths."""
        if hole is None:
            hole = -1
            if self.ext_table is not None:
                hole = rewrite_extensions(buf, self.ext_table)
        if self.stamp is not None:
            self.stamp(buf, now, hole)
            self.recent.append(buf)
        if self._send(buf):
            self.packets += 1
            self.bytes += len(buf)
            return True
        self.drops[_SEND_FAILED] += 1
        return False

    def _source_seq(self, out_seq: int) -> int | None:
        """The publisher's sequence number behind one we sent, if still known."""
        if not self._svc:
            return self.munger.source_seq(out_seq)
        entry = self._svc_seqs[out_seq % SVC_SEQ_RING]
        return entry & 0xFFFF if entry >= 0 and entry >> 24 == out_seq else None

    def _munge_vp8(self, buf: bytearray) -> None:
        """Keep VP8 picture id and TL0PICIDX continuous across layer switches."""
        off = payload_offset(buf)
        d = vp8_descriptor(memoryview(buf)[off:]) if off >= 0 else None
        if d is None or d[2] == 0:
            return
        pid, bits, tl0 = d[1], d[2], d[3]
        mask = 0x7FFF if bits == 15 else 0x7F
        if self._vp8_switch:
            self._vp8_switch = False
            if self.munger.previous is not self._prev_vp8_epoch:  # a new source, not a restart
                self._prev_vp8_epoch = self.munger.previous
                self._prev_vp8_offsets = (self._pid_offset, self._tl0_offset)
            self._pid_offset = (self._last_pid + 1 - pid) if self._last_pid >= 0 else 0
            if tl0 >= 0:
                self._tl0_offset = (self._last_tl0 + 1 - tl0) if self._last_tl0 >= 0 else 0
        out_pid = (pid + self._pid_offset) & mask
        out_tl0 = (tl0 + self._tl0_offset) & 0xFF if tl0 >= 0 else -1
        self._last_pid = out_pid
        if out_tl0 >= 0:
            self._last_tl0 = out_tl0
        vp8_rewrite(buf, off, out_pid, out_tl0)

    # -- feedback ----------------------------------------------------------------------
    def _fill_gap(self, out_seq: int) -> bool:
        """Answer a NACK for a sequence number sent before the current epoch (the end of what
        this transceiver carried before it was reused, which the subscriber missed) with a
        padding-only packet: nothing is left to resend, and a receiver that waits for every
        number (aiortc's jitter buffer) would stall for seconds; browsers count padding as a
        number received. Its timestamp is the epoch's first, so it joins no earlier frame."""
        m = self.munger
        if not self.bound or not 0 < seq_diff(m.epoch_first_seq, out_seq) <= GAP_FILL:
            return False
        return self._pad(out_seq, m.epoch_first_ts)

    def _pad(self, out_seq: int, ts: int) -> bool:
        """Send a padding-only packet numbered ``out_seq`` (a NACK answered with nothing to
        resend)."""
        pt = self.payload_type & 0x7F
        header = pack("!BBHII", 0xA0, pt, out_seq, ts, self.ssrc)  # P bit set
        return self._send(bytearray(header + b"\x00\x00\x00\x04"))  # 4 bytes of padding

    def handle_nack(self, seqs: list[int], now: float) -> int:
        """Resend the packets a subscriber reports lost, from the cache; returns how many.

        Bounded, whatever the subscriber sends: each packet at most once per round trip
        (repeated sequence numbers are not amplified), and within a byte budget that refills
        at a share of the layer's own rate. What is refused is counted by reason.
        """
        self.nacks += 1
        current = self.forwarder.current
        if current < 0:
            return 0
        layer = self.track.layers[0 if self._svc else current]
        rate = max(layer.bitrate / 8 * RETRANSMIT_SHARE, RETRANSMIT_FLOOR)
        if self._budget_at is None:
            self._budget = rate * BUDGET_SECONDS  # the first NACK finds one second saved
        else:
            elapsed = max(now - self._budget_at, 0.0)
            self._budget = min(self._budget + elapsed * rate, rate * BUDGET_SECONDS)
        self._budget_at = now
        # a receiver asks again about one round trip after its first NACK: refuse repeats
        # that come sooner than 3/4 of it
        rtt = self.rtt if self.rtt is not None else DEFAULT_RTT
        interval = max(0.75 * rtt, MIN_RESEND_INTERVAL)
        resent = self._resent
        if len(resent) > 4096:  # forget what is too old to matter
            for seq in [k for k, t in resent.items() if now - t > 1.0]:
                del resent[seq]
        cache = layer.cache
        drops = self.drops
        sent = 0
        for out_seq in seqs:
            last = resent.get(out_seq)
            if last is not None and now - last < interval:
                drops[_NACK_DUPLICATE] += 1
                continue
            src_seq = self._source_seq(out_seq)
            data = cache.get(src_seq, now) if src_seq is not None else None
            ts_offset = vp8_offsets = None
            if src_seq is None and not self._svc:
                # sent before the last layer switch: from the layer switched from, as it was
                # sent (a padding packet with the epoch's first timestamp in its place makes
                # an empty frame of its own between that layer's frames: aiortc's decoder
                # takes it for the end of the stream)
                data, ts_offset = self._previous_epoch_packet(out_seq, now)
                vp8_offsets = self._prev_vp8_offsets
            if data is None:
                if self._fill_gap(out_seq):
                    resent[out_seq] = now
                    continue
                drops[_NACK_MISSING] += 1
                continue
            ts = unpack_from("!I", data, 4)[0]
            if ts_offset is None:
                out_ts = self.munger.rtp_time(ts)
            else:
                out_ts = (ts + ts_offset) & 0xFFFFFFFF
            if len(data) > self._budget:
                drops[_NACK_BUDGET] += 1  # a padding packet in its place is refused all the same
                # over the budget, a packet of a layer being left for a lower one (the link
                # is congested: the switch is made for it) is answered with a padding packet
                # in its place: the subscriber's wait for that number ends (aiortc's jitter
                # buffer waits seconds for it, and asks only once), the new layer's keyframe
                # follows; the packet's own timestamp keeps it inside its frame
                leaving = ts_offset is not None or self.forwarder.target < current
                if not self._svc and leaving and self._pad(out_seq, out_ts):
                    resent[out_seq] = now
                continue
            self._budget -= len(data)
            resent[out_seq] = now
            buf, hole = rewrite(data, self.payload_type, out_seq, out_ts, self.ssrc, self.ext_table)
            if self._vp8:
                self._munge_vp8_again(buf, vp8_offsets)
            if self._svc and self._svc_seqs[out_seq % SVC_SEQ_RING] & 0x800000:
                buf[1] |= 0x80  # as when it was first sent
            if self.rtx_ssrc:
                buf = self.rtx_packet(buf)
            if self.stamp is not None:
                self.stamp(buf, now, hole)
            if self._send(buf):
                sent += 1
            else:
                drops[_SEND_FAILED] += 1
        self.retransmits += sent
        return sent

    def _previous_epoch_packet(self, out_seq: int, now: float) -> tuple[bytes | None, int]:
        """The packet behind an outgoing number sent before the last layer switch, from the
        cache of the layer switched from, and that epoch's timestamp offset. Up to a few
        seconds old: the subscriber is still waiting for that number (aiortc asks again for
        over a second while a congested link delays its packets), and nothing else fills the
        hole."""
        prev = self.munger.previous_source_seq(out_seq)
        if prev is None:
            return None, 0
        source, src_seq, ts_offset = prev
        layer = next((x for x in self.track.layers if x.ssrc == source), None)
        if layer is None:
            return None, 0
        return layer.cache.get_within(src_seq, now, PREVIOUS_EPOCH_FOR), ts_offset

    def _munge_vp8_again(self, buf: bytearray, offsets: tuple[int, int] | None) -> None:
        """A resent VP8 packet's picture id and TL0PICIDX as when it was first sent (the
        current epoch's offsets, or ``offsets``: the previous epoch's); changes no state."""
        off = payload_offset(buf)
        d = vp8_descriptor(memoryview(buf)[off:]) if off >= 0 else None
        if d is None or d[2] == 0:
            return
        pid_offset, tl0_offset = offsets or (self._pid_offset, self._tl0_offset)
        pid, bits, tl0 = d[1], d[2], d[3]
        mask = 0x7FFF if bits == 15 else 0x7F
        out_tl0 = (tl0 + tl0_offset) & 0xFF if tl0 >= 0 else -1
        vp8_rewrite(buf, off, (pid + pid_offset) & mask, out_tl0)

    def rtx_packet(self, buf: bytearray) -> bytearray:
        """A packet already sent (as it was sent) wrapped for the RTX stream (RFC 4588): its
        sequence number in front of its payload, the RTX payload type, SSRC and numbering."""
        off = payload_offset(buf)
        if off < 0:
            off = len(buf)
        out = bytearray(buf[:off])
        out += buf[2:4]  # the original sequence number
        out += memoryview(buf)[off:]
        self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
        ts = unpack_from("!I", buf, 4)[0]
        rewrite_header(out, self.rtx_payload_type, self._rtx_seq, ts, self.rtx_ssrc)
        return out

    def handle_report(
        self, fraction_lost: int, jitter: int, lsr: int = 0, dlsr: int = 0, now: float = 0.0
    ) -> None:
        """Record the subscriber's receiver report for this stream; with the last sender
        report it echoes (``lsr``, ``dlsr``), measure the round trip time."""
        self.fraction_lost = fraction_lost
        self.jitter = jitter
        sent = self._reports.get(lsr) if lsr else None
        if sent is not None:
            rtt = now - sent - dlsr / 65536
            if 0 <= rtt < 10:
                self.rtt = rtt if self.rtt is None else 0.8 * self.rtt + 0.2 * rtt

    def sender_report(self, now: float) -> bytes | None:
        """An RTCP sender report for this stream, mapping our RTP time to wall clock."""
        if not self.bound or not self.munger.started:
            return None
        src = self.track.source_time(now, 0 if self._svc else max(self.current_layer, 0))
        if src is not None:
            ntp, rtp_ts = src[0], self.munger.rtp_time(src[1])
        else:
            ntp = rtcp.ntp_now()
            elapsed = max(now - self.munger.last_time, 0.0)
            rtp_ts = (self.munger.last_ts + int(elapsed * self.track.codec.clock_rate)) & (
                0xFFFFFFFF
            )
        ntp &= 0xFFFFFFFFFFFFFFFF
        if len(self._reports) >= 8:
            self._reports.pop(next(iter(self._reports)))
        self._reports[(ntp >> 16) & 0xFFFFFFFF] = now
        return rtcp.build_sr(self.ssrc, ntp, rtp_ts, self.packets, self.bytes & 0xFFFFFFFF)

    def layer_info(self) -> dict:
        """Which layer this subscriber gets of the track, which it should get, how often it
        switched: what /metrics shows per subscriber."""
        return {
            "track": self.track.sid,
            "subscriber": self.subscriber_sid,
            "layer": self.current_layer,
            "target": self.target_layer,
            "switches": self.switches,
            "freezes": self.freezes,
            "freeze_seconds": self.freeze_seconds,
            "retransmits": self.retransmits,
            # VP9 SVC: the highest temporal layer forwarded now (ALL_TEMPORAL: every one)
            "temporal": self.forwarder.temporal
            if isinstance(self.forwarder, SvcForwarder)
            else None,
        }

    def retire(self) -> None:
        """Hand this DownTrack's counters to the SFU's totals, once."""
        if not self._retired:
            self._retired = True
            self.track.stats.retire(
                self.drops,
                packets_out=self.packets,
                bytes_out=self.bytes,
                retransmits=self.retransmits,
                nacks=self.nacks,
                layer_switches=self.switches,
                layer_starts=self.forwarder.starts,
            )

    def close(self) -> None:
        """Stop forwarding to this subscriber (also when its publisher closes)."""
        self.retire()
        self.closed = True
        self.bound = False
        self.track.detach(self)
