"""``--redis URL``: this process is one node of a cluster whose state lives in Redis.

Keys (``visio:`` prefix; docs/cluster.md):

- ``visio:node:<id>``: the node's JSON (signaling URL, load, draining), written every
  heartbeat with an expiry (``ttl``): a node whose key expired is dead.
- ``visio:nodes``: the set of node ids ever registered and not yet reaped.
- ``visio:room:<room>``: the id of the node that owns the room (the source of truth).
- ``visio:node:<id>:rooms``: the rooms placed on a node (for reaping and moving).
- ``visio:reap:<id>``: a short lock, so that one survivor reaps a dead node.
- channel ``visio:events``: JSON notices (node_up, node_dead, node_draining, node_left,
  room_moved) for operators; nothing depends on receiving them.

A room is placed by one Lua script (PLACE): it keeps the owner if that node is alive, else it
sets the candidate the caller chose (the least loaded live node that is not draining).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

try:  # the 'cluster' extra: pip install 'visio-sfu[cluster]'
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - serve without --redis needs no Redis client
    aioredis = None  # type: ignore[assignment]

    class RedisError(Exception):  # type: ignore[no-redef]
        """Stands for redis.exceptions.RedisError when redis-py is not installed."""


from .load import score

logger = logging.getLogger(__name__)

PREFIX = "visio:"
EVENTS = PREFIX + "events"

#: KEYS[1] room key; ARGV: candidate id, node key prefix, room name. The owner if alive, else
#: the candidate (the room moves from the dead owner's set to the candidate's).
PLACE = """
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('EXISTS', ARGV[2] .. cur) == 1 then return cur end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', ARGV[2] .. ARGV[1] .. ':rooms', ARGV[3])
if cur and cur ~= ARGV[1] then redis.call('SREM', ARGV[2] .. cur .. ':rooms', ARGV[3]) end
return ARGV[1]
"""
#: KEYS[1] room key; ARGV: expected owner, new owner ('' = none), node key prefix, room name.
#: Changes the owner only if it is still the expected one (release, drain moves).
MOVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SREM', ARGV[3] .. ARGV[1] .. ':rooms', ARGV[4])
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) return 1 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', ARGV[3] .. ARGV[2] .. ':rooms', ARGV[4])
return 1
"""


class ClusterError(Exception):
    """Redis cannot be used (unreachable, refused): the message says what to check."""


class NoNode(Exception):
    """No live node takes new rooms (all draining), or Redis stayed unreachable."""


@dataclass
class NodeInfo:
    """A live node as its heartbeat describes it."""

    id: str
    url: str
    draining: bool = False
    rooms: int = 0
    participants: int = 0
    pps: float = 0.0

    @classmethod
    def parse(cls, node_id: str, raw: str | bytes | None) -> NodeInfo | None:
        """The node from its key's JSON (None: missing or unreadable)."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            load = data.get("load", {})
            return cls(
                node_id,
                str(data["url"]),
                bool(data.get("draining")),
                len(load.get("rooms", [])),
                int(load.get("participants", 0)),
                float(load.get("pps", 0.0)),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


class RedisNode:
    """Registration, heartbeat, placement and reaping for one node."""

    def __init__(
        self,
        redis_url: str,
        url: str,
        node_id: str | None = None,
        ttl: float = 5.0,
        interval: float = 1.0,
        placement_wait: float = 60.0,
    ) -> None:
        """``url``: where other nodes reach this one's signaling (relayed sockets, admin)."""
        self.redis_url = redis_url
        self.url = url.rstrip("/")
        self.id = node_id or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.ttl = ttl
        self.interval = interval
        self.placement_wait = placement_wait
        self.draining = False
        if aioredis is None:
            raise ClusterError("--redis needs redis-py: pip install 'visio-sfu[cluster]'")
        self.redis = aioredis.from_url(
            redis_url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._place = self.redis.register_script(PLACE)
        self._move = self.redis.register_script(MOVE)
        #: this node's load: {rooms: [names], participants, pps}
        self.load: Callable[[], dict] = lambda: {"rooms": [], "participants": 0, "pps": 0.0}
        #: close a room here that Redis gives to another node (after a partition)
        self.evict: Callable[[str], None] | None = None
        self._task: asyncio.Task | None = None
        self._recent: list[tuple[float, str]] = []  # (when, node id) placements made here
        self.connected = False
        self.placements = 0
        self._beats = 0
        self._missing: dict[str, float] = {}  # room placed here but not held: since when

    def key(self, node_id: str) -> str:
        """The node's heartbeat key."""
        return f"{PREFIX}node:{node_id}"

    @staticmethod
    def room_key(room: str) -> str:
        """The key naming the room's owner."""
        return f"{PREFIX}room:{room}"

    # -- life --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Register; ClusterError if Redis cannot be reached (a clear start-up error)."""
        try:
            await self.redis.ping()
            await self._beat()
        except (RedisError, OSError) as exc:
            await self.redis.aclose()
            raise ClusterError(f"cannot use Redis at {self.redis_url}: {exc}") from None
        self._task = asyncio.ensure_future(self._heartbeat())
        logger.info("node %s joined the cluster at %s (%s)", self.id, self.redis_url, self.url)

    async def stop(self) -> None:
        """Leave the cluster: stop the heartbeat, remove this node's keys."""
        if self._task is not None:
            self._task.cancel()
        try:
            await self.redis.delete(self.key(self.id))
            await self.redis.srem(PREFIX + "nodes", self.id)
            await self._publish("node_left")
        except (RedisError, OSError):
            pass
        await self.redis.aclose()

    async def _publish(self, event: str, **extra: object) -> None:
        await self.redis.publish(EVENTS, json.dumps({"event": event, "node": self.id, **extra}))

    def _payload(self) -> str:
        return json.dumps(
            {"url": self.url, "draining": self.draining, "load": self.load(), "ts": time.time()}
        )

    async def _beat(self) -> None:
        previous = await self.redis.set(
            self.key(self.id), self._payload(), px=int(self.ttl * 1000), get=True
        )
        await self.redis.sadd(PREFIX + "nodes", self.id)
        if previous is None:  # new, or Redis lost us (restarted, or our key expired)
            await self._reclaim()
            await self._publish("node_up", url=self.url)
        await self._reap()
        self._beats += 1
        if self._beats % 5 == 0:
            await self._forget_unused()

    async def _forget_unused(self, after: float = 30.0) -> None:
        """Release rooms placed on this node that nobody came to (or that closed while Redis
        was unreachable): held by no worker for ``after`` seconds."""
        now = time.monotonic()
        held = set(self.load().get("rooms", []))
        placed = await self.redis.smembers(f"{self.key(self.id)}:rooms")
        self._missing = {r: self._missing.get(r, now) for r in placed if r not in held}
        for room, since in list(self._missing.items()):
            if now - since >= after:
                del self._missing[room]
                await self.release(room)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._beat()
                if not self.connected:
                    logger.info("node %s: Redis is reachable again", self.id)
                self.connected = True
            except (RedisError, OSError) as exc:
                if self.connected:
                    logger.warning("node %s: Redis unreachable (%s); meetings go on", self.id, exc)
                self.connected = False
            except Exception:
                logger.exception("node %s: heartbeat failed", self.id)

    async def _reclaim(self) -> None:
        """Say again which rooms this node holds; a room another node took meanwhile (we were
        declared dead) is closed here, so its participants reconnect to its new owner."""
        rooms = self.load().get("rooms", [])
        for room in rooms:
            if await self.redis.set(self.room_key(room), self.id, nx=True):
                await self.redis.sadd(f"{self.key(self.id)}:rooms", room)
                continue
            owner = await self.redis.get(self.room_key(room))
            if owner == self.id:
                await self.redis.sadd(f"{self.key(self.id)}:rooms", room)
            elif self.evict is not None:
                logger.warning("room %s now belongs to node %s: closing it here", room, owner)
                self.evict(room)
        self.connected = True

    async def _reap(self) -> None:
        """Declare dead the nodes whose heartbeat expired, and place their rooms again."""
        members = await self.redis.smembers(PREFIX + "nodes")
        for node_id in members:
            if node_id == self.id or await self.redis.exists(self.key(node_id)):
                continue
            if not await self.redis.set(f"{PREFIX}reap:{node_id}", self.id, nx=True, px=10_000):
                continue  # another survivor reaps it
            rooms = await self.redis.smembers(f"{self.key(node_id)}:rooms")
            logger.warning("node %s is dead: placing its %d rooms again", node_id, len(rooms))
            for room in rooms:
                try:
                    target = self._choose(await self.nodes())
                except NoNode:
                    break
                await self._place(
                    keys=[self.room_key(room)], args=[target.id, PREFIX + "node:", room]
                )
            await self.redis.delete(f"{self.key(node_id)}:rooms")
            await self.redis.srem(PREFIX + "nodes", node_id)
            await self._publish("node_dead", dead=node_id, rooms=sorted(rooms))

    # -- placement ---------------------------------------------------------------------------
    async def nodes(self) -> list[NodeInfo]:
        """The live nodes, this one included."""
        ids = sorted(await self.redis.smembers(PREFIX + "nodes"))
        if not ids:
            return []
        raws = await self.redis.mget([self.key(i) for i in ids])
        return [n for i, raw in zip(ids, raws, strict=True) if (n := NodeInfo.parse(i, raw))]

    def _choose(self, nodes: list[NodeInfo]) -> NodeInfo:
        now = time.monotonic()
        self._recent = [(t, n) for t, n in self._recent if now - t < 2 * self.interval + 1]
        open_nodes = [n for n in nodes if not n.draining]
        if not open_nodes:
            raise NoNode("no node takes new rooms (every node is draining)")

        def weight(n: NodeInfo) -> tuple[float, str]:
            recent = sum(1 for _t, i in self._recent if i == n.id)  # not yet in its heartbeat
            return score(n.rooms + recent, n.participants, n.pps), n.id

        chosen = min(open_nodes, key=weight)
        self._recent.append((now, chosen.id))
        return chosen

    async def _owner_once(self, room: str, create: bool) -> NodeInfo | None:
        current = await self.redis.get(self.room_key(room))
        if current is not None:
            info = NodeInfo.parse(current, await self.redis.get(self.key(current)))
            if info is not None:
                return info
        if not create:
            return None
        target = self._choose(await self.nodes())
        owner = await self._place(
            keys=[self.room_key(room)], args=[target.id, PREFIX + "node:", room]
        )
        self.placements += 1
        info = NodeInfo.parse(owner, await self.redis.get(self.key(owner)))
        if info is None:
            raise NoNode(f"node {owner} vanished while room {room} was placed")
        if current is not None and current != owner:
            await self._publish("room_moved", room=room, dead=current, to=owner)
        return info

    async def owner(
        self, room: str, create: bool, is_local: Callable[[str], bool]
    ) -> NodeInfo | None:
        """The live node owning ``room``, placing it (``create``) if it has none or its owner
        died. While Redis is unreachable, a room held here stays here, and anything else waits
        (retrying) up to ``placement_wait`` seconds; NoNode after that."""
        deadline = time.monotonic() + self.placement_wait
        delay = 0.2
        while True:
            try:
                return await self._owner_once(room, create)
            except (RedisError, OSError) as exc:
                if is_local(room):
                    return self.me()
                if time.monotonic() > deadline:
                    raise NoNode(f"Redis unreachable: {exc}") from None
                logger.info("room %s waits for Redis (%s)", room, type(exc).__name__)
            except NoNode:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def me(self) -> NodeInfo:
        """This node."""
        return NodeInfo(self.id, self.url, self.draining)

    async def wait_dead(self, node_id: str, timeout: float | None = None) -> bool:
        """Wait until ``node_id``'s heartbeat expires (True), or ``timeout`` (ttl + 2 s)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.ttl + 2.0)
        while time.monotonic() < deadline:
            try:
                if not await self.redis.exists(self.key(node_id)):
                    return True
            except (RedisError, OSError):
                pass
            await asyncio.sleep(0.25)
        return False

    async def claim(self, room: str) -> None:
        """A room made here without a placement: it is ours unless another live node holds
        it already (then the two would split a meeting: said in the log)."""
        try:
            owner = await self._place(
                keys=[self.room_key(room)], args=[self.id, PREFIX + "node:", room]
            )
        except (RedisError, OSError) as exc:  # claimed again at the next registration
            logger.info("room %s: not claimed (Redis: %s)", room, type(exc).__name__)
            return
        if owner != self.id:
            logger.warning("room %s was made here but node %s holds it", room, owner)

    async def release(self, room: str) -> None:
        """The room closed here: forget its placement (if it is still ours)."""
        try:
            await self._move(keys=[self.room_key(room)], args=[self.id, "", PREFIX + "node:", room])
        except (RedisError, OSError) as exc:
            logger.info("room %s: placement kept (Redis: %s)", room, type(exc).__name__)

    async def move_away(self, rooms: list[str]) -> int:
        """Drain: give each of ``rooms`` to another live node; how many moved."""
        moved = 0
        try:
            others = [n for n in await self.nodes() if n.id != self.id]
            for room in rooms:
                try:
                    target = self._choose(others)
                except NoNode:
                    await self.release(room)
                    continue
                done = await self._move(
                    keys=[self.room_key(room)], args=[self.id, target.id, PREFIX + "node:", room]
                )
                if done:
                    moved += 1
                    await self._publish("room_moved", room=room, to=target.id)
        except (RedisError, OSError) as exc:
            logger.warning("drain: could not move rooms (Redis: %s)", exc)
        return moved

    async def set_draining(self) -> None:
        """Stop taking new rooms (said in the next heartbeat, and now if Redis answers)."""
        self.draining = True
        try:
            await self.redis.set(self.key(self.id), self._payload(), px=int(self.ttl * 1000))
            await self._publish("node_draining")
        except (RedisError, OSError):
            pass
