"""A network namespace for benchmark runs that include Janus.

Janus never gathers ICE candidates on a loopback interface, so it cannot take part in a
127.0.0.1-only run. The load tool then runs itself inside a namespace it creates: ``lo`` plus a
veth pair holding one address of the benchmarking range (RFC 2544, 198.18.0.0/15). Nothing in the
namespace is routed anywhere: every packet of the run stays on this machine, as on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.support import netns as _netns

NAMESPACE = "visio-bench"
INTERFACE = "vbench0"
ADDRESS = "198.18.0.1"
ENV = "VISIO_BENCH_NETNS"


def inside() -> bool:
    """True when this process runs in the benchmark namespace."""
    return os.environ.get(ENV) == NAMESPACE


def available() -> str | None:
    """Why the namespace cannot be made here, or None if it can (tests/support/netns.py)."""
    return _netns.available()


def create() -> None:
    """Create the benchmark's namespace (idempotent): lo, ADDRESS on a veth."""
    _netns.create(NAMESPACE, INTERFACE, ADDRESS, "vbench1")


def delete() -> None:
    """Remove the benchmark's namespace."""
    _netns.delete(NAMESPACE)


def run_inside(module: str, argv: list[str]) -> int:
    """Run ``python -m module argv`` inside a fresh namespace; remove it afterwards."""
    reason = available()
    if reason is not None:
        raise RuntimeError(f"Janus runs need a network namespace, but {reason}")
    proc = None
    try:
        create()
        env = {**os.environ, ENV: NAMESPACE}
        cmd = ["ip", "netns", "exec", NAMESPACE, sys.executable, "-m", module, *argv]
        proc = subprocess.Popen(cmd, env=env)
        # a SIGTERM to us is passed on; the run stops its servers before the namespace goes
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            return proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the run too: give it time to stop its servers
            try:
                return proc.wait(30)
            except (KeyboardInterrupt, subprocess.TimeoutExpired):
                return 130
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        delete()
