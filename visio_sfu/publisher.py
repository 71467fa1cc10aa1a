"""Publisher: one published track, the source side of the forwarding path.

Receives the publisher's decrypted RTP as bytes, keeps receive statistics and the
retransmission cache, detects keyframes, and fans each packet out to every DownTrack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from struct import unpack_from
from typing import TYPE_CHECKING

from .packetcache import PacketCache
from .rtp import rtcp
from .rtp.codecs import h264_is_keyframe, vp8_is_keyframe
from .rtp.header import payload_offset

if TYPE_CHECKING:
    from .downtrack import DownTrack

logger = logging.getLogger(__name__)

KEYFRAME_REQUEST_INTERVAL = 0.5  # seconds between two PLIs to one publisher track


@dataclass
class Codec:
    """A negotiated codec: what a DownTrack needs to offer and forward it."""

    mime: str
    clock_rate: int
    payload_type: int
    channels: int | None = None
    parameters: dict | None = None


def keyframe_detector(mime: str) -> Callable[[memoryview], bool] | None:
    """The keyframe test for a codec's payload, or None for audio."""
    mime = mime.lower()
    if mime == "video/vp8":
        return vp8_is_keyframe
    if mime == "video/h264":
        return h264_is_keyframe
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
    )

    def __init__(self) -> None:
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0
        self.last_transit: float | None = None
        self.started = False

    def update(self, seq: int, ts: int, now: float, clock_rate: int) -> None:
        """Account one received packet."""
        if not self.started:
            self.started = True
            self.base_seq = self.max_seq = seq
        else:
            delta = (seq - self.max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if seq < self.max_seq:
                    self.cycles += 1 << 16
                self.max_seq = seq
        self.received += 1
        transit = now * clock_rate - ts
        if self.last_transit is not None:
            d = abs(transit - self.last_transit)
            if d < clock_rate * 10:  # ignore timestamp jumps (publisher restart)
                self.jitter += (d - self.jitter) / 16
        self.last_transit = transit

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


class Publisher:
    """A published track: its source stream, cache and the DownTracks fed from it."""

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
    ) -> None:
        self.sid = sid
        self.participant_sid = participant_sid
        self.kind = kind
        self.source = source
        self.mid = mid
        self.codec = codec
        self.extensions = extensions  # uri -> id on the publisher's connection
        self.name = name
        self.width = width
        self.height = height
        self.cid = cid
        self.muted = False
        self.ssrc: int | None = None
        self.downtracks: list[DownTrack] = []
        self.cache = PacketCache(1024 if kind == "video" else 128)
        self.is_keyframe = keyframe_detector(codec.mime)
        self.stats = ReceiveStats()
        self._send_rtcp = send_rtcp
        self._rtcp_ssrc = rtcp_ssrc
        self._last_keyframe_request = -1e9
        self._fir_seq = 0
        # the last sender report: (ntp64, rtp_ts, local arrival time)
        self.sender_report: tuple[int, int, float] | None = None
        self._sr_arrival_wall = 0.0
        self.packets = 0
        self.bytes = 0
        self.keyframes = 0
        self.dropped = 0
        self.keyframe_requests = 0
        self.last_keyframe_time = 0.0
        self.closed = False

    def info(self) -> dict:
        """The track as the protocol describes it."""
        return {
            "sid": self.sid,
            "kind": self.kind,
            "source": self.source,
            "name": self.name,
            "muted": self.muted,
            "width": self.width,
            "height": self.height,
            "mime": self.codec.mime,
            "mid": self.mid,
        }

    # -- hot path ----------------------------------------------------------------------
    def on_rtp(self, data: bytes, now: float) -> None:
        """One packet from the publisher: account, cache and fan out to every DownTrack."""
        off = payload_offset(data)
        if off < 0 or (data[1] & 0x7F) != self.codec.payload_type:
            self.dropped += 1
            return
        seq = (data[2] << 8) | data[3]
        ts = unpack_from("!I", data, 4)[0]
        ssrc = unpack_from("!I", data, 8)[0]
        self.ssrc = ssrc
        self.packets += 1
        self.bytes += len(data)
        self.stats.update(seq, ts, now, self.codec.clock_rate)
        detector = self.is_keyframe
        key = False
        if detector is not None and len(data) > off:
            key = detector(memoryview(data)[off:])
            if key:
                self.keyframes += 1
                self.last_keyframe_time = now
        self.cache.add(seq, data, now)
        if self.muted:
            return
        for dt in self.downtracks:
            dt.write(data, ssrc, seq, ts, key, now)

    # -- RTCP --------------------------------------------------------------------------
    def request_keyframe(self, now: float | None = None) -> bool:
        """Ask the publisher for a keyframe (PLI), at most once per interval."""
        if self.kind != "video" or self.ssrc is None or self.closed:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
            return False
        self._last_keyframe_request = now
        self.keyframe_requests += 1
        return self._send_rtcp(rtcp.build_pli(self._rtcp_ssrc, self.ssrc))

    def on_sender_report(self, ntp: int, rtp_ts: int, now: float) -> None:
        """Remember the publisher's NTP/RTP mapping, for downstream sender reports."""
        self.sender_report = (ntp, rtp_ts, now)
        self._sr_arrival_wall = time.time()

    def receiver_report_block(self) -> tuple | None:
        """A report block for our receiver report to the publisher."""
        if self.ssrc is None or not self.stats.started:
            return None
        lsr = dlsr = 0
        if self.sender_report is not None:
            lsr = (self.sender_report[0] >> 16) & 0xFFFFFFFF
            dlsr = int((time.time() - self._sr_arrival_wall) * 65536) & 0xFFFFFFFF
        return self.stats.report_block(self.ssrc, lsr, dlsr)

    def source_time(self, now: float) -> tuple[int, int] | None:
        """(ntp64, rtp_ts) of the source at ``now``, extrapolated from its last sender report."""
        if self.sender_report is None:
            return None
        ntp, rtp_ts, at = self.sender_report
        elapsed = now - at
        ntp_now = ntp + int(elapsed * (1 << 32))
        rtp_now = (rtp_ts + int(elapsed * self.codec.clock_rate)) & 0xFFFFFFFF
        return ntp_now, rtp_now

    def close(self) -> None:
        """Stop forwarding: detach every DownTrack."""
        self.closed = True
        self.downtracks = []
        self.cache.clear()
