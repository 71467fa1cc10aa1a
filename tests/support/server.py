"""Start and stop a real ``visio-sfu serve`` process for a test."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ipv6_loopback() -> str | None:
    """Why ::1 cannot be used here (a container without IPv6), or None if it can."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        return f"no IPv6 loopback here: {exc}"
    return None


def free_udp_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive UDP ports free on 127.0.0.1 (a server's media port,
    and its workers' after it)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + count > 65535:
            continue
        held = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no free UDP ports")


class ServerProcess:
    """A visio-sfu server in a subprocess, optionally with the codec guard."""

    def __init__(
        self,
        guard_file: str | None = None,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        netns: str | None = None,
        dev: bool = True,
        start_timeout: float = 30.0,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        """``netns``: run the server inside this network namespace (tests/support/netns.py);
        its URL then works only for clients in that namespace. ``dev``: development mode
        (/dev/token); without it, keys come from ``extra``'s --config. ``start_timeout``:
        seconds it may take to answer (a front waits for its workers). ``host``: the address
        it serves HTTP on (one of its namespace's). ``port``: the HTTP port (a server started
        again where the one it replaces was: ``again``); else a free one."""
        self.netns = netns
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        args = [
            "serve",
            *(["--dev"] if dev else []),
            "--host",
            host,
            "--port",
            str(self.port),
        ]
        if "--ice-address" not in (extra or []):  # else the test's own
            args += ["--ice-address", "127.0.0.1"]
        args += extra or []
        if "--workers" not in args:  # the CLI's default is one per core: tests say otherwise
            args += ["--workers", "1"]
        if "--udp-port" not in args:  # the default (7882) would be shared by every server
            workers = int(args[args.index("--workers") + 1])
            self.udp_port = free_udp_ports(1 + (workers if workers > 1 else 0))
            args += ["--udp-port", str(self.udp_port)]
        else:
            self.udp_port = int(args[args.index("--udp-port") + 1])
        if guard_file:
            cmd = [sys.executable, "-m", "tests.support.codec_guard", guard_file, *args]
        else:
            cmd = [sys.executable, "-m", "signaling.cli", *args]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]  # ip execs the server: same pid
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        full_env.pop("VISIO_API_KEY", None)
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        self._again = (guard_file, args, env, netns, dev, start_timeout, host)
        # appended to (a restart on the same port, again(), writes after its predecessor), so
        # output() reads from where this process began: not an earlier run's server's lines
        self.log = open(ROOT / "test-artifacts" / f"server-{self.port}.log", "a")  # noqa: SIM115
        self._log_start = self.log.tell()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.time() + start_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            try:
                self._fetch("/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start: {self.output()}")

    def output(self, tail: int | None = 4000) -> str:
        """What the server printed so far (its last ``tail`` characters; None: all)."""
        if not self.log.closed:
            self.log.flush()
        with open(self.log.name, "rb") as f:
            f.seek(self._log_start)
            text = f.read().decode(errors="replace")
        return text if tail is None else text[-tail:]

    def _fetch(self, path: str, timeout: float = 5) -> bytes:
        """GET a path of the server (from inside its namespace, if it has one)."""
        if not self.netns:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as r:
                return r.read()
        fetch = (
            "import sys, urllib.request as u; "
            "sys.stdout.buffer.write(u.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read())"
        )
        cmd = ["ip", "netns", "exec", self.netns, sys.executable, "-c", fetch]
        done = subprocess.run(
            [*cmd, f"{self.url}{path}", str(timeout)], capture_output=True, timeout=timeout + 10
        )
        if done.returncode != 0:
            raise OSError(done.stderr.decode(errors="replace")[-300:])
        return done.stdout

    def metric(self, name: str) -> float:
        """One unlabelled sample of /metrics (-1 if absent)."""
        text = self._fetch("/metrics").decode()
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else -1.0

    def get(self, path: str) -> dict:
        """GET a JSON document from the server."""
        return json.loads(self._fetch(path))

    def dev_credentials(self) -> tuple[str, str]:
        """The development API key and secret the server printed at start-up."""
        text = self.output(None)
        key = re.search(r"API key:\s+(\S+)", text)
        secret = re.search(r"API secret:\s+(\S+)", text)
        if key is None or secret is None:
            raise RuntimeError(f"no development credentials in the server's output: {text[-500:]}")
        return key.group(1), secret.group(1)

    def token(self, room: str, identity: str, name: str = "") -> str:
        """A development token for ``identity`` in ``room``."""
        q = urllib.parse.urlencode({"room": room, "identity": identity, "name": name})
        return self.get(f"/dev/token?{q}")["token"]

    def again(self) -> ServerProcess:
        """A new server process with the same settings on the same HTTP and UDP ports (this
        one stopped first): a restart, as an operator makes one."""
        guard_file, args, env, netns, dev, start_timeout, host = self._again
        extra = args[args.index("--port") + 2 :]  # with the UDP port this one took
        return ServerProcess(
            guard_file, extra, env, netns, dev, start_timeout, host, port=self.port
        )

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Stop the server (``sig``: SIGINT as Ctrl-C, SIGTERM, or SIGKILL as a crash; then
        SIGKILL) and return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode
