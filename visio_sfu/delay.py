"""DelayHistogram: how long the SFU holds each incoming packet before its copies are sent.

One observation per packet received from a publisher (not per forwarded copy): from the moment
the datagram reaches the transport (before SRTP unprotect) to the moment the last subscriber's
copy has been handed to the kernel. Fixed buckets and integer counts, so observing costs a
bisect and two additions on the hot path; /metrics exposes it as a Prometheus histogram.
"""

from __future__ import annotations

from bisect import bisect_left

#: bucket upper bounds in seconds, 5 µs to 100 ms
BOUNDS: tuple[float, ...] = (
    5e-6,
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    5e-2,
    1e-1,
)


class DelayHistogram:
    """Counts of observed delays per bucket (the last bucket is everything above BOUNDS)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one delay."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        """How many delays were observed."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, ending with (inf, count)."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


def quantile(cumulative: list[tuple[float, int]], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of cumulative (bound, count) pairs,
    such as a Prometheus histogram's buckets; None if nothing was observed."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    need = q * cumulative[-1][1]
    for bound, total in cumulative:
        if total >= need:
            return bound
    return cumulative[-1][0]
