"""What the room keeps for hosts and for clients that reconnect (fake transports, no sockets): a
locked room refuses newcomers but not hosts nor someone already in it; a track announced muted
is published muted; a track a host stops is unpublished and its owner told; a participant whose
client dropped is suspended, then resumed with the same sid (the others see no leave and no
join) or removed when its grace ends."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fake_transport import FakeTransport
from tests.unit.test_room import OFFER, Inbox, settle
from visio_sfu import SFU, RoomLocked
from visio_sfu.events import (
    ParticipantJoined,
    ParticipantLeft,
    RoomUpdated,
    SubscriberOffer,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
)


async def test_a_locked_room_refuses_newcomers_but_not_hosts_nor_those_already_in():
    sfu = SFU(transport_factory=FakeTransport)
    room = sfu.get_or_create_room("locked")
    alice_in = Inbox()
    await room.join("alice", emit=alice_in.append)
    room.set_locked(True)
    assert alice_in.of(RoomUpdated)[-1].room.locked is True
    assert room.describe()["locked"] is True
    with pytest.raises(RoomLocked):
        await room.join("eve")
    assert room.by_identity("eve") is None
    host = await room.join("host", bypass_lock=True)
    again_in = Inbox()
    again = await room.join("alice", emit=again_in.append)  # another window: not a newcomer
    assert set(room.participants) == {host.sid, again.sid}
    room.set_locked(False)
    assert again_in.of(RoomUpdated)[-1].room.locked is False
    await room.join("eve")
    await sfu.close()


async def test_a_track_announced_muted_is_published_muted():
    sfu = SFU(transport_factory=FakeTransport)
    room = sfu.get_or_create_room("muted")
    alice = await room.join("alice")
    bob_in = Inbox()
    await room.join("bob", emit=bob_in.append)
    alice.add_track("mic", "audio", "microphone", muted=True)
    alice.add_track("cam", "video", "camera")
    await alice.publish_offer(OFFER)
    published = {e.track.source: e.track.muted for e in bob_in.of(TrackPublished)}
    assert published == {"microphone": True, "camera": False}
    assert not bob_in.of(TrackMuted)  # never seen unmuted, so never unmuted
    await sfu.close()


async def test_a_track_stopped_by_a_host_is_unpublished_and_its_owner_told():
    sfu = SFU(transport_factory=FakeTransport)
    room = sfu.get_or_create_room("stop")
    alice_in, bob_in = Inbox(), Inbox()
    alice = await room.join("alice", emit=alice_in.append)
    bob = await room.join("bob", emit=bob_in.append)
    await alice.publish_offer(OFFER)
    cam = next(t for t in alice.tracks.values() if t.kind == "video")
    alice.unpublish(cam.sid, by_server=True)
    assert [e.track_sid for e in bob_in.of(TrackUnpublished)] == [cam.sid]
    assert [(e.participant_sid, e.track_sid) for e in alice_in.of(TrackUnpublished)] == [
        (alice.sid, cam.sid)
    ]
    assert cam.sid not in bob.subscriber.downtracks
    mic = next(iter(alice.tracks))
    alice.unpublish(mic)  # by the client itself: it knows
    assert len(alice_in.of(TrackUnpublished)) == 1
    await sfu.close()


async def test_a_suspended_participant_resumes_with_the_same_sid_unseen_by_the_others():
    sfu = SFU(transport_factory=FakeTransport)
    room = sfu.get_or_create_room("resume")
    old_in, bob_in = Inbox(), Inbox()
    alice = await room.join("alice", emit=old_in.append)
    bob = await room.join("bob", emit=bob_in.append)
    await alice.publish_offer(OFFER)
    await bob.publish_offer(OFFER)
    await settle()
    old_tracks = set(alice.tracks)
    old_subscriber = alice.subscriber
    before = len(bob_in)
    old_offers = len(old_in.of(SubscriberOffer))
    room.suspend(alice, grace=5)
    assert room.is_suspended(alice)
    room.set_metadata("agenda")  # events for a suspended participant are dropped
    assert not old_in.of(RoomUpdated)
    new_in = Inbox()
    await room.resume(alice, new_in.append)
    assert not room.is_suspended(alice) and room.participants[alice.sid] is alice
    # the others: no leave, no join; the old tracks are unpublished (the client sends them anew)
    seen = bob_in[before:]
    assert not [e for e in seen if isinstance(e, ParticipantLeft | ParticipantJoined)]
    unpublished = {e.track_sid for e in seen if isinstance(e, TrackUnpublished)}
    assert unpublished == old_tracks and not alice.tracks
    assert not set(bob.subscriber.downtracks) & old_tracks
    # a fresh subscribe connection, offering Bob's tracks, to the new client only
    assert alice.subscriber is not old_subscriber and old_subscriber.closed
    await settle()
    offers = new_in.of(SubscriberOffer)
    assert offers and {t.track_sid for t in offers[-1].tracks} == set(bob.tracks)
    assert len(old_in.of(SubscriberOffer)) == old_offers
    # it publishes again, muted as it was
    alice.add_track("mic", "audio", "microphone", muted=True)
    await alice.publish_offer(OFFER)
    republished = [e.track for e in bob_in.of(TrackPublished) if e.participant_sid == alice.sid]
    assert {t.source: t.muted for t in republished[-2:]} == {"microphone": True, "camera": False}
    await sfu.close()


async def test_a_suspended_participant_not_back_in_time_is_removed():
    sfu = SFU(transport_factory=FakeTransport)
    room = sfu.get_or_create_room("gone")
    alice = await room.join("alice")
    bob_in = Inbox()
    await room.join("bob", emit=bob_in.append)
    room.suspend(alice, grace=0.1)
    await asyncio.sleep(0.3)
    assert alice.sid not in room.participants and alice.closed
    assert [(e.participant_sid, e.reason) for e in bob_in.of(ParticipantLeft)] == [
        (alice.sid, "disconnected")
    ]
    with pytest.raises(KeyError):
        await room.resume(alice, lambda e: None)
    await sfu.close()


async def test_leaving_while_suspended_cancels_the_grace():
    sfu = SFU(transport_factory=FakeTransport)
    room = sfu.get_or_create_room("cancel")
    alice = await room.join("alice")
    await room.join("bob")
    room.suspend(alice, grace=0.1)
    await room.remove(alice, "replaced")
    assert not room.is_suspended(alice)
    await asyncio.sleep(0.2)  # no second removal
    await sfu.close()
