"""StreamAllocator: turns a room's DownTracks into one LayerSelector round, applies it,
and switches publishers' unused simulcast layers off (dynacast).

Runs on the room's timer (a few times a second) and never on the packet path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .forwarder import ALL_TEMPORAL, TEMPORAL_LEVELS
from .layers import UP_MARGIN, Selection, select, size_caps

if TYPE_CHECKING:
    from .downtrack import DownTrack
    from .participant import Participant
    from .publisher import Publisher

MAX_LAYERS = 3
LEVELS = MAX_LAYERS + TEMPORAL_LEVELS  # the selection's columns: simulcast rows use 3
UNKNOWN_BUDGET = 50_000_000  # no bandwidth estimate from the subscriber yet: no limit
NOMINAL_BITRATES = (150_000, 500_000, 1_500_000)  # a layer switched off keeps a nominal cost
DYNACAST_HOLD = 5.0  # seconds a layer stays on after the last subscriber stops needing it
LIVE_WITHIN = 1.0  # a layer that sent nothing for this long is not live
#: a simulcast layer this much quieter than a layer below it was stopped by the publisher
#: (Chromium drops its top layers when its uplink estimate falls): its viewers move down now,
#: not after LIVE_WITHIN (a 1.3 s freeze); the whole track quiet (muted, a network hiccup)
#: still waits LIVE_WITHIN, and the lowest layer (at times sent at a low frame rate) too
STOPPED_WITHIN = 0.4
RAMP_FLOOR = 0.5  # share of a layer's nominal cost it is counted at, at least
UP_HOLD = 4.0  # seconds a subscriber waits, after going down a layer, before going up again


def layer_rates(track: Publisher, now: float, max_layer: int) -> list[float]:
    """What each level costs to forward (0: not available to this subscriber), LEVELS of
    them: simulcast layers first; for VP9 SVC, spatial layer 0 with its temporal layers T0,
    then T0+T1 (a quarter and half the frame rate in L3T3), then each spatial layer at the
    full frame rate (costing itself and those below it)."""
    if track.svc:
        rates = [0.0] * LEVELS
        base = track.spatial[0]
        if now - base.last_packet <= LIVE_WITHIN:
            # temporal levels only while the layers above them are sent: else they are the
            # same stream as spatial layer 0 at full rate
            live = [now - last <= LIVE_WITHIN for last in base.temporal_last]
            part = 0.0
            for t in range(TEMPORAL_LEVELS):
                part += base.temporal_bitrate[t]
                if live[t] and any(live[t + 1 :]):
                    rates[t] = max(part, 1.0)
        total = 0.0
        for i, spatial in enumerate(track.spatial[:MAX_LAYERS]):
            total += spatial.bitrate
            live_i = i <= max_layer and now - spatial.last_packet <= LIVE_WITHIN
            rates[TEMPORAL_LEVELS + i] = max(total, 1.0) if live_i else 0.0
        return rates
    if not track.simulcast:
        return [1.0] + [0.0] * (LEVELS - 1)  # one stream: never held back by bandwidth
    rates = []
    below = float("-inf")  # the latest packet of the layers below this one
    for i, layer in enumerate(track.layers[:MAX_LAYERS]):
        last, below = layer.last_packet, max(below, layer.last_packet)
        if i > max_layer:
            rates.append(0.0)
        elif now - last <= LIVE_WITHIN and below - last <= STOPPED_WITHIN:
            # a layer just (re)started measures low while its encoder ramps up: never count
            # it below half its nominal cost, or a subscriber goes up to it on a tight link
            rates.append(max(layer.bitrate, RAMP_FLOOR * NOMINAL_BITRATES[min(i, 2)], 1.0))
        elif layer.rid not in track.active_rids:  # switched off by us: can come back
            # at what it cost while it ran, and, as a live one, half its nominal cost at least
            nominal = NOMINAL_BITRATES[min(i, 2)]
            rates.append(max(float(layer.known_bitrate or nominal), RAMP_FLOOR * nominal))
        else:
            rates.append(0.0)  # the publisher does not send it
    return rates + [0.0] * (LEVELS - len(rates))


def allocate(
    participants: list[Participant], speaker: str | None, now: float
) -> list[tuple[DownTrack, int]]:
    """Choose a level (layer; for VP9 SVC spatial and temporal layers) for every video
    DownTrack of these subscribers; returns the changes."""
    pairs: list[DownTrack] = []
    subs: list[int] = []
    budgets: list[float] = []
    for p in participants:
        if p.subscriber is None:
            continue
        index = len(budgets)
        budgets.append(float(p.subscriber.bandwidth or UNKNOWN_BUDGET))
        for dt in p.subscriber.downtracks.values():
            if dt.track.kind == "video" and dt.bound:
                pairs.append(dt)
                subs.append(index)
    if not pairs:
        return []
    n = len(pairs)
    # VP9 SVC tracks' temporal levels widen the selection: only when a room has one
    width = LEVELS if any(dt.track.svc for dt in pairs) else MAX_LAYERS
    heights = np.zeros((n, width), dtype=np.int64)
    rates = np.zeros((n, width), dtype=np.float64)
    wanted = np.zeros(n, dtype=np.int64)
    priority = np.zeros(n, dtype=np.int64)
    current = np.zeros(n, dtype=np.int64)
    held = np.zeros(n, dtype=bool)
    for i, dt in enumerate(pairs):
        track = dt.track
        h = track.layer_heights()[:MAX_LAYERS]
        if track.svc:  # the temporal levels have spatial layer 0's size
            h = [h[0]] * TEMPORAL_LEVELS + h
        heights[i, : len(h)] = h
        rates[i] = layer_rates(track, now, dt.max_layer)[:width]
        wanted[i] = 0 if not dt.visible else (dt.max_height or 1 << 20)
        priority[i] = 2 if track.source == "screen_share" else int(track.participant_sid == speaker)
        current[i] = dt.level
        held[i] = now - dt.went_down_at < UP_HOLD
    targets = select(
        Selection(
            np.array(subs), np.array(budgets), rates, heights, wanted, priority, current, held
        )
    )
    # the layers size and quality allow: going below them is bandwidth's doing
    allowed = size_caps(rates, heights, wanted).tolist()
    # what each subscriber needs to receive them with no bandwidth limit: what probing aims
    # for. A layer above the one it gets needs its rate and the margin for going up (select):
    # probes that stopped at its bare rate left an estimate just under the margin for good
    wants = [0.0] * len(budgets)
    for i, cap in enumerate(allowed):
        if cap >= 0:
            up = UP_MARGIN if targets[i] < cap else 1.0
            wants[subs[i]] += float(rates[i, cap]) * up
    index = 0
    for p in participants:
        if p.subscriber is None:
            continue
        p.subscriber.wanted_bitrate = wants[index]
        index += 1
    changes = []
    for dt, target, cap in zip(pairs, targets.tolist(), allowed, strict=True):
        if dt.track.svc:
            dt.cap_temporal(fps_cap(dt.track, dt.max_fps))
        if target != dt.level:
            if 0 <= target < dt.level and target < cap:
                dt.went_down_at = now  # held a while before going up again
            dt.set_level(target, now)
            changes.append((dt, target))
    return changes


def fps_cap(track: Publisher, max_fps: float) -> int:
    """The highest temporal layer of a VP9 SVC track whose frame rate (with those below it)
    stays within ``max_fps`` (T0 at least); every layer when there is no cap."""
    if max_fps <= 0:
        return ALL_TEMPORAL
    base = track.spatial[0]
    for t in range(1, len(base.temporal_fps)):
        if base.frame_rate(t) > max_fps * 1.1:  # 10 %: measured rates wander
            return t - 1
    return ALL_TEMPORAL


def dynacast(track: Publisher, now: float) -> list[str] | None:
    """The rids the publisher should send now, or None if that did not change."""
    if not track.simulcast:
        return None
    for dt in track.downtracks:
        # the layer a subscriber gets now stays on until the one it switches to has started
        # (its keyframe): switching the old one off first would leave it with nothing
        for index in (dt.target_layer, dt.current_layer):
            if 0 <= index < len(track.layers):
                track.layers[index].needed_until = now + DYNACAST_HOLD
    active = [
        layer.rid
        for i, layer in enumerate(track.layers)
        if i == 0 or now < layer.needed_until  # the lowest layer always runs: joins are fast
    ]
    if active == track.active_rids:
        return None
    track.active_rids = active
    return active
