"""Recording: every track of a room written as received, never decoded nor re-encoded.

A :class:`Recorder` watches a room's tracks (``Room.watch_tracks``) and attaches a
:class:`RecordingSink` to each: on the forwarding path the sink only appends the packet to a
bounded queue (when the queue is full the packet is dropped and counted: the forwarding path
never waits for a disk). Each recording has a writer process of its own (multiprocessing,
spawn): a feeder thread of the server's process hands it the queued packets every 20 ms, in one
message, and it runs a small jitter buffer per stream (reorders by sequence number, gives up
lost packets after a while), reassembles video frames and writes each track with PyAV's
muxers (a writer thread in the server's process took the GIL from the event loop and cost the
forwarding path 4 to 27 % more in bursts; ``benchmarks/recording.py`` measures both):

- Opus → Ogg; gaps (a muted microphone, DTX, loss) are filled with Opus silence frames, so the
  file plays for as long as the track was recorded;
- VP8 → WebM, H.264 → MP4 (fragmented): whole frames only; after a loss the writer skips to
  the next keyframe and asks the publisher for one (as it does when a track starts). Simulcast:
  the highest layer that flows is written, switching layers at keyframes.

A ``manifest.json`` beside the files says who was there, which file holds which track, and when
each track starts (seconds from the recording's start), so that the meeting can be replayed or
mixed later. The room's participants are told with typed events (:class:`RecordingStarted`,
:class:`RecordingStopped`). A write that fails (a full disk, a directory that cannot be
written) stops the recording cleanly: the files are closed as they are, the room is told why
(reason ``error``), and the meeting goes on.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from multiprocessing.connection import Connection
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any

import av

from .events import Event, ParticipantRef
from .jitter import JitterBuffer, Lost
from .publish import new_sid
from .publisher import PacketQueue
from .rtp.depacketize import (
    OPUS_SILENCE_10MS,
    OPUS_SILENCE_20MS,
    FrameAssembler,
    H264Assembler,
    VP8Assembler,
    opus_samples,
)
from .rtp.header import payload_end, payload_offset

if TYPE_CHECKING:
    from .participant import Participant
    from .publisher import Publisher
    from .room import Room

logger = logging.getLogger(__name__)

QUEUE_LIMIT = 4096  # packets a track's sink holds for the writer; beyond, dropped and counted
POLL_INTERVAL = 0.02  # the feeder thread hands the queues to the writer process this often (s)
NICENESS = 5  # added to the writer process's nice value: when the CPU is short, forwarding first
FINISH_TIMEOUT = 60.0  # how long a stopped recording's writer process has to close its files
AUDIO_LATENCY = 0.2  # how long a missing audio packet is waited for
VIDEO_LATENCY = 0.5  # ... a missing video packet (the server NACKs the publisher for it)
KEYFRAME_INTERVAL = 1.0  # the writer asks a track for a keyframe at most this often ...
FIRST_KEYFRAME_INTERVAL = 0.25  # ... or this often while its file has not started
LAYER_STALE = 0.5  # a simulcast layer that sent nothing for this long is not written
DISCONTINUITY = 2.0  # RTP time this far from the arrival time: the stream started over
MANIFEST = "manifest.json"
#: muxer options: what a muxer writes reaches the file at once (so that a full disk is seen
#: within a second, and a file cut short by a crash loses little); WebM and MP4 add their own
FLUSH = {"flush_packets": "1"}
ID_PATTERN = re.compile(r"RC_[0-9a-f]{12}")
FILE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
#: why a recording stops
STOP_REASONS = ("stopped", "room_closed", "error", "server_shutdown")


# -- events -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RecordingStarted(Event):
    """The room is being recorded, since ``started_at_ms`` (ms since the epoch); ``by``: who
    started it (None: an administrator, through the API); ``ongoing``: it was already under
    way (told to someone who joins a room being recorded)."""

    recording_id: str
    started_at_ms: int
    by: ParticipantRef | None
    ongoing: bool = False


@dataclass(frozen=True, slots=True)
class RecordingStopped(Event):
    """The recording stopped: ``reason`` is one of STOP_REASONS (``error``: ``message`` says
    what could not be written); ``by``: who stopped it, if someone did."""

    recording_id: str
    by: ParticipantRef | None
    reason: str
    message: str


# -- the forwarding path's side -----------------------------------------------------------------
class RecordingSink(PacketQueue):
    """A Publisher sink: each packet is appended to a bounded queue, nothing more (the
    forwarding path does it, with no call: a PacketQueue). The recorder's feeder thread takes
    the packets from the queue (deque.popleft; appends are atomic: no lock on the forwarding
    path) and hands them to the writer process."""

    __slots__ = ()

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        super().__init__(deque(), limit)

    @property
    def queue(self) -> deque[tuple[bytes, int, int, float, int]]:
        """The queued packets: (data, seq, ts, arrival, layer)."""
        return self.packets


# -- the writer process's side ------------------------------------------------------------------
class _Unwrap32:
    """Extends 32-bit RTP timestamps, which wrap, to a monotonic count."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.value = 0

    def __call__(self, ts: int) -> int:
        if self.last is None:
            self.value = ts
        else:
            delta = (ts - self.last) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 0x100000000
            self.value += delta
        self.last = ts
        return self.value


class _TrackWriter:
    """Writes one track: drains its inbox, reorders, writes; runs in the writer process."""

    latency = VIDEO_LATENCY
    kind = "video"

    def __init__(
        self,
        sink: _Inbox,
        path: Path,
        t0: float,
        clock_rate: int,
        request_keyframe: Callable[[int], None],
    ) -> None:
        self.sink = sink
        self.path = path
        self.t0 = t0
        self.clock_rate = clock_rate
        self.time_base = Fraction(1, clock_rate)
        self.request_keyframe = request_keyframe
        self.buffers: dict[int, JitterBuffer] = {}  # by simulcast layer
        self.last_arrival: dict[int, float] = {}
        self.container: Any = None
        self.stream: Any = None
        self.first_arrival: float | None = None
        self.last_pts: int | None = None
        self.end_pts = 0  # the end of what was written, in clock_rate units
        self.packets = 0
        self.written = 0  # packets (audio) or frames (video) muxed
        self.opened = False  # the file was created (the manifest should say so)

    # draining ---------------------------------------------------------------------------------
    def feed(self, now: float) -> bool:
        """Take what the sink queued and write what is ready; True once the track ended.
        ``now``: when the queue was taken (a gap is given up as lost only if its packet had not
        come by then, however late the writer gets to it: a writer short of CPU behind a
        backlog must not declare lost what the backlog holds)."""
        closed = self.sink.closed  # read before draining: nothing is queued after close()
        queue = self.sink.queue
        while queue:  # in arrival order, every layer: what comes out is decided in that order
            data, seq, ts, arrival, layer = queue.popleft()
            self.packets += 1
            buffer = self.buffers.get(layer)
            if buffer is None:
                buffer = self.buffers[layer] = JitterBuffer(self.latency)
            self.last_arrival[layer] = arrival
            for item in buffer.push(seq, (data, ts, arrival), arrival):
                self._item(layer, item)
            for item in buffer.pop(arrival):  # what was due when this packet came
                self._item(layer, item)
        for layer, buffer in self.buffers.items():
            for item in buffer.pop(now):
                self._item(layer, item)
        self._after(now)
        return closed

    def finish(self) -> None:
        """The end: write what is still waiting, close the file."""
        for layer, buffer in self.buffers.items():
            for item in buffer.flush():
                self._item(layer, item)
        self._flush()
        self.close()

    def close(self) -> None:
        container, self.container = self.container, None
        if container is not None:
            container.close()

    def abandon(self) -> None:
        """Close the file after a failure, ignoring further errors."""
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the failure was already reported
            pass

    def _item(self, layer: int, item: tuple[bytes, int, float] | Lost) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def _after(self, now: float) -> None:
        """Once per drain (keyframe requests)."""

    def _flush(self) -> None:
        """Frames still being assembled."""

    # writing ----------------------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def _mux(self, data: bytes, pts: int, duration: int, key: bool, arrival: float) -> None:
        if self.container is None:
            self._open()
            self.opened = True
            self.first_arrival = arrival
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.time_base = self.time_base
        if duration:
            packet.duration = duration
        packet.is_keyframe = key
        packet.stream = self.stream
        self.container.mux(packet)
        self.written += 1
        self.last_pts = pts
        self.end_pts = max(self.end_pts, pts + duration)

    def stats(self) -> dict[str, Any]:
        """Figures for the manifest."""
        lost = sum(b.lost for b in self.buffers.values())
        start = None if self.first_arrival is None else self.first_arrival - self.t0
        return {
            "start": None if start is None else round(start, 3),
            "duration": round(self.end_pts / self.clock_rate, 3),
            "end": None if start is None else round(start + self.end_pts / self.clock_rate, 3),
            "packets": self.packets,
            "lost": lost,
            "dropped": self.sink.dropped,
        }


class _OpusWriter(_TrackWriter):
    """Opus into Ogg. Packets are placed by their RTP timestamps; what is missing (mute, DTX,
    loss) becomes Opus silence frames, so the file is continuous."""

    latency = AUDIO_LATENCY
    kind = "audio"

    def __init__(self, *args: Any, channels: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channels = 2 if channels >= 2 else 1
        self.unwrap = _Unwrap32()
        self.base = 0  # extended RTP timestamp of pts 0
        self.next_pts = 0
        self.arrival = 0.0
        self.silence = 0  # silence frames written in gaps

    def _open(self) -> None:
        self.container = av.open(str(self.path), "w", format="ogg", options=FLUSH)
        # an encoder's stream, never given a frame: opening it writes the OpusHead the Ogg
        # muxer needs; the packets are the publisher's, as received
        self.stream = self.container.add_stream(
            "libopus", rate=48000, layout="stereo" if self.channels == 2 else "mono"
        )

    def _item(self, layer: int, item: tuple[bytes, int, float] | Lost) -> None:
        if isinstance(item, Lost):
            return  # the timestamps of what follows place it; the gap becomes silence
        data, ts, arrival = item
        off, end = payload_offset(data), payload_end(data)
        if off < 0 or end <= off:
            return
        payload = data[off:end]
        samples = opus_samples(payload, self.clock_rate)
        if not samples:
            return
        ext = self.unwrap(ts)
        if self.container is None:
            self.base = ext
        pos = ext - self.base
        if self.container is not None:
            gap = pos - self.next_pts
            elapsed = arrival - self.arrival
            if gap < -5760 or gap > (elapsed + DISCONTINUITY) * self.clock_rate:
                # the timestamps jumped (the publisher started over): follow the clock
                pos = self.next_pts + max(0, round(elapsed * self.clock_rate) - samples)
                self.base = ext - pos
            if pos < self.next_pts - samples // 2:
                return  # overlaps what was written (a duplicate)
            gap = pos - self.next_pts
            while gap >= 960:
                self._mux(OPUS_SILENCE_20MS, self.next_pts, 960, True, arrival)
                self.next_pts += 960
                self.silence += 1
                gap -= 960
            if gap >= 480:
                self._mux(OPUS_SILENCE_10MS, self.next_pts, 480, True, arrival)
                self.next_pts += 480
                self.silence += 1
            pos = max(pos, self.next_pts)
        self._mux(payload, pos, samples, True, arrival)
        self.next_pts = pos + samples
        self.arrival = arrival

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "silence_frames": self.silence}


class _VideoWriter(_TrackWriter):
    """Whole video frames, from the highest simulcast layer that flows; the writer starts, and
    starts again after a loss, at a keyframe (asking the publisher for one)."""

    fmt = ""
    codec = ""
    options: dict[str, str] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.assemblers: dict[int, FrameAssembler] = {}
        self.unwraps: dict[int, _Unwrap32] = {}
        self.current: int | None = None  # the layer written
        self.offset = 0  # pts = extended RTP timestamp - offset (of the current layer)
        self.arrival = 0.0
        self.last_request = -1e9
        self.keyframe_requests = 0
        self.switches = 0
        self.width = self.height = 0  # of the file's first frame (the container says it)
        self.largest = (0, 0)  # the largest frame written

    def _assembler(self) -> FrameAssembler:
        raise NotImplementedError  # pragma: no cover - abstract

    def _target(self, at: float) -> int:
        """The highest layer that sent something in the LAYER_STALE seconds before ``at``."""
        fresh = [k for k, t in self.last_arrival.items() if at - t <= LAYER_STALE]
        return max(fresh) if fresh else max(self.last_arrival)

    def _item(self, layer: int, item: tuple[bytes, int, float] | Lost) -> None:
        assembler = self.assemblers.get(layer)
        if assembler is None:
            assembler = self.assemblers[layer] = self._assembler()
            self.unwraps[layer] = _Unwrap32()
        if isinstance(item, Lost):
            assembler.lost(item.count)
            return
        data, ts, arrival = item
        off, end = payload_offset(data), payload_end(data)
        if off < 0 or end <= off:
            return  # padding only
        marker = bool(data[1] & 0x80)
        ext = self.unwraps[layer](ts)
        for frame in assembler.push(memoryview(data)[off:end], ext, marker, arrival):
            self._frame(layer, frame)

    def _flush(self) -> None:
        for layer, assembler in self.assemblers.items():
            for frame in assembler.flush():
                self._frame(layer, frame)

    def _frame(self, layer: int, frame: Any) -> None:
        if layer != self.current:
            if not frame.key or (self.current is not None and layer != self._target(frame.arrival)):
                return
            if self.container is None and not self._can_open(frame):
                self.assemblers[layer].need_keyframe = True
                return
            self._switch(layer, frame)
        pts = frame.ts - self.offset
        if self.last_pts is not None:
            delta = pts - self.last_pts
            elapsed = frame.arrival - self.arrival
            if delta <= 0 or delta > (elapsed + DISCONTINUITY) * self.clock_rate:
                pts = self.last_pts + max(1, round(elapsed * self.clock_rate))
                self.offset = frame.ts - pts
        self._mux(frame.data, pts, 0, frame.key, frame.arrival)
        self.arrival = frame.arrival
        if frame.width * frame.height > self.largest[0] * self.largest[1]:
            self.largest = (frame.width, frame.height)

    def _can_open(self, frame: Any) -> bool:
        return bool(frame.width and frame.height)

    def _switch(self, layer: int, frame: Any) -> None:
        if self.last_pts is None:
            pts = 0
        else:
            pts = self.last_pts + max(1, round((frame.arrival - self.arrival) * self.clock_rate))
            self.switches += 1
        self.offset = frame.ts - pts
        self.current = layer
        if self.container is None:
            self.width, self.height = frame.width, frame.height

    def _after(self, now: float) -> None:
        if not self.last_arrival:
            return
        target = self._target(max(self.last_arrival.values()))
        want: int | None = None
        if self.current is None or target != self.current:
            want = target
        elif self.assemblers[self.current].need_keyframe:
            want = self.current
        interval = KEYFRAME_INTERVAL if self.container is not None else FIRST_KEYFRAME_INTERVAL
        if want is not None and now - self.last_request >= interval:
            self.last_request = now
            self.keyframe_requests += 1
            self.request_keyframe(want)

    def _open(self) -> None:
        self.container = av.open(str(self.path), "w", format=self.fmt, options=self.options)
        self.stream = self.container.add_mux_stream(
            self.codec, width=self.width, height=self.height
        )

    def stats(self) -> dict[str, Any]:
        frames = sum(a.dropped for a in self.assemblers.values())
        return {
            **super().stats(),
            "frames": self.written,
            "frames_dropped": frames,
            "keyframe_requests": self.keyframe_requests,
            "layers": len(self.buffers),
            "layer_switches": self.switches,
            "width": self.largest[0],
            "height": self.largest[1],
        }


class _VP8Writer(_VideoWriter):
    fmt, codec = "webm", "vp8"
    options = {**FLUSH, "cluster_time_limit": "1000"}  # a cluster a second

    def _assembler(self) -> FrameAssembler:
        return VP8Assembler()


class _H264Writer(_VideoWriter):
    fmt, codec = "mp4", "h264"
    # fragmented, a fragment a second: a file cut short (a crash, a full disk) is readable up
    # to its last fragment; the first one waits for the first frame's parameter sets
    options = {
        **FLUSH,
        "movflags": "empty_moov+delay_moov+default_base_moof",
        "frag_duration": "1000000",
    }

    def _assembler(self) -> FrameAssembler:
        return H264Assembler()

    def _can_open(self, frame: Any) -> bool:
        return bool(frame.width and frame.height and frame.has_parameter_sets)


#: mime type (lower case) -> (writer, file extension)
WRITERS: dict[str, tuple[type[_TrackWriter], str]] = {
    "audio/opus": (_OpusWriter, "ogg"),
    "video/vp8": (_VP8Writer, "webm"),
    "video/h264": (_H264Writer, "mp4"),
}


class _Inbox:
    """A track's packets in the writer process, as the feeder thread sent them (what a
    RecordingSink holds in the server's process)."""

    def __init__(self) -> None:
        self.queue: deque[tuple[bytes, int, int, float, int]] = deque()
        self.closed = False  # the track ended: nothing more comes
        self.dropped = 0  # the sink's count, in the server's process


@dataclass(frozen=True, slots=True)
class _TrackSpec:
    """What the writer process needs to write a track (sent once, when the track starts)."""

    key: str  # the file's name (unique in the recording)
    mime: str  # lower case: a key of WRITERS
    path: str
    t0: float  # the recording's start (time.monotonic: one clock for both processes)
    clock_rate: int
    channels: int = 2


def _track_report(writer: _TrackWriter) -> dict[str, Any]:
    """What the manifest says of a finished track, sent back to the server's process."""
    return {
        "stats": writer.stats(),
        "file": writer.path.name if writer.opened else None,
        "written": writer.written,
    }


def writer_process(conn: Connection) -> None:
    """The writer process's main: writes the tracks the feeder thread describes and feeds,
    until told to stop (or the server's process is gone). Replies, on the same connection:
    ``("ready", cpu seconds)`` first, ``("opened", key, file)``, ``("keyframe", key, layer)``,
    ``("done", key, status, note, report)`` and last ``("finished", failure or None, cpu
    seconds)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the server stops us, files closed
    try:
        os.nice(NICENESS)  # its queues absorb a writer that falls behind; a late packet does not
    except OSError:
        pass
    writers: dict[str, _TrackWriter] = {}
    inboxes: dict[str, _Inbox] = {}

    def ask(key: str, layer: int) -> None:
        conn.send(("keyframe", key, layer))

    failure: str | None = None
    try:
        conn.send(("ready", time.process_time()))
        stopping = False
        while not stopping and failure is None:
            message = conn.recv()
            if message[0] == "open":
                spec: _TrackSpec = message[1]
                cls = WRITERS[spec.mime][0]
                extra: dict[str, Any] = {"channels": spec.channels} if cls is _OpusWriter else {}
                inbox = inboxes[spec.key] = _Inbox()
                writers[spec.key] = cls(
                    inbox,
                    Path(spec.path),
                    spec.t0,
                    spec.clock_rate,
                    functools.partial(ask, spec.key),
                    **extra,
                )
                continue
            now = time.monotonic()
            if message[0] == "stop":
                stopping = True
            else:  # ("feed", [(key, packets, closed, dropped), ...], when they were taken)
                for key, packets, closed, dropped in message[1]:
                    fed = inboxes.get(key)
                    if fed is not None:
                        fed.queue.extend(packets)
                        fed.closed = fed.closed or closed
                        fed.dropped = dropped
                now = message[2]  # the server's clock then: what had come by then is here
            for key, writer in list(writers.items()):
                opened = writer.opened
                try:
                    if writer.feed(now):
                        writer.finish()
                        del writers[key]
                        conn.send(("done", key, "complete", "", _track_report(writer)))
                        continue
                except OSError as exc:
                    failure = describe_os_error(exc)
                    break
                except Exception as exc:  # a bug, or media the muxer refuses: this track only
                    logger.exception("recording: track %s failed", writer.path.name)
                    writer.abandon()
                    del writers[key]
                    note = f"{type(exc).__name__}: {exc}"[:300]
                    conn.send(("done", key, "failed", note, _track_report(writer)))
                    continue
                if writer.opened and not opened:
                    conn.send(("opened", key, writer.path.name))
        for key, writer in writers.items():
            if failure is None:
                try:
                    writer.finish()
                    conn.send(("done", key, "complete", "", _track_report(writer)))
                    continue
                except OSError as exc:
                    failure = describe_os_error(exc)
            writer.abandon()
            conn.send(("done", key, "failed", failure or "", _track_report(writer)))
        conn.send(("finished", failure, time.process_time()))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        for writer in writers.values():  # the server's process is gone: close what we can
            try:
                writer.finish()
            except Exception:  # noqa: BLE001 - nobody left to tell
                writer.abandon()
    except Exception as exc:  # a bug: say so (the recording stops with it)
        logger.exception("recording: the writer process failed")
        for writer in writers.values():
            writer.abandon()
        try:
            conn.send(("finished", f"internal error: {type(exc).__name__}: {exc}"[:300], 0.0))
        except OSError:
            pass


def _safe_name(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:limit] or "participant"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def describe_os_error(exc: OSError) -> str:
    """What a failed write means, for people: 'no space left on device', 'permission
    denied: /srv/recordings/...'."""
    if exc.errno == errno.ENOSPC:
        what = "no space left on device"
    elif exc.errno == errno.EDQUOT:
        what = "disk quota exceeded"
    else:
        what = (exc.strerror or type(exc).__name__).lower()
    name = exc.filename if isinstance(exc.filename, str) else None
    return f"{what}: {name}" if name else what


def _ref(p: ParticipantRef | None) -> dict[str, str] | None:
    return None if p is None else {"sid": p.sid, "identity": p.identity, "name": p.name}


# -- the recorder -------------------------------------------------------------------------------
class Recorder:
    """Records one room into ``directory/<recording id>/`` until stopped.

    Use from the event loop's thread: ``start()``, then ``stop()``; ``await wait_closed()``
    for the files to be complete. ``on_stopped(recorder)`` is called when it stops, whatever
    the reason (a write that failed stops it too).
    """

    def __init__(
        self,
        room: Room,
        directory: str | os.PathLike[str],
        by: ParticipantRef | None = None,
        *,
        requested_by: str = "",
        on_stopped: Callable[[Recorder], None] | None = None,
        queue_limit: int = QUEUE_LIMIT,
        recording_id: str | None = None,
        title: str = "",
    ) -> None:
        self.room = room
        self.id = recording_id or new_sid("RC")
        self.root = Path(directory)
        self.directory = self.root / self.id
        self.by = by
        self.on_stopped = on_stopped
        self.queue_limit = queue_limit
        self.started_at = 0.0  # epoch seconds
        self.t0 = 0.0  # monotonic time of the start: track offsets count from it
        self.stopped = False
        self.stop_reason = ""
        self.error: str | None = None
        self.sinks: dict[str, tuple[Publisher, RecordingSink]] = {}  # by track sid
        self._lock = threading.Lock()  # guards the manifest (loop thread and feeder thread)
        self.manifest: dict[str, Any] = {
            "version": 1,
            "id": self.id,
            "room": room.name,
            "title": title,  # the meeting's name, when the room has one ("Weekly review")
            "room_sid": room.sid,
            "status": "recording",
            "started_at": "",
            "started_at_ms": 0,
            "stopped_at": None,
            "duration": None,
            "started_by": _ref(by) or ({"api": requested_by} if requested_by else None),
            "stopped_by": None,
            "stop_reason": None,
            "error": None,
            "participants": [],
            "tracks": [],
        }
        #: tracks to write, for the feeder thread: (what the writer needs, its sink, the
        #: manifest's entry, the publisher)
        self._incoming: SimpleQueue[tuple[_TrackSpec, RecordingSink, dict, Publisher]] = (
            SimpleQueue()
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"recorder-{self.id}", daemon=True)
        self.process: multiprocessing.process.BaseProcess | None = None  # the writer process
        self.writer_cpu = 0.0  # CPU seconds the writer process used (known once it finished)
        self.writer_startup_cpu = 0.0  # ... of which starting (imports: PyAV, numpy)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[str | None] | None = None
        self._participants: dict[str, dict[str, Any]] = {}

    # -- control, on the event loop's thread -----------------------------------------------
    @property
    def active(self) -> bool:
        """Recording now."""
        return self._thread.is_alive() and not self.stopped

    def start(self) -> None:
        """Tell the room, attach a sink to every track (those published later too) and start
        the feeder thread (which starts the writer process)."""
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self.started_at = time.time()
        self.t0 = time.monotonic()
        with self._lock:
            self.manifest["started_at"] = _iso(self.started_at)
            self.manifest["started_at_ms"] = int(self.started_at * 1000)
        for p in self.room.visible():
            self.note_participant(p.ref())
        self._thread.start()
        self.room.broadcast(RecordingStarted(self.id, int(self.started_at * 1000), self.by))
        logger.info(
            "recording %s of room %s started by %s, in %s",
            self.id,
            self.room.name,
            self.by.identity if self.by else self.manifest["started_by"] or "the server",
            self.directory,
        )
        self.room.watch_tracks(self._on_track)

    async def wait_ready(self, timeout: float = 5.0) -> str | None:
        """None once the recording's directory and manifest are written and its writer process
        runs; else why not."""
        if self._ready is None:
            return "not started"
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            return None  # still trying: a slow disk; a failure will stop it and say so

    def note_participant(self, ref: ParticipantRef, present: bool = True) -> None:
        """Someone came (or left): the manifest lists everyone who was in the room. Someone who
        left (or was moved to another room, tracks and all) is no longer recorded: their
        tracks' files end here (a new file starts if they come back)."""
        if not present:
            for sid, (publisher, sink) in list(self.sinks.items()):
                if publisher.participant_sid == ref.sid:
                    publisher.detach(sink)
                    sink.close()
                    del self.sinks[sid]
        offset = round(time.monotonic() - self.t0, 3)
        with self._lock:
            entry = self._participants.get(ref.sid)
            if entry is None:
                if not present:
                    return
                entry = {"sid": ref.sid, "identity": ref.identity, "name": ref.name}
                entry.update(joined=max(offset, 0.0), left=None)
                self._participants[ref.sid] = entry
                self.manifest["participants"].append(entry)
            elif present:
                entry["name"] = ref.name
                entry["left"] = None
            else:
                entry["left"] = offset

    def _on_track(self, participant: Participant, publisher: Publisher) -> None:
        if self.stopped or publisher.sid in self.sinks:
            return
        if participant.permissions.hidden:
            return
        self.note_participant(participant.ref())
        mime = publisher.codec.mime.lower()
        writer_cls, ext = WRITERS.get(mime, (None, ""))
        with self._lock:
            index = len(self.manifest["tracks"]) + 1
            name = f"{index:02d}-{_safe_name(participant.identity)}-{publisher.source}.{ext}"
            entry: dict[str, Any] = {
                "track": publisher.sid,
                "participant": participant.sid,
                "identity": participant.identity,
                "name": participant.name,
                "kind": publisher.kind,
                "source": publisher.source,
                "mime": publisher.codec.mime,
                "clock_rate": publisher.codec.clock_rate,
                "file": None,
                "status": "waiting",
                "note": "",
                "start": None,
                "end": None,
            }
            self.manifest["tracks"].append(entry)
        if writer_cls is None:
            entry["status"] = "skipped"
            entry["note"] = f"{publisher.codec.mime} is not recorded (Opus, VP8 and H.264 are)"
            logger.warning(
                "recording %s: track %s of %s not recorded: %s is not supported "
                "(Opus, VP8 and H.264 are)",
                self.id,
                publisher.sid,
                participant.identity,
                publisher.codec.mime,
            )
            return
        sink = RecordingSink(self.queue_limit)
        spec = _TrackSpec(
            name,  # unique: the same track, moved out and back, gets a new file
            mime,
            str(self._track_path(name)),
            self.t0,
            publisher.codec.clock_rate,
            publisher.codec.channels or 2,
        )
        self.sinks[publisher.sid] = (publisher, sink)
        self._incoming.put((spec, sink, entry, publisher))
        publisher.attach(sink)
        if publisher.kind == "video":
            publisher.request_keyframe()  # a new video sink starts at a keyframe

    def _track_path(self, name: str) -> Path:
        """Where a track's file is written."""
        return self.directory / name

    def _ask_keyframe(self, publisher: Publisher, layer: int) -> None:
        """From the feeder thread (the writer asked): ask the publisher for a keyframe, on the
        loop's thread."""
        loop = self._loop
        if loop is None or self.stopped:
            return
        try:
            loop.call_soon_threadsafe(self._keyframe_now, publisher, layer)
        except RuntimeError:  # the loop is closed
            pass

    def _keyframe_now(self, publisher: Publisher, layer: int) -> None:
        if not self.stopped and not publisher.closed:
            publisher.request_keyframe(layer=layer)

    def stop(
        self, by: ParticipantRef | None = None, reason: str = "stopped", message: str = ""
    ) -> bool:
        """Stop recording (the writer process finishes the files); False if already stopped."""
        if self.stopped:
            return False
        self.stopped = True
        self.stop_reason = reason
        try:
            self.room.track_watchers.remove(self._on_track)
        except ValueError:
            pass
        for publisher, sink in self.sinks.values():
            publisher.detach(sink)
            sink.close()
        now = time.time()
        with self._lock:
            self.manifest["stopped_at"] = _iso(now)
            self.manifest["duration"] = round(time.monotonic() - self.t0, 3)
            self.manifest["stopped_by"] = _ref(by)
            self.manifest["stop_reason"] = reason
            if message:
                self.manifest["error"] = message
        self._stop.set()
        self.room.broadcast(RecordingStopped(self.id, by, reason, message))
        logger.info(
            "recording %s of room %s stopped (%s%s)",
            self.id,
            self.room.name,
            reason,
            f" by {by.identity}" if by else "",
        )
        if self.on_stopped is not None:
            try:
                self.on_stopped(self)
            except Exception:
                logger.exception("recording %s: on_stopped failed", self.id)
        return True

    async def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait for the writer process to finish the files; False on timeout."""
        if self._thread.ident is None:
            return True
        await asyncio.to_thread(self._thread.join, timeout)
        return not self._thread.is_alive()

    def close_now(self, timeout: float = 10.0) -> None:
        """Stop (reason server_shutdown) and wait for the files, blocking (at exit)."""
        self.stop(reason="server_shutdown")
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def summary(self) -> dict[str, Any]:
        """The recording in short (the admin API's list)."""
        with self._lock:
            return summarize(self.manifest)

    # -- the feeder thread -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._work()
        except Exception as exc:  # a bug: say so, and stop rather than record nothing quietly
            logger.exception("recording %s: the feeder failed", self.id)
            self._signal(self._set_ready, f"internal error: {type(exc).__name__}")
            self._fail(f"internal error: {type(exc).__name__}: {exc}"[:300])
        finally:
            self._end_process()

    def _start_process(self) -> Connection:
        """Start the writer process; returns this side of its connection."""
        ctx = multiprocessing.get_context("spawn")  # nothing of the server's state is copied
        mine, theirs = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=writer_process, args=(theirs,), name=f"visio-recorder-{self.id}", daemon=True
        )
        self.process.start()
        theirs.close()  # ours only: its end of file tells us the process died
        return mine

    def _end_process(self) -> None:
        process = self.process
        if process is None:
            return
        process.join(FINISH_TIMEOUT if process.exitcode is None else 0)
        if process.exitcode is None:
            logger.error("recording %s: the writer process did not end; killed", self.id)
            process.kill()
            process.join(5)

    def _work(self) -> None:
        try:
            self.directory.mkdir(parents=True)
            self._write_manifest()
        except OSError as exc:
            message = describe_os_error(exc)
            self._signal(self._set_ready, message)
            self._fail(message)
            return
        try:
            conn = self._start_process()
        except (OSError, RuntimeError) as exc:
            message = f"the recording's writer process could not start: {exc}"[:300]
            self._signal(self._set_ready, message)
            self._fail(message)
            return
        tracks: dict[str, tuple[RecordingSink, dict[str, Any], Publisher]] = {}
        ended: set[str] = set()  # tracks whose end was sent
        done: set[str] = set()  # tracks the writer finished
        failure: str | None = None
        finished = False
        try:
            deadline: float | None = None
            while not finished:
                stopping = self._stop.is_set()
                while True:
                    try:
                        spec, sink, entry, publisher = self._incoming.get_nowait()
                    except Empty:
                        break
                    tracks[spec.key] = (sink, entry, publisher)
                    if deadline is None:
                        conn.send(("open", spec))
                if deadline is None:
                    batch = []
                    for key, (sink, _entry, _publisher) in tracks.items():
                        if key in ended:
                            continue
                        closed = sink.closed  # read first: nothing is queued after close()
                        queue = sink.queue
                        packets = [queue.popleft() for _ in range(len(queue))]
                        if closed:
                            ended.add(key)
                        if packets or closed:
                            batch.append((key, packets, closed, sink.dropped))
                    conn.send(("feed", batch, time.monotonic()))
                    if stopping:
                        conn.send(("stop",))
                        deadline = time.monotonic() + FINISH_TIMEOUT
                next_feed = time.monotonic() + POLL_INTERVAL
                dirty = False
                while not finished:  # replies until the next feed (or the end)
                    wait = (deadline if deadline is not None else next_feed) - time.monotonic()
                    if not conn.poll(max(wait, 0.0)):
                        if deadline is not None:
                            failure = failure or "the writer process did not finish in time"
                            finished = True
                        break
                    message = conn.recv()
                    what = message[0]
                    if what == "ready":  # the files can be written: say the recording runs
                        self.writer_startup_cpu = message[1]
                        self._signal(self._set_ready, None)
                    elif what == "opened":
                        entry = tracks[message[1]][1]
                        with self._lock:
                            entry["file"] = message[2]
                            entry["status"] = "recording"
                        dirty = True
                    elif what == "keyframe":
                        self._ask_keyframe(tracks[message[1]][2], message[2])
                    elif what == "done":
                        key, status, note, report = message[1:]
                        done.add(key)
                        self._track_done(tracks[key][1], status, note, report)
                        dirty = True
                    elif what == "finished":
                        failure, self.writer_cpu = message[1], message[2]
                        finished = True
                if dirty and not finished:
                    try:
                        self._write_manifest()
                    except OSError as exc:
                        failure = describe_os_error(exc)
                        break
                if failure is not None and not finished and deadline is None:
                    break
        except (EOFError, OSError):  # the pipe broke: the writer process died
            process = self.process
            if process is not None:
                process.join(1)
            code = None if process is None else process.exitcode
            failure = f"the recording's writer process ended unexpectedly (exit code {code})"
        if not finished:
            try:
                conn.send(("stop",))  # a manifest that cannot be written: close what is open
            except OSError:
                pass
        conn.close()
        for key, (_sink, entry, _publisher) in tracks.items():
            if key not in done:
                with self._lock:
                    entry["status"] = "failed"
                    entry["note"] = failure or "not finished"
        with self._lock:
            self.manifest["status"] = "failed" if failure else "complete"
            if failure:
                self.manifest["error"] = failure
        try:
            self._write_manifest()
        except OSError as exc:
            failure = failure or describe_os_error(exc)
        if failure:
            self._signal(self._set_ready, failure)  # if it never was ready
            self._fail(failure)

    def _track_done(
        self, entry: dict[str, Any], status: str, note: str, report: dict[str, Any]
    ) -> None:
        with self._lock:
            entry.update(report["stats"])
            if report["file"]:
                entry["file"] = report["file"]
            entry["status"] = status if report["written"] or status == "failed" else "empty"
            if note:
                entry["note"] = note
            elif not report["written"]:
                entry["note"] = "nothing was received to write (no keyframe, or no packet)"

    def _write_manifest(self) -> None:
        with self._lock:
            text = json.dumps(self.manifest, indent=2, ensure_ascii=False)
        path = self.directory / MANIFEST
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, path)

    def _signal(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed (the process is ending)
            pass

    def _set_ready(self, error: str | None) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(error)

    def _fail(self, message: str) -> None:
        """From the feeder thread: a write failed; stop, on the loop's thread."""
        self.error = message
        with self._lock:
            self.manifest["error"] = message
        self._signal(self._failed, message)

    def _failed(self, message: str) -> None:
        logger.error(
            "recording %s of room %s stopped: cannot write in %s: %s (the meeting goes on)",
            self.id,
            self.room.name,
            self.directory,
            message,
        )
        self.stop(None, "error", message)


# -- recordings on disk -------------------------------------------------------------------------
def summarize(manifest: dict[str, Any]) -> dict[str, Any]:
    """A recording in short, from its manifest."""
    return {
        "id": manifest.get("id"),
        "room": manifest.get("room"),
        "title": manifest.get("title", ""),
        "status": manifest.get("status"),
        "started_at": manifest.get("started_at"),
        "duration": manifest.get("duration"),
        "participants": len(manifest.get("participants") or []),
        "tracks": len(manifest.get("tracks") or []),
        "files": [t["file"] for t in manifest.get("tracks") or [] if t.get("file")],
    }


def read_manifest(root: str | os.PathLike[str], recording_id: str) -> dict[str, Any] | None:
    """A recording's manifest, or None (no such recording, or an invalid id)."""
    if not ID_PATTERN.fullmatch(recording_id):
        return None
    try:
        with open(Path(root) / recording_id / MANIFEST, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def list_recordings(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every recording under ``root``, in short (with its size in bytes), oldest first."""
    out: list[dict[str, Any]] = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return out
    for name in names:
        manifest = read_manifest(root, name)
        if manifest is None:
            continue
        item = summarize(manifest)
        size = 0
        for file in os.scandir(Path(root) / name):
            try:
                size += file.stat().st_size
            except OSError:
                pass
        item["bytes"] = size
        out.append(item)
    out.sort(key=lambda r: str(r.get("started_at") or ""))
    return out


def recording_file(root: str | os.PathLike[str], recording_id: str, name: str) -> Path | None:
    """The path of one of a recording's files (its media files and its manifest), or None."""
    manifest = read_manifest(root, recording_id)
    if manifest is None or not FILE_PATTERN.fullmatch(name):
        return None
    names = {MANIFEST} | {t["file"] for t in manifest.get("tracks") or [] if t.get("file")}
    if name not in names:
        return None
    path = Path(root) / recording_id / name
    return path if path.is_file() else None


def delete_recording(root: str | os.PathLike[str], recording_id: str) -> bool:
    """Delete a recording's directory; False if there is no such recording."""
    if not ID_PATTERN.fullmatch(recording_id):
        return False
    path = Path(root) / recording_id
    if not (path / MANIFEST).is_file():
        return False
    shutil.rmtree(path)
    return True
