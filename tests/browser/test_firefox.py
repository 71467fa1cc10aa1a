"""A Firefox user and a Chromium user in one meeting, both in the project's web client.

Firefox is Debian's firefox-esr with its default preferences (apart from fake devices and
what this sandbox needs: tests/browser/firefox/bridge.mjs), driven over WebDriver BiDi;
Chromium is Debian's, driven by Playwright. Each must play the other's video and receive the
other's audio on its subscriber connection. Firefox's offer differs from Chromium's: with
max-bundle it writes every m-section after the first as ``m=audio 0 ... a=bundle-only``,
which a server must not read as a stopped m-section.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.browser.conftest import artefact
from tests.browser.firefox import FirefoxError, FirefoxPage, missing_requirements
from tests.support import netns
from tests.support.browser import poll
from tests.support.firefox_netns import netns_fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements())),
]


# Firefox gathers no loopback ICE candidates: the server and both browsers run in a
# network namespace the module makes
namespace, server, browser = netns_fixtures("visio-ff")

BUDGET = 40.0  # seconds, from both pages loaded, for media to flow both ways

# What a page receives on its subscriber connection, and what it sends.
MEDIA = """async () => {
  const v = window.visio, s = v.session;
  // a peer connection being torn down may never answer getStats: do not wait for it
  const stats = (x) => Promise.race(
    [x.getStats(), new Promise(r => setTimeout(() => r([]), 3000))]);
  const names = new Map([...v.participants].map(([sid, p]) => [sid, (p.info || {}).name]));
  const videos = [...document.querySelectorAll('#grid .tile:not(.self) video')]
    .filter(e => e.srcObject && e.srcObject.getVideoTracks().length)
    .map(e => ({w: e.videoWidth, h: e.videoHeight, t: e.currentTime, ready: e.readyState,
                remote: !e.srcObject.getVideoTracks().some(
                  tr => (v.mine.cam || {}).id === tr.id)}));
  const audios = [...document.querySelectorAll('#grid .tile:not(.self) audio')]
    .filter(a => a.srcObject && a.srcObject.getAudioTracks().some(x => x.readyState === 'live'))
    .length;
  const published = [...v.participants.values()].filter(p => p.info && p.info.sid !== 'self')
    .map(p => (p.info.name || '?') + ': ' + [...(p.tracks || new Map()).values()]
      .map(t => t.source || t.kind).join(','));
  let audioBytes = 0, audioPackets = 0, framesDecoded = 0;
  const tracks = [];
  let sub = 'none', pub = 'none', offered = [], sent = {};
  if (s && s.subscriber) {
    sub = s.subscriber.connectionState;
    (await stats(s.subscriber)).forEach(x => {
      if (x.type !== 'inbound-rtp') return;
      if (x.kind === 'audio') {
        audioBytes += x.bytesReceived || 0;
        audioPackets += x.packetsReceived || 0;
      }
      if (x.kind === 'video') framesDecoded += x.framesDecoded || 0;
    });
    for (const tr of s.subscriber.getTransceivers()) {
      const info = tr.mid == null ? null : s.remote.get(tr.mid);
      if (!info) continue;
      let bytes = 0, frames = 0;
      (await stats(tr.receiver)).forEach(x => {
        if (x.type !== 'inbound-rtp') return;
        bytes += x.bytesReceived || 0;
        frames += x.framesDecoded || 0;
      });
      tracks.push(`${info.kind} from ${names.get(info.participant) || info.participant}: ` +
                  `${bytes} bytes` + (info.kind === 'video' ? `, ${frames} frames` : ''));
    }
  }
  if (s && s.publisher) {
    pub = s.publisher.connectionState;
    const sdp = (s.publisher.localDescription || {}).sdp || '';
    offered = sdp.split(/\\r\\nm=/).slice(1).map(sec => {
      const lines = sec.split('\\r\\n');
      const dir = lines.find(l => /^a=(sendrecv|sendonly|recvonly|inactive)$/.test(l)) || '';
      return 'm=' + lines[0].split(' ').slice(0, 2).join(' ') + ' ' + dir.slice(2) +
             (lines.includes('a=bundle-only') ? ' bundle-only' : '');
    });
    (await stats(s.publisher)).forEach(x => {
      if (x.type === 'outbound-rtp') sent[x.kind] = (sent[x.kind] || 0) + (x.bytesSent || 0);
    });
  }
  return {videos, audios, audioBytes, audioPackets, framesDecoded, tracks, published,
          sub, pub, offered, sent};
}"""


def playing(seen: dict) -> list[dict]:
    return [v for v in seen["videos"] if v["w"] > 0 and v["ready"] >= 2 and v["remote"]]


def lacks(seen: dict | None, other: str) -> list[str]:
    """What is still missing from ``seen`` for this page to see and hear ``other``."""
    if seen is None:
        return ["nothing seen yet"]
    why = []
    if len(playing(seen)) != 1:
        why.append(f"{other}'s video is not playing (videos: {seen['videos']})")
    if seen["framesDecoded"] <= 0:
        why.append(f"no video frames decoded from {other}")
    if seen["audioBytes"] <= 0:
        why.append(f"no audio received from {other}: inbound-rtp audio bytesReceived is 0")
    return why


def advanced(before: dict, now: dict) -> list[str]:
    """What has not moved on between two looks at the same page."""
    why = []
    if now["audioBytes"] <= before["audioBytes"]:
        why.append(f"audio bytesReceived stuck at {now['audioBytes']}")
    if now["framesDecoded"] <= before["framesDecoded"]:
        why.append(f"framesDecoded stuck at {now['framesDecoded']}")
    t0 = [v["t"] for v in playing(before)]
    t1 = [v["t"] for v in playing(now)]
    if len(t1) != 1 or len(t0) != 1 or t1[0] <= t0[0]:
        why.append(f"video currentTime not advancing ({t0} -> {t1})")
    return why


def open_chromium(browser, url: str, console: list[str]):
    """A Chromium page at ``url`` whose console lines and page errors go to ``console``."""
    context = browser.new_context(permissions=["camera", "microphone"], locale="en-US")
    page = context.new_page()
    page.on("console", lambda m: console.append(f"console.{m.type}: {m.text}"))
    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    page.goto(url)
    return page


def test_firefox_and_chromium_see_and_hear_each_other(server, browser):
    started = time.monotonic()
    room = f"firefox-{uuid.uuid4().hex[:8]}"
    url = f"{server.url}/r/{room}?name={{}}&autojoin=1&lang=en"
    chromium_console: list[str] = []
    firefox = FirefoxPage(url.format("Firefox"), name="firefox", prefix=netns.prefix(server.netns))
    chromium = None
    try:
        chromium = open_chromium(browser, url.format("Chromium"), chromium_console)
        pages = {"Firefox": (firefox, "Chromium"), "Chromium": (chromium, "Firefox")}
        loaded = time.monotonic()
        deadline = loaded + BUDGET

        def left() -> float:
            return max(deadline - time.monotonic(), 3.0)

        failures: dict[str, str] = {}
        first: dict[str, dict] = {}
        for who, (page, other) in pages.items():
            try:
                first[who] = poll(
                    page,
                    MEDIA,
                    lambda r, o=other: not lacks(r, o),
                    timeout=left(),
                    what=f"{who} sees and hears {other}",
                )
            except (AssertionError, FirefoxError) as exc:
                failures[who] = str(exc)
        for who, before in first.items():
            page, other = pages[who]
            try:
                poll(
                    page,
                    MEDIA,
                    lambda r, b=before, o=other: not lacks(r, o) and not advanced(b, r),
                    timeout=left(),
                    what=f"{who} media from {other} advancing",
                )
            except (AssertionError, FirefoxError) as exc:
                failures[who] = str(exc)

        negotiation = [
            f"{who}: {line}"
            for who, lines in (("Firefox", firefox.console), ("Chromium", chromium_console))
            for line in lines
            if "negotiation failed" in line
        ]
        if failures or negotiation:
            report = ["Firefox and Chromium do not see and hear each other:"]
            for who, (page, other) in pages.items():
                try:
                    seen = page.evaluate(MEDIA)
                except Exception as exc:  # noqa: BLE001 - a report, not a check
                    seen, missing = f"(could not look: {exc})", ["?"]
                else:
                    missing = lacks(seen, other) or ["nothing"]
                report.append(f"\n== {who} ({'failed' if who in failures else 'ok'})")
                report.append(f"missing: {'; '.join(missing)}")
                report.append(f"{failures.get(who, '')}")
                report.append(f"last seen: {seen}")
            report.append("\n== console lines saying 'negotiation failed':")
            report.extend(negotiation or ["none"])
            report.append("\n== Firefox console (last 15):")
            report.extend(firefox.console[-15:])
            report.append("\n== Chromium console (last 15):")
            report.extend(chromium_console[-15:])
            report.append("\n== server log (tail):")
            report.append(server.output(3000))
            for who, (page, _) in pages.items():
                artefact(page, f"firefox-test-failure-{who}")
            pytest.fail("\n".join(report), pytrace=False)

        for who, (page, other) in pages.items():
            seen = page.evaluate(MEDIA)
            print(f"\n{who} sees {other}: {playing(seen)}; {seen['tracks']}")
            print(f"{who} offered {seen['offered']}, sent {seen['sent']}")
            artefact(page, f"firefox-meeting-{who}")
        print(
            f"Firefox {firefox.version}: media both ways {time.monotonic() - loaded:.1f} s "
            f"after both pages loaded, {time.monotonic() - started:.1f} s in all"
        )
    finally:
        firefox.close()
        if chromium is not None:
            chromium.context.close()
