"""``--workers N``: N media worker processes on one machine, each with its own event loop,
SFU and UDP sockets, behind the front process that owns the public port.

Each worker is an ordinary visio-sfu app listening on 127.0.0.1 on a port of its own; the
front relays to it the connections and admin requests of the rooms it owns. A room lives on
exactly one worker; a new one goes to the least-loaded worker (load.score of what the workers
reported in the last second, plus the rooms given to them since). A worker that dies is
started again; its rooms are forgotten, so their participants (whose relayed sockets closed
with 1012) are placed again when they reconnect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

import aiohttp

from ..config import Config
from . import internal
from .load import score
from .proxy import Unreachable, fetch_json

logger = logging.getLogger(__name__)

FORGET_AFTER = 15.0  # seconds a room given to a worker may be missing from its reports


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_front() -> None:
    """Linux: this worker is killed when its front dies (kill -9 included): its clients'
    sockets went with the front, and nothing else would ever stop it."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the front stops its workers itself
        return
    if os.getppid() == 1:  # the front died before prctl
        os._exit(1)


def worker_main(config: Config, index: int) -> None:
    """A worker process: the ordinary app, on 127.0.0.1, answering internal requests."""
    from ..app import create_app, run
    from .backend import install_backend

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the front decides when workers stop
    _die_with_front()
    os.environ["VISIO_WORKER"] = str(index)
    app = create_app(config)
    install_backend(app)
    run(config, app=app, banner=f"visio-sfu worker {index}")


@dataclasses.dataclass
class Worker:
    """One worker process and what it reported last."""

    index: int
    port: int
    process: BaseProcess | None = None
    ready: bool = False
    rooms: set[str] = dataclasses.field(default_factory=set)
    participants: int = 0
    pps: float = 0.0
    restarts: int = 0

    @property
    def url(self) -> str:
        """Where the worker listens."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        """Whether its process runs and has answered."""
        return self.ready and self.process is not None and self.process.exitcode is None


class WorkerPool:
    """Starts, watches and stops the workers; places rooms on them."""

    def __init__(self, config: Config, count: int, key: str) -> None:
        self.config = config
        self.key = key
        self.workers = [Worker(i, _free_port()) for i in range(count)]
        self.placed: dict[str, tuple[int, float]] = {}  # room -> (worker index, when)
        self.draining = False
        #: called with a room the pool forgot (closed on its worker, or its worker died)
        self.on_forget: Callable[[str], None] | None = None
        #: called with a room a worker made that the pool did not place (a breakout room)
        self.on_new: Callable[[str], None] | None = None
        self._ctx = multiprocessing.get_context("spawn")
        self._task: asyncio.Task | None = None
        self._http: aiohttp.ClientSession | None = None

    def _spawn(self, worker: Worker) -> None:
        config = dataclasses.replace(self.config, host="127.0.0.1", port=worker.port)
        worker.process = self._ctx.Process(
            target=worker_main, args=(config, worker.index), name=f"visio-worker-{worker.index}"
        )
        worker.process.start()
        worker.ready = False

    async def start(self, http: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        """Start every worker and wait until each answers; if one cannot start, the others
        are stopped (they would hold their ports, and the front's exit, for ever)."""
        self._http = http
        try:
            for worker in self.workers:
                self._spawn(worker)
            await self._wait_ready(timeout)
        except BaseException:
            for worker in self.workers:
                if worker.process is not None and worker.process.exitcode is None:
                    worker.process.kill()
                    worker.process.join(5)
            raise

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(w.ready for w in self.workers):
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            for worker in self.workers:
                if worker.process is not None and worker.process.exitcode is not None:
                    raise RuntimeError(f"worker {worker.index} exited at start-up")
            await self.poll()
            await asyncio.sleep(0.2)
        self._task = asyncio.ensure_future(self._watch())
        logger.info("%d workers ready", len(self.workers))

    async def poll(self) -> None:
        """Read every worker's load (GET /internal/load)."""
        assert self._http is not None
        headers = internal.headers(self.key, internal.WORKER)

        async def one(worker: Worker) -> None:
            try:
                status, load = await fetch_json(
                    self._http, "GET", f"{worker.url}/internal/load", headers, timeout=2.0
                )
            except Unreachable:
                return
            if status == 200 and isinstance(load, dict):
                worker.ready = True
                worker.rooms = set(load.get("rooms", []))
                worker.participants = int(load.get("participants", 0))
                worker.pps = float(load.get("pps", 0.0))
                for room in worker.rooms - self.placed.keys():
                    self.placed[room] = (worker.index, time.monotonic())
                    if self.on_new is not None:
                        self.on_new(room)

        await asyncio.gather(*(one(w) for w in self.workers))
        now = time.monotonic()
        for room, (index, when) in list(self.placed.items()):
            worker = self.workers[index]
            if room not in worker.rooms and now - when > FORGET_AFTER:
                self._forget(room)

    def _forget(self, room: str) -> None:
        if self.placed.pop(room, None) is not None and self.on_forget is not None:
            self.on_forget(room)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                for worker in self.workers:
                    if worker.process is not None and worker.process.exitcode is not None:
                        logger.warning(
                            "worker %d exited (%s): starting it again",
                            worker.index,
                            worker.process.exitcode,
                        )
                        for room, (index, _when) in list(self.placed.items()):
                            if index == worker.index:
                                self._forget(room)
                        worker.rooms = set()
                        worker.restarts += 1
                        if not self.draining:
                            self._spawn(worker)
                await self.poll()
            except Exception:  # never let the watcher die
                logger.exception("worker watch failed")

    def _load(self, worker: Worker) -> float:
        pending = sum(1 for r, (i, _t) in self.placed.items() if i == worker.index)
        rooms = max(len(worker.rooms), pending)
        return score(rooms, worker.participants, worker.pps)

    def owner(self, room: str) -> Worker | None:
        """The worker holding ``room`` (given by this front, or found in a report)."""
        found = self.placed.get(room)
        if found is not None:
            worker = self.workers[found[0]]
            if worker.alive:
                return worker
            self._forget(room)
        for worker in self.workers:
            if worker.alive and room in worker.rooms:
                self.placed[room] = (worker.index, time.monotonic())
                return worker
        return None

    def place(self, room: str) -> Worker | None:
        """The worker for ``room``: its owner, or the least-loaded live worker (None while
        draining or with no live worker)."""
        worker = self.owner(room)
        if worker is not None:
            return worker
        live = [w for w in self.workers if w.alive]
        if not live or self.draining:
            return None
        worker = min(live, key=lambda w: (self._load(w), w.index))
        self.placed[room] = (worker.index, time.monotonic())
        logger.info("room %s placed on worker %d", room, worker.index)
        return worker

    def load(self) -> dict:
        """The machine's total: rooms, participants, packets/s."""
        rooms = set(self.placed)
        for worker in self.workers:
            rooms |= worker.rooms
        return {
            "rooms": sorted(rooms),
            "participants": sum(w.participants for w in self.workers),
            "pps": round(sum(w.pps for w in self.workers), 1),
        }

    def has(self, room: str) -> bool:
        """Whether a worker holds (or was given) ``room``."""
        return room in self.placed or any(room in w.rooms for w in self.workers)

    async def stop(self, timeout: float = 15.0) -> None:
        """Stop every worker (SIGINT: each closes its rooms, server_shutdown) and wait."""
        self.draining = True
        if self._task is not None:
            self._task.cancel()
        for worker in self.workers:
            if worker.process is not None and worker.process.exitcode is None:
                os.kill(worker.process.pid, signal.SIGINT)  # type: ignore[arg-type]
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            proc = worker.process
            while proc is not None and proc.exitcode is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if proc is not None and proc.exitcode is None:
                proc.kill()
