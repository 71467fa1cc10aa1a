"""LayerSelector: decisions on crafted matrices, hysteresis, and numpy == plain Python."""

import numpy as np
import pytest

from visio_sfu.layers import Selection, select, select_reference, size_caps

RATES = [150_000, 500_000, 1_500_000]  # q, h, f
HEIGHTS = [180, 360, 720]


def sel(budget, wanted, priority=None, current=None, subscriber=None, rates=None):
    n = len(wanted)
    return Selection(
        subscriber=np.array(subscriber or [0] * n),
        budget=np.array(budget, dtype=float),
        bitrates=np.array(rates or [RATES] * n, dtype=float),
        heights=np.array([HEIGHTS] * n),
        wanted=np.array(wanted),
        priority=np.array(priority or [0] * n),
        current=np.array(current or [-1] * n),
    )


def both(s, **kw):
    fast = select(s, **kw).tolist()
    assert fast == select_reference(s, **kw)
    return fast


def test_bandwidth_limits_the_layer():
    assert both(sel([10e6], [720])) == [2]
    assert both(sel([1e6], [720])) == [1]
    assert both(sel([200_000], [720])) == [0]
    # not even the lowest layer fits: it is sent anyway (bandwidth alone never pauses a video)
    assert both(sel([100_000], [720])) == [0]
    assert both(sel([0], [720])) == [0]


def test_an_estimate_below_the_lowest_layers_keeps_shown_videos_on_their_lowest_layer():
    # three videos, an estimate of 250 kbit/s: their three q layers (~405 kbit/s) are within
    # twice the estimate, so all three stay on q; the hidden one stays off
    s = sel([250_000], [720, 360, 180, 0], current=[0, 1, 2, 0])
    assert both(s) == [0, 0, 0, -1]
    # q switched off at the publisher: the lowest live layer is the floor
    s = sel([10_000], [720], rates=[[0, 500_000, 1_500_000]], current=[1])
    assert both(s) == [1]


def test_floors_are_not_guaranteed_without_limit():
    # nine cameras at 500 kbit/s: floors (9 x 150 kbit/s) would be 2.7 times the estimate.
    # In priority order the floors within twice the estimate are kept, the rest pause
    s = sel([500_000], [180] * 9, current=[0] * 9, priority=[0] * 8 + [1])
    chosen = both(s)
    assert chosen[8] == 0, "the active speaker first"
    assert chosen.count(0) == 7 and chosen.count(-1) == 2, chosen
    # however low the estimate, the first shown video keeps its lowest layer
    assert both(sel([1], [180, 180], current=[0, 0])) == [0, -1]


def test_rendered_size_caps_the_layer():
    assert both(sel([10e6], [180])) == [0]  # adaptive stream: a 320x180 tile gets q
    assert both(sel([10e6], [400])) == [1]
    assert both(sel([10e6], [90])) == [0]  # smaller than every layer: the lowest
    assert both(sel([10e6], [0])) == [-1]  # hidden tile: paused


def test_priority_wins_when_bandwidth_is_short():
    # two tracks, budget for one at h and one at q; the priority one (screen share) goes first
    s = sel([900_000], [720, 720], priority=[0, 10])
    assert both(s) == [0, 1]
    s = sel([900_000], [720, 720], priority=[10, 0])
    assert both(s) == [1, 0]


def test_subscribers_do_not_share_budgets():
    s = sel([10e6, 200_000], [720, 720], subscriber=[0, 1])
    assert both(s) == [2, 0]


def test_hysteresis_needs_margin_to_go_up_but_not_to_stay():
    # exactly the f rate: not enough to go up to f (needs 15 % more) ...
    budget = [sum([1_500_000])]
    assert both(sel(budget, [720], current=[1])) == [1]
    # ... but enough to stay on f once there
    assert both(sel(budget, [720], current=[2])) == [2]


def test_hysteresis_band_is_wider_than_a_ten_percent_wobble():
    # an estimate alternating +-10 % around any point settles on one layer: after the first
    # high and low, the layer never changes again (no flapping, whatever the starting layer)
    for centre in np.linspace(100_000, 2_500_000, 49):
        for start in (-1, 0, 1, 2):
            current, seen = start, []
            for budget in [centre * 1.1, centre * 0.9] * 10:
                current = both(sel([budget], [720], current=[current]))[0]
                seen.append(current)
            assert len(set(seen[2:])) == 1, (centre, start, seen)


def test_held_pairs_do_not_go_up():
    s = sel([10e6, 10e6], [720, 720], current=[0, 1])
    s.held = np.array([True, False])
    assert both(s) == [0, 2]
    s = sel([10e6], [720], current=[-1])  # paused (was hidden): the floor is allowed
    s.held = np.array([True])
    assert both(s) == [0]


def test_dead_layers_are_stepped_over():
    rates = [[0, 500_000, 1_500_000]]  # q switched off at the publisher
    assert both(sel([10e6], [720], rates=rates)) == [2]
    assert both(sel([10e6], [180], rates=rates)) == [1]  # smallest live layer
    assert size_caps(np.array(rates, float), np.array([HEIGHTS]), np.array([0])).tolist() == [-1]


@pytest.mark.parametrize("vp9", [False, True])
@pytest.mark.parametrize("seed", range(30))
def test_numpy_matches_reference_on_random_inputs(seed, vp9):
    """Simulcast rows; with ``vp9``, VP9 SVC rows (five levels, the three lowest 180 high)
    mixed with simulcast rows (three, the other two dead) in one selection."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    subs = int(rng.integers(1, 8))
    levels = 5 if vp9 else 3
    rates = rng.integers(20_000 if vp9 else 50_000, 2_000_000, size=(n, levels)).astype(float)
    rates.sort(axis=1)
    rates[rng.random((n, levels)) < 0.15] = 0
    heights = np.tile([180, 360, 720], (n, 1))
    if vp9:
        svc = rng.random(n) < 0.5
        rates[~svc, 3:] = 0
        heights = np.where(svc[:, None], [180, 180, 180, 360, 720], [180, 360, 720, 0, 0])
    s = Selection(
        subscriber=rng.integers(0, subs, n),
        budget=rng.integers(0, 4_000_000, subs).astype(float),
        bitrates=rates,
        heights=heights,
        wanted=rng.choice([0, 90, 120, 180, 270, 360, 540, 720, 1080], n),
        priority=rng.integers(0, 3, n),
        current=rng.integers(-1, levels, n),
        held=rng.random(n) < 0.3,
    )
    assert select(s).tolist() == select_reference(s)


def test_a_tile_smaller_than_vp9_spatial_layer_0_gets_its_full_frame_rate():
    """VP9 SVC rows have five levels: spatial layer 0 at T0, at T0+T1, at full rate (all three
    180 high), then 360 and 720. A 90-high tile is capped at level 2, not at T0."""
    rates = np.array([[40_000, 80_000, 150_000, 500_000, 1_500_000]], float)
    heights = np.array([[180, 180, 180, 360, 720]])
    assert size_caps(rates, heights, np.array([90])).tolist() == [2]
    assert size_caps(rates, heights, np.array([200])).tolist() == [2]
    assert size_caps(rates, heights, np.array([400])).tolist() == [3]
    rates[0, 2] = 0  # (not live: the highest live one of that height)
    assert size_caps(rates, heights, np.array([90])).tolist() == [1]
