"""The meeting room as three people use it, in real Chromium pages: one whose browser refuses
the camera joins with the microphone only; keyboard shortcuts and focus; axe-core finds no
serious or critical accessibility problem in the lobby and in the room (three people, a share,
the chat open), in English and French; background blur; and after a network outage the
client puts back its mute and camera-off state (as another participant sees it) and delivers
the chat typed meanwhile, or marks it failed.

Alice and Bob run in the browser the other tests use (fake camera, microphone and screen, every
permission granted). Carol runs in a second browser without the flag that accepts every
permission prompt (it would hand her the camera anyway): her context grants the microphone only,
so Chromium refuses her the camera, as when someone clicks Block.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path

import pytest

from tests.browser.conftest import ARGS, CHROMIUM, artefact
from tests.browser.test_room_layout import screenshot
from tests.browser.test_web_client import poll

pytestmark = [pytest.mark.browser, pytest.mark.timeout(200)]

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"

# What a page receives from each participant (by name): tile state and inbound bytes/frames.
SEEN = """async () => {
  const v = window.visio, s = v.session;
  const out = {};
  for (const p of v.participants.values()) {
    const name = p.info.name || p.info.identity;
    out[name] = {mic: p.tile.dataset.micMuted === 'true', camOff: p.tile.dataset.camOff === 'true',
                 avatar: getComputedStyle(p.tile.querySelector('.avatar')).display !== 'none',
                 video: getComputedStyle(p.tile.querySelector('video')).visibility === 'visible',
                 tracks: [...p.tracks.values()].map(t => `${t.source}:${t.muted ? 'muted' : 'on'}`),
                 audioBytes: 0, frames: 0, quality: p.net.dataset.quality};
  }
  if (s && s.subscriber) for (const tr of s.subscriber.getTransceivers()) {
    const info = tr.mid != null && s.remote.get(tr.mid);
    const p = info && v.participants.get(info.participant);
    if (!p) continue;
    const entry = out[p.info.name || p.info.identity];
    (await tr.receiver.getStats()).forEach(x => {
      if (x.type !== 'inbound-rtp') return;
      if (x.kind === 'audio') entry.audioBytes += x.bytesReceived || 0;
      else if (info.source === 'camera') entry.frames += x.framesDecoded || 0;
    });
  }
  return out;
}"""


@pytest.fixture(scope="module")
def strict_browser(browser):
    """Chromium that asks before giving the camera: what the context does not grant, it
    refuses (headless has nobody to click Allow)."""
    args = [a for a in ARGS if a != "--use-fake-ui-for-media-stream"]
    b = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=args)
    yield b
    b.close()


def new_page(browser, url: str, name: str, permissions=("camera", "microphone"), **options):
    context = browser.new_context(
        permissions=list(permissions),
        locale="en-US",
        viewport={"width": 1280, "height": 800},
        **options,
    )
    page = context.new_page()
    page.on("pageerror", lambda exc: print(f"[{name}] page error: {exc}"))
    page.on(
        "console",
        lambda m: print(f"[{name}] {m.type}: {m.text}") if m.type in ("error", "warning") else None,
    )
    page.goto(url)
    return page


@pytest.fixture(scope="module")
def meeting(server, browser, strict_browser):
    room = f"state-{uuid.uuid4().hex[:6]}"
    url = f"{server.url}/r/{room}?lang=en&name="
    pages = {}
    try:
        for name in ("Alice", "Bob"):
            pages[name] = new_page(browser, f"{url}{name}&autojoin=1", name)
        yield room, pages, strict_browser, url
    finally:
        for page in pages.values():
            with contextlib.suppress(Exception):
                page.context.close()


def axe(page, where: str) -> None:
    """axe-core on the whole page: no serious or critical violation."""
    if not page.evaluate("() => !!window.axe"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
    report = [
        f"{v['id']} ({v['impact']}): {v['help']} -> "
        + "; ".join(n["target"][0] if n["target"] else "?" for n in v["nodes"][:5])
        for v in bad
    ]
    print(f"axe {where}: {len(result['violations'])} violations, serious/critical: {report}")
    assert not bad, f"axe, {where}:\n" + "\n".join(report)


def test_camera_refused_joins_with_the_microphone(meeting):
    room, pages, strict_browser, url = meeting
    carol = new_page(strict_browser, f"{url}Carol", "Carol", permissions=["microphone"])
    pages["Carol"] = carol
    error = carol.locator("#lobby-error")
    error.get_by_text("blocks your camera").wait_for(timeout=15000)
    assert "microphone only" in error.inner_text()
    assert carol.locator("#retry-media").is_visible()
    assert carol.get_attribute("#lobby-cam", "aria-checked") == "false"
    assert carol.locator("#preview-avatar").is_visible()  # no frozen or black preview
    carol.wait_for_function("() => window.visio.micLevel > 0.01", timeout=10000)  # mic works
    artefact(carol, "lobby-camera-refused")
    carol.click("#join-button")
    carol.locator(".tile.self").wait_for(timeout=15000)
    # the others are told (an aria-live region)
    pages["Alice"].locator("#toasts[role=status]").get_by_text("Carol joined").wait_for()
    carol.wait_for_function(
        "() => window.visio.session && window.visio.session.local.has('microphone')", timeout=15000
    )
    assert carol.evaluate("() => [...window.visio.session.local.keys()]") == ["microphone"]
    assert carol.locator("#mic-button .text").inner_text() == "Mute"
    assert carol.locator("#cam-button .text").inner_text() == "Start video"
    # the others hear her and see her avatar, not a black tile
    for name in ("Alice", "Bob"):
        first = poll(
            pages[name],
            SEEN,
            lambda r: "Carol" in r and r["Carol"]["audioBytes"] > 0 and r["Carol"]["avatar"],
            what=f"{name} hears Carol and sees her avatar",
        )
        poll(
            pages[name],
            SEEN,
            lambda r, b=first["Carol"]["audioBytes"]: r["Carol"]["audioBytes"] > b,
            what=f"{name} keeps hearing Carol",
        )
    # asking for the camera again from the room says why it cannot, and how to fix it
    carol.click("#cam-button")
    carol.locator("#toasts").get_by_text("blocks your camera").wait_for(timeout=10000)
    assert carol.locator("#cam-button .text").inner_text() == "Start video"


def test_microphone_refused_keeps_the_camera_and_camera_off_turns_it_off(meeting):
    _, _, strict_browser, url = meeting
    dana = new_page(strict_browser, f"{url}Dana", "Dana", permissions=["camera"])
    try:
        dana.locator("#lobby-error").get_by_text("blocks your microphone").wait_for(timeout=15000)
        assert dana.evaluate("() => window.visio.preview.getVideoTracks()[0].readyState") == "live"
        assert dana.locator("#preview").is_visible()
        # camera off in the lobby: the preview goes, and so does the camera (its light)
        track = dana.evaluate_handle("() => window.visio.preview.getVideoTracks()[0]")
        dana.click("#lobby-cam")
        assert dana.get_attribute("#lobby-cam", "aria-checked") == "false"
        assert dana.locator("#preview").is_hidden() and dana.locator("#preview-avatar").is_visible()
        assert track.evaluate("t => t.readyState") == "ended"
        dana.click("#lobby-cam")
        dana.locator("#preview").wait_for()
    finally:
        dana.context.close()


def test_keyboard_shortcuts_and_focus(meeting):
    room, pages, _, _ = meeting
    alice = pages["Alice"]
    assert alice.title().startswith(room), alice.title()
    assert alice.locator("#count").inner_text() == "3 in the meeting"
    alice.locator("body").click(position={"x": 5, "y": 400})
    alice.keyboard.press("?")
    dialog = alice.locator("#shortcuts-dialog")
    dialog.wait_for(state="visible")
    assert alice.evaluate("() => !!document.activeElement.closest('#shortcuts-dialog')")
    assert "Mute or unmute" in dialog.inner_text()
    alice.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    # the dialog's close event gives the focus back; then single keys act on the meeting
    alice.wait_for_function("() => !document.querySelector('dialog[open]') && window.visio.session")
    alice.keyboard.press("m")
    label = alice.locator("#mic-button .text")
    try:
        label.get_by_text("Unmute", exact=True).wait_for(timeout=3000)
    except Exception as exc:
        why = alice.evaluate(
            "() => ({focus: document.activeElement?.outerHTML.slice(0, 120),"
            " open: [...document.querySelectorAll('dialog[open]')].map(d => d.id),"
            " session: !!window.visio.session, micMuted: window.visio.micMuted,"
            " mic: !!window.visio.mine.mic, keys: window.visio.singleKeys})"
        )
        raise AssertionError(f"'m' did not mute: {label.inner_text()!r} {why}") from exc
    assert alice.get_attribute("#mic-button", "data-pressed") == "true"
    alice.keyboard.press("m")
    assert alice.locator("#mic-button .text").inner_text() == "Mute"
    alice.keyboard.press("c")
    assert alice.evaluate("() => document.activeElement.id") == "chat-input"
    alice.keyboard.type("m")  # typing in the chat is typing, not a shortcut
    assert alice.locator("#mic-button .text").inner_text() == "Mute"
    alice.fill("#chat-input", "")
    alice.keyboard.press("Escape")
    alice.locator("#panel").wait_for(state="hidden")
    assert alice.evaluate("() => document.activeElement.id") == "chat-button"
    # single-key shortcuts can be turned off (WCAG 2.1.4)
    alice.click("#more-button")
    alice.click("#settings-button")
    settings = alice.locator("#settings-dialog")
    settings.wait_for(state="visible")
    assert alice.locator("#room-camera option").count() >= 1
    assert alice.locator("#room-speaker").is_visible()  # Chromium has setSinkId
    alice.uncheck("#single-keys")
    alice.keyboard.press("Escape")
    settings.wait_for(state="hidden")
    alice.keyboard.press("m")
    assert alice.locator("#mic-button .text").inner_text() == "Mute"
    alice.evaluate("() => { document.querySelector('#single-keys').click(); }")


def test_devices_notices_and_hints(meeting):
    room, pages, _, _ = meeting
    alice, bob = pages["Alice"], pages["Bob"]
    # another microphone, from the settings: sent in place of the first (replaceTrack)
    alice.click("#more-button")
    alice.click("#settings-button")
    options = alice.eval_on_selector_all("#room-mic option", "os => os.map(o => o.value)")
    current = alice.input_value("#room-mic")
    assert len(options) >= 2, options
    first = alice.evaluate("() => window.visio.mine.mic.id")
    alice.select_option("#room-mic", next(o for o in options if o != current))
    alice.wait_for_function(f"() => window.visio.mine.mic.id !== {first!r}")
    # (replaceTrack completes a moment later: waited for, not read once)
    alice.wait_for_function(
        "() => window.visio.session.local.get('microphone').transceiver.sender.track"
        " === window.visio.mine.mic",
        timeout=10000,
    )
    alice.keyboard.press("Escape")
    before = bob.evaluate(SEEN)["Alice"]["audioBytes"]
    poll(bob, SEEN, lambda r: r["Alice"]["audioBytes"] > before + 2000, what="new mic heard")
    # the microphone unplugged: the default one takes over, and Alice is told
    alice.evaluate("() => window.visio.mine.mic.dispatchEvent(new Event('ended'))")
    alice.locator("#toasts").get_by_text("microphone was disconnected").wait_for(timeout=10000)
    before = bob.evaluate(SEEN)["Alice"]["audioBytes"]
    poll(bob, SEEN, lambda r: r["Alice"]["audioBytes"] > before + 2000, what="default mic heard")
    # speaking while muted: a hint (the fake microphone beeps)
    alice.click("#mic-button")
    hint = alice.locator("#muted-hint")
    hint.wait_for(timeout=15000)
    # said to a screen reader (a toast only it reads), not shown twice
    shown_twice = alice.locator("#toasts p:not(.sr-only)").filter(has_text="You are muted")
    assert shown_twice.count() == 0
    alice.click("#mic-button")
    # unread messages counted on the closed chat; the count goes when it opens
    assert bob.get_attribute("#chat-button", "aria-expanded") == "false"
    alice.keyboard.press("c")
    alice.fill("#chat-input", "one")
    alice.press("#chat-input", "Enter")
    alice.fill("#chat-input", "two")
    alice.press("#chat-input", "Enter")
    bob.wait_for_function("() => document.querySelector('#unread').textContent === '2'")
    assert bob.locator("#unread").is_visible()
    bob.click("#chat-button")
    assert bob.locator("#unread").is_hidden()
    bob.click("#chat-button")
    alice.keyboard.press("Escape")
    # the invite link from the room
    alice.click("#invite-button")
    alice.locator("#toasts p", has_text="ink").first.wait_for()
    assert alice.evaluate("() => window.visio.lastCopied").endswith(f"/r/{room}")
    # each tile says how the connection with that person is, and why
    label = bob.get_attribute(".tile[data-identity] .net[data-quality=good]", "aria-label")
    assert label and "Connection: good" in label and "ms round trip" in label, label


def open_chat(page) -> None:
    if page.get_attribute("#chat-button", "aria-expanded") != "true":
        page.click("#chat-button")
    page.locator("#chat-input").wait_for()


def test_no_serious_accessibility_problem_in_english_and_french(meeting, browser, server):
    room, pages, _, url = meeting
    alice, bob, carol = pages["Alice"], pages["Bob"], pages["Carol"]
    # the lobby, as it opens, and after "New meeting"
    for lang in ("en", "fr"):
        lobby = new_page(browser, f"{server.url}/?lang={lang}", f"lobby-{lang}")
        try:
            lobby.wait_for_function("() => window.visio.preview", timeout=10000)
            lobby.fill("#name-input", "Dana")
            lobby.click("#new-meeting")
            name = lobby.input_value("#room-input")
            assert len(name) == 14 and name.count("-") == 2, name
            assert lobby.url.endswith(f"/r/{name}?lang={lang}")
            assert lobby.input_value("#invite-link").endswith(f"/r/{name}")
            axe(lobby, f"lobby ({lang})")
            if lang == "en":
                screenshot(lobby, "lobby")
        finally:
            lobby.context.close()
    # the room: three people, Bob shares his screen, the chat is open
    bob.click("#share-button")
    bob.locator("#presenting").wait_for()
    poll(
        alice,
        "() => document.querySelectorAll('#stage .tile.screen video').length",
        lambda n: n == 1,
        what="Alice gets Bob's share",
    )
    open_chat(alice)
    alice.fill("#chat-input", "Le plan : https://example.org/plan")
    alice.press("#chat-input", "Enter")
    open_chat(bob)
    bob.locator("#chat-log a[rel~=noopener]").wait_for()
    assert bob.get_attribute("#chat-log a", "target") == "_blank"
    axe(alice, "room with a share and the chat (en)")
    axe(bob, "presenting, chat open (en)")
    artefact(alice, "room-share-chat-en")
    # the same room in French
    carol.goto(carol.url.replace("lang=en", "lang=fr") + "&autojoin=1")
    carol.locator(".tile.self").wait_for(timeout=15000)
    poll(
        carol,
        "() => document.querySelectorAll('#stage .tile.screen video').length",
        lambda n: n == 1,
        what="Carol gets Bob's share",
    )
    open_chat(carol)
    assert carol.locator("#chat-button .text").inner_text() == "Discussion"
    axe(carol, "room with a share and the chat (fr)")
    artefact(carol, "room-share-chat-fr")
    bob.click("#share-button")
    bob.locator("#presenting").wait_for(state="hidden")


def test_outage_keeps_mute_state_and_queues_chat(meeting):
    room, pages, _, _ = meeting
    alice, bob = pages["Alice"], pages["Bob"]
    open_chat(bob)
    open_chat(alice)
    alice.click("#mic-button")
    alice.click("#cam-button")
    poll(bob, SEEN, lambda r: r["Alice"]["mic"] and r["Alice"]["avatar"], what="Alice muted")
    # the network goes: signaling closes, nothing can reconnect
    alice.context.set_offline(True)
    alice.evaluate("() => window.visio.session.signal.ws.close()")
    alice.locator("#outage").wait_for(timeout=10000)
    assert alice.get_attribute("#quality", "data-quality") == "offline"
    alice.evaluate("() => { window.visio.outbox.timeout = 2500; }")
    alice.fill("#chat-input", "typed during the outage, too long ago")
    alice.press("#chat-input", "Enter")
    failed = alice.locator("#chat-log li[data-status=failed]")
    failed.wait_for(timeout=10000)
    assert "Not sent" in failed.inner_text()
    alice.evaluate("() => { window.visio.outbox.timeout = 60000; }")
    alice.fill("#chat-input", "typed during the outage, sent after it")
    alice.press("#chat-input", "Enter")
    waiting = alice.locator("#chat-log li[data-status=queued]")
    assert "Waiting for the connection" in waiting.inner_text()
    artefact(alice, "outage-Alice")
    started = time.monotonic()
    alice.context.set_offline(False)
    alice.wait_for_function("() => window.visio.session.state === 'connected'", timeout=30000)
    print(f"reconnected {time.monotonic() - started:.1f} s after the network came back")
    alice.locator("#outage").wait_for(state="hidden")
    # Bob gets the queued message once, not the failed one
    bob.locator("#chat-log li", has_text="sent after it").wait_for(timeout=10000)
    assert bob.locator("#chat-log li", has_text="too long ago").count() == 0
    alice.locator("#chat-log li[data-status=sent]", has_text="sent after it").wait_for()
    # Bob sees Alice still muted with her camera off, and it stays so
    poll(
        bob,
        SEEN,
        lambda r: "Alice" in r and "microphone:muted" in r["Alice"]["tracks"],
        what="Alice muted after her reconnection",
    )
    for _ in range(4):
        seen = bob.evaluate(SEEN)["Alice"]
        assert seen["mic"] and seen["avatar"] and not seen["video"], seen
        assert "microphone:muted" in seen["tracks"] and "camera:muted" in seen["tracks"], seen
        bob.wait_for_timeout(500)
    assert alice.locator("#mic-button .text").inner_text() == "Unmute"
    # the failed message goes on retry
    failed.get_by_role("button", name="Retry").click()
    bob.locator("#chat-log li", has_text="too long ago").wait_for(timeout=10000)
    poll(
        alice,
        "() => document.querySelector('#quality').dataset.quality",
        lambda q: q not in ("offline", "unknown"),
        what="quality measured again",
    )
    # and unmuting after the outage works
    alice.click("#mic-button")
    alice.click("#cam-button")
    poll(
        bob,
        SEEN,
        lambda r: not r["Alice"]["mic"] and r["Alice"]["video"] and r["Alice"]["frames"] > 0,
        what="Alice unmuted and her camera back",
    )
    artefact(bob, "after-outage-Bob")
