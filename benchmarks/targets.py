"""The servers a load run can drive, each through its own signaling.

A target joins load peers to a room: ``join(room, name, publisher, subscriber)``, where either
peer may be None. Publishers must join before the subscribers that should receive them.
"""

from __future__ import annotations

import asyncio

import aiohttp

from benchmarks.loadpeers import LoadPublisher, LoadSubscriber
from signaling.auth import VideoGrant, mint_token
from visio_client.protocol import ServerError, SignalingConnection


class VisioTarget:
    """visio-sfu: one WebSocket per participant, the protocol of docs/protocol.md."""

    name = "visio-sfu"

    def __init__(self, url: str, key: str, secret: str) -> None:
        self.url = url.rstrip("/")
        self.metrics_url = self.url + "/metrics"  # the load tool reads the server's figures
        self.key, self.secret = key, secret
        self.http: aiohttp.ClientSession | None = None
        self.connections: list[SignalingConnection] = []
        self.errors: list[str] = []
        self.closed = False

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
        signal = SignalingConnection(self.url, token, session=self.http)
        self.connections.append(signal)

        async def answer(msg: dict) -> None:
            assert subscriber is not None
            try:
                sdp = await subscriber.answer(msg["sdp"])
                await signal.send(
                    {"type": "answer", "target": "subscriber", "id": msg["id"], "sdp": sdp}
                )
            except Exception as exc:  # an offer that crossed close(): nothing left to answer
                if not self.closed:
                    self.errors.append(f"{name}: answer failed: {type(exc).__name__}: {exc}")

        def on_message(msg: dict) -> None:
            if msg.get("type") == "error" and msg.get("id") is None:
                self.errors.append(f"{name}: {msg.get('message')}")

        signal.on_message = on_message
        signal.on_offer = answer if subscriber is not None else None
        await signal.connect()
        await self._request(signal, name, {"type": "join", "name": name})
        if publisher is not None:
            for kind, cid in publisher.cids.items():
                source = "camera" if kind == "video" else "microphone"
                msg = {"type": "add_track", "cid": cid, "kind": kind, "source": source}
                await self._request(signal, name, msg)
            offer = {"type": "offer", "target": "publisher", "sdp": await publisher.offer()}
            reply = await self._request(signal, name, offer)
            await publisher.apply_answer(reply["sdp"])

    @staticmethod
    async def _request(signal: SignalingConnection, name: str, msg: dict) -> dict:
        try:
            return await signal.request(msg, timeout=30)
        except ServerError as exc:
            raise RuntimeError(f"{name}: {exc}") from None

    async def close(self) -> None:
        """Leave and close every socket."""
        self.closed = True
        for signal in self.connections:
            try:
                await signal.close()
            except Exception:
                pass
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
