"""A page in Debian's firefox-esr, headless, driven through ``tests/browser/firefox/bridge.mjs``.

The bridge (Node, puppeteer-core over WebDriver BiDi, no browser download) opens one page in a
fresh profile with fake camera and microphone and answers JSON-line commands. ``FirefoxPage``
offers the few Playwright ``Page`` methods the browser tests use (``evaluate``,
``wait_for_timeout``, ``screenshot``), so ``poll`` and ``artefact`` work with it unchanged.
Every call is bounded in time; ``close`` ends the bridge and Firefox.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

FIREFOX = "/usr/bin/firefox-esr"
BRIDGE_DIR = Path(__file__).resolve().parent / "firefox"
BRIDGE = BRIDGE_DIR / "bridge.mjs"


def missing_requirements() -> str | None:
    """Why Firefox pages cannot run here, or None when they can."""
    if not Path(FIREFOX).exists():
        return "Debian's firefox-esr is not installed (scripts/test.sh does)"
    if not shutil.which("node"):
        return "node is not installed (scripts/test.sh installs Debian's nodejs and npm)"
    if not (BRIDGE_DIR / "node_modules" / "puppeteer-core").is_dir():
        return "tests/browser/firefox/node_modules is missing (scripts/test.sh runs npm ci there)"
    return None


class FirefoxError(Exception):
    """A command the bridge could not carry out (a script threw, a timeout, no bridge)."""


class FirefoxPage:
    """One Firefox page at ``url``; ``name`` prefixes what it logs."""

    def __init__(
        self,
        url: str,
        name: str = "firefox",
        start_timeout: float = 90.0,
        prefix: list[str] | None = None,
    ) -> None:
        """``prefix``: a command that runs the bridge (and Firefox) in a network namespace."""
        self.name = name
        self.url = url
        self.console: list[str] = []  # "console.<level>: text" and "pageerror: text" lines
        self.log: list[str] = []  # everything the bridge wrote to stderr
        self.firefox_pid: int | None = None
        self.version = ""
        self._ids = itertools.count(1)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._profile = tempfile.mkdtemp(prefix="visio-firefox-")
        cmd = ["node", str(BRIDGE), url, "--name", name, "--profile", self._profile]
        cmd = [*(prefix or []), *cmd, "--firefox", FIREFOX]
        self.proc = subprocess.Popen(
            cmd,
            cwd=BRIDGE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            ready = self._next_message(start_timeout, "starting Firefox")
            if not ready.get("ready"):
                raise FirefoxError(f"Firefox did not start: {ready.get('error')}")
        except BaseException:
            self.close()
            raise
        self.firefox_pid = ready.get("pid")
        self.version = ready.get("version", "")

    # ------------------------------------------------------------ the bridge's output ----------
    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)  # the bridge exited

    def _read_stderr(self) -> None:
        prefix = f"[{self.name}] "
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            self.log.append(line)
            text = line[len(prefix) :] if line.startswith(prefix) else line
            if text.startswith(("console.", "pageerror:")):
                self.console.append(text)
            elif self.console and not line.startswith("["):  # a multi-line message goes on
                self.console[-1] += "\n" + line
            print(line, file=sys.stderr, flush=True)

    def _next_message(self, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                raise FirefoxError(f"{what}: no answer from the Firefox bridge in {timeout:.0f} s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._lines.put(None)  # stays at the end for later calls
                tail = "\n".join(self.log[-20:])
                raise FirefoxError(f"{what}: the Firefox bridge exited; its last words:\n{tail}")
            line = line.strip()
            if not line:
                continue
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                self.log.append(f"(not JSON on stdout) {line}")

    def _call(self, op: str, timeout: float, **fields) -> object:
        with self._lock:
            if self.proc.poll() is not None:
                raise FirefoxError(f"{op}: the Firefox bridge has exited ({self.proc.returncode})")
            cid = next(self._ids)
            command = {"id": cid, "op": op, "timeout": int(timeout * 1000), **fields}
            try:
                self.proc.stdin.write(json.dumps(command) + "\n")
                self.proc.stdin.flush()
            except OSError as exc:
                raise FirefoxError(f"{op}: cannot reach the Firefox bridge: {exc}") from exc
            while True:  # the bridge's own timeout answers first; ours is the backstop
                answer = self._next_message(timeout + 10, op)
                if answer.get("id") == cid:
                    break
        if "error" in answer:
            raise FirefoxError(f"{op}: {answer['error']}")
        return answer.get("result")

    # ------------------------------------------------------------ Playwright-like API ----------
    def evaluate(self, script: str, timeout: float = 30.0):
        """The value of ``script`` in the page: a function expression is called (and awaited)."""
        return self._call("evaluate", timeout, script=script)

    def screenshot(self, path: str, timeout: float = 30.0) -> str:
        """Save a PNG of the page at ``path``."""
        return self._call("screenshot", timeout, path=str(path))

    def wait_for_timeout(self, ms: float) -> None:
        time.sleep(ms / 1000)

    def close(self, timeout: float = 20.0) -> None:
        """Close Firefox and the bridge (killing them if they do not go), remove the profile."""
        if self.proc.poll() is None:
            with contextlib.suppress(FirefoxError):
                self._call("close", timeout / 2)
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout / 2)
            except subprocess.TimeoutExpired:
                self._kill()
        self._kill_firefox()
        shutil.rmtree(self._profile, ignore_errors=True)

    def _kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self._kill_firefox()

    def _kill_firefox(self) -> None:
        # puppeteer starts Firefox in a process group of its own, which outlives a killed bridge
        pid = self.firefox_pid
        if not pid:
            return
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)

    def __enter__(self) -> FirefoxPage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
