"""Rate limits: token buckets for signaling messages and joins per client address."""

from __future__ import annotations

import time

#: a connection's ICE candidates may come this many seconds of the message rate at once: a
#: client gathers one per address, protocol, port and (before bundling) m-section, so a machine
#: with a few interfaces sends hundreds in a second (LiveKit's Rust SDK sent 40 per connection
#: here, with one interface); they have a budget of their own, apart from other messages
TRICKLE_BURST_SECONDS = 10


class TokenBucket:
    """``rate`` events per second with bursts of ``burst``; the debt can grow to ``burst``."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> float:
        """Spend one token; returns what is left (negative: over the limit)."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens = max(self.tokens - 1, -self.burst - 1)
        return self.tokens

    def try_take(self, now: float | None = None) -> bool:
        """Spend one token if there is one; a refusal costs nothing (no debt), so a client that
        keeps retrying at ``rate`` gets in at ``rate`` however long it was refused."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class MessageBudget:
    """One connection's signaling messages: ``rate`` a second with bursts of twice that, and
    ICE candidates (``trickle``) on a budget of their own, bursts of TRICKLE_BURST_SECONDS."""

    __slots__ = ("messages", "candidates")

    def __init__(self, rate: float) -> None:
        self.messages = TokenBucket(rate, max(2 * rate, 10))
        self.candidates = TokenBucket(rate, max(TRICKLE_BURST_SECONDS * rate, 100))

    def bucket(self, kind: str | None) -> TokenBucket:
        """The bucket a message of this kind (None: not a message) spends."""
        return self.candidates if kind == "trickle" else self.messages


class PerKeyLimiter:
    """A token bucket per key (client address), forgetting idle keys. Only admitted events
    spend tokens: after a burst, attempts at ``rate`` per second are admitted again at once."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.buckets: dict[str, TokenBucket] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        """Whether one more event from ``key`` is within the limit."""
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_keys:
                idle = self.burst / self.rate
                stale = [k for k, b in self.buckets.items() if now - b.stamp > idle]
                for k in stale:
                    del self.buckets[k]
                if len(self.buckets) >= self.max_keys:
                    return False
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.try_take(now)
