"""Bad input on LiveKit's signaling (signaling/livekit), from a raw protobuf WebSocket client:
malformed protobuf, unknown message types, text frames, oversized frames, a bad token, a resume
with a token for another room. Each is refused as LiveKit does (no error reply: dropped, or
the socket closed; 401 text at /rtc/validate; leave with RECONNECT for a resume it cannot
serve) and the server, the session and other rooms go on."""

from __future__ import annotations

import asyncio
import base64
import gzip

import aiohttp
from livekit.protocol import models, rtc

from tests.support.inprocess import KEY, SECRET, LocalServer
from tests.support.lkdrive import livekit_token

QUERY = "protocol=16&sdk=js&version=2.23.0&auto_subscribe=1"


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5.0):
    """The next SignalResponse of this kind (others skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"no {kind} in {timeout}s"
        msg = await ws.receive(timeout=left)
        assert msg.type == aiohttp.WSMsgType.BINARY, (msg.type, msg.data)
        response = rtc.SignalResponse()
        response.ParseFromString(msg.data)
        if response.WhichOneof("message") == kind:
            return getattr(response, kind)


def _join_request(
    sdk: int = models.ClientInfo.SDK.JS,
    reconnect: bool = False,
    sid: str = "",
    gzipped: bool = True,
    inner: bytes | None = None,
) -> str:
    """A /rtc/v1 join_request as livekit-client writes it (base64url, no padding)."""
    join = rtc.JoinRequest(
        client_info=models.ClientInfo(sdk=sdk, version="2.23.0", protocol=17),
        connection_settings=rtc.ConnectionSettings(auto_subscribe=True),
        reconnect=reconnect,
        participant_sid=sid,
    )
    data = join.SerializeToString() if inner is None else inner
    wrapped = rtc.WrappedJoinRequest(
        compression=rtc.WrappedJoinRequest.Compression.GZIP if gzipped else 0,
        join_request=gzip.compress(data) if gzipped and inner is None else data,
    )
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode().rstrip("=")


async def _ping(ws: aiohttp.ClientWebSocketResponse, ts: int) -> None:
    await ws.send_bytes(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=ts)).SerializeToString())
    pong = await _next(ws, "pong_resp")
    assert pong.last_ping_timestamp == ts


async def test_livekit_bad_input_is_refused_and_harmless():
    async with LocalServer(max_message_bytes=64 * 1024) as server, aiohttp.ClientSession() as http:
        ws_url = server.url.replace("http://", "ws://")

        def token(identity: str, room: str) -> str:
            return livekit_token(KEY, SECRET, identity, room)

        # /rtc/validate and the single-connection paths, as the SDKs probe them
        async with http.get(f"{server.url}/rtc/validate?access_token=nope") as r:
            assert r.status == 401 and "invalid token" in await r.text()
        good = token("alice", "r1")
        async with http.get(f"{server.url}/rtc/validate?access_token={good}") as r:
            assert r.status == 200
        for path in ("/rtc/v1", "/rtc/v1/validate"):  # no join_request
            async with http.get(f"{server.url}{path}?access_token={good}") as r:
                assert r.status == 400 and "invalid join request" in await r.text()
        async with http.get(f"{server.url}/rtc?{QUERY}&access_token=forged.token.x") as r:
            assert r.status == 401 and "invalid token" in await r.text()

        alice = await http.ws_connect(
            f"{ws_url}/rtc?{QUERY}", headers={"Authorization": f"Bearer {good}"}
        )
        join = await _next(alice, "join")
        assert join.participant.identity == "alice" and join.room.name == "r1"
        assert join.ping_interval > 0 and join.ping_timeout > 0 and join.server_version
        offer = await _next(alice, "offer")
        assert "m=application" in offer.sdp  # the data channels
        # another room, with a participant of its own
        bob = await http.ws_connect(f"{ws_url}/rtc?{QUERY}&access_token={token('bob', 'r2')}")
        await _next(bob, "join")

        # malformed protobuf, an unknown field, an empty frame, a text frame: dropped
        await alice.send_bytes(b"\xff\xff\xff\xff")
        await alice.send_bytes(b"\x82")
        await alice.send_bytes(b"\xf8\x07\x01")  # field 127 (unknown), varint: no message set
        await alice.send_bytes(b"")
        await alice.send_str('{"type": "join"}')
        unknown = rtc.SignalRequest(simulate=rtc.SimulateScenario(node_failure=True))
        await alice.send_bytes(unknown.SerializeToString())  # a known type it ignores
        bad_trickle = rtc.SignalRequest(trickle=rtc.TrickleRequest(candidateInit="{not json"))
        await alice.send_bytes(bad_trickle.SerializeToString())
        await _ping(alice, 42)  # still served
        await alice.send_bytes(rtc.SignalRequest(ping=77).SerializeToString())  # legacy ping
        assert await _next(alice, "pong") > 0

        # participant versions only grow, for every update a client gets
        dave = await http.ws_connect(f"{ws_url}/rtc?{QUERY}&access_token={token('dave', 'r1')}")
        await _next(dave, "join")
        joined = await _next(alice, "update")
        await dave.send_bytes(rtc.SignalRequest(leave=rtc.LeaveRequest()).SerializeToString())
        left = await _next(alice, "update")
        (before,), (after,) = joined.participants, left.participants
        assert before.identity == after.identity == "dave"
        assert after.state == models.ParticipantInfo.State.DISCONNECTED
        assert after.version > before.version > 0
        await dave.close()
        room = server.sfu.room("r1")
        assert room is not None and len(room.participants) == 1

        # a resume with a token for another room does not get alice's participant
        sid = join.participant.sid
        thief = await http.ws_connect(
            f"{ws_url}/rtc?{QUERY}&reconnect=1&sid={sid}&access_token={token('alice', 'r2')}"
        )
        leave = await _next(thief, "leave")
        assert leave.action == rtc.LeaveRequest.Action.RECONNECT
        assert leave.reason == models.DisconnectReason.STATE_MISMATCH
        await thief.close()
        assert room.participants[sid].identity == "alice"
        await _ping(alice, 43)

        # an oversized frame closes that socket (1009), nothing else
        await alice.send_bytes(b"\x00" * (server.config.max_message_bytes + 1))
        msg = await alice.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.BINARY:
            msg = await alice.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert alice.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await _ping(bob, 44)  # the other room is unaffected

        # a flood of garbage ends only that connection
        carol = await http.ws_connect(f"{ws_url}/rtc?{QUERY}&access_token={token('carol', 'r2')}")
        await _next(carol, "join")
        for _ in range(30):
            await carol.send_bytes(b"\xff\xff")
        msg = await carol.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.BINARY:
            msg = await carol.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await _ping(bob, 45)
        r2 = server.sfu.room("r2")
        assert r2 is not None and [p.identity for p in r2.participants.values()] == ["bob"]
        async with http.get(f"{server.url}/healthz") as r:
            assert r.status == 200
        # a feature's join rule (breakout rooms: entered only by a move) holds for LiveKit too
        from signaling.protocol import ProtocolError
        from signaling.session import JOIN_GUARDS

        def closed_door(session, room) -> None:
            if room.name == "closed-door":
                raise ProtocolError("not_found", "entered only when a host moves you")

        JOIN_GUARDS.append(closed_door)
        try:
            refused = await http.ws_connect(
                f"{ws_url}/rtc?{QUERY}&access_token={token('erin', 'closed-door')}"
            )
            leave = await _next(refused, "leave")
            assert leave.reason == models.DisconnectReason.JOIN_FAILURE
            await refused.close()
        finally:
            JOIN_GUARDS.remove(closed_door)
        room3 = server.sfu.room("closed-door")
        assert room3 is None or not room3.participants

        # the server shutting down tells the client why (it does not try to resume)
        from signaling import livekit as lk_signaling

        bob_sid = next(iter(r2.participants))
        await lk_signaling.SESSIONS[bob_sid].close("server_shutdown")
        leave = await _next(bob, "leave")
        assert leave.reason == models.DisconnectReason.SERVER_SHUTDOWN
        assert not leave.can_reconnect
        await bob.close()


async def test_livekit_v1_bad_join_requests_are_refused_and_harmless():
    """/rtc/v1 (one peer connection): a join_request that is not base64url, not gzip, not a
    WrappedJoinRequest or holds no JoinRequest, or inflates beyond the limit, is refused
    with 400 and the reason (at /rtc/v1 and at /rtc/v1/validate, where livekit-client reads
    it); an SDK not served on v1 gets 404 (it falls back to /rtc); a bad token 401; a v1
    resume with a token for another room, or of a participant on two connections, gets
    leave{RECONNECT}; a garbage offer is dropped; and the server and its rooms go on."""
    async with LocalServer() as server, aiohttp.ClientSession() as http:
        ws_url = server.url.replace("http://", "ws://")
        good = livekit_token(KEY, SECRET, "alice", "r1")

        async def refused(join_request: str, status: int, reason: str, token: str = good) -> None:
            for path in ("/rtc/v1", "/rtc/v1/validate"):
                url = f"{server.url}{path}?access_token={token}&join_request={join_request}"
                async with http.get(url) as r:
                    text = await r.text()
                    assert r.status == status and reason in text, (path, r.status, text)

        bad_wrapped = base64.urlsafe_b64encode(b"\xff\xff\xff").decode()
        garbage_join = _join_request(gzipped=False, inner=b"\xff\xff\xff")
        not_gzip = _join_request(inner=b"this is not gzip")
        bomb = _join_request(inner=gzip.compress(b"\x00" * 1_000_000))  # ~1 KiB sent
        await refused("!!!not-base64!!!", 400, "not base64url")
        await refused(bad_wrapped, 400, "not a WrappedJoinRequest")
        await refused(not_gzip, 400, "not gzip")
        await refused(garbage_join, 400, "does not hold a JoinRequest")
        await refused(bomb, 400, "too large")
        await refused(_join_request(sdk=models.ClientInfo.SDK.PYTHON), 404, "use /rtc")
        await refused(_join_request(), 401, "invalid token", token="forged.token.x")
        url = f"{server.url}/rtc/v1/validate?access_token={good}&join_request={_join_request()}"
        async with http.get(url) as r:
            assert r.status == 200

        # a v1 join (no offer with it: the client offers after, as Firefox does)
        alice = await http.ws_connect(
            f"{ws_url}/rtc/v1?access_token={good}&join_request={_join_request()}"
        )
        join = await _next(alice, "join")
        assert join.participant.identity == "alice" and not join.subscriber_primary
        offer = rtc.SessionDescription(type="offer", sdp="v=0\r\nm=garbage\r\n", id=1)
        await alice.send_bytes(rtc.SignalRequest(offer=offer).SerializeToString())
        answer = rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=1)
        await alice.send_bytes(rtc.SignalRequest(answer=answer).SerializeToString())
        await _ping(alice, 1)  # refused, dropped: still served
        # a participant on two connections elsewhere
        bob_token = livekit_token(KEY, SECRET, "bob", "r2")
        bob = await http.ws_connect(f"{ws_url}/rtc?{QUERY}&access_token={bob_token}")
        bob_join = await _next(bob, "join")

        # resumes that cannot be served: alice's sid with a token for another room, and bob's
        # (two connections) on /rtc/v1
        sid = join.participant.sid
        for token, who in (
            (livekit_token(KEY, SECRET, "alice", "r2"), sid),
            (bob_token, bob_join.participant.sid),
        ):
            jr = _join_request(reconnect=True, sid=who)
            thief = await http.ws_connect(f"{ws_url}/rtc/v1?access_token={token}&join_request={jr}")
            leave = await _next(thief, "leave")
            assert leave.action == rtc.LeaveRequest.Action.RECONNECT
            assert leave.reason == models.DisconnectReason.STATE_MISMATCH
            await thief.close()
        room = server.sfu.room("r1")
        assert room is not None and room.participants[sid].identity == "alice"
        assert room.participants[sid].single is not None
        await _ping(alice, 2)
        await _ping(bob, 3)
        async with http.get(f"{server.url}/healthz") as r:
            assert r.status == 200
        await alice.close()
        await bob.close()


async def test_a_livekit_join_names_the_turn_servers_with_credentials():
    """LiveKit's SDKs take their ICE servers from the JoinResponse: the TURN servers the
    operator configured, with this participant's own time-limited credentials (as /rtc's
    joined.iceServers; tests/browser/test_turn.py relays through coturn with them)."""
    settings = {"turn_urls": ["turn:turn.example.org:3478"], "turn_secret": "s" * 32}
    async with LocalServer(**settings) as server, aiohttp.ClientSession() as http:
        ws_url = server.url.replace("http://", "ws://")
        token = livekit_token(KEY, SECRET, "alice", "turned")
        async with http.ws_connect(f"{ws_url}/rtc?{QUERY}&access_token={token}") as ws:
            join = await _next(ws, "join")
        (server_entry,) = join.ice_servers
        assert list(server_entry.urls) == ["turn:turn.example.org:3478"]
        assert server_entry.username.count(":") == 1 and server_entry.credential
        # its socket dropped, it resumes: the ReconnectResponse names them again (the SDK
        # takes its ICE servers from it: without them it would lose the relay on a blip)
        sid = join.participant.sid
        url = f"{ws_url}/rtc?{QUERY}&reconnect=1&sid={sid}&access_token={token}"
        async with http.ws_connect(url) as ws:
            reconnect = await _next(ws, "reconnect")
        (again,) = reconnect.ice_servers
        assert list(again.urls) == ["turn:turn.example.org:3478"] and again.credential


async def test_a_stopping_server_tells_livekit_clients_to_reconnect_and_nobody_left():
    """A server that stops sends each LiveKit client a leave (SERVER_SHUTDOWN, action
    RECONNECT: the SDK joins again once the server is back), and before it no update showing
    the others disconnected as the server removes them one by one (the JSON clients' 1012:
    tests/e2e/test_server_restart.py). One of them was being removed when the server stopped:
    it is told the same, at once."""
    from signaling import livekit as lk_signaling

    server = LocalServer()
    await server.__aenter__()
    async with aiohttp.ClientSession() as http:
        ws_url = server.url.replace("http://", "ws://")
        sockets = []
        try:
            for name in ("alice", "bob", "carol"):
                token = livekit_token(KEY, SECRET, name, "stopping")
                ws = await http.ws_connect(f"{ws_url}/rtc?{QUERY}&access_token={token}")
                sockets.append(ws)
                sid = (await _next(ws, "join")).participant.sid
            removing = asyncio.ensure_future(lk_signaling.SESSIONS[sid].close("removed"))
            await asyncio.sleep(0)  # (carol's removal under way: going_away comes during it)
        finally:
            started = asyncio.get_running_loop().time()
            await server.__aexit__(None, None, None)
            stopping = asyncio.get_running_loop().time() - started
        await removing
        assert stopping < 1.5, stopping  # nobody's writer waited out its 2 s
        for ws in sockets:
            told = []
            while True:
                msg = await ws.receive(timeout=5)
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                response = rtc.SignalResponse()
                response.ParseFromString(msg.data)
                told.append(response)
            kinds = [r.WhichOneof("message") for r in told]
            assert kinds and kinds[-1] == "leave", kinds
            leave = told[-1].leave
            assert leave.reason == models.DisconnectReason.SERVER_SHUTDOWN, leave
            assert leave.action == rtc.LeaveRequest.Action.RECONNECT, leave
            assert leave.can_reconnect  # (what SDKs from before ``action`` read)
            gone = [
                p.identity
                for r in told
                if r.WhichOneof("message") == "update"
                for p in r.update.participants
                if p.state == models.ParticipantInfo.State.DISCONNECTED
            ]
            assert not gone, gone
            await ws.close()
