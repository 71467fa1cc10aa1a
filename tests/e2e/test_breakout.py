"""Issue 16, breakout rooms, through the protocol: four aiortc participants (visio_client) are
moved into two breakout rooms and back by a host, over the connections they have (the same
RTCPeerConnection and DTLS transport objects); each then decodes the colour and tone of the
people in its room only, within 2 s of the move. Also: the timer brings everyone back, a host's
broadcast reaches every room, chat and hands stay in their room, non-hosts cannot move others,
bad requests are refused, a breakout room cannot be joined directly, rooms close when everyone
has left, and someone moved who drops (resume) or leaves and joins again lands in their
breakout room."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from signaling.auth import VideoGrant, mint_token
from tests.e2e.test_meeting_controls import refused, sid, signal
from tests.support.inprocess import LocalServer
from tests.support.media import until
from tests.support.server import ServerProcess
from visio_client import Client
from visio_client.media import (
    PatternVideoTrack,
    ToneAudioTrack,
    audio_samples,
    colour_index,
    tone_index,
)
from visio_client.protocol import SignalingConnection

pytestmark = pytest.mark.timeout(120)

SWITCH = 2.0  # seconds within which media must switch after a move, on a machine not overloaded


def switch_limit() -> float:
    """SWITCH, stretched when the machine runs more than 1.5 busy processes per core (other
    test runs share it): aiortc decodes in the test's own process, so its frames come late."""
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return SWITCH * max(1.0, load / 1.5)


def process_token(s: ServerProcess, room: str, identity: str, name: str, host: bool) -> str:
    key, secret = s.dev_credentials()
    grant = VideoGrant(room=room, room_join=True, room_host=host)
    return mint_token(key, secret, identity, room, name=name, grant=grant)


async def media_client(
    s: LocalServer | ServerProcess, room: str, index: int, host: bool = False
) -> Client:
    """Participant ``index``: colour and tone ``index``."""
    name = f"User {index}"
    if isinstance(s, ServerProcess):
        token = process_token(s, room, f"user{index}", name, host)
    else:
        token = s.token(room, f"user{index}", name, room_host=host)
    client = Client(s.url, token)
    await client.connect()
    await client.publish(
        PatternVideoTrack(index, 160, 120, fps=10),
        ToneAudioTrack(index),
        sources=["camera", "microphone"],
    )
    return client


def senders(client: Client) -> set[str]:
    """Whose tracks this client receives now."""
    return {r.participant_sid for r in client.remote_tracks}


def connections(client: Client) -> tuple:
    """The client's peer connections and their DTLS transports (the objects)."""
    pcs = (client.publisher, client.subscriber)
    dtls = tuple(t.receiver.transport for t in client.subscriber.getTransceivers()[:1])
    dtls += tuple(t.sender.transport for t in client.publisher.getTransceivers()[:1])
    return (*pcs, *dtls)


async def switched(
    client: Client, sender_sid: str, index: int, since: float, expect: set[str] | None = None
) -> float:
    """Seconds from ``since`` until ``client``, receiving the tracks of ``expect`` (default:
    ``sender_sid``'s only), decodes ``index``'s colour (a frame; stale frames of the track's
    former sender may come first) and tone (0.2 s) from ``sender_sid``'s tracks."""
    expect = expect or {sender_sid}
    await until(lambda: senders(client) == expect, timeout=SWITCH + 8, what="the tracks")
    video = next(
        r for r in client.remote_tracks if r.participant_sid == sender_sid and r.kind == "video"
    )
    audio = next(
        r for r in client.remote_tracks if r.participant_sid == sender_sid and r.kind == "audio"
    )

    seen: dict[str, list] = {"video": [], "audio": []}

    async def colour() -> float:
        while True:
            frame = await asyncio.wait_for(video.track.recv(), 15)
            seen["video"] = [*seen["video"][-20:], colour_index(frame)]
            if colour_index(frame) == index:
                return time.monotonic() - since

    async def tone() -> float:
        window: list[np.ndarray] = []
        while True:
            frame = await asyncio.wait_for(audio.track.recv(), 15)
            window = [*window[-9:], audio_samples(frame)]
            found = tone_index(np.concatenate(window)) if len(window) == 10 else None
            seen["audio"] = [*seen["audio"][-20:], found]
            if found == index:
                return time.monotonic() - since

    try:
        v, a = await asyncio.gather(colour(), tone())
    except TimeoutError:
        stats = await client.subscriber.getStats()
        inbound = [
            (v.kind, v.ssrc, v.packetsReceived) for v in stats.values() if v.type == "inbound-rtp"
        ]
        raise AssertionError(f"no media from {index} (decoded: {seen}; {inbound})") from None
    return max(v, a)


@pytest.fixture
def server():
    """The server in its own process: the test's process decodes five participants' media."""
    s = ServerProcess()
    yield s
    s.stop()


async def test_moved_into_two_breakout_rooms_and_back_over_the_same_connections(server):
    s = server
    # the host only drives (no media: four aiortc participants decoding each other are what
    # this process can carry on a shared machine); users 1 to 4 publish colour and tone
    host = SignalingConnection(s.url, process_token(s, "bo", "host", "Host", True))
    await host.connect()
    host.joined = await host.request({"type": "join"})  # type: ignore[attr-defined]
    people = [await media_client(s, "bo", i) for i in (1, 2, 3, 4)]
    sids = [sid(host), *(c.joined["participant"]["sid"] for c in people)]
    everyone = [None, *people]  # by index: user i is everyone[i]
    for c, me in zip(people, sids[1:], strict=True):
        await until(lambda c=c, me=me: senders(c) == set(sids[1:]) - {me}, what="all tracks")
    before = {c: connections(c) for c in people}
    # room 1: users 1 and 2; room 2: users 3 and 4; the host stays in the main room
    t0 = time.monotonic()
    started = await host.request(
        {
            "type": "breakout_start",
            "rooms": [
                {"name": "Alpha", "participants": sids[1:3]},
                {"name": "Beta", "participants": sids[3:5]},
            ],
        }
    )
    assert started["type"] == "breakout_started" and started["active"] is True
    assert [r["name"] for r in started["rooms"]] == ["Alpha", "Beta"]
    assert started["room"] == "" and started["ends_at"] is None
    pairs = [(1, 2), (2, 1), (3, 4), (4, 3)]
    times = await asyncio.gather(*(switched(everyone[a], sids[b], b, t0) for a, b in pairs))
    assert max(times) < switch_limit(), f"media switched after {times} s"
    for a, b in pairs:  # each hears and sees only its room
        await until(lambda a=a, b=b: senders(everyone[a]) == {sids[b]}, what="only its room")
    moved = await people[1].wait_for("moved")  # the second one moved finds the first
    assert moved["room"]["name"].startswith("bo~breakout~")
    assert [p["sid"] for p in moved["participants"]] == [sids[1]]
    assert [t["kind"] for t in moved["participants"][0]["tracks"]] == ["video", "audio"]
    assert people[1].participants.keys() == {sids[1]}  # visio_client follows the move
    state = await people[0].wait_for(lambda m: m.get("type") == "breakout" and m["room"] == "1")
    assert state["assigned"] == "1" and state["active"] is True
    assert [p["sid"] for p in state["rooms"][1]["participants"]] == sids[3:5]
    # nobody reconnected: the same peer connections and DTLS transports
    for c in people:
        assert all(x is y for x, y in zip(connections(c), before[c], strict=True))
    assert all(c.subscriber.iceConnectionState == "completed" for c in people)
    # the host visits room 2 and comes back
    await host.request({"type": "breakout_move", "room": "2"})
    visit = await host.wait_for("moved")
    assert {p["sid"] for p in visit["participants"]} == set(sids[3:5])
    await until(lambda: sids[0] in people[2].participants, what="the host visits")
    await host.request({"type": "breakout_move", "room": ""})
    await until(lambda: sids[0] not in people[2].participants, what="the host is gone")
    # everyone back: each sees and hears the others again
    t1 = time.monotonic()
    await host.request({"type": "breakout_end"})
    back = await asyncio.gather(
        *(
            switched(everyone[a], sids[b], b, t1, set(sids[1:]) - {sids[a]})
            for a, b in [(1, 3), (2, 4), (3, 1), (4, 2)]
        )
    )
    assert max(back) < switch_limit(), f"media switched back after {back} s"
    for c, me in zip(people, sids[1:], strict=True):
        await until(lambda c=c, me=me: senders(c) == set(sids[1:]) - {me}, what="all again")
        assert all(x is y for x, y in zip(connections(c), before[c], strict=True))
    ended = await people[3].wait_for(lambda m: m.get("type") == "breakout" and not m["active"])
    assert ended["reason"] == "ended" and ended["room"] == ""
    await host.close()
    for c in people:
        await c.close()


async def test_the_timer_brings_everyone_back_and_rooms_keep_their_chat_and_hands():
    async with LocalServer() as s:
        host = await signal(s, "t", "host", room_host=True)
        people = [await signal(s, "t", n) for n in ("ann", "ben", "cat", "dan")]
        state = await host.request(
            {"type": "breakout_start", "count": 2, "assign": "random", "duration": 3}
        )
        sizes = sorted(len(r["participants"]) for r in state["rooms"])
        assert sizes == [2, 2], "evenly at random"
        assert 2.5 <= state["remaining"] <= 3 and state["ends_at"] > time.time() * 1000
        assert state["rooms"][0]["name"] == "Room 1"
        where = {p["sid"]: r["id"] for r in state["rooms"] for p in r["participants"]}
        ann, ben, cat, dan = people
        mates = [c for c in people if c is not ann and where[sid(c)] == where[sid(ann)]]
        others = [c for c in people if c is not ann and c not in mates]
        # everyone is told where they are and the time left
        for c in people:
            told = await c.wait_for(lambda m: m.get("type") == "breakout" and m["active"])
            assert told["room"] == where[sid(c)] and told["assigned"] == told["room"]
            assert 0 < told["remaining"] <= 3
        # chat and hands stay in a room
        await ann.request({"type": "data", "topic": "chat", "payload": {"text": "hi room"}})
        await mates[0].wait_for(lambda m: m.get("type") == "data")
        await ann.request({"type": "raise_hand"})
        hands = await mates[0].wait_for("hands")
        assert [h["participant"] for h in hands["hands"]] == [sid(ann)]
        # a host's message reaches every room
        sent = await host.request({"type": "breakout_broadcast", "text": "2 minutes left"})
        assert sent["delivered"] == 5
        for c in (host, *people):
            m = await c.wait_for("breakout_message")
            assert m["text"] == "2 minutes left" and m["from"]["identity"] == "host"
        # non-hosts: no moving others, no starting, no ending; their own way back is allowed
        await refused(
            ben, {"type": "breakout_move", "participant": sid(ann), "room": ""}, "permission_denied"
        )
        await refused(ben, {"type": "breakout_end"}, "permission_denied")
        await refused(ben, {"type": "breakout_timer", "duration": 5}, "permission_denied")
        await refused(ben, {"type": "breakout_broadcast", "text": "x"}, "permission_denied")
        other_room = "2" if where[sid(ben)] == "1" else "1"
        await refused(ben, {"type": "breakout_move", "room": other_room}, "permission_denied")
        await ben.request({"type": "breakout_move", "room": ""})  # back to the main room
        await ben.request({"type": "breakout_move", "room": where[sid(ben)]})  # and again
        # the timer: everyone back in the main room
        ended = await host.wait_for(lambda m: m.get("type") == "breakout" and not m["active"], 8)
        assert ended["reason"] == "timer"
        room = s.sfu.room("t")
        await until(lambda: len(room.participants) == 5, what="everyone back")
        assert [n for n in s.sfu.rooms] == ["t"]
        assert not [e for e in others[0].events if e.get("type") == "data"], "chat left its room"
        for c in (host, *people):
            await c.close()


async def test_bad_requests_and_direct_joins_are_refused():
    async with LocalServer(resume_grace=0) as s:
        host = await signal(s, "bad", "host", room_host=True)
        ann = await signal(s, "bad", "ann")
        await refused(ann, {"type": "breakout_start", "count": 2}, "permission_denied")
        await refused(host, {"type": "breakout_end"}, "not_found")
        await refused(host, {"type": "breakout_move", "room": "1"}, "not_found")
        for bad in (
            {"count": 0},
            {"count": 21},
            {"count": True},
            {"count": 2, "duration": -1},
            {"count": 2, "duration": "5"},
            {"count": 2, "assign": "alphabetical"},
            {"rooms": "two"},
            {"rooms": [{"name": "x" * 65}]},
            {"rooms": [{"participants": "all"}]},
            {},
        ):
            await refused(host, {"type": "breakout_start", **bad}, "bad_request")
        await refused(
            host,
            {"type": "breakout_start", "rooms": [{"participants": ["PA_nobody"]}]},
            "not_found",
        )
        state = await host.request(
            {
                "type": "breakout_start",
                "rooms": [{"participants": [sid(ann)]}],
                "allow_return": False,
            }
        )
        await refused(host, {"type": "breakout_start", "count": 1}, "already_running")
        await refused(host, {"type": "breakout_move", "room": "9"}, "not_found")
        await refused(
            host, {"type": "breakout_move", "participant": "PA_x", "room": ""}, "not_found"
        )
        await refused(host, {"type": "breakout_move", "room": 1}, "bad_request")
        await refused(host, {"type": "breakout_broadcast", "text": " "}, "bad_request")
        await refused(host, {"type": "breakout_broadcast", "text": "x" * 1001}, "bad_request")
        await refused(
            ann, {"type": "breakout_move", "room": ""}, "permission_denied"
        )  # not allowed back
        # a breakout room is entered only by a move, even with a token naming it
        sub = next(n for n in s.sfu.rooms if n != "bad")
        intruder = SignalingConnection(s.url, s.token(sub, "eve", "Eve"))
        await intruder.connect()
        await refused(intruder, {"type": "join"}, "not_found")
        assert state["rooms"][0]["participants"][0]["sid"] == sid(ann)
        # a host may change the timer
        timed = await host.request({"type": "breakout_timer", "duration": 60})
        assert 59 <= timed["remaining"] <= 60
        told = await ann.wait_for(lambda m: m.get("type") == "breakout" and m["remaining"])
        assert told["ends_at"] == timed["ends_at"]
        await host.request({"type": "breakout_end"})
        await intruder.close()
        # everyone leaves while breakout rooms are open: they close, nothing stays for nobody
        await host.request({"type": "breakout_start", "count": 2, "assign": "random"})
        assert len(s.sfu.rooms) == 3
        await ann.close()
        await host.close()
        await until(lambda: list(s.sfu.rooms) == ["bad"], what="the breakout rooms closed")
        assert not s.sfu.rooms["bad"].kept  # the main room closes after its empty timeout


async def test_someone_moved_who_drops_or_rejoins_lands_in_their_breakout_room():
    async with LocalServer() as s:
        host = await signal(s, "rs", "host", room_host=True)
        ann = await media_client(s, "rs", 1)
        ben = await media_client(s, "rs", 2)
        ann_sid, ben_sid = ann.joined["participant"]["sid"], ben.joined["participant"]["sid"]
        await host.request(
            {"type": "breakout_start", "rooms": [{"participants": [ann_sid, ben_sid]}]}
        )
        await ann.wait_for("moved")
        sub = s.sfu.room(ann.room["name"])
        assert ann.room["name"] != "rs" and sub.participants.keys() == {ann_sid, ben_sid}
        # Ann's connection drops; she resumes in the breakout room, as herself
        token = ann.joined["resume"]
        seen_before = len(ben.events)
        await ann.close(leave=False)
        await until(lambda: sub.is_suspended(sub.participants[ann_sid]), what="suspended")
        back = Client(s.url, s.token("rs", "user1", "User 1"))
        rejoined = await back.connect(resume=token)
        assert rejoined["resumed"] is True and rejoined["participant"]["sid"] == ann_sid
        assert rejoined["room"]["name"] == sub.name
        assert [p["sid"] for p in rejoined["participants"]] == [ben_sid]
        assert not [e for e in ben.events[seen_before:] if e.get("type") == "participant_left"], (
            "Ben saw no leave"
        )
        await back.publish(
            PatternVideoTrack(1), ToneAudioTrack(1), sources=["camera", "microphone"]
        )
        await switched(back, ben_sid, 2, time.monotonic())
        await until(lambda: len(ben.remote_tracks) == 2, what="Ben receives Ann again")
        await switched(ben, ann_sid, 1, time.monotonic())
        # she leaves and joins again (an ordinary join): taken to her breakout room
        await back.leave()
        again = Client(s.url, s.token("rs", "user1", "User 1"))
        joined = await again.connect()
        assert joined["room"]["name"] == "rs"
        moved = await again.wait_for("moved")
        assert moved["room"]["name"] == sub.name
        state = await again.request({"type": "breakout_state"})
        assert state["room"] == "1" and state["assigned"] == "1" and state["host"] is False
        await again.publish(
            PatternVideoTrack(1), ToneAudioTrack(1), sources=["camera", "microphone"]
        )
        await switched(again, ben_sid, 2, time.monotonic())
        assert len(sub.participants) == 2
        for c in (host, ben, again):
            await c.close()


async def test_recording_and_hands_follow_the_room_one_is_in(tmp_path):
    """The main room is recorded: someone moved to a breakout room is told where they are is
    not (recording_state), and told again that it is when brought back (recording_started,
    ongoing); a raised hand is lowered when its owner moves, and the breakout room's queue is
    its own."""
    async with LocalServer(recordings_dir=str(tmp_path)) as s:
        host = await signal(s, "rec", "host", room_host=True, room_record=True)
        ann = await signal(s, "rec", "ann")
        ben = await signal(s, "rec", "ben")
        await host.request({"type": "start_recording"})
        await ann.wait_for("recording_started")
        await ann.request({"type": "raise_hand"})
        await host.request(
            {"type": "breakout_start", "rooms": [{"participants": [sid(ann), sid(ben)]}]}
        )
        await ann.wait_for("moved")
        assert (await ann.request({"type": "recording_state"}))["recording"] is None
        assert (await host.request({"type": "recording_state"}))["recording"] is not None
        lowered = await host.wait_for(lambda m: m.get("type") == "hands" and not m["raised"])
        assert lowered["participant"] == sid(ann) and lowered["hands"] == []
        assert (await ann.request({"type": "meeting"}))["hands"] == []
        await ben.request({"type": "raise_hand"})
        hands = await ann.wait_for(
            lambda m: m.get("type") == "hands" and m["raised"] and m["participant"] == sid(ben)
        )
        assert [h["participant"] for h in hands["hands"]] == [sid(ben)]
        assert (await host.request({"type": "meeting"}))["hands"] == []  # not the main room's
        seen = len(ann.events)
        await host.request({"type": "breakout_end"})
        back = await ann.wait_for(
            lambda m: m.get("type") == "recording_started" and ann.events.index(m) >= seen
        )
        assert back["ongoing"] is True
        assert (await ann.request({"type": "recording_state"}))["recording"] is not None
        await host.request({"type": "stop_recording"})
        for c in (host, ann, ben):
            await c.close()
