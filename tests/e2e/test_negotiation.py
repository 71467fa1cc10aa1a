"""Subscriber offers stay consistent when tracks arrive while an offer is being made.

A track added during ``create_offer`` has no m-section yet: the offer must not list it (with a
null mid), or a client that drops entries missing from the next offer would detach it. Seen in
Chromium as a participant whose audio went silent after the others joined quickly.
"""

from __future__ import annotations

import re

import pytest

from tests.support.inprocess import LocalServer
from tests.support.media import until
from visio_client import Client
from visio_client.media import PatternVideoTrack, ToneAudioTrack

pytestmark = pytest.mark.timeout(120)


async def test_tracks_added_during_an_offer_wait_for_the_next_one():
    async with LocalServer() as server:
        alice = Client(server.url, server.token("race", "alice"))
        offers: list[dict] = []

        def record(m: dict) -> None:
            if m.get("type") == "offer" and m.get("target") == "subscriber":
                offers.append(m)

        alice.on_message = record
        await alice.connect()
        room = server.sfu.room("race")
        subscriber = room.participants[alice.joined["participant"]["sid"]].subscriber
        original = subscriber.transport.create_offer
        others: list[Client] = []
        calls = 0

        async def offer_then_publish() -> str:
            # the first offer is made; before it goes out, the second publisher's tracks arrive
            nonlocal calls
            sdp = await original()
            calls += 1
            if calls == 1:
                await others[1].publish(PatternVideoTrack(2), ToneAudioTrack(2))
                await until(lambda: len(subscriber.downtracks) == 4, what="4 downtracks")
            return sdp

        subscriber.transport.create_offer = offer_then_publish
        try:
            for i in (1, 2):
                c = Client(server.url, server.token("race", f"user{i}"))
                await c.connect()
                others.append(c)
            await others[0].publish(PatternVideoTrack(1), ToneAudioTrack(1))
            await until(lambda: len(alice.remote_tracks) >= 4, what="alice receives 4 tracks")
            await until(
                lambda: offers and len(offers[-1]["tracks"]) == 4, what="an offer with 4 tracks"
            )
            assert len(offers) >= 2
            for offer in offers:
                mids = set(re.findall(r"^a=mid:(\S+)", offer["sdp"], re.M))
                for track in offer["tracks"]:
                    assert track["mid"] in mids, (track, mids)
        finally:
            for c in [*others, alice]:
                await c.close()
