"""The servers a load run can drive, each through its own signaling.

A target joins load peers to a room: ``join(room, name, publisher, subscriber)``, where either
peer may be None. Publishers must join before the subscribers that should receive them.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import aiohttp

from benchmarks.loadpeers import LoadPublisher, LoadSubscriber
from signaling.auth import VideoGrant, mint_token


class VisioTarget:
    """visio-sfu: one WebSocket per participant, the protocol of docs/protocol.md."""

    name = "visio-sfu"

    def __init__(self, url: str, key: str, secret: str) -> None:
        self.url = url.rstrip("/")
        self.metrics_url = self.url + "/metrics"  # the load tool reads the server's figures
        self.key, self.secret = key, secret
        self.http: aiohttp.ClientSession | None = None
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.tasks: list[asyncio.Task] = []
        self.errors: list[str] = []

    async def join(
        self,
        room: str,
        name: str,
        publisher: LoadPublisher | None,
        subscriber: LoadSubscriber | None,
    ) -> None:
        """Join one participant; returns once its publisher is connected (if any)."""
        if self.http is None:  # no connection limit: one WebSocket per participant
            self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        grant = VideoGrant(
            room=room,
            room_join=True,
            can_publish=publisher is not None,
            can_subscribe=subscriber is not None,
        )
        token = mint_token(self.key, self.secret, name, room, grant=grant, ttl=24 * 3600)
        ws_url = self.url.replace("http://", "ws://")
        ws = await self.http.ws_connect(f"{ws_url}/rtc?access_token={token}", max_msg_size=0)
        self.sockets.append(ws)
        ids = itertools.count(1)
        pending: dict[int, asyncio.Future] = {}
        loop = asyncio.get_running_loop()

        async def request(msg: dict) -> dict:
            msg_id = next(ids)
            pending[msg_id] = loop.create_future()
            await ws.send_str(json.dumps({**msg, "id": msg_id}))
            reply = await asyncio.wait_for(pending[msg_id], 30)
            if reply.get("type") == "error":
                raise RuntimeError(f"{name}: {reply.get('code')}: {reply.get('message')}")
            return reply

        async def answer(msg: dict) -> None:
            sdp = await subscriber.answer(msg["sdp"])
            await ws.send_str(
                json.dumps({"type": "answer", "target": "subscriber", "id": msg["id"], "sdp": sdp})
            )

        async def read() -> None:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    break
                msg = json.loads(frame.data)
                if msg.get("type") == "offer" and msg.get("target") == "subscriber":
                    if subscriber is not None:
                        self.tasks.append(asyncio.ensure_future(answer(msg)))
                    continue
                future = pending.pop(msg.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(msg)
                elif msg.get("type") == "error":
                    self.errors.append(f"{name}: {msg.get('message')}")

        self.tasks.append(asyncio.ensure_future(read()))
        await request({"type": "join", "name": name})
        if publisher is not None:
            for kind, cid in publisher.cids.items():
                source = "camera" if kind == "video" else "microphone"
                await request({"type": "add_track", "cid": cid, "kind": kind, "source": source})
            reply = await request(
                {"type": "offer", "target": "publisher", "sdp": await publisher.offer()}
            )
            await publisher.apply_answer(reply["sdp"])

    async def close(self) -> None:
        """Leave and close every socket."""
        for ws in self.sockets:
            try:
                await ws.send_str(json.dumps({"type": "leave"}))
                await ws.close()
            except Exception:
                pass
        for task in self.tasks:
            task.cancel()
        if self.http is not None:
            await self.http.close()


class SubscribeOnceAllPublished:
    """Join for servers where a subscriber says once what it receives (no renegotiation here):
    a listener subscribes at once; a participant that also publishes subscribes at ``settle``,
    once everyone in its room has published, so a meeting's early joiners receive the late."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, object, LoadSubscriber]] = []  # (room, own, subscriber)

    async def join(
        self,
        room: str,
        name: str,
        publisher: LoadPublisher | None,
        subscriber: LoadSubscriber | None,
    ) -> None:
        """Publish (then wait for ``settle`` to subscribe), or subscribe now."""
        if publisher is not None:
            own = await self._publish(room, name, publisher)
            if subscriber is not None:
                self.pending.append((room, own, subscriber))
        elif subscriber is not None:
            await self._subscribe(room, subscriber, None)

    async def settle(self) -> None:
        """Subscribe every publishing participant to everything else in its room."""
        pending, self.pending = self.pending, []
        for room, own, subscriber in pending:
            await self._subscribe(room, subscriber, own)

    async def _publish(self, room: str, name: str, publisher: LoadPublisher) -> object:
        """Publish; returns what identifies our own tracks to ``_subscribe``."""
        raise NotImplementedError

    async def _subscribe(self, room: str, subscriber: LoadSubscriber, own: object) -> None:
        """Receive every track of the room but ``own``'s."""
        raise NotImplementedError


class NaiveTarget(SubscribeOnceAllPublished):
    """benchmarks/naive_relay.py: HTTP offer/answer; the subscriber offers to receive."""

    name = "naive relay"  # it re-encodes: the send time in the RTP padding does not survive

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http: aiohttp.ClientSession | None = None
        super().__init__()
        self.errors: list[str] = []

    async def _post(self, body: dict) -> dict:
        if self.http is None:
            self.http = aiohttp.ClientSession()
        async with self.http.post(f"{self.url}/offer", json=body) as r:
            if r.status != 200:
                raise RuntimeError(f"naive relay: {r.status} {await r.text()}")
            return await r.json()

    async def _publish(self, room: str, name: str, publisher: LoadPublisher) -> str:
        reply = await self._post(
            {"room": room, "name": name, "role": "publish", "sdp": await publisher.offer()}
        )
        await publisher.apply_answer(reply["sdp"])
        # the relay has the tracks once media arrives: wait for it to say so
        for _ in range(100):
            if await self._has_tracks(room, name):
                break
            await asyncio.sleep(0.1)
        return name

    async def _subscribe(self, room: str, subscriber: LoadSubscriber, own: object) -> None:
        tracks = (await self._room(room))["tracks"]
        kinds = tuple(t["kind"] for t in tracks if t["owner"] != own)
        if not kinds:
            return
        name = f"listener-{subscriber.index}" if own is None else str(own)
        reply = await self._post(
            {"room": room, "name": name, "role": "subscribe", "sdp": await subscriber.offer(kinds)}
        )
        await subscriber.apply_answer(reply["sdp"])

    async def _room(self, room: str) -> dict:
        if self.http is None:
            self.http = aiohttp.ClientSession()
        async with self.http.get(f"{self.url}/rooms/{room}") as r:
            return await r.json()

    async def _has_tracks(self, room: str, name: str) -> bool:
        return any(t["owner"] == name for t in (await self._room(room))["tracks"])

    async def close(self) -> None:
        """Close the HTTP session (the relay drops peers when the run's server stops)."""
        if self.http is not None:
            await self.http.close()
