"""Cost of one layer-selection round: numpy LayerSelector against the plain-Python reference.

    python -m benchmarks.selector [--repeat 5]

Prints microseconds per round for 10, 100, 1 000 and 10 000 (subscriber, track) pairs.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from visio_sfu.layers import Selection, select, select_reference


def make(pairs: int, seed: int = 1) -> Selection:
    """A random but realistic round: 8 tracks per subscriber, three layers each."""
    rng = np.random.default_rng(seed)
    subs = max(pairs // 8, 1)
    rates = np.array([150_000, 500_000, 1_500_000], dtype=float) * rng.uniform(0.7, 1.3, (pairs, 3))
    return Selection(
        subscriber=np.repeat(np.arange(subs), -(-pairs // subs))[:pairs],
        budget=rng.uniform(300_000, 8_000_000, subs),
        bitrates=rates,
        heights=np.tile([180, 360, 720], (pairs, 1)),
        wanted=rng.choice([0, 180, 240, 360, 720], pairs),
        priority=rng.integers(0, 3, pairs),
        current=rng.integers(-1, 3, pairs),
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
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    rows = []
    print(f"{'pairs':>7} {'numpy µs':>10} {'python µs':>11} {'speed-up':>9}")
    for pairs in (10, 100, 1_000, 10_000):
        sel = make(pairs)
        assert select(sel).tolist() == select_reference(sel)
        fast = timed(select, sel, args.repeat)
        slow = timed(select_reference, sel, max(1, args.repeat // (1 + pairs // 2000)))
        rows.append({"pairs": pairs, "numpy_us": fast, "python_us": slow})
        print(f"{pairs:>7} {fast:>10.0f} {slow:>11.0f} {slow / fast:>8.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
