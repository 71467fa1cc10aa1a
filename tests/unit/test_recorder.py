"""The Recorder without sockets: real Publishers fed RTP packets of media encoded here (VP8,
H.264, Opus), a stand-in room; the files decode, simulcast layers are switched at keyframes,
gaps become silence, timestamps that jump are followed, a full queue drops and counts, an
unknown codec is skipped and said so, and the recordings on disk are listed, served and
deleted by id only."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

import av
import numpy as np
import pytest

from tests.support.recorded_media import (
    decode_all,
    encode_opus,
    encode_video,
    opus_packets,
    video_packets,
)
from visio_sfu.events import ParticipantRef
from visio_sfu.publisher import Codec, Publisher
from visio_sfu.recording import (
    Recorder,
    RecordingSink,
    RecordingStarted,
    RecordingStopped,
    delete_recording,
    list_recordings,
    read_manifest,
    recording_file,
)

pytestmark = pytest.mark.timeout(60)


class Person:
    """What the Recorder reads of a Participant."""

    class permissions:  # noqa: N801 - the attribute a Participant has
        hidden = False

    def __init__(self, identity: str) -> None:
        self.sid, self.identity, self.name = f"PA_{identity}", identity, identity.title()
        self.tracks: dict[str, Publisher] = {}

    def ref(self) -> ParticipantRef:
        return ParticipantRef(self.sid, self.identity, self.name)


class Room:
    """What the Recorder reads of a Room: who is there, their tracks, a broadcast."""

    name, sid = "unit", "RM_unit"

    def __init__(self, *people: Person) -> None:
        self.participants = {p.sid: p for p in people}
        self.track_watchers: list = []
        self.events: list = []

    def visible(self):
        return list(self.participants.values())

    def broadcast(self, event, exclude=None):
        self.events.append(event)

    def watch_tracks(self, watcher):
        self.track_watchers.append(watcher)
        for p in self.participants.values():
            for t in p.tracks.values():
                watcher(p, t)

    def publish(self, person: Person, track: Publisher) -> None:
        person.tracks[track.sid] = track
        for watcher in list(self.track_watchers):
            watcher(person, track)


def track(sid: str, kind: str, mime: str, rids=None, source=None) -> Publisher:
    clock = 48000 if kind == "audio" else 90000
    codec = Codec(mime, clock, 111 if kind == "audio" else 96, 2 if kind == "audio" else None)
    source = source or ("microphone" if kind == "audio" else "camera")
    return Publisher(sid, "PA", kind, source, "0", codec, {}, lambda b: True, 1, rids=rids)


async def play(streams, past: float = 30.0):
    """Feed (publisher, layer, packets) in send-time order, with arrival times in the past
    (so that gaps are given up at once), yielding to the feeder thread now and then."""
    base = time.monotonic() - past
    events = sorted(
        (
            (t, i, pub, layer, data)
            for pub, layer, pkts in streams
            for i, (data, _s, _ts, t) in enumerate(pkts)
        ),
        key=lambda e: (e[0], e[1]),
    )
    for n, (t, _i, pub, layer, data) in enumerate(events):
        pub.on_rtp(data, base + t, pub.layers[layer])
        if n % 100 == 99:
            await asyncio.sleep(0.03)


async def record(room: Room, tmp_path, streams, **kwargs) -> tuple[Recorder, dict]:
    recorder = Recorder(room, tmp_path, room.visible()[0].ref(), **kwargs)
    recorder.start()
    assert await recorder.wait_ready() is None
    await play(streams)
    await asyncio.sleep(0.1)
    recorder.stop(room.visible()[0].ref())
    assert await recorder.wait_closed(20)
    return recorder, read_manifest(tmp_path, recorder.id)


async def test_opus_vp8_and_h264_are_written_as_received(tmp_path):
    alice = Person("alice")
    room = Room(alice)
    audio = track("TR_a", "audio", "audio/opus")
    vp8 = track("TR_v", "video", "video/VP8")
    h264 = track("TR_h", "video", "video/H264", source="screen_share")
    for t in (audio, vp8, h264):
        room.publish(alice, t)
    streams = [
        (audio, 0, opus_packets(encode_opus(150))),
        (vp8, 0, video_packets("vp8", encode_video("vp8", 90, 640, 480, noise=True))),
        (h264, 0, video_packets("h264", encode_video("h264", 90, 640, 480, noise=True))),
    ]
    recorder, manifest = await record(room, tmp_path, streams)
    assert [type(e) for e in room.events] == [RecordingStarted, RecordingStopped]
    assert manifest["status"] == "complete" and manifest["room"] == "unit"
    assert manifest["participants"] == [
        {"sid": "PA_alice", "identity": "alice", "name": "Alice", "joined": 0.0, "left": None}
    ]
    files = {t["track"]: t for t in manifest["tracks"]}
    assert files["TR_a"]["file"] == "01-alice-microphone.ogg"
    assert files["TR_v"]["file"] == "02-alice-camera.webm"
    assert files["TR_h"]["file"] == "03-alice-screen_share.mp4"
    expect = {"TR_a": ("opus", 150, 3.0), "TR_v": ("vp8", 90, 2.967), "TR_h": ("h264", 90, 2.967)}
    for sid, (codec, frames, duration) in expect.items():
        info = decode_all(tmp_path / recorder.id / files[sid]["file"])
        assert info["errors"] == [] and info["codec"] == codec, info
        assert info["frames"] == frames, info
        assert abs(info["duration"] - duration) < 0.05, info
        assert files[sid]["lost"] == 0 and files[sid]["status"] == "complete"
    assert files["TR_v"]["width"] == 640 and files["TR_h"]["height"] == 480
    assert not room.track_watchers and not audio.sinks  # detached


async def test_simulcast_writes_the_highest_layer_that_flows(tmp_path):
    """Layer 1 (640x360) stops from 2 s to 4 s: once it has been silent for half a second the
    recording goes down to layer 0 (320x180) at its next keyframe (every 0.5 s here), and back
    up at layer 1's next keyframe; the timeline's only hole is that wait."""
    alice = Person("alice")
    room = Room(alice)
    cam = track("TR_s", "video", "video/VP8", rids=["q", "h"])
    room.publish(alice, cam)
    low = video_packets("vp8", encode_video("vp8", 180, 320, 180, gop=15), ssrc=1, ts0=5)
    high = video_packets("vp8", encode_video("vp8", 180, 640, 360, gop=30), ssrc=2, ts0=9000)
    high = [p for p in high if not 2.0 <= p[3] < 4.0]  # layer 1 off from 2 s to 4 s
    recorder, manifest = await record(room, tmp_path, [(cam, 0, low), (cam, 1, high)])
    [entry] = manifest["tracks"]
    assert entry["layers"] == 2 and (entry["width"], entry["height"]) == (640, 360), entry
    with av.open(str(tmp_path / recorder.id / entry["file"])) as c:
        frames = [(float(f.pts * f.time_base), f.width) for f in c.decode(video=0)]
    # both layers' first keyframes come together: q's (smaller) first, h's a frame later
    assert [w for _, w in frames[:2]] == [320, 640]
    switches = [frames[i] for i in range(2, len(frames)) if frames[i][1] != frames[i - 1][1]]
    assert entry["layer_switches"] == 1 + len(switches) == 3, (entry, switches)
    (down, w_down), (up, w_up) = switches
    assert (w_down, w_up) == (320, 640)
    # q's keyframe, then h's; h's packets of 2-4 s are lost here (their sequence numbers
    # skipped, unlike a paused layer's), a gap waited for 0.5 s of arrivals like any loss,
    # however long ago they came: h's 4 s keyframe follows the q frames of that wait
    assert 2.5 <= down <= 3.0 and 4.0 <= up <= 4.6, (down, up)
    assert frames[-1][1] == 640
    times = [t for t, _ in frames]
    gaps = np.diff(times)
    assert times == sorted(times) and max(gaps) <= 1.0 and sorted(gaps)[-2] < 0.05
    assert decode_all(tmp_path / recorder.id / entry["file"])["errors"] == []


async def test_audio_gaps_become_silence_and_jumps_are_followed(tmp_path):
    alice = Person("alice")
    room = Room(alice)
    mic = track("TR_m", "audio", "audio/opus")
    room.publish(alice, mic)
    opus = encode_opus(300)
    packets = opus_packets(opus)
    # 1 s muted (from 1 s to 2 s): nothing sent; at 4 s the timestamps jump by an hour
    muted = [p for p in packets if not 1.0 <= p[3] < 2.0]
    jumped = []
    for data, seq, ts, t in muted:
        if t >= 4.0:
            ts = (ts + 3600 * 48000) & 0xFFFFFFFF
            data = data[:4] + ts.to_bytes(4, "big") + data[8:]
        jumped.append((data, seq, ts, t))
    recorder, manifest = await record(room, tmp_path, [(mic, 0, jumped)])
    [entry] = manifest["tracks"]
    assert 45 <= entry["silence_frames"] <= 51, entry
    path = tmp_path / recorder.id / entry["file"]
    info = decode_all(path)
    assert info["errors"] == [] and abs(info["duration"] - 6.0) < 0.05, info
    with av.open(str(path)) as c:
        pcm = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    assert np.abs(pcm[int(1.1 * 48000) : int(1.9 * 48000)]).max() == 0  # the muted second
    assert np.abs(pcm[int(0.2 * 48000) : int(0.9 * 48000)]).max() > 0.1
    assert np.abs(pcm[int(4.1 * 48000) : int(5.9 * 48000)]).max() > 0.1  # after the jump


async def test_video_starts_at_a_keyframe_and_asks_for_one(tmp_path):
    alice = Person("alice")
    room = Room(alice)
    cam = track("TR_k", "video", "video/VP8")
    room.publish(alice, cam)
    frames = encode_video("vp8", 60, gop=30)
    packets = video_packets("vp8", frames[5:])  # joins mid-GOP: frames 5..29 cannot be used
    recorder = Recorder(room, tmp_path, alice.ref())
    recorder.start()
    await recorder.wait_ready()
    requests = cam.keyframe_requests
    base = time.monotonic()
    for data, _seq, _ts, t in packets:
        cam.on_rtp(data, base + t)
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.1)
    recorder.stop()
    await recorder.wait_closed(10)
    [entry] = read_manifest(tmp_path, recorder.id)["tracks"]
    assert cam.keyframe_requests > requests  # PLIs: on attaching, then by the writer
    assert entry["frames"] == 30 and entry["frames_dropped"] == 25, entry
    info = decode_all(tmp_path / recorder.id / entry["file"])
    assert info["errors"] == [] and info["frames"] == 30


def test_a_full_queue_drops_and_counts_without_blocking():
    sink = RecordingSink(limit=10)
    for i in range(100):
        sink.write(b"x", 1, i, i, False, 0.0, 0)
    assert len(sink.queue) == 10 and sink.dropped == 90
    sink.close()
    assert sink.closed


async def test_an_unsupported_codec_is_skipped_with_a_clear_log_line(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="visio_sfu.recording")
    alice = Person("alice")
    room = Room(alice)
    room.publish(alice, track("TR_9", "video", "video/VP9"))
    recorder, manifest = await record(room, tmp_path, [])
    [entry] = manifest["tracks"]
    assert entry["status"] == "skipped" and entry["file"] is None
    assert "VP9 is not recorded" in entry["note"]
    assert any("video/VP9 is not supported" in r.getMessage() for r in caplog.records)


async def test_tracks_published_later_and_who_came(tmp_path):
    alice, bob = Person("alice"), Person("bob")
    room = Room(alice)
    recorder = Recorder(room, tmp_path, None, requested_by="admin API (ops)")
    recorder.start()
    await recorder.wait_ready()
    await asyncio.sleep(0.2)
    room.participants[bob.sid] = bob
    recorder.note_participant(bob.ref())
    mic = track("TR_b", "audio", "audio/opus")
    room.publish(bob, mic)
    await play([(mic, 0, opus_packets(encode_opus(50)))], past=0)
    recorder.note_participant(bob.ref(), present=False)
    recorder.stop()
    await recorder.wait_closed(10)
    manifest = read_manifest(tmp_path, recorder.id)
    assert manifest["started_by"] == {"api": "admin API (ops)"}
    people = {p["identity"]: p for p in manifest["participants"]}
    assert people["bob"]["joined"] >= 0.2 and people["bob"]["left"] >= people["bob"]["joined"]
    [entry] = manifest["tracks"]
    assert entry["identity"] == "bob" and entry["start"] >= 0.2
    assert room.events[0].by is None


async def test_recordings_on_disk(tmp_path):
    alice = Person("alice")
    room = Room(alice)
    mic = track("TR_a", "audio", "audio/opus")
    room.publish(alice, mic)
    recorder, manifest = await record(room, tmp_path, [(mic, 0, opus_packets(encode_opus(20)))])
    (tmp_path / "stray").mkdir()  # not a recording
    listed = list_recordings(tmp_path)
    assert [r["id"] for r in listed] == [recorder.id]
    assert listed[0]["files"] == ["01-alice-microphone.ogg"] and listed[0]["bytes"] > 0
    assert recording_file(tmp_path, recorder.id, "01-alice-microphone.ogg") is not None
    assert recording_file(tmp_path, recorder.id, "manifest.json") is not None
    for bad in ("../manifest.json", "..", "/etc/passwd", "stray", ".hidden"):
        assert recording_file(tmp_path, recorder.id, bad) is None
    assert read_manifest(tmp_path, "../" + recorder.id) is None
    assert read_manifest(tmp_path, "RC_000000000000") is None
    assert not delete_recording(tmp_path, "stray")
    assert delete_recording(tmp_path, recorder.id)
    assert list_recordings(tmp_path) == [] and (tmp_path / "stray").exists()
    assert json.dumps(manifest)  # plain JSON


async def test_a_writer_process_that_dies_stops_the_recording_and_says_so(tmp_path):
    """The files are written by a process of their own; killed (out of memory, a crash in a
    native library), the recording stops with reason error and says why, the manifest says
    failed, and the sinks leave the forwarding path."""
    alice = Person("alice")
    room = Room(alice)
    cam = track("TR_c", "video", "video/VP8")
    room.publish(alice, cam)
    recorder = Recorder(room, tmp_path, alice.ref())
    recorder.start()
    assert await recorder.wait_ready() is None
    assert recorder.process is not None and recorder.process.pid != os.getpid()
    await play([(cam, 0, video_packets("vp8", encode_video("vp8", 30)))])
    recorder.process.kill()
    assert await recorder.wait_closed(20)
    for _ in range(100):  # the stop is scheduled on the event loop
        if len(room.events) == 2:
            break
        await asyncio.sleep(0.02)
    stopped = room.events[-1]
    assert isinstance(stopped, RecordingStopped) and stopped.reason == "error", room.events
    assert "writer process ended unexpectedly" in stopped.message, stopped
    manifest = read_manifest(tmp_path, recorder.id)
    assert manifest["status"] == "failed" and "unexpectedly" in manifest["error"], manifest
    assert manifest["tracks"][0]["status"] == "failed", manifest["tracks"]
    assert not cam.sinks and not recorder.active


async def test_the_writer_is_another_process(tmp_path):
    """The forwarding path's process does not run the muxers: the writer's CPU is its own."""
    alice = Person("alice")
    room = Room(alice)
    cam = track("TR_w", "video", "video/VP8")
    room.publish(alice, cam)
    _recorder, manifest = await record(
        room, tmp_path, [(cam, 0, video_packets("vp8", encode_video("vp8", 60, noise=True)))]
    )
    assert manifest["tracks"][0]["frames"] == 60
    assert _recorder.process is not None and _recorder.process.exitcode == 0
    assert _recorder.writer_cpu > 0


def test_a_writer_behind_a_backlog_does_not_give_up_what_the_backlog_holds(tmp_path):
    """The writer process may get to what the feeder sent seconds late (short of CPU, it runs
    at a lower priority): a packet that came 50 ms after the next one (a NACK's repair, well
    within the 0.2 s an audio gap is waited for) is written, not declared lost because the
    writer's clock is far past their arrival. Losses count at arrival times and at the time
    the feeder took the packets (fails with the writer's own clock: 1 lost)."""
    from visio_sfu.recording import _Inbox, _OpusWriter

    packets = opus_packets(encode_opus(100))
    base = time.monotonic()
    arrivals = [(data, seq, ts, base + t, 0) for data, seq, ts, t in packets]
    late = arrivals.pop(40)  # came after packet 41, 50 ms later
    arrivals.insert(41, (*late[:3], arrivals[40][3] + 0.05, 0))
    inbox = _Inbox()
    inbox.queue.extend(arrivals)
    inbox.closed = True
    writer = _OpusWriter(inbox, tmp_path / "mic.ogg", base, 48000, lambda layer: None)
    # the whole backlog at once, taken by the feeder after the last came (base + 2 s)
    assert writer.feed(base + 2.1)
    writer.finish()
    assert writer.stats()["lost"] == 0 and writer.written == 100, writer.stats()
    info = decode_all(tmp_path / "mic.ogg")
    assert info["errors"] == [] and abs(info["duration"] - 2.0) < 0.05, info
