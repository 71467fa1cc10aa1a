"""A network namespace for tests whose clients gather no loopback ICE candidates (Firefox).

The namespace holds ``lo`` and a veth pair with one address of the benchmarking range (RFC 2544,
198.18.0.0/15), routed nowhere: the server and the browsers run inside it, so every packet of the
test stays in it, as on 127.0.0.1 (benchmarks/netns.py does the same for Janus).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ADDRESS = "198.18.0.1"


def available() -> str | None:
    """Why the namespace cannot be made here, or None if it can (tried: root, iproute2, and
    a kernel or container that allows network namespaces and veth pairs)."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    probe = f"visio-probe-{os.getpid()}"
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


def create(namespace: str, interface: str, address: str, peer: str) -> None:
    """Create a namespace (idempotent): lo up, a veth pair up, ``address`` on ``interface``.

    Browser tests make their own (``namespace``), the load tool the benchmark's.
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


def delete(namespace: str) -> None:
    """Remove a namespace and its interfaces."""
    _ip("netns", "del", namespace, check=False)


def unavailable() -> str | None:
    """Why a namespace cannot be made here (needs root and iproute2), or None."""
    return available()


def _folder(name: str) -> Path:
    return Path(tempfile.gettempdir()) / f"visio-netns-{name}"


@contextmanager
def namespace(name: str) -> Iterator[str]:
    """Create the namespace ``name`` (lo, and ADDRESS on a veth), remove it afterwards (and
    the wrapper scripts made for it)."""
    create(name, interface="vt0", address=ADDRESS, peer="vt1")
    # Firefox gathers no candidate at all without a default route; this one leads into the
    # veth, whose other end is in the namespace too: nothing leaves it
    subprocess.run(["ip", "-n", name, "route", "add", "default", "dev", "vt0"], check=False)
    try:
        yield name
    finally:
        delete(name)
        remove_wrappers(name)


def remove_wrappers(name: str) -> None:
    """Remove the wrapper scripts made for the namespace ``name`` (``wrapper``)."""
    shutil.rmtree(_folder(name), ignore_errors=True)


def unique_name(prefix: str) -> str:
    """A namespace name no other test run on this machine uses at the same time."""
    return f"{prefix}-{os.getpid()}"


def prefix(name: str) -> list[str]:
    """The command prefix that runs a program inside the namespace."""
    return ["ip", "netns", "exec", name]


def wrapper(name: str, program: str) -> Path:
    """A script that runs ``program`` with its arguments inside the namespace (for tools, such
    as Playwright, that launch a browser from its path); removed with the namespace."""
    folder = _folder(name)
    folder.mkdir(exist_ok=True)
    script = folder / Path(program).name
    script.write_text(f'#!/bin/sh\nexec ip netns exec {name} {program} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script
