"""WHIP ingest and WHEP playback (signaling/whip.py) with real, independent WebRTC stacks.

- GStreamer's webrtcbin publishes over WHIP (tests/support/gst_client.py ``--whip``: one
  offer with every candidate in it, POSTed with a bearer token, no WebSocket), and a Chromium
  page of the web client in the same room plays its VP8 test pattern and receives its Opus
  tone; when the GStreamer process stops it DELETEs its session and the page sees it go.
- A plain Chromium page (no web client, only ``fetch`` and ``RTCPeerConnection``) plays a
  meeting participant over WHEP: recvonly video and audio transceivers, the offer POSTed once
  ICE gathering is complete, the answer applied; then it DELETEs its session (200, then 404)
  (the page scripts are Firefox's too: tests/support/whip_pages.py).
- An aiortc peer publishes over WHIP and the web client in Chromium plays it.
- webrtcbin with UDP switched off publishes over ICE-TCP alone (``--ice-tcp``), and a
  Chromium page plays it.

ICE stays on 127.0.0.1 on every side: the server gathers loopback candidates only, webrtcbin is
given 127.0.0.1 as its only address, Chromium is allowed loopback candidates (conftest ARGS).
"""

from __future__ import annotations

import collections
import json
import subprocess
import threading
import time

import pytest

from tests.browser.conftest import ARTIFACTS, artefact, open_page
from tests.browser.test_gstreamer import CLIENT, SYSTEM_PYTHON, GstClient, gstreamer_missing
from tests.support.whip_pages import HTTP_DELETE, HTTP_ICE_RESTART, HTTP_STATE, WHEP_PLAY

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]

WHIP_ROOM = "whip-gstreamer"
WHEP_ROOM = "whep-chromium"
ENCODER = "gst-whip"  # the WHIP publisher's identity
ENCODER_NAME = "GStreamer WHIP"

# What the web client shows of one participant (by identity), and its inbound RTP from it.
PARTICIPANT = """async (identity) => {
  const s = window.visio.session;
  const tile = document.querySelector(`#grid .tile[data-identity="${identity}"]`);
  const sid = tile ? tile.dataset.participant : null;
  const mids = {};
  if (s) for (const [mid, i] of s.remote) if (sid && i.participant === sid) mids[mid] = i.kind;
  const out = {present: !!tile, sid, mids, w: 0, h: 0, t: 0, ready: 0, remote: false,
               audio: false, name: tile ? (tile.querySelector('.name') || {}).textContent : null,
               video_packets: 0, frames: 0, audio_packets: 0, audio_bytes: 0,
               subscriber: s && s.subscriber ? s.subscriber.connectionState : 'none',
               others: [...document.querySelectorAll('#grid .tile:not(.self)')]
                 .map(t => t.dataset.identity)};
  if (tile) {
    const v = tile.querySelector('video'), a = tile.querySelector('audio');
    const cam = (window.visio.mine || {}).cam || {};
    const vt = v && v.srcObject ? v.srcObject.getVideoTracks() : [];
    Object.assign(out, {w: v.videoWidth, h: v.videoHeight, t: v.currentTime, ready: v.readyState,
      remote: vt.length > 0 && !vt.some(x => x.id === cam.id),
      audio: !!(a && a.srcObject &&
                a.srcObject.getAudioTracks().some(x => x.readyState === 'live'))});
  }
  if (s && s.subscriber) (await s.subscriber.getStats()).forEach(x => {
    if (x.type !== 'inbound-rtp' || !(x.mid in mids)) return;
    if (x.kind === 'video') {
      out.video_packets += x.packetsReceived || 0; out.frames += x.framesDecoded || 0;
    } else {
      out.audio_packets += x.packetsReceived || 0; out.audio_bytes += x.bytesReceived || 0;
    }
  });
  return out;
}"""

# The web client's own publishing: connected, and sending video and audio.
PUBLISHING = """async () => {
  const s = window.visio.session;
  const out = {publisher: s && s.publisher ? s.publisher.connectionState : 'none',
               video_bytes: 0, audio_bytes: 0};
  if (s && s.publisher) (await s.publisher.getStats()).forEach(x => {
    if (x.type === 'outbound-rtp') out[`${x.kind}_bytes`] += x.bytesSent || 0;
  });
  return out;
}"""


class WhipPublisher(GstClient):
    """gst_client.py ``--whip``: webrtcbin publishing over WHIP, its SDPs in its log."""

    def __init__(self, url: str, token: str, *flags: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.stderr = open(ARTIFACTS / "gst-whip-client.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(CLIENT), "--whip", url, "--token", token, "--dump-sdp", *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def log(self) -> str:
        """What it wrote to stderr: its offer and the server's answer (--dump-sdp), errors."""
        self.stderr.flush()
        return (ARTIFACTS / "gst-whip-client.log").read_text()[-6000:]


def until(check, what: str, explain, timeout: float = 25.0, interval: float = 0.3):
    """Call ``check()`` until it returns something true; fail with ``explain(last)``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}\n{explain()}")


def watch_playing(page, identity: str, seen: dict, explain, whose: str) -> tuple[dict, dict]:
    """Wait until the web client in ``page`` plays ``identity``'s video and receives its
    audio, then until both advance; returns the two readings (``seen`` holds the last)."""

    def look(check):
        def once():
            seen.clear()
            seen.update(page.evaluate(PARTICIPANT, identity))
            return dict(seen) if check(seen) else None

        return once

    first = until(
        look(
            lambda s: (
                s["present"]
                and s["w"] > 0
                and s["ready"] >= 2
                and s["remote"]
                and s["frames"] > 0
                and s["audio"]
                and s["audio_packets"] > 0
            )
        ),
        f"the page plays {whose} video and receives its audio",
        explain,
        timeout=40,
    )
    after = until(
        look(
            lambda s: (
                s["t"] > first["t"]
                and s["frames"] > first["frames"] + 10
                and s["audio_packets"] > first["audio_packets"] + 20
            )
        ),
        f"{whose} video advancing and its audio packets growing in the page",
        explain,
    )
    return first, after


@pytest.fixture
def whip_publisher(server):
    reason = gstreamer_missing()
    if reason:
        pytest.skip(reason)
    token = server.token(WHIP_ROOM, ENCODER, ENCODER_NAME)
    gst = WhipPublisher(f"{server.url}/whip/{WHIP_ROOM}", token)
    try:
        yield gst
    finally:
        if gst.proc.poll() is None:
            gst.stop()


def test_chromium_watches_gstreamer_publishing_over_whip(server, browser, whip_publisher):
    gst = whip_publisher
    page = None
    seen: dict = {}

    def explain() -> str:
        if page is not None:
            artefact(page, "failure-whip-gstreamer")
        return (
            f"--- page saw: {json.dumps(seen, indent=1)}\n"
            f"--- GStreamer WHIP client, last status lines (exit {gst.proc.poll()}):\n"
            f"{gst.tail(2)}\n--- its log (SDPs):\n{gst.log()}\n"
            f"--- server log tail:\n{server.output(3000)}"
        )

    # the encoder's session is made: 201, a Location, and its connection up
    def posted():
        status = gst.status()
        whip = status.get("whip", {})
        if whip.get("post") not in (None, 201) or gst.proc.poll() is not None:
            raise AssertionError(f"the WHIP POST failed: {whip}\n{explain()}")
        return status if status.get("publisher", {}).get("connection") == "connected" else None

    status = until(posted, "webrtcbin's WHIP session connected", explain, timeout=30)
    location = status["whip"]["location"]
    assert location.startswith(f"{server.url}/whip/{WHIP_ROOM}/"), status
    assert not status["errors"], status

    # a Chromium page of the web client joins the room and plays the encoder
    page = open_page(
        browser, f"{server.url}/r/{WHIP_ROOM}?name=Viewer&autojoin=1&lang=en", "whip-viewer"
    )
    try:

        def look(check):
            def once():
                seen.clear()
                seen.update(page.evaluate(PARTICIPANT, ENCODER))
                return dict(seen) if check(seen) else None

            return once

        first, after = watch_playing(page, ENCODER, seen, explain, "the WHIP encoder's")
        assert (after["w"], after["h"]) == (320, 240), after
        assert after["name"] and after["name"].startswith(ENCODER_NAME), after
        assert sorted(after["mids"].values()) == ["audio", "video"], after
        artefact(page, "whip-gstreamer-in-chromium")
        print(
            f"\n[chromium] from GStreamer over WHIP: {after['w']}x{after['h']}, video time "
            f"{first['t']:.2f} -> {after['t']:.2f} s, {after['frames']} frames decoded, "
            f"{after['audio_packets']} audio packets"
        )

        # GStreamer stops: it DELETEs its session, the page sees the participant leave
        stopped_at = time.monotonic()
        code = gst.stop()
        final = gst.status()
        assert code == 0, f"exit code {code}\n{explain()}"
        assert final.get("whip", {}).get("delete") == 200, f"{final}\n{explain()}"
        until(
            look(lambda s: not s["present"] and not s["mids"]),
            "the WHIP encoder's tile and tracks leaving the page",
            explain,
            timeout=10,  # DELETE ends it at once, long before a consent-freshness timeout
        )
        print(f"[chromium] encoder gone {time.monotonic() - stopped_at:.1f} s after its stop")
        # it left by its DELETE (reason "left"), not by a failed connection
        left = f"room {WHIP_ROOM}: {first['sid']} left (left)"
        assert left in server.output(None), server.output(2000)
    finally:
        page.context.close()


def test_chromium_plays_a_participant_over_whep(server, browser):
    # the publisher: a web-client page sending its fake camera and microphone
    camera = open_page(
        browser, f"{server.url}/r/{WHEP_ROOM}?name=Camera&autojoin=1&lang=en", "whep-camera"
    )
    player = None
    try:
        sending: dict = {}

        def publishing():
            sending.update(camera.evaluate(PUBLISHING))
            return (
                sending["publisher"] == "connected"
                and sending["video_bytes"] > 0
                and sending["audio_bytes"] > 0
            )

        until(
            publishing,
            "the camera page publishing",
            lambda: f"{sending}\n{server.output(2000)}",
            timeout=30,
        )

        # the player: a plain same-origin page, no web client
        context = browser.new_context(locale="en-US")
        player = context.new_page()
        player.on("pageerror", lambda exc: print(f"[whep-player] page error: {exc}"))
        player.goto(f"{server.url}/healthz")
        token = server.token(WHEP_ROOM, "whep-player", "WHEP player")
        made = player.evaluate(WHEP_PLAY, {"room": WHEP_ROOM, "token": token, "gatherMs": 10000})
        sdps = f"--- offer:\n{made['offer']}\n--- answer:\n{made['answer']}"
        assert made["status"] == 201, f"{made['status']}: {made['answer']}\n{sdps}"
        assert made["applied"], f"Chromium refused the answer: {made['error']}\n{sdps}"
        assert made["location"].startswith(f"/whep/{WHEP_ROOM}/"), made["location"]
        assert made["type"].startswith("application/sdp"), made["type"]
        assert made["answer_candidates"] > 0, sdps
        print(
            f"\n[whep] gathering complete: {made['gathered']}, "
            f"{made['offer_candidates']} candidates offered, {made['answer_candidates']} answered"
        )
        state: dict = {}

        def explain() -> str:
            artefact(player, "failure-whep-player")
            return f"--- player saw: {state}\n{sdps}\n--- server log:\n{server.output(3000)}"

        def watch(check):
            def once():
                state.clear()
                state.update(player.evaluate(HTTP_STATE))
                return dict(state) if check(state) else None

            return once

        first = until(
            watch(
                lambda s: (
                    s["w"] > 0
                    and s["ready"] >= 2
                    and s["frames"] > 0
                    and s["audio_live"]
                    and s["audio_packets"] > 0
                )
            ),
            "the WHEP player plays the camera's video and receives its audio",
            explain,
            timeout=30,
        )
        after = until(
            watch(
                lambda s: (
                    s["t"] > first["t"]
                    and s["frames"] > first["frames"] + 10
                    and s["audio_packets"] > first["audio_packets"] + 20
                )
            ),
            "the WHEP player's video advancing and audio packets growing",
            explain,
        )
        assert after["connection"] == "connected" and not after["paused"], after
        # Chromium gathers on every interface; the server offers 127.0.0.1 only, over UDP
        assert (after["pair"] or {}).get("remote") == "127.0.0.1", after
        assert after["pair"]["protocol"] == "udp", after
        artefact(player, "whep-player")
        print(
            f"[whep] {after['w']}x{after['h']}, time {first['t']:.2f} -> {after['t']:.2f} s, "
            f"{after['frames']} frames decoded, {after['audio_packets']} audio packets, "
            f"pair {after['pair']}"
        )

        # the player's network changes: it restarts ICE (PATCH with new credentials, RFC 9725
        # section 4.4.1) and goes on playing on the same connection, on a new pair (Chromium
        # gathers new sockets)
        restarts = server.metric("visio_ice_restarts_total")
        restarted = player.evaluate(HTTP_ICE_RESTART, {"gatherMs": 10000})
        assert restarted["status"] == 200, restarted
        assert restarted["applied"], restarted
        assert restarted["after"] != restarted["before"] and restarted["etag"], restarted
        assert restarted["body"].count("a=ice-ufrag:") == 1 and "a=candidate:" in restarted["body"]
        resumed = until(
            watch(
                lambda s: (
                    s["connection"] == "connected"
                    and (s["pair"] or {}).get("local_port") != after["pair"]["local_port"]
                    and s["frames"] > after["frames"] + 30
                    and s["audio_packets"] > after["audio_packets"] + 50
                )
            ),
            "the WHEP player's media after its ICE restart",
            explain,
        )
        assert server.metric("visio_ice_restarts_total") == restarts + 1
        print(f"[whep] ICE restart: {restarted['before']} -> {restarted['after']}, {resumed}")

        # the camera page lists the player (a participant) while it plays
        until(
            lambda: "whep-player" in camera.evaluate(PARTICIPANT, "whep-player")["others"],
            "the camera page listing the WHEP player",
            explain,
            timeout=10,
        )
        deleted = player.evaluate(HTTP_DELETE)
        assert (deleted["first"], deleted["second"]) == (200, 404), deleted
        until(
            lambda: "whep-player" not in camera.evaluate(PARTICIPANT, "whep-player")["others"],
            "the WHEP player leaving the camera page's meeting",
            explain,
            timeout=10,
        )
    finally:
        if player is not None:
            player.context.close()
        camera.context.close()


@pytest.fixture(scope="module")
def tcp_server():
    """A server with ICE over TCP on its media port's number (``--ice-tcp``)."""
    from tests.support.server import ServerProcess

    s = ServerProcess(extra=["--ice-tcp"])
    yield s
    s.stop()


def test_gstreamer_over_ice_tcp_alone_reaches_a_chromium_page(tcp_server, browser):
    """A network that lets no UDP through: webrtcbin (libnice) with UDP switched off gathers
    TCP candidates only and publishes over WHIP; it connects to the server's passive TCP
    candidate on the media port's number, and a Chromium page plays its video."""
    reason = gstreamer_missing()
    if reason:
        pytest.skip(reason)
    server = tcp_server
    room = "whip-tcp"
    gst = WhipPublisher(
        f"{server.url}/whip/{room}", server.token(room, ENCODER, ENCODER_NAME), "--ice-tcp-only"
    )
    page = None
    seen: dict = {}

    def explain() -> str:
        if page is not None:
            artefact(page, "failure-whip-tcp")
        return (
            f"--- page saw: {json.dumps(seen, indent=1)}\n--- GStreamer: {gst.tail(2)}\n"
            f"--- its log (SDPs):\n{gst.log()}\n--- server log:\n{server.output(3000)}"
        )

    try:

        def connected():
            status = gst.status()
            if status.get("whip", {}).get("post") not in (None, 201) or gst.proc.poll():
                raise AssertionError(f"the WHIP POST failed\n{explain()}")
            return status.get("publisher", {}).get("connection") == "connected"

        until(connected, "webrtcbin connected over TCP", explain, timeout=30)
        offer, _, answer = gst.log().partition("--- WHIP answer")
        offered = [x for x in offer.splitlines() if x.startswith("a=candidate:")]
        assert offered and all(" TCP " in x.upper() for x in offered), offered  # no UDP
        assert "tcptype passive" in answer, answer  # the server's TCP candidate
        page = open_page(browser, f"{server.url}/r/{room}?name=Viewer&autojoin=1&lang=en", "v")

        def plays():
            seen.clear()
            seen.update(page.evaluate(PARTICIPANT, ENCODER))
            return seen if seen["present"] and seen["w"] > 0 and seen["frames"] > 10 else None

        until(plays, "the page plays the encoder's video, sent over TCP", explain, timeout=40)
        artefact(page, "whip-over-ice-tcp")
    finally:
        if page is not None:
            page.context.close()
        if gst.proc.poll() is None:
            gst.stop()


class AiortcEncoder:
    """An aiortc peer publishing over WHIP from a thread with its own event loop (the browser
    tests are synchronous): a video test pattern and a tone, until ``stop`` DELETEs it."""

    def __init__(self, url: str, token: str) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.result: dict = {}
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.url, self.token = url, token
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    async def _start(self) -> None:
        import aiohttp
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from visio_client.media import PatternVideoTrack, ToneAudioTrack

        self.pc = RTCPeerConnection()
        self.pc.addTransceiver(PatternVideoTrack(2), direction="sendonly")
        self.pc.addTransceiver(ToneAudioTrack(2), direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/sdp"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.url, data=self.pc.localDescription.sdp, headers=headers) as r,
        ):
            self.result = {"status": r.status, "location": r.headers.get("Location")}
            answer = await r.text()
        if r.status == 201:
            await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def _stop(self) -> int:
        import aiohttp

        base = self.url.split("/whip/")[0]
        async with (
            aiohttp.ClientSession() as http,
            http.delete(
                base + self.result["location"], headers={"Authorization": f"Bearer {self.token}"}
            ) as r,
        ):
            status = r.status
        await self.pc.close()
        return status

    def stop(self) -> int:
        import asyncio

        try:
            return asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def test_chromium_watches_an_aiortc_encoder_over_whip(server, browser):
    """An aiortc peer (the project's Python client library's media, a third stack) publishes
    over WHIP; a Chromium page of the web client plays its video and receives its audio; its
    DELETE takes it away."""
    room = "whip-aiortc"
    encoder = AiortcEncoder(f"{server.url}/whip/{room}", server.token(room, "py-enc", "Python"))
    page = None
    seen: dict = {}

    def explain() -> str:
        if page is not None:
            artefact(page, "failure-whip-aiortc")
        return f"--- page saw: {json.dumps(seen, indent=1)}\n--- {encoder.result}\n" + (
            server.output(2000)
        )

    try:
        assert encoder.result["status"] == 201, explain()
        page = open_page(browser, f"{server.url}/r/{room}?name=Viewer&autojoin=1&lang=en", "v")

        watch_playing(page, "py-enc", seen, explain, "the aiortc encoder's")
        assert encoder.stop() == 200

        def gone():
            seen.clear()
            seen.update(page.evaluate(PARTICIPANT, "py-enc"))
            return not seen["present"]

        until(gone, "the encoder leaving the page", explain, 10)
    finally:
        if page is not None:
            page.context.close()
        if encoder.thread.is_alive():
            encoder.loop.call_soon_threadsafe(encoder.loop.stop)
