"""Who receives whom (LiveKit's autoSubscribe and subscription permissions) on fake
transports: a participant that does not subscribe by itself receives only what it asks for; a
publisher's ``receivers`` keep its tracks from the others, also when they ask."""

from __future__ import annotations

import pytest

from tests.support.fake_transport import FakeTransport
from tests.unit.test_room import OFFER
from visio_sfu import SFU, PermissionDenied


async def test_auto_subscribe_off_and_receivers():
    sfu = SFU(transport_factory=FakeTransport)
    room = sfu.get_or_create_room("main")
    alice = await room.join("alice")
    manual = await room.join("manual", auto_subscribe=False)
    carol = await room.join("carol")
    await alice.publish_offer(OFFER)
    video = next(t.sid for t in alice.tracks.values() if t.kind == "video")
    assert set(carol.subscriber.downtracks) == set(alice.tracks)
    assert manual.subscriber.downtracks == {}  # nothing unless asked
    room.set_subscribed(manual, video, True)
    assert set(manual.subscriber.downtracks) == {video}

    # alice lets only 'manual' receive her video
    alice.receivers = lambda identity, sid: identity == "manual" and sid == video
    room.apply_receivers(alice)
    assert carol.subscriber.downtracks == {}
    assert set(manual.subscriber.downtracks) == {video}
    with pytest.raises(PermissionDenied):
        room.set_subscribed(carol, video, True)
    late = await room.join("late")  # a newcomer gets nothing of hers either
    assert late.subscriber.downtracks == {}

    alice.receivers = None  # everyone again: those who subscribe by themselves get them back
    room.apply_receivers(alice)
    assert set(carol.subscriber.downtracks) == set(alice.tracks)
    assert set(late.subscriber.downtracks) == set(alice.tracks)
    assert set(manual.subscriber.downtracks) == {video}
    await sfu.close()
