"""Recording a real meeting of aiortc peers (issue 14): the files open with PyAV, hold the
expected streams (each participant's colour and tone), last as long as the call (within 5 %),
decode without errors, also with 5 % of the packets lost on the way in and 5 % lost between
the server's sink and the writer; mute gaps; the manifest; a directory that cannot be written
or a full disk stop the recording cleanly while the meeting goes on; newcomers are told."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import time
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc import RTCRtpSender

from signaling.recording import RECORDINGS, RecordingService
from tests.support.inprocess import LocalServer
from tests.support.media import check_video, until
from tests.support.recorded_media import decode_all
from visio_client import Client, ServerError
from visio_client.media import (
    PatternVideoTrack,
    ToneAudioTrack,
    audio_samples,
    colour_index,
    tone_index,
)
from visio_sfu import recording as core_recording

pytestmark = pytest.mark.timeout(150)

CALL = 10.0  # seconds recorded


async def join(server: LocalServer, room: str, identity: str, index: int, **grant) -> Client:
    client = Client(server.url, server.token(room, identity, identity.title(), **grant))
    await client.connect()
    await client.publish(
        PatternVideoTrack(index, width=640, height=480, fps=30), ToneAudioTrack(index)
    )
    return client


async def wait_closed(server: LocalServer, recording_id: str) -> dict:
    """Wait for the writer to finish the files; the manifest."""
    service = server.app[RECORDINGS]
    await until(lambda: not service.busy(recording_id), timeout=20, what="files finished")
    return json.loads((service.directory / recording_id / "manifest.json").read_text())


class LoopStalls:
    """How long this process's event loop stood still (a 20 ms timer more than 0.1 s late):
    the server and the aiortc participants share it, so on an overloaded machine the media
    they make falls behind the wall clock (and catches up in a burst) by as much. A file may
    then differ from the call's wall-clock length by that much, and no more."""

    def __init__(self) -> None:
        self.total = 0.0
        self.task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.02)
            late = time.monotonic() - t - 0.02
            if late > 0.1:
                self.total += late

    def stop(self, most: float = 3.0) -> float:
        """The time it stood still, counted up to ``most``: a test process that stood still
        longer than that on an overloaded machine may fail (the message says so)."""
        self.task.cancel()
        if self.total:
            print(f"the event loop stood still {self.total:.2f} s in all")
        return min(self.total, most)


def check_file(
    path: Path,
    call: float,
    colour: int | None = None,
    tone: int | None = None,
    note=None,
    stalled: float = 0.0,
):
    """The file decodes without error, lasts as long as the call (within 5 %, and the time the
    test's event loop stood still), carries the publisher's colour or tone; returns what
    decode_all found."""
    info = decode_all(path)
    assert info["errors"] == [], (path.name, info["errors"])
    assert info["frames"] > 0, path.name
    assert abs(info["duration"] - call) <= 0.05 * call + stalled, (
        path.name,
        info["duration"],
        call,
        stalled,
        note,
    )
    with av.open(str(path)) as container:
        stream = container.streams[0]
        if colour is not None:
            seen = [
                colour_index(f) for _, f in zip(range(40), container.decode(stream), strict=False)
            ]
            assert seen[-10:] == [colour] * 10, (path.name, seen)
        if tone is not None:
            chunks = [
                audio_samples(f) for _, f in zip(range(100), container.decode(stream), strict=False)
            ]
            assert tone_index(np.concatenate(chunks[25:]), rate=48000) == tone, path.name
    return info


async def test_a_meeting_is_recorded_as_received(tmp_path):
    async with LocalServer(recordings_dir=str(tmp_path)) as server:
        alice = await join(server, "rec", "alice", 0, room_record=True)
        bob = await join(server, "rec", "bob", 1)
        await until(lambda: len(bob.remote_tracks) == 2, what="bob receives alice")
        await check_video(next(t for t in bob.remote_tracks if t.kind == "video"), 0)
        # a video file starts at a keyframe, asked for when the recording starts; the server
        # asks a publisher at most every 0.5 s, and bob's subscription just did: started at
        # once, the cameras' files would begin up to 0.5 s late (5 % of this call)
        stalls = LoopStalls()  # from a second before the recording to its end
        await asyncio.sleep(1)

        state = await alice.request({"type": "recording_state"})
        assert state["recording"] is None and state["can_record"] is True
        asked = time.monotonic()  # the recording starts between asked and answered
        answer = await alice.request({"type": "start_recording"})
        answered = time.monotonic()
        recording = answer["recording"]
        assert answer["type"] == "recording_state" and recording["id"].startswith("RC_")
        assert recording["by"]["identity"] == "alice"
        started = await bob.wait_for("recording_started")
        assert started["recording"]["id"] == recording["id"]
        assert started["recording"]["by"]["name"] == "Alice" and started["ongoing"] is False
        await alice.wait_for("recording_started")
        assert (await bob.request({"type": "recording_state"}))["can_record"] is False

        # someone who joins while it records is told
        carol = Client(server.url, server.token("rec", "carol", "Carol"))
        await carol.connect()
        told = await carol.wait_for("recording_started")
        assert told["ongoing"] is True and told["recording"]["id"] == recording["id"]
        kinds = [m["type"] for m in carol.events]
        assert kinds.index("joined") < kinds.index("recording_started")

        # the call lasts CALL seconds from the start's answer (carol's join, which may take a
        # while on a busy machine, is part of it)
        await asyncio.sleep(max(CALL - (time.monotonic() - answered), 0))
        stop_asked = time.monotonic()
        stopped_answer = await alice.request({"type": "stop_recording"})
        stop_answered = time.monotonic()
        stalled = stalls.stop()
        assert stopped_answer["recording"] is None
        stopped = await bob.wait_for("recording_stopped")
        assert stopped["reason"] == "stopped" and stopped["by"]["identity"] == "alice"
        manifest = await wait_closed(server, recording["id"])

        assert manifest["room"] == "rec" and manifest["status"] == "complete"
        assert manifest["started_by"]["identity"] == "alice"
        assert manifest["stop_reason"] == "stopped"
        # the server's duration lies within what this test saw (each request's round trip)
        shortest, longest = stop_asked - answered, stop_answered - asked
        assert shortest - 0.05 <= manifest["duration"] <= longest + 0.05, (
            manifest["duration"],
            shortest,
            longest,
        )
        call = manifest["duration"]
        people = {p["identity"]: p for p in manifest["participants"]}
        assert set(people) == {"alice", "bob", "carol"}
        assert people["bob"]["name"] == "Bob" and people["carol"]["joined"] > 0
        tracks = {(t["identity"], t["kind"]): t for t in manifest["tracks"]}
        assert set(tracks) == {(w, k) for w in ("alice", "bob") for k in ("audio", "video")}
        folder = tmp_path / recording["id"]
        for (who, kind), t in tracks.items():
            assert t["status"] == "complete", t
            assert t["source"] == ("camera" if kind == "video" else "microphone")
            assert t["file"].endswith(".webm" if kind == "video" else ".ogg")
            assert 0 <= t["start"] < 0.5 + stalled, (t, stalled)
            assert abs(t["end"] - manifest["duration"]) < 0.5 + stalled, (t, stalled)
            assert t["lost"] == 0 and t["dropped"] == 0, t
            index = 0 if who == "alice" else 1
            info = check_file(
                folder / t["file"],
                manifest["duration"],
                colour=index if kind == "video" else None,
                tone=index if kind == "audio" else None,
                note=t,
                stalled=stalled,
            )
            print(who, kind, "start", t["start"], "end", t["end"], "file", info["duration"])
            if kind == "video":
                assert info["sizes"] == {(640, 480)} and t["width"] == 640
                # at 30 fps sent
                assert info["frames"] >= 15 * (manifest["duration"] - stalled), info
            else:
                samples = info["samples"] / 48000
                assert abs(samples - manifest["duration"]) < 0.05 * call + stalled, info
        for c in (alice, bob, carol):
            await c.close()


async def test_loss_on_the_way_in_and_before_the_writer(tmp_path):
    """5 % of the publisher's RTP dropped at the server's socket (repaired by NACK, mostly),
    and 5 % dropped between the sink and the writer (never repaired): the files decode."""
    rng = random.Random(14)
    async with LocalServer(recordings_dir=str(tmp_path)) as server:
        alice = await join(server, "loss", "alice", 0, room_record=True)
        room = server.sfu.room("loss")
        publisher = room.participants[alice.joined["participant"]["sid"]]
        transport = publisher.publishing.transport
        deliver = transport._deliver_rtp
        dropped = {"in": 0, "sink": 0}

        def lossy(data: bytes, now: float | None = None) -> None:
            if rng.random() < 0.05:
                dropped["in"] += 1
                return
            deliver(data, now)

        transport._deliver_rtp = lossy
        stalls = LoopStalls()
        answer = await alice.request({"type": "start_recording"})
        recorder = server.app[RECORDINGS].recorder("loss")

        class LossyQueue(collections.deque):
            """The sink's queue losing 5 % of what the forwarding path appends to it."""

            def append(self, item):
                if rng.random() < 0.05:
                    dropped["sink"] += 1
                    return
                super().append(item)

        for _publisher, sink in recorder.sinks.values():
            sink.packets = LossyQueue()  # the publisher appends to it from now on
        t0 = time.monotonic()
        await asyncio.sleep(CALL)
        await alice.request({"type": "stop_recording"})
        call = time.monotonic() - t0
        stalled = stalls.stop()
        manifest = await wait_closed(server, answer["recording"]["id"])
        print(
            "dropped",
            dropped,
            [(t["kind"], t["lost"], t.get("frames")) for t in manifest["tracks"]],
        )
        assert dropped["in"] > 20 and dropped["sink"] > 20
        folder = tmp_path / manifest["id"]
        for t in manifest["tracks"]:
            assert t["status"] == "complete" and t["lost"] > 0, t
            info = decode_all(folder / t["file"])
            assert info["errors"] == [], info
            # the file is what the manifest says it is; under loss a video may begin or end a
            # little early or late (a lost frame waits for the next keyframe, asked every 0.25 s)
            assert abs(info["duration"] - (t["end"] - t["start"])) <= 0.1, (t, info)
            assert t["start"] < 1.0 + stalled, (t, stalled)
            assert info["duration"] >= 0.85 * call - stalled, (t, info, call, stalled)
            if t["kind"] == "video":
                assert t["frames_dropped"] > 0 and t["keyframe_requests"] > 0, t
                assert info["frames"] > 30, info
        await alice.close()


async def test_mute_gaps(tmp_path):
    """A microphone muted for 3 s is silence in the file (which lasts the whole call); a camera
    muted for 3 s is a gap between frames; both decode without errors."""
    async with LocalServer(recordings_dir=str(tmp_path)) as server:
        alice = Client(server.url, server.token("mute", "alice", "Alice", room_record=True))
        await alice.connect()
        published = await alice.publish(
            PatternVideoTrack(0, width=640, height=480, fps=30), ToneAudioTrack(0)
        )
        stalls = LoopStalls()
        answer = await alice.request({"type": "start_recording"})
        # the recording (and its files) start when it is announced, before its writer process
        # runs and the start is answered (seconds later on a loaded machine): times count from
        # the recorder's own start (the same monotonic clock, this process)
        t0 = server.app[RECORDINGS].recorder("mute").t0
        await asyncio.sleep(3)
        for track in published:
            await alice.request({"type": "mute", "track": track["sid"], "muted": True})
        muted_at = time.monotonic() - t0
        await asyncio.sleep(3)
        for track in published:
            await alice.request({"type": "mute", "track": track["sid"], "muted": False})
        unmuted_at = time.monotonic() - t0
        await asyncio.sleep(3)
        await alice.request({"type": "stop_recording"})
        call = time.monotonic() - t0
        stalled = stalls.stop()
        print(f"call {call:.2f} s from the recording's start, the loop stood still {stalled} s")
        manifest = await wait_closed(server, answer["recording"]["id"])
        folder = tmp_path / manifest["id"]
        tracks = {t["kind"]: t for t in manifest["tracks"]}

        audio = tracks["audio"]
        assert audio["silence_frames"] >= 100, audio  # 3 s of 20 ms frames, about 150
        info = decode_all(folder / audio["file"])
        assert info["errors"] == [], info
        assert abs(info["duration"] - call) <= 0.05 * call + stalled, (info, call, stalled)
        with av.open(str(folder / audio["file"])) as c:
            pcm = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
        start = audio["start"]
        quiet = pcm[int((muted_at - start + 0.5) * 48000) : int((unmuted_at - start - 0.5) * 48000)]
        loud = pcm[int(0.5 * 48000) : int((muted_at - start - 0.5) * 48000)]
        assert len(quiet) > 48000 and np.abs(quiet).max() < 0.01, np.abs(quiet).max()
        assert np.abs(loud).max() > 0.1

        video = tracks["video"]
        info = decode_all(folder / video["file"])
        assert info["errors"] == [], info
        assert abs(info["duration"] - call) <= 0.05 * call + stalled, (info, call, stalled)
        with av.open(str(folder / video["file"])) as c:
            times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
        gaps = np.diff(times)
        assert gaps.max() > 2.0, gaps.max()  # the muted time
        assert sorted(gaps)[-2] < 0.5  # and only there
        await alice.close()


async def test_unpublished_tracks_and_h264(tmp_path):
    """An H.264 camera is written to MP4; a track unpublished during the recording is
    finished then, and the manifest says when it ended."""
    async with LocalServer(recordings_dir=str(tmp_path)) as server:
        alice = Client(server.url, server.token("h264", "alice", "Alice", room_record=True))
        await alice.connect()
        track = PatternVideoTrack(2, width=640, height=480, fps=30)
        reply = await alice.request(
            {"type": "add_track", "cid": track.id, "kind": "video", "source": "camera"}
        )
        transceiver = alice.publisher.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences(
            [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
        )
        await alice.negotiate_publisher()
        tone = ToneAudioTrack(3)
        [audio] = await alice.publish(tone)
        stalls = LoopStalls()
        answer = await alice.request({"type": "start_recording"})
        await asyncio.sleep(4)
        await alice.request({"type": "unpublish", "track": audio["sid"]})
        unpublished_at = time.monotonic()
        await asyncio.sleep(3)
        await alice.request({"type": "stop_recording"})
        stop = time.monotonic()
        stalled = stalls.stop()
        manifest = await wait_closed(server, answer["recording"]["id"])
        tracks = {t["track"]: t for t in manifest["tracks"]}
        video = tracks[reply["track"]["sid"]]
        assert video["mime"] == "video/H264" and video["file"].endswith(".mp4"), video
        info = check_file(
            tmp_path / manifest["id"] / video["file"], manifest["duration"], 2, stalled=stalled
        )
        assert info["codec"] == "h264" and info["sizes"] == {(640, 480)}
        gone = tracks[audio["sid"]]
        assert gone["status"] == "complete"
        ended = manifest["duration"] - gone["end"]  # before the stop, by the file
        assert abs(ended - (stop - unpublished_at)) < 0.5 + stalled, (gone, stalled)
        assert decode_all(tmp_path / manifest["id"] / gone["file"])["errors"] == []
        await alice.close()


async def test_an_unwritable_directory_stops_cleanly_and_the_meeting_goes_on(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="visio_sfu.recording")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the recordings directory should be")
    async with LocalServer(recordings_dir=str(blocker / "recordings")) as server:
        alice = await join(server, "full", "alice", 0, room_record=True)
        bob = await join(server, "full", "bob", 1)
        await until(lambda: len(bob.remote_tracks) == 2, what="bob receives alice")
        with pytest.raises(ServerError) as refused:
            await alice.request({"type": "start_recording"})
        assert refused.value.code == "recording_failed", refused.value
        assert "not a directory" in str(refused.value), refused.value
        stopped = await bob.wait_for("recording_stopped")
        assert stopped["reason"] == "error" and "not a directory" in stopped["message"]
        assert any("cannot write" in r.getMessage() for r in caplog.records)
        assert server.app[RECORDINGS].recorder("full") is None
        # the meeting goes on
        video = next(t for t in bob.remote_tracks if t.kind == "video")
        await check_video(video, 0)
        assert (await alice.request({"type": "data", "payload": {"text": "still here"}}))[
            "type"
        ] == "data_sent"
        assert (await alice.request({"type": "recording_state"}))["recording"] is None
        for c in (alice, bob):
            await c.close()


async def test_the_answer_names_a_recording_that_stopped_at_once(tmp_path, monkeypatch):
    """A write error can stop a recording before the answer to start_recording goes out (CI
    saw it with a full disk): the answer still names the recording, recording_stopped follows."""
    real_start = RecordingService.start

    async def start_then_fail(self, room, by=None, requested_by=""):
        recorder = await real_start(self, room, by, requested_by)
        self.stop(room.name, None, reason="error")
        return recorder

    monkeypatch.setattr(RecordingService, "start", start_then_fail)
    async with LocalServer(recordings_dir=str(tmp_path)) as server:
        alice = await join(server, "quick", "alice", 0, room_record=True)
        answer = await alice.request({"type": "start_recording"})
        assert answer["type"] == "recording_state" and answer["recording"]["id"], answer
        stopped = await alice.wait_for("recording_stopped", timeout=10)
        assert stopped["recording"] == answer["recording"]["id"]
        state = await alice.request({"type": "recording_state"})
        assert state["recording"] is None
        await alice.close()


async def test_a_full_disk_stops_the_recording_and_the_meeting_goes_on(
    tmp_path, caplog, monkeypatch
):
    """The video file is written to /dev/full (every write: ENOSPC) while the rest is on a
    real disk: the recording stops with 'no space left on device', told to everyone."""
    caplog.set_level(logging.ERROR, logger="visio_sfu.recording")
    real_path = core_recording.Recorder._track_path

    def path_full(self, name):  # the writer process writes the camera there
        return Path("/dev/full") if name.endswith(".webm") else real_path(self, name)

    monkeypatch.setattr(core_recording.Recorder, "_track_path", path_full)
    async with LocalServer(recordings_dir=str(tmp_path)) as server:
        alice = await join(server, "disk", "alice", 0, room_record=True)
        bob = await join(server, "disk", "bob", 1)
        await until(lambda: len(bob.remote_tracks) == 2, what="bob receives alice")
        answer = await alice.request({"type": "start_recording"})
        assert answer["type"] == "recording_state"
        stopped = await bob.wait_for("recording_stopped", timeout=20)
        assert stopped["reason"] == "error", stopped
        assert "no space left on device" in stopped["message"], stopped
        await alice.wait_for("recording_stopped")
        manifest = await wait_closed(server, answer["recording"]["id"])
        assert manifest["status"] == "failed" and "no space" in manifest["error"]
        assert any("no space left on device" in r.getMessage() for r in caplog.records)
        video = next(t for t in bob.remote_tracks if t.kind == "video")
        await check_video(video, 0)  # the meeting goes on
        # and recording can start again (on a disk with room)
        monkeypatch.setattr(core_recording.Recorder, "_track_path", real_path)
        again = await alice.request({"type": "start_recording"})
        assert again["type"] == "recording_state" and again["recording"]["id"] != manifest["id"]
        await asyncio.sleep(2)
        await alice.request({"type": "stop_recording"})
        manifest = await wait_closed(server, again["recording"]["id"])
        assert manifest["status"] == "complete"
        for c in (alice, bob):
            await c.close()


async def test_grants(tmp_path):
    """Only roomRecord starts or stops a recording; everyone sees it."""
    async with LocalServer(recordings_dir=str(tmp_path)) as server:
        bob = Client(server.url, server.token("grants", "bob", "Bob"))
        await bob.connect()

        async def refused(client: Client, kind: str) -> str:
            with pytest.raises(ServerError) as error:
                await client.request({"type": kind})
            return error.value.code

        for kind in ("start_recording", "stop_recording"):
            assert await refused(bob, kind) == "permission_denied"
        assert not list(tmp_path.iterdir())
        rec = Client(server.url, server.token("grants", "rec", "Rec", room_record=True))
        await rec.connect()
        assert await refused(rec, "stop_recording") == "not_recording"
        await rec.request({"type": "start_recording"})
        assert await refused(rec, "start_recording") == "already_recording"
        assert await refused(bob, "stop_recording") == "permission_denied"
        state = await bob.request({"type": "recording_state"})
        assert state["recording"]["by"]["identity"] == "rec" and not state["can_record"]
        # a token for another room records nothing here
        other = Client(server.url, server.token("elsewhere", "eve", room_record=True))
        await other.connect()
        assert await refused(other, "stop_recording") == "not_recording"
        assert server.app[RECORDINGS].recorder("grants") is not None
        await rec.request({"type": "stop_recording"})
        for c in (bob, rec, other):
            await c.close()


async def test_the_room_closing_stops_the_recording(tmp_path):
    async with LocalServer(recordings_dir=str(tmp_path), empty_timeout=0.5) as server:
        alice = await join(server, "closing", "alice", 0, room_record=True)
        answer = await alice.request({"type": "start_recording"})
        await asyncio.sleep(2)
        await alice.leave()
        manifest = await wait_closed(server, answer["recording"]["id"])
        assert manifest["stop_reason"] == "room_closed" and manifest["status"] == "complete"
        assert manifest["participants"][0]["left"] is not None
        assert all(t["status"] == "complete" for t in manifest["tracks"]), manifest["tracks"]


async def test_someone_moved_to_another_room_is_no_longer_recorded(tmp_path):
    """Breakout rooms: a participant moved out of a recorded room (tracks and all) leaves the
    recording there; moved back, they are recorded again, in new files; someone moved into a
    recorded room is told it is recorded."""
    async with LocalServer(recordings_dir=str(tmp_path)) as server:
        alice = await join(server, "main", "alice", 0, room_record=True)
        bob = await join(server, "main", "bob", 1)
        stalls = LoopStalls()
        asked = time.monotonic()
        answer = await alice.request({"type": "start_recording"})
        answered = time.monotonic()
        await asyncio.sleep(2)
        sfu = server.sfu
        main_room, breakout = sfu.room("main"), sfu.get_or_create_room("breakout")
        bob_p = main_room.by_identity("bob")
        breakout.attach(main_room.detach(bob_p))
        moved_at = time.monotonic()
        await bob.wait_for("moved")
        await asyncio.sleep(2)
        main_room.attach(breakout.detach(bob_p))
        told = await bob.wait_for(lambda m: m["type"] == "recording_started" and m["ongoing"])
        assert told["recording"]["id"] == answer["recording"]["id"]
        await asyncio.sleep(2)
        await alice.request({"type": "stop_recording"})
        stalled = stalls.stop()
        manifest = await wait_closed(server, answer["recording"]["id"])
        bobs = [t for t in manifest["tracks"] if t["identity"] == "bob"]
        assert len(bobs) == 4, bobs  # two files each for his camera and microphone
        first, again = bobs[:2], bobs[2:]
        # his first files end when he was moved (seconds into the recording), or, when the
        # test's event loop stood still, as much earlier: his media was that far behind
        moved = (moved_at - answered, moved_at - asked)
        for t in first:
            assert t["status"] == "complete", t
            assert moved[0] - 0.5 - stalled < t["end"] < moved[1] + 0.6, (t, moved, stalled)
        for t in again:
            assert t["status"] == "complete" and t["start"] > 3.5, t
            assert decode_all(tmp_path / manifest["id"] / t["file"])["errors"] == []
        left = [p for p in manifest["participants"] if p["identity"] == "bob"]
        assert left[0]["left"] is None  # back in the room at the end
        assert time.monotonic() - moved_at > 4
        for c in (alice, bob):
            await c.close()


async def test_a_server_shutting_down_finishes_the_files(tmp_path):
    async with LocalServer(recordings_dir=str(tmp_path)) as server:
        alice = await join(server, "down", "alice", 0, room_record=True)
        answer = await alice.request({"type": "start_recording"})
        await asyncio.sleep(2)
    stopped = [m for m in alice.events if m["type"] == "recording_stopped"]
    assert stopped and stopped[0]["reason"] == "server_shutdown", alice.events[-5:]
    manifest = json.loads((tmp_path / answer["recording"]["id"] / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["stop_reason"] == "server_shutdown"
    for t in manifest["tracks"]:
        assert decode_all(tmp_path / manifest["id"] / t["file"])["errors"] == []
    await alice.close()
