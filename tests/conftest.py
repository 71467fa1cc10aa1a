"""Shared test set-up: every peer connection of the tests gathers on 127.0.0.1 only; in CI
(``VISIO_REQUIRE_ALL=1``, set by .ci/run) a skipped test is a failure, so that the tests with
real third-party clients (Chromium, Firefox, GStreamer, Janus) can never be skipped silently."""

import os

import pytest

from visio_sfu.transport import set_ice_addresses


@pytest.fixture(autouse=True, scope="session")
def loopback_only():
    """Test traffic never leaves 127.0.0.1: aiortc peers gather loopback candidates only."""
    set_ice_addresses(["127.0.0.1"])
    yield
    set_ice_addresses(None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI, turn a skip into a failure that says what was missing."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("VISIO_REQUIRE_ALL") == "1":
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but CI runs every test (VISIO_REQUIRE_ALL=1): {reason}"
