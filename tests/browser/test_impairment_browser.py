"""Quality under impaired networks with real Chromium pages (issue 17): the web client
publishing its simulcast camera (320x180, 640x360, 1280x720), another page viewing it large,
through one meeting that goes through every scenario in turn (no impairment, a 300 kbit/s cap
then lifted, 5 % loss on both links, 100 ms + 30 ms jitter).

The network is two namespaces this test creates and removes (tests/support/impair.py): the
server and the publisher's Chromium in one, the viewer's Chromium in the other, joined by a
veth pair. The cap is the kernel's ``tbf`` on the server's end of that link (the viewer's
downlink). This kernel has no ``netem``: loss, delay and jitter come from the userspace
impairment on the server's own sockets for each page's connection (what it receives from the
publisher is the publisher's uplink, what it sends to and receives from the viewer the viewer's
link); the server runs in this test's event loop, whose thread enters its namespace.

Chromium's own figures are read from getStats: frames decoded and per second, frame width,
its freeze count (a frame later than max(3 x the average frame interval, 150 ms) plus 40 ms)
and RTP packets lost. It counts a packet repaired by RTX (RFC 4588) as lost all the same
(packetsLost), and counts it in retransmittedPacketsReceived, with the RTX copies the server
sends as probes: the residual loss is lost - (RTX received - probe packets sent), which
over-counts it when a probe packet was lost on the way (a bound, not an estimate). The server's
freezes are what the issue calls one: nothing forwarded to the viewer for over 0.5 s while the
publisher sent.

This machine's two cores are shared with other test runs: at times Chromium decodes 3 frames a
second with no impairment at all, and drops packets its starved process did not read. The
first test measures the unimpaired meeting; the figures that depend on CPU (frame rate,
freezes, residual and audio loss, layers held) are asserted only when it shows a machine able
to run the meeting (``judged``: 12 fps or more), the server's event loop was not held up
0.25 s or more in the scenario's window and the publisher encoded 15 fps or more in it
(``calm``), and printed either way. The server's
decisions under the cap (not the top layer; the top layer back within 10 s of the cap lifted)
are always asserted.

``VISIO_RECORD_TWCC=<folder>`` writes what the viewer's estimator was given (feedback, send
times and sizes, probe clusters, when each scenario started) to <folder>/twcc_chromium.json.gz,
as tests/unit/test_bwe.py replays.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from tests.browser.conftest import ARGS, CHROMIUM
from tests.support import netns
from tests.support.impair import (
    SERVER_ADDRESS,
    ImpairedPath,
    Namespaces,
    entered,
    impair_connection,
    linked_namespaces,
)
from tests.support.inprocess import LocalServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.asyncio(loop_scope="module"),
]

ROOM = "impair"
JUDGED_FPS = 12

OUTBOUND = """async () => {
  const s = window.visio.session;
  const out = [];
  if (s && s.publisher) (await s.publisher.getStats()).forEach(x => {
    if (x.type === 'outbound-rtp' && x.kind === 'video')
      out.push([x.rid, x.active, x.frameWidth, x.framesSent, x.framesPerSecond,
                x.qualityLimitationReason, Math.round(x.targetBitrate || 0)]);
  });
  out.sort();
  return out;
}"""

UPLINK = """async () => {
  const s = window.visio.session;
  let estimate = 0, sent = 0;
  if (s && s.publisher) (await s.publisher.getStats()).forEach(x => {
    if (x.type === 'candidate-pair' && x.nominated && x.availableOutgoingBitrate)
      estimate = x.availableOutgoingBitrate;
    if (x.type === 'outbound-rtp' && x.kind === 'video') sent += x.bytesSent || 0;
  });
  return {estimate, sent};
}"""

STATES = """() => {
  const s = window.visio && window.visio.session;
  return s ? {publisher: s.publisher && s.publisher.connectionState,
              subscriber: s.subscriber && s.subscriber.connectionState} : 'no session';
}"""

INBOUND = """async () => {
  const s = window.visio && window.visio.session;  // undefined while the page still loads
  const out = {width: 0, frames: 0, fps: 0, freezes: 0, freezeTime: 0, received: 0, lost: 0,
               rtx: 0, audio: 0, audioLost: 0};
  if (s && s.subscriber) (await s.subscriber.getStats()).forEach(x => {
    if (x.type === 'inbound-rtp' && x.kind === 'audio') {
      out.audio += x.packetsReceived || 0; out.audioLost += x.packetsLost || 0;
    }
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


@dataclass
class Meeting:
    net: Namespaces
    server: LocalServer
    pub: object  # the publisher's page
    view: object  # the viewer's page
    sub: object  # the viewer's SubscribeConnection
    uplink: ImpairedPath  # the publisher's connection, at the server
    viewer: ImpairedPath  # the viewer's connection, at the server
    judged: bool = True
    reference_fps: float = 0.0
    events: list = field(default_factory=list)  # what the viewer's estimator was given

    def mark(self, name: str) -> None:
        self.events.append(["mark", time.monotonic(), name])


def record(estimator, events: list) -> None:
    """Keep what ``estimator`` is given (VISIO_RECORD_TWCC)."""
    feedback, start, end = estimator.on_feedback, estimator.probe_start, estimator.probe_end

    def on_feedback(seqs, arrivals, now):
        sent = [round(float(estimator._view_sent[s & 0xFFFF]), 6) for s in seqs]
        size = [int(estimator._view_size[s & 0xFFFF]) for s in seqs]
        got = [None if a is None else round(a, 6) for a in arrivals]
        events.append(["fb", now, list(seqs), got, sent, size])
        feedback(seqs, arrivals, now)

    def probe_start(first, target, now):
        events.append(["ps", now, first, target])
        start(first, target, now)

    def probe_end(last):
        events.append(["pe", time.monotonic(), last])
        end(last)

    estimator.on_feedback, estimator.probe_start = on_feedback, probe_start
    estimator.probe_end = probe_end


@pytest.fixture(scope="module")
def network():
    """The two namespaces, this thread in the server's while the module runs."""
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"the impairment test makes network namespaces, but {reason}")
    with linked_namespaces(netns.unique_name("visio-imp")) as net, entered(net.server):
        yield net


async def stats(page) -> dict:
    return await page.evaluate(INBOUND)


def participant(server: LocalServer, name: str):
    return next(p for p in server.sfu.room(ROOM).participants.values() if p.name == name)


def connection(transport):
    """The aioice connection under one of the server's PeerTransports."""
    return transport._dtls.transport._connection


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def meeting(network):
    from playwright.async_api import async_playwright

    async with LocalServer(host=SERVER_ADDRESS, dev=True) as server, async_playwright() as p:
        # http://198.18.17.1 is no secure context: the camera needs it to be treated as one
        args = [*ARGS, f"--unsafely-treat-insecure-origin-as-secure={server.url}"]
        pages = []
        consoles: dict[str, list[str]] = {}  # each page's console, told if the meeting fails
        for name, namespace in (("Pub", network.server), ("View", network.client)):
            browser = await p.chromium.launch(
                executable_path=str(netns.wrapper(namespace, CHROMIUM)), headless=True, args=args
            )
            context = await browser.new_context(
                permissions=["camera", "microphone"], locale="en-US"
            )
            page = await context.new_page()
            lines = consoles.setdefault(name, [])
            page.on("console", lambda msg, lines=lines: lines.append(f"{msg.type}: {msg.text}"))
            await page.goto(f"{server.url}/r/{ROOM}?autojoin=1&lang=en&name={name}")
            pages.append(page)
        pub, view = pages
        await view.set_viewport_size({"width": 1280, "height": 1400})
        deadline = time.monotonic() + 60
        while (await stats(view))["frames"] < 10:
            if time.monotonic() > deadline:
                states = [(page.url, await page.evaluate(STATES)) for page in pages]
                room = server.sfu.room(ROOM)
                joined = [
                    (p.name, [(t.kind, t.source) for t in p.tracks.values()])
                    for p in (room.participants.values() if room else [])
                ]
                logs = {name: lines[-15:] for name, lines in consoles.items()}
                raise AssertionError(
                    f"the viewer decodes no video: {states}, joined {joined}, consoles {logs}"
                )
            await asyncio.sleep(0.5)
        await view.locator("#grid .tile", has=view.locator(".name", has_text="Pub")).dblclick()
        sub = participant(server, "View").subscriber
        m = Meeting(
            network,
            server,
            pub,
            view,
            sub,
            uplink=impair_connection(connection(participant(server, "Pub").publishing.transport)),
            viewer=impair_connection(connection(sub.transport)),
        )
        folder = os.environ.get("VISIO_RECORD_TWCC")
        if folder:
            record(sub.estimator, m.events)
        yield m
        if folder:
            with gzip.open(Path(folder) / "twcc_chromium.json.gz", "wt") as f:
                json.dump(m.events, f)
        for page in pages:
            await page.context.browser.close()


def server_freezes(sub, since: float) -> list[float]:
    """The freezes the server saw for the viewer's video since ``since`` (seconds each)."""
    video = [d for d in sub.downtracks.values() if d.track.kind == "video"]
    return [round(gap, 2) for d in video for end, gap in d.freeze_log if end >= since]


def best_live_layer(sub) -> int:
    """The highest layer the publisher sends now (a packet within the last second): Chromium
    drops its top layer for a while when this shared machine starves its encoder."""
    video = next(d for d in sub.downtracks.values() if d.track.kind == "video")
    now = time.monotonic()
    live = [i for i, layer in enumerate(video.track.layers) if now - layer.last_packet <= 1.0]
    return max(live, default=-1)


def forwarded_layer(sub) -> int:
    """The layer forwarded to the viewer (2: 1280x720)."""
    return next(d.current_layer for d in sub.downtracks.values() if d.track.kind == "video")


async def window(m: Meeting, seconds: float) -> dict:
    """The viewer's figures over ``seconds``: fps, freezes, widths seen, residual loss, and
    the server's estimate and layer every half second."""
    sub = m.sub
    sent_before = await sent_frames(m)
    first = await stats(m.view)
    probes = sub.probe_packets
    began = time.monotonic()
    widths, trace, best = [], [], []
    end = time.monotonic() + seconds
    stall = 0.0  # the longest this process's event loop (the server's) was held up
    while time.monotonic() < end:
        before = time.monotonic()
        await asyncio.sleep(0.5)
        stall = max(stall, time.monotonic() - before - 0.5)
        widths.append((await stats(m.view))["width"])
        trace.append((round((sub.bandwidth or 0) / 1000), forwarded_layer(sub)))
        best.append(best_live_layer(sub))
    last = await stats(m.view)
    publisher_fps = (await sent_frames(m) - sent_before) / seconds
    received = last["received"] - first["received"]
    probes = sub.probe_packets - probes
    repaired = max(last["rtx"] - first["rtx"] - probes, 0)
    lost = max(last["lost"] - first["lost"] - repaired, 0)
    layers = [layer for _, layer in trace]
    audio = last["audio"] - first["audio"]
    audio_lost = max(last["audioLost"] - first["audioLost"], 0)
    return {
        "fps": (last["frames"] - first["frames"]) / seconds,
        "freezes": last["freezes"] - first["freezes"],
        "freeze_time": round(last["freezeTime"] - first["freezeTime"], 2),
        "widths": sorted(set(widths)),
        "top_share": layers.count(2) / max(len(layers), 1),
        # how often the viewer got the best layer the publisher was sending
        "best_share": sum(a >= b for a, b in zip(layers, best, strict=True)) / max(len(best), 1),
        "top_sent_share": best.count(2) / max(len(best), 1),
        "residual": lost / max(received + lost, 1),
        "lost": lost,
        "received": received,
        "repaired": repaired,
        "probes": probes,
        "server_freezes": server_freezes(sub, began),
        "audio_packets": audio,
        "audio_loss": audio_lost / max(audio + audio_lost, 1),
        "stall": round(stall, 2),
        "publisher_fps": publisher_fps,
        "trace (kbit/s, layer)": trace,
    }


async def sent_frames(m: Meeting) -> int:
    """Frames the publisher's Chromium has encoded on its lowest layer (always on)."""
    layers = await m.pub.evaluate(OUTBOUND)
    return next((layer[3] or 0 for layer in layers if layer[0] == "q"), 0)


def calm(m: Meeting, figures: dict) -> bool:
    """Whether the figures that depend on CPU are judged: the machine ran the unimpaired
    meeting (``judged``), the server's event loop was never held up a quarter of a second in
    the window (at load 15 on the two cores it was, 0.3 s at a time, and its sends left in
    bursts that a 300 kbit/s queue dropped, audio included), and the publisher's Chromium
    encoded 15 frames a second or more (its camera gives 20; a starved encoder sends fewer,
    and its top layer stalls: a freeze no server can help)."""
    return m.judged and figures["stall"] < 0.25 and figures["publisher_fps"] >= 15


async def test_unimpaired_reference(meeting: Meeting):
    """The meeting with no impairment, 4 s: whether this machine can run it now."""
    await asyncio.sleep(2)
    figures = await window(meeting, 4)
    meeting.judged = figures["fps"] >= JUDGED_FPS
    meeting.reference_fps = figures["fps"]
    note = "" if meeting.judged else " (loaded: timing not judged)"
    print("chromium in namespaces, no impairment:", figures, note)
    assert figures["fps"] > 0


async def test_viewer_behind_a_300_kbit_cap_then_lifted(meeting: Meeting):
    """tbf at 300 kbit/s (250 ms of queue) on the viewer's downlink: the low layers at the
    full frame rate with no freeze over 1 s, the audio whole; lifted: the top layer within
    10 s, and kept."""
    m = meeting
    m.mark("cap")
    m.net.cap(300_000, queue=0.25)
    await asyncio.sleep(6)  # the estimate follows the cap
    capped = await window(m, 8)
    print(
        "chromium, tbf 300 kbit/s:",
        capped,
        "estimate",
        m.sub.bandwidth,
        "dropped by tbf",
        m.net.dropped(),
    )
    m.mark("lifted")
    m.net.lift()
    lifted = time.monotonic()
    recovered = float("inf")
    while time.monotonic() - lifted < 15:
        if forwarded_layer(m.sub) == 2:  # forwarded from its keyframe on
            recovered = time.monotonic() - lifted
            break
        await asyncio.sleep(0.1)
    print(f"chromium, cap lifted: top layer after {recovered:.1f} s, estimate {m.sub.bandwidth}")
    after = await window(m, 5)
    print("chromium, after the cap:", after)
    assert capped["top_share"] <= 0.1, capped  # not the top layer
    assert recovered <= 10, recovered
    if calm(m, capped):
        assert capped["fps"] >= 0.75 * m.reference_fps, capped  # full rate
        assert max(capped["server_freezes"], default=0) < 1.0, capped
        # audio is not held back for video; the 250 ms drop-tail queue of the cap drops what
        # is in it when the estimate's increase or a probe overshoots, audio too (no pacer
        # here orders the bottleneck's queue): 0-0.25 % on a quiet machine, 1.7 % seen once
        # in CI; Opus FEC repairs single losses
        assert capped["audio_loss"] < 0.03, capped
    if calm(m, after):
        assert after["best_share"] >= 0.8, after  # and it stays there (when it is sent)


async def test_loss_on_both_links(meeting: Meeting):
    """5 % random loss on the publisher's uplink and on the viewer's link both ways: repaired
    (upstream NACK, RTX toward the viewer) to under 0.5 % residual, no freeze over 1 s.

    Chromium's own estimate of the publisher's uplink sometimes falls under this loss and it
    stops its 1280x720 layer (qualityLimitationReason "bandwidth"): the server sees the layer
    gone after LIVE_WITHIN (1 s) and moves the viewer down at the next layer's keyframe, a
    freeze of 1.3-1.8 s (seen in 2 runs of 8). That case is allowed 2 s."""
    m = meeting
    m.mark("loss")
    m.uplink.down.set(loss=0.05)
    m.viewer.up.set(loss=0.05)
    m.viewer.down.set(loss=0.05)
    dropped = (m.uplink.down.stats.lost, m.viewer.up.stats.lost, m.viewer.down.stats.lost)
    try:
        await asyncio.sleep(2)
        lossy = await window(m, 10)
        publisher = await m.pub.evaluate(OUTBOUND)
    finally:
        for link in (m.uplink.down, m.viewer.up, m.viewer.down):
            link.set(loss=0.0)
    now = (m.uplink.down.stats.lost, m.viewer.up.stats.lost, m.viewer.down.stats.lost)
    dropped = tuple(b - a for a, b in zip(dropped, now, strict=True))
    print(
        "chromium, 5 % loss on both links:",
        lossy,
        "publisher",
        publisher,
        f"dropped: publisher {dropped[0]}, viewer {dropped[1]} down, {dropped[2]} up",
    )
    assert dropped[0] > 20 and dropped[1] > 20  # the loss was applied
    if calm(m, lossy):
        assert lossy["residual"] < 0.005, lossy
        stopped = any(layer[5] == "bandwidth" for layer in publisher)
        assert max(lossy["server_freezes"], default=0) < (2.0 if stopped else 1.0), lossy
        assert lossy["fps"] >= 10, lossy


async def test_delay_and_jitter(meeting: Meeting):
    """100 ms each way with 30 ms of jitter (each datagram's own, kept in order): no freeze,
    and the viewer keeps the top layer (jitter is not congestion)."""
    m = meeting
    m.mark("jitter")
    m.viewer.up.set(delay=0.1, jitter=0.03)
    m.viewer.down.set(delay=0.1, jitter=0.03)
    try:
        await asyncio.sleep(8)  # the 100 ms step reads as a queue: down, held 4 s, probed up
        far = await window(m, 8)
    finally:
        for link in (m.viewer.up, m.viewer.down):
            link.set(delay=0.0, jitter=0.0)
    print(
        "chromium, 100 ms + 30 ms jitter:",
        far,
        "overuses",
        m.sub.estimator.overuses,
        "publisher",
        await m.pub.evaluate(OUTBOUND),
    )
    if calm(m, far):
        assert max(far["server_freezes"], default=0) < 1.0, far
        assert far["fps"] >= 10, far
        assert far["best_share"] >= 0.7, far  # not held below what the publisher sends


async def test_publisher_behind_a_capped_uplink(meeting: Meeting):
    """An 800 kbit/s cap (250 ms of queue) on what the publisher sends: our transport-cc
    feedback (TwccResponder) lets its Chromium's congestion control see the queue build, so
    its estimate (availableOutgoingBitrate) falls under the cap and it sends what the link
    carries, with little left queued or dropped; the viewer keeps a picture; lifted, the
    publisher's estimate climbs back."""
    m = meeting
    cap = 800_000
    link = m.uplink.down  # what the server receives from the publisher
    twcc = participant(m.server, "Pub").publishing.twcc
    assert twcc is not None, "the publisher's offer had transport-cc: our answer keeps it"
    feedbacks = twcc.sent
    m.mark("uplink cap")
    link.set(rate=cap, queue=0.25)
    overflow = link.stats.overflow
    try:
        await asyncio.sleep(8)  # the publisher's estimate follows the cap
        dropped_before, packets_before = link.stats.overflow, link.stats.packets
        link.stats.max_queue_delay = 0.0
        before = await m.pub.evaluate(UPLINK)
        capped = await window(m, 8)
        after = await m.pub.evaluate(UPLINK)
        publisher = await m.pub.evaluate(OUTBOUND)
        queued = link.stats.max_queue_delay
        dropped = link.stats.overflow - dropped_before
        packets = link.stats.packets - packets_before
    finally:
        link.set(rate=0.0)
    sending = (after["sent"] - before["sent"]) * 8 / 8  # bits over the 8 s window
    print(
        "chromium, publisher's uplink capped at 800 kbit/s:",
        capped,
        f"publisher's estimate {after['estimate']:.0f}, sending {sending:.0f} bit/s, "
        f"queue at most {queued * 1000:.0f} ms, dropped {dropped}/{packets} by the queue "
        f"({link.stats.overflow - overflow} since the cap), feedback packets "
        f"{twcc.sent - feedbacks}",
        "publisher",
        publisher,
    )
    assert twcc.sent - feedbacks >= 100  # every 100 ms
    assert m.server.sfu.stats()["twcc_feedback_out"] >= twcc.sent  # /metrics has them
    assert 0 < after["estimate"] <= 1.1 * cap, after
    lifted = time.monotonic()
    while time.monotonic() - lifted < 20:
        estimate = (await m.pub.evaluate(UPLINK))["estimate"]
        if estimate > 1.5 * cap:
            break
        await asyncio.sleep(0.5)
    print(
        f"chromium, uplink cap lifted: estimate {estimate:.0f} after "
        f"{time.monotonic() - lifted:.1f} s"
    )
    assert estimate > 1.5 * cap
    if calm(m, capped):
        assert dropped <= 0.02 * packets, (dropped, packets)  # it sends what the link takes
        assert max(capped["server_freezes"], default=0) < 1.0, capped
        assert capped["fps"] >= 10, capped
