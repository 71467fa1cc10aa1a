"""Publisher: one published track, the source side of the forwarding path.

Receives the publisher's decrypted RTP as bytes, keeps receive statistics and the
retransmission cache, detects keyframes, and fans each packet out to every attached ``Sink``:
a DownTrack (one subscriber's copy) is one; a recorder or an audio tap will be others.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable
from struct import unpack_from
from typing import TYPE_CHECKING, Any, Protocol

from .events import TrackInfo
from .media import Codec
from .packetcache import PacketCache
from .rtp import rtcp
from .rtp.codecs import h264_is_keyframe, vp8_is_keyframe
from .rtp.extensions import AUDIO_LEVEL
from .rtp.header import find_extension, payload_offset
from .rtp.vp9 import vp9_is_keyframe, vp9_layers
from .stats import DropReason, Stats, new_drops

if TYPE_CHECKING:
    from .downtrack import DownTrack

logger = logging.getLogger(__name__)

#: spatial layers of a VP9 SVC track the SFU chooses among (L3T3_KEY: three)
MAX_SPATIAL = 3
#: temporal layers of a VP9 SVC track measured apart (L3T3_KEY: three; higher ones count
#: with the third)
MAX_TEMPORAL = 3
TEMPORAL_LIVE = 1.0  # seconds: a temporal layer that sent nothing for longer is not sent
KEYFRAME_REQUEST_INTERVAL = 0.5  # seconds between two PLIs to one publisher track
#: repairing loss between a publisher and the server: a gap is asked for again (NACK) every
#: NACK_INTERVAL, or every NACK_RTT_FACTOR round trips when the publisher is further away
#: (asked sooner, the retransmission could not have come yet: a duplicate is all it brings),
#: at most NACK_TRIES times and for at most NACK_GIVE_UP seconds; a jump larger than MAX_GAP
#: is a restart, not a loss; at most MAX_MISSING sequence numbers are tracked
NACK_INTERVAL = 0.05
NACK_RTT_FACTOR = 1.25
RTT_SAMPLES = 16
NACK_TRIES = 5
NACK_GIVE_UP = 1.0
MAX_GAP = 128
MAX_MISSING = 256  # more missing at once is a burst: forget them, ask for a keyframe
MAX_NACK_ITEMS = 64  # sequence numbers in one NACK

#: what ReceiveStats.update says of a packet
NEW, LATE, DUPLICATE, BURST = 0, 1, 2, 3


class Sink(Protocol):
    """What a Publisher feeds: every packet it forwards, in the publisher's numbering."""

    def write(
        self, data: bytes, ssrc: int, seq: int, ts: int, key: bool, now: float, layer: int
    ) -> None:
        """One packet of ``layer`` (``key``: it starts a keyframe). Must not raise."""

    def close(self) -> None:
        """The publisher is gone: release what the sink holds."""


class PacketQueue:
    """A sink the publisher feeds without a call: it appends ``(data, seq, ts, now, layer)``
    to ``packets`` (one tuple per packet, shared by every queue of the track) while fewer
    than ``limit`` are waiting, and counts the rest in ``dropped``. For consumers that take
    packets later or in another thread (a recorder, a transcriber): on the forwarding path it
    costs an append, not a method call per packet."""

    __slots__ = ("packets", "limit", "dropped", "closed")

    def __init__(self, packets: Any, limit: int) -> None:
        """``packets``: a list (taken by the event loop) or a deque (popped by a thread)."""
        self.packets = packets
        self.limit = limit
        self.dropped = 0
        self.closed = False

    def write(
        self, data: bytes, ssrc: int, seq: int, ts: int, key: bool, now: float, layer: int
    ) -> None:
        """Queue one packet, as the publisher does (for feeding a queue by hand)."""
        if len(self.packets) < self.limit:
            self.packets.append((data, seq, ts, now, layer))
        else:
            self.dropped += 1

    def close(self) -> None:
        """The track is gone (or the consumer stopped): nothing more will be queued."""
        self.closed = True


def smoothed(old: float, new: float) -> float:
    """A rate measured again: half the old and half the new (the new one alone at first)."""
    return new if old == 0 else 0.5 * old + 0.5 * new


_INVALID = int(DropReason.INVALID)
_WRONG_PT = int(DropReason.WRONG_PAYLOAD_TYPE)
_MUTED = int(DropReason.MUTED)
_DUPLICATE = int(DropReason.DUPLICATE)


def keyframe_detector(mime: str) -> Callable[[memoryview], bool] | None:
    """The keyframe test for a codec's payload, or None for audio."""
    mime = mime.lower()
    if mime == "video/vp8":
        return vp8_is_keyframe
    if mime == "video/h264":
        return h264_is_keyframe
    if mime == "video/vp9":
        return vp9_is_keyframe
    return None


class ReceiveStats:
    """RFC 3550 receive statistics of one source, for receiver reports."""

    __slots__ = (
        "base_seq",
        "max_seq",
        "cycles",
        "received",
        "expected_prior",
        "received_prior",
        "jitter",
        "last_transit",
        "started",
        "missing",
        "repaired",
        "repair_rtt",
        "_rtt_samples",
    )

    def __init__(self, repair: bool = False) -> None:
        """``repair``: track missing sequence numbers, to ask for them (video)."""
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0
        self.last_transit: float | None = None
        self.started = False
        #: sequence numbers not received yet ->
        #: [first missed, last asked for, times asked, first asked for]
        self.missing: dict[int, list] | None = {} if repair else None
        self.repaired = 0  # packets that came after being missed (retransmitted or late)
        #: seconds from a first NACK to the packet it asked for, the least of the last
        #: RTT_SAMPLES (0: none seen yet): the round trip to the publisher, which the server
        #: cannot learn from RTCP as a receiver. A sample is never below the round trip, and
        #: above it when the first retransmission was lost too: the least is the round trip
        self.repair_rtt = 0.0
        self._rtt_samples: list[float] = []

    def update(self, seq: int, ts: int, now: float, clock_rate: int) -> int:
        """Account one received packet (and the gap before it, or the gap it fills).

        Returns NEW (the newest yet), LATE (older: one that was missing, or any older packet
        of a stream whose gaps are not tracked), DUPLICATE (older, and not missing: a copy
        already received, e.g. a redundant retransmission) or BURST (new, after more missing
        packets than can be asked for: they are forgotten, a keyframe is the way back).
        """
        status = NEW
        if not self.started:
            self.started = True
            self.base_seq = self.max_seq = seq
        else:
            delta = (seq - self.max_seq) & 0xFFFF
            missing = self.missing
            if 0 < delta < 0x8000:
                if seq < self.max_seq:
                    self.cycles += 1 << 16
                if delta > 1 and missing is not None:
                    if delta > MAX_GAP:
                        missing.clear()  # a restart of the stream, not a loss
                    elif len(missing) + delta - 1 > MAX_MISSING:
                        missing.clear()
                        status = BURST
                    else:
                        for k in range(1, delta):
                            missing[(self.max_seq + k) & 0xFFFF] = [now, -1e9, 0, 0.0]
                self.max_seq = seq
            elif missing is None:
                status = LATE
            elif (entry := missing.pop(seq, None)) is not None:
                self.repaired += 1
                if entry[2]:  # asked for: a round trip since the first NACK, or more
                    samples = self._rtt_samples
                    samples.append(now - entry[3])
                    if len(samples) > RTT_SAMPLES:
                        del samples[0]
                    self.repair_rtt = min(samples)
                status = LATE
            else:
                return DUPLICATE
        self.received += 1
        if status == LATE:
            return status  # RFC 3550: jitter from packets in order only
        transit = now * clock_rate - ts
        if self.last_transit is not None:
            d = abs(transit - self.last_transit)
            if d < clock_rate * 10:  # ignore timestamp jumps (publisher restart)
                self.jitter += (d - self.jitter) / 16
        self.last_transit = transit
        return status

    def report_block(self, ssrc: int, lsr: int, dlsr: int) -> tuple:
        """A receiver report block (ssrc, fraction, lost, highest, jitter, lsr, dlsr)."""
        extended = self.cycles + self.max_seq
        expected = extended - self.base_seq + 1
        lost = max(min(expected - self.received, 0x7FFFFF), -0x800000)
        exp_int = expected - self.expected_prior
        rec_int = self.received - self.received_prior
        self.expected_prior, self.received_prior = expected, self.received
        lost_int = exp_int - rec_int
        fraction = 0 if exp_int <= 0 or lost_int <= 0 else min((lost_int << 8) // exp_int, 255)
        return (ssrc, fraction, lost, extended & 0xFFFFFFFF, int(self.jitter), lsr, dlsr)


class Layer:
    """One simulcast layer (or the only stream) of a track: its SSRC, cache, statistics."""

    __slots__ = (
        "index",
        "rid",
        "ssrc",
        "cache",
        "stats",
        "packets",
        "bytes",
        "bitrate",
        "_window_bytes",
        "_window_start",
        "last_keyframe",
        "last_packet",
        "sender_report",
        "_sr_wall",
        "_last_pli",
        "known_bitrate",
        "needed_until",
        "next_nack",
    )

    def __init__(self, index: int, rid: str, kind: str) -> None:
        self.index = index
        self.rid = rid
        self.ssrc: int | None = None
        self.cache = PacketCache(1024 if kind == "video" else 128)
        self.stats = ReceiveStats(repair=kind == "video")
        self.next_nack = 0.0
        self.packets = 0
        self.bytes = 0
        self.bitrate = 0.0  # bits per second, smoothed
        self._window_bytes = 0
        self._window_start = 0.0
        self.last_keyframe = 0.0
        self.last_packet = 0.0
        self.sender_report: tuple[int, int, float] | None = None
        self._sr_wall = 0.0
        self._last_pli = -1e9
        self.known_bitrate = 0.0  # the last non-zero bitrate, for a layer switched off
        self.needed_until = time.monotonic() + 5.0  # dynacast: on until then, at least

    def update_rate(self, now: float) -> None:
        """Fold the bytes received since the last call into the smoothed bitrate."""
        elapsed = now - self._window_start
        if elapsed <= 0:
            return
        rate = self._window_bytes * 8 / elapsed
        self.bitrate = smoothed(self.bitrate, rate)
        if rate > 0:
            # what it costs while it flows: not the smoothed rate decaying after it stopped
            # (a 1.5 Mbit/s layer was remembered at 50 kbit/s and chosen on a 300 kbit/s link)
            self.known_bitrate = self.bitrate
        if now - self.last_packet > 1.0:
            self.bitrate = 0.0  # a layer that stopped (dynacast, or the publisher's choice)
        self._window_bytes = 0
        self._window_start = now


class SpatialLayer:
    """Rate of one spatial layer inside a VP9 SVC stream, and of each of its temporal layers
    (bytes and frames: what dropping the upper ones saves, at what frame rate)."""

    __slots__ = (
        "window_bytes",
        "window_start",
        "bitrate",
        "last_packet",
        "temporal_bytes",
        "temporal_frames",
        "temporal_last",
        "temporal_bitrate",
        "temporal_fps",
    )

    def __init__(self) -> None:
        self.window_bytes = 0
        self.window_start = 0.0
        self.bitrate = 0.0  # bits per second, smoothed
        self.last_packet = 0.0
        self.temporal_bytes = [0] * MAX_TEMPORAL  # since the last update_rate, per TID
        self.temporal_frames = [0] * MAX_TEMPORAL  # layer frames started (B), per TID
        self.temporal_last = [0.0] * MAX_TEMPORAL  # last packet of each TID
        self.temporal_bitrate = [0.0] * MAX_TEMPORAL  # bits per second, smoothed, per TID
        self.temporal_fps = [0.0] * MAX_TEMPORAL  # frames per second, smoothed, per TID

    def update_rate(self, now: float) -> None:
        """Fold the bytes received since the last call into the smoothed bitrate."""
        elapsed = now - self.window_start
        if elapsed <= 0:
            return
        rate = self.window_bytes * 8 / elapsed
        self.bitrate = smoothed(self.bitrate, rate)
        self.window_bytes = 0
        self.window_start = now
        for t in range(MAX_TEMPORAL):
            bitrate = self.temporal_bytes[t] * 8 / elapsed
            self.temporal_bitrate[t] = smoothed(self.temporal_bitrate[t], bitrate)
            self.temporal_fps[t] = smoothed(self.temporal_fps[t], self.temporal_frames[t] / elapsed)
            self.temporal_bytes[t] = 0
            self.temporal_frames[t] = 0

    def frame_rate(self, temporal: int) -> float:
        """Frames per second of temporal layers 0 to ``temporal``: the whole measured rate,
        halved for each temporal layer above them sent in the last TEMPORAL_LIVE seconds (the
        dyadic structures libwebrtc sends: T0 is a quarter of L3T3's frames, T0+T1 a half).
        Steadier than the layers' own rates: at 6 fps, a T0 frame comes in one 0.25 s window
        of 2.7, and its smoothed rate read up to 1.8 times the real one."""
        last = self.temporal_last
        newest = max(last)
        top = max(t for t, at in enumerate(last) if at >= newest - TEMPORAL_LIVE)
        return sum(self.temporal_fps) / (1 << max(top - temporal, 0))


class Publisher:
    """A published track: its layers (one unless simulcast) and the DownTracks fed from them."""

    def __init__(
        self,
        sid: str,
        participant_sid: str,
        kind: str,
        source: str,
        mid: str,
        codec: Codec,
        extensions: dict[str, int],
        send_rtcp: Callable[[bytes], bool],
        rtcp_ssrc: int,
        name: str = "",
        width: int = 0,
        height: int = 0,
        cid: str = "",
        rids: list[str] | None = None,
        stats: Stats | None = None,
        rtx_payload_type: int | None = None,
    ) -> None:
        self.sid = sid
        self.stats = stats or Stats()
        self.forwarding_delay = self.stats.forwarding_delay
        self.participant_sid = participant_sid
        self.kind = kind
        self.source = source
        self.mid = mid
        self.codec = codec
        self.rtx_payload_type = rtx_payload_type  # retransmissions in RTX (RFC 4588), if any
        self.extensions = extensions  # uri -> id on the publisher's connection
        self.name = name
        self.width = width
        self.height = height
        self.cid = cid
        self.muted = False
        self.layers = [Layer(i, rid, kind) for i, rid in enumerate(rids or [""])]
        self.simulcast = len(self.layers) > 1
        #: VP9 in one stream: its spatial layers (SVC) are chosen per subscriber from the
        #: payload descriptor; ``vp9`` is the descriptor of the packet being fanned out
        #: (vp9_layers), which the DownTracks read instead of parsing it again
        self.svc = codec.mime.lower() == "video/vp9" and not self.simulcast
        self.vp9: tuple[int, int, int, bool] | None = None
        self.spatial = [SpatialLayer() for _ in range(MAX_SPATIAL)] if self.svc else []
        self.sinks: list[Sink] = []  # fed on the hot path, in order of attachment
        self._writers: list[Sink] = []  # the sinks called per packet (DownTracks, ...)
        self._queues: list[PacketQueue] = []  # the sinks appended to per packet
        self.is_keyframe = keyframe_detector(codec.mime)
        self.audio_level_id = extensions.get(AUDIO_LEVEL, 0) if kind == "audio" else 0
        self.audio_level = 127  # last RFC 6464 level, -dBov (127 = silence)
        self.voice = False
        self._send_rtcp = send_rtcp
        self._rtcp_ssrc = rtcp_ssrc
        self.active_rids: list[str] = [layer.rid for layer in self.layers]  # dynacast state
        self.drops = new_drops()  # packets not forwarded, by DropReason
        self.keyframes = 0
        self.nacks_out = 0  # NACKs sent to the publisher for what it lost on its way here
        self.keyframe_requests = 0
        self.closed = False

    # -- sinks -------------------------------------------------------------------------
    def attach(self, sink: Sink) -> None:
        """Feed ``sink`` every packet from now on (a closed publisher closes it at once)."""
        if self.closed:
            sink.close()
        elif sink not in self.sinks:
            self._set_sinks([*self.sinks, sink])

    def detach(self, sink: Sink) -> None:
        """Stop feeding ``sink`` (it is not closed)."""
        if sink in self.sinks:
            self._set_sinks([s for s in self.sinks if s is not sink])

    def _set_sinks(self, sinks: list[Sink]) -> None:
        # new lists: a fan-out under way is unaffected
        self.sinks = sinks
        self._writers = [s for s in sinks if not isinstance(s, PacketQueue)]
        self._queues = [s for s in sinks if isinstance(s, PacketQueue)]

    @property
    def downtracks(self) -> list[DownTrack]:
        """The attached sinks that are subscribers' DownTracks."""
        from .downtrack import DownTrack

        return [s for s in self.sinks if isinstance(s, DownTrack)]

    def set_muted(self, muted: bool) -> bool:
        """Mute (nothing forwarded) or unmute (subscribers restart at a keyframe); True if it
        changed."""
        if self.muted == muted:
            return False
        self.muted = muted
        if not muted:
            for dt in self.downtracks:
                dt.restart()
        return True

    @property
    def ssrc(self) -> int | None:
        """The SSRC of the first layer that has one."""
        return next((layer.ssrc for layer in self.layers if layer.ssrc is not None), None)

    @property
    def packets(self) -> int:
        """Packets received, all layers."""
        return sum(layer.packets for layer in self.layers)

    @property
    def bytes(self) -> int:
        """Bytes received, all layers."""
        return sum(layer.bytes for layer in self.layers)

    @property
    def cache(self) -> PacketCache:
        """The first layer's retransmission cache (non-simulcast tracks have only it)."""
        return self.layers[0].cache

    @property
    def layer_count(self) -> int:
        """Layers a subscriber can be given: simulcast layers, or the spatial layers seen of
        a VP9 SVC track (at most MAX_SPATIAL)."""
        if self.svc:
            return max((i + 1 for i, s in enumerate(self.spatial) if s.last_packet), default=1)
        return len(self.layers)

    def layer_heights(self) -> list[int]:
        """Frame height of each layer: simulcast (or spatial) layers halve the size each step
        down."""
        top = self.height or 720
        n = self.layer_count
        return [max(top >> (n - 1 - i), 1) for i in range(n)]

    def info(self) -> TrackInfo:
        """The track as others see it."""
        return TrackInfo(
            sid=self.sid,
            kind=self.kind,
            source=self.source,
            name=self.name,
            muted=self.muted,
            width=self.width,
            height=self.height,
            mime=self.codec.mime,
            mid=self.mid,
            simulcast=self.simulcast,
            layers=tuple(layer.rid for layer in self.layers) if self.simulcast else (),
        )

    # -- hot path ----------------------------------------------------------------------
    def on_rtp(self, data: builtins.bytes, now: float, layer: Layer | None = None) -> None:
        """One packet from the publisher: account, cache and fan out to every DownTrack."""
        off = payload_offset(data)
        if off < 0:
            self.drops[_INVALID] += 1
            return
        if (data[1] & 0x7F) != self.codec.payload_type:
            self.drops[_WRONG_PT] += 1
            return
        if layer is None:
            layer = self.layers[0]
        seq = (data[2] << 8) | data[3]
        ts, ssrc = unpack_from("!II", data, 4)
        layer.ssrc = ssrc
        layer.packets += 1
        layer.bytes += len(data)
        if not (data[0] & 0x20 and data[-1] >= len(data) - off):
            # a padding-only packet (a bandwidth probe: libwebrtc sends them on the media
            # SSRC when RTX is not negotiated) is no part of the layer's bitrate
            layer._window_bytes += len(data)
        layer.last_packet = now
        status = layer.stats.update(seq, ts, now, self.codec.clock_rate)
        if status == DUPLICATE:
            self.drops[_DUPLICATE] += 1
            return
        key = False
        detector = self.is_keyframe
        if detector is not None:
            # a late packet never starts or switches a subscriber: its frame is old
            if status != LATE and len(data) > off:
                key = detector(memoryview(data)[off:])
                if key:
                    self.keyframes += 1
                    layer.last_keyframe = now
        if self.svc:
            self.vp9 = d = vp9_layers(memoryview(data)[off:])
            if d is not None and d[1] < MAX_SPATIAL:
                spatial = self.spatial[d[1]]
                spatial.window_bytes += len(data)
                spatial.last_packet = now
                tid = d[2] if d[2] < MAX_TEMPORAL else MAX_TEMPORAL - 1
                spatial.temporal_bytes[tid] += len(data)
                spatial.temporal_last[tid] = now
                if d[0] & 0x08:  # B: a layer frame starts
                    spatial.temporal_frames[tid] += 1
        elif self.audio_level_id:
            level = find_extension(data, self.audio_level_id)
            if level is not None and len(level):
                self.audio_level = level[0] & 0x7F
                self.voice = bool(level[0] & 0x80)
        layer.cache.add(seq, data, now)
        if layer.stats.missing and now >= layer.next_nack:
            self._ask_again(layer, now)
        elif status == BURST:
            self.request_keyframe(now, layer.index)
        if self.muted:
            self.drops[_MUTED] += 1
            return
        index = layer.index
        for sink in self._writers:
            try:
                sink.write(data, ssrc, seq, ts, key, now, index)
            except Exception:  # costs nothing until it happens (Python 3.11)
                self._sink_failed(sink)
        if self._queues:
            item = (data, seq, ts, now, index)
            for queue in self._queues:
                packets = queue.packets
                if len(packets) < queue.limit:
                    packets.append(item)
                else:
                    queue.dropped += 1
        self.forwarding_delay.observe(time.monotonic() - now)

    def _sink_failed(self, sink: Sink) -> None:
        """A sink raised on the hot path: it is detached and closed, the others go on."""
        logger.exception("track %s: sink %r failed; detached", self.sid, sink)
        self.detach(sink)
        try:
            sink.close()
        except Exception:
            logger.exception("track %s: sink %r failed to close", self.sid, sink)

    def _ask_again(self, layer: Layer, now: float) -> None:
        """NACK the publisher for what it lost on its way to us: each missing packet again
        every NACK_INTERVAL (or NACK_RTT_FACTOR round trips), NACK_TRIES times at most, until
        NACK_GIVE_UP."""
        layer.next_nack = now + 0.01
        missing = layer.stats.missing
        assert missing is not None
        interval = max(NACK_INTERVAL, NACK_RTT_FACTOR * layer.stats.repair_rtt)
        due: list[int] = []
        for seq, entry in list(missing.items()):  # at most MAX_MISSING, oldest first
            if now - entry[0] > NACK_GIVE_UP or entry[2] >= NACK_TRIES:
                del missing[seq]
            elif now - entry[1] >= interval and len(due) < MAX_NACK_ITEMS:
                if not entry[2]:
                    entry[3] = now
                entry[1] = now
                entry[2] += 1
                due.append(seq)
        if due and layer.ssrc is not None and not self.closed:
            if self._send_rtcp(rtcp.build_nack(self._rtcp_ssrc, layer.ssrc, due)):
                self.nacks_out += 1

    @property
    def repaired(self) -> int:
        """Packets that came after being missed (retransmitted by the publisher, or late)."""
        return sum(layer.stats.repaired for layer in self.layers)

    # -- RTCP --------------------------------------------------------------------------
    def request_keyframe(self, now: float | None = None, layer: int = -1) -> bool:
        """Ask the publisher for a keyframe (PLI) of one layer (-1: every layer), throttled."""
        if self.kind != "video" or self.closed:
            return False
        now = time.monotonic() if now is None else now
        sent = False
        for item in self.layers if layer < 0 else self.layers[layer : layer + 1]:
            if item.ssrc is None or now - item._last_pli < KEYFRAME_REQUEST_INTERVAL:
                continue
            item._last_pli = now
            self.keyframe_requests += 1
            sent = self._send_rtcp(rtcp.build_pli(self._rtcp_ssrc, item.ssrc)) or sent
        return sent

    def layer_of_ssrc(self, ssrc: int) -> Layer | None:
        """The layer that sends on this SSRC."""
        return next((layer for layer in self.layers if layer.ssrc == ssrc), None)

    def on_sender_report(self, ssrc: int, ntp: int, rtp_ts: int, now: float) -> None:
        """Remember a layer's NTP/RTP mapping, for downstream sender reports."""
        layer = self.layer_of_ssrc(ssrc)
        if layer is not None:
            layer.sender_report = (ntp, rtp_ts, now)
            layer._sr_wall = time.time()

    def receiver_report_blocks(self) -> list[tuple]:
        """Report blocks for our receiver report to the publisher, one per layer."""
        blocks = []
        for layer in self.layers:
            if layer.ssrc is None or not layer.stats.started:
                continue
            lsr = dlsr = 0
            if layer.sender_report is not None:
                lsr = (layer.sender_report[0] >> 16) & 0xFFFFFFFF
                dlsr = int((time.time() - layer._sr_wall) * 65536) & 0xFFFFFFFF
            blocks.append(layer.stats.report_block(layer.ssrc, lsr, dlsr))
        return blocks

    def source_time(self, now: float, layer: int = 0) -> tuple[int, int] | None:
        """(ntp64, rtp_ts) of a layer at ``now``, extrapolated from its last sender report."""
        report = self.layers[layer].sender_report if 0 <= layer < len(self.layers) else None
        if report is None:
            return None
        ntp, rtp_ts, at = report
        elapsed = now - at
        ntp_now = ntp + int(elapsed * (1 << 32))
        rtp_now = (rtp_ts + int(elapsed * self.codec.clock_rate)) & 0xFFFFFFFF
        return ntp_now, rtp_now

    def update_rates(self, now: float) -> None:
        """Refresh every layer's bitrate (called by the room's timer)."""
        for layer in self.layers:
            layer.update_rate(now)
        for spatial in self.spatial:
            spatial.update_rate(now)

    def close(self) -> None:
        """Stop forwarding: close every sink; this track's counters go to the SFU's totals."""
        if not self.closed:
            self.closed = True
            self.stats.retire(
                self.drops,
                packets_in=self.packets,
                bytes_in=self.bytes,
                keyframes_in=self.keyframes,
                keyframe_requests=self.keyframe_requests,
                nacks_out=self.nacks_out,
                repaired=self.repaired,
            )
            sinks = self.sinks
            self._set_sinks([])
            for sink in sinks:
                sink.close()
        for layer in self.layers:
            layer.cache.clear()
