"""A transcription worker process: many tracks' audio in, recognised lines out.

Runs :func:`serve` in a process of its own (multiprocessing, spawn): feature extraction and
decoding hold the GIL, so none of this may run in the server's event loop. Messages in (tuples,
on a bounded queue):

- ``("open", key, language, partials, diarize)``, ``("language", key, language)``,
  ``("close", key)``
- ``("audio", key, first_arrival, [(seq, ts, payload), ...])``
- ``("stop",)``

Messages out: ``("ready", backend)`` or ``("failed", message)`` once at start;
``("line", key, utterance, final, start, end, text, level, language, speaker)`` (speaker: 1, 2,
... on a shared microphone whose voices are told apart, else 0); ``("error", key, message)``;
``("closed", key)``; ``("dropped", key, partials)``.

Scheduling: finals are recognised in the order their utterances ended, always; a partial runs
only when no final waits and no input is queued, and only the newest partial of a track is kept:
under load partials are dropped, finals never are.
"""

from __future__ import annotations

import logging
import os
import queue
import time
import traceback
from collections import deque
from typing import Any

logger = logging.getLogger(__name__)

NICENESS = 5  # added to the worker's nice value: the server's event loop is scheduled first


def serve(inbox: Any, outbox: Any, spec: Any) -> None:
    """The worker's main loop (the target of its process)."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # never any network access for models
    try:  # when the CPU is short, forwarding media comes before recognising it
        os.nice(NICENESS)
    except OSError:
        pass
    os.environ.setdefault("OMP_NUM_THREADS", str(max(getattr(spec, "threads", 1), 1)))
    from .backends import build_backend
    from .stream import AudioStream, OpusDecoder, StreamingVad

    try:
        backend = build_backend(spec)
        vad_session = StreamingVad().session
    except Exception as exc:  # the model could not load: say why, and stop
        outbox.put(("failed", f"{type(exc).__name__}: {exc}"))
        return
    outbox.put(("ready", backend.name))
    streams: dict[str, AudioStream] = {}
    finals: deque = deque()
    partials: dict[str, Any] = {}  # key -> newest partial job
    clusters: dict[str, Any] = {}  # key -> SpeakerClusters, for shared microphones
    encoder: list[Any] = []  # the voice encoder, loaded at the first shared microphone
    dropped: dict[str, int] = {}

    def handle(msg: tuple) -> bool:
        kind = msg[0]
        if kind == "audio":
            stream = streams.get(msg[1])
            if stream is not None:
                stream.push(msg[3], msg[2])
                collect(stream.jobs())
        elif kind == "open":
            streams[msg[1]] = AudioStream(
                msg[1],
                msg[2],
                vad=StreamingVad(vad_session),
                decoder=OpusDecoder(),
                partial_interval=1.0 if msg[3] else float("inf"),
            )
            if len(msg) > 4 and msg[4]:
                try:
                    from .speakers import SpeakerClusters, VoiceEncoder

                    if not encoder:
                        encoder.append(VoiceEncoder())
                    clusters[msg[1]] = SpeakerClusters()
                except (OSError, ValueError) as exc:
                    outbox.put(("error", msg[1], f"speakers not told apart: {exc}"))
        elif kind == "language":
            if msg[1] in streams:
                streams[msg[1]].language = msg[2]
        elif kind == "close":
            stream = streams.pop(msg[1], None)
            if stream is not None:
                collect(stream.close())
            clusters.pop(msg[1], None)
            finals.append(("closed", msg[1]))
        elif kind == "stop":
            return False
        return True

    def collect(jobs: list) -> None:
        for job in jobs:
            if job.final:
                finals.append(job)
                partials.pop(job.key, None)
            else:
                if job.key in partials:
                    dropped[job.key] = dropped.get(job.key, 0) + 1
                partials[job.key] = job

    def recognise(job: Any) -> None:
        try:
            text = backend.transcribe(job.audio, job.language, job.final)
        except Exception as exc:
            outbox.put(("error", job.key, str(exc)[:300]))
            return
        speaker = 0
        if text and job.final and job.key in clusters:
            try:
                speaker = clusters[job.key].assign(encoder[0].embed(job.audio))
            except Exception as exc:  # never lose the line for its label
                outbox.put(("error", job.key, f"speaker embedding failed: {exc}"))
        if text:
            outbox.put(
                (
                    "line",
                    job.key,
                    job.utterance,
                    job.final,
                    job.start,
                    job.end,
                    text,
                    job.level,
                    job.language,
                    speaker,
                )
            )

    running = True
    while running or finals:
        busy = bool(finals or partials)
        try:
            msg = inbox.get(timeout=0 if busy else 0.5) if running else None
        except queue.Empty:
            msg = None
        except (EOFError, OSError):
            break  # the server is gone
        if msg is not None:
            try:
                running = handle(msg)
            except Exception:
                outbox.put(("error", None, traceback.format_exc(limit=3)[-500:]))
            continue  # drain the inbox first: audio keeps the VAD current
        if finals:
            item = finals.popleft()
            if isinstance(item, tuple):
                outbox.put(item)  # ("closed", key): after that stream's last final
            else:
                recognise(item)
        elif partials:
            key = next(iter(partials))
            job = partials.pop(key)
            if key in streams and streams[key].utterance == job.utterance:
                recognise(job)
        for key, count in list(dropped.items()):
            outbox.put(("dropped", key, count))
            del dropped[key]
    outbox.put(("stopped", time.process_time()))
