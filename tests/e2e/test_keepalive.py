"""The Python client pings as docs/protocol.md asks, so it stays in a meeting for as long as it
likes (the server removes a socket silent for ping_timeout seconds). Shown with the times scaled
down: a 2 s timeout and a client pinging every 0.5 s, for several timeouts."""

from __future__ import annotations

import asyncio

import pytest

from signaling.config import load_config
from tests.support.inprocess import LocalServer
from tests.support.media import until
from visio_client import Client
from visio_client.protocol import SignalingConnection

pytestmark = pytest.mark.timeout(60)


async def test_a_pinging_client_stays_and_a_silent_one_is_removed():
    async with LocalServer(ping_timeout=2) as server:
        talker = Client(server.url, server.token("keep", "talker"))
        talker.signal.ping_interval = 0.5
        silent = Client(server.url, server.token("keep", "silent"))
        silent.signal.ping_interval = 0  # as the client was before: never pings
        await talker.connect()
        await silent.connect()
        room = server.sfu.room("keep")
        await until(lambda: len(room.participants) == 1, timeout=10, what="the silent one removed")
        assert [p.identity for p in room.participants.values()] == ["talker"]
        await asyncio.sleep(6)  # three timeouts more
        assert [p.identity for p in room.participants.values()] == ["talker"]
        assert talker.signal.pings >= 10
        for c in (talker, silent):
            await c.close()


def test_the_default_ping_comes_well_within_the_default_timeout():
    assert (
        SignalingConnection("http://x", "t").ping_interval * 2 <= load_config(env={}).ping_timeout
    )
