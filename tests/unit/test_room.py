"""Room membership on fake transports (no sockets): joining, publishing, leaving, and moving a
live participant to another room with attach/detach (breakout rooms)."""

from __future__ import annotations

import asyncio

from tests.support.fake_transport import FakeTransport
from visio_sfu import SFU
from visio_sfu.events import (
    Moved,
    ParticipantEntered,
    ParticipantExited,
    ParticipantJoined,
    ParticipantLeft,
    TrackPublished,
)

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\na=msid:s cam\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=sendonly\r\na=msid:s mic\r\n"
)


class Inbox(list):
    """A participant's events."""

    def of(self, kind: type) -> list:
        return [e for e in self if isinstance(e, kind)]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def sfu_with_listener() -> tuple[SFU, list]:
    sfu = SFU(transport_factory=FakeTransport)
    lifecycle: list = []
    sfu.listeners.append(lifecycle.append)
    return sfu, lifecycle


async def test_join_publish_leave():
    sfu, lifecycle = sfu_with_listener()
    room = sfu.get_or_create_room("main")
    alice_in, bob_in = Inbox(), Inbox()
    alice = await room.join("alice", "Alice", emit=alice_in.append)
    bob = await room.join("bob", "Bob", emit=bob_in.append)
    assert alice_in.of(ParticipantJoined)[0].participant.name == "Bob"
    await alice.publish_offer(OFFER)
    assert [e.track.kind for e in bob_in.of(TrackPublished)] == ["video", "audio"]
    assert sorted(bob.subscriber.downtracks) == sorted(alice.tracks)
    await room.remove(alice, "left")
    assert bob_in.of(ParticipantLeft)[0].reason == "left"
    assert bob.subscriber.downtracks == {}
    assert [type(e).__name__ for e in lifecycle].count("TrackRemoved") == 2
    await sfu.close()


async def test_a_participant_moves_to_another_room_with_its_connections():
    sfu, lifecycle = sfu_with_listener()
    main, breakout = sfu.get_or_create_room("main"), sfu.get_or_create_room("breakout")
    inbox = {n: Inbox() for n in ("alice", "bob", "carol")}
    alice = await main.join("alice", emit=inbox["alice"].append)
    bob = await main.join("bob", emit=inbox["bob"].append)
    carol = await breakout.join("carol", emit=inbox["carol"].append)
    await alice.publish_offer(OFFER)
    await carol.publish_offer(OFFER)
    await settle()
    transports = (alice.publishing.transport, alice.subscriber.transport)
    alice_tracks = set(alice.tracks)

    moved = main.detach(alice)
    assert moved is alice and alice.sid not in main.participants and not alice.closed
    assert bob.subscriber.downtracks == {}, "bob no longer receives alice"
    assert inbox["bob"].of(ParticipantLeft)[-1].reason == "moved"
    breakout.attach(alice)
    await settle()

    assert (alice.publishing.transport, alice.subscriber.transport) == transports
    assert not any(t.closed for t in transports), "the same connections, still open"
    assert set(alice.tracks) == alice_tracks
    assert sorted(carol.subscriber.downtracks) == sorted(alice_tracks)
    assert sorted(alice.subscriber.downtracks) == sorted(carol.tracks)
    where = inbox["alice"].of(Moved)[-1]
    assert where.room.name == "breakout" and [p.identity for p in where.participants] == ["carol"]
    assert inbox["carol"].of(ParticipantJoined)[-1].participant.identity == "alice"
    assert alice.room_name == "breakout"
    names = [
        (type(e).__name__, e.room.name)
        for e in lifecycle
        if isinstance(e, ParticipantEntered | ParticipantExited)
    ]
    assert ("ParticipantExited", "main") in names
    assert names[-1] == ("ParticipantEntered", "breakout")
    # and back again
    main.attach(breakout.detach(alice))
    await settle()
    assert sorted(bob.subscriber.downtracks) == sorted(alice_tracks)
    assert carol.subscriber.downtracks == {}
    await sfu.close()
    assert all(t.closed for t in transports)


async def test_attach_refuses_a_participant_still_in_a_room():
    sfu, _ = sfu_with_listener()
    main, other = sfu.get_or_create_room("main"), sfu.get_or_create_room("other")
    alice = await main.join("alice")
    try:
        other.attach(alice)
    except ValueError as exc:
        assert "detach" in str(exc)
    else:
        raise AssertionError("attached to two rooms")
    await sfu.close()


async def test_track_watchers_see_tracks_already_there_and_to_come():
    sfu, _ = sfu_with_listener()
    room = sfu.get_or_create_room("main")
    alice = await room.join("alice")
    await alice.publish_offer(OFFER)
    seen: list[tuple[str, str]] = []
    room.watch_tracks(lambda p, track: seen.append((p.identity, track.kind)))
    assert seen == [("alice", "video"), ("alice", "audio")]
    bob = await room.join("bob")
    await bob.publish_offer(OFFER)
    assert seen[2:] == [("bob", "video"), ("bob", "audio")]
    await sfu.close()


async def test_a_restart_then_a_move_receives_only_the_new_rooms_tracks():
    sfu, _ = sfu_with_listener()
    main, breakout = sfu.get_or_create_room("main"), sfu.get_or_create_room("breakout")
    alice = await main.join("alice")
    bob = await main.join("bob")
    carol = await breakout.join("carol")
    await bob.publish_offer(OFFER)
    await carol.publish_offer(OFFER)
    old = alice.subscriber
    await main.restart_subscriber(alice)  # nothing awaited inside: no move can interleave
    assert alice.subscriber is not old and old.closed
    assert sorted(alice.subscriber.downtracks) == sorted(bob.tracks)
    breakout.attach(main.detach(alice))
    await settle()
    assert sorted(alice.subscriber.downtracks) == sorted(carol.tracks)
    await sfu.close()


async def test_unpublishing_is_a_lifecycle_event_and_room_sinks_stay_in_their_room():
    from visio_sfu.events import TrackRemoved

    sfu, lifecycle = sfu_with_listener()
    main, breakout = sfu.get_or_create_room("main"), sfu.get_or_create_room("breakout")
    alice = await main.join("alice")
    await alice.publish_offer(OFFER)
    video = next(t for t in alice.tracks.values() if t.kind == "video")
    alice.unpublish(video.sid)
    removed = [e for e in lifecycle if isinstance(e, TrackRemoved)]
    assert [e.track.sid for e in removed] == [video.sid]

    class RoomSink:
        closed = False

        def write(self, *args) -> None: ...

        def close(self) -> None:
            self.closed = True

    audio = next(iter(alice.tracks.values()))
    sink = RoomSink()
    audio.attach(sink)  # a recorder of "main"
    breakout.attach(main.detach(alice))
    assert sink.closed and sink not in audio.sinks
    await breakout.remove(alice)
    try:
        main.attach(alice)  # closed: refused
    except ValueError:
        pass
    else:
        raise AssertionError("a closed participant was attached")
    await sfu.close()


async def test_a_room_kept_open_stays_while_empty_and_closes_once_released():
    sfu = SFU(transport_factory=FakeTransport, empty_timeout=0.05)
    main, sub = sfu.get_or_create_room("main"), sfu.get_or_create_room("sub")
    sub.keep_open(True)  # a breakout room nobody is in yet
    alice = await main.join("alice")
    main.keep_open(True)  # everyone goes to the breakout room: the meeting stays
    sub.attach(main.detach(alice))
    await asyncio.sleep(0.2)
    assert not main.closed and not sub.closed
    main.attach(sub.detach(alice))
    sub.keep_open(False)
    main.keep_open(False)  # not empty: nothing to close
    await asyncio.sleep(0.2)
    assert sub.closed and not main.closed
    await main.remove(alice)
    await asyncio.sleep(0.2)
    assert main.closed
    await sfu.close()
