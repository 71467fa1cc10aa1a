"""SignalingConnection: one participant's WebSocket to visio-sfu, without media.

docs/protocol.md on the client's side: requests matched to their answers by id, every server
message kept and handed to a callback, subscriber offers handed to their own callback, and a
ping every ``ping_interval`` seconds as the protocol asks (a silent socket is closed by the
server after 30 s). ``visio_client.Client`` adds aiortc peer connections to it; the load tool
adds its own light peers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)


class ServerError(Exception):
    """The server answered a request with an error message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class SignalingConnection:
    """A WebSocket speaking docs/protocol.md; ``url`` is the server's http(s) address."""

    MAX_EVENTS = 10_000  # a long meeting's pongs and events must not grow memory without end

    def __init__(
        self,
        url: str,
        token: str,
        session: aiohttp.ClientSession | None = None,
        ping_interval: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.ping_interval = ping_interval
        self._session = session
        self._own_session = session is None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.events: list[dict] = []  # the server's messages, in order (the last MAX_EVENTS)
        #: called with every server message (before offers are handed on)
        self.on_message: Callable[[dict], None] | None = None
        #: called with each subscriber offer; may return an awaitable (run as a task)
        self.on_offer: Callable[[dict], Awaitable[None] | None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future] = {}
        self._waiters: list[tuple[Callable[[dict], bool], asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()
        self.pings = 0
        #: called once the socket has closed (by the server, the network, or close())
        self.on_close: Callable[[], None] | None = None

    async def connect(self) -> None:
        """Open the WebSocket and start reading and pinging."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        ws_url = self.url.replace("https://", "wss://").replace("http://", "ws://")
        self.ws = await self._session.ws_connect(
            f"{ws_url}/rtc?access_token={self.token}", max_msg_size=0
        )
        self._spawn(self._read_loop())
        if self.ping_interval > 0:
            self._spawn(self._ping_loop())

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def open(self) -> bool:
        """Whether the socket is open."""
        return self.ws is not None and not self.ws.closed

    async def send(self, msg: dict) -> None:
        """Send one message."""
        if self.ws is None:
            raise ConnectionError("not connected")
        await self.ws.send_str(json.dumps(msg))

    async def request(self, msg: dict, timeout: float = 15) -> dict:
        """Send a request and wait for the answer with the same id; ServerError on an error."""
        msg_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            await self.send({**msg, "id": msg_id})
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(msg_id, None)
        if reply.get("type") == "error":
            raise ServerError(reply.get("code", ""), reply.get("message", ""))
        return reply

    async def wait_for(self, predicate: Callable[[dict], bool] | str, timeout: float = 15) -> dict:
        """Wait for a server message (already received or to come) matching ``predicate`` (or
        of that type)."""
        if isinstance(predicate, str):
            kind = predicate
            predicate = lambda m: m.get("type") == kind  # noqa: E731
        for event in self.events:
            if predicate(event):
                return event
        future = asyncio.get_running_loop().create_future()
        waiter = (predicate, future)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def _read_loop(self) -> None:
        assert self.ws is not None
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            try:
                msg = json.loads(frame.data)
            except ValueError:
                continue
            self.events.append(msg)
            if len(self.events) > self.MAX_EVENTS:
                del self.events[: len(self.events) - self.MAX_EVENTS]
            if self.on_message is not None:
                try:
                    self.on_message(msg)
                except Exception:
                    logger.exception("on_message failed for a %r message", msg.get("type"))
            mid = msg.get("id")
            if mid in self._pending and msg.get("type") != "offer":
                future = self._pending[mid]
                if not future.done():
                    future.set_result(msg)
            for waiter in list(self._waiters):
                if waiter[0](msg) and not waiter[1].done():
                    waiter[1].set_result(msg)
                    self._waiters.remove(waiter)
            if msg.get("type") == "offer" and msg.get("target") == "subscriber":
                if self.on_offer is not None:
                    try:
                        handled = self.on_offer(msg)
                    except Exception:
                        logger.exception("on_offer failed")
                        handled = None
                    if handled is not None:
                        self._spawn(handled)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the server closed the connection"))
        if self.on_close is not None:
            try:
                self.on_close()
            except Exception:
                logger.exception("on_close failed")

    async def _ping_loop(self) -> None:
        while self.open:
            await asyncio.sleep(self.ping_interval)
            try:
                await self.send({"type": "ping", "ts": int(time.time() * 1000)})
                self.pings += 1
            except (ConnectionError, RuntimeError):
                return

    async def close(self, leave: bool = True) -> None:
        """Leave (politely, if asked and connected) and close the socket."""
        if self.ws is not None and not self.ws.closed:
            if leave:
                try:
                    await self.send({"type": "leave"})
                except (ConnectionError, RuntimeError):
                    pass
            await self.ws.close()
        for task in list(self._tasks):
            task.cancel()
        if self._own_session and self._session is not None:
            await self._session.close()
