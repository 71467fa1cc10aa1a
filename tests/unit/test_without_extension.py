"""Without visio_sfu._batch (no C compiler at install time), the forwarding path runs in Python:
the DownTrack, Munger, Forwarder, mux and transport tests pass with the extension hidden."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_RUN = """
import sys
sys.modules["visio_sfu._batch"] = None  # as if it had not been built
from visio_sfu import bwe, downtrack, munger, transport, udpmux
assert downtrack._rewrite_rtp is None and transport.Route is None and udpmux.Batch is None
assert munger.Munger.__mro__[1] is munger._MungerState
assert bwe.TransportStamper.__mro__[1] is bwe._StamperState
import pytest
sys.exit(pytest.main(["-q", "-p", "no:randomly", "-p", "no:cacheprovider", *sys.argv[1:]]))
"""


def test_the_python_path_alone_passes_the_forwarding_tests():
    tests = [
        "tests/unit/test_downtrack.py",
        "tests/unit/test_munger.py",
        "tests/unit/test_forwarder.py",
        "tests/unit/test_subscribe.py",
        "tests/unit/test_freezes.py",
        "tests/unit/test_repair.py",
        "tests/unit/test_publisher.py",
        "tests/unit/test_transport.py",
        "tests/unit/test_transport_cc.py",
        "tests/unit/test_bwe.py",
    ]
    done = subprocess.run(
        [sys.executable, "-c", _RUN, *tests],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-500:]
