"""A network namespace for benchmark runs that include Janus.

Janus never gathers ICE candidates on a loopback interface, so it cannot take part in a
127.0.0.1-only run. The load tool then runs itself inside a namespace it creates: ``lo`` plus a
veth pair holding one address of the benchmarking range (RFC 2544, 198.18.0.0/15). Nothing in the
namespace is routed anywhere: every packet of the run stays on this machine, as on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

NAMESPACE = "visio-bench"
INTERFACE = "vbench0"
ADDRESS = "198.18.0.1"
ENV = "VISIO_BENCH_NETNS"


def inside() -> bool:
    """True when this process runs in the benchmark namespace."""
    return os.environ.get(ENV) == NAMESPACE


def available() -> str | None:
    """Why the namespace cannot be made here, or None if it can (tried: root, iproute2, and
    a kernel or container that allows network namespaces and veth pairs)."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    probe = f"{NAMESPACE}-probe"
    try:
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"ip netns add failed: {made.stderr.strip()}"
        veth = _ip(
            "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1", check=False
        )
        if veth.returncode != 0:
            return f"no veth pair in a namespace: {veth.stderr.strip()}"
        return None
    finally:
        _ip("netns", "del", probe, check=False)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def create(
    namespace: str = NAMESPACE,
    interface: str = INTERFACE,
    address: str = ADDRESS,
    peer: str = "vbench1",
) -> None:
    """Create a namespace (idempotent): lo up, a veth pair up, ``address`` on ``interface``.

    The defaults make the benchmark's; browser tests make their own (tests/support/netns.py).
    """
    if namespace not in _ip("netns", "list").stdout.split():
        _ip("netns", "add", namespace)
    links = _ip("-n", namespace, "-o", "link").stdout
    if f" {interface}@" not in links:
        _ip("-n", namespace, "link", "add", interface, "type", "veth", "peer", "name", peer)
    if f" {address}/" not in _ip("-n", namespace, "-o", "addr").stdout:
        _ip("-n", namespace, "addr", "add", f"{address}/32", "dev", interface)
    for link in ("lo", interface, peer):
        _ip("-n", namespace, "link", "set", link, "up")


def delete(namespace: str = NAMESPACE) -> None:
    """Remove a namespace and its interfaces."""
    _ip("netns", "del", namespace, check=False)


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
