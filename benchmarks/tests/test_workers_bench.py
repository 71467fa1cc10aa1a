"""benchmarks/workers.py at a tiny scale: every setup (1 worker, 2 workers, 2 nodes through a
real redis-server) starts, carries packets and is summarised. No figure is checked."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from benchmarks import workers

pytestmark = pytest.mark.timeout(240)


def test_every_setup_runs(tmp_path: Path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test.sh installs it)")
    args = workers.parser().parse_args(
        ["fanout", "--start", "1", "--step", "1", "--max", "1", "--duration", "0.5", "--retry", "0"]
        + ["--warmup", "0.5", "--out", str(tmp_path)]
    )
    report = asyncio.run(workers.main_async(args))
    for setup in workers.SETUPS:
        result = report["results"][setup]
        assert result["points"] and result["saturation_pps"] > 0, result
        assert report["summary"][setup]["scaling_vs_1_worker"] is not None
    assert report["summary"]["projection_16_cores"]["pps"] > 0
    assert (tmp_path / "workers-fanout.json").exists()
