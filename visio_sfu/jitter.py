"""A small jitter buffer for one RTP stream, for a recorder (not for playout).

Packets go in as they arrive, by sequence number; they come out in sequence order. A missing
packet is waited for until the first packet after it has waited ``latency`` seconds (the
server's NACKs to the publisher bring most losses back within a round trip), or until
``capacity`` packets wait behind it; then it is given up, and a ``Lost`` marker comes out in
its place. Packets that come after their turn (too late, or twice) are dropped and counted. A
jump of more than ``capacity`` sequence numbers (a publisher that restarted its stream) starts
over. Pure: the caller gives the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Lost:
    """``count`` packets that never came, at this place in the stream (0: the stream started
    over, how many are missing is unknown)."""

    count: int


class JitterBuffer(Generic[T]):
    """Reorders one stream by sequence number (16 bits, wrapping), tolerating loss."""

    def __init__(self, latency: float = 0.5, capacity: int = 1024) -> None:
        self.latency = latency
        self.capacity = capacity
        self._waiting: dict[int, tuple[T, float]] = {}  # extended seq -> (item, arrival)
        self._next: int | None = None  # the extended sequence number due next
        self._highest = 0  # the highest extended sequence number seen
        self.received = 0
        self.lost = 0  # packets given up
        self.late = 0  # came after their turn (or after being given up)
        self.duplicates = 0
        self.restarts = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def _extend(self, seq: int) -> int:
        """The extended (unwrapped) sequence number closest to the highest seen."""
        delta = (seq - self._highest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        return self._highest + delta

    def push(self, seq: int, item: T, arrival: float) -> list[T | Lost]:
        """One packet; returns what a restart of the stream released (usually nothing)."""
        if self._next is None:
            ext = (seq & 0xFFFF) + 0x10000  # room below for packets reordered before the first
            self._next = self._highest = ext
        else:
            ext = self._extend(seq)
        released: list[T | Lost] = []
        if ext < self._next:
            if self._next - ext <= self.capacity:
                self.late += 1
                return released
            released = self._restart(ext)  # far behind: the publisher started over
        elif ext - self._next > self.capacity + len(self._waiting):
            released = self._restart(ext)  # far ahead: likewise
        if ext in self._waiting:
            self.duplicates += 1
            return released
        self.received += 1
        self._waiting[ext] = (item, arrival)
        if ext > self._highest:
            self._highest = ext
        return released

    def _restart(self, ext: int) -> list[T | Lost]:
        out = self.flush()
        out.append(Lost(0))  # a discontinuity of unknown size
        self.restarts += 1
        self._next = self._highest = ext
        return out

    def pop(self, now: float) -> list[T | Lost]:
        """What can come out now, in order: packets due, and Lost markers for gaps given up."""
        out: list[T | Lost] = []
        waiting = self._waiting
        nxt = self._next
        if nxt is None:
            return out
        while waiting:
            entry = waiting.pop(nxt, None)
            if entry is not None:
                out.append(entry[0])
                nxt += 1
                continue
            first = min(waiting)  # a gap: the first packet after it
            if now - waiting[first][1] < self.latency and len(waiting) <= self.capacity:
                break
            out.append(Lost(first - nxt))
            self.lost += first - nxt
            nxt = first
        self._next = nxt
        return out

    def flush(self) -> list[T | Lost]:
        """Everything still waiting, in order, gaps given up (the end of the stream)."""
        out: list[T | Lost] = []
        nxt = self._next
        for ext in sorted(self._waiting):
            assert nxt is not None
            if ext > nxt:
                out.append(Lost(ext - nxt))
                self.lost += ext - nxt
            out.append(self._waiting[ext][0])
            nxt = ext + 1
        self._waiting.clear()
        self._next = nxt
        return out
