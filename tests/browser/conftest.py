"""Real Chromium (Debian's /usr/bin/chromium, headless) against a real visio-sfu server.

Fake camera (a green test pattern), fake microphone (a beep) and fake screen capture.
Every peer connection stays on 127.0.0.1: the server gathers only loopback candidates and
Chromium is allowed loopback candidates.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = [
    "--headless=new",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no attempts to reach outside hosts
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",  # grants camera, microphone and screen capture
    "--auto-select-desktop-capture-source=Entire screen",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",  # candidates on 127.0.0.1, like the server's
]

pytestmark = pytest.mark.browser


def pytest_collection_modifyitems(items):
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        skip = pytest.mark.skip(reason="Debian's chromium is not installed (scripts/test.sh does)")
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="module")
def server():
    s = ServerProcess()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def open_page(browser, url: str, name: str):
    """A new browser context and page at ``url``, logging the page's errors."""
    context = browser.new_context(permissions=["camera", "microphone"], locale="en-US")
    page = context.new_page()
    page.on("pageerror", lambda exc: print(f"[{name}] page error: {exc}"))
    page.goto(url)
    return page


def artefact(page, name: str) -> None:
    """Save a screenshot of what this page shows, as a test artefact."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
