"""DownTrack: one subscriber's copy of one published track.

Takes the publisher's packets as bytes, waits for a keyframe before the first video packet,
rewrites SSRC, payload type, sequence number, timestamp and header-extension ids with the
Munger, and hands the packet to the subscriber's transport. Answers NACKs from the publisher's
retransmission cache and writes the sender report for its stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from struct import unpack_from
from typing import TYPE_CHECKING

from .munger import Munger
from .publisher import retire
from .rtp import rtcp
from .rtp.codecs import vp8_descriptor, vp8_rewrite
from .rtp.extensions import REPAIRED_RID, RID, SDES_MID
from .rtp.header import build_ext_table, payload_offset, rewrite_extensions, rewrite_header

if TYPE_CHECKING:
    from .publisher import Publisher

logger = logging.getLogger(__name__)

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


class DownTrack:
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
        self.mid: str | None = None
        self.ssrc = 0
        self.payload_type = 0
        self.ext_table: bytes | None = None
        self.munger = Munger(track.codec.clock_rate)
        self.bound = False  # negotiated: ssrc, payload type and extensions known
        self.current_layer = -1  # the layer being forwarded; -1 = none (wait for a keyframe)
        self.target_layer = 0  # the layer to forward; the LayerSelector moves it
        # what the subscriber asked for (subscription control and adaptive stream)
        self.visible = True
        self.max_height = 0  # 0 = no limit
        self.max_layer = len(track.layers) - 1
        self._vp8 = track.simulcast and track.codec.mime.lower() == "video/vp8"
        self._vp8_switch = True
        self._pid_offset = 0
        self._tl0_offset = 0
        self._last_pid = -1
        self._last_tl0 = -1
        self.switches = 0  # switches from one layer to another (at a keyframe), not starts
        self.went_down_at = float("-inf")  # when bandwidth last made the allocator go down
        self.packets = 0
        self.bytes = 0
        self.dropped = 0
        self.nacks = 0
        self.retransmits = 0
        self._retired = False
        self.fraction_lost = 0
        self.jitter = 0
        self.closed = False

    @property
    def need_keyframe(self) -> bool:
        """True while waiting for a keyframe to start (or restart) forwarding."""
        return self.current_layer < 0 and self.track.kind == "video"

    @need_keyframe.setter
    def need_keyframe(self, value: bool) -> None:
        self.current_layer = -1 if value else max(self.target_layer, 0)

    def bind(self, ssrc: int, payload_type: int, extensions: dict[str, int]) -> None:
        """Set what the subscriber's connection negotiated for this track."""
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.ext_table = extension_table(self.track.extensions, extensions)
        self.bound = True
        self.restart()

    def restart(self) -> None:
        """Start again from a keyframe (new transport path, unmute, publisher change)."""
        if self.track.kind == "video":
            self.current_layer = -1
            if self.target_layer >= 0:
                self.track.request_keyframe(layer=self.target_layer)
        else:
            self.current_layer = 0

    def set_target(self, layer: int, now: float | None = None) -> None:
        """Forward ``layer`` from its next keyframe on (-1: pause now)."""
        if layer == self.target_layer:
            return
        self.target_layer = layer
        if layer < 0:
            self.current_layer = -1
        elif layer != self.current_layer:
            self.track.request_keyframe(now, layer)

    # -- hot path ----------------------------------------------------------------------
    def write(
        self, data: bytes, ssrc: int, seq: int, ts: int, key: bool, now: float, layer: int = 0
    ) -> None:
        """Forward one publisher packet of ``layer`` to the subscriber (or not)."""
        if not self.bound:
            return
        if layer != self.current_layer:
            if layer != self.target_layer:
                return  # another layer than ours: not for this subscriber
            if not key:
                # the switch waits for this layer's keyframe: ask again (the track throttles),
                # whether or not another layer is still forwarded meanwhile
                self.track.request_keyframe(now, layer)
                return
            if self.current_layer >= 0:  # a switch, not a (re)start
                self.switches += 1
            self.current_layer = layer  # switch at the target layer's keyframe
            self._vp8_switch = True
        elif self.target_layer != layer:
            if self.target_layer < 0:
                self.current_layer = -1
                return
            self.track.request_keyframe(now, self.target_layer)  # throttled by the track
        out = self.munger.translate(ssrc, seq, ts, now)
        if out is None:
            self.dropped += 1
            return
        buf = bytearray(data)
        rewrite_header(buf, self.payload_type, out[0], out[1], self.ssrc)
        if self.ext_table is not None:
            rewrite_extensions(buf, self.ext_table)
        if self._vp8:
            self._munge_vp8(buf)
        if self._send(buf):
            self.packets += 1
            self.bytes += len(buf)
        else:
            self.dropped += 1
            if self.track.kind == "video" and self.packets == 0:
                self.current_layer = -1  # transport not up yet: start again at a keyframe

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
    def handle_nack(self, seqs: list[int], now: float) -> int:
        """Resend the packets a subscriber reports lost, from the cache; returns how many."""
        self.nacks += 1
        if self.current_layer < 0:
            return 0
        sent = 0
        cache = self.track.layers[self.current_layer].cache
        for out_seq in seqs:
            src_seq = self.munger.source_seq(out_seq)
            if src_seq is None:
                continue
            data = cache.get(src_seq, now)
            if data is None:
                continue
            buf = bytearray(data)
            ts = unpack_from("!I", data, 4)[0]
            rewrite_header(buf, self.payload_type, out_seq, self.munger.rtp_time(ts), self.ssrc)
            if self.ext_table is not None:
                rewrite_extensions(buf, self.ext_table)
            if self._vp8:
                self._munge_vp8(buf)
            if self._send(buf):
                sent += 1
        self.retransmits += sent
        return sent

    def layer_info(self) -> dict:
        """Which layer this subscriber gets of the track, which it should get, how often it
        switched: what /metrics shows per subscriber."""
        return {
            "track": self.track.sid,
            "subscriber": self.subscriber_sid,
            "layer": self.current_layer,
            "target": self.target_layer,
            "switches": self.switches,
        }

    def handle_report(self, fraction_lost: int, jitter: int) -> None:
        """Record the subscriber's receiver report for this stream."""
        self.fraction_lost = fraction_lost
        self.jitter = jitter

    def sender_report(self, now: float) -> bytes | None:
        """An RTCP sender report for this stream, mapping our RTP time to wall clock."""
        if not self.bound or not self.munger.started:
            return None
        src = self.track.source_time(now, max(self.current_layer, 0))
        if src is not None:
            ntp, rtp_ts = src[0], self.munger.rtp_time(src[1])
        else:
            ntp = rtcp.ntp_now()
            elapsed = max(now - self.munger.last_time, 0.0)
            rtp_ts = (self.munger.last_ts + int(elapsed * self.track.codec.clock_rate)) & (
                0xFFFFFFFF
            )
        return rtcp.build_sr(
            self.ssrc, ntp & 0xFFFFFFFFFFFFFFFF, rtp_ts, self.packets, self.bytes & 0xFFFFFFFF
        )

    def retire(self) -> None:
        """Hand this DownTrack's counters to the SFU's totals, once."""
        if not self._retired:
            self._retired = True
            retire(
                self.track.retired,
                packets_out=self.packets,
                bytes_out=self.bytes,
                retransmits=self.retransmits,
                nacks=self.nacks,
                dropped=self.dropped,
                layer_switches=self.switches,
            )

    def close(self) -> None:
        """Stop forwarding to this subscriber."""
        self.retire()
        self.closed = True
        self.bound = False
        try:
            self.track.downtracks.remove(self)
        except ValueError:
            pass
