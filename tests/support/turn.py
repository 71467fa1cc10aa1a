"""coturn (Debian's turnserver) for tests: started on 127.0.0.1 with a shared secret (the
TURN REST API scheme visio-sfu's credentials use), relaying on 127.0.0.1, stopped after.

With ``tls=True`` it is reached over TLS only (``turns:``, what a network that lets out
nothing but TCP 443 leaves): a certificate made here for 127.0.0.1 (self-signed, a day long),
no plain UDP or TCP listener and no DTLS (coturn's ``no-udp``, ``no-tcp``, ``no-dtls``; with
``no-tcp`` its TLS port also refuses plain TCP, which it otherwise tells apart and serves)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import re
import shutil
import socket
import ssl
import struct
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


def free_tcp_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for the IP address ``host`` (its own CA: it can be trusted
    as it is) and its key, PEM files in ``directory``: (certificate, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "turn-cert.pem", directory / "turn-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TurnServer:
    """A coturn process listening on 127.0.0.1:``port``: UDP and TCP, or with ``tls`` TLS
    only (its certificate: ``cert``)."""

    def __init__(
        self,
        secret: str = "a-test-secret-for-coturn-of-32-chars",
        realm: str = "visio.test",
        tls: bool = False,
    ) -> None:
        binary = shutil.which("turnserver")
        if binary is None:
            raise RuntimeError("coturn is not installed (scripts/test.sh installs it)")
        self.secret = secret
        self.tls = tls
        self.port = free_tcp_port() if tls else free_udp_port()
        self._dir = tempfile.TemporaryDirectory(prefix="visio-turn-")
        self.cert: Path | None = None
        if tls:
            self.cert, key = write_certificate(Path(self._dir.name))
            listeners = [
                f"--tls-listening-port={self.port}",
                "--no-udp",  # no plain listeners: TLS or nothing
                "--no-tcp",
                "--no-dtls",
                f"--cert={self.cert}",
                f"--pkey={key}",
            ]
        else:
            listeners = [f"--listening-port={self.port}", "--no-tls", "--no-dtls"]
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
                *listeners,
                f"--min-port={relay}",
                f"--max-port={relay + 40}",
                "--use-auth-secret",
                f"--static-auth-secret={secret}",
                f"--realm={realm}",
                "--allow-loopback-peers",  # the SFU is on 127.0.0.1 too
                "--no-cli",
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
        """The TURN URL clients are given (UDP, or TLS over TCP)."""
        if self.tls:
            return f"turns:127.0.0.1:{self.port}?transport=tcp"
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    @property
    def spki_sha256(self) -> str:
        """The base64 SHA-256 of its certificate's public key (SubjectPublicKeyInfo), as
        Chromium's ``--ignore-certificate-errors-spki-list`` takes it: trust this key only."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        if self.cert is None:
            raise RuntimeError("no certificate: this TurnServer was started without tls")
        key = x509.load_pem_x509_certificate(self.cert.read_bytes()).public_key()
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(hashlib.sha256(der).digest()).decode()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"turnserver exited ({self.proc.returncode}): see {self.log.name}"
                )
            try:  # its TCP (or TLS) listener on the same port comes up with the UDP one
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"turnserver did not listen within {timeout} s")

    def answers_stun(self, tls: bool) -> bool:
        """Whether it answers a STUN binding request sent over TCP to its port, plain or in
        TLS (the certificate not checked: only whether the door is open)."""
        request = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, os.urandom(12))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=3) as raw:
                sock: socket.socket = raw
                if tls:
                    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    sock = context.wrap_socket(raw)
                sock.sendall(request)
                answer = sock.recv(20)
        except OSError:  # refused, reset, timed out, TLS failed
            return False
        # a binding success response (0x0101) for our transaction
        return len(answer) == 20 and answer[:2] == b"\x01\x01" and answer[8:20] == request[8:20]

    def allocations(self) -> int:
        """Relay allocations made so far (from its log)."""
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace")
        return sum(1 for line in text.splitlines() if "ALLOCATE processed, success" in line)

    def session_protocols(self) -> list[str | None]:
        """How each client session with credentials so far reached it, from its log: the TLS
        version (coturn logs ``method=TLSv1.3`` for a session in TLS), None for plain UDP or TCP."""
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace")
        protocols: list[str | None] = []
        for line in text.splitlines():
            if re.search(r"session \d+: new, .*username=<[^>]+>", line):
                method = re.search(r"method=(\S+)", line)
                protocols.append(method.group(1) if method else None)
        return protocols

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
