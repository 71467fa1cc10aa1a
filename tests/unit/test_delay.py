"""DelayHistogram: bucketing at the bounds, cumulative counts, quantiles."""

from __future__ import annotations

from visio_sfu.delay import BOUNDS, DelayHistogram, quantile


def test_observations_land_in_the_bucket_of_their_upper_bound():
    h = DelayHistogram()
    h.observe(BOUNDS[0])  # a bound belongs to its own bucket (Prometheus "le")
    h.observe(BOUNDS[0] * 1.01)
    h.observe(7e-6)
    h.observe(10.0)  # above every bound
    assert h.counts[0] == 1 and h.counts[1] == 2 and h.counts[-1] == 1
    assert h.count == 4
    assert abs(h.sum - (BOUNDS[0] * 2.01 + 7e-6 + 10.0)) < 1e-12
    cumulative = h.cumulative()
    assert cumulative[0] == (BOUNDS[0], 1) and cumulative[1] == (BOUNDS[1], 3)
    assert cumulative[-1] == (float("inf"), 4)


def test_quantiles_are_bucket_upper_bounds():
    h = DelayHistogram()
    for _ in range(98):
        h.observe(20e-6)
    h.observe(3e-3)
    h.observe(3e-3)
    cumulative = h.cumulative()
    assert quantile(cumulative, 0.5) == 2.5e-5
    assert quantile(cumulative, 0.98) == 2.5e-5
    assert quantile(cumulative, 0.99) == 5e-3
    assert quantile(DelayHistogram().cumulative(), 0.5) is None
