"""Cost of one layer-selection round: numpy LayerSelector against the plain-Python reference.

    python -m benchmarks.selector [--repeat 5] [--levels 5]

Prints microseconds per round for 10, 100, 1 000 and 10 000 (subscriber, track) pairs.
``--levels 5``: every track is VP9 SVC (five levels: spatial layer 0 at T0, T0+T1 and full
rate, then 360 and 720 high), as the allocator selects in a room with a VP9 SVC track.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from visio_sfu.layers import Selection, select, select_reference

#: per level count: each level's typical bitrate and frame height (lowest first)
LEVELS = {
    3: ([150_000, 500_000, 1_500_000], [180, 360, 720]),  # simulcast q/h/f
    5: ([40_000, 80_000, 150_000, 500_000, 1_500_000], [180, 180, 180, 360, 720]),  # VP9 SVC
}


def make(pairs: int, seed: int = 1, levels: int = 3) -> Selection:
    """A random but realistic round: 8 tracks per subscriber, ``levels`` levels each (3:
    simulcast layers; 5: VP9 SVC, spatial layer 0 at three frame rates, then 360 and 720)."""
    rng = np.random.default_rng(seed)
    subs = max(pairs // 8, 1)
    typical, heights = LEVELS[levels]
    rates = np.array(typical, dtype=float) * rng.uniform(0.7, 1.3, (pairs, levels))
    return Selection(
        subscriber=np.repeat(np.arange(subs), -(-pairs // subs))[:pairs],
        budget=rng.uniform(300_000, 8_000_000, subs),
        bitrates=rates,
        heights=np.tile(heights, (pairs, 1)),
        wanted=rng.choice([0, 180, 240, 360, 720], pairs),
        priority=rng.integers(0, 3, pairs),
        current=rng.integers(-1, levels, pairs),
    )


def timed(fn, arg, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - start)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--levels", type=int, choices=sorted(LEVELS), default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    rows = []
    print(f"{'pairs':>7} {'numpy µs':>10} {'python µs':>11} {'speed-up':>9}")
    for pairs in (10, 100, 1_000, 10_000):
        sel = make(pairs, levels=args.levels)
        assert select(sel).tolist() == select_reference(sel)
        fast = timed(select, sel, args.repeat)
        slow = timed(select_reference, sel, max(1, args.repeat // (1 + pairs // 2000)))
        rows.append({"pairs": pairs, "levels": args.levels, "numpy_us": fast, "python_us": slow})
        print(f"{pairs:>7} {fast:>10.0f} {slow:>11.0f} {slow / fast:>8.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
