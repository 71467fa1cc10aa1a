"""benchmarks/workers.py at a tiny scale: every setup (1 worker, 2 workers, 2 nodes through a
real redis-server) starts, carries packets and is summarised with positive figures (forwarded
packets/s, worker and load-tool CPU, packets/s per worker core). No figure is compared: timing
on this shared machine is noise."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks import workers

pytestmark = pytest.mark.timeout(240)
SMALL = ["--video-size", "160", "90", "--video-bitrate", "150000"]  # a clip encoded in a moment


def _check(report: dict, setups: tuple[str, ...]) -> None:
    for setup in setups:
        result = report["results"][setup]
        point = result["points"][-1]
        assert "error" not in point, point
        assert point["packets_per_s"] > 0 and point["offered_packets_per_s"] > 0, point
        assert point["worker_cores"] > 0 and point["load_cores"] > 0, point
        roles = [label.split()[0] for label in point["server_cores"]]
        assert roles.count("worker" if setup != "2-nodes" else "node") == (
            1 if setup == "1-worker" else 2
        ), point["server_cores"]
        summary = report["summary"][setup]
        assert summary["saturation_pps"] > 0 and summary["pps_per_worker_core"] > 0, summary
        if "1-worker" in report["results"]:
            assert summary["scaling_vs_1_worker"] is not None
    assert report["summary"]["projection_16_cores"]["pps"] > 0


def test_every_setup_runs(tmp_path: Path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test.sh installs it)")
    args = workers.parse(
        ["fanout", "--start", "1", "--step", "1", "--max", "1", "--duration", "1", "--retry", "0"]
        + ["--warmup", "0.5", "--load-procs", "1", "--out", str(tmp_path)]
        + SMALL
    )
    report = workers.main_sync(args)
    _check(report, workers.SETUPS)
    assert (tmp_path / "workers-fanout.json").exists()


def test_meeting_grows_by_rooms(tmp_path: Path):
    """Meetings of 2, one room then two: the second step adds a room (the server lists it) and
    its publishers (the load tool's two processes restart their pacer)."""
    args = workers.parse(
        ["meeting", "--setups", "1-worker", "--size", "2", "--start", "1", "--step", "1"]
        + ["--max", "2", "--duration", "1", "--warmup", "0.5", "--retry", "0"]
        + ["--load-procs", "2", "--out", str(tmp_path)]
        + SMALL
    )
    report = workers.main_sync(args)
    _check(report, ("1-worker",))
    first, second = report["results"]["1-worker"]["points"]
    assert second["offered_packets_per_s"] == 2 * first["offered_packets_per_s"]
    assert sum(first["rooms_placed"].values()) == 1, first["rooms_placed"]
    assert sum(second["rooms_placed"].values()) == 2, second["rooms_placed"]
