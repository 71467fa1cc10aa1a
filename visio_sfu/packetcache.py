"""PacketCache: the last second or so of a track's packets, to answer NACKs."""

from __future__ import annotations


class PacketCache:
    """A ring of recent packets indexed by sequence number; O(1) add and get."""

    __slots__ = ("size", "max_age", "_mask", "_slots")

    def __init__(self, size: int = 1024, max_age: float = 1.0) -> None:
        if size & (size - 1):
            raise ValueError("size must be a power of two")
        self.size = size
        self.max_age = max_age
        self._mask = size - 1
        self._slots: list[tuple[int, bytes, float] | None] = [None] * size

    def add(self, seq: int, data: bytes, now: float) -> None:
        """Keep a packet (replacing the one ``size`` sequence numbers older)."""
        self._slots[seq & self._mask] = (seq, data, now)

    def get(self, seq: int, now: float) -> bytes | None:
        """The packet with this sequence number, if still cached and not too old."""
        return self.get_within(seq, now, self.max_age)

    def get_within(self, seq: int, now: float, max_age: float) -> bytes | None:
        """The packet with this sequence number, if still cached and at most ``max_age``
        seconds old (longer or shorter than the cache's own limit)."""
        slot = self._slots[seq & self._mask]
        if slot is None or slot[0] != seq or now - slot[2] > max_age:
            return None
        return slot[1]

    def clear(self) -> None:
        """Forget every packet."""
        self._slots = [None] * self.size
