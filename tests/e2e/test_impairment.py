"""Quality under impaired networks (issue 17), with aiortc clients and a simulcast publisher.

A userspace impairment (tests/support/impair.py: this kernel has no netem) sits on the
clients' sockets: a subscriber behind a 300 kbit/s bottleneck, 5 % loss on the publisher's and
on the subscriber's links, 100 ms of delay with 30 ms of jitter. What the subscriber decodes is
measured: frame rate, the longest time without a new frame, the layer (frame width) and the
residual loss its receiver counts (RTP packets never received, repairs included). The figures
are printed (run with -s) and benchmarks/README.md's table comes from them.

One server and one publisher serve the whole module (three layers: 160x90 at 100 kbit/s,
320x180 at 400 kbit/s, 640x360 at 1.2 Mbit/s, 15 frames a second); each scenario brings its
own subscriber.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import pytest
import pytest_asyncio

from tests.support.impair import Impairment, impair_peer
from tests.support.inprocess import LocalServer
from tests.support.media import until
from visio_client import Client
from visio_client.simulcast import SimulcastPublisher

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

FPS = 15
ROOM = "impair"


@dataclass
class Figures:
    """What a subscriber got over a window."""

    fps: float
    longest_gap: float  # seconds without a decoded frame
    freezes: int  # gaps over 1 s
    widths: Counter
    received: int
    lost: int

    @property
    def residual(self) -> float:
        return self.lost / max(self.received + self.lost, 1)

    def line(self, name: str) -> str:
        layers = ", ".join(f"{w}: {n}" for w, n in sorted(self.widths.items()))
        return (
            f"{name}: {self.fps:.1f} fps, longest gap {self.longest_gap:.2f} s, "
            f"{self.freezes} freezes > 1 s, widths {{{layers}}}, "
            f"residual loss {self.residual:.2%} ({self.lost}/{self.received + self.lost})"
        )


class Viewer:
    """A subscriber that decodes the video and records when each frame came, and its width."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.frames: list[tuple[float, int]] = []
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        track = self.client.remote_tracks[0].track
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            self.frames.append((time.monotonic(), frame.width))

    async def loss(self) -> tuple[int, int]:
        received = lost = 0
        for stats in (await self.client.subscriber.getStats()).values():
            if stats.type == "inbound-rtp" and stats.kind == "video":
                received += stats.packetsReceived
                lost += stats.packetsLost
        return received, lost

    async def measure(self, seconds: float) -> Figures:
        start = time.monotonic()
        r0, l0 = await self.loss()
        await asyncio.sleep(seconds)
        end = time.monotonic()
        r1, l1 = await self.loss()
        times = [start] + [t for t, _ in self.frames if start <= t <= end] + [end]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        widths = Counter(w for t, w in self.frames if start <= t <= end)
        return Figures(
            fps=(len(times) - 2) / (end - start),
            longest_gap=max(gaps),
            freezes=sum(g > 1.0 for g in gaps),
            widths=widths,
            received=r1 - r0,
            lost=l1 - l0,
        )

    def width_since(self, since: float) -> list[int]:
        return [w for t, w in self.frames if t >= since]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.client.close()


@dataclass
class Room:
    server: LocalServer
    publisher: Client
    simulcast: SimulcastPublisher


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def room():
    async with LocalServer() as server:
        pub = Client(server.url, server.token(ROOM, "pub"))
        await pub.connect()
        simulcast = SimulcastPublisher(pub, fps=FPS)
        await simulcast.start()
        await until(lambda: all(simulcast.sent.values()), what="all layers sent")
        yield Room(server, pub, simulcast)
        await simulcast.stop()
        await pub.close()


async def viewer(room: Room, name: str) -> Viewer:
    client = Client(room.server.url, room.server.token(ROOM, name))
    await client.connect()
    await until(lambda: client.remote_tracks, what=f"{name} gets the video")
    v = Viewer(client)
    v.start()
    await until(lambda: len(v.frames) >= 10, timeout=20, what=f"{name} decodes frames")
    return v


@pytest.mark.xfail(
    strict=True,
    reason="not done: an aiortc subscriber sends neither transport-cc feedback nor REMB (the "
    "server's packets carry no abs-send-time), so nothing adapts to its cap (baseline: the top "
    "layer, 3.4 fps, 72 % loss, freezes); Chromium's feedback reaches the estimator "
    "(tests/browser/test_simulcast_browser.py)",
)
async def test_capped_subscriber_gets_the_low_layer_then_the_top_one(room: Room):
    v = await viewer(room, "capped")
    path = impair_peer(v.client.subscriber, down=Impairment(rate=300_000, queue=0.25))
    await asyncio.sleep(6)  # the estimate follows the cap
    capped = await v.measure(10)
    print(capped.line("300 kbit/s cap"), f"queue drops {path.down.stats.overflow}")
    path.down.set(rate=0.0)
    lifted = time.monotonic()
    try:
        await until(lambda: 640 in v.width_since(lifted), timeout=20, what="the top layer")
        recovered = next(t for t, w in v.frames if t >= lifted and w == 640) - lifted
    except AssertionError:
        recovered = float("inf")
    print(f"cap lifted: first 640x360 frame after {recovered:.1f} s")
    after = await v.measure(6)
    print(after.line("after the cap"))
    await v.close()
    assert capped.widths and max(capped.widths) <= 320, capped.widths  # not the top layer
    assert capped.widths.most_common(1)[0][0] == 160, capped.widths
    assert capped.fps >= 0.8 * FPS, capped.line("capped")
    assert capped.freezes == 0, capped.line("capped")
    assert recovered <= 10, recovered
    assert after.freezes == 0, after.line("after")


async def test_loss_on_both_links_is_repaired(room: Room):
    v = await viewer(room, "lossy")
    up = impair_peer(room.publisher.publisher, up=Impairment(loss=0.05, seed=3))
    down = impair_peer(
        v.client.subscriber,
        up=Impairment(loss=0.05, seed=4),
        down=Impairment(loss=0.05, seed=5),
    )
    try:
        await asyncio.sleep(1)
        figures = await v.measure(12)
        await asyncio.sleep(1)  # repairs of the window's last packets
    finally:
        up.up.set(loss=0.0)
    print(
        figures.line("5 % loss on both links"),
        f"dropped: publisher {up.up.stats.lost}, subscriber {down.down.stats.lost} down, "
        f"{down.up.stats.lost} up (RTCP)",
    )
    await v.close()
    assert up.up.stats.lost > 20 and down.down.stats.lost > 20  # the loss was applied
    assert figures.residual < 0.005, figures.line("lossy")
    assert figures.freezes == 0, figures.line("lossy")


async def test_delay_and_jitter_cause_no_freeze(room: Room):
    v = await viewer(room, "far")
    impair_peer(
        v.client.subscriber,
        up=Impairment(delay=0.1, jitter=0.03, seed=6),
        down=Impairment(delay=0.1, jitter=0.03, seed=7),
    )
    await asyncio.sleep(2)
    figures = await v.measure(10)
    print(figures.line("100 ms + 30 ms jitter"))
    await v.close()
    assert figures.freezes == 0, figures.line("delay")
    assert figures.fps >= 0.8 * FPS, figures.line("delay")
    assert figures.widths.most_common(1)[0][0] == 640, figures.line("delay")  # no reason to drop
