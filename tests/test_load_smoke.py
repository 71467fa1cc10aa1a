"""The load tool at a tiny scale: each scenario runs, packets flow, result files are written.

No timing is checked here (figures live in benchmarks/README.md): only that the tool works
against a real visio-sfu server it starts itself, and against the naive relay.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from benchmarks import load

pytestmark = pytest.mark.timeout(180)

SCENARIOS = {
    "fanout": ["--subscribers", "2"],
    "meeting": ["--participants", "3"],
    "audio": ["--participants", "4", "--speakers", "2"],
    "ramp": ["--step", "1", "--max", "2"],
}


def run(tmp_path: Path, scenario: str, *extra: str) -> dict:
    args = load.parser().parse_args(
        [scenario, *extra, "--duration", "1.5", "--warmup", "1.5", "--out", str(tmp_path)]
    )
    return asyncio.run(load.main_async(args))


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario_runs_against_visio_sfu(tmp_path: Path, scenario: str):
    report = run(tmp_path, scenario, *SCENARIOS[scenario])
    points = report["results"]["visio"]
    assert points, "no measurement"
    for point in points:
        assert point["packets_per_s"] > 0, point
        assert point["server_cpu_pct"] is not None
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["scenario"] == scenario and saved["summary"]["visio"]
    for name in ("server_cpu_pct", "packets_per_s", "loss_pct", "delay_p99_ms"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    if scenario == "ramp":
        assert [p["subscribers"] for p in points] == [1, 2]
    if scenario in ("fanout", "meeting", "ramp"):  # video carries abs-send-time
        assert points[-1]["delay_p50_ms"] is not None


def test_fanout_against_the_naive_relay(tmp_path: Path):
    report = run(tmp_path, "fanout", "--subscribers", "1", "--servers", "naive")
    point = report["results"]["naive"][0]
    assert point["packets_per_s"] > 0
    assert point["delay_p50_ms"] is None  # re-encoded: no comparable send time
