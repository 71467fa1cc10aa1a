"""LiveKit's browser SDK (livekit-client 2.23.0 from npm, unmodified, tests/browser/livekit/) in
Chromium on visio-sfu: two pages and one Python SDK participant.

On two peer connections (/rtc, the pages set ``singlePeerConnection: false``): video and audio
both ways, simulcast layers chosen by tile size (adaptive stream: a large tile gets the 640x360
layer, a small one the 320x180 layer), a resume (mutes on both sides after it reach the other
page), chat over lk.chat text streams; a visio-sfu web client page joins the same room: it sees
the LiveKit pages' cameras and chats with them.

On one peer connection (/rtc/v1, the SDK's default): see test_livekit_client_single_pc."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from pathlib import Path

import pytest

from tests.browser.conftest import artefact, open_page
from tests.support.browser import REMOTE_MEDIA, poll
from tests.support.lkdrive import SyncLiveKitPeers
from tests.support.server import ServerProcess

HERE = Path(__file__).resolve().parent / "livekit"
UMD = HERE / "node_modules" / "livekit-client" / "dist" / "livekit-client.umd.js"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def pages_origin():
    """tests/browser/livekit/ over HTTP on a port of its own: an app's origin, not the server's."""
    if not UMD.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed (scripts/test.sh installs it)")
        pytest.fail("livekit-client is not installed: npm ci in tests/browser/livekit")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(HERE))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def lk_server():
    s = ServerProcess(env={"VISIO_ALLOWED_ORIGINS": "*"})
    yield s
    s.stop()


def test_livekit_client_pages_and_python_sdk(browser, lk_server, pages_origin):
    room = "lkweb"
    ws_url = lk_server.url.replace("http://", "ws://")
    python = SyncLiveKitPeers(lk_server.url)
    big = open_page(browser, f"{pages_origin}/index.html", "big")
    small = open_page(browser, f"{pages_origin}/index.html", "small")
    pages = [big, small]
    try:
        big_sid = big.evaluate(
            "([u, t]) => join(u, t, [640, 360], true)",
            [ws_url, lk_server.token(room, "big", "Big")],
        )
        small_sid = small.evaluate(
            "([u, t]) => join(u, t, [160, 90], true)",
            [ws_url, lk_server.token(room, "small", "Small")],
        )
        assert big_sid.startswith("PA_") and small_sid.startswith("PA_")
        python.cmd(
            "join",
            name="py",
            token=lk_server.token(room, "py", "Py"),
            video=True,
            audio=True,
            text_topic="lk.chat",
        )
        # video both ways: each page sees the other page and the Python participant
        videos = "() => state.videos"
        seen_big = poll(
            big,
            videos,
            lambda v: (
                v.get("small", {}).get("frames", 0) > 30 and v.get("py", {}).get("frames", 0) > 30
            ),
            40,
            "video at the big page",
        )
        seen_small = poll(
            small,
            videos,
            lambda v: (
                v.get("big", {}).get("frames", 0) > 30 and v.get("py", {}).get("frames", 0) > 30
            ),
            40,
            "video at the small page",
        )
        python.until(
            lambda s: (
                s["py"]["video"].get("big", 0) > 20
                and s["py"]["video"].get("small", 0) > 20
                and s["py"]["audio"].get("big", 0) > 50
                and s["py"]["audio"].get("small", 0) > 50
            ),
            30,
            "the pages' video and audio at the Python participant",
        )
        # audio both ways: bytes keep arriving on every received microphone
        first = poll(big, "() => audioBytes()", lambda a: len(a) == 2, 20, "audio tracks")
        poll(
            big,
            "() => audioBytes()",
            lambda a: all(a[k] > first[k] + 1000 for k in first),
            20,
            "audio flowing to the big page",
        )
        # adaptive stream: the large tile gets the 640x360 layer, the small tile 320x180
        poll(
            big,
            videos,
            lambda v: v["small"]["height"] == 360,
            30,
            "the 360p layer in a 640x360 tile",
        )
        poll(
            small,
            videos,
            lambda v: v["big"]["height"] == 180,
            30,
            "the 180p layer in a 160x90 tile",
        )
        # the big page mutes and unmutes its microphone: the small page sees both (and so holds
        # a version of the big page's info above the first ones)
        toggle_mic(big, "big", small)
        # the small page's signal WebSocket drops: the SDK resumes (same sid) and media goes on
        small.evaluate("() => dropSignal()")
        poll(small, "() => state.reconnected", lambda n: n >= 1, 20, "the small page resumed")
        assert small.evaluate("() => sid()") == small_sid
        assert small.evaluate("() => state.disconnected") == 0
        frames = small.evaluate("() => state.videos.big.frames")
        poll(small, videos, lambda v: v["big"]["frames"] > frames + 20, 20, "video after resume")
        frames = big.evaluate("() => state.videos.small.frames")
        poll(big, videos, lambda v: v["small"]["frames"] > frames + 20, 20, "its camera after")
        # mutes after the resume reach both ways: livekit-client drops a participant update
        # whose version is below the one it holds, so versions go on increasing across it
        toggle_mic(big, "big", small)
        toggle_mic(small, "small", big)
        artefact(big, "livekit-client-big")
        artefact(small, "livekit-client-small")
        del seen_big, seen_small
        # chat: page -> page and Python, Python -> pages
        big.evaluate("() => say('hello from the big page')")
        poll(
            small,
            "() => state.texts",
            lambda t: {"from": "big", "text": "hello from the big page"} in t,
            10,
            "chat at the small page",
        )
        python.until(
            lambda s: any(t["text"] == "hello from the big page" for t in s["py"]["texts"]),
            10,
            "chat at the Python participant",
        )
        python.cmd("text", name="py", text="hello from python", topic="lk.chat")
        for page in (big, small):
            poll(
                page,
                "() => state.texts",
                lambda t: {"from": "py", "text": "hello from python"} in t,
                10,
                "Python's chat at a page",
            )
        assert big.evaluate("() => state.errors") == []

        # visio-sfu's own web client (JSON protocol) joins the same room
        web = open_page(browser, f"{lk_server.url}/r/{room}?name=Web&autojoin=1&lang=en", "web")
        pages.append(web)
        poll(
            web,
            REMOTE_MEDIA,
            lambda r: (
                len([v for v in r["videos"] if v["w"] > 0 and v["ready"] >= 2]) == 3
                and r["audios"] == 3
            ),
            40,
            "the web client sees and hears the three LiveKit participants",
        )
        web_id = web.evaluate("() => window.visio.session.identity || null") or None
        poll(  # (at the small page: the big page's third 640x360 tile is off screen, paused)
            small,
            videos,
            lambda v: any(k not in ("big", "py") and v[k]["frames"] > 20 for k in v),
            30,
            "the web client's camera at a LiveKit page",
        )
        python.until(
            lambda s: (
                any(k not in ("big", "small") and n > 20 for k, n in s["py"]["video"].items())
                and any(k not in ("big", "small") and n > 50 for k, n in s["py"]["audio"].items())
            ),
            30,
            "the web client's camera and microphone at the Python participant",
        )
        # chat between the web client and the LiveKit clients
        web.click("#chat-button")
        web.fill("#chat-input", "hello from the web client")
        web.press("#chat-input", "Enter")
        for page in (big, small):
            poll(
                page,
                "() => state.texts.map(t => t.text)",
                lambda t: "hello from the web client" in t,
                10,
                "the web client's chat at a LiveKit page",
            )
        big.evaluate("() => say('hello web client')")
        item = web.locator("#chat-log li", has_text="hello web client")
        item.wait_for(timeout=10000)
        assert item.locator(".who").inner_text() == "Big"
        artefact(web, "livekit-client-web")
        del web_id
    finally:
        python.close()
        for page in pages:
            page.context.close()


def toggle_mic(page, who: str, other) -> None:
    """``page`` (identity ``who``) mutes its microphone, then unmutes it; ``other`` sees both."""
    for on in (False, True):
        page.evaluate("(on) => setMic(on)", on)
        state = "on" if on else "muted"
        poll(other, f"() => micMuted('{who}')", lambda m, on=on: m is (not on), 10,
             f"{who}'s microphone {state} at the other page")  # fmt: skip


def _console(page, name: str, into: list[str]) -> None:
    """Keep what a page logs that says a negotiation or the connection went wrong."""

    def seen(msg) -> None:
        if msg.type in ("error", "warning"):
            into.append(f"[{name}] {msg.type}: {msg.text}")

    page.on("console", seen)
    page.on("pageerror", lambda exc: into.append(f"[{name}] page error: {exc}"))


def test_livekit_client_single_pc(browser, lk_server, pages_origin):
    """livekit-client on one peer connection (/rtc/v1, its default), two pages and a Python
    SDK participant with a camera and a screen share (the server sends it to /rtc): video and
    audio both ways, data and chat both ways, a resume; a page that joins later is received by
    those already there (their client must offer again, with a section more where it has no
    free one: media_sections_requirement); a page leaves (the others see it go) and another
    joins after it, in the sections it left. The server served each page on v1 (its log; no
    fallback in the pages' console), and Chromium accepted every answer."""
    room = "lkv1"
    ws_url = lk_server.url.replace("http://", "ws://")
    python = SyncLiveKitPeers(lk_server.url)
    console: list[str] = []
    pages = []

    def page_joins(name: str, tile: list[int]):
        page = open_page(browser, f"{pages_origin}/index.html", name)
        _console(page, name, console)
        pages.append(page)
        sid = page.evaluate(
            "([u, t, s]) => join(u, t, s)", [ws_url, lk_server.token(room, name, name), tile]
        )
        assert sid.startswith("PA_")
        return page

    videos = "() => state.videos"

    def sees(page, who: list[str], what: str, frames: int = 20) -> None:
        poll(
            page,
            videos,
            lambda v: all(v.get(w, {}).get("frames", 0) > frames for w in who),
            40,
            what,
        )

    try:
        ann = page_joins("ann", [320, 180])
        python.cmd(
            "join",
            name="pyv",
            token=lk_server.token(room, "pyv", "Pyv"),
            video=True,
            audio=True,
            share=True,  # a second video track
        )
        ben = page_joins("ben", [320, 180])  # later: ann's client offers again for it
        sees(ann, ["ben", "pyv"], "ben's and the Python camera at ann (one connection)")
        sees(ben, ["ann", "pyv"], "ann's and the Python camera at ben (one connection)")
        python.until(
            lambda s: all(
                s["pyv"]["video"].get(w, 0) > 20 and s["pyv"]["audio"].get(w, 0) > 50
                for w in ("ann", "ben")
            ),
            30,
            "the v1 pages' video and audio at the Python participant",
        )
        for page in (ann, ben):  # audio both ways: bytes keep arriving on both microphones
            first = poll(page, "() => audioBytes()", lambda a: len(a) == 2, 20, "audio tracks")
            poll(
                page,
                "() => audioBytes()",
                lambda a, first=first: all(a[k] > first[k] + 1000 for k in first),
                20,
                "audio flowing to a v1 page",
            )
        # data packets and chat on the client's own channels, both ways
        ann.evaluate("() => sendData('ping from ann', 'game')")
        poll(
            ben,
            "() => state.data",
            lambda d: {"from": "ann", "topic": "game", "text": "ping from ann"} in d,
            10,
            "ann's data packet at ben",
        )
        python.until(
            lambda s: any(d["payload"] == "ping from ann" for d in s["pyv"]["data"]),
            10,
            "ann's data packet at the Python participant",
        )
        python.cmd("data", name="pyv", payload="ping from python", topic="game")
        for page in (ann, ben):
            poll(
                page,
                "() => state.data",
                lambda d: {"from": "pyv", "topic": "game", "text": "ping from python"} in d,
                10,
                "the Python data packet at a v1 page",
            )
        ben.evaluate("() => say('hello from ben')")
        poll(
            ann,
            "() => state.texts",
            lambda t: {"from": "ben", "text": "hello from ben"} in t,
            10,
            "ben's chat at ann",
        )
        # ben's signal WebSocket drops: it resumes on /rtc/v1 (same sid), media goes on
        ben_sid = ben.evaluate("() => sid()")
        ben.evaluate("() => dropSignal()")
        poll(ben, "() => state.reconnected", lambda n: n >= 1, 20, "ben resumed")
        assert ben.evaluate("() => sid()") == ben_sid
        frames = ben.evaluate("() => state.videos.ann.frames")
        poll(ben, videos, lambda v: v["ann"]["frames"] > frames + 20, 20, "video after resume")
        # cat joins: ben now receives four videos (ann, the Python camera and screen share,
        # cat) where its client offered three sections: the server asks for one more
        cat = page_joins("cat", [320, 180])
        sees(ben, ["cat"], "cat's camera at ben, in a section its client added")
        sees(cat, ["ann", "ben", "pyv"], "the others' cameras at cat")
        # ann leaves; dan joins after her: three pages again, all received
        ann.evaluate("() => leave()")
        for page in (ben, cat):
            poll(page, "() => state.left", lambda left: "ann" in left, 15, "ann seen leaving")
        python.until(lambda s: "ann" not in s["pyv"]["remote"], 15, "ann gone for Python")
        dan = page_joins("dan", [320, 180])
        sees(dan, ["ben", "cat", "pyv"], "the others' cameras at dan, who came after")
        for page in (ben, cat):
            sees(page, ["dan"], "dan's camera at a page already there")
        frames = ben.evaluate("() => state.videos.cat.frames")
        poll(ben, videos, lambda v: v["cat"]["frames"] > frames + 20, 20, "cat's video goes on")
        python.until(
            lambda s: all(
                s["pyv"]["video"].get(w, 0) > 20 and s["pyv"]["audio"].get(w, 0) > 50
                for w in ("cat", "dan")
            ),
            30,
            "cat's and dan's video and audio at the Python participant",
        )
        artefact(ben, "livekit-client-v1-ben")
        artefact(dan, "livekit-client-v1-dan")
        assert ann.evaluate("() => state.errors") == []
        for page in (ben, cat, dan):
            assert page.evaluate("() => state.errors") == []
            assert page.evaluate("() => state.disconnected") == 0
        # ben's estimate comes from transport-cc feedback (accepted in the answers' sections
        # it receives on), as on two connections
        from tests.browser.test_simulcast_browser import subscriber_metrics

        ben_metrics = subscriber_metrics(lk_server).get(ben_sid, {})
        assert ben_metrics.get("visio_subscriber_twcc_feedback_total", 0) > 0, ben_metrics
        assert "visio_subscriber_bandwidth_bps[twcc]" in ben_metrics, ben_metrics
        # each page was served on /rtc/v1, none fell back; Chromium took every answer
        log = lk_server.output(None)
        for name in ("ann", "ben", "cat", "dan"):
            assert f"LiveKit v1 (one peer connection): {name} joined" in log, name
        assert "pyv joined" not in log  # the Python SDK (Rust) is sent to /rtc
        assert f"LiveKit v1 (one peer connection): {ben_sid} resumed" in log
        # the server asked for offers, and once for a section more (at ben, for cat)
        assert "media_sections_requirement 0 audio, 0 video" in log
        assert re.search(r"media_sections_requirement \d+ audio, [1-9]\d* video", log)
        bad = [
            line
            for line in console
            if "Failed to set remote" in line
            or "setRemoteDescription" in line
            or "setLocalDescription" in line
            or "v1 RTC path not found" in line
            or "Initial connection failed" in line
            or "could not establish" in line
        ]
        assert bad == [], bad
    finally:
        python.close()
        for page in pages:
            page.context.close()
