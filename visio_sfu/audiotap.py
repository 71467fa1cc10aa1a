"""AudioTap: a Sink that keeps an audio track's RTP packets for a transcriber.

On the forwarding path it only appends a reference to the packet (no copy, no parsing, no
lock: the event loop is the only thread) to a bounded list; the transcriber takes the list
every ~100 ms and ships it to a worker process. When the list is full (the workers are far
behind) new packets are dropped and counted: memory stays bounded, the meeting goes on.
"""

from __future__ import annotations

from .publisher import PacketQueue
from .rtp.header import payload_offset

#: packets kept at most between two takes: 30 s of 20 ms Opus frames
TAP_LIMIT = 1500


class AudioTap(PacketQueue):
    """One audio track's packets, for transcription (attach it with ``Publisher.attach``):
    a PacketQueue, so the forwarding path appends to it without a call."""

    __slots__ = ("first_arrival",)

    def __init__(self, limit: int = TAP_LIMIT) -> None:
        super().__init__([], limit)
        self.first_arrival: float | None = None

    def take(self) -> tuple[float, list[tuple[int, int, bytes]]] | None:
        """The packets kept since the last take as (seq, ts, payload), with the arrival time of
        the stream's first packet; None if there are none."""
        packets = self.packets
        if not packets:
            return None
        self.packets = []
        if self.first_arrival is None:
            self.first_arrival = packets[0][3]
        out = []
        for data, seq, ts, _now, _layer in packets:
            off = payload_offset(data)
            end = len(data) - (data[-1] if data[0] & 0x20 else 0)  # RTP padding
            if 0 <= off < end:
                out.append((seq, ts, bytes(data[off:end])))
        return self.first_arrival, out
