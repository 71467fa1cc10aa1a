"""The examples and the load tool stay in a meeting for over a minute (issue 13: the Python
client never pinged, so the server removed its participants after 30 s while media flowed).
Both run at once against one server with its default 30 s ping timeout, for 65 s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]


def test_examples_and_load_tool_run_past_a_minute(tmp_path: Path):
    server = ServerProcess()
    try:
        examples = [
            subprocess.Popen(
                [
                    sys.executable,
                    "examples/client.py",
                    "--url",
                    server.url,
                    "--index",
                    str(i),
                    "--token",
                    server.token("long", f"example{i}"),
                    "--seconds",
                    "65",
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(2)
        ]
        # the development key and secret (ServerProcess starts the server with --dev)
        key, secret = server.dev_credentials()
        load = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.load",
                "fanout",
                "--url",
                server.url,
                "--key",
                key,
                "--secret",
                secret,
                "--subscribers",
                "1",
                "--duration",
                "62",
                "--warmup",
                "2",
                "--out",
                str(tmp_path / "load"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=150,
        )
        outputs = [p.communicate(timeout=60)[0] for p in examples]
        log = server.output(None)
    finally:
        server.stop()
    assert load.returncode == 0, load.stdout[-2000:] + load.stderr[-2000:]
    for i, out in enumerate(outputs):
        assert examples[i].returncode == 0, out[-2000:]
        last = [line for line in out.splitlines() if line.startswith("video from")]
        assert last, out[-2000:]  # still receiving the other's video at the end
    assert "silent for" not in log, "a Python participant was removed for not pinging"
    assert "left (left)" in log  # they left by themselves, after 65 s
