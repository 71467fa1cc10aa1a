"""A real OpenID Connect provider for the sign-in tests: oidc-provider-mock (PyPI), run as its
own process on 127.0.0.1. Its login page takes a subject (and claims known beforehand)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.inprocess import KEY, SECRET, free_port
from tests.support.server import ServerProcess

#: users the provider knows beforehand (its login form also takes any other subject)
USERS = {
    "alice": {"name": "Alice Martin", "email": "alice@example.org"},
    "bob": {"name": "Bob Durand", "email": "bob@example.org"},
    "carol": {"name": "Carol Petit", "email": "carol@example.org"},
}


def serve_signed_in(provider: OidcProvider, base: Path, *options: str) -> ServerProcess:
    """``visio-sfu serve`` without development mode, signing in with ``provider``: an API key
    for the tokens it mints, an [oidc] table, its data in ``base``."""
    config = base / "visio.toml"
    config.write_text(
        f'[keys]\n{KEY} = "{SECRET}"\n[oidc]\nissuer = "{provider.issuer}"\n'
        'client_id = "visio"\nclient_secret = "test-client-secret"\n'
    )
    return ServerProcess(
        dev=False, extra=["--config", str(config), "--data-dir", str(base), *options]
    )


class OidcProvider:
    """``python -m oidc_provider_mock`` on a free port; ``issuer`` is its URL."""

    def __init__(self, users: dict[str, dict] | None = None, token_max_age: int = 3600) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "oidc_provider_mock", "-H", "127.0.0.1", "-p", str(self.port)]
        args += ["--require-nonce", "true", "--token-max-age", str(token_max_age)]
        for sub, claims in (users or {}).items():
            args += ["--user-claims", json.dumps({"sub": sub, **claims})]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(
                    f"{self.issuer}/.well-known/openid-configuration", timeout=2
                ) as r:
                    self.discovery = json.load(r)
                    return
            except OSError as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"oidc-provider-mock did not start: {self.stderr()}"
                    ) from exc
                time.sleep(0.1)

    def stderr(self) -> str:
        """What the provider printed (after it stopped)."""
        if self.proc.poll() is None:
            return ""
        return (self.proc.stderr.read() if self.proc.stderr else "")[-3000:]

    def stop(self) -> None:
        """Stop the provider process."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
