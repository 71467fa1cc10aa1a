"""WHIP ingest and WHEP playback (signaling/whip.py) with aiortc peers over DTLS-SRTP on
127.0.0.1, speaking plain HTTP to a real server: an encoder publishes over WHIP and a meeting
participant decodes it; a player pulls a participant's video and audio over WHEP; DELETE ends
each (the others are told); a PATCH with new ICE credentials restarts ICE; and every refusal
has its HTTP status, without a participant left behind or another room disturbed."""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp
import numpy as np
import pytest
from aioice import stun
from aiortc import RTCPeerConnection, RTCSessionDescription

from signaling.app import UDP_MUX
from signaling.whip import INGEST
from tests.support.inprocess import LocalServer
from tests.support.media import check_audio, check_video, until
from visio_client import Client
from visio_client.media import PatternVideoTrack, ToneAudioTrack, audio_samples, tone_index
from visio_sfu.transport import PeerTransport

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio]

OFFER_MIN = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


async def post(url: str, token: str | None, body: str, content_type: str = "application/sdp"):
    """POST ``body``; returns (status, headers, text)."""
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status, r.headers, await r.text()


async def call(method: str, url: str, token: str | None, body: str = "", ctype: str = ""):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if ctype:
        headers["Content-Type"] = ctype
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, data=body or None, headers=headers) as r,
    ):
        return r.status, await r.text()


async def patch_fragment(url: str, token: str, fragment: str, if_match: str):
    """PATCH an sdpfrag with If-Match; returns (status, headers, text)."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/trickle-ice-sdpfrag",
        "If-Match": if_match,
    }
    async with (
        aiohttp.ClientSession() as http,
        http.patch(url, data=fragment, headers=headers) as r,
    ):
        return r.status, r.headers, await r.text()


async def whip_offer(*tracks) -> RTCPeerConnection:
    """An aiortc peer sending ``tracks``, its offer made (aiortc gathers every candidate)."""
    pc = RTCPeerConnection()
    for track in tracks:
        pc.addTransceiver(track, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc


@dataclass
class WhepPlayer:
    """An aiortc WHEP player: its connection, the session's URL and token, the answer."""

    pc: RTCPeerConnection
    location: str
    token: str
    answer: str
    tracks: dict[str, object] = field(default_factory=dict)  # kind -> the track received

    def remote(self, kind: str) -> object:
        """What check_video and check_audio take: ``.track``, the track of ``kind``."""
        return type("R", (), {"track": self.tracks[kind]})


async def whep_player(
    server: LocalServer, room: str, identity: str, name: str = "", kinds=("video", "audio")
) -> WhepPlayer:
    """A player with a receive-only section of each of ``kinds``: its offer POSTed to
    /whep/<room> (201 asserted), the answer applied, a receiver for each section come."""
    pc = RTCPeerConnection()
    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    tracks: dict[str, object] = {}
    pc.on("track", lambda track: tracks.__setitem__(track.kind, track))
    await pc.setLocalDescription(await pc.createOffer())
    token = server.token(room, identity, name)
    status, headers, answer = await post(
        f"{server.url}/whep/{quote(room, safe='')}", token, pc.localDescription.sdp
    )
    assert status == 201, answer
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await until(lambda: len(tracks) == len(kinds), what="the player's receivers")
    return WhepPlayer(pc, headers["Location"], token, answer, tracks)


async def test_whip_publish_is_seen_in_the_meeting_then_deleted():
    async with LocalServer() as server:
        viewer = Client(server.url, server.token("show", "viewer", "Viewer"))
        await viewer.connect()
        encoder = await whip_offer(PatternVideoTrack(3), ToneAudioTrack(3))
        token = server.token("show", "obs", "Studio encoder")
        status, headers, answer = await post(
            f"{server.url}/whip/show", token, encoder.localDescription.sdp
        )
        assert status == 201, answer
        assert headers["Content-Type"].startswith("application/sdp")
        location = headers["Location"]
        assert location.startswith("/whip/show/")
        assert "a=candidate:" in answer  # every candidate in the answer: no trickle needed
        await encoder.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        # the meeting sees a participant of the token's identity and name, and its media
        room = server.sfu.room("show")
        obs = room.by_identity("obs")
        assert obs is not None and obs.name == "Studio encoder"
        await until(lambda: len(viewer.remote_tracks) == 2, what="the WHIP tracks reach the viewer")
        video = next(t for t in viewer.remote_tracks if t.kind == "video")
        audio = next(t for t in viewer.remote_tracks if t.kind == "audio")
        await check_video(video, 3)
        await check_audio(audio, 3)
        # a trickled candidate (a fragment of the same ICE session) is taken
        frag = (
            "a=ice-ufrag:"
            + encoder.localDescription.sdp.split("a=ice-ufrag:")[1].split()[0]
            + "\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
        )
        status, text = await call(
            "PATCH", server.url + location, token, frag, "application/trickle-ice-sdpfrag"
        )
        assert status == 204, text
        # DELETE: the encoder leaves, the viewer's tracks go
        status, _ = await call("DELETE", server.url + location, token)
        assert status == 200
        await until(lambda: room.by_identity("obs") is None, what="the encoder leaves")
        await until(lambda: not viewer.remote_tracks, what="its tracks leave the viewer")
        status, _ = await call("DELETE", server.url + location, token)
        assert status == 404
        await encoder.close()
        await viewer.close()


async def test_whep_plays_a_participant():
    async with LocalServer() as server:
        speaker = Client(server.url, server.token("talk", "speaker", "Speaker"))
        await speaker.connect()
        await speaker.publish(PatternVideoTrack(5), ToneAudioTrack(5))
        player = await whep_player(server, "talk", "player", "Lobby screen")
        assert player.location.startswith("/whep/talk/")
        await check_video(player.remote("video"), 5)
        await check_audio(player.remote("audio"), 5)
        status, _ = await call("DELETE", server.url + player.location, player.token)
        assert status == 200
        await until(lambda: server.sfu.room("talk").by_identity("player") is None, what="gone")
        await player.pc.close()
        await speaker.close()


async def test_refusals_have_their_http_status():
    async with LocalServer() as server:
        # a meeting in another room goes on throughout
        other = Client(server.url, server.token("other", "bystander"))
        await other.connect()
        encoder = await whip_offer(PatternVideoTrack(1))
        offer = encoder.localDescription.sdp
        url = f"{server.url}/whip/show"
        token = server.token("show", "obs")
        assert (await post(url, None, offer))[0] == 401
        assert (await post(url, "not.a.token", offer))[0] == 401
        assert (await post(url, server.token("elsewhere", "obs"), offer))[0] == 403
        assert (await post(url, server.token("show", "obs", can_publish=False), offer))[0] == 403
        whep = f"{server.url}/whep/show"
        assert (await post(whep, server.token("show", "p", can_subscribe=False), offer))[0] == 403
        assert (await post(url, token, offer, "application/json"))[0] == 415
        assert (await post(url, token, "hello"))[0] == 400
        assert (await post(url, token, OFFER_MIN + "m=audio 9 x\r\n"))[0] == 400
        assert (await post(url, token, offer + "a=x:" + "y" * 70_000 + "\r\n"))[0] == 413
        # a player's offer to WHIP (it sends nothing), an encoder's to WHEP (it receives nothing)
        player = RTCPeerConnection()
        player.addTransceiver("video", direction="recvonly")
        await player.setLocalDescription(await player.createOffer())
        status, _, text = await post(url, token, player.localDescription.sdp)
        assert status == 400 and "sends nothing" in text
        status, _, text = await post(whep, token, offer)
        assert status == 400 and "receives nothing" in text
        room = server.sfu.room("show")
        assert room is None or not room.participants  # nobody left behind by a refusal
        # a session: only its owner ends it or trickles to it
        status, headers, answer = await post(url, token, offer)
        assert status == 201
        await encoder.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        session = server.url + headers["Location"]
        mallory = server.token("show", "mallory")
        assert (await call("DELETE", session, mallory))[0] == 403
        assert (await call("DELETE", session, None))[0] == 401
        assert (await call("DELETE", session + "x", token))[0] == 404
        assert (await call("DELETE", session.replace("/whip/", "/whep/"), token))[0] == 404
        frag = "a=ice-ufrag:other\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n"
        status, _ = await call("PATCH", session, mallory, frag, "application/trickle-ice-sdpfrag")
        assert status == 403
        status, text = await call("PATCH", session, token, frag, "application/trickle-ice-sdpfrag")
        assert status == 400 and "ice-pwd" in text  # another ufrag (a restart) with no password
        status, _ = await call("PATCH", session, token, frag, "application/sdp")
        assert status == 415
        status, _, _ = await patch_fragment(session, token, frag, '"another-state"')
        assert status == 412  # RFC 9725: a fragment for another state of the session
        assert server.sfu.room("show").by_identity("obs") is not None  # still publishing
        assert (await call("DELETE", session, token))[0] == 200
        # the other room was never touched
        assert [p.identity for p in server.sfu.room("other").participants.values()] == ["bystander"]
        await encoder.close()
        await player.close()
        await other.close()


async def test_an_encoder_closing_without_delete_leaves():
    """An encoder that closes its connection without a DELETE (OBS stopped, a crash that
    closes the socket) leaves the room: nothing else would ever say so. Its session URL
    answers 404 afterwards."""
    async with LocalServer() as server:
        encoder = await whip_offer(PatternVideoTrack(2))
        token = server.token("show", "obs")
        status, headers, answer = await post(
            f"{server.url}/whip/show", token, encoder.localDescription.sdp
        )
        assert status == 201
        await encoder.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        room = server.sfu.room("show")
        transport = room.by_identity("obs").publishing.transport
        await until(lambda: transport.state == "connected", what="connected")
        await encoder.close()  # gone without a DELETE
        await until(lambda: room.by_identity("obs") is None, what="removed")
        status, _ = await call("DELETE", server.url + headers["Location"], token)
        assert status == 404
        await asyncio.sleep(0)


async def until_tone(track, expected: int, frames: int = 400) -> None:
    """Read audio frames until 0.5 s of them carry tone ``expected`` (frames queued earlier,
    of another tone or silence, are read first)."""
    recent: list = []
    for _ in range(frames):
        recent.append(audio_samples(await asyncio.wait_for(track.recv(), 10)))
        recent = recent[-25:]
        if len(recent) == 25 and tone_index(np.concatenate(recent), rate=48000) == expected:
            return
    raise AssertionError(f"tone {expected} never came")


async def test_a_whep_player_gets_tracks_published_after_it_came():
    """A player that came first (an empty room, as before a broadcast starts) gets the
    publisher's tracks when they come, in the sections it offered, without offering again;
    the publisher replaced by another (an encoder restarted), the sections carry the new one."""
    async with LocalServer() as server:
        player = await whep_player(server, "live", "screen")
        # sending from the first answer, nothing yet
        assert player.answer.count("a=sendonly") == 2
        video = player.remote("video")
        for colour in (1, 4):  # the first broadcaster, then its replacement
            encoder = await whip_offer(PatternVideoTrack(colour), ToneAudioTrack(colour))
            status, where, answer = await post(
                f"{server.url}/whip/live",
                server.token("live", f"encoder{colour}"),
                encoder.localDescription.sdp,
            )
            assert status == 201
            await encoder.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            # (what the receivers queued before is read first: the new one comes after)
            await check_video(video, colour, frames=60)
            await until_tone(player.tracks["audio"], colour)
            status, _ = await call(
                "DELETE", server.url + where["Location"], server.token("live", f"encoder{colour}")
            )
            assert status == 200
            await encoder.close()
        session = next(iter(server.app[INGEST].sessions.values()))
        assert session.kind == "whep" and session.refills >= 2
        await player.pc.close()


async def test_a_session_that_never_connects_is_ended(monkeypatch):
    """A client that gets its answer and never connects (it crashed, or its network blocks
    UDP and it has no TURN) has no signaling channel to leave by: CONNECT_TIMEOUT later its
    participant is gone and its URL answers 404."""
    from signaling import whip

    monkeypatch.setattr(whip, "CONNECT_TIMEOUT", 1.5)
    async with LocalServer() as server:
        encoder = await whip_offer(PatternVideoTrack(2))
        token = server.token("show", "ghost")
        status, headers, _answer = await post(
            f"{server.url}/whip/show", token, encoder.localDescription.sdp
        )
        assert status == 201
        await encoder.close()  # the answer never applied: no ICE from this side
        room = server.sfu.room("show")
        assert room.by_identity("ghost") is not None
        await until(lambda: room.by_identity("ghost") is None, timeout=10, what="ended")
        assert (await call("DELETE", server.url + headers["Location"], token))[0] == 404


async def test_cross_origin_players_and_odd_room_names():
    """A player on another origin may read the answer and its headers (CORS: the token is a
    bearer header, no cookie); a room name with a space or a '?' gives a Location that works;
    offers a session cannot use are refused: a WHEP offer that sends, one without a DTLS
    fingerprint."""
    async with LocalServer() as server:
        async with (
            aiohttp.ClientSession() as http,
            http.options(
                f"{server.url}/whip/a%20b", headers={"Origin": "https://player.example"}
            ) as r,
        ):
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
            assert r.headers["Accept-Post"] == "application/sdp"
        for room in ("a b", "what?"):
            encoder = await whip_offer(PatternVideoTrack(1))
            token = server.token(room, "enc")
            url = f"{server.url}/whip/{quote(room, safe='')}"
            status, headers, answer = await post(url, token, encoder.localDescription.sdp)
            assert status == 201, answer
            assert headers["Access-Control-Allow-Origin"] == "*"
            assert "Location" in headers["Access-Control-Expose-Headers"]
            assert (
                headers["Location"]
                == f"/whip/{quote(room, safe='')}/" + headers["Location"].rsplit("/", 1)[1]
            )
            await encoder.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            assert (await call("DELETE", server.url + headers["Location"], token))[0] == 200
            assert server.sfu.room(room) is None or server.sfu.room(room).by_identity("enc") is None
            await encoder.close()
        pasted = await whip_offer(PatternVideoTrack(1))  # a URL pasted with its slash
        token = server.token("slash", "enc")
        status, headers, _ = await post(
            f"{server.url}/whip/slash/", token, pasted.localDescription.sdp
        )
        assert status == 201 and headers["Location"].startswith("/whip/slash/")
        assert (await call("DELETE", server.url + headers["Location"], token))[0] == 200
        await pasted.close()
        sender = await whip_offer(PatternVideoTrack(1))
        offer = sender.localDescription.sdp
        token = server.token("x", "p")
        status, headers, text = await post(f"{server.url}/whep/x", token, offer)
        assert status == 400 and headers["Access-Control-Allow-Origin"] == "*", text
        no_fingerprint = "\r\n".join(
            line for line in offer.split("\r\n") if not line.startswith("a=fingerprint")
        )
        status, _, text = await post(f"{server.url}/whip/x", token, no_fingerprint)
        assert status == 400 and "fingerprint" in text
        room = server.sfu.room("x")
        assert room is None or not room.participants
        await sender.close()


async def test_a_whep_player_moves_to_the_next_track_when_its_own_goes():
    """Two broadcasters in the room, one section of each kind offered: the player gets the
    first; when that one leaves, the other's tracks take its sections (a track waiting while
    another section is freed), without the player offering again."""
    async with LocalServer() as server:
        encoders = []
        for colour in (1, 4):
            enc = await whip_offer(PatternVideoTrack(colour), ToneAudioTrack(colour))
            token = server.token("two", f"enc{colour}")
            status, where, answer = await post(
                f"{server.url}/whip/two", token, enc.localDescription.sdp
            )
            assert status == 201
            await enc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            encoders.append((enc, token, where["Location"]))
            await until(
                lambda c=colour: server.sfu.room("two").by_identity(f"enc{c}").tracks,
                what="published",
            )
        player = await whep_player(server, "two", "screen")
        video = player.remote("video")
        await check_video(video, 1, frames=30)  # the first broadcaster
        enc, token, location = encoders[0]
        assert (await call("DELETE", server.url + location, token))[0] == 200
        await enc.close()
        await check_video(video, 4, frames=60)  # the other one, in the same sections
        await until_tone(player.tracks["audio"], 4)
        await player.pc.close()
        await encoders[1][0].close()


async def test_a_whep_player_gets_a_live_camera_not_a_muted_one():
    """Two cameras in the room, the first one muted: a player with one video section gets
    the live one; when that one is muted in turn and the other unmuted, the player moves
    to the live one, without offering again."""
    async with LocalServer() as server:
        cameras = []
        for colour in (1, 4):
            cam = Client(server.url, server.token("cams", f"cam{colour}", f"Camera {colour}"))
            await cam.connect()
            (video_info,) = await cam.publish(PatternVideoTrack(colour))
            cameras.append((cam, video_info["sid"]))
            if colour == 1:  # the first come, muted
                await cam.request({"type": "mute", "track": video_info["sid"], "muted": True})
        room = server.sfu.room("cams")
        await until(lambda: len(room.by_identity("cam4").tracks) == 1, what="published")
        player = await whep_player(server, "cams", "screen", kinds=("video",))
        video = player.remote("video")
        await check_video(video, 4, frames=30)  # the live camera, not the muted first one
        (cam1, sid1), (cam4, sid4) = cameras
        await cam1.request({"type": "mute", "track": sid1, "muted": False})
        await cam4.request({"type": "mute", "track": sid4, "muted": True})
        await check_video(video, 1, frames=60)  # the live one again, in the same section
        await player.pc.close()
        for cam, _sid in cameras:
            await cam.close()


def stun_check(ufrag: str, pwd: str, theirs: str) -> bytes:
    """A STUN binding request as an ICE check to the server: USERNAME ours:theirs, signed."""
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = f"{ufrag}:{theirs}"
    message.attributes["PRIORITY"] = 1
    message.attributes["ICE-CONTROLLING"] = 1
    message.add_message_integrity(pwd.encode())
    message.add_fingerprint()
    return bytes(message)


def answered(sock: socket.socket, request: bytes, target: tuple) -> str:
    """What the server answers a check: "success", "error" or "nothing"."""
    sock.sendto(request, target)
    try:
        data, _ = sock.recvfrom(2048)
    except TimeoutError:
        return "nothing"
    reply = stun.parse_message(data)
    return "success" if reply.message_class == stun.Class.RESPONSE else "error"


async def test_a_patch_with_new_credentials_restarts_ice():
    """RFC 9725 section 4.4.1: a PATCH whose fragment has a new ice-ufrag and ice-pwd is an
    ICE restart: 200 with the server's new credentials and candidates (and a new ETag); the
    server's checks then need the new credentials, the old ones are refused; the session and
    its media go on. (A real client's restart: tests/browser/test_whip_browser.py.)"""
    async with LocalServer() as server:
        viewer = Client(server.url, server.token("restart", "viewer"))
        await viewer.connect()
        encoder = await whip_offer(PatternVideoTrack(3))
        token = server.token("restart", "obs")
        status, headers, answer = await post(
            f"{server.url}/whip/restart", token, encoder.localDescription.sdp
        )
        assert status == 201
        await encoder.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await until(lambda: viewer.remote_tracks, what="the viewer gets the encoder")
        await check_video(viewer.remote_tracks[0], 3)
        old_ufrag = re.search(r"a=ice-ufrag:(\S+)", answer).group(1)
        old_pwd = re.search(r"a=ice-pwd:(\S+)", answer).group(1)
        session = server.url + headers["Location"]
        frag = (
            "a=ice-ufrag:newfrag1\r\na=ice-pwd:" + "n" * 24 + "\r\n"
            "m=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
            "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
        )
        status, patched, body = await patch_fragment(session, token, frag, "*")
        assert status == 200, body
        assert patched["Content-Type"].startswith("application/trickle-ice-sdpfrag")
        assert patched["ETag"] != headers["ETag"]
        ufrag = re.search(r"a=ice-ufrag:(\S+)", body).group(1)
        pwd = re.search(r"a=ice-pwd:(\S+)", body).group(1)
        assert (ufrag, pwd) != (old_ufrag, old_pwd) and "a=mid:0" in body
        port = server.app[UDP_MUX].port
        assert re.search(rf"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 {port} typ host", body), body
        # the server's checks now take the new credentials only
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(1.0)
        target = ("127.0.0.1", port)
        try:
            old = await asyncio.to_thread(
                answered, sock, stun_check(old_ufrag, old_pwd, "newfrag1"), target
            )
            new = await asyncio.to_thread(
                answered, sock, stun_check(ufrag, pwd, "newfrag1"), target
            )
        finally:
            sock.close()
        assert (old, new) == ("nothing", "success")
        # candidates of the generation before, late (another HTTP connection): ignored, no
        # restart back to it
        encoder_ufrag = re.search(r"a=ice-ufrag:(\S+)", encoder.localDescription.sdp).group(1)
        restarts = PeerTransport.ice_restarts_total
        late = f"a=ice-ufrag:{encoder_ufrag}\r\na=ice-pwd:{'o' * 24}\r\na=mid:0\r\n"
        late += "a=candidate:2 1 udp 1 127.0.0.1 9 typ host\r\n"
        status, _ = await call("PATCH", session, token, late, "application/trickle-ice-sdpfrag")
        assert status == 204 and PeerTransport.ice_restarts_total == restarts
        # the session goes on: the viewer still decodes the encoder's video
        await check_video(viewer.remote_tracks[0], 3)
        assert server.sfu.room("restart").by_identity("obs") is not None
        await encoder.close()
        await viewer.close()
