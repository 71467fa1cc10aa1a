"""Breakout rooms in real Chromium pages (issue 16): Hana, a host, opens two rooms from the People
panel and assigns people with the list next to their names; Alice and Xavier (an aiortc
participant whose camera is red and whose tone is 440 Hz) go to Room 1, Bob to Room 2, and Hana
joins Room 2. Each page then plays only its room's media (Alice's page shows Xavier's red video
and plays his 440 Hz tone, Bob's Hana's), over the same RTCPeerConnection objects: ICE never
starts again (no new or checking state, the same selected candidate pair). The moved see "You
are in Room 1" with the time left (Bob's page in French; room names are the host's), and a way
back; the host writes to every room, closes the rooms, and everyone is back with everyone.
Screenshots: test-artifacts/breakout-*.png."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid

import pytest

from tests.browser.conftest import artefact
from tests.browser.test_room_state import new_page
from tests.support.browser import poll
from visio_client import Client
from visio_client.media import PatternVideoTrack, ToneAudioTrack

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

SWITCH = 2.0  # seconds within which media must switch after a move, on a machine not overloaded


def switch_limit() -> float:
    """SWITCH, stretched when the machine runs more than 1.5 busy processes per core."""
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return SWITCH * max(1.0, load / 1.5)


# remember the page's peer connections and every ICE state they go through from now on
WATCH = """() => {
  const s = window.visio.session;
  const w = {pub: s.publisher, sub: s.subscriber, states: []};
  for (const [name, pc] of [['pub', s.publisher], ['sub', s.subscriber]]) {
    pc.addEventListener('iceconnectionstatechange',
      () => w.states.push(name + ':' + pc.iceConnectionState));
  }
  window.__breakoutWatch = w;
  return true;
}"""
SAME = """async () => {
  const s = window.visio.session, w = window.__breakoutWatch;
  const pair = async (pc) => {
    let id = null;
    (await pc.getStats()).forEach(x => {
      if (x.type === 'transport') id = x.selectedCandidatePairId;
    });
    return id;
  };
  return {same: s.publisher === w.pub && s.subscriber === w.sub, states: w.states,
          pairs: [await pair(s.publisher), await pair(s.subscriber)]};
}"""
# whose tracks the page receives, with decoded frames and audio bytes, and the mean colour of
# each remote video
MEDIA = """async () => {
  const s = window.visio.session;
  const out = {};
  const stats = await s.subscriber.getStats();
  const byMid = {};
  stats.forEach(x => { if (x.type === 'inbound-rtp') byMid[x.mid] = x; });
  for (const [mid, info] of s.remote) {
    const x = byMid[mid] || {};
    const who = (out[info.participant] ||= {frames: 0, audio: 0, colour: null});
    if (info.kind === 'video') who.frames = x.framesDecoded || 0;
    else who.audio = x.bytesReceived || 0;
  }
  for (const video of document.querySelectorAll('#grid .tile:not(.self) video')) {
    const sid = video.closest('.tile').dataset.participant;
    if (!out[sid] || !video.videoWidth) continue;
    const c = document.createElement('canvas');
    c.width = 32; c.height = 24;
    const g = c.getContext('2d');
    g.drawImage(video, 0, 0, 32, 24);
    const d = g.getImageData(0, 0, 32, 24).data;
    let r = 0, gr = 0, b = 0;
    for (let i = 0; i < d.length; i += 4) { r += d[i]; gr += d[i + 1]; b += d[i + 2]; }
    const n = d.length / 4;
    out[sid].colour = [Math.round(r / n), Math.round(gr / n), Math.round(b / n)];
  }
  return out;
}"""
BANNER = """() => {
  const b = document.getElementById('breakout-banner');
  return b && !b.hidden ? b.textContent : '';
}"""


# the strongest frequency (Hz) in what the page plays from a participant's microphone
TONE = """async (sid) => {
  const tile = document.querySelector(`#grid .tile[data-participant="${sid}"]`);
  const stream = tile && tile.querySelector('audio').srcObject;
  if (!stream) return null;
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 8192;
  ctx.createMediaStreamSource(stream).connect(analyser);
  await new Promise(r => setTimeout(r, 600));
  const bins = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(bins);
  let best = 0;
  for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
  await ctx.close();
  return best * ctx.sampleRate / analyser.fftSize;
}"""


def everyone(media: dict, expected: set[str]) -> bool:
    """The page receives exactly ``expected``'s tracks, and has decoded video from each."""
    return set(media) == expected and all(v["frames"] > 0 for v in media.values())


def red(colour) -> bool:
    """Xavier's colour (PALETTE[0]: U 60, V 200) as Chromium renders it."""
    return colour is not None and colour[0] > 140 and colour[1] < 120 and colour[2] < 90


class Xavier:
    """An aiortc participant (colour 0: red, tone 440 Hz) run by an event loop in a thread."""

    def __init__(self, server, room: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client: Client = self.run(
            self._join(server.url, server.token(room, "xavier", "Xavier"))
        )
        self.sid = self.client.joined["participant"]["sid"]

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _join(self, url: str, token: str) -> Client:
        client = Client(url, token)
        await client.connect()
        await client.publish(
            PatternVideoTrack(0, 160, 120, fps=10),
            ToneAudioTrack(0),
            sources=["camera", "microphone"],
        )
        return client

    def senders(self) -> set[str]:
        async def read() -> set[str]:
            return {r.participant_sid for r in self.client.remote_tracks}

        return self.run(read())

    def connections(self) -> tuple:
        async def read() -> tuple:
            c = self.client
            return (c.publisher, c.subscriber, c.subscriber.getTransceivers()[0].receiver.transport)

        return self.run(read())

    def decodes(self, sender: str, frames: int = 3) -> bool:
        async def read() -> bool:
            video = next(
                r
                for r in self.client.remote_tracks
                if r.participant_sid == sender and r.kind == "video"
            )
            for _ in range(frames):
                await asyncio.wait_for(video.track.recv(), 15)
            return True

        return self.run(read(), timeout=60)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.client.leave(), timeout=20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def sid_of(page) -> str:
    return page.evaluate("() => window.visio.session.me.sid")


def move(host, who_sid: str, room_label: str) -> None:
    """The host moves someone with the list next to their name in the People panel."""
    select = host.locator(f'#breakout-rooms li[data-participant="{who_sid}"] select.move')
    select.select_option(label=room_label)


def test_breakout_rooms_in_the_web_client(server, browser):
    room = f"bo-{uuid.uuid4().hex[:6]}"
    url = f"{server.url}/r/{room}?autojoin=1&name="
    pages = {}
    xavier = None
    try:
        pages["Hana"] = new_page(browser, f"{url}Hana&lang=en&host=1", "Hana")
        pages["Alice"] = new_page(browser, f"{url}Alice&lang=en", "Alice")
        pages["Bob"] = new_page(browser, f"{url}Bob&lang=fr", "Bob")
        for page in pages.values():
            page.wait_for_function(
                "() => window.visioBreakout && window.visioBreakout.available"
                " && window.visio.session.state === 'connected'",
                timeout=30000,
            )
        xavier = Xavier(server, room)
        sids = {name: sid_of(page) for name, page in pages.items()} | {"Xavier": xavier.sid}
        for name, page in pages.items():
            others = {s for n, s in sids.items() if n != name}
            poll(page, MEDIA, lambda m, o=others: everyone(m, o), timeout=60,
                 what=f"{name} receives everyone")  # fmt: skip
        before = {name: page.evaluate(WATCH) for name, page in pages.items()}
        assert all(before.values())
        pairs = {name: page.evaluate(SAME)["pairs"] for name, page in pages.items()}
        xavier_before = xavier.connections()
        hana = pages["Hana"]

        # Hana opens two rooms, assignment by hand, 10 minutes
        assert hana.evaluate("() => window.visioBreakout.host") is True
        assert not pages["Alice"].locator("#breakout-setup").is_visible()
        hana.click("#people-button")
        hana.click("#breakout-box > summary")  # folded until used
        hana.fill("#breakout-count", "2")
        hana.select_option("#breakout-assign", "manual")
        hana.fill("#breakout-minutes", "10")
        artefact(hana, "breakout-host-setup")
        hana.click("#breakout-open")
        hana.wait_for_selector('#breakout-rooms section[data-room="2"]')
        move(hana, sids["Bob"], "Room 2")
        move(hana, sids["Xavier"], "Room 1")
        t0 = time.monotonic()
        move(hana, sids["Alice"], "Room 1")
        alice = poll(
            pages["Alice"], MEDIA,
            lambda m: set(m) == {sids["Xavier"]} and red(m[sids["Xavier"]]["colour"]),
            timeout=30, what="Alice sees only Xavier's red video",
        )  # fmt: skip
        switched = time.monotonic() - t0
        assert switched < switch_limit(), f"Alice's media switched after {switched:.1f} s"
        # Hana visits Room 2 (the Join button of that room)
        hana.click('#breakout-rooms section[data-room="2"] button.visit')
        poll(pages["Bob"], MEDIA, lambda m: everyone(m, {sids["Hana"]}), timeout=30,
             what="Bob receives only Hana")  # fmt: skip
        poll(
            hana,
            MEDIA,
            lambda m: set(m) == {sids["Bob"]},
            timeout=30,
            what="Hana receives only Bob",
        )
        assert xavier.senders() == {sids["Alice"]} and xavier.decodes(sids["Alice"])
        # media keeps flowing in each room: frames and audio grow
        later = poll(
            pages["Alice"], MEDIA,
            lambda m: set(m) == {sids["Xavier"]}
            and m[sids["Xavier"]]["frames"] > alice[sids["Xavier"]]["frames"] + 10
            and m[sids["Xavier"]]["audio"] > alice[sids["Xavier"]]["audio"],
            timeout=30, what="Alice keeps receiving Xavier",
        )  # fmt: skip
        assert red(later[sids["Xavier"]]["colour"])
        tone = pages["Alice"].evaluate(TONE, sids["Xavier"])
        assert tone is not None and abs(tone - 440) < 20, f"Alice hears {tone} Hz, not Xavier's 440"
        # where everyone is, with the time left and a way back
        poll(
            pages["Alice"],
            BANNER,
            lambda b: "You are in Room 1" in b and "left" in b,
            what="banner",
        )
        poll(
            pages["Bob"],
            BANNER,
            lambda b: "Vous êtes dans Room 2" in b and "il reste" in b,
            what="bannière",
        )
        assert pages["Alice"].locator("#breakout-back").inner_text() == "Return to the main room"
        artefact(pages["Alice"], "breakout-participant")
        artefact(pages["Bob"], "breakout-participant-fr")
        artefact(hana, "breakout-host-rooms")
        # nobody reconnected: the same peer connections, ICE never started again
        for name, page in pages.items():
            same = page.evaluate(SAME)
            assert same["same"], f"{name}'s peer connections were replaced"
            assert not [
                s for s in same["states"] if s.split(":")[1] in ("new", "checking", "failed")
            ], same
            assert same["pairs"] == pairs[name], f"{name}'s selected candidate pairs changed"
        assert all(x is y for x, y in zip(xavier.connections(), xavier_before, strict=True))
        # a message to every room
        hana.fill("#breakout-text", "Five minutes left")
        hana.click("#breakout-send")
        poll(pages["Alice"], "() => document.getElementById('chat-log').textContent",
             lambda t: "Five minutes left" in t, what="the host's message")  # fmt: skip
        # Hana closes the rooms: everyone is back with everyone
        t1 = time.monotonic()
        hana.click("#breakout-end")
        for name, page in pages.items():
            others = {s for n, s in sids.items() if n != name}
            poll(page, MEDIA, lambda m, o=others: everyone(m, o), timeout=60,
                 what=f"{name} back with everyone")  # fmt: skip
            poll(page, BANNER, lambda b: b == "", what=f"{name}'s banner gone")
        back = time.monotonic() - t1
        print(f"media switched after {switched:.2f} s; everyone back after {back:.2f} s")
        assert xavier.senders() == {sids["Hana"], sids["Alice"], sids["Bob"]}
        for name, page in pages.items():
            same = page.evaluate(SAME)
            assert same["same"] and same["pairs"] == pairs[name], (name, same)
        artefact(pages["Alice"], "breakout-back")
    finally:
        if xavier is not None:
            xavier.close()
        for page in pages.values():
            with contextlib.suppress(Exception):
                page.context.close()
