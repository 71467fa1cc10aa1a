"""The fixtures of a browser test module run in a network namespace (tests/support/netns.py):
Firefox gathers no loopback ICE candidates (even with media.peerconnection.ice.loopback), so
it needs an address other than 127.0.0.1, and the test's traffic must stay on this machine.
The server and Debian's Chromium run inside the namespace too (a Firefox page is started in it
with ``netns.prefix(server.netns)``).

A module takes them with ``namespace, server, browser = netns_fixtures("visio-ff")`` (they
replace tests/browser/conftest.py's ``server`` and ``browser`` there).
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import ARGS, CHROMIUM
from tests.support import netns
from tests.support.server import ServerProcess


def netns_fixtures(prefix: str):
    """Module-scoped ``namespace``, ``server`` and ``browser`` fixtures; ``prefix`` names the
    namespace (made unique per test run: netns.unique_name)."""

    @pytest.fixture(scope="module")
    def namespace():
        """A network namespace for the module's tests (skipped where none can be made)."""
        reason = netns.unavailable()
        if reason is not None:
            pytest.skip(f"Firefox runs in a network namespace, but {reason}")
        with netns.namespace(netns.unique_name(prefix)) as name:
            yield name

    @pytest.fixture(scope="module")
    def server(namespace):
        """The server inside the namespace, gathering on its address."""
        s = ServerProcess(extra=["--ice-address", netns.ADDRESS], netns=namespace)
        yield s
        s.stop()

    @pytest.fixture(scope="module")
    def browser(namespace):
        """Debian's Chromium inside the namespace (Playwright launches it through a wrapper)."""
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            b = p.chromium.launch(
                executable_path=str(netns.wrapper(namespace, CHROMIUM)), headless=True, args=ARGS
            )
            yield b
            b.close()

    return namespace, server, browser
