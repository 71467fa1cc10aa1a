"""A network namespace for tests whose clients gather no loopback ICE candidates (Firefox).

The namespace holds ``lo`` and a veth pair with one address of the benchmarking range (RFC 2544,
198.18.0.0/15), routed nowhere: the server and the browsers run inside it, so every packet of the
test stays in it, as on 127.0.0.1 (benchmarks/netns.py does the same for Janus).
"""

from __future__ import annotations

import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks import netns as _netns

ADDRESS = "198.18.0.1"


def unavailable() -> str | None:
    """Why a namespace cannot be made here (needs root and iproute2), or None."""
    return _netns.available()


@contextmanager
def namespace(name: str) -> Iterator[str]:
    """Create the namespace ``name`` (lo, and ADDRESS on a veth), remove it afterwards."""
    _netns.create(name, interface="vt0", address=ADDRESS, peer="vt1")
    # Firefox gathers no candidate at all without a default route; this one leads into the
    # veth, whose other end is in the namespace too: nothing leaves it
    subprocess.run(["ip", "-n", name, "route", "add", "default", "dev", "vt0"], check=False)
    try:
        yield name
    finally:
        _netns.delete(name)


def prefix(name: str) -> list[str]:
    """The command prefix that runs a program inside the namespace."""
    return ["ip", "netns", "exec", name]


def wrapper(name: str, program: str) -> Path:
    """A script that runs ``program`` with its arguments inside the namespace (for tools, such
    as Playwright, that launch a browser from its path)."""
    folder = Path(tempfile.mkdtemp(prefix="visio-netns-"))
    script = folder / Path(program).name
    script.write_text(f'#!/bin/sh\nexec ip netns exec {name} {program} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script
