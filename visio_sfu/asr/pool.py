"""The server's side of the transcription workers: processes, bounded queues, results.

A :class:`WorkerPool` spawns ``workers`` processes (multiprocessing, spawn: nothing of the
server is inherited), each loading the backend once and serving many tracks. A track is given to
the worker with the fewest tracks. Audio goes out on each worker's queue, bounded to
``queue_size`` batches (``put_nowait``: the event loop never waits; a full queue says so to the
caller, control messages always get in); results come
back on a reader thread per worker and are handed to the event loop with
``call_soon_threadsafe``.

A worker that dies (killed, out of memory, a crash in a native library) is spawned again and
its tracks are opened on the new one: the room keeps its transcription, minus what was being
said. Each handler is told (an ("error", ...) that says so). A worker that dies
``MAX_RESTARTS`` times within ``RESTART_WINDOW`` seconds is not spawned again: its tracks are
closed with an error, and a later :meth:`WorkerPool.open` spawns a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .backends import BackendSpec
from .worker import serve

logger = logging.getLogger(__name__)

Handler = Callable[[tuple], None]

MAX_RESTARTS = 3  # a worker dying this often within RESTART_WINDOW is not spawned again
RESTART_WINDOW = 600.0


class WorkerFailed(Exception):
    """A worker could not start (its backend or model failed to load): the message says why."""


class _Worker:
    def __init__(self, index: int, ctx: Any, spec: BackendSpec, queue_size: int) -> None:
        self.index = index
        self.inbox = ctx.Queue()  # bounded by the pool for audio; control always gets in
        self.outbox = ctx.Queue()
        self.process = ctx.Process(
            target=serve,
            args=(self.inbox, self.outbox, spec),
            name=f"visio-asr-{index}",
            daemon=True,
        )
        self.keys: set[str] = set()
        self.ready: asyncio.Future | None = None
        self.reader: threading.Thread | None = None
        self.alive = False
        self.dead = False  # it died or failed: its tracks were moved or closed
        self.cpu = 0.0


class WorkerPool:
    """Transcription worker processes shared by every room of a server."""

    def __init__(self, spec: BackendSpec, workers: int = 1, queue_size: int = 100) -> None:
        self.spec = spec
        self.size = max(workers, 1)
        self.queue_size = queue_size
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._handlers: dict[str, Handler] = {}
        self._where: dict[str, _Worker] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        #: key -> (language, partials, diarize): to open the track again on a new worker
        self._opened: dict[str, tuple[str, bool, bool]] = {}
        self._deaths: list[float] = []  # monotonic times of recent deaths
        self.started = False
        self.closing = False
        self.restarts = 0  # workers spawned again after one died
        self.full = 0  # audio batches refused because a worker's queue was full
        self.partials_dropped = 0

    async def start(self, timeout: float = 120.0) -> None:
        """Spawn the workers and wait until each has loaded its backend; WorkerFailed if one
        cannot (the others are stopped)."""
        if self.started:
            return
        self._loop = asyncio.get_running_loop()
        self.closing = False
        for i in range(self.size):
            self._workers.append(self._spawn(i))
        try:
            for worker in self._workers:
                assert worker.ready is not None
                await asyncio.wait_for(worker.ready, timeout)
        except (WorkerFailed, TimeoutError) as exc:
            await self.close()
            if isinstance(exc, TimeoutError):
                raise WorkerFailed(
                    f"the transcription worker did not start in {timeout} s"
                ) from None
            raise
        self.started = True

    def _spawn(self, index: int) -> _Worker:
        assert self._loop is not None
        worker = _Worker(index, self._ctx, self.spec, self.queue_size)
        worker.ready = self._loop.create_future()
        worker.ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
        worker.process.start()
        worker.alive = True
        worker.reader = threading.Thread(
            target=self._read, args=(worker,), name=f"visio-asr-reader-{index}", daemon=True
        )
        worker.reader.start()
        return worker

    def alive(self) -> bool:
        """Whether a worker runs (or is being spawned again)."""
        return any(w.alive for w in self._workers)

    # -- results -------------------------------------------------------------------------------
    def _read(self, worker: _Worker) -> None:
        """Reader thread: the worker's messages, to the event loop."""
        loop = self._loop
        assert loop is not None
        while True:
            try:
                msg = worker.outbox.get(timeout=1.0)
            except queue.Empty:
                if not worker.process.is_alive():
                    try:
                        loop.call_soon_threadsafe(self._died, worker)
                    except RuntimeError:  # the loop is closed
                        pass
                    return
                continue
            except (EOFError, OSError, ValueError):
                return
            try:
                loop.call_soon_threadsafe(self._dispatch, worker, msg)
            except RuntimeError:  # the loop is closed
                return
            if msg[0] in ("stopped", "failed"):
                return

    def _dispatch(self, worker: _Worker, msg: tuple) -> None:
        kind = msg[0]
        if kind == "ready":
            if worker.ready is not None and not worker.ready.done():
                worker.ready.set_result(msg[1])
            return
        if kind == "failed":
            logger.error("transcription worker %d failed: %s", worker.index, msg[1])
            if worker.ready is not None and not worker.ready.done():
                worker.ready.set_exception(WorkerFailed(msg[1]))
            self._lost(worker, f"the transcription worker failed: {msg[1]}", respawn=False)
            return
        if kind == "stopped":
            worker.alive = False
            worker.cpu = msg[1]
            return
        if kind == "dropped":
            self.partials_dropped += msg[2]
            return
        key = msg[1]
        if kind == "closed":
            worker.keys.discard(key)
            self._where.pop(key, None)
            self._opened.pop(key, None)
        handler = self._handlers.get(key) if key is not None else None
        if kind == "closed":
            self._handlers.pop(key, None)
        if handler is not None:
            try:
                handler(msg)
            except Exception:
                logger.exception("transcription result handler failed")
        elif kind == "error":
            logger.warning("transcription worker %d: %s", worker.index, msg[2])

    def _died(self, worker: _Worker) -> None:
        if worker.dead or self.closing:
            return
        logger.error(
            "transcription worker %d died (exit code %s)", worker.index, worker.process.exitcode
        )
        if worker.ready is not None and not worker.ready.done():
            worker.ready.set_exception(WorkerFailed("the transcription worker died at start"))
        self._lost(worker, "the transcription worker stopped", respawn=self.started)

    def _lost(self, worker: _Worker, reason: str, respawn: bool) -> None:
        """A worker is gone: spawn it again and move its tracks there, or (dying too often, or
        unable to load its backend) close its tracks with ``reason``."""
        if worker.dead:
            return
        worker.dead = True
        worker.alive = False
        keys, worker.keys = sorted(worker.keys), set()
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW] + [now]
        replacement = None
        if respawn and not self.closing and len(self._deaths) <= MAX_RESTARTS * self.size:
            replacement = self._spawn(worker.index)
            self._workers = [replacement if w is worker else w for w in self._workers]
            self.restarts += 1
            logger.warning("transcription worker %d spawned again", worker.index)
        elif respawn:
            reason += f" {len(self._deaths)} times in {RESTART_WINDOW:.0f} s: not restarted"
        for key in keys:
            handler = self._handlers.get(key)
            if replacement is not None and key in self._opened:
                replacement.keys.add(key)
                self._where[key] = replacement
                replacement.inbox.put_nowait(("open", key, *self._opened[key]))
                if handler is not None:
                    handler(("error", key, f"{reason}; restarted (a sentence may be lost)"))
                continue
            self._handlers.pop(key, None)
            self._where.pop(key, None)
            self._opened.pop(key, None)
            if handler is not None:
                handler(("error", key, reason))
                handler(("closed", key))
        if replacement is None:
            self._workers = [w for w in self._workers if w is not worker]
        worker.process.join(0)  # reaped if it has exited (never waits)
        self._close_queues(worker)

    @staticmethod
    def _close_queues(worker: _Worker) -> None:
        for q in (worker.inbox, worker.outbox):
            try:
                q.close()
                q.cancel_join_thread()
            except (OSError, ValueError):
                pass

    # -- streams -------------------------------------------------------------------------------
    def open(
        self,
        key: str,
        language: str,
        handler: Handler,
        partials: bool = True,
        diarize: bool = False,
    ) -> bool:
        """Start recognising a track; ``handler`` gets its ("line", ...), ("error", ...) and
        finally ("closed", key) messages; ``diarize``: a shared microphone whose voices are told
        apart (experimental). False if no worker is alive."""
        alive = [w for w in self._workers if w.alive]
        if not alive and self.started and not self.closing and self._loop is not None:
            # every worker died too often: a new start (a host turning it on again) tries anew
            self._deaths.clear()
            self._workers = [self._spawn(i) for i in range(self.size)]
            alive = list(self._workers)
        if not alive:
            return False
        worker = min(alive, key=lambda w: len(w.keys))
        worker.keys.add(key)
        self._where[key] = worker
        self._handlers[key] = handler
        self._opened[key] = (language, partials, diarize)
        worker.inbox.put_nowait(("open", key, language, partials, diarize))
        return True

    def send_audio(self, key: str, first_arrival: float, packets: list) -> bool:
        """Queue a batch of (seq, ts, payload); False when the worker's queue is full (the
        caller keeps the batch and tries again) or the track is unknown."""
        worker = self._where.get(key)
        if worker is None or not worker.alive:
            return False
        if worker.inbox.qsize() >= self.queue_size:
            self.full += 1
            return False
        worker.inbox.put_nowait(("audio", key, first_arrival, packets))
        return True

    def set_language(self, key: str, language: str) -> None:
        """Recognise this track in another language from its next utterance on."""
        if key in self._opened:
            self._opened[key] = (language, *self._opened[key][1:])
        worker = self._where.get(key)
        if worker is not None and worker.alive:
            worker.inbox.put_nowait(("language", key, language))

    def close_stream(self, key: str) -> None:
        """The track's last utterance is recognised, then ("closed", key) comes."""
        worker = self._where.get(key)
        if worker is not None and worker.alive:
            worker.inbox.put_nowait(("close", key))
        else:
            handler = self._handlers.pop(key, None)
            if handler is not None:
                handler(("closed", key))

    def streams(self) -> int:
        """Tracks being recognised."""
        return len(self._where)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop every worker (SIGKILL after ``timeout``)."""
        self.closing = True
        workers, self._workers = self._workers, []
        for worker in workers:
            if worker.process.is_alive():
                try:
                    worker.inbox.put_nowait(("stop",))
                except (ValueError, OSError):
                    pass
        loop = asyncio.get_running_loop()
        for worker in workers:
            await loop.run_in_executor(None, worker.process.join, timeout)
            if worker.process.is_alive():
                worker.process.kill()
                await loop.run_in_executor(None, worker.process.join, 1)
            worker.alive = False
            self._close_queues(worker)
        self._handlers.clear()
        self._where.clear()
        self._opened.clear()
        self.started = False
