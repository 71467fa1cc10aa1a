"""The front: routes each connection and admin request to the process owning its room.

Installed on the app of ``visio-sfu serve`` when it runs workers (``--workers N``, N > 1) or
joins a cluster (``--redis``). A request arriving from outside is routed from the cluster
level (which node owns the room: node.py) down to the worker level (which local worker:
workers.py); a request relayed by another node (hop ``node``) is routed among this node's
workers only; one relayed by a front (hop ``worker``) is served by this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from visio_sfu.events import LifecycleEvent, RoomFinished, RoomStarted

from ..api import in_scope
from ..app import CONFIG, JOIN_LIMITER, NO_MEDIA, SFU_KEY, VERIFIER, origin_allowed
from ..auth import TokenError, printable
from ..lobby import route_lobby
from . import internal, twirp
from .backend import HOP, KEY, Handler, install_backend
from .node import NoNode, RedisNode
from .proxy import Unreachable, fetch_json, relay_http, relay_websocket
from .workers import WorkerPool

logger = logging.getLogger(__name__)


@dataclass
class Settings:
    """How this process takes part (CLI: --workers, --redis, --node-url, ...)."""

    workers: int = 1
    redis_url: str | None = None
    node_url: str | None = None  # where other nodes reach this one; default http://host:port
    node_id: str | None = None
    heartbeat_ttl: float = 5.0  # seconds without a heartbeat before a node is declared dead
    drain_timeout: float = 120.0  # seconds meetings have to end when draining


@dataclass
class Target:
    """A process owning a room elsewhere: its base URL, the hop to send, its node id."""

    url: str
    hop: str
    node: str | None = None
    worker: int | None = None


LOCAL = Target("", "")  # this process's own SFU
FRONT = web.AppKey("cluster_front", object)


def _json(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def _token(request: web.Request) -> str:
    token = request.query.get("access_token", "")
    if not token:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
    return token


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def merge_stats(answers: list[tuple[int, dict | None]]) -> dict:
    """The /dev/stats of a node's workers, given as (worker index, its /dev/stats or None if
    it did not answer), as one: every number added up, dictionaries of numbers (``drops``,
    ``transport_errors``) key by key; ``per_room``: every worker's rooms, each with its
    ``worker``; ``workers``: per worker, its rooms and participants; ``unreachable``: the
    workers that did not answer (only when some did not)."""
    total: dict = {}
    per_room: list[dict] = []
    workers: list[dict] = []
    unreachable: list[str] = []
    for index, stats in answers:
        if stats is None:
            unreachable.append(f"worker {index}")
            continue
        for key, value in stats.items():
            if key == "per_room" and isinstance(value, list):
                per_room += [{**room, "worker": index} for room in value if isinstance(room, dict)]
            elif isinstance(value, int | float) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
            elif isinstance(value, dict):
                into = total.setdefault(key, {})
                for name, count in value.items():
                    if isinstance(count, int | float) and not isinstance(count, bool):
                        into[name] = into.get(name, 0) + count
        workers.append(
            {
                "worker": index,
                "rooms": stats.get("rooms", 0),
                "participants": stats.get("participants", 0),
            }
        )
    out: dict = {**total, "per_room": per_room, "workers": workers}
    if unreachable:
        out["unreachable"] = unreachable
    return out


class Front:
    """Routing state of this process: its workers, its cluster node, draining."""

    def __init__(self, app: web.Application, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        config = app[CONFIG]
        self.key = app[KEY]
        self.pool = WorkerPool(config, settings.workers, self.key) if settings.workers > 1 else None
        self.node: RedisNode | None = None
        if settings.redis_url:
            url = settings.node_url or f"http://{config.host}:{config.port}"
            self.node = RedisNode(
                settings.redis_url, url, settings.node_id, ttl=settings.heartbeat_ttl
            )
            self.node.load = self.load
            self.node.evict = self._evict
        self.http: aiohttp.ClientSession | None = None
        self.draining = False
        self._drain_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- what this process holds -------------------------------------------------------------
    def load(self) -> dict:
        """Rooms, participants and packets/s of this node (its workers, or its own SFU)."""
        if self.pool is not None:
            return self.pool.load()
        from .backend import METER

        return self.app[METER].sample()

    def is_local(self, room: str) -> bool:
        """Whether this node holds ``room`` (in a worker, or in its own SFU)."""
        if self.pool is not None:
            return self.pool.has(room)
        return room in self.app[SFU_KEY].rooms

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release(self, room: str) -> None:
        if self.node is not None:
            self._spawn(self.node.release(room))

    def _claim(self, room: str) -> None:
        """A room was made here without being placed (a breakout room, a worker's own admin
        request): say so in Redis, so that whoever joins it is sent here."""
        if self.node is not None:
            self._spawn(self.node.claim(room))

    def _on_event(self, event: LifecycleEvent) -> None:
        if isinstance(event, RoomFinished):
            self._release(event.room.name)
        elif isinstance(event, RoomStarted):
            self._claim(event.room.name)

    def _evict(self, room: str) -> None:
        """Redis gave ``room`` to another node: close it here (its people reconnect)."""
        if self.pool is not None:
            worker = self.pool.owner(room)
            self.pool.placed.pop(room, None)
            if worker is not None and self.http is not None:
                headers = internal.headers(self.key, internal.WORKER)
                self._spawn(self._delete_on(worker.url, room, headers))
        else:
            self._spawn(self.app[SFU_KEY].delete_room(room))

    async def _delete_on(self, url: str, room: str, headers: dict[str, str]) -> None:
        assert self.http is not None
        with contextlib.suppress(Unreachable):
            await fetch_json(
                self.http, "POST", f"{url}/internal/evict", headers, body={"room": room}
            )

    # -- routing -----------------------------------------------------------------------------
    async def resolve(self, room: str, create: bool, hop: str | None) -> Target | None:
        """Where ``room`` lives (placing it when ``create``); None: nowhere (not found).
        NoNode: it cannot be placed now (everything draining, Redis down too long)."""
        if self.node is not None and hop is None:
            owner = await self.node.owner(room, create, self.is_local)
            if owner is None:
                return None
            if owner.id != self.node.id:
                return Target(owner.url, internal.NODE, node=owner.id)
        if self.pool is not None:
            worker = self.pool.place(room) if create else self.pool.owner(room)
            if worker is None:
                if create:
                    raise NoNode("no worker takes new rooms now")
                return None
            return Target(worker.url, internal.WORKER, worker=worker.index)
        if create and self.draining and not self.is_local(room) and hop is None:
            raise NoNode("this server is draining: it takes no new rooms")
        return LOCAL

    def _headers(self, target: Target, request: web.Request) -> dict[str, str]:
        return internal.headers(self.key, target.hop, request)

    async def _unreachable(self, target: Target) -> None:
        """The owner did not answer: wait until it is declared dead (node) or seen exited
        (worker), so that the next resolve places the room again."""
        if target.node is not None and self.node is not None:
            await self.node.wait_dead(target.node)
        elif target.worker is not None and self.pool is not None:
            deadline = time.monotonic() + 3.0
            worker = self.pool.workers[target.worker]
            while worker.alive and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            if not worker.alive:
                for room, (index, _when) in list(self.pool.placed.items()):
                    if index == worker.index:
                        self.pool.placed.pop(room, None)

    async def route_rtc(
        self, request: web.Request, handler: Handler, hop: str | None
    ) -> web.StreamResponse:
        """A signaling WebSocket: to the owner of the token's room."""
        app = request.app
        token = _token(request)
        if not token:
            return await handler(request)
        try:
            identity = await app[VERIFIER].verify_async(token)
        except TokenError:
            return await handler(request)  # it answers with the right error
        room = identity.grant.room
        checked = False
        for _attempt in range(3):
            try:
                target = await self.resolve(room, True, hop)
            except NoNode as exc:
                return _json(503, "unavailable", str(exc))
            if target is LOCAL or target is None:
                return await handler(request)
            if not checked:  # what rtc_handler checks for local rooms
                config = app[CONFIG]
                if not origin_allowed(request, config.allowed_origins, config.public_url):
                    return _json(403, "bad_origin", "this Origin may not connect")
                if hop is None and not app[JOIN_LIMITER].allow(request.remote or "?"):
                    return _json(429, "rate_limited", "too many connections from this address")
                checked = True
            ws_url = target.url.replace("http://", "ws://").replace("https://", "wss://")
            assert self.http is not None
            try:
                return await relay_websocket(
                    request,
                    self.http,
                    ws_url + request.path_qs,
                    self._headers(target, request),
                    max_msg_size=4 * app[CONFIG].max_message_bytes,
                )
            except Unreachable as exc:
                logger.warning("room %s: its owner did not answer (%s)", printable(room), exc)
                await self._unreachable(target)
        return _json(503, "unavailable", "the room's server cannot be reached; try again")

    async def route_room(
        self, request: web.Request, handler: Handler, hop: str | None, room: str, create: bool
    ) -> web.StreamResponse:
        """An admin request about one room: to its owner."""
        body = await request.read() if request.body_exists else None
        for _attempt in range(2):
            try:
                target = await self.resolve(room, create, hop)
            except NoNode as exc:
                return _json(503, "unavailable", str(exc))
            if target is None or target is LOCAL:
                return await handler(request)
            assert self.http is not None
            try:
                return await relay_http(
                    request,
                    self.http,
                    target.url + request.path_qs,
                    self._headers(target, request),
                    body,
                )
            except Unreachable:
                await self._unreachable(target)
        return _json(503, "unavailable", "the room's server cannot be reached; try again")

    async def create_room(
        self, request: web.Request, handler: Handler, hop: str | None
    ) -> web.StreamResponse:
        """POST /api/rooms: placed first (with a token allowed to create it), then created by
        its owner."""
        try:
            body = json.loads(await request.read())
            name = body.get("name") if isinstance(body, dict) else None
            auth = request.headers.get("Authorization", "")
            ident = await request.app[VERIFIER].verify_async(auth[7:].strip(), require_join=False)
        except (ValueError, UnicodeDecodeError, TokenError):
            return await handler(request)  # it answers with the right error
        if not isinstance(name, str) or not name or len(name) > 128:
            return await handler(request)
        if not ident.grant.room_create or not in_scope(ident.grant, name):
            return await handler(request)
        return await self.route_room(request, handler, hop, name, create=True)

    async def listing_targets(self, hop: str | None) -> list[Target]:
        """Where rooms are listed besides here: every live worker and, for an outside request
        (``hop`` None), every other node."""
        targets: list[Target] = []
        if self.pool is not None:
            targets += [
                Target(w.url, internal.WORKER, worker=w.index) for w in self.pool.workers if w.alive
            ]
        if self.node is not None and hop is None:
            with contextlib.suppress(Exception):
                targets += [
                    Target(n.url, internal.NODE, node=n.id)
                    for n in await self.node.nodes()
                    if n.id != self.node.id
                ]
        return targets

    async def list_rooms(
        self, request: web.Request, handler: Handler, hop: str | None
    ) -> web.StreamResponse:
        """GET /api/rooms: this process's answer (it checks the token), with every worker's
        and, for an outside request, every other node's rooms."""
        own = await handler(request)
        if own.status != 200 or not isinstance(own, web.Response) or own.body is None:
            return own
        rooms: list[dict] = list(json.loads(own.body)["rooms"]) if self.pool is None else []
        node_id = self.node.id if self.node is not None else None
        if node_id is not None:
            for room in rooms:
                room["node"] = node_id
        targets = await self.listing_targets(hop)
        assert self.http is not None
        unreachable = []

        async def one(target: Target) -> None:
            try:
                status, data = await fetch_json(
                    self.http, "GET", target.url + "/api/rooms", self._headers(target, request)
                )
            except Unreachable:
                unreachable.append(target.node or f"worker {target.worker}")
                return
            if status != 200 or not isinstance(data, dict):
                unreachable.append(target.node or f"worker {target.worker}")
                return
            for room in data.get("rooms", []):
                if target.worker is not None:
                    room["worker"] = target.worker
                    if node_id is not None:
                        room["node"] = node_id
                rooms.append(room)

        await asyncio.gather(*(one(t) for t in targets))
        out: dict = {"rooms": sorted(rooms, key=lambda r: str(r.get("name")))}
        if unreachable:
            out["unreachable"] = sorted(unreachable)
        return web.json_response(out)

    async def metrics(self) -> web.Response:
        """/metrics of every worker, each sample labelled with its ``worker``."""
        assert self.pool is not None and self.http is not None
        headers = internal.headers(self.key, internal.WORKER)

        async def scrape(worker_url: str) -> str:
            try:
                async with self.http.get(
                    worker_url + "/metrics",
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=5),
                ) as answer:
                    return await answer.text() if answer.status == 200 else ""
            except (aiohttp.ClientError, OSError, TimeoutError):
                return ""

        texts = await asyncio.gather(*(scrape(w.url) for w in self.pool.workers))
        merged: dict[str, Metric] = {}
        for worker, text in zip(self.pool.workers, texts, strict=True):
            for family in text_string_to_metric_families(text):
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": str(worker.index)}
                    into.samples.append(sample._replace(labels=labels))
        up = GaugeMetricFamily(
            "visio_worker_up", "whether a worker process answers (1) or not", labels=["worker"]
        )
        for worker in self.pool.workers:
            up.add_metric([str(worker.index)], 1 if worker.alive else 0)
        registry = CollectorRegistry()
        registry.register(_Families([*merged.values(), up]))
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def dev_stats(self) -> web.Response:
        """/dev/stats of a front with workers: the workers' counters added up (the front has no
        media of its own; merge_stats)."""
        assert self.pool is not None and self.http is not None
        http = self.http
        headers = internal.headers(self.key, internal.WORKER)

        async def one(worker_url: str) -> dict | None:
            try:
                status, data = await fetch_json(http, "GET", worker_url + "/dev/stats", headers)
            except Unreachable:
                return None
            return data if status == 200 and isinstance(data, dict) else None

        answers = await asyncio.gather(*(one(w.url) for w in self.pool.workers))
        indexes = [w.index for w in self.pool.workers]
        return web.json_response(merge_stats(list(zip(indexes, answers, strict=True))))

    def health(self) -> web.Response:
        """/healthz: 200 while this node takes rooms, 503 (draining) once it drains, so
        that load balancers stop sending it newcomers."""
        load = self.load()
        body: dict = {
            "status": "draining" if self.draining else "ok",
            "rooms": len(load["rooms"]),
            "participants": load["participants"],
        }
        if self.pool is not None:
            body["workers"] = [
                {
                    "worker": w.index,
                    "alive": w.alive,
                    "pid": w.process.pid if w.process is not None else None,
                    "rooms": len(w.rooms),
                    "pps": w.pps,
                    "restarts": w.restarts,
                }
                for w in self.pool.workers
            ]
        if self.node is not None:
            body["node"] = self.node.id
            body["redis"] = "ok" if self.node.connected else "unreachable"
        return web.json_response(body, status=503 if self.draining else 200)

    # -- draining ----------------------------------------------------------------------------
    def start_drain(self, timeout: float | None = None) -> bool:
        """Begin draining (once); False if already draining."""
        if self._drain_task is not None:
            return False
        self._drain_task = asyncio.ensure_future(
            self.drain(self.settings.drain_timeout if timeout is None else timeout)
        )
        return True

    async def drain(self, timeout: float) -> None:
        """Take no new rooms, let meetings end within ``timeout`` seconds, move what remains
        to other nodes (their participants reconnect), then stop this process."""
        self.draining = True
        if self.pool is not None:
            self.pool.draining = True
        if self.node is not None:
            await self.node.set_draining()
        logger.info("draining: meetings have %.0f s to end", timeout)
        deadline = time.monotonic() + timeout
        while self.load()["rooms"] and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        remaining = list(self.load()["rooms"])
        if remaining and self.node is not None:
            moved = await self.node.move_away(remaining)
            logger.info("draining: %d of %d rooms given to other nodes", moved, len(remaining))
        if self.pool is not None:
            await self.pool.stop()  # workers close their rooms: participants reconnect
        logger.info("drained: stopping")
        os.kill(os.getpid(), signal.SIGINT)  # run_app's graceful shutdown

    # -- life --------------------------------------------------------------------------------
    async def startup(self, app: web.Application) -> None:
        """Start the workers and join the cluster (ClusterError if Redis cannot be used)."""
        # no pool limit: each relayed WebSocket holds one upstream connection for its whole
        # life, so aiohttp's default of 100 made the 101st participant's upgrade wait, then 503
        self.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=3),
            connector=aiohttp.TCPConnector(limit=0),
        )
        if self.pool is not None:
            self.pool.on_forget = self._release
            self.pool.on_new = self._claim
            await self.pool.start(self.http)
        else:
            app[SFU_KEY].listeners.append(self._on_event)
        if self.node is not None:
            await self.node.start()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.start_drain)

    async def shutdown(self, app: web.Application) -> None:
        """The server is stopping: the workers first (each closes its rooms, server_shutdown),
        so that the sockets relayed to them end now; the HTTP server's graceful wait for open
        handlers then has none left (it took 10 s with one participant in a room)."""
        if self.pool is not None:
            await self.pool.stop()

    async def cleanup(self, app: web.Application) -> None:
        """Stop the workers, leave the cluster."""
        if self.pool is not None:
            await self.pool.stop()
        if self.node is not None:
            await self.node.stop()
        for task in list(self._tasks):
            task.cancel()
        if self.http is not None:
            await self.http.close()


@web.middleware
async def route(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Send a request about a room to the process owning it (see the module's doc)."""
    front: Front = request.app[FRONT]  # type: ignore[assignment]
    hop = request.get(HOP)
    if hop == internal.WORKER:
        return await handler(request)
    path = request.path
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    if upgrade and (path == "/rtc" or path.startswith("/rtc/")):
        return await front.route_rtc(request, handler, hop)
    if upgrade and path.startswith("/lobby/"):  # a meeting's waiting room (signaling/lobby.py)
        return await route_lobby(front, request, handler, hop)
    if path == "/api/rooms":
        if request.method == "GET":
            return await front.list_rooms(request, handler, hop)
        if request.method == "POST":
            return await front.create_room(request, handler, hop)
    room = request.match_info.get("room")
    if path.startswith("/api/rooms/") and room:
        return await front.route_room(request, handler, hop, room, create=False)
    if room and (path.startswith("/whip/") or path.startswith("/whep/")):
        return await route_http_session(front, request, handler, hop, room)
    if path.startswith(twirp.PREFIX):  # LiveKit's RoomService: the room is in the body
        return await twirp.route(front, request, handler, hop)
    # the front's answers for its whole node: to reads only (any other method gets the
    # route's own answer, 405)
    if request.method in ("GET", "HEAD"):
        if path == "/metrics" and front.pool is not None:
            return await front.metrics()
        if path == "/healthz":
            return front.health()
        if path == "/dev/stats" and front.pool is not None and request.app[CONFIG].dev:
            return await front.dev_stats()
    return await handler(request)


async def route_http_session(
    front: Front, request: web.Request, handler: Handler, hop: str | None, room: str
) -> web.StreamResponse:
    """WHIP and WHEP (signaling/whip.py): to the room's owner, which holds the sessions. A new
    session may place the room, only with a token of that room (checked here first: a request
    without one is answered where it came, and places nothing)."""
    if request.method == "POST":
        try:
            auth = request.headers.get("Authorization", "")
            ident = await request.app[VERIFIER].verify_async(auth[7:].strip())
        except TokenError:
            return await handler(request)  # it answers with the right error
        if ident.grant.room != room:
            return await handler(request)
        return await front.route_room(request, handler, hop, room, create=True)
    return await front.route_room(request, handler, hop, room, create=False)


async def drain_handler(request: web.Request) -> web.Response:
    """POST /api/node/drain {timeout?}: roomAdmin on every room ('*')."""
    front: Front = request.app[FRONT]  # type: ignore[assignment]
    auth = request.headers.get("Authorization", "")
    try:
        ident = await request.app[VERIFIER].verify_async(auth[7:].strip(), require_join=False)
    except TokenError as exc:
        return _json(401, exc.code, str(exc))
    if not (ident.grant.room_admin and ident.grant.room == "*"):
        return _json(403, "permission_denied", "draining needs roomAdmin on every room ('*')")
    timeout = None
    if request.can_read_body:
        try:
            body = await request.json()
            value = body.get("timeout") if isinstance(body, dict) else None
        except (ValueError, UnicodeDecodeError):
            return _json(400, "bad_request", "body must be a JSON object")
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                return _json(400, "bad_request", "field 'timeout' must be seconds (>= 0)")
            timeout = float(value)
    started = front.start_drain(timeout)
    return web.json_response(
        {"draining": True, "already": not started, "rooms": len(front.load()["rooms"])},
        status=202,
    )


def api_routes() -> list[web.RouteDef]:
    """The admin API's routes of this module (docs/api.md, "Workers and clusters")."""
    return [web.post("/api/node/drain", drain_handler)]


def install_front(app: web.Application, settings: Settings) -> Front:
    """Make ``app`` (built by create_app) route rooms to workers and nodes."""
    install_backend(app)
    front = Front(app, settings)
    app[FRONT] = front
    if front.pool is not None:
        app[NO_MEDIA] = True  # its workers bind the media ports, from udp_port on
    app.middlewares.append(route)
    app.router.add_routes(api_routes())
    app.on_startup.append(front.startup)
    app.on_shutdown.append(front.shutdown)
    app.on_cleanup.append(front.cleanup)
    return front
