"""Random message sequences against a live server while another room forwards media.

The server, a steady two-person meeting and the fuzzing connections share one event loop in a
background thread; hypothesis drives sequences of protocol-shaped (and misshaped) messages
into a room of their own. Afterwards: no handler failed, and the meeting still forwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.inprocess import LocalServer
from tests.support.media import check_video, join, until
from visio_client import Client

pytestmark = pytest.mark.timeout(240)

TYPES = [
    "join",
    "add_track",
    "offer",
    "answer",
    "trickle",
    "mute",
    "unpublish",
    "data",
    "ping",
    "leave",
    "teleport",
    "",
]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
messages = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(TYPES)},
        optional={
            k: values
            for k in (
                "id",
                "sdp",
                "target",
                "cid",
                "kind",
                "source",
                "track",
                "muted",
                "payload",
                "candidate",
                "topic",
                "to",
                "room",
                "name",
                "width",
            )
        },
    ),
    st.text(max_size=50),
    values.map(json.dumps),
)


class Harness:
    """The server and the steady meeting, on a loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.failures: list[str] = []
        self.sent = 0
        self.replies = 0

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def start(self) -> None:
        self.server = LocalServer(joins_per_second=1000, message_rate=1000)
        await self.server.__aenter__()
        self.alice = await join(self.server, "steady", 0)
        self.bob = Client(self.server.url, self.server.token("steady", "bob"))
        await self.bob.connect()
        await until(lambda: self.bob.remote_tracks, what="steady meeting")

    async def stop(self) -> None:
        await self.alice.close()
        await self.bob.close()
        await self.server.__aexit__()

    async def fuzz(self, sequence: list) -> None:
        token = self.server.token("fuzz", "fuzzer")
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{self.server.url}/rtc?access_token={token}") as ws,
        ):
            for msg in sequence:
                if ws.closed:
                    break
                await ws.send_str(msg if isinstance(msg, str) else json.dumps(msg))
                self.sent += 1
                try:
                    reply = await ws.receive(timeout=0.05)
                    self.replies += reply.type == aiohttp.WSMsgType.TEXT
                except TimeoutError:
                    pass


class FailureLog(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("signaling", "visio_sfu")):  # the server's own failures
            self.sink.append(record.getMessage())


@pytest.fixture(scope="module")
def harness():
    h = Harness()
    handler = FailureLog(h.failures)
    logging.getLogger().addHandler(handler)
    h.thread.start()
    h.run(h.start())
    yield h
    h.run(h.stop())
    logging.getLogger().removeHandler(handler)
    h.loop.call_soon_threadsafe(h.loop.stop)
    h.thread.join(5)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(messages, min_size=1, max_size=15))
def test_random_message_sequences(harness, sequence):
    harness.run(harness.fuzz(sequence))
    assert harness.failures == [], harness.failures


def test_the_other_room_kept_forwarding(harness):
    assert harness.sent > 100 and harness.replies > 50, (harness.sent, harness.replies)
    harness.run(check_video(harness.bob.remote_tracks[0], 0, frames=5))
    assert harness.failures == []
    assert harness.server.sfu.room("steady").stats()["packets_out"] > 0
