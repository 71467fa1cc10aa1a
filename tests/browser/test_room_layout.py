"""The meeting room's layout in a real Chromium page, measured: the grid fills the stage at 3, 6
and 12 participants, at 1280x800 and 1920x1080; the share view puts a shared screen large beside
a filmstrip; a pinned tile goes large; a camera that is off shows an avatar; the phone layout.

The page under test is the real web client. The other participants are the project's Python
client (``visio_client``) publishing small test patterns: twelve Chromium pages are more than
two cores carry. They join without subscribing (their tokens say so), so they only encode.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import jwt
import pytest

from tests.browser.conftest import ARTIFACTS, artefact
from tests.browser.test_web_client import poll
from tests.support.server import ServerProcess
from visio_client import Client
from visio_client.media import PatternVideoTrack, ToneAudioTrack

pytestmark = [pytest.mark.browser, pytest.mark.timeout(200)]

KEY, SECRET = "layout-test", "layout-test-secret-0123456789abcdef"
NAMES = ["Amélie Durand", "Bruno Martin", "Chloé Bernard", "David Petit", "Emma Robert",
         "Farid Haddad", "Gaëlle Morel", "Hugo Laurent", "Inès Simon", "Jules Michel",
         "Karim Lefèvre"]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def screenshot(page, name: str) -> None:
    """A test artefact; also the README's picture when VISIO_SCREENSHOTS=1."""
    artefact(page, name)
    if os.environ.get("VISIO_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(ARTIFACTS / f"{name}.png", SCREENSHOTS / f"{name}.png")


class Crowd:
    """Python participants in one room, run by an event loop of their own in a thread."""

    def __init__(self, server: ServerProcess, room: str) -> None:
        self.server = server
        self.room = room
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clients: list[tuple[Client, list[dict]]] = []  # (the client pings by itself)

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def token(self, identity: str, name: str) -> str:
        now = int(time.time())
        claims = {
            "iss": KEY, "sub": identity, "name": name, "nbf": now - 5, "exp": now + 3600,
            "video": {"room": self.room, "roomJoin": True, "canPublish": True,
                      "canSubscribe": False, "canPublishData": True},
        }  # fmt: skip
        return jwt.encode(claims, SECRET, algorithm="HS256")

    def join(self, count: int, video: bool = True, audio: bool = False) -> None:
        async def one(i: int) -> tuple[Client, list[dict]]:
            name = NAMES[i % len(NAMES)]
            client = Client(self.server.url, self.token(f"fake-{i}", name))
            await client.connect()
            tracks, sources = [], []
            if video:
                tracks.append(PatternVideoTrack(i, width=160, height=120, fps=10))
                sources.append("camera")
            if audio:
                tracks.append(ToneAudioTrack(i))
                sources.append("microphone")
            published = await client.publish(*tracks, sources=sources) if tracks else []
            return client, published

        async def many(first: int) -> list:
            return await asyncio.gather(*(one(first + k) for k in range(count)))

        self.clients += self.run(many(len(self.clients)), timeout=60)

    def share(self, index: int) -> None:
        client, published = self.clients[index]
        track = PatternVideoTrack(index + 3, width=448, height=256, fps=5)
        published += self.run(client.publish(track, sources=["screen_share"]))

    def unshare(self, index: int) -> None:
        client, published = self.clients[index]
        share = next(t for t in published if t["source"] == "screen_share")
        published.remove(share)
        self.run(client.request({"type": "unpublish", "track": share["sid"]}))

    def mute(self, index: int, source: str, muted: bool) -> None:
        client, published = self.clients[index]
        sid = next(t["sid"] for t in published if t["source"] == source)
        self.run(client.request({"type": "mute", "track": sid, "muted": muted}))

    def close(self) -> None:
        async def leave_all():
            await asyncio.gather(*(c.leave() for c, _ in self.clients), return_exceptions=True)

        try:
            self.run(leave_all(), timeout=20)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture(scope="module")
def server():
    s = ServerProcess(env={"VISIO_KEYS": f"{KEY}:{SECRET}"})
    yield s
    s.stop()


# Where every visible tile is, relative to the stage, and what each shows.
GEOMETRY = """() => {
  const area = document.querySelector('#stage-area').getBoundingClientRect();
  const box = (el) => { const r = el.getBoundingClientRect();
    return {x: r.x - area.x, y: r.y - area.y, w: r.width, h: r.height}; };
  const tiles = [...document.querySelectorAll('#grid .tile, #stage .tile')].filter(t => !t.hidden)
    .map(t => ({...box(t), name: (t.querySelector('.name') || {}).textContent,
                screen: t.classList.contains('screen'), main: t.classList.contains('main'),
                camOff: t.dataset.camOff === 'true',
                avatar: getComputedStyle(t.querySelector('.avatar') || t).display !== 'none'
                        && !!t.querySelector('.avatar'),
                videoShown: getComputedStyle(t.querySelector('video')).visibility === 'visible',
                playing: (t.querySelector('video').videoWidth || 0) > 0}));
  const more = document.querySelector('#overflow');
  return {w: area.width, h: area.height, tiles, view: window.visio.currentView,
          overflow: more.hidden ? 0 : parseInt(more.textContent.replace('+', ''), 10),
          scrollW: document.documentElement.scrollWidth, vw: innerWidth};
}"""


def settled(page) -> dict:
    """The geometry once tiles stop moving (they glide for 0.2 s)."""
    last = None
    for _ in range(30):
        now = page.evaluate(GEOMETRY)
        if now == last:
            return now
        last = now
        page.wait_for_timeout(150)
    return last


def check_fills(g: dict, count: int, where: str) -> float:
    """Every tile inside the stage, none overlapping, together >= 60 % of the stage."""
    tiles = g["tiles"]
    assert len(tiles) == count, (where, len(tiles), [t["name"] for t in tiles])
    for t in tiles:
        assert t["x"] >= -1 and t["y"] >= -1, (where, t)
        assert t["x"] + t["w"] <= g["w"] + 1 and t["y"] + t["h"] <= g["h"] + 1, (where, t, g)
    for i, a in enumerate(tiles):
        for b in tiles[i + 1 :]:
            overlap_w = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
            overlap_h = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
            assert overlap_w <= 1 or overlap_h <= 1, (where, a, b)
    used = sum(t["w"] * t["h"] for t in tiles) / (g["w"] * g["h"])
    assert used >= 0.6, f"{where}: tiles use {used:.0%} of the stage {g['w']}x{g['h']}: {tiles}"
    return used


def playing(count: int):
    """Poll check: ``count`` remote videos decode (videoWidth > 0)."""
    return lambda g: len([t for t in g["tiles"] if t["playing"] and not t["screen"]]) >= count


@pytest.fixture(scope="module")
def room(server, browser):
    name = f"layout-{uuid.uuid4().hex[:6]}"
    crowd = Crowd(server, name)
    context = browser.new_context(
        permissions=["camera", "microphone"],
        locale="en-US",
        viewport={"width": 1280, "height": 800},
    )
    page = context.new_page()
    page.on("pageerror", lambda exc: print(f"[layout page] page error: {exc}"))
    page.goto(f"{server.url}/r/{name}?name=Zoé%20Lambert&autojoin=1&lang=en")
    page.locator(".tile.self").wait_for(timeout=15000)
    yield page, crowd
    context.close()
    crowd.close()


SIZES = [(1280, 800), (1920, 1080)]


def test_grid_fills_the_stage_at_3_6_and_12(room):
    page, crowd = room
    used = {}
    started = time.monotonic()
    for total, video_from in ((3, 2), (6, 5), (12, 11)):
        crowd.join(total - 1 - len(crowd.clients))
        page.set_viewport_size({"width": 1280, "height": 800})
        poll(page, GEOMETRY, playing(video_from), timeout=40, what=f"{total} tiles playing")
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            g = settled(page)
            assert g["view"] == "grid", g["view"]
            used[(total, width)] = check_fills(g, total, f"{total} at {width}x{height}")
            if total == 6 and width == 1920:
                # as in a real meeting, some have their camera off: avatars (they fill too)
                crowd.mute(3, "camera", True)
                crowd.mute(4, "camera", True)
                poll(page, GEOMETRY, lambda g: sum(t["avatar"] for t in g["tiles"]) == 2)
                page.wait_for_function("() => !document.querySelector('#toasts').children.length")
                screenshot(page, "grid-6")
                crowd.mute(3, "camera", False)
                crowd.mute(4, "camera", False)
    print("stage used by tiles:", {f"{n} at {w}": f"{u:.0%}" for (n, w), u in used.items()})
    print(f"grid test: {time.monotonic() - started:.1f} s")


def test_camera_off_shows_an_avatar_not_a_frozen_frame(room):
    page, crowd = room
    page.set_viewport_size({"width": 1280, "height": 800})
    name = NAMES[1]

    def tile(g):
        return next((t for t in g["tiles"] if t["name"] == name), None)

    crowd.mute(1, "camera", True)
    g = poll(page, GEOMETRY, lambda g: tile(g) and tile(g)["avatar"], what="avatar shown")
    assert not tile(g)["videoShown"], tile(g)
    crowd.mute(1, "camera", False)
    poll(
        page,
        GEOMETRY,
        lambda g: tile(g)["videoShown"] and not tile(g)["avatar"],
        what="video back",
    )


def test_pinned_tile_goes_large_and_keeps_focus(room):
    page, crowd = room
    page.set_viewport_size({"width": 1280, "height": 800})
    name = NAMES[2]
    pin = page.locator("#grid .tile", has=page.locator(".name", has_text=name)).locator(".pin")
    pin.focus()
    page.keyboard.press("Space")
    g = settled(page)
    assert g["view"] == "speaker"
    main = [t for t in g["tiles"] if t["main"]]
    assert [t["name"] for t in main] == [name], main
    assert main[0]["w"] * main[0]["h"] > 0.4 * g["w"] * g["h"], main
    assert page.evaluate("() => document.activeElement.classList.contains('pin')")
    assert pin.get_attribute("aria-pressed") == "true"
    page.keyboard.press("Enter")
    assert settled(page)["view"] == "grid"
    # the speaker view (L), and full screen (F), from the keyboard
    page.locator("#mic-button").focus()
    page.keyboard.press("l")
    g = settled(page)
    assert g["view"] == "speaker" and len([t for t in g["tiles"] if t["main"]]) == 1, g["view"]
    assert page.locator("#layout-button .text").inner_text() == "Grid view"
    page.keyboard.press("l")
    assert settled(page)["view"] == "grid"
    page.keyboard.press("f")
    page.wait_for_function("() => document.fullscreenElement?.id === 'room'")
    exit_button = page.locator("#fullscreen-button .text", has_text="Exit full screen")
    exit_button.wait_for(state="attached")  # (fullscreenchange may come just after)
    page.keyboard.press("f")
    page.wait_for_function("() => !document.fullscreenElement")
    page.set_viewport_size({"width": 1280, "height": 800})


def test_screen_share_view_with_a_filmstrip(room):
    page, crowd = room
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        if width == 1280:
            crowd.share(0)
        g = poll(
            page,
            GEOMETRY,
            lambda g: any(t["screen"] and t["playing"] for t in g["tiles"]),
            what="share plays",
        )
        g = settled(page)
        assert g["view"] == "share"
        share = next(t for t in g["tiles"] if t["screen"])
        strip = [t for t in g["tiles"] if not t["screen"]]
        assert share["w"] * share["h"] >= 0.5 * g["w"] * g["h"], share
        assert all(t["w"] * t["h"] < share["w"] * share["h"] / 4 for t in strip), strip
        # everyone is on the filmstrip or counted in its "+N", and you always see yourself
        assert len(strip) + g["overflow"] == 12, (len(strip), g)
        assert any(t["name"].endswith("(you)") for t in strip), strip
        if width == 1920:
            page.wait_for_function("() => !document.querySelector('#toasts').children.length")
            screenshot(page, "screen-share")
    crowd.unshare(0)
    poll(page, GEOMETRY, lambda g: g["view"] == "grid", what="share gone")


OUTBOUND_FRAMES = """async () => {
  let frames = 0;
  (await window.visio.session.publisher.getStats()).forEach(x => {
    if (x.type === 'outbound-rtp' && x.kind === 'video') frames += x.framesSent || 0;
  });
  return frames;
}"""


def test_background_blur_is_what_is_sent(room):
    page, _ = room
    started = time.monotonic()
    page.click("#more-button")
    page.click("#blur-button")
    page.wait_for_function("() => window.visio.blur && window.visio.blur.frames > 2", timeout=60000)
    print(f"blur running {time.monotonic() - started:.1f} s after the click")
    assert page.evaluate(
        "() => window.visio.session.local.get('camera').track === window.visio.blur.output"
    ), "the blurred camera is what is sent"
    assert page.evaluate("() => window.visio.blur.output.readyState") == "live"
    before = page.evaluate(OUTBOUND_FRAMES)
    poll(page, OUTBOUND_FRAMES, lambda n: n > before, what="blurred frames sent")
    print(f"blurred frames sent {time.monotonic() - started:.1f} s after the click")
    page.click("#more-button")
    assert page.get_attribute("#blur-button", "aria-checked") == "true"
    page.click("#blur-button")
    page.wait_for_function("() => !window.visio.blur")
    assert page.evaluate(
        "() => window.visio.session.local.get('camera').track === window.visio.mine.cam"
    )


def test_phone_layout(room, browser, server):
    page, crowd = room
    url = page.url.replace("Zo%C3%A9%20Lambert", "Phone").replace("Zoé%20Lambert", "Phone")
    context = browser.new_context(
        permissions=["camera", "microphone"],
        locale="fr-FR",
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    # phones have no getDisplayMedia: no share button there
    context.add_init_script("delete MediaDevices.prototype.getDisplayMedia")
    phone = context.new_page()
    try:
        phone.goto(url.replace("autojoin=1", "autojoin=0").replace("lang=en", "lang=fr"))
        join = phone.locator("#join-button").bounding_box()
        assert join["y"] + join["height"] <= 844, f"Join below the fold: {join}"
        artefact(phone, "phone-lobby")
        phone.click("#join-button")
        phone.locator(".tile.self").wait_for(timeout=15000)
        poll(phone, GEOMETRY, lambda g: len(g["tiles"]) >= 6, what="phone tiles")
        g = settled(phone)
        assert g["scrollW"] <= g["vw"], "the page scrolls sideways"
        assert phone.locator("#share-button").is_hidden()
        for button in phone.locator(".controls button.control:visible").all():
            box = button.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
            assert box["height"] >= 44 and box["width"] >= 44, box
        screenshot(phone, "phone")
        phone.click("#chat-button")
        sheet = phone.locator("#panel").bounding_box()
        assert sheet["width"] == 390 and abs(sheet["y"] + sheet["height"] - 844) <= 1, sheet
        assert phone.evaluate("() => document.activeElement.id") == "chat-input"
        phone.fill("#chat-input", "Bonjour depuis le téléphone")
        phone.press("#chat-input", "Enter")
        phone.locator("#chat-log li[data-status=sent]").wait_for(state="attached", timeout=10000)
        artefact(phone, "phone-chat")
        phone.keyboard.press("Escape")
        phone.locator("#panel").wait_for(state="hidden")
        assert phone.evaluate("() => document.activeElement.id") == "chat-button"
    finally:
        context.close()
