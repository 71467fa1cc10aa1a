"""coturn (Debian's turnserver) for tests: started on 127.0.0.1 with a shared secret (the
TURN REST API scheme visio-sfu's credentials use), relaying on 127.0.0.1, stopped after."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TurnServer:
    """A coturn process listening on 127.0.0.1:``port`` (UDP and TCP)."""

    def __init__(
        self, secret: str = "a-test-secret-for-coturn-of-32-chars", realm: str = "visio.test"
    ) -> None:
        binary = shutil.which("turnserver")
        if binary is None:
            raise RuntimeError("coturn is not installed (scripts/test.sh installs it)")
        self.secret = secret
        self.port = free_udp_port()
        self._dir = tempfile.TemporaryDirectory(prefix="visio-turn-")
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        self.log = open(ROOT / "test-artifacts" / f"turn-{self.port}.log", "w")  # noqa: SIM115
        relay = free_udp_port()
        self.proc = subprocess.Popen(
            [
                binary,
                "-n",  # no configuration file
                "--log-file=stdout",
                "--simple-log",
                "--verbose",  # its allocations in the log
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                f"--listening-port={self.port}",
                f"--min-port={relay}",
                f"--max-port={relay + 40}",
                "--use-auth-secret",
                f"--static-auth-secret={secret}",
                f"--realm={realm}",
                "--allow-loopback-peers",  # the SFU is on 127.0.0.1 too
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--fingerprint",
                f"--userdb={self._dir.name}/turndb",
                f"--pidfile={self._dir.name}/turn.pid",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """The TURN URL clients are given (UDP)."""
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"turnserver exited ({self.proc.returncode}): see {self.log.name}"
                )
            try:  # its TCP listener on the same port comes up with the UDP one
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"turnserver did not listen within {timeout} s")

    def allocations(self) -> int:
        """Relay allocations made so far (from its log)."""
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace")
        return sum(1 for line in text.splitlines() if "ALLOCATE processed, success" in line)

    def stop(self) -> None:
        """Stop it and remove its files."""
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self._dir.cleanup()
