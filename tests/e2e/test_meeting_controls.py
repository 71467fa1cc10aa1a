"""Issue 15, the server's side, through its protocol: raised hands (an ordered queue), reactions
(a fixed set, rate-limited), host controls (mute, mute all, stop a track, remove, lock: the
roomHost grant), a track published muted, and resuming a participant after a dropped
connection (same sid, the others see no leave/join; wrong token or identity: an ordinary
join). Bad input and non-hosts are refused. aiortc participants (visio_client) publish real
media through an in-process server where tracks matter; the others speak the protocol only."""

from __future__ import annotations

import asyncio

import pytest

from signaling.auth import VideoGrant, mint_token
from signaling.meeting import MESSAGES, REACTIONS
from tests.support.inprocess import KEY, SECRET, LocalServer
from tests.support.media import check_audio, until
from visio_client import Client, ServerError
from visio_client.media import PatternVideoTrack, ToneAudioTrack
from visio_client.protocol import SignalingConnection

pytestmark = pytest.mark.timeout(90)


async def signal(s: LocalServer, room: str, identity: str, **grant: object) -> SignalingConnection:
    """A participant without media: it joins and keeps every message."""
    conn = SignalingConnection(s.url, s.token(room, identity, identity.title(), **grant))
    await conn.connect()
    conn.joined = await conn.request({"type": "join"})  # type: ignore[attr-defined]
    return conn


def sid(conn) -> str:
    return conn.joined["participant"]["sid"]


async def refused(conn, msg: dict, code: str) -> None:
    with pytest.raises(ServerError) as info:
        await conn.request(msg)
    assert info.value.code == code, info.value


async def got(conn, kind: str, **fields: object) -> dict:
    """Wait for a message of type ``kind`` whose fields have these values."""
    return await conn.wait_for(
        lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())
    )


def hands_of(conn) -> list[str]:
    last = [e for e in conn.events if e.get("type") == "hands"][-1]
    return [h["participant"] for h in last["hands"]]


async def test_raised_hands_are_a_queue_everyone_sees_in_order():
    async with LocalServer() as s:
        host = await signal(s, "hands", "host", room_host=True)
        alice, bob, carol = [await signal(s, "hands", n) for n in ("alice", "bob", "carol")]
        state = await carol.request({"type": "meeting"})
        assert state["host"] is False and state["hands"] == [] and state["locked"] is False
        assert state["reactions"] == list(REACTIONS)
        assert (await host.request({"type": "meeting"}))["host"] is True
        for i, who in enumerate((bob, alice, carol)):
            assert (await who.request({"type": "raise_hand"}))["position"] == i + 1
        order = [sid(bob), sid(alice), sid(carol)]
        for who in (host, alice, bob, carol):
            await until(lambda w=who: len([e for e in w.events if e["type"] == "hands"]) == 3)
            assert hands_of(who) == order
        assert (await bob.request({"type": "raise_hand"}))["position"] == 1  # keeps its place
        newcomer = await signal(s, "hands", "dana")
        state = await newcomer.request({"type": "meeting"})
        assert [h["participant"] for h in state["hands"]] == order
        # lowered by oneself; someone else's only by a host
        await bob.request({"type": "lower_hand"})
        await until(lambda: hands_of(carol) == [sid(alice), sid(carol)])
        await refused(alice, {"type": "lower_hand", "participant": sid(carol)}, "permission_denied")
        await refused(host, {"type": "lower_hand", "participant": "PA_nobody"}, "not_found")
        await host.request({"type": "lower_hand", "participant": sid(carol)})
        await until(lambda: hands_of(alice) == [sid(alice)])
        last = [e for e in alice.events if e["type"] == "hands"][-1]
        assert last["participant"] == sid(carol) and last["raised"] is False
        assert last["by"] == sid(host)
        # leaving lowers your hand
        await alice.close()
        await until(lambda: hands_of(carol) == [])
        for conn in (host, bob, carol, newcomer):
            await conn.close()


async def test_reactions_reach_everyone_within_a_fixed_set_and_a_rate():
    async with LocalServer() as s:
        alice, bob = [await signal(s, "react", n) for n in ("alice", "bob")]
        await alice.request({"type": "reaction", "reaction": "clap"})
        for who in (alice, bob):
            got = await who.wait_for("reaction")
            assert got["participant"] == sid(alice) and got["reaction"] == "clap" and got["ts"] > 0
        await refused(alice, {"type": "reaction", "reaction": "<script>"}, "bad_request")
        await refused(alice, {"type": "reaction"}, "bad_request")
        await refused(alice, {"type": "reaction", "reaction": 3}, "bad_request")
        outcomes = []
        for _ in range(8):
            try:
                await bob.request({"type": "reaction", "reaction": "heart"})
                outcomes.append("ok")
            except ServerError as exc:
                outcomes.append(exc.code)
        assert outcomes[:5] == ["ok"] * 5 and "rate_limited" in outcomes[5:], outcomes
        await asyncio.sleep(1.1)  # the allowance comes back
        await bob.request({"type": "reaction", "reaction": "party"})
        hidden = await signal(s, "react", "recorder", hidden=True)
        await refused(hidden, {"type": "reaction", "reaction": "clap"}, "permission_denied")
        await refused(hidden, {"type": "raise_hand"}, "permission_denied")
        for conn in (alice, bob, hidden):
            await conn.close()


async def test_meeting_messages_need_a_join():
    async with LocalServer() as s:
        conn = SignalingConnection(s.url, s.token("x", "early"))
        await conn.connect()
        valid = {
            "reaction": {"reaction": "clap"},
            "stop_track": {"participant": "PA_x", "track": "TR_x"},
            "lock_room": {"locked": True},
        }
        for kind, _handler, _request in MESSAGES:
            await refused(conn, {"type": kind, **valid.get(kind, {})}, "not_joined")
        await conn.close()


async def publisher(s: LocalServer, room: str, identity: str, *sources: str, **grant) -> Client:
    client = Client(s.url, s.token(room, identity, identity.title(), **grant))
    await client.connect()
    tracks = {
        "microphone": lambda: ToneAudioTrack(1),
        "camera": lambda: PatternVideoTrack(1, width=160, height=120, fps=10),
        "screen_share": lambda: PatternVideoTrack(2, width=320, height=180, fps=5),
    }
    if sources:
        client.published = await client.publish(  # type: ignore[attr-defined]
            *(tracks[x]() for x in sources), sources=list(sources)
        )
    return client


def track_of(client, source: str) -> str:
    return next(t["sid"] for t in client.published if t["source"] == source)


async def test_host_controls_and_what_each_side_sees():
    async with LocalServer() as s:
        host = await signal(s, "hosted", "host", room_host=True)
        bob = await publisher(s, "hosted", "bob", "microphone", "camera", "screen_share")
        carol = await publisher(s, "hosted", "carol", "microphone")
        alice = await signal(s, "hosted", "alice")
        bob_sid, carol_sid = sid(bob), sid(carol)
        mic, screen = track_of(bob, "microphone"), track_of(bob, "screen_share")
        # nobody but a host
        for msg in (
            {"type": "mute_participant", "participant": bob_sid},
            {"type": "mute_all"},
            {"type": "stop_track", "participant": bob_sid, "track": screen},
            {"type": "remove_participant", "participant": bob_sid},
            {"type": "lock_room", "locked": True},
        ):
            await refused(alice, msg, "permission_denied")
        assert not s.sfu.room("hosted").locked
        assert not s.sfu.room("hosted").find_track(mic).muted
        # bad targets and fields
        await refused(host, {"type": "mute_participant", "participant": "PA_x"}, "not_found")
        await refused(host, {"type": "stop_track", "participant": bob_sid}, "bad_request")
        await refused(
            host, {"type": "stop_track", "participant": bob_sid, "track": "TR_x"}, "not_found"
        )
        await refused(host, {"type": "lock_room", "locked": "yes"}, "bad_request")
        await refused(host, {"type": "remove_participant", "participant": sid(host)}, "bad_request")
        # mute: the muted person is told, and so is everyone else
        reply = await host.request({"type": "mute_participant", "participant": bob_sid})
        assert reply["tracks"] == [mic]
        told = await bob.wait_for(lambda m: m.get("type") == "track_muted")
        assert told == {"type": "track_muted", "participant": bob_sid, "track": mic, "muted": True}
        await got(alice, "track_muted", track=mic)
        # mute all: every other microphone (Bob's already is)
        reply = await host.request({"type": "mute_all"})
        assert reply["tracks"] == [track_of(carol, "microphone")]
        await carol.wait_for(
            lambda m: m.get("type") == "track_muted" and m["participant"] == carol_sid
        )
        room = s.sfu.room("hosted")
        assert all(t.muted for t in room.tracks() if t.source == "microphone")
        # stop a screen share: its owner hears of it, the others see it go
        await host.request({"type": "stop_track", "participant": bob_sid, "track": screen})
        gone = await bob.wait_for(lambda m: m.get("type") == "track_unpublished")
        assert gone == {"type": "track_unpublished", "participant": bob_sid, "track": screen}
        await alice.wait_for(
            lambda m: m.get("type") == "track_unpublished" and m["track"] == screen
        )
        assert room.find_track(screen) is None and room.find_track(track_of(bob, "camera"))
        # remove: a leave to them, participant_left (removed) to the others
        await host.request({"type": "remove_participant", "participant": bob_sid})
        assert (await bob.wait_for("leave"))["reason"] == "removed"
        left = await alice.wait_for("participant_left")
        assert left["participant"]["sid"] == bob_sid and left["reason"] == "removed"
        await until(lambda: bob.ws.closed, what="Bob's socket closed")
        assert bob_sid not in room.participants
        for conn in (host, carol, alice, bob):
            await conn.close()


def test_the_cli_mints_a_host_token(capsys):
    from signaling.auth import TokenVerifier
    from signaling.cli import main
    from signaling.config import load_config

    verifier = TokenVerifier(load_config(env={}).api_keys)
    assert main(["token", "--room", "demo", "--identity", "hana", "--host"]) == 0
    grant = verifier.verify(capsys.readouterr().out.strip()).grant
    assert grant.room_host and grant.is_host and grant.room_join and not grant.room_admin
    assert main(["token", "--room", "demo", "--identity", "bob"]) == 0
    assert not verifier.verify(capsys.readouterr().out.strip()).grant.is_host


async def test_a_locked_room_refuses_newcomers_but_not_hosts():
    async with LocalServer() as s:
        host = await signal(s, "lock", "host", room_host=True)
        alice = await signal(s, "lock", "alice")
        assert alice.joined["room"]["locked"] is False
        assert (await host.request({"type": "lock_room", "locked": True}))["locked"] is True
        update = await alice.wait_for("room_updated")
        assert update["room"]["locked"] is True
        eve = SignalingConnection(s.url, s.token("lock", "eve"))
        await eve.connect()
        with pytest.raises(ServerError) as info:
            await eve.request({"type": "join"})
        assert info.value.code == "room_locked" and "locked" in str(info.value)
        assert s.sfu.room("lock").by_identity("eve") is None
        assert (await alice.request({"type": "meeting"}))["locked"] is True
        cohost = await signal(s, "lock", "cohost", room_host=True)  # hosts may still join
        admin = await signal(s, "lock", "ops", room_admin=True)  # roomAdmin implies host
        again = await signal(s, "lock", "alice")  # already in: another window, not a newcomer
        assert again.joined["room"]["locked"] is True
        await cohost.request({"type": "lock_room", "locked": False})
        assert (await eve.request({"type": "join"}))["type"] == "joined"  # on the same socket
        # the admin API locks too (roomAdmin on the room), and says so
        ops = mint_token(KEY, SECRET, "ops", "lock", grant=VideoGrant(room="lock", room_admin=True))
        status, body = await s.api("PATCH", "/api/rooms/lock", ops, {"locked": True})
        assert status == 200 and body["locked"] is True and s.sfu.room("lock").locked
        user = s.token("lock", "x", room_host=True)  # a host, but the API needs roomAdmin
        assert (await s.api("PATCH", "/api/rooms/lock", user, {"locked": False}))[0] == 403
        status, body = await s.api("PATCH", "/api/rooms/lock", ops, {"locked": "no"})
        assert status == 400
        for conn in (host, alice, eve, cohost, admin, again):
            await conn.close()


async def test_admin_api_stops_a_track_and_mutes_everyone():
    async with LocalServer() as s:
        bob = await publisher(s, "api", "bob", "microphone", "screen_share")
        alice = await publisher(s, "api", "alice", "microphone")
        ops = mint_token(KEY, SECRET, "ops", "api", grant=VideoGrant(room="api", room_admin=True))
        screen = track_of(bob, "screen_share")
        path = "/api/rooms/api/participants/bob/unpublish"
        assert (await s.api("POST", path, ops, {"track": "TR_nope"}))[0] == 404
        host = s.token("api", "x", room_host=True)
        assert (await s.api("POST", path, host, {"track": screen}))[0] == 403
        status, body = await s.api("POST", path, ops, {"track": screen})
        assert status == 200 and body["sid"] == screen
        await got(bob, "track_unpublished", track=screen)
        status, body = await s.api("POST", "/api/rooms/api/mute", ops, {})
        mics = {track_of(bob, "microphone"), track_of(alice, "microphone")}
        assert status == 200 and set(body["muted"]) == mics
        for who in (alice, bob):
            await who.wait_for(
                lambda m, w=who: m.get("type") == "track_muted" and m["participant"] == sid(w)
            )
        assert (await s.api("POST", "/api/rooms/api/mute", ops, {}))[1] == {"muted": []}
        for conn in (bob, alice):
            await conn.close()


async def test_a_track_announced_muted_is_never_seen_unmuted():
    async with LocalServer() as s:
        bob = await signal(s, "m", "bob")
        alice = Client(s.url, s.token("m", "alice"))
        await alice.connect()
        published = await alice.publish(ToneAudioTrack(3), sources=["microphone"], muted=True)
        assert published[0]["muted"] is True
        seen = await bob.wait_for("track_published")
        assert seen["track"]["muted"] is True and seen["track"]["sid"] == published[0]["sid"]
        await refused(
            bob, {"type": "add_track", "cid": "x", "kind": "audio", "muted": "yes"}, "bad_request"
        )
        await alice.close()
        await bob.close()


# -- resuming ----------------------------------------------------------------------------------
def leaves_and_joins(conn, who: str) -> list[str]:
    return [
        e["type"]
        for e in conn.events
        if e.get("type") in ("participant_left", "participant_joined")
        and who in (e["participant"]["sid"], e["participant"]["identity"])
    ]


async def test_a_dropped_participant_resumes_as_itself():
    async with LocalServer() as s:
        bob = await signal(s, "resume", "bob")
        carol = Client(s.url, s.token("resume", "carol", "Carol"))
        await carol.connect()
        await carol.publish(ToneAudioTrack(4), sources=["microphone"])
        alice = Client(s.url, s.token("resume", "alice", "Alice"))
        joined = await alice.connect()
        token, alice_sid = joined["resume"], joined["participant"]["sid"]
        assert joined["resumed"] is False and token.startswith(alice_sid + ".")
        old = await alice.publish(ToneAudioTrack(2), sources=["microphone"], muted=True)
        await bob.wait_for("track_published")
        await alice.request({"type": "raise_hand"})
        assert leaves_and_joins(bob, alice_sid) == ["participant_joined"]
        # the connection drops (no leave): Alice stays, for the others nothing happened
        await alice.close(leave=False)
        room = s.sfu.room("resume")
        await until(lambda: room.is_suspended(room.participants[alice_sid]), what="suspended")
        # she comes back on a new connection, with new peer connections, and resumes
        back = Client(s.url, s.token("resume", "alice", "Alice"))
        rejoined = await back.connect(resume=token)
        assert rejoined["resumed"] is True and rejoined["participant"]["sid"] == alice_sid
        assert rejoined["participant"]["tracks"] == []  # what she published went with the drop
        assert rejoined["resume"] != token and rejoined["resume"].startswith(alice_sid + ".")
        assert [p["identity"] for p in rejoined["participants"]] == ["bob", "carol"]
        again = await back.publish(ToneAudioTrack(2), sources=["microphone"], muted=True)
        await bob.wait_for(
            lambda m: m.get("type") == "track_published" and m["track"]["sid"] == again[0]["sid"]
        )
        await bob.wait_for(
            lambda m: m.get("type") == "track_unpublished" and m["track"] == old[0]["sid"]
        )
        assert leaves_and_joins(bob, alice_sid) == ["participant_joined"]  # nothing since
        mics = [
            e["track"]
            for e in bob.events
            if e.get("type") == "track_published" and e["participant"] == alice_sid
        ]
        assert all(t["muted"] for t in mics), mics  # never seen unmuted
        assert not [e for e in bob.events if e.get("type") == "track_muted"]
        assert (await back.request({"type": "meeting"}))["hands"][0]["participant"] == alice_sid
        # media flows again: Carol's tone reaches her new subscriber connection
        await until(lambda: back.remote_tracks, what="a track on the new connection")
        await check_audio(back.remote_tracks[0], 4)
        # the token was used up
        third = SignalingConnection(s.url, s.token("resume", "alice", "Alice"))
        await third.connect()
        reply = await third.request({"type": "join", "resume": token})
        assert reply["resumed"] is False and reply["participant"]["sid"] != alice_sid
        await until(
            lambda: (
                leaves_and_joins(bob, "alice")
                == ["participant_joined", "participant_left", "participant_joined"]
            )
        )
        for conn in (bob, back, third, carol):
            await conn.close()


async def test_resuming_a_connection_the_server_still_holds():
    """The network went without a word: the server has not yet seen the socket die; the new
    connection takes the participant over and the old socket is closed (4004)."""
    async with LocalServer() as s:
        bob = await signal(s, "takeover", "bob")
        old = await signal(s, "takeover", "alice")
        new = SignalingConnection(s.url, s.token("takeover", "alice", "Alice"))
        await new.connect()
        reply = await new.request({"type": "join", "resume": old.joined["resume"]})
        assert reply["resumed"] is True and reply["participant"]["sid"] == sid(old)
        await until(lambda: old.ws.closed, what="the old socket closed")
        assert old.ws.close_code == 4004
        await asyncio.sleep(0.3)
        assert s.sfu.room("takeover").participants[sid(old)] is not None
        assert leaves_and_joins(bob, sid(old)) == ["participant_joined"]  # and nothing since
        await new.request({"type": "ping"})
        for conn in (bob, new):
            await conn.close()


async def test_resume_refused_with_a_wrong_token_another_identity_or_too_late():
    async with LocalServer(resume_grace=1) as s:
        bob = await signal(s, "refuse", "bob")
        alice = await signal(s, "refuse", "alice")
        token = alice.joined["resume"]
        await alice.close(leave=False)
        # someone else holding Alice's token: an ordinary join as themselves, Alice untouched
        eve = SignalingConnection(s.url, s.token("refuse", "eve"))
        await eve.connect()
        reply = await eve.request({"type": "join", "resume": token})
        assert reply["resumed"] is False and reply["participant"]["identity"] == "eve"
        assert sid(alice) in s.sfu.room("refuse").participants
        # a wrong secret, a malformed token, a token for another room
        for bad in (token[:-2] + "xx", "garbage", sid(alice), "." + token.partition(".")[2]):
            conn = SignalingConnection(s.url, s.token("refuse", "alice2"))
            await conn.connect()
            assert (await conn.request({"type": "join", "resume": bad}))["resumed"] is False
            await conn.close()
        other_room = SignalingConnection(s.url, s.token("elsewhere", "alice"))
        await other_room.connect()
        assert (await other_room.request({"type": "join", "resume": token}))["resumed"] is False
        await other_room.close()
        bad = SignalingConnection(s.url, s.token("refuse", "alice"))
        await bad.connect()
        await refused(bad, {"type": "join", "resume": 42}, "bad_request")
        await refused(bad, {"type": "join", "resume": "x" * 200}, "bad_request")
        await bad.close()
        # not back within the grace (1 s): removed, and the others are told
        left = await bob.wait_for(
            lambda m: m.get("type") == "participant_left" and m["participant"]["sid"] == sid(alice),
            timeout=5,
        )
        assert left["reason"] == "disconnected"
        late = SignalingConnection(s.url, s.token("refuse", "alice"))
        await late.connect()
        assert (await late.request({"type": "join", "resume": token}))["resumed"] is False
        for conn in (bob, eve, late):
            await conn.close()


async def test_no_resuming_after_a_leave_or_when_turned_off():
    async with LocalServer() as s:
        bob = await signal(s, "bye", "bob")
        alice = await signal(s, "bye", "alice")
        await alice.close(leave=True)  # left on purpose: gone at once
        left = await bob.wait_for("participant_left")
        assert left["reason"] == "left"
        again = SignalingConnection(s.url, s.token("bye", "alice"))
        await again.connect()
        assert (await again.request({"type": "join", "resume": alice.joined["resume"]}))[
            "resumed"
        ] is False
        for conn in (bob, again):
            await conn.close()
    async with LocalServer(resume_grace=0) as s:
        bob = await signal(s, "off", "bob")
        alice = await signal(s, "off", "alice")
        assert "resume" not in alice.joined
        await alice.close(leave=False)
        assert (await bob.wait_for("participant_left"))["reason"] == "disconnected"
        await bob.close()
