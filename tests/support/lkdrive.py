"""Drives tests/support/livekit_peers.py (LiveKit Python SDK participants in a process of their
own) from a test: one JSON command per line, one JSON answer per line."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jwt

ROOT = Path(__file__).resolve().parents[2]


def livekit_token(
    key: str,
    secret: str,
    identity: str,
    room: str,
    name: str = "",
    attributes: dict[str, str] | None = None,
    **grant: object,
) -> str:
    """A token as LiveKit's server SDKs mint it (camelCase video grant, attributes)."""
    now = int(time.time())
    video = {"room": room, "roomJoin": True, **grant}
    claims: dict = {"iss": key, "sub": identity, "nbf": now - 5, "exp": now + 3600}
    claims["video"] = video
    if name:
        claims["name"] = name
    if attributes:
        claims["attributes"] = attributes
    return jwt.encode(claims, secret, algorithm="HS256")


def _holds(check: Callable[[dict], bool], stats: dict) -> bool:
    """``check(stats)``, a peer or counter not there yet counting as False."""
    try:
        return bool(check(stats))
    except (KeyError, TypeError):
        return False


def _not_seen(timeout: float, what: str, stats: dict) -> AssertionError:
    brief = {n: {k: v for k, v in s.items() if k != "data"} for n, s in stats.items()}
    return AssertionError(f"not seen in {timeout}s: {what}\n{json.dumps(brief)[:3000]}")


class LiveKitPeers:
    """The peers process; ``await cmd(...)`` sends one command and returns its answer."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("http://", "ws://")
        self.proc: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()

    async def __aenter__(self) -> LiveKitPeers:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.livekit_peers",
            self.url,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            await asyncio.wait_for(self.cmd("quit"), 15)
        except Exception:
            pass
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def cmd(self, cmd: str, timeout: float = 40, **args: object) -> dict:
        """Send a command; raise if the peers process reports an error."""
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout
        async with self.lock:
            self.proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise AssertionError(f"the LiveKit peers process ended (exit {self.proc.returncode})")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise AssertionError(f"{cmd} failed: {answer.get('error')}")
        return answer

    async def stats(self) -> dict:
        """Every peer's counters (see livekit_peers.Peer.stats)."""
        return (await self.cmd("stats"))["peers"]

    async def until(self, check: Callable[[dict], bool], timeout: float = 30, what: str = ""):
        """Poll stats until ``check(stats)`` holds; AssertionError with the last stats if not."""
        deadline = time.monotonic() + timeout
        stats: dict = {}
        while time.monotonic() < deadline:
            stats = await self.stats()
            if _holds(check, stats):
                return stats
            await asyncio.sleep(0.3)
        raise _not_seen(timeout, what, stats)


class SyncLiveKitPeers:
    """LiveKitPeers for synchronous tests (Playwright's sync API)."""

    def __init__(self, url: str) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.livekit_peers", url.replace("http://", "ws://")],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def cmd(self, cmd: str, **args: object) -> dict:
        """Send a command and wait for its answer; raise if it failed."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the LiveKit peers process ended ({self.proc.poll()})")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise AssertionError(f"{cmd} failed: {answer.get('error')}")
        return answer

    def stats(self) -> dict:
        """Every peer's counters."""
        return self.cmd("stats")["peers"]

    def until(self, check: Callable[[dict], bool], timeout: float = 30, what: str = "") -> dict:
        """Poll stats until ``check(stats)`` holds."""
        deadline = time.monotonic() + timeout
        stats: dict = {}
        while time.monotonic() < deadline:
            stats = self.stats()
            if _holds(check, stats):
                return stats
            time.sleep(0.3)
        raise _not_seen(timeout, what, stats)

    def close(self) -> None:
        """Disconnect the peers and end the process."""
        try:
            self.cmd("quit")
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
