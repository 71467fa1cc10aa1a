"""Quality under impaired networks with real Chromium pages (issue 17): the web client
publishing its simulcast camera (320x180, 640x360, 1280x720), another page viewing it large.

The server runs in this test's event loop (LocalServer), so that the userspace impairment
(tests/support/impair.py: this kernel has no netem) sits on the server's own sockets for each
page's connection: what the server sends to the viewer is the viewer's downlink, what it
receives from the publisher the publisher's uplink. Chromium's own figures are read from
getStats: frames decoded and per second, frame width, its freeze count (a frame later than
max(3 x the average frame interval, 150 ms) plus 40 ms) and RTP packets lost.

Chromium counts a packet repaired by RTX (RFC 4588) as lost all the same (packetsLost), and
counts it in retransmittedPacketsReceived, with the RTX copies the server sends as probes. The
residual loss is therefore lost - (RTX received - probe packets sent), which over-counts it
when a probe packet was lost on the way (a bound, not an estimate).

This machine's two cores are shared with other test runs: at times Chromium decodes 3 frames a
second with no impairment at all, and drops packets its starved process did not read. Each test
first measures the unimpaired meeting (``reference``); the figures that depend on CPU (frame
rate, freezes, residual loss) are asserted only when that reference shows a machine able to
run the meeting (``judged``: 12 fps or more), and printed either way. The server's decisions
(the layer chosen under the cap, the top layer back within 10 s) are always asserted.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio

from tests.browser.conftest import ARGS, CHROMIUM
from tests.support.impair import Impairment, impair_connection
from tests.support.inprocess import LocalServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.asyncio(loop_scope="module"),
]

INBOUND = """async () => {
  const s = window.visio.session;
  const out = {width: 0, frames: 0, fps: 0, freezes: 0, freezeTime: 0, received: 0, lost: 0,
               rtx: 0};
  if (s && s.subscriber) (await s.subscriber.getStats()).forEach(x => {
    if (x.type === 'inbound-rtp' && x.kind === 'video') {
      out.width = Math.max(out.width, x.frameWidth || 0);
      out.frames += x.framesDecoded || 0; out.fps += x.framesPerSecond || 0;
      out.freezes += x.freezeCount || 0; out.freezeTime += x.totalFreezesDuration || 0;
      out.received += x.packetsReceived || 0; out.lost += x.packetsLost || 0;
      out.rtx += x.retransmittedPacketsReceived || 0;
    }
  });
  return out;
}"""


class Page:
    def __init__(self, page, name: str) -> None:
        self.page = page
        self.name = name

    async def stats(self) -> dict:
        return await self.page.evaluate(INBOUND)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def chromium():
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        await browser.close()


async def meeting(server: LocalServer, chromium, room: str) -> tuple[Page, Page]:
    pages = []
    for name in ("Pub", "View"):
        context = await chromium.new_context(permissions=["camera", "microphone"], locale="en-US")
        page = await context.new_page()
        await page.goto(f"{server.url}/r/{room}?autojoin=1&lang=en&name={name}")
        pages.append(Page(page, name))
    pub, view = pages
    await view.page.set_viewport_size({"width": 1280, "height": 1400})
    deadline = time.monotonic() + 40
    while (await view.stats())["frames"] < 10:
        assert time.monotonic() < deadline, "the viewer decodes no video"
        await asyncio.sleep(0.5)
    tile = view.page.locator("#grid .tile", has=view.page.locator(".name", has_text="Pub"))
    await tile.dblclick()
    return pub, view


JUDGED_FPS = 12


async def reference(view: Page) -> bool:
    """Measure the unimpaired meeting for 4 s; whether this machine can run it now."""
    figures = await window(view, 4)
    judged = figures["fps"] >= JUDGED_FPS
    print("chromium, no impairment:", figures, "" if judged else "(loaded: timing not judged)")
    return judged


def participant(server: LocalServer, room: str, name: str):
    return next(p for p in server.sfu.room(room).participants.values() if p.name == name)


def server_freezes(sub, since: float) -> list[float]:
    """The freezes the server saw for the viewer's video since ``since`` (seconds each):
    nothing forwarded for over 0.5 s while the publisher sent (what the issue calls a freeze;
    Chromium's own count also sees its decoder starved of CPU on this shared machine)."""
    if sub is None:
        return []
    video = [d for d in sub.downtracks.values() if d.track.kind == "video"]
    return [round(gap, 2) for d in video for end, gap in d.freeze_log if end >= since]


async def window(view: Page, seconds: float, sub=None) -> dict:
    """The viewer's figures over ``seconds``: fps, freezes, widths seen, residual loss
    (``sub``: its SubscribeConnection, whose probe packets are not repairs)."""
    first = await view.stats()
    probes = sub.probe_packets if sub is not None else 0
    began = time.monotonic()
    widths = []
    end = time.monotonic() + seconds
    trace = []
    while time.monotonic() < end:
        await asyncio.sleep(0.5)
        widths.append((await view.stats())["width"])
        if sub is not None:
            layers = [d.current_layer for d in sub.downtracks.values() if d.track.kind == "video"]
            trace.append((round((sub.bandwidth or 0) / 1000), layers[0] if layers else -1))
    last = await view.stats()
    received = last["received"] - first["received"]
    probes = (sub.probe_packets if sub is not None else 0) - probes
    repaired = max(last["rtx"] - first["rtx"] - probes, 0)
    lost = max(last["lost"] - first["lost"] - repaired, 0)
    return {
        "fps": (last["frames"] - first["frames"]) / seconds,
        "freezes": last["freezes"] - first["freezes"],
        "freeze_time": last["freezeTime"] - first["freezeTime"],
        "widths": sorted(set(widths)),
        "residual": lost / max(received + lost, 1),
        "lost": lost,
        "received": received,
        "repaired": repaired,
        "probes": probes,
        "server_freezes": server_freezes(sub, began),
        "trace (kbit/s, layer)": trace,
    }


async def test_chromium_viewer_behind_a_300_kbit_cap_then_lifted(chromium):
    async with LocalServer(dev=True) as server:
        pub, view = await meeting(server, chromium, "cap")
        judged = await reference(view)
        sub = participant(server, "cap", "View").subscriber
        path = impair_connection(
            sub.transport._dtls.transport._connection, up=Impairment(rate=300_000, queue=0.25)
        )
        await asyncio.sleep(8)  # the estimate follows the cap
        capped = await window(view, 10, sub)
        print(
            "chromium, 300 kbit/s cap:",
            capped,
            "estimate",
            sub.bandwidth,
            "queue drops",
            path.up.stats.overflow,
        )
        path.up.set(rate=0.0)
        lifted = time.monotonic()
        recovered = float("inf")
        video = next(d for d in sub.downtracks.values() if d.track.kind == "video")
        while time.monotonic() - lifted < 20:
            if video.current_layer == 2:  # forwarded from its keyframe on
                recovered = time.monotonic() - lifted
                break
            await asyncio.sleep(0.1)
        print(f"chromium, cap lifted: top layer after {recovered:.1f} s, estimate {sub.bandwidth}")
        after = await window(view, 5, sub)
        print("chromium, after the cap:", after)
        for p in (pub, view):
            await p.page.context.close()
        layers = [layer for _, layer in capped["trace (kbit/s, layer)"]]
        assert layers.count(2) <= 0.1 * len(layers), capped  # not the top layer
        assert recovered <= 10, recovered
        if judged:
            assert capped["fps"] >= 10, capped
            assert max(capped["server_freezes"], default=0) < 1.0, capped


async def test_chromium_with_loss_on_both_links(chromium):
    async with LocalServer(dev=True) as server:
        pub, view = await meeting(server, chromium, "loss")
        judged = await reference(view)
        publisher = participant(server, "loss", "Pub").publishing
        sub = participant(server, "loss", "View").subscriber
        up = impair_connection(
            publisher.transport._dtls.transport._connection, down=Impairment(loss=0.05, seed=3)
        )
        down = impair_connection(
            sub.transport._dtls.transport._connection,
            up=Impairment(loss=0.05, seed=4),
            down=Impairment(loss=0.05, seed=5),
        )
        await asyncio.sleep(2)
        lossy = await window(view, 12, sub)
        print(
            "chromium, 5 % loss on both links:",
            lossy,
            f"dropped: publisher {up.down.stats.lost}, viewer {down.up.stats.lost} down, "
            f"{down.down.stats.lost} up",
        )
        for p in (pub, view):
            await p.page.context.close()
        assert up.down.stats.lost > 20 and down.up.stats.lost > 20
        if judged:
            assert lossy["residual"] < 0.005, lossy
            assert max(lossy["server_freezes"], default=0) < 1.0, lossy
            assert lossy["fps"] >= 10, lossy


async def test_chromium_with_delay_and_jitter(chromium):
    """100 ms each way with 30 ms of jitter (each datagram's own, kept in order): no freeze."""
    async with LocalServer(dev=True) as server:
        pub, view = await meeting(server, chromium, "far")
        judged = await reference(view)
        sub = participant(server, "far", "View").subscriber
        impair_connection(
            sub.transport._dtls.transport._connection,
            up=Impairment(delay=0.1, jitter=0.03, seed=6),
            down=Impairment(delay=0.1, jitter=0.03, seed=7),
        )
        await asyncio.sleep(3)
        far = await window(view, 10, sub)
        print("chromium, 100 ms + 30 ms jitter:", far, "overuses", sub.estimator.overuses)
        for p in (pub, view):
            await p.page.context.close()
        if judged:
            assert max(far["server_freezes"], default=0) < 1.0, far
            assert far["fps"] >= 10, far
        # not asserted, printed: which layer it gets. The delay-based estimator still takes
        # much of this jitter for queues building (tens of overuses in 10 s), and the viewer
        # mostly gets 320x180 or 640x360 (benchmarks/README.md)
