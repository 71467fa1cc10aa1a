"""A small aiortc client for visio-sfu: connect, publish, receive.

Used by the examples, the end-to-end tests and the load tools. It speaks docs/protocol.md over
one WebSocket with two peer connections (publisher: we offer; subscriber: the server offers).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

logger = logging.getLogger(__name__)


class ServerError(Exception):
    """The server answered a request with an error message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class RemoteTrack:
    """A track received from another participant."""

    track: MediaStreamTrack
    track_sid: str
    participant_sid: str
    kind: str
    source: str


class Client:
    """One participant: a signaling socket and two peer connections."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        # max-bundle: aiortc's default (balanced) leaves the second m-section of a kind on a
        # transport of its own when an offer brings several at once, and it never connects
        config = RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        self._config = config
        self.publisher = RTCPeerConnection(config)
        self.subscriber = RTCPeerConnection(config)
        self._restarting = False  # waiting for a fresh subscriber connection
        self.subscriber_restarts = 0
        self.joined: dict | None = None
        self.events: list[dict] = []
        self.remote_tracks: list[RemoteTrack] = []
        self.on_track: Callable[[RemoteTrack], None] | None = None
        self.on_message: Callable[[dict], None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future] = {}
        self._waiters: list[tuple[Callable[[dict], bool], asyncio.Future]] = []
        self._mids: dict[str, dict] = {}
        self._reader: asyncio.Task | None = None
        self._negotiation = asyncio.Lock()
        self.subscriber.on("track", self._on_track)

    # -- connection ------------------------------------------------------------------------
    async def connect(self, name: str | None = None, room: str | None = None) -> dict:
        """Open the socket and join; returns the 'joined' message."""
        self.session = aiohttp.ClientSession()
        ws_url = self.url.replace("http://", "ws://").replace("https://", "wss://")
        try:
            self.ws = await self.session.ws_connect(f"{ws_url}/rtc?access_token={self.token}")
            self._reader = asyncio.ensure_future(self._read_loop())
            msg: dict = {"type": "join"}
            if name:
                msg["name"] = name
            if room:
                msg["room"] = room
            self.joined = await self.request(msg)
        except BaseException:
            await self.close()
            raise
        return self.joined

    async def request(self, msg: dict, timeout: float = 15) -> dict:
        """Send a request and wait for the answer with the same id."""
        msg_id = next(self._ids)
        msg = {**msg, "id": msg_id}
        future = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        await self.send(msg)
        try:
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(msg_id, None)
        if reply.get("type") == "error":
            raise ServerError(reply.get("code", ""), reply.get("message", ""))
        return reply

    async def send(self, msg: dict) -> None:
        """Send one message."""
        assert self.ws is not None
        await self.ws.send_str(json.dumps(msg))

    async def wait_for(self, predicate: Callable[[dict], bool] | str, timeout: float = 15) -> dict:
        """Wait for a server event (already received or future) matching ``predicate``."""
        if isinstance(predicate, str):
            kind = predicate
            predicate = lambda m: m.get("type") == kind  # noqa: E731
        for event in self.events:
            if predicate(event):
                return event
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        return await asyncio.wait_for(future, timeout)

    async def _read_loop(self) -> None:
        assert self.ws is not None
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            msg = json.loads(frame.data)
            self.events.append(msg)
            if self.on_message is not None:
                self.on_message(msg)
            mid = msg.get("id")
            if mid in self._pending and msg.get("type") != "offer":
                future = self._pending[mid]
                if not future.done():
                    future.set_result(msg)
            for waiter in list(self._waiters):
                if waiter[0](msg) and not waiter[1].done():
                    waiter[1].set_result(msg)
                    self._waiters.remove(waiter)
            if msg.get("type") == "subscriber_restarted":
                self._replace_subscriber()  # before the next offer, which is for the new one
            elif msg.get("type") == "offer" and msg.get("target") == "subscriber":
                if not self._restarting:  # else: made for the connection being replaced
                    asyncio.ensure_future(self._answer_subscriber(msg, self.subscriber))

    async def _answer_subscriber(self, msg: dict, pc: RTCPeerConnection) -> None:
        try:
            async with self._negotiation:
                if pc is not self.subscriber:
                    return  # replaced meanwhile
                for t in msg.get("tracks", []):
                    self._mids[t["mid"]] = t
                await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
                answer = await pc.createAnswer()
                await pc.setLocalDescription(answer)
                if pc is not self.subscriber:
                    return
                await self.send(
                    {
                        "type": "answer",
                        "target": "subscriber",
                        "id": msg["id"],
                        "sdp": pc.localDescription.sdp,
                    }
                )
        except Exception as exc:  # never stay silently broken: report, start over
            if pc is not self.subscriber or self._restarting or self.ws is None or self.ws.closed:
                return
            logger.warning("subscriber offer %s could not be applied: %s", msg.get("id"), exc)
            try:
                await self.restart_subscriber(f"{type(exc).__name__}: {exc}", msg.get("id"))
            except Exception:
                logger.exception("subscriber restart failed")

    async def restart_subscriber(self, message: str = "", offer: object = None) -> dict:
        """Report a subscriber offer we could not apply (docs/protocol.md, negotiation_failed):
        the server starts a fresh subscriber connection, which replaces ours."""
        self._restarting = True
        try:
            msg = {"type": "negotiation_failed", "target": "subscriber", "message": message}
            if offer is not None:
                msg["offer"] = offer
            return await self.request(msg)
        finally:
            self._restarting = False

    def _replace_subscriber(self) -> None:
        old = self.subscriber
        self.subscriber = RTCPeerConnection(self._config)
        self.subscriber.on("track", self._on_track)
        self._mids.clear()
        self.remote_tracks = []
        self._restarting = False
        self.subscriber_restarts += 1
        asyncio.ensure_future(old.close())

    def _on_track(self, track: MediaStreamTrack) -> None:
        mid = next(
            (t.mid for t in self.subscriber.getTransceivers() if t.receiver.track is track), None
        )
        info = self._mids.get(mid or "", {})
        remote = RemoteTrack(
            track,
            info.get("track", ""),
            info.get("participant", ""),
            track.kind,
            info.get("source", ""),
        )
        self.remote_tracks.append(remote)
        if self.on_track is not None:
            self.on_track(remote)

    # -- publishing ------------------------------------------------------------------------
    async def publish(self, *tracks: MediaStreamTrack, sources: list[str] | None = None) -> list:
        """Publish tracks; returns the server's track descriptions."""
        published = []
        for i, track in enumerate(tracks):
            source = (sources or [])[i] if sources and i < len(sources) else ""
            reply = await self.request(
                {"type": "add_track", "cid": track.id, "kind": track.kind, "source": source}
            )
            published.append(reply["track"])
            self.publisher.addTransceiver(track, direction="sendonly")
        await self.negotiate_publisher()
        return published

    async def negotiate_publisher(self) -> None:
        """Offer the publisher connection's current state to the server."""
        offer = await self.publisher.createOffer()
        await self.publisher.setLocalDescription(offer)
        reply = await self.request(
            {"type": "offer", "target": "publisher", "sdp": self.publisher.localDescription.sdp}
        )
        await self.publisher.setRemoteDescription(
            RTCSessionDescription(sdp=reply["sdp"], type="answer")
        )

    # -- teardown ----------------------------------------------------------------------------
    async def leave(self) -> None:
        """Leave the room politely, then close everything."""
        if self.ws is not None and not self.ws.closed:
            try:
                await self.send({"type": "leave"})
            except ConnectionError:
                pass
        await self.close()

    async def close(self) -> None:
        """Close the socket and both peer connections."""
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
        await self.publisher.close()
        await self.subscriber.close()
        if self.session is not None:
            await self.session.close()
