"""Issue 13: the join limiter counts admitted connections only, so that after a burst retries
at the allowed rate get in (people behind one NAT share an address)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from signaling.limits import PerKeyLimiter
from tests.support.inprocess import LocalServer

pytestmark = pytest.mark.timeout(60)


def test_limiter_lets_steady_retries_in_after_a_burst():
    """Issue 13: refused attempts used up the allowance, so after a burst 0 of 40 retries at the
    allowed 5/s got in."""
    limiter = PerKeyLimiter(5, 20)
    now = 1000.0
    burst = [limiter.allow("10.0.0.1", now) for _ in range(100)]
    assert sum(burst) == 20
    admitted = 0
    for i in range(1, 41):
        admitted += limiter.allow("10.0.0.1", now + i * 0.2)
    assert admitted >= 39, f"{admitted} of 40 retries at the allowed rate got in"
    faster = [limiter.allow("10.0.0.2", now + i * 0.01) for i in range(200)]  # 100/s
    assert sum(faster) <= 20 + 2 * 5 + 1, "still a limit"


async def test_server_lets_steady_retries_in_after_a_burst():
    """Issue 13: after a burst, 0 of 40 retries at the allowed 5/s got in."""
    async with LocalServer(joins_per_second=10) as s:
        url = f"{s.url}/rtc"
        params = {"access_token": s.token("r", "natted")}
        async with aiohttp.ClientSession() as http:

            async def attempt() -> int:
                async with http.get(url, params=params) as r:
                    return r.status  # 400 (no WebSocket upgrade): admitted; 429: refused

            burst = [await attempt() for _ in range(80)]
            assert burst.count(429) >= 30, "the burst is limited"
            retries = []
            for _ in range(20):  # at the allowed rate
                await asyncio.sleep(0.1)
                retries.append(await attempt())
        admitted = sum(status != 429 for status in retries)
        assert admitted >= 18, f"{admitted} of 20 retries at the allowed rate got in: {retries}"
