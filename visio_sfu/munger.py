"""Munger: keeps one DownTrack's sequence numbers and timestamps continuous.

A subscriber must see one unbroken RTP stream even when its source changes (a publisher
restarts, a simulcast layer switch, a transceiver reused for another track). The munger maps
each source packet's (sequence number, timestamp) to the outgoing ones with per-source offsets
chosen so that the first packet of a new source follows the last one sent. Pure: no I/O, time
is passed in.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b between two 16-bit sequence numbers."""
    d = (a - b) & 0xFFFF
    return d - SEQ_MOD if d >= 0x8000 else d


#: seconds after a switch during which NACKs for the epoch before it are answered
PREVIOUS_EPOCH_FOR = 3.0


class _MungerState:
    """A Munger's state in Python, when visio_sfu._batch is not built (its MungerCore holds
    the same, where the compiled DownTrack write reads and updates it)."""

    __slots__ = (
        "clock_rate",
        "source",
        "seq_offset",
        "ts_offset",
        "last_seq",
        "last_ts",
        "last_time",
        "highest_src_seq",
        "epoch_first_seq",
        "epoch_first_ts",
        "started",
        "previous",
    )


if TYPE_CHECKING:
    _MungerBase = _MungerState
else:
    try:
        from ._batch import MungerCore as _MungerBase
    except ImportError:  # pragma: no cover - depends on the build
        _MungerBase = _MungerState


class Munger(_MungerBase):
    """Rewrites (seq, ts) of a source stream into one continuous outgoing stream."""

    __slots__ = ()

    def __init__(self, clock_rate: int, rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self.clock_rate = clock_rate
        self.source: int | None = None  # SSRC of the current source
        self.seq_offset = 0
        self.ts_offset = 0
        self.last_seq = rng.randrange(SEQ_MOD)  # last outgoing seq (starts random)
        self.last_ts = rng.randrange(TS_MOD)
        self.last_time = 0.0  # when the last packet went out
        self.highest_src_seq = 0
        self.epoch_first_seq = 0  # first outgoing seq of the current source
        self.epoch_first_ts = 0  # and its outgoing timestamp
        self.started = False
        #: the epoch before this one, from another source of the same track (a simulcast
        #: layer switched from): (source, seq offset, ts offset, first seq, end seq, when)
        self.previous: tuple[int, int, int, int, int, float] | None = None

    def switch(self, source: int, seq: int, ts: int, now: float) -> None:
        """Make ``source``'s packet (seq, ts) the next one after what was last sent."""
        if self.started:
            elapsed = max(now - self.last_time, 0.0)
            ts_step = max(1, round(elapsed * self.clock_rate))
        else:
            ts_step = 0
        next_seq = (self.last_seq + 1) & 0xFFFF
        if self.started and self.source is not None:
            self.previous = (
                self.source,
                self.seq_offset,
                self.ts_offset,
                self.epoch_first_seq,
                next_seq,
                now,
            )
        self.seq_offset = (next_seq - seq) & 0xFFFF
        self.ts_offset = (self.last_ts + ts_step - ts) & 0xFFFFFFFF
        self.source = source
        self.highest_src_seq = (seq - 1) & 0xFFFF
        self.epoch_first_seq = next_seq
        self.epoch_first_ts = (ts + self.ts_offset) & 0xFFFFFFFF
        if not self.started:
            self.last_seq = (next_seq - 1) & 0xFFFF

    def new_epoch(self) -> None:
        """The next packet starts a new epoch, following the last one sent, even from the same
        source: a transceiver reused for a track it carried before (a participant moved to a
        breakout room and back) must not show what it did not send meanwhile as a loss."""
        self.source = None
        self.previous = None  # what it carried before is not this track's

    def translate(self, source: int, seq: int, ts: int, now: float) -> tuple[int, int] | None:
        """Outgoing (seq, ts) for a source packet, or None if it must be dropped (too old)."""
        if source != self.source:
            self.switch(source, seq, ts, now)
        d = (seq - self.highest_src_seq) & 0xFFFF  # seq_diff, inlined (once per packet sent)
        if d >= 0x8000:
            d -= SEQ_MOD
        out_seq = (seq + self.seq_offset) & 0xFFFF
        out_ts = (ts + self.ts_offset) & 0xFFFFFFFF
        if d > 0:
            self.highest_src_seq = seq
            self.last_seq = out_seq
            self.last_ts = out_ts
            self.last_time = now
            self.started = True
        elif d < -1000 or seq_diff(out_seq, self.epoch_first_seq) < 0:
            return None  # older than this source's first forwarded packet, or far too old
        return out_seq, out_ts

    def drop(self, source: int, seq: int) -> None:
        """Note a source packet dropped on purpose, so that it leaves no gap (not a loss)."""
        if source == self.source and seq_diff(seq, self.highest_src_seq) > 0:
            self.seq_offset = (self.seq_offset - 1) & 0xFFFF
            self.highest_src_seq = seq

    def source_seq(self, out_seq: int) -> int | None:
        """The source sequence number behind an outgoing one (for NACKs), if in this epoch."""
        if self.source is None or seq_diff(out_seq, self.epoch_first_seq) < 0:
            return None
        if seq_diff(out_seq, self.last_seq) > 0:
            return None
        return (out_seq - self.seq_offset) & 0xFFFF

    def previous_source_seq(self, out_seq: int) -> tuple[int, int, int] | None:
        """(source, source sequence number, timestamp offset) behind an outgoing number of
        the epoch before this one (a layer switched from: a NACK for what the subscriber
        missed just before the switch), or None; only for PREVIOUS_EPOCH_FOR seconds after
        the switch (later, this epoch's own numbers may have wrapped into that range)."""
        p = self.previous
        if p is None:
            return None
        source, seq_offset, ts_offset, first, end, when = p
        if self.last_time - when > PREVIOUS_EPOCH_FOR:
            self.previous = None
            return None
        if not 0 <= seq_diff(out_seq, first) < seq_diff(end, first):
            return None
        return source, (out_seq - seq_offset) & 0xFFFF, ts_offset

    def rtp_time(self, src_ts: int) -> int:
        """Outgoing timestamp for a source timestamp (for sender reports)."""
        return (src_ts + self.ts_offset) & 0xFFFFFFFF
