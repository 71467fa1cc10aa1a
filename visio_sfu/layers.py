"""LayerSelector: which simulcast layer each subscriber receives of each track, for all at once.

One row per (subscriber, track) pair. The decision, vectorised with numpy:

1. cap: the highest layer not larger than the size at which the subscriber shows the video
   (adaptive stream; the smallest layer when none is small enough, the highest of several of
   that size), none when it is hidden;
2. floor: the lowest live layer of a shown video is sent even when the estimate is below it. A
   receiver-side estimate (REMB) follows what it receives, so a paused or flapping stream keeps
   it low, and the subscriber sees 2-5 frames a second (seen in Firefox and Chromium when the
   estimate sat just below the lowest layer's rate). Not without limit: in priority order, the
   floors are guaranteed while they cost no more than ``floor_share`` times the budget (the
   first shown video always); the others must fit in the budget like any layer, else pause;
3. share: each subscriber's available bitrate is spent like mediasoup's
   ``DistributeAvailableOutgoingBitrate``: raise every pair one layer at a time, level by level,
   in priority order (active speaker and screen share first), while the budget allows;
4. hysteresis: going *up* to a layer costs ``up_margin`` times its bitrate, staying on (or going
   down to) a layer only ``down_margin`` times it, so an estimate that wanders +-10 % around a
   boundary does not make a layer flap; and a pair that went down recently is ``held``: it may
   not go up again for a while (the allocator decides how long).

Pure: arrays in, arrays out. ``select_reference`` is the same algorithm in plain Python; the
tests check both agree on random inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UP_MARGIN = 1.15  # going up to a layer needs 15 % more than its rate
DOWN_MARGIN = 0.9  # a layer is kept (or gone down to) while 90 % of its rate fits
FLOOR_SHARE = 2.0  # lowest layers are guaranteed while they cost up to twice the budget


@dataclass
class Selection:
    """Inputs of one selection round; N pairs, S subscribers, L layers (lowest first)."""

    subscriber: np.ndarray  # (N,) int: subscriber index of each pair, in [0, S)
    budget: np.ndarray  # (S,) float: available bitrate of each subscriber (bps)
    bitrates: np.ndarray  # (N, L) float: current bitrate of each layer; 0 = layer not live
    heights: np.ndarray  # (N, L) int: frame height of each layer
    wanted: np.ndarray  # (N,) int: height the subscriber shows the video at; 0 = hidden
    priority: np.ndarray  # (N,) int: higher first when bandwidth is short
    current: np.ndarray  # (N,) int: layer sent now; -1 = none
    held: np.ndarray | None = None  # (N,) bool: may not go above ``current`` this round


def size_caps(bitrates: np.ndarray, heights: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Highest live layer whose height <= wanted (else the highest live layer as high as the
    lowest live one: a VP9 SVC track's levels of spatial layer 0 share its height, and a tile
    smaller than it gets its full frame rate); -1 if hidden."""
    live = bitrates > 0
    fits = live & (heights <= wanted[:, None])
    n, layers = bitrates.shape
    idx = np.arange(layers)
    highest_fit = np.where(fits, idx, -1).max(axis=1, initial=-1)
    lowest_live = np.where(live, idx, layers).min(axis=1, initial=layers)
    low_height = heights[np.arange(n), np.minimum(lowest_live, layers - 1)]
    smallest = np.where(live & (heights == low_height[:, None]), idx, -1).max(axis=1, initial=-1)
    cap = np.where(highest_fit >= 0, highest_fit, smallest)
    return np.where(wanted > 0, cap, -1)


def _floors_and_limits(sel: Selection) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: the lowest live layer (the floor, always sent when shown; L if none) and
    the highest layer it may get this round (size cap, and ``current`` when held)."""
    n, layers = sel.bitrates.shape
    live = sel.bitrates > 0
    floor = np.where(live, np.arange(layers), layers).min(axis=1, initial=layers)
    limit = size_caps(sel.bitrates, sel.heights, sel.wanted)
    if sel.held is not None:
        limit = np.where(sel.held, np.minimum(limit, np.maximum(sel.current, floor)), limit)
    return floor, limit


def select(
    sel: Selection,
    up_margin: float = UP_MARGIN,
    down_margin: float = DOWN_MARGIN,
    floor_share: float = FLOOR_SHARE,
) -> np.ndarray:
    """The layer each pair should receive (-1 = none: hidden, no live layer, or too many
    videos for the budget), all at once."""
    n, layers = sel.bitrates.shape
    target = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return target
    floor, limit = _floors_and_limits(sel)
    # priority order within each subscriber: by subscriber, then priority descending
    order = np.lexsort((np.arange(n), -sel.priority, sel.subscriber))
    sub_sorted = sel.subscriber[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sub_sorted)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    spent = np.zeros(len(sel.budget), dtype=np.float64)
    prev_cost = np.zeros(n, dtype=np.float64)  # what the pair's chosen layer costs so far
    limit_s = limit[order]
    floor_s = floor[order]
    current = sel.current[order]
    alive = limit_s >= 0  # still raised level by level; False once hidden or out of budget
    positions = np.arange(n)
    # which floors are guaranteed: in priority order, while their sum stays within
    # floor_share x budget; the first shown video of each subscriber always
    shown = alive & (floor_s < layers)
    floor_rate = sel.bitrates[order, np.minimum(floor_s, layers - 1)]
    floor_cost = np.where(
        shown, floor_rate * np.where(current < floor_s, up_margin, down_margin), 0
    )
    fsum = np.cumsum(floor_cost)
    floors_within = fsum - (fsum[group_start] - floor_cost[group_start])
    fcount = np.cumsum(shown)
    first_shown = shown & (fcount - (fcount[group_start] - shown[group_start]) == 1)
    guaranteed = shown & (first_shown | (floors_within <= floor_share * sel.budget[sub_sorted]))
    for level in range(layers):
        rate = sel.bitrates[order, level]
        want = alive & (limit_s >= level) & (rate > 0)  # dead layers are stepped over
        forced = want & guaranteed & (floor_s == level)  # sent whatever the budget
        level_cost = rate * np.where(current < level, up_margin, down_margin)
        cost = np.where(want, level_cost - prev_cost, 0.0)
        csum = np.cumsum(cost)
        # a grouped prefix sum: the cost of this pair and all before it, same subscriber
        within = csum - (csum[group_start] - cost[group_start])
        ok = want & (forced | (within + spent[sub_sorted] <= sel.budget[sub_sorted]))
        # the prefix rule: once a pair does not fit, the later pairs of that subscriber stop
        first_block = np.full(len(sel.budget), n, dtype=np.int64)
        late = want & ~ok
        np.minimum.at(first_block, sub_sorted[late], positions[late])
        ok &= forced | (positions < first_block[sub_sorted])
        alive &= ~(want & ~ok)
        np.add.at(spent, sub_sorted[ok], cost[ok])
        target[order[ok]] = level
        prev_cost[ok] = level_cost[ok]
    return target


def select_reference(
    sel: Selection,
    up_margin: float = UP_MARGIN,
    down_margin: float = DOWN_MARGIN,
    floor_share: float = FLOOR_SHARE,
) -> list[int]:
    """The same decision as ``select``, one pair at a time, in plain Python."""
    n, layers = sel.bitrates.shape
    floors, limits = [], []
    for i in range(n):
        live = [j for j in range(layers) if sel.bitrates[i, j] > 0]
        floor = min(live) if live else layers
        if sel.wanted[i] <= 0 or not live:
            limit = -1
        else:
            fit = [j for j in live if sel.heights[i, j] <= sel.wanted[i]]
            smallest = [j for j in live if sel.heights[i, j] == sel.heights[i, floor]]
            limit = max(fit) if fit else max(smallest)
            if sel.held is not None and sel.held[i]:
                limit = min(limit, max(int(sel.current[i]), floor))
        floors.append(floor)
        limits.append(limit)
    pairs = sorted(range(n), key=lambda i: (sel.subscriber[i], -sel.priority[i], i))
    target = [-1] * n
    alive = [c >= 0 for c in limits]
    guaranteed = [False] * n
    floor_sum: dict[int, float] = {}
    for i in pairs:
        if not alive[i] or floors[i] >= layers:
            continue
        s = int(sel.subscriber[i])
        margin = up_margin if sel.current[i] < floors[i] else down_margin
        first = s not in floor_sum
        floor_sum[s] = floor_sum.get(s, 0.0) + float(sel.bitrates[i, floors[i]]) * margin
        guaranteed[i] = first or floor_sum[s] <= floor_share * sel.budget[s]
    prev = [0.0] * n
    spent = [0.0] * len(sel.budget)
    for level in range(layers):
        blocked: set[int] = set()
        for i in pairs:
            s = int(sel.subscriber[i])
            rate = float(sel.bitrates[i, level])
            if not alive[i] or limits[i] < level or rate <= 0:
                continue
            level_cost = rate * (up_margin if sel.current[i] < level else down_margin)
            price = level_cost - prev[i]
            forced = guaranteed[i] and level == floors[i]
            if not forced and (s in blocked or spent[s] + price > sel.budget[s]):
                blocked.add(s)
                alive[i] = False
                continue
            spent[s] += price
            target[i] = level
            prev[i] = level_cost
    return target
