"""LiveKit Python SDK participants (rtc.Room, libwebrtc) driven by a test, in their own process.

Run as ``python -m tests.support.livekit_peers URL`` with one JSON command per stdin line; each
answer is one JSON line on stdout. The SDK's Rust core may abort the process at interpreter
exit ("panic in a function that cannot unwind", LIVEKIT_NOTES pitfall 1): ``quit`` ends it with
``os._exit`` after disconnecting, and keeping the SDK out of the test process keeps such an
abort from taking pytest with it.

Commands (``{"cmd": ..., ...}``):
- ``join`` name, token, [video] (publish a camera, 320x240 unless ``size``, ``simulcast``),
  [audio], [share] (a screen share too), [text_topic], [codec] (vp8 or vp9)
- ``stats``: per participant, video frames and audio frames received from each identity, data
  packets and text received, mute events, departures, reconnections, its sid
- ``data`` name, payload, reliable, topic, [to]; ``text`` name, text, topic
- ``mute`` name, kind ("audio"/"video"), muted
- ``subscribe`` name, identity, kind, subscribed: manual subscription to someone's track
- ``permit`` name, identities (None: everyone): who may receive its tracks
- ``unpublish`` name, kind ("video", "audio", "screen")
- ``leave`` name; ``quit``
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from collections import defaultdict

import numpy as np
from livekit import rtc

W, H = 320, 240


class Peer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.room = rtc.Room()
        self.video: dict[str, int] = defaultdict(int)
        self.sizes: dict[str, list[int]] = {}
        self.audio: dict[str, int] = defaultdict(int)
        self.data: list[dict] = []
        self.texts: list[dict] = []
        self.muted: list[list] = []
        self.gone: list[str] = []
        self.reconnected = 0
        self.tasks: list[asyncio.Task] = []
        self.tracks: dict[str, rtc.LocalTrackPublication] = {}
        self.room.on("track_subscribed", self._subscribed)
        self.room.on("data_received", self._data)
        self.room.on("track_muted", lambda p, pub: self._mute(p, pub, True))
        self.room.on("track_unmuted", lambda p, pub: self._mute(p, pub, False))
        self.room.on("participant_disconnected", lambda p: self.gone.append(p.identity))
        self.room.on("reconnected", self._reconnected)
        self.unpublished: list[str] = []
        self.room.on(
            "track_unpublished",
            lambda pub, p: self.unpublished.append(f"{p.identity}:{pub.name}"),
        )
        self.speakers: list[list[str]] = []
        self.quality: dict[str, str] = {}
        self.room.on(
            "active_speakers_changed",
            lambda speakers: self.speakers.append([p.identity for p in speakers]),
        )
        self.room.on(
            "connection_quality_changed",
            lambda p, q: self.quality.__setitem__(p.identity, rtc.ConnectionQuality(q).name),
        )

    def _mute(self, participant, publication, muted: bool) -> None:
        kind = "audio" if publication.kind == rtc.TrackKind.KIND_AUDIO else "video"
        self.muted.append([participant.identity, kind, muted])

    def _reconnected(self) -> None:
        self.reconnected += 1

    def _subscribed(self, track, publication, participant) -> None:
        who = participant.identity
        if publication.source == rtc.TrackSource.SOURCE_SCREENSHARE:
            who += ":screen"
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            self.tasks.append(asyncio.ensure_future(self._read_video(track, who)))
        else:
            self.tasks.append(asyncio.ensure_future(self._read_audio(track, who)))

    async def _read_video(self, track, who: str) -> None:
        async for event in rtc.VideoStream(track):
            self.video[who] += 1
            self.sizes[who] = [event.frame.width, event.frame.height]

    async def _read_audio(self, track, who: str) -> None:
        async for _event in rtc.AudioStream(track, sample_rate=48000, num_channels=1):
            self.audio[who] += 1

    def _data(self, packet: rtc.DataPacket) -> None:
        self.data.append(
            {
                "from": packet.participant.identity if packet.participant else None,
                "payload": packet.data.decode("utf-8", "replace"),
                "topic": packet.topic,
                "reliable": packet.kind == rtc.DataPacketKind.KIND_RELIABLE,
            }
        )

    def on_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            self.texts.append({"from": identity, "text": text, "topic": reader.info.topic})

        self.tasks.append(asyncio.ensure_future(read()))

    def stats(self) -> dict:
        return {
            "sid": self.room.local_participant.sid if self.room.isconnected() else None,
            "video": dict(self.video),
            "sizes": self.sizes,
            "audio": dict(self.audio),
            "data": self.data,
            "texts": self.texts,
            "muted": self.muted,
            "gone": self.gone,
            "reconnected": self.reconnected,
            "unpublished": self.unpublished,
            "speakers": self.speakers[-20:],
            "quality": self.quality,
            "remote": sorted(p.identity for p in self.room.remote_participants.values()),
            "sources": (
                sorted(self.room.local_participant.permissions.can_publish_sources)
                if self.room.isconnected()
                else []
            ),
            "published": sorted(self.tracks),
            "attributes": {
                p.identity: dict(p.attributes) for p in self.room.remote_participants.values()
            },
        }


async def video_loop(source: rtc.VideoSource, shade: int, w: int = W, h: int = H) -> None:
    frame = np.zeros((h, w, 4), dtype=np.uint8)
    n = 0
    while True:
        frame[:, :, 0] = shade
        frame[:, :, 1] = (n * 4) % 256
        frame[:, :, 2] = 128
        frame[:, :, 3] = 255
        frame[(n * 3) % h, :, :3] = 255  # something moves: the encoder sends real frames
        source.capture_frame(rtc.VideoFrame(w, h, rtc.VideoBufferType.RGBA, frame.tobytes()))
        n += 1
        await asyncio.sleep(1 / 15)


async def audio_loop(source: rtc.AudioSource, freq: float) -> None:
    rate, samples = 48000, 480
    t = 0
    while True:
        frame = rtc.AudioFrame.create(rate, 1, samples)
        data = np.frombuffer(frame.data, dtype=np.int16)
        idx = np.arange(t, t + samples)
        data[:] = (8000 * np.sin(2 * math.pi * freq * idx / rate)).astype(np.int16)
        t += samples
        await source.capture_frame(frame)


async def main(url: str) -> None:
    peers: dict[str, Peer] = {}
    loops: list[asyncio.Task] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(obj: object) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        try:
            name = cmd.get("name", "")
            if cmd["cmd"] == "join":
                peer = peers[name] = Peer(name)
                topic = cmd.get("text_topic")
                if topic:
                    peer.room.register_text_stream_handler(topic, peer.on_text)
                await peer.room.connect(
                    url, cmd["token"], rtc.RoomOptions(auto_subscribe=True, dynacast=True)
                )
                if cmd.get("video"):
                    w, h = cmd.get("size", [W, H])
                    source = rtc.VideoSource(w, h)
                    track = rtc.LocalVideoTrack.create_video_track(f"{name}-cam", source)
                    opts = rtc.TrackPublishOptions(
                        source=rtc.TrackSource.SOURCE_CAMERA,
                        simulcast=bool(cmd.get("simulcast")),
                        video_codec=getattr(rtc.VideoCodec, cmd.get("codec", "vp8").upper()),
                    )
                    pub = await peer.room.local_participant.publish_track(track, opts)
                    peer.tracks["video"] = pub
                    loops.append(asyncio.ensure_future(video_loop(source, 40 * len(peers), w, h)))
                if cmd.get("share"):  # a screen share: a second, small video track
                    source = rtc.VideoSource(W, H)
                    track = rtc.LocalVideoTrack.create_video_track(f"{name}-screen", source)
                    opts = rtc.TrackPublishOptions(
                        source=rtc.TrackSource.SOURCE_SCREENSHARE, simulcast=False
                    )
                    pub = await peer.room.local_participant.publish_track(track, opts)
                    peer.tracks["screen"] = pub
                    loops.append(asyncio.ensure_future(video_loop(source, 250)))
                if cmd.get("audio"):
                    source = rtc.AudioSource(48000, 1)
                    track = rtc.LocalAudioTrack.create_audio_track(f"{name}-mic", source)
                    opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
                    pub = await peer.room.local_participant.publish_track(track, opts)
                    peer.tracks["audio"] = pub
                    loops.append(asyncio.ensure_future(audio_loop(source, 300 + 100 * len(peers))))
                say({"ok": True, "sid": peer.room.local_participant.sid})
            elif cmd["cmd"] == "stats":
                say({"ok": True, "peers": {n: p.stats() for n, p in peers.items()}})
            elif cmd["cmd"] == "data":
                await peers[name].room.local_participant.publish_data(
                    cmd["payload"],
                    reliable=cmd.get("reliable", True),
                    topic=cmd.get("topic", ""),
                    destination_identities=cmd.get("to", []),
                )
                say({"ok": True})
            elif cmd["cmd"] == "text":
                await peers[name].room.local_participant.send_text(
                    cmd["text"], topic=cmd.get("topic", "lk.chat")
                )
                say({"ok": True})
            elif cmd["cmd"] == "mute":
                pub = peers[name].tracks[cmd["kind"]]
                track = pub.track
                if cmd.get("muted", True):
                    track.mute()
                else:
                    track.unmute()
                say({"ok": True})
            elif cmd["cmd"] == "subscribe":  # name, identity, kind, subscribed
                remote = next(
                    p
                    for p in peers[name].room.remote_participants.values()
                    if p.identity == cmd["identity"]
                )
                for pub in remote.track_publications.values():
                    kind = "audio" if pub.kind == rtc.TrackKind.KIND_AUDIO else "video"
                    if kind == cmd["kind"]:
                        pub.set_subscribed(cmd["subscribed"])
                say({"ok": True})
            elif cmd["cmd"] == "permit":  # name, [identities]: who may receive its tracks
                allowed = cmd.get("identities")
                peers[name].room.local_participant.set_track_subscription_permissions(
                    allow_all_participants=allowed is None,
                    participant_permissions=[
                        rtc.ParticipantTrackPermission(participant_identity=i, allow_all=True)
                        for i in allowed or []
                    ],
                )
                say({"ok": True})
            elif cmd["cmd"] == "unpublish":  # name, kind
                pub = peers[name].tracks.pop(cmd["kind"])
                await peers[name].room.local_participant.unpublish_track(pub.sid)
                say({"ok": True})
            elif cmd["cmd"] == "leave":
                await peers.pop(name).room.disconnect()
                say({"ok": True})
            elif cmd["cmd"] == "quit":
                for p in peers.values():
                    try:
                        await asyncio.wait_for(p.room.disconnect(), 5)
                    except Exception:
                        pass
                say({"ok": True})
                sys.stdout.flush()
                os._exit(0)
        except Exception as exc:  # reported to the test, which fails with it
            say({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
