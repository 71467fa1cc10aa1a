"""Helpers for browser tests: what a page of the web client plays, polled with a deadline."""

from __future__ import annotations

import time

from tests.browser.conftest import artefact

REMOTE_MEDIA = """async () => {
  const tiles = [...document.querySelectorAll('#grid .tile:not(.self)')];
  const videos = tiles.map(t => t.querySelector('video'))
    .filter(v => v.srcObject && v.srcObject.getVideoTracks().length)
    .map(v => ({w: v.videoWidth, t: v.currentTime, ready: v.readyState,
                remote: !v.srcObject.getVideoTracks().some(
                  tr => (window.visio.mine.cam || {}).id === tr.id)}));
  const audios = tiles.map(t => t.querySelector('audio'))
    .filter(a => a.srcObject && a.srcObject.getAudioTracks().some(x => x.readyState === 'live'))
    .length;
  let audioBytes = 0, framesDecoded = 0;
  const s = window.visio.session;
  if (s && s.subscriber) (await s.subscriber.getStats()).forEach(x => {
    if (x.type === 'inbound-rtp' && x.kind === 'audio') audioBytes += x.bytesReceived;
    if (x.type === 'inbound-rtp' && x.kind === 'video') framesDecoded += x.framesDecoded || 0;
  });
  const remote = s ? [...s.remote.values()].map(i => i.kind + ':' + i.participant) : [];
  return {videos, audios, audioBytes, framesDecoded, remote,
          ice: s && s.subscriber ? s.subscriber.connectionState : 'none'};
}"""


def poll(page, script: str, check, timeout: float = 30.0, what: str = ""):
    """Evaluate ``script`` until ``check(result)`` holds; on failure, say what was seen."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = page.evaluate(script)
        if check(seen):
            return seen
        page.wait_for_timeout(300)
    artefact(page, f"failure-{what.replace(' ', '-')}")
    raise AssertionError(f"timed out waiting for {what}; last seen: {seen}")


#: each web-client connection's state, ICE ufrag, and its selected pair's local address and port
PATHS = """async () => {
  const s = window.visio.session;
  const out = {};
  for (const [name, pc] of [['publisher', s.publisher], ['subscriber', s.subscriber]]) {
    if (!pc) continue;
    const stats = await pc.getStats();
    const path = {state: pc.connectionState, address: null, port: -1,
                  ufrag: (pc.localDescription.sdp.match(/a=ice-ufrag:(\\S+)/) || [])[1]};
    stats.forEach(x => {
      if (x.type !== 'transport' || !x.selectedCandidatePairId) return;
      const pair = stats.get(x.selectedCandidatePairId);
      const local = pair && stats.get(pair.localCandidateId);
      if (local) Object.assign(path, {address: local.address, port: local.port});
    });
    out[name] = path;
  }
  return out;
}"""


def everyone_meets(page, others: int, timeout: float = 45) -> dict:
    """Every other participant's video plays and their audio arrives (``others`` of each,
    frames decoded); returns what the page receives."""
    return poll(
        page,
        REMOTE_MEDIA,
        lambda r: (
            len([v for v in r["videos"] if v["w"] > 0 and v["ready"] >= 2]) == others
            and r["audios"] == others
            and r["framesDecoded"] > 10
        ),
        timeout=timeout,
        what=f"{others} others' video and audio",
    )


def advancing(page, before: dict, what: str, timeout: float = 30) -> dict:
    """Video frames and audio bytes keep arriving after ``before`` (a REMOTE_MEDIA result)."""
    return poll(
        page,
        REMOTE_MEDIA,
        lambda r: (
            r["framesDecoded"] > before["framesDecoded"] + 30
            and r["audioBytes"] > before["audioBytes"] + 5000
        ),
        timeout=timeout,
        what=what,
    )


STAGE = """() => [...document.querySelectorAll('#stage .tile video')].map(v =>
  ({w: v.videoWidth, t: v.currentTime, h: v.getBoundingClientRect().height}))"""


def tile_of(page, name: str):
    return page.locator("#grid .tile", has=page.locator(".name", has_text=name))
