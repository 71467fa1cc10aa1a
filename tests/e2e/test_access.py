"""Grants enforced on a live server: each one allowed and refused, with the exact error."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.inprocess import LocalServer
from tests.support.media import check_video, until
from visio_client import Client, ServerError
from visio_client.media import PatternVideoTrack, ToneAudioTrack

pytestmark = pytest.mark.timeout(120)


async def connect(server: LocalServer, room: str, identity: str, **grant) -> Client:
    client = Client(server.url, server.token(room, identity, **grant))
    await client.connect()
    return client


async def test_publish_subscribe_and_data_grants():
    async with LocalServer() as server:
        viewer = await connect(server, "g", "viewer", can_publish=False, can_publish_data=False)
        with pytest.raises(ServerError) as err:
            await viewer.publish(PatternVideoTrack(0))
        assert err.value.code == "permission_denied"
        with pytest.raises(ServerError) as err:
            await viewer.request({"type": "data", "topic": "chat", "payload": {"text": "x"}})
        assert err.value.code == "permission_denied"

        cams_only = await connect(server, "g", "cam", can_publish_sources=("camera",))
        with pytest.raises(ServerError) as err:
            await cams_only.request(
                {"type": "add_track", "cid": "a", "kind": "audio", "source": "microphone"}
            )
        assert err.value.code == "permission_denied" and "microphone" in str(err.value)
        await cams_only.publish(PatternVideoTrack(1), sources=["camera"])

        deaf = await connect(server, "g", "deaf", can_subscribe=False)
        await until(lambda: len(viewer.remote_tracks) == 1, what="viewer receives the camera")
        await check_video(viewer.remote_tracks[0], 1, frames=3)
        await asyncio.sleep(1)
        assert not [e for e in deaf.events if e.get("type") == "offer"], "no subscriber offers"
        with pytest.raises(ServerError) as err:
            await deaf.request({"type": "answer", "target": "subscriber", "sdp": "v=0\r\nm=x"})
        assert err.value.code == "permission_denied"
        for c in (viewer, cams_only, deaf):
            await c.close()


async def test_hidden_participants_are_not_announced_and_cannot_publish():
    async with LocalServer() as server:
        alice = await connect(server, "h", "alice")
        await alice.publish(PatternVideoTrack(0), ToneAudioTrack(0))
        ghost = await connect(server, "h", "recorder", hidden=True)
        assert [p["identity"] for p in ghost.joined["participants"]] == ["alice"]
        await until(lambda: len(ghost.remote_tracks) == 2, what="hidden one receives")
        with pytest.raises(ServerError) as err:
            await ghost.publish(PatternVideoTrack(1))
        assert err.value.code == "permission_denied"
        bob = await connect(server, "h", "bob")
        assert [p["identity"] for p in bob.joined["participants"]] == ["alice"]
        await ghost.leave()
        await asyncio.sleep(0.5)
        seen = {
            e["participant"].get("identity")
            for e in alice.events + bob.events
            if e.get("type") in ("participant_joined", "participant_left")
        }
        assert "recorder" not in seen
        await alice.close()
        await bob.close()


async def test_room_creation_grant_and_room_limits():
    async with LocalServer(auto_create_rooms=False, max_rooms=1, max_participants=1) as server:
        plain = Client(server.url, server.token("new", "a"))
        with pytest.raises(ServerError) as err:
            await plain.connect()
        assert err.value.code == "not_found"
        await plain.close()
        creator = await connect(server, "new", "b", room_create=True)
        other = Client(server.url, server.token("second", "c", room_create=True))
        with pytest.raises(ServerError) as err:
            await other.connect()
        assert err.value.code == "room_full" and "room limit" in str(err.value)
        await other.close()
        crowd = Client(server.url, server.token("new", "d"))
        with pytest.raises(ServerError) as err:
            await crowd.connect()
        assert err.value.code == "room_full"
        await crowd.close()
        await creator.close()


async def test_wrong_room_and_same_identity_replaces():
    async with LocalServer() as server:
        wrong = Client(server.url, server.token("r1", "other"))
        with pytest.raises(ServerError) as err:
            await wrong.connect(room="r2")
        assert err.value.code == "permission_denied" and "r2" in str(err.value)
        await wrong.close()
        a = Client(server.url, server.token("r1", "same"))
        await a.connect(room="r1")
        b = await connect(server, "r1", "same")
        leave = await a.wait_for("leave")
        assert leave["reason"] == "replaced"
        assert len(server.sfu.room("r1").participants) == 1
        await a.close()
        await b.close()


async def test_origin_check_and_join_rate_per_address():
    import aiohttp

    async with LocalServer(allowed_origins=["https://visio.example"], joins_per_second=1) as server:
        token = server.token("o", "x")
        url = f"{server.url}/rtc?access_token={token}"
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers={"Origin": "https://evil.example"}) as r:
                assert r.status == 403 and (await r.json())["code"] == "bad_origin"
            statuses = []
            for _ in range(30):
                async with http.get(url, headers={"Origin": "https://visio.example"}) as r:
                    statuses.append(r.status)
            assert 429 in statuses, statuses
            assert statuses[0] != 429


async def test_flooding_client_is_throttled_then_disconnected():
    async with LocalServer(message_rate=20) as server:
        calm = await connect(server, "flood", "calm")
        await calm.publish(PatternVideoTrack(0))
        watcher = await connect(server, "flood", "watcher")
        await until(lambda: watcher.remote_tracks, what="watcher gets video")
        flooder = await connect(server, "flood", "flooder")
        for _ in range(300):
            if flooder.ws.closed:
                break
            await flooder.send({"type": "ping"})
        await until(lambda: flooder.ws.closed, what="flooder disconnected")
        codes = [e.get("code") for e in flooder.events if e.get("type") == "error"]
        assert "rate_limited" in codes
        assert flooder.ws.close_code == 4029
        left = await watcher.wait_for(
            lambda m: (
                m.get("type") == "participant_left" and m["participant"]["identity"] == "flooder"
            )
        )
        assert left
        await check_video(watcher.remote_tracks[0], 0, frames=3)
        assert (await calm.request({"type": "ping"}))["type"] == "pong"
        for c in (calm, watcher, flooder):
            await c.close()


async def test_tracks_per_participant_limit():
    async with LocalServer(max_tracks=1) as server:
        c = await connect(server, "t", "many")
        await c.request({"type": "add_track", "cid": "a", "kind": "video"})
        with pytest.raises(ServerError) as err:
            await c.request({"type": "add_track", "cid": "b", "kind": "audio"})
        assert err.value.code == "bad_request" and "at most 1" in str(err.value)
        await c.close()
