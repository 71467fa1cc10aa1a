"""The name others see is the signed token's: a join message cannot claim another (issue 13:
eve appeared as "Alice (host)"), unless the grant lets the client choose (canUpdateOwnMetadata)."""

from __future__ import annotations

import pytest

from tests.support.inprocess import LocalServer
from visio_client import Client

pytestmark = pytest.mark.timeout(60)


async def test_join_cannot_override_the_tokens_name_without_the_grant():
    async with LocalServer() as server:
        alice = Client(server.url, server.token("names", "alice", "Alice"))
        await alice.connect()
        eve = Client(server.url, server.token("names", "eve", "Eve"))
        joined = await eve.connect(name="Alice (host)")
        assert joined["participant"]["name"] == "Eve"
        seen = await alice.wait_for("participant_joined")
        assert seen["participant"]["name"] == "Eve"
        nameless = Client(server.url, server.token("names", "mallory"))
        joined = await nameless.connect(name="Alice (host)")
        assert joined["participant"]["name"] == "mallory"  # no name in the token: the identity
        free = Client(
            server.url, server.token("names", "guest", "Guest", can_update_own_metadata=True)
        )
        joined = await free.connect(name="Dana")
        assert joined["participant"]["name"] == "Dana"
        for c in (alice, eve, nameless, free):
            await c.close()
