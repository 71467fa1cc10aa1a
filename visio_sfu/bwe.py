"""Send-side bandwidth estimation from transport-cc feedback (GCC-like, per subscriber connection).

Every packet the SFU sends to a subscriber that negotiated transport-cc carries a transport-wide
sequence number; ``on_sent`` records when it left and its size (two array stores: the hot path's
share). The subscriber's feedback says which arrived and when; ``on_feedback`` then runs, on
the RTCP path, the two halves of Google's congestion control design
(draft-ietf-rmcat-gcc-02), vectorised with numpy where a batch allows it:

- delay-based: packets are grouped by send time (5 ms bursts); the change in one-way delay
  between groups is accumulated, smoothed, and a trend line fitted over the last 20 groups. A
  slope above an adaptive threshold is overuse (a queue is building: the estimate falls to
  0.85 of the rate that got through), below it underuse (hold), else the estimate increases:
  8 % a second far from the last congestion point, additively near it. Overuse also needs
  the median one-way delay of what arrived in the last 0.5 s to stand 20 ms above the
  typical such median of the last 5 s (their median) and 10 ms above its value 0.5 s before
  (a queue growing): jitter tilts the trend line as much as a queue does, but leaves the
  median where it usually is. A back-off that drained nothing is undone: if 1 s after the
  last decrease the median delay has not come down and under 2 % was lost, what rose was the
  path's own delay (a route change, as the step of a 100 ms delay added at once), not a
  queue of ours, and the estimate goes back to what it was;
- loss-based, over 100 packets at least: more than 10 % lost lowers the estimate by half the
  loss, under 2 % lets it rise.

The estimate is the smaller of the two. It never runs more than 1.5 times above what the
subscriber acknowledged receiving (plus a margin), unless a probe (``on_probe``) showed more:
a receiver can only prove bandwidth that was sent to it.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

import numpy as np

from .rtp.header import set_extension

GROUP = 0.005  # seconds: packets sent within this span form one group
WINDOW = 20  # groups in the trend line
SMOOTHING = 0.9
TREND_GAIN = 4.0
THRESHOLD_INITIAL = 12.5  # ms
THRESHOLD_UP, THRESHOLD_DOWN = 0.0087, 0.039
OVERUSE_TIME = 0.1  # seconds of overuse (receiver clock) before it counts
BETA = 0.85
INCREASE_PER_SECOND = 1.08
ACKED_WINDOW = 0.5  # seconds of arrivals over which the acknowledged rate is measured
LOSS_HIGH, LOSS_LOW = 0.10, 0.02
LOSS_MIN_PACKETS = 100  # a smaller window reads 5 % random loss as over 10 % too often
QUEUE_RECENT = 0.5  # seconds (receiver clock) of arrivals whose median delay is "now"
QUEUE_BASE = 5.0  # seconds over which the median of those medians is the path's own delay
QUEUE_MARGIN = 20.0  # ms: a median this far above it is a queue; less may be jitter
QUEUE_GROWTH = 10.0  # ms: and this far above the median QUEUE_RECENT s before: growing
UNDO_AFTER = 1.0  # seconds after an overuse's last decrease at which it is judged ...
UNDO_EVERY = 5.0  # ... and undone at most once in this long


class SendSideEstimator:
    """A bandwidth estimate for one subscriber connection, from its transport-cc feedback."""

    def __init__(
        self, initial: float = 1_000_000, minimum: float = 50_000, maximum: float = 20_000_000
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.delay_rate = initial
        self.loss_rate = maximum
        self._sent = array("d", bytes(8 * 65536))  # send time per transport sequence number
        self._size = array("H", bytes(2 * 65536))
        self._view_sent = np.frombuffer(self._sent, dtype=np.float64)
        self._view_size = np.frombuffer(self._size, dtype=np.uint16)
        # delay-based state
        self._prev_group: tuple[float, float] | None = None  # (send, arrival) of the last group
        self._acc = 0.0
        self._smoothed = 0.0
        self._points: list[tuple[float, float]] = []  # (arrival ms, smoothed delay ms)
        self._deltas = 0
        self._threshold = THRESHOLD_INITIAL
        self._threshold_at: float | None = None
        self._over_time = 0.0
        self._over_count = 0
        self._prev_trend = 0.0
        self.state = "normal"  # normal, overuse, underuse
        # queue evidence: one-way delay (arrival - send, offset unknown) of recent packets
        self._delay_at = np.zeros(0)  # arrival times
        self._delay_value = np.zeros(0)
        self._medians: list[tuple[float, float]] = []  # (arrival time, median delay in ms)
        self._latest = float("-inf")  # the latest arrival reported
        self.queue_ms = 0.0  # median delay of the last QUEUE_RECENT s above the usual one
        self.queue_growth = 0.0  # ... and above the median QUEUE_RECENT s earlier
        self._median = 0.0  # ms: the median delay of the last QUEUE_RECENT s
        # an overuse's decreases: (the estimate before them, the median delay at the last,
        # when), and what was lost and counted since the first
        self._backoff: tuple[float, float, float] | None = None
        self._backoff_lost = self._backoff_counted = 0
        self._undone_at = float("-inf")
        self._last_update: float | None = None
        self._last_decrease = float("-inf")
        self._capacity: float | None = None  # acked rate at the last overuses (moving mean)
        self._capacity_var = 0.0
        # acknowledged rate
        self._acked: list[tuple[float, int]] = []  # (arrival, bytes) of the last ACKED_WINDOW
        self.acked_rate = 0.0
        self._probed: tuple[float, float] | None = None  # (rate, when) of the last good probe
        # loss-based state
        self._lost = 0
        self._counted = 0
        self.loss_fraction = 0.0
        # probes: clusters of packets sent faster than the estimate; what arrived of them
        self._arrival = np.full(65536, np.nan)
        self._reported = np.zeros(65536, dtype=bool)
        self._cluster: tuple[int, int, float, float] | None = None  # first, count, target, at
        self._pending: tuple[int, float, float] | None = None  # a cluster being sent
        self.probes = 0
        self.probes_succeeded = 0
        self.last_probe: float | None = None  # rate the last probe showed (None: failed)
        # figures
        self.feedbacks = 0
        self.overuses = 0
        self.undone = 0  # back-offs undone: the delay had risen, but not from a queue of ours

    @property
    def estimate(self) -> float:
        """The bandwidth estimate in bits per second."""
        return max(self.minimum, min(self.delay_rate, self.loss_rate, self.maximum))

    # -- hot path ----------------------------------------------------------------------
    def on_sent(self, seq: int, size: int, now: float) -> None:
        """A packet with transport-wide sequence number ``seq`` left now."""
        self._sent[seq] = now
        self._size[seq] = size if size < 65536 else 65535

    # -- feedback ----------------------------------------------------------------------
    def on_feedback(self, seqs: list[int], arrivals: list[float | None], now: float) -> None:
        """One transport-cc feedback: which sequence numbers arrived, and when (receiver clock,
        seconds; None = lost)."""
        if not seqs:
            return
        self.feedbacks += 1
        seq = np.asarray(seqs, dtype=np.int64) & 0xFFFF
        arr = np.array([np.nan if a is None else a for a in arrivals], dtype=np.float64)
        sent = self._view_sent[seq]
        size = self._view_size[seq].astype(np.int64)
        known = (sent > 0) & (now - sent < 10.0)  # ours, and not from a previous wrap
        if not known.any():
            return
        seq, arr, sent, size = seq[known], arr[known], sent[known], size[known]
        self._arrival[seq] = arr
        self._reported[seq] = True
        received = ~np.isnan(arr)
        self._loss(int((~received).sum()), len(arr))
        if received.any():
            self._acknowledge(arr[received], size[received])
            self._delay(sent[received], arr[received])
        self._control(now)
        if self._cluster is not None:
            self._check_probe(now)

    def _loss(self, lost: int, total: int) -> None:
        self._backoff_lost += lost
        self._backoff_counted += total
        self._lost += lost
        self._counted += total
        if self._counted < LOSS_MIN_PACKETS:
            return
        fraction = self._lost / self._counted
        self._lost = self._counted = 0
        self.loss_fraction = fraction
        if fraction > LOSS_HIGH:
            self.loss_rate = max(self.minimum, self.estimate * (1 - 0.5 * fraction))
        elif fraction < LOSS_LOW:
            self.loss_rate = self.maximum  # loss says nothing against the delay estimate

    def _acknowledge(self, arrival: np.ndarray, size: np.ndarray) -> None:
        self._acked.extend(zip(arrival.tolist(), size.tolist(), strict=True))
        latest = max(t for t, _ in self._acked[-len(arrival) :])
        self._acked = [(t, n) for t, n in self._acked if latest - t <= ACKED_WINDOW]
        if len(self._acked) >= 2:
            span = max(latest - min(t for t, _ in self._acked), 0.1)
            self.acked_rate = sum(n for _, n in self._acked) * 8 / span

    def _delay(self, sent: np.ndarray, arrival: np.ndarray) -> None:
        order = np.argsort(sent, kind="stable")
        sent, arrival = sent[order], arrival[order]
        self._queue(sent, arrival)
        # group by 5 ms of send time: each group's last send and its latest arrival
        group = np.floor((sent - sent[0]) / GROUP).astype(np.int64)
        last = np.flatnonzero(np.diff(group, append=group[-1] + 1))
        first = np.concatenate(([0], last[:-1] + 1))
        g_sent = sent[last]
        g_arrival = np.maximum.reduceat(arrival, first)
        if self._prev_group is not None and g_sent[0] - self._prev_group[0] < GROUP:
            g_sent, g_arrival = g_sent[1:], g_arrival[1:]  # the same group as last time's end
        if len(g_sent) == 0:
            return
        if self._prev_group is not None:
            g_sent = np.concatenate(([self._prev_group[0]], g_sent))
            g_arrival = np.concatenate(([self._prev_group[1]], g_arrival))
        if len(g_sent) < 2:
            self._prev_group = (float(g_sent[-1]), float(g_arrival[-1]))
            return
        # a group that arrives within 5 ms of the previous one and sooner than it was sent
        # after it is the same burst (a queue or a radio releasing packets at once), not a
        # delay change: it joins the previous group (gcc-02, section 5.2)
        prev_sent, prev_arrival = float(g_sent[0]), float(g_arrival[0])
        for s_t, a_t in zip(g_sent[1:].tolist(), g_arrival[1:].tolist(), strict=True):
            arrival_delta = a_t - prev_arrival
            send_delta = s_t - prev_sent
            if arrival_delta < GROUP and arrival_delta - send_delta < 0:
                prev_sent, prev_arrival = s_t, a_t
                continue
            self._trend((arrival_delta - send_delta) * 1000.0, a_t * 1000.0)
            prev_sent, prev_arrival = s_t, a_t
        self._prev_group = (prev_sent, prev_arrival)

    def _queue(self, sent: np.ndarray, arrival: np.ndarray) -> None:
        """How far the median one-way delay of the packets that arrived in the last QUEUE_RECENT
        s (lost ones say nothing, and a queue's packets arrive late: by arrival) stands above
        the median of such medians over the last QUEUE_BASE s (``queue_ms``).

        A queue building at a bottleneck lifts the delay of most packets; jitter, even 30 ms
        of it kept in order, moves single packets and leaves the median where it was. The
        trend line alone cannot tell them apart (it sees a slope either way), so overuse needs
        this evidence too. The median is robust to the bursts a video frame makes.

        The reference is the usual median, not the lowest: with 30 ms of jitter the median of
        0.5 s (7 frames at 15 fps, a few packets each on a low layer) still scatters by 10-20
        ms, so the lowest of the 50 taken in 5 s stands 10-25 ms below an ordinary one, and an
        ordinary median read as a 20 ms queue (aiortc viewer through 100 ms + 30 ms jitter:
        spurious overuses 2.5-13 s after the step, more of them once a layer down, whose
        median scatters more, and runs left on the middle layer). A queue that builds stands above
        the usual median as much as above the lowest for the first half of QUEUE_BASE; one
        that stood longer is no longer growing, which overuse needs anyway."""
        newest = self._latest = max(float(arrival.max()), self._latest)
        keep = self._delay_at > newest - QUEUE_RECENT
        self._delay_at = np.concatenate((self._delay_at[keep], arrival))
        self._delay_value = np.concatenate((self._delay_value[keep], arrival - sent))
        recent = self._delay_at > newest - QUEUE_RECENT
        median = self._median = float(np.median(self._delay_value[recent])) * 1000.0
        medians = self._medians
        medians.append((newest, median))
        while medians and medians[0][0] < newest - QUEUE_BASE:
            del medians[0]
        self.queue_ms = median - float(np.median([m for _, m in medians]))
        before = next((m for t, m in reversed(medians) if t <= newest - QUEUE_RECENT), median)
        self.queue_growth = median - before

    def _trend(self, delta_ms: float, arrival_ms: float) -> None:
        self._deltas += 1
        self._acc += delta_ms
        self._smoothed = SMOOTHING * self._smoothed + (1 - SMOOTHING) * self._acc
        points = self._points
        points.append((arrival_ms, self._smoothed))
        if len(points) > WINDOW:
            del points[0]
        if len(points) < WINDOW:
            return
        x = np.array([p[0] for p in points])
        y = np.array([p[1] for p in points])
        x -= x.mean()
        denominator = float((x * x).sum())
        slope = float((x * (y - y.mean())).sum()) / denominator if denominator > 0 else 0.0
        trend = min(self._deltas, 60) * slope * TREND_GAIN
        self._detect(trend, arrival_ms / 1000.0)

    def _detect(self, trend: float, at: float) -> None:
        """One trend value, at a group's arrival time (receiver clock, seconds)."""
        dt = 0.0 if self._threshold_at is None else min(max(at - self._threshold_at, 0.0), 0.1)
        self._threshold_at = at
        if (
            trend > self._threshold
            and self.queue_ms > QUEUE_MARGIN
            and self.queue_growth > QUEUE_GROWTH
        ):
            # overuse: above the threshold for OVERUSE_TIME, over two values at least, and
            # not falling (a jitter spike comes down at once, a queue keeps growing), with
            # the median delay lifted (a queue, not jitter)
            self._over_time += dt
            self._over_count += 1
            if (
                self._over_time >= OVERUSE_TIME
                and self._over_count > 1
                and trend >= self._prev_trend
            ):
                self._over_time = 0.0
                self._over_count = 0
                self.state = "overuse"
        elif trend < -self._threshold:
            self._over_time = 0.0
            self._over_count = 0
            self.state = "underuse"
        else:
            self._over_time = 0.0
            self._over_count = 0
            self.state = "normal"
        self._prev_trend = trend
        # the threshold follows the trend slowly (and fast down), so that a competing flow's
        # steady delay or a jittery path does not starve us (gcc-02, section 5.4)
        # gcc-02 leaves values over threshold + 15 out, as spikes; a jittery path is nothing
        # but such values, and it would see overuse forever: they count, clipped
        magnitude = min(abs(trend), 2 * self._threshold + 15)
        k = THRESHOLD_DOWN if magnitude < self._threshold else THRESHOLD_UP
        self._threshold += k * (magnitude - self._threshold) * dt * 1000
        self._threshold = min(max(self._threshold, 6.0), 600.0)

    def _control(self, now: float) -> None:
        dt = 0.0 if self._last_update is None else min(now - self._last_update, 1.0)
        self._last_update = now
        acked = self.acked_rate
        if self.state == "overuse":
            if now - self._last_decrease > 0.2 and acked > 0:
                self.overuses += 1
                self._last_decrease = now
                if self._backoff is None:
                    self._backoff_lost = self._backoff_counted = 0
                    before = self.delay_rate
                else:
                    before = self._backoff[0]
                self._backoff = (before, self._median, now)
                self.delay_rate = min(self.delay_rate, BETA * acked)
                if self._capacity is None:
                    self._capacity = acked
                else:
                    diff = acked - self._capacity
                    self._capacity += 0.05 * diff
                    self._capacity_var = 0.95 * self._capacity_var + 0.05 * diff * diff
        elif self.state == "normal":
            before = self.delay_rate
            near = (
                self._capacity is not None
                and abs(acked - self._capacity) < 3 * max(self._capacity_var**0.5, 0.05 * acked)
                and acked > 0
            )
            if near:
                grown = before + max(1000.0, 1200 * 8 / 0.2 * dt * 0.5)
            else:
                grown = before * INCREASE_PER_SECOND**dt
                if self._capacity is not None and acked > self._capacity + 3 * max(
                    self._capacity_var**0.5, 0.05 * self._capacity
                ):
                    self._capacity = None  # the link changed: forget the old congestion point
            # it grows only up to what was shown to get through (1.5 times what arrives, or a
            # probe's rate); a sender using less than the estimate does not lower it
            ceiling = 1.5 * acked + 10_000 if acked > 0 else grown
            if self._probed is not None and now - self._probed[1] < 5.0:
                ceiling = max(ceiling, self._probed[0])
            # what arrives with no queue building is bandwidth the path has shown
            self.delay_rate = max(before, min(grown, ceiling), acked)
        if (
            self.state != "overuse"
            and self._backoff is not None
            and now - self._backoff[2] >= UNDO_AFTER
        ):
            self._judge_backoff(now)
        self.delay_rate = min(max(self.delay_rate, self.minimum), self.maximum)

    def _judge_backoff(self, now: float) -> None:
        """UNDO_AFTER s after an overuse's last decrease, with no overuse since: did sending
        less drain a queue? A queue of ours drains once we send below the bottleneck's rate
        (at 0.85 of it, 150 ms of queue a second): the median delay comes down by what it
        stood above the usual one, QUEUE_MARGIN at least. If it did not come down by
        QUEUE_MARGIN, did not grow by QUEUE_GROWTH either, and under 2 % was lost (a full
        drop-tail queue loses more), the delay
        rose for another reason: the path's own delay changed (a route change, or the 100 ms
        step of the delay-and-jitter test, read as a queue while it rose), and the estimate
        goes back to what it was before the overuse. Without this it stayed below the top
        layer for seconds: the layer down, what arrives fell, and the estimate may only grow
        to 1.5 times that, so only a probe could bring it back, and through 30 ms of jitter
        a probe's arrivals spread out and 13 of 36 failed (recorded runs), each failure
        putting the next probe off by 5 s. At most once in UNDO_EVERY s: should a queue of
        ours stand without draining or loss, the estimate goes back up only that often."""
        assert self._backoff is not None
        before, median, _ = self._backoff
        self._backoff = None
        if (
            # level: neither drained (a queue of ours would) nor still growing (a queue of
            # ours that sending less has not caught up with yet: a deep lossless buffer)
            median - QUEUE_MARGIN < self._median < median + QUEUE_GROWTH
            and self._backoff_lost <= LOSS_LOW * self._backoff_counted
            and now - self._undone_at >= UNDO_EVERY
        ):
            self._undone_at = now
            self.undone += 1
            self.delay_rate = min(max(self.delay_rate, before), self.maximum)
            self._capacity = None  # that congestion point was not one

    # -- probing -----------------------------------------------------------------------
    def probe_start(self, first: int, target: float, now: float) -> None:
        """A probe cluster starts with transport sequence number ``first``: packets from it
        on (media and probe packets alike) go out at ``target`` bits per second in all."""
        self._reported[(first + np.arange(4096)) & 0xFFFF] = False
        self._pending = (first, target, now)
        self.probes += 1

    def probe_end(self, end: int) -> None:
        """The cluster ended before sequence number ``end``; its feedback decides."""
        if self._pending is None:
            return
        first, target, at = self._pending
        self._pending = None
        count = (end - first) & 0xFFFF
        if 2 <= count <= 4096:
            self._cluster = (first, count, target, at)

    def probe_sent(self, first: int, count: int, target: float, now: float) -> None:
        """``probe_start`` and ``probe_end`` at once: ``count`` packets from ``first``."""
        self.probe_start(first, target, now)
        self.probe_end((first + count) & 0xFFFF)

    @property
    def probing(self) -> bool:
        """Whether a probe cluster is being sent or awaits its feedback."""
        return self._cluster is not None or self._pending is not None

    def _check_probe(self, now: float) -> None:
        assert self._cluster is not None
        first, count, target, at = self._cluster
        idx = (first + np.arange(count)) & 0xFFFF
        if not self._reported[idx[-1]] and now - at < 1.0:
            return  # its last packet is not reported yet
        self._cluster = None
        arrival = self._arrival[idx]
        got = ~np.isnan(arrival) & self._reported[idx]
        self.last_probe = None
        if got.sum() < max(0.8 * count, 2):
            return  # lost: not a result
        sent = self._view_sent[idx][got]
        size = self._view_size[idx][got].astype(np.int64)
        arrival = arrival[got]
        payload = float(size[1:].sum()) * 8
        send_rate = payload / max(float(sent[-1] - sent[0]), 1e-3)
        recv_rate = payload / max(float(arrival.max() - arrival.min()), 1e-3)
        rate = min(send_rate, recv_rate)
        if rate >= 0.8 * target or recv_rate >= 0.95 * send_rate:
            self.probes_succeeded += 1
            self.last_probe = rate
            self.on_probe(rate, now)

    def on_probe(self, rate: float, now: float) -> None:
        """A probe delivered ``rate`` bits per second: the estimate may go that high."""
        self._probed = (rate, now)
        if self.state != "overuse":
            self.delay_rate = max(self.delay_rate, min(rate, self.maximum))


class _StamperState:
    """A TransportStamper's state when visio_sfu._batch is not built (its StamperCore holds
    the same, and stamps into the hole a dropped element left in C)."""

    __slots__ = ("ext_id", "seq", "_sent", "_size")

    def stamp(self, buf: bytearray, now: float, hole: int = -1) -> None:
        """Write the next transport-wide sequence number into a packet about to be sent;
        ``hole``: where an element dropped for this subscriber left three zero bytes or more
        in a one-byte block (rewrite_extensions says), written there without a search."""
        self._stamp(buf, now, hole)

    def _stamp(self, buf: bytearray, now: float, hole: int = -1) -> None:
        raise NotImplementedError


if TYPE_CHECKING:
    _StamperBase = _StamperState
else:
    try:
        from ._batch import StamperCore as _StamperBase
    except ImportError:  # pragma: no cover - depends on the build
        _StamperBase = _StamperState


class TransportStamper(_StamperBase):
    """Numbers every packet one subscriber connection sends: the transport-cc extension,
    written on the bytes just before they leave, and the estimator told of it."""

    __slots__ = ("estimator",)

    def __init__(self, estimator: SendSideEstimator, ext_id: int = 0) -> None:
        self.estimator = estimator
        self.ext_id = ext_id  # 0: not negotiated, nothing written
        self.seq = 0
        self._sent = estimator._sent  # the estimator's record, written without a call
        self._size = estimator._size

    def _stamp(self, buf: bytearray, now: float, hole: int = -1) -> None:
        """stamp() in Python, every case (the compiled stamp writes into a hole itself)."""
        ext_id = self.ext_id
        if ext_id:
            seq = self.seq
            if hole >= 0 and ext_id < 15:
                buf[hole] = (ext_id << 4) | 1
                buf[hole + 1] = seq >> 8
                buf[hole + 2] = seq & 0xFF
            elif not set_extension(buf, ext_id, seq.to_bytes(2, "big")):
                return
            self._sent[seq] = now
            self._size[seq] = len(buf)
            self.seq = (seq + 1) & 0xFFFF


class PublisherRate:
    """The bandwidth told to a publisher (REMB), from what arrives from it.

    aiortc's receive path is bypassed, so nobody estimates the publisher's uplink; a constant
    left a publisher on a lossy link sending at full rate into the loss. Loss-based, once a
    receiver-report interval: more than 10 % lost sets it to what arrives less half the loss;
    under 2 % it rises 8 % a second, and never stays below 1.5 times what arrives (the
    publisher must be free to add a layer); the ceiling is what the server lets any publisher
    use.
    """

    def __init__(self, maximum: float = 4_000_000, minimum: float = 150_000) -> None:
        self.maximum = maximum
        self.minimum = minimum
        self.rate = maximum
        self._at: float | None = None

    def update(self, ingress: float, fraction_lost: float, now: float) -> int:
        """One interval: ``ingress`` bits per second received from the publisher, the worst
        ``fraction_lost`` (0-1) of its streams. Returns the REMB to send, bits per second."""
        dt = 0.0 if self._at is None else min(max(now - self._at, 0.0), 2.0)
        self._at = now
        if fraction_lost > LOSS_HIGH and ingress > 0:
            self.rate = min(self.rate, ingress) * (1 - 0.5 * fraction_lost)
        elif fraction_lost < LOSS_LOW:
            self.rate = max(self.rate * INCREASE_PER_SECOND**dt, 1.5 * ingress)
        self.rate = min(max(self.rate, self.minimum), self.maximum)
        return int(self.rate)
