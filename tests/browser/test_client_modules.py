"""The web client's modules without a browser: node runs tests/browser/js/client_modules.mjs,
which imports static/layout.js, chat.js, quality.js and devices.js (no DOM) and checks the grid
solver, meeting names, initials, links in chat, the chat outbox across an outage and the
connection-quality verdicts, and that a busy camera is tried once more."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "js" / "client_modules.mjs"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_client_modules():
    done = subprocess.run(["node", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr or done.stdout
    assert "client modules: ok" in done.stdout
