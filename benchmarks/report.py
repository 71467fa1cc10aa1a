"""Markdown tables of load-tool results, for benchmarks/README.md.

    python -m benchmarks.report benchmarks/results/fanout-ramp benchmarks/results/meeting-ramp

Reads each directory's results.json (written by ``python -m benchmarks.load``) and prints one
table of every measured point, one row per server and size, then the run's summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _num(value: object, spec: str) -> str:
    if value is None:
        return "–"
    return format(value, spec).replace(",", " ")


def table(report: dict) -> str:
    """The points of one run as a Markdown table."""
    results = report["results"]
    x = "participants" if all("participants" in p for ps in results.values() for p in ps) else None
    size = x or "subscribers"
    lines = [
        f"| server | {size} | forwarded pkt/s | loss: packets / frames / streams "
        "| frames delivered | delay p50 / p99 (ms) "
        "| server CPU "
        "(one core) | CPU per forwarded packet | held p50 / p99 (µs) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"visio": "visio-sfu", "janus": "Janus", "naive": "naive relay"}
    for server, points in results.items():
        for p in points:
            held = (
                f"{_num(p.get('server_delay_p50_us'), '.0f')} / "
                f"{_num(p.get('server_delay_p99_us'), '.0f')}"
                if p.get("server_delay_mean_us") is not None
                else "–"
            )
            delay = (
                f"{_num(p.get('delay_p50_ms'), '.1f')} / {_num(p.get('delay_p99_ms'), '.1f')}"
                if p.get("delay_p50_ms") is not None
                else "–"
            )
            lines.append(
                f"| {names.get(server, server)} | {p[size]} | {_num(p['packets_per_s'], ',.0f')} "
                f"| {p['loss_pct']:.2f} / {p.get('frames_lost_pct', 0):.2f} / "
                f"{p.get('streams_missing_pct', 0):.0f} % "
                f"| {_num(p.get('delivered_pct'), '.0f')} % | {delay} "
                f"| {_num(p.get('server_cpu_pct'), '.1f')} % "
                f"| {_num(p.get('cpu_us_per_packet'), '.1f')} µs | {held} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    parser.add_argument("dirs", nargs="+", help="directories holding a results.json")
    args = parser.parse_args(argv)
    for directory in args.dirs:
        report = json.loads((Path(directory) / "results.json").read_text())
        media = report["media"]
        print(
            f"### {directory}: {report['scenario']}, video {media['video_packets_per_s']:.0f} "
            f"pkt/s ({media['video_bitrate'] / 1e6:.1f} Mbit/s) + audio "
            f"{media['audio_packets_per_s']:.0f} pkt/s per publisher\n"
        )
        print(table(report))
        print("\n```\n" + json.dumps(report["summary"], indent=2) + "\n```\n")


if __name__ == "__main__":
    main()
