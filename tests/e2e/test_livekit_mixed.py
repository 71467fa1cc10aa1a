"""One room, two protocols: a LiveKit SDK participant (Python livekit, protobuf signaling and
data channels) and a visio-sfu JSON participant (visio_client, aiortc) see and hear each other,
chat both ways (JSON chat <-> LiveKit's lk.chat text streams) and exchange application data
(JSON data <-> LiveKit user packets), as docs/livekit.md describes."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("livekit.rtc")

from tests.support.inprocess import KEY, SECRET, LocalServer  # noqa: E402
from tests.support.lkdrive import LiveKitPeers, livekit_token  # noqa: E402
from tests.support.media import until  # noqa: E402
from visio_client import Client  # noqa: E402
from visio_client.media import PatternVideoTrack, ToneAudioTrack  # noqa: E402

pytestmark = pytest.mark.timeout(120)


async def test_livekit_and_json_participants_in_one_room():
    async with LocalServer() as server, LiveKitPeers(server.url) as lk:
        web = Client(server.url, server.token("mixed", "web", "Web User"))
        try:
            await web.connect()
            await web.publish(PatternVideoTrack(1), ToneAudioTrack(1))
            token = livekit_token(KEY, SECRET, "lk", "mixed", name="LiveKit User")
            lk_sid = (
                await lk.cmd(
                    "join", name="lk", token=token, video=True, audio=True, text_topic="lk.chat"
                )
            )["sid"]

            # media both ways
            await lk.until(
                lambda s: (
                    s["lk"]["video"].get("web", 0) >= 15 and s["lk"]["audio"].get("web", 0) >= 50
                ),
                30,
                "the JSON participant's video and audio at the LiveKit participant",
            )
            video = await until(
                lambda: next(
                    (
                        t
                        for t in web.remote_tracks
                        if t.participant_sid == lk_sid and t.kind == "video"
                    ),
                    None,
                ),
                20,
                what="the LiveKit participant's video at the JSON participant",
            )
            audio = next(
                t for t in web.remote_tracks if t.participant_sid == lk_sid and t.kind == "audio"
            )
            sizes = set()
            for _ in range(10):
                frame = await asyncio.wait_for(video.track.recv(), 10)
                sizes.add((frame.width, frame.height))
            assert sizes == {(320, 240)}
            for _ in range(20):
                await asyncio.wait_for(audio.track.recv(), 10)

            # chat: JSON -> LiveKit (an lk.chat text stream), LiveKit -> JSON ('chat')
            await web.request({"type": "data", "topic": "chat", "payload": {"text": "salut lk"}})
            await lk.until(
                lambda s: (
                    {"from": "web", "text": "salut lk", "topic": "lk.chat"} in s["lk"]["texts"]
                ),
                10,
                "the JSON chat message as a LiveKit text stream",
            )
            await lk.cmd("text", name="lk", text="salut web", topic="lk.chat")
            chat = await web.wait_for(
                lambda m: m.get("type") == "data" and m.get("topic") == "chat", 10
            )
            assert chat["payload"]["text"] == "salut web"
            assert chat["from"]["identity"] == "lk" and chat["from"]["sid"] == lk_sid

            # application data: JSON -> LiveKit user packet, LiveKit user packet -> JSON
            await web.request({"type": "data", "topic": "app", "payload": {"y": 2}})
            await lk.until(
                lambda s: (
                    {"from": "web", "payload": '{"y":2}', "topic": "app", "reliable": True}
                    in s["lk"]["data"]
                ),
                10,
                "JSON data as a user packet",
            )
            await lk.cmd("data", name="lk", payload='{"x": 1}', topic="app", reliable=True)
            app = await web.wait_for(
                lambda m: m.get("type") == "data" and m.get("topic") == "app", 10
            )
            assert app["payload"] == {"x": 1} and app["from"]["identity"] == "lk"
            await lk.cmd("data", name="lk", payload="plain words", topic="chat")
            chat2 = await web.wait_for(
                lambda m: (
                    m.get("type") == "data" and m.get("payload", {}).get("text") == "plain words"
                ),
                10,
            )
            assert chat2["topic"] == "chat"
        finally:
            await web.close()
