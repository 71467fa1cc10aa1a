"""The ``ice_restart`` request (docs/protocol.md): the subscriber connection's next offer
carries new ICE credentials; bad requests and a flood of them are refused. (That media goes on
after a restart is shown with Chromium: tests/browser/test_ice_restart_browser.py; aiortc,
which the Python client uses, cannot restart ICE itself.)"""

from __future__ import annotations

import pytest

from tests.support.inprocess import LocalServer
from tests.support.media import until
from visio_client import Client, ServerError
from visio_client.media import ToneAudioTrack
from visio_sfu.icerestart import ice_credentials

pytestmark = pytest.mark.timeout(60)


async def test_ice_restart_offers_new_credentials_and_floods_are_refused():
    async with LocalServer() as server:
        alice = Client(server.url, server.token("restart", "alice"))
        await alice.connect()
        await alice.publish(ToneAudioTrack(1))
        offers: list[str] = []
        bob = Client(server.url, server.token("restart", "bob"))
        bob.on_message = lambda m: offers.append(m["sdp"]) if m.get("type") == "offer" else None
        await bob.connect()
        await until(lambda: len(offers) >= 1, what="the first subscriber offer")
        first = ice_credentials(offers[-1])
        assert first is not None
        seen = len(offers)
        reply = await bob.request({"type": "ice_restart", "target": "subscriber"})
        assert reply["type"] == "ice_restarting" and reply["target"] == "subscriber"
        await until(lambda: len(offers) > seen, what="an offer after ice_restart")
        second = ice_credentials(offers[-1])
        assert second is not None and second[0] != first[0] and second[1] != first[1]
        for bad in ({"target": "publisher"}, {"target": 3}, {}):
            with pytest.raises(ServerError) as err:
                await bob.request({"type": "ice_restart", **bad})
            assert err.value.code == "bad_request", bad
        for _ in range(9):  # ten in a minute (the one above included)
            await bob.request({"type": "ice_restart", "target": "subscriber"})
        with pytest.raises(ServerError) as err:
            await bob.request({"type": "ice_restart", "target": "subscriber"})
        assert err.value.code == "rate_limited"
        for c in (alice, bob):
            await c.close()
