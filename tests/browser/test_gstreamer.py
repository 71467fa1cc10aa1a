"""GStreamer's webrtcbin, a second independent WebRTC stack, in a meeting with Chromium.

The GStreamer client (tests/support/gst_client.py, run by Debian's /usr/bin/python3 with
python3-gi) speaks docs/protocol.md with two webrtcbin elements: it publishes a VP8 test
pattern and an Opus tone, and decodes what it receives. webrtcbin with max-bundle writes its
audio m-section as ``m=audio 0 ... a=bundle-only``, as Firefox does: the server must publish it.
Its DTLS certificate is RSA (the server's cipher list must accept it), its ICE is libnice.
"""

from __future__ import annotations

import collections
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.browser.conftest import ARTIFACTS, artefact

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]

SYSTEM_PYTHON = "/usr/bin/python3"
CLIENT = Path(__file__).resolve().parents[1] / "support" / "gst_client.py"
ROOM = "gstreamer"
CHECK = """
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import Gst, GstWebRTC, GstSdp
import aiohttp
Gst.init(None)
missing = [e for e in ("webrtcbin", "nicesrc", "dtlssrtpenc", "vp8enc", "vp8dec", "opusenc",
                       "opusdec", "rtpvp8pay", "rtpopuspay", "videotestsrc", "audiotestsrc")
           if Gst.ElementFactory.find(e) is None]
print(" ".join(missing))
"""
PACKAGES = (
    "gstreamer1.0-plugins-bad gstreamer1.0-plugins-good gstreamer1.0-plugins-base "
    "gstreamer1.0-nice python3-gi gir1.2-gst-plugins-bad-1.0 python3-aiohttp"
)

# What the page sees of each remote participant, and its subscriber connection's inbound RTP.
PAGE = """async () => {
  const s = window.visio.session;
  const cam = (window.visio.mine || {}).cam || {};
  const tiles = [...document.querySelectorAll('#grid .tile:not(.self)')].map(t => {
    const v = t.querySelector('video'), a = t.querySelector('audio');
    const vt = v && v.srcObject ? v.srcObject.getVideoTracks() : [];
    return {name: (t.querySelector('.name') || {}).textContent,
            w: v ? v.videoWidth : 0, h: v ? v.videoHeight : 0, t: v ? v.currentTime : 0,
            ready: v ? v.readyState : 0, remote: vt.length > 0 && !vt.some(x => x.id === cam.id),
            audio: !!(a && a.srcObject &&
                      a.srcObject.getAudioTracks().some(x => x.readyState === 'live'))};
  });
  const inbound = [];
  if (s && s.subscriber) (await s.subscriber.getStats()).forEach(x => {
    if (x.type === 'inbound-rtp') inbound.push({mid: x.mid, kind: x.kind,
      bytes: x.bytesReceived || 0, packets: x.packetsReceived || 0,
      frames: x.framesDecoded || 0});
  });
  const remote = s ? [...s.remote.entries()].map(([mid, i]) =>
    ({mid, kind: i.kind, participant: i.participant, source: i.source})) : [];
  return {tiles, inbound, remote, me: s && s.me ? s.me.sid : null,
          subscriber: s && s.subscriber ? s.subscriber.connectionState : 'none',
          publisher: s && s.publisher ? s.publisher.connectionState : 'none'};
}"""


def gstreamer_missing() -> str | None:
    """Why the GStreamer client cannot run here, or None."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing"
    try:
        r = subprocess.run([SYSTEM_PYTHON, "-c", CHECK], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "checking GStreamer took over 60 s"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return (
            f"{SYSTEM_PYTHON} cannot import gi with Gst/GstWebRTC, or aiohttp ({last});"
            f" scripts/test.sh installs {PACKAGES}"
        )
    if r.stdout.strip():
        missing = r.stdout.strip()
        return f"GStreamer elements missing: {missing}; scripts/test.sh installs {PACKAGES}"
    return None


class GstClient:
    """tests/support/gst_client.py in a subprocess; its JSON status lines, kept as they come."""

    def __init__(self, url: str, *flags: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.stderr = open(ARTIFACTS / "gst-client.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(CLIENT), url, *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def status(self) -> dict:
        """The latest status line (an empty dict before the first)."""
        for line in reversed(self.lines):
            try:
                return json.loads(line)
            except ValueError:
                continue
        return {}

    def tail(self, n: int = 3) -> str:
        return "\n".join(list(self.lines)[-n:])

    def stop(self) -> int | None:
        """Close its stdin (it leaves the room and exits), then terminate, then kill."""
        try:
            self.proc.stdin.close()
            self.proc.wait(8)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.reader.join(2)
        self.stderr.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def meeting(server, browser):
    """The GStreamer client (publishing and subscribing) and one Chromium page in one room."""
    reason = gstreamer_missing()
    if reason:
        pytest.skip(reason)
    ws = server.url.replace("http://", "ws://", 1)
    token = server.token(ROOM, "gstreamer", "GStreamer")
    gst = GstClient(f"{ws}/rtc?access_token={token}", "--publish", "--subscribe")
    context = browser.new_context(permissions=["camera", "microphone"], locale="en-US")
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    try:
        page.goto(f"{server.url}/r/{ROOM}?name=Chromium&autojoin=1&lang=en")
        yield gst, page, console
    finally:
        try:
            context.close()
        finally:
            code = gst.stop()
            print(f"\n[gstreamer] exit code {code}; last status: {gst.tail(1)}")


def explain(what: str, server, gst: GstClient, page, seen) -> str:
    """The failure message: what each side saw, and the server's log tail."""
    artefact(page, f"failure-gstreamer-{what.replace(' ', '-')}")
    return (
        f"timed out waiting for {what}\n"
        f"--- page saw: {json.dumps(seen, indent=1)}\n"
        f"--- GStreamer client, last status lines:\n{gst.tail(3)}\n"
        f"--- server log tail:\n{server.output(3000)}"
    )


def from_gstreamer(seen: dict, sid: str | None) -> dict:
    """The page's inbound RTP from the GStreamer participant, totalled per kind."""
    mids = {r["mid"]: r["kind"] for r in seen["remote"] if r["participant"] == sid}
    out = {"audio_bytes": 0, "video_bytes": 0, "frames": 0}
    for x in seen["inbound"]:
        if x["mid"] in mids:
            out[f"{x['kind']}_bytes"] += x["bytes"]
            out["frames"] += x["frames"]
    tiles = [t for t in seen["tiles"] if (t["name"] or "").startswith("GStreamer")]
    out["tile"] = tiles[0] if tiles else None
    return out


def poll_page(server, gst, page, check, what: str, timeout: float = 25.0) -> dict:
    """Evaluate PAGE until ``check(seen, gstreamer's part)`` holds; on failure say what was seen."""
    deadline = time.monotonic() + timeout
    seen: dict = {}
    while time.monotonic() < deadline:
        seen = page.evaluate(PAGE)
        part = from_gstreamer(seen, gst.status().get("sid"))
        if check(part):
            return part
        page.wait_for_timeout(300)
    seen["gstreamer"] = from_gstreamer(seen, gst.status().get("sid"))
    raise AssertionError(explain(what, server, gst, page, seen))


def poll_gst(server, gst, page, check, what: str, timeout: float = 25.0) -> dict:
    """Read the client's status until ``check(its tracks from the page)`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = gst.status()
        if gst.proc.poll() is not None:
            break
        me = page.evaluate("() => window.visio.session && window.visio.session.me.sid")
        tracks = {t["kind"]: t for t in status.get("received", []) if t.get("participant") == me}
        if check(tracks):
            return tracks
        time.sleep(0.3)
    seen = page.evaluate(PAGE)
    raise AssertionError(
        explain(what, server, gst, page, seen) + f"\n(client exit code {gst.proc.poll()})"
    )


def test_chromium_plays_gstreamer_video_and_audio(server, meeting):
    gst, page, console = meeting
    # the video: the tile plays GStreamer's test pattern
    first = poll_page(
        server,
        gst,
        page,
        lambda g: (
            g["tile"] is not None
            and g["tile"]["w"] > 0
            and g["tile"]["ready"] >= 2
            and g["tile"]["remote"]
            and g["frames"] > 0
        ),
        "Chromium plays GStreamer's video",
        timeout=35,
    )
    after = poll_page(
        server,
        gst,
        page,
        lambda g: g["tile"]["t"] > first["tile"]["t"] and g["frames"] > first["frames"],
        "GStreamer's video advancing in Chromium",
    )
    assert (after["tile"]["w"], after["tile"]["h"]) == (320, 240), after
    # the audio: webrtcbin's m=audio 0 ... a=bundle-only section must be published and forwarded
    heard = poll_page(
        server,
        gst,
        page,
        lambda g: g["audio_bytes"] > 0 and g["tile"]["audio"],
        "Chromium receives GStreamer's audio (its m-section is port 0 with a=bundle-only)",
    )
    poll_page(
        server,
        gst,
        page,
        lambda g: g["audio_bytes"] > heard["audio_bytes"],
        "GStreamer's audio bytes growing in Chromium",
    )
    print(
        f"\n[chromium] from GStreamer: {after['frames']} frames decoded, "
        f"{heard['audio_bytes']} audio bytes and growing; tile {after['tile']}"
    )
    artefact(page, "gstreamer-in-chromium")
    assert not [m for m in console if "negotiation failed" in m], console


def test_gstreamer_decodes_chromium_video_and_audio(server, meeting):
    gst, page, console = meeting
    first = poll_gst(
        server,
        gst,
        page,
        lambda t: (
            t.get("video", {}).get("frames_decoded", 0) > 0
            and t.get("audio", {}).get("audio_buffers", 0) > 0
        ),
        "GStreamer decodes Chromium's video and audio",
        timeout=35,
    )
    after = poll_gst(
        server,
        gst,
        page,
        lambda t: (
            t["video"]["frames_decoded"] > first["video"]["frames_decoded"] + 10
            and t["audio"]["audio_buffers"] > first["audio"]["audio_buffers"] + 10
        ),
        "GStreamer's decoded frames and audio buffers growing",
    )
    video, audio = after["video"], after["audio"]
    print(
        f"\n[gstreamer] from Chromium: {video['frames_decoded']} {video['encoding']} frames "
        f"decoded ({video['width']}x{video['height']}), {audio['audio_buffers']} "
        f"{audio['encoding']} audio buffers decoded"
    )
    assert video["width"] > 0 and video["height"] > 0, video
    status = gst.status()
    assert status["publisher"]["connection"] == "connected", status
    assert status["subscriber"]["connection"] == "connected", status
    assert not status["errors"], status["errors"]
    assert not [m for m in console if "negotiation failed" in m], console
