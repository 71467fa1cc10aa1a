"""LiveKit's RoomService over Twirp, driven by LiveKit's own server SDK (livekit-api)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiohttp import web
from livekit import api
from livekit.protocol import room as lkroom

from tests.support.inprocess import KEY, SECRET, LocalServer, free_port
from tests.support.media import until
from visio_client import Client
from visio_client.media import PatternVideoTrack, ToneAudioTrack
from visio_client.protocol import ServerError

pytestmark = pytest.mark.timeout(120)
TWIRP = "/twirp/livekit.RoomService"
DENIED = "unauthenticated"  # LiveKit's answer to a missing grant
INVALID = "invalid_argument"
STATUSES = {DENIED: 401, "malformed": 400, "bad_route": 404, "not_found": 404, INVALID: 400}
STATUSES["resource_exhausted"] = 429
CreateRoom, Listing, Who = (
    lkroom.CreateRoomRequest,
    lkroom.ListParticipantsRequest,
    lkroom.RoomParticipantIdentity,
)


def pb(cls, **fields) -> bytes:
    """A request message's bytes."""
    return cls(**fields).SerializeToString()


def admin_token(room: str = "", **grants: object) -> str:
    """A token as LiveKit's SDKs sign them for the server API (no identity)."""
    return api.AccessToken(KEY, SECRET).with_grants(api.VideoGrants(room=room, **grants)).to_jwt()


async def twirp(s: LocalServer, method: str, body: bytes, token: str | None, **headers: str):
    """A raw Twirp call; returns (status, JSON or bytes)."""
    headers.setdefault("Content-Type", "application/protobuf")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{s.url}{TWIRP}/{method}", data=body, headers=headers) as r,
    ):
        raw = await r.read()
        is_json = r.content_type == "application/json"
        return r.status, (await r.json()) if is_json else raw


async def test_livekit_api_drives_a_room_of_visio_clients():
    async with LocalServer() as s, api.LiveKitAPI(s.url, KEY, SECRET) as lk:
        created = await lk.room.create_room(
            api.CreateRoomRequest(name="board", metadata="agenda", max_participants=5)
        )
        assert created.name == "board" and created.sid.startswith("RM_")
        assert created.metadata == "agenda" and created.max_participants == 5
        again = await lk.room.create_room(api.CreateRoomRequest(name="board"))
        assert again.sid == created.sid  # as on LiveKit: creating an existing room returns it
        listing = await lk.room.list_rooms(api.ListRoomsRequest())
        assert [r.name for r in listing.rooms] == ["board"]
        none = await lk.room.list_rooms(api.ListRoomsRequest(names=["elsewhere"]))
        assert list(none.rooms) == []

        alice = Client(s.url, s.token("board", "alice", name="Alice"))
        await alice.connect()
        mic, cam = await alice.publish(
            ToneAudioTrack(0), PatternVideoTrack(0), sources=["microphone", "camera"]
        )
        bob = Client(s.url, s.token("board", "bob"))
        await bob.connect()
        await until(lambda: len(bob.remote_tracks) == 2, what="bob receives alice")

        people = await lk.room.list_participants(api.ListParticipantsRequest(room="board"))
        assert sorted(p.identity for p in people.participants) == ["alice", "bob"]
        a = next(p for p in people.participants if p.identity == "alice")
        assert a.name == "Alice" and a.state == api.ParticipantInfo.State.ACTIVE
        assert a.joined_at > 0 and a.is_publisher and a.permission.can_publish
        sources = {t.sid: t.source for t in a.tracks}
        assert sources == {
            mic["sid"]: api.TrackSource.MICROPHONE,
            cam["sid"]: api.TrackSource.CAMERA,
        }
        one = await lk.room.get_participant(
            api.RoomParticipantIdentity(room="board", identity="bob")
        )
        assert one.identity == "bob" and not one.is_publisher

        muted = await lk.room.mute_published_track(
            api.MuteRoomTrackRequest(
                room="board", identity="alice", track_sid=mic["sid"], muted=True
            )
        )
        assert muted.track.sid == mic["sid"] and muted.track.muted
        assert (await alice.wait_for("track_muted"))["track"] == mic["sid"]  # her client told
        seen = await bob.wait_for(lambda m: m["type"] == "track_muted" and m["muted"])
        assert seen["track"] == mic["sid"]

        updated = await lk.room.update_participant(
            api.UpdateParticipantRequest(
                room="board",
                identity="alice",
                name="Alice B.",
                metadata="chair",
                attributes={"role": "host", "colour": "teal"},
            )
        )
        assert updated.name == "Alice B." and updated.metadata == "chair"
        assert dict(updated.attributes) == {"role": "host", "colour": "teal"}
        told = await bob.wait_for("participant_updated")
        assert told["participant"]["metadata"] == "chair"
        # attributes merge; an empty value removes a key (LiveKit's rule)
        updated = await lk.room.update_participant(
            api.UpdateParticipantRequest(
                room="board", identity="alice", attributes={"colour": "", "seat": "3"}
            )
        )
        assert dict(updated.attributes) == {"role": "host", "seat": "3"}
        assert updated.name == "Alice B."  # fields left empty are kept
        # permission: no more camera; her camera is unpublished, everyone is told
        updated = await lk.room.update_participant(
            api.UpdateParticipantRequest(
                room="board",
                identity="alice",
                permission=api.ParticipantPermission(
                    can_subscribe=True,
                    can_publish=True,
                    can_publish_data=True,
                    can_publish_sources=[api.TrackSource.MICROPHONE],
                ),
            )
        )
        assert list(updated.permission.can_publish_sources) == [api.TrackSource.MICROPHONE]
        assert [t.sid for t in updated.tracks] == [mic["sid"]]
        gone = await bob.wait_for("track_unpublished")
        assert gone["track"] == cam["sid"]
        with pytest.raises(ServerError) as refused:
            await alice.request(
                {"type": "add_track", "cid": "c2", "kind": "video", "source": "camera"}
            )
        assert refused.value.code == "permission_denied"

        room = await lk.room.update_room_metadata(
            api.UpdateRoomMetadataRequest(room="board", metadata="minutes")
        )
        assert room.metadata == "minutes" and room.num_participants == 2
        assert (await bob.wait_for("room_updated"))["room"]["metadata"] == "minutes"

        await lk.room.send_data(
            api.SendDataRequest(
                room="board",
                data=b'{"text": "5 minutes"}',
                topic="notice",
                destination_identities=["bob"],
            )
        )
        notice = await bob.wait_for("data")
        assert notice["from"] is None and notice["topic"] == "notice"
        assert notice["payload"] == {"text": "5 minutes"}
        await lk.room.send_data(api.SendDataRequest(room="board", data=b"\xff\x00", topic="bin"))
        binary = await alice.wait_for(lambda m: m["type"] == "data" and m["topic"] == "bin")
        assert binary["payload"] == {"base64": "/wA="}
        assert not any(m["type"] == "data" for m in alice.events if m.get("topic") == "notice")

        await lk.room.remove_participant(api.RoomParticipantIdentity(room="board", identity="bob"))
        assert (await bob.wait_for("leave"))["reason"] == "removed"
        await until(lambda: bob.ws.closed, what="bob's socket closed")
        people = await lk.room.list_participants(api.ListParticipantsRequest(room="board"))
        assert [p.identity for p in people.participants] == ["alice"]
        with pytest.raises(api.TwirpError) as err:
            await lk.room.remove_participant(
                api.RoomParticipantIdentity(room="board", identity="bob")
            )
        assert err.value.code == "not_found" and err.value.status == 404
        with pytest.raises(api.TwirpError) as err:
            await lk.room.mute_published_track(
                api.MuteRoomTrackRequest(room="board", identity="alice", track_sid="TR_no")
            )
        assert err.value.code == "not_found"

        await lk.room.delete_room(api.DeleteRoomRequest(room="board"))
        assert (await alice.wait_for("leave"))["reason"] == "room_deleted"
        assert s.sfu.room("board") is None
        with pytest.raises(api.TwirpError) as err:
            await lk.room.delete_room(api.DeleteRoomRequest(room="board"))
        assert err.value.code == "not_found"
        await alice.close()
        await bob.close()


async def test_twirp_refuses_bad_input_and_wrong_grants_as_livekit_does():
    async with LocalServer(max_rooms=2) as s:
        create = admin_token(room_create=True)
        body = lkroom.CreateRoomRequest(name="r1").SerializeToString()
        # JSON bodies work as well as protobuf; the answer comes in the request's encoding
        status, room = await twirp(
            s,
            "CreateRoom",
            b'{"name": "r2", "emptyTimeout": 30}',
            create,
            **{"Content-Type": "application/json"},
        )
        assert status == 200 and room["name"] == "r2" and room["empty_timeout"] == 30
        status, raw = await twirp(s, "CreateRoom", body, create)
        assert status == 200 and api.Room.FromString(raw).name == "r1"

        r2_admin = admin_token("r2", room_admin=True)
        r2_create = admin_token("r2", room_create=True)
        r1_admin, JS = admin_token("r1", room_admin=True), {"Content-Type": "application/json"}
        for method, payload, token, headers, code in [
            ("CreateRoom", body, None, {}, "unauthenticated"),  # no token
            ("CreateRoom", body, "not.a.jwt", {}, "unauthenticated"),
            ("CreateRoom", body, admin_token(room_list=True), {}, "unauthenticated"),
            ("ListRooms", b"", create, {}, "unauthenticated"),
            ("CreateRoom", b"\xff\xff\xff", create, {}, "malformed"),
            ("CreateRoom", b"\x0a\x05ab", create, {}, "malformed"),  # truncated field
            ("CreateRoom", b'{"name": ', create, JS, "malformed"),
            ("CreateRoom", b'{"name": 5}', create, JS, "malformed"),
            ("CreateRoom", b'{"nope": 1}', create, JS, "malformed"),
            ("CreateRoom", body, create, {"Content-Type": "text/plain"}, "bad_route"),
            ("Explode", body, create, {}, "bad_route"),
            ("CreateRoom", pb(CreateRoom, name="r3"), create, {}, "resource_exhausted"),
            ("CreateRoom", pb(CreateRoom, name=""), create, {}, INVALID),
            ("CreateRoom", pb(CreateRoom, name="x\n"), create, {}, "invalid_argument"),
            # roomAdmin on another room, or roomCreate alone, does not administer r1
            ("ListParticipants", pb(Listing, room="r1"), r2_admin, {}, DENIED),
            ("ListParticipants", pb(Listing, room="r1"), create, {}, DENIED),
            ("DeleteRoom", pb(lkroom.DeleteRoomRequest, room="r1"), r2_admin, {}, DENIED),
            ("DeleteRoom", pb(lkroom.DeleteRoomRequest, room="r1"), r2_create, {}, DENIED),
            ("GetParticipant", pb(Who, room="r1"), r1_admin, {}, "not_found"),
            ("SendData", pb(lkroom.SendDataRequest, room="r1", data=b"x" * 20000), r1_admin, {},
             "invalid_argument"),
            ("UpdateRoomMetadata", pb(lkroom.UpdateRoomMetadataRequest, room="zz"),
             admin_token("zz", room_admin=True), {}, "not_found"),
        ]:  # fmt: skip
            status, err = await twirp(s, method, payload, token, **headers)
            assert isinstance(err, dict) and err["code"] == code, (method, payload, err)
            assert status == STATUSES[code] and err["msg"], (method, err)
        async with aiohttp.ClientSession() as http, http.get(f"{s.url}{TWIRP}/ListRooms") as r:
            assert r.status == 404 and (await r.json())["code"] == "bad_route"
            # exactly this type: livekit-server-sdk reads an error's code only then
            assert r.headers["Content-Type"] == "application/json"
        # livekit-server-sdk (Node) signs server API tokens with no 'sub' at all
        now = int(time.time())
        no_sub = jwt.encode(
            {"iss": KEY, "nbf": now, "exp": now + 60, "video": {"roomList": True}}, SECRET
        )
        status, raw = await twirp(s, "ListRooms", b"", no_sub)
        assert status == 200 and len(api.ListRoomsResponse.FromString(raw).rooms) == 2
        # a token from the visio-sfu CLI / admin API works too, scoped to its room
        lister = s.token("r1", "ops", room_join=False, room_list=True)
        status, raw = await twirp(s, "ListRooms", b"", lister)
        assert status == 200 and [r.name for r in api.ListRoomsResponse.FromString(raw).rooms] == [
            "r1"
        ]
        # a refused request changes nothing and the server goes on
        assert sorted(s.sfu.rooms) == ["r1", "r2"]
        status, _ = await twirp(
            s, "DeleteRoom", lkroom.DeleteRoomRequest(room="r2").SerializeToString(), create
        )
        assert status == 200 and sorted(s.sfu.rooms) == ["r1"]


class LiveKitReceiver:
    """A webhook endpoint that checks every request with livekit-api's WebhookReceiver."""

    def __init__(self) -> None:
        self.port = free_port()
        self.receiver = api.WebhookReceiver(api.TokenVerifier(KEY, SECRET))
        self.events: list[api.WebhookEvent] = []
        self.refused: list[str] = []
        self.raw: list[tuple[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        auth = request.headers.get("Authorization", "")
        self.raw.append((body, auth))
        try:
            self.events.append(self.receiver.receive(body, auth))
        except Exception as exc:  # what a LiveKit application does: refuse the request
            self.refused.append(str(exc))
            return web.Response(status=401)
        return web.Response(text="ok")

    async def __aenter__(self) -> LiveKitReceiver:
        app = web.Application()
        app.router.add_post("/livekit", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def test_livekit_webhooks_verified_by_livekit_api():
    async with LiveKitReceiver() as hook:
        url = f"http://127.0.0.1:{hook.port}/livekit"
        async with LocalServer(webhook_urls=[url], webhook_format="livekit") as s:
            alice = Client(s.url, s.token("hooks", "alice", name="Alice"))
            await alice.connect()
            (cam,) = await alice.publish(PatternVideoTrack(0), sources=["camera"])
            await alice.leave()
            await until(lambda: len(hook.events) >= 5, what="five webhooks verified")
        assert hook.refused == []
        by_kind = {e.event: e for e in hook.events}
        assert set(by_kind) >= {
            "room_started",
            "participant_joined",
            "track_published",
            "track_unpublished",
            "participant_left",
        }
        assert all(e.room.name == "hooks" and e.room.sid.startswith("RM_") for e in hook.events)
        assert all(e.id.startswith("EV_") and e.created_at > 0 for e in hook.events)
        joined = by_kind["participant_joined"]
        assert joined.participant.identity == "alice" and joined.participant.name == "Alice"
        assert joined.participant.state == api.ParticipantInfo.State.ACTIVE
        published = by_kind["track_published"]
        assert published.track.sid == cam["sid"]
        assert published.track.type == api.TrackType.VIDEO
        assert published.track.source == api.TrackSource.CAMERA
        left = by_kind["participant_left"]
        assert left.participant.state == api.ParticipantInfo.State.DISCONNECTED
        # a body altered on the way, or signed with another secret, is refused by the receiver
        body, auth = hook.raw[0]
        with pytest.raises(Exception, match="hash mismatch"):
            hook.receiver.receive(body.replace("hooks", "other"), auth)
        forged = api.AccessToken(KEY, "x" * 40).to_jwt()
        with pytest.raises(Exception):  # noqa: B017 - pyjwt's InvalidSignatureError
            hook.receiver.receive(body, forged)


def test_webhook_format_setting():
    from signaling.config import ConfigError, load_config

    assert load_config(env={"VISIO_WEBHOOK_FORMAT": "livekit"}).webhook_format == "livekit"
    assert load_config(env={}).webhook_format == "visio"
    with pytest.raises(ConfigError, match="webhook_format"):
        load_config(env={"VISIO_WEBHOOK_FORMAT": "xml"})


async def test_livekit_api_on_a_livekit_sdk_participant():
    """The RoomService on a participant that speaks LiveKit's protocol (the Python SDK, real
    libwebrtc): listed with its tracks and token attributes, data from the server arrives as
    LiveKit data packets byte for byte, a server mute reaches the others, removal disconnects it."""
    from tests.support.lkdrive import LiveKitPeers, livekit_token

    async with (
        LocalServer() as s,
        LiveKitPeers(s.url) as peers,
        api.LiveKitAPI(s.url, KEY, SECRET) as lk,
    ):
        web = Client(s.url, s.token("mixed", "web"))
        await web.connect()
        token = livekit_token(KEY, SECRET, "lk", "mixed", name="LK", attributes={"role": "guest"})
        await peers.cmd("join", name="lk", token=token, video=True, audio=True)
        await until(lambda: len(web.remote_tracks) == 2, what="web receives the SDK's tracks")
        people = await lk.room.list_participants(api.ListParticipantsRequest(room="mixed"))
        sdk = next(p for p in people.participants if p.identity == "lk")
        assert sdk.name == "LK" and dict(sdk.attributes) == {"role": "guest"}
        sources = sorted(api.TrackSource.Name(t.source) for t in sdk.tracks)
        assert sources == ["CAMERA", "MICROPHONE"]
        payload = "from the server, à tous".encode()
        await lk.room.send_data(
            api.SendDataRequest(
                room="mixed",
                data=payload,
                topic="notice",
                kind=api.DataPacket.Kind.LOSSY,
                destination_identities=["lk"],
            )
        )
        stats = await peers.until(lambda st: st["lk"]["data"], 10, "the server's data packet")
        (got,) = stats["lk"]["data"]
        assert got["payload"] == payload.decode() and got["topic"] == "notice"
        assert got["from"] is None and got["reliable"] is False
        audio = next(t for t in sdk.tracks if t.source == api.TrackSource.MICROPHONE)
        await lk.room.mute_published_track(
            api.MuteRoomTrackRequest(room="mixed", identity="lk", track_sid=audio.sid, muted=True)
        )
        muted = await web.wait_for(lambda m: m["type"] == "track_muted" and m["muted"])
        assert muted["track"] == audio.sid
        await lk.room.remove_participant(api.RoomParticipantIdentity(room="mixed", identity="lk"))
        await peers.until(lambda st: st["lk"]["sid"] is None, 15, "the SDK disconnected")
        left = await web.wait_for("participant_left")
        assert left["participant"]["identity"] == "lk" and left["reason"] == "removed"
        assert not any(m["type"] == "data" for m in web.events)  # not for the JSON client
        await web.close()


async def test_livekit_api_with_workers():
    """``--workers 2``: the RoomService names its room in the body, and the front relays each
    call to the worker that holds the room; ListRooms merges every worker's rooms."""
    from tests.support.server import ServerProcess

    server = ServerProcess(extra=["--workers", "2", "--drain-timeout", "1"])
    clients = []
    try:
        key, secret = server.dev_credentials()
        async with api.LiveKitAPI(server.url, key, secret) as lk:
            for room in ("lk-a", "lk-b"):
                await lk.room.create_room(api.CreateRoomRequest(name=room, metadata=room))
                client = Client(server.url, server.token(room, f"in-{room}"))
                await client.connect()
                clients.append(client)
            await until(
                lambda: sorted(w["rooms"] for w in server.get("/healthz")["workers"]) == [1, 1],
                10,
                what="one room per worker",
            )
            listing = await lk.room.list_rooms(api.ListRoomsRequest())
            assert [(r.name, r.metadata, r.num_participants) for r in listing.rooms] == [
                ("lk-a", "lk-a", 1),
                ("lk-b", "lk-b", 1),
            ]
            for room in ("lk-a", "lk-b"):
                people = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
                assert [p.identity for p in people.participants] == [f"in-{room}"]
            await lk.room.update_room_metadata(
                api.UpdateRoomMetadataRequest(room="lk-b", metadata="moved on")
            )
            assert (await clients[1].wait_for("room_updated"))["room"]["metadata"] == "moved on"
            await lk.room.remove_participant(
                api.RoomParticipantIdentity(room="lk-a", identity="in-lk-a")
            )
            assert (await clients[0].wait_for("leave"))["reason"] == "removed"
            with pytest.raises(api.TwirpError) as err:
                await lk.room.get_participant(
                    api.RoomParticipantIdentity(room="nowhere", identity="x")
                )
            assert err.value.code == "not_found"
            await lk.room.delete_room(api.DeleteRoomRequest(room="lk-b"))
            assert (await clients[1].wait_for("leave"))["reason"] == "room_deleted"
    finally:
        for client in clients:
            await client.close()
        server.stop()


NODE_DIR = Path(__file__).resolve().parent / "livekit_node"


async def test_livekit_server_sdk_for_node():
    """LiveKit's Node server SDK (livekit-server-sdk from npm, unmodified; JSON bodies, tokens
    without 'sub') drives a room with a visio_client participant in it."""
    if not (NODE_DIR / "node_modules" / "livekit-server-sdk").exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed (scripts/test.sh installs it)")
        pytest.fail("livekit-server-sdk is not installed: npm ci in tests/e2e/livekit_node")
    async with LocalServer() as s:
        web = Client(s.url, s.token("node-room", "web"))
        await web.connect()
        sid = s.sfu.room("node-room").sid
        try:
            proc = await asyncio.create_subprocess_exec(
                "node", "drive.mjs", s.url, KEY, SECRET, "node-room",
                cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, output.decode()
            seen = json.loads(output.decode().strip().splitlines()[-1])
            # the room was there (the participant's join made it): CreateRoom returns it
            assert seen["created"]["name"] == "node-room"
            assert seen["created"]["sid"] == sid
            assert seen["listed"] == [["node-room", 1]] and seen["participants"] == ["web"]
            assert seen["meta"] == "m2"
            assert seen["updated"] == {"metadata": "from node", "attributes": {"team": "blue"}}
            assert seen["missing"]["code"] == "not_found" and seen["missing"]["status"] == 404
            assert seen["after"] == []
            data = await web.wait_for("data")
            assert data["topic"] == "node" and data["payload"] == {"hello": "node"}
            assert (await web.wait_for("room_updated"))["room"]["metadata"] == "m2"
            assert (await web.wait_for("leave"))["reason"] == "removed"
        finally:
            await web.close()
