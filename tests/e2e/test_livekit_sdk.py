"""LiveKit's Python SDK (rtc.Room, libwebrtc inside) on visio-sfu: three participants in one room
see and hear each other, exchange reliable and lossy data packets and chat (text streams), see
mutes and a departure; one whose WebSocket the server cuts resumes with the same sid and keeps
its tracks. The SDK runs in a process of its own (tests/support/livekit_peers.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("livekit.rtc")

from signaling import livekit as lk_signaling  # noqa: E402
from tests.support.inprocess import KEY, SECRET, LocalServer  # noqa: E402
from tests.support.lkdrive import LiveKitPeers, livekit_token  # noqa: E402

pytestmark = pytest.mark.timeout(150)


async def _until(check, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.1)


def room_tracks(server: LocalServer, sid: str) -> list:
    return list(server.sfu.room("lk-room").participants[sid].tracks.values())


def _frames(stats: dict, who: str, frm: str, kind: str = "video") -> int:
    return stats[who][kind].get(frm, 0)


async def test_three_livekit_sdk_participants(caplog):
    async with LocalServer(resume_grace=20) as server, LiveKitPeers(server.url) as lk:

        def token(identity: str) -> str:
            return livekit_token(
                KEY,
                SECRET,
                identity,
                "lk-room",
                name=identity.title(),
                attributes={"role": f"{identity}-role"},
                canPublishSources=["camera", "microphone", "screen_share"],
            )

        names = ("alice", "bob", "carol")
        sids = {}
        for i, name in enumerate(names):
            answer = await lk.cmd(
                "join",
                name=name,
                token=token(name),
                video=True,
                audio=True,
                share=i == 2,  # carol shares her screen too
                codec="vp9" if i == 0 else "vp8",  # alice: VP9 (SVC), as LiveKit apps often do
                simulcast=i == 1,  # bob: simulcast, offered f;h;q by the Rust SDK
                size=[960, 540] if i == 1 else [320, 240],
                text_topic="lk.chat",
            )
            sids[name] = answer["sid"]
            assert answer["sid"].startswith("PA_")

        def everyone_sees_everyone(s: dict, minimum: int = 10) -> bool:
            return all(
                _frames(s, a, b) >= minimum and _frames(s, a, b, "audio") >= 20
                for a in names
                for b in names
                if a != b
            )

        stats = await lk.until(everyone_sees_everyone, 45, "video and audio between all three")
        await lk.until(
            lambda s: s["alice"]["video"].get("carol:screen", 0) >= 10, 20, "carol's screen"
        )
        shared = [t for t in room_tracks(server, sids["carol"]) if t.source == "screen_share"]
        assert len(shared) == 1 and shared[0].kind == "video"
        # the token's canPublishSources, as the SDK reads them (1 camera, 2 mic, 3 screen)
        assert stats["alice"]["sources"] == [1, 2, 3]
        assert stats["alice"]["attributes"]["bob"] == {"role": "bob-role"}  # token attributes
        room = server.sfu.room("lk-room")
        bob = room.participants[sids["bob"]]
        alice_video = next(
            t for t in room.participants[sids["alice"]].tracks.values() if t.kind == "video"
        )
        assert alice_video.codec.mime == "video/VP9"  # the codec her AddTrackRequest named
        bob_video = next(t for t in bob.tracks.values() if t.kind == "video")
        assert [layer.rid for layer in bob_video.layers] == ["q", "h", "f"]  # lowest first

        # dynacast: bob is told which of his layers someone receives (subscribed_quality_update)
        bob_session = lk_signaling.SESSIONS[sids["bob"]]
        await _until(
            lambda: bob_session.sent["subscribed_quality_update"] >= 1, "a quality update", 15
        )
        # ... and his SDK stops sending a layer nobody receives, sends it again when needed
        off = [layer for layer in bob_video.layers if layer.rid not in bob_video.active_rids]
        for layer in off:
            await _until(
                lambda layer=layer: (
                    time.monotonic() - layer.last_packet > 1.5 or layer.rid in bob_video.active_rids
                ),
                f"bob's SDK stops sending layer {layer.rid}",
                10,
            )

        # manual subscription (UpdateSubscription): bob stops receiving carol's video, then
        # takes it again
        carol_video = next(
            t.sid for t in room.participants[sids["carol"]].tracks.values() if t.kind == "video"
        )
        await lk.cmd("subscribe", name="bob", identity="carol", kind="video", subscribed=False)
        await _until(lambda: carol_video not in bob.subscriber.downtracks, "bob unsubscribed")
        await lk.cmd("subscribe", name="bob", identity="carol", kind="video", subscribed=True)
        await _until(lambda: carol_video in bob.subscriber.downtracks, "bob subscribed again")
        seen = _frames(await lk.stats(), "bob", "carol")
        await lk.until(lambda s: _frames(s, "bob", "carol") > seen + 10, 20, "carol's video again")

        # subscription permissions: alice lets only bob receive her tracks, then everyone
        alice_tracks = {t.sid for t in room_tracks(server, sids["alice"])}
        carol = room.participants[sids["carol"]]
        await lk.cmd("permit", name="alice", identities=["bob"])
        await _until(
            lambda: not alice_tracks & set(carol.subscriber.downtracks), "carol loses alice's"
        )
        assert alice_tracks <= set(bob.subscriber.downtracks)
        await lk.cmd("permit", name="alice", identities=None)
        await _until(
            lambda: alice_tracks <= set(carol.subscriber.downtracks), "carol gets alice's again"
        )
        seen = _frames(await lk.stats(), "carol", "alice")
        await lk.until(lambda s: _frames(s, "carol", "alice") > seen + 10, 20, "alice's again")

        # data: reliable and lossy user packets, to everyone and to one identity; chat
        await lk.cmd("data", name="alice", payload="hello all", reliable=True, topic="chat")
        await lk.cmd("data", name="bob", payload="lossy hi", reliable=False, topic="lossy")
        await lk.cmd("data", name="carol", payload="only bob", topic="dm", to=["bob"])
        await lk.cmd("text", name="bob", text="bonjour par texte", topic="lk.chat")

        def data_seen(s: dict) -> bool:
            got = {
                n: {(d["from"], d["payload"], d["topic"], d["reliable"]) for d in s[n]["data"]}
                for n in names
            }
            lossy = ("bob", "lossy hi", "lossy", False)
            return (
                ("alice", "hello all", "chat", True) in got["bob"]
                and ("alice", "hello all", "chat", True) in got["carol"]
                and lossy in got["alice"]
                and lossy in got["carol"]
                and ("carol", "only bob", "dm", True) in got["bob"]
                and any(t["text"] == "bonjour par texte" for t in s["carol"]["texts"])
                and any(t["text"] == "bonjour par texte" for t in s["alice"]["texts"])
            )

        # (a lossy packet may be lost: on loopback it is not, and the SDK resends none)
        stats = await lk.until(data_seen, 20, "data packets")
        elsewhere = stats["alice"]["data"] + stats["carol"]["data"]
        assert not any(d["payload"] == "only bob" for d in elsewhere)
        assert not any(d["from"] == "alice" for d in stats["alice"]["data"])  # not echoed

        # mute: the others see it
        await lk.cmd("mute", name="carol", kind="audio", muted=True)
        await lk.until(
            lambda s: (
                ["carol", "audio", True] in s["alice"]["muted"]
                and ["carol", "audio", True] in s["bob"]["muted"]
            ),
            10,
            "carol's mute seen by alice and bob",
        )
        assert room.participants[sids["carol"]].tracks  # still published, muted
        assert any(t.muted for t in room.participants[sids["carol"]].tracks.values())
        await lk.cmd("mute", name="carol", kind="audio", muted=False)
        await lk.until(
            lambda s: ["carol", "audio", False] in s["bob"]["muted"], 10, "carol's unmute"
        )

        # speakers (everyone plays a tone) and connection quality, from the server
        stats = await lk.until(
            lambda s: (
                any(s["alice"]["speakers"]) and set(s["alice"]["quality"]) >= {"bob", "carol"}
            ),
            15,
            "active speakers and connection quality",
        )
        assert set(stats["alice"]["quality"].values()) <= {"QUALITY_EXCELLENT", "QUALITY_GOOD"}

        # a host or administrator mutes bob's microphone: his SDK is told (mute), all see it
        bob_mic = next(t.sid for t in bob.tracks.values() if t.kind == "audio")
        bob.set_muted(bob_mic, True, by_server=True)
        await lk.until(
            lambda s: (
                ["bob", "audio", True] in s["bob"]["muted"]
                and ["bob", "audio", True] in s["carol"]["muted"]
            ),
            10,
            "bob's microphone muted by the server, at bob and carol",
        )

        # the server cuts alice's WebSocket: her SDK resumes with the same sid and tracks
        session = lk_signaling.SESSIONS[sids["alice"]]
        before = await lk.stats()
        await session.ws.close()
        await lk.until(lambda s: s["alice"]["reconnected"] >= 1, 30, "alice resumed")
        assert lk_signaling.SESSIONS[sids["alice"]] is not session
        alice = room.participants[sids["alice"]]
        assert len(alice.tracks) == 2  # kept her tracks: not republished
        assert not room.is_suspended(alice)
        bob_from_alice = _frames(before, "bob", "alice")
        stats = await lk.until(
            lambda s: (
                _frames(s, "bob", "alice") > bob_from_alice + 15
                and _frames(s, "alice", "carol") > _frames(before, "alice", "carol") + 15
            ),
            20,
            "media both ways after alice's resume",
        )
        assert stats["alice"]["sid"] == sids["alice"]
        assert stats["bob"]["remote"] == ["alice", "carol"]  # nobody left, nobody joined twice
        await lk.cmd("data", name="alice", payload="back again", reliable=True, topic="chat")
        await lk.until(
            lambda s: any(d["payload"] == "back again" for d in s["bob"]["data"]),
            10,
            "data after the resume",
        )

        # carol stops sharing her screen (unpublish: her next offer drops the section)
        await lk.cmd("unpublish", name="carol", kind="screen")
        await lk.until(
            lambda s: (
                "carol:carol-screen" in s["alice"]["unpublished"]
                and "carol:carol-screen" in s["bob"]["unpublished"]
            ),
            15,
            "carol's screen share unpublished, at alice and bob",
        )
        await _until(
            lambda: not any(t.source == "screen_share" for t in room_tracks(server, sids["carol"])),
            "the server dropped carol's screen share",
        )

        # a departure
        await lk.cmd("leave", name="carol")
        await lk.until(
            lambda s: "carol" in s["alice"]["gone"] and "carol" in s["bob"]["gone"],
            10,
            "carol's departure",
        )
        await asyncio.sleep(0.1)
        assert sids["carol"] not in room.participants
