"""Smoke tests of the benchmark tools (run by scripts/test.sh after the product's tests): every
peer connection gathers on 127.0.0.1 only, as in tests/."""

import pytest

from visio_sfu.transport import set_ice_addresses


@pytest.fixture(autouse=True, scope="session")
def loopback_only():
    """Test traffic never leaves 127.0.0.1: aiortc peers gather loopback candidates only."""
    set_ice_addresses(["127.0.0.1"])
    yield
    set_ice_addresses(None)
