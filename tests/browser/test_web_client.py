"""The web client in a real Chromium: three people in one meeting.

The tests share one meeting and run in order: media, mute, screen share, chat, leave.
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import artefact, open_page
from tests.support.browser import REMOTE_MEDIA, STAGE, poll, tile_of

__all__ = ["REMOTE_MEDIA", "STAGE", "poll", "tile_of"]  # other browser tests import them here

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]
NAMES = ["Alice", "Bob", "Carol"]


@pytest.fixture(scope="module")
def meeting(server, browser):
    pages = [
        open_page(browser, f"{server.url}/r/browser-demo?name={n}&autojoin=1&lang=en", n)
        for n in NAMES
    ]
    yield pages
    for page in pages:
        page.context.close()


def test_three_participants_see_and_hear_each_other(meeting):
    first = {}
    for name, page in zip(NAMES, meeting, strict=True):
        first[name] = poll(
            page,
            REMOTE_MEDIA,
            lambda r: (
                len([v for v in r["videos"] if v["w"] > 0 and v["ready"] >= 2]) == 2
                and r["audios"] == 2
            ),
            what=f"{name} sees two videos",
        )
    for name, page in zip(NAMES, meeting, strict=True):
        before = first[name]
        after = poll(
            page,
            REMOTE_MEDIA,
            lambda r, b=before: (
                r["audioBytes"] > b["audioBytes"]
                and r["framesDecoded"] > b["framesDecoded"]
                and all(v["t"] > 0 for v in r["videos"])
            ),
            what=f"{name} media advancing",
        )
        times_before = sorted(v["t"] for v in before["videos"])
        times_after = sorted(v["t"] for v in after["videos"])
        assert all(b < a for b, a in zip(times_before, times_after, strict=True)), (
            times_before,
            times_after,
        )
        assert all(v["remote"] for v in after["videos"])
        artefact(page, f"meeting-{name}")


def test_mute_is_shown_to_the_others(meeting):
    alice, bob, carol = meeting
    alice.click("#mic-button")
    alice.click("#cam-button")
    assert alice.get_attribute("#mic-button", "data-pressed") == "true"
    for page in (bob, carol):
        tile = tile_of(page, "Alice")
        tile.and_(page.locator("[data-mic-muted=true][data-cam-muted=true]")).wait_for(
            timeout=10000
        )
        assert "muted" in tile.get_attribute("aria-label")
    alice.click("#mic-button")
    alice.click("#cam-button")
    for page in (bob, carol):
        page.locator("#grid .tile[data-mic-muted=false][data-cam-muted=false]").filter(
            has=page.locator(".name", has_text="Alice")
        ).wait_for(timeout=10000)


def test_screen_share_is_shown_large_and_removed(meeting):
    alice, bob, carol = meeting
    alice.click("#share-button")
    for page in (bob, carol):
        stage = poll(page, STAGE, lambda r: len(r) == 1 and r[0]["w"] > 0, what="shared screen")
        grid_height = page.evaluate(
            "() => document.querySelector('#grid .tile').getBoundingClientRect().height"
        )
        assert stage[0]["h"] > grid_height, "the shared screen is shown larger than a tile"
    artefact(bob, "screen-share-Bob")
    # the browser's own "stop sharing" ends the track
    alice.evaluate("() => window.visio.mine.screen.dispatchEvent(new Event('ended'))")
    for page in (bob, carol):
        poll(page, STAGE, lambda r: r == [], what="shared screen removed")
    assert alice.get_attribute("#share-button", "data-pressed") == "false"


def test_chat_reaches_everyone_as_text(meeting):
    alice, bob, carol = meeting
    markup = "<img src=x onerror=window.pwned=1> <b>bold</b>"
    for page in meeting:
        page.click("#chat-button")  # the chat is a panel
    alice.fill("#chat-input", markup)
    alice.press("#chat-input", "Enter")
    for page in (bob, carol):
        item = page.locator("#chat-log li").last
        item.wait_for(timeout=10000)
        assert item.locator(".who").inner_text() == "Alice"
        assert item.locator(".text").inner_text() == markup
        assert item.locator("img, b").count() == 0
        assert page.evaluate("() => window.pwned") is None


def test_leaving_removes_the_tile(meeting):
    alice, bob, carol = meeting
    carol.click("#leave-button")
    assert carol.locator("#ended").is_visible()
    for page in (alice, bob):
        tile_of(page, "Carol").wait_for(state="detached", timeout=8000)
        artefact(page, f"after-leave-{page.evaluate('() => window.visio.session.name')}")


def test_closing_the_tab_is_leaving(meeting):
    """A closed tab leaves at once (pagehide): Alice's tile goes from Bob's page within
    seconds, not after the 20 s a dropped connection is waited for (docs/protocol.md)."""
    alice, bob, _ = meeting
    tile_of(bob, "Alice").wait_for(timeout=8000)
    alice.close(run_before_unload=True)
    tile_of(bob, "Alice").wait_for(state="detached", timeout=6000)


def test_lobby_by_keyboard_alone(server, browser):
    page = open_page(browser, f"{server.url}/?lang=fr", "keyboard")
    try:
        assert page.evaluate("() => document.activeElement.id") == "room-input"
        page.keyboard.type("clavier")
        page.keyboard.press("Tab")
        page.keyboard.type("Dana")
        for _ in range(20):  # Tab on to the join button
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.id") == "join-button":
                break
        assert page.evaluate("() => document.activeElement.textContent") == "Rejoindre"
        page.keyboard.press("Enter")
        page.locator("#room").wait_for(state="visible", timeout=10000)
        assert page.url.endswith("/r/clavier?lang=fr")
        page.locator("#participant-list li").first.wait_for(state="attached", timeout=10000)
        # joining at once still publishes: the join waits for the camera the lobby was opening
        page.wait_for_function(
            "() => (document.querySelector('.tile.self video')?.srcObject?.getTracks() || [])"
            ".some((t) => t.readyState === 'live')",
            timeout=10000,
        )
        # your own entry follows your microphone
        page.click("#mic-button")
        page.locator("#participant-list li", has_text="micro coupé").wait_for(
            state="attached", timeout=5000
        )
        page.click("#mic-button")
        page.locator("#participant-list li", has_text="micro coupé").wait_for(
            state="detached", timeout=5000
        )
        # keyboard focus is visible: the focused control gets the focus outline
        page.keyboard.press("Tab")
        outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
        assert outline == "solid", outline
        artefact(page, "lobby-keyboard")
    finally:
        page.context.close()


def test_a_meeting_name_the_server_refuses_is_said_once(server, browser):
    """A meeting name over the server's 128 characters: the page says why (the server's
    reason) on the end screen, instead of an outage banner retrying for ever."""
    room = "z" * 200
    page = open_page(browser, f"{server.url}/r/{room}?name=Zoe&autojoin=1&lang=en", "long-room")
    try:
        page.locator("#ended").wait_for(state="visible", timeout=15000)
        text = page.locator("#ended-text").inner_text()
        assert "128" in text and text.startswith("Error"), text
        assert page.locator("#outage").is_hidden()
        artefact(page, "long-room-refused")
    finally:
        page.context.close()


def test_a_first_join_that_fails_once_still_publishes(server, browser):
    """The first token fetch fails (Chromium's ERR_NETWORK_CHANGED as a network namespace
    came up, in a CI run): the page joins on its own retry and then publishes its camera and
    microphone, instead of sitting in the meeting sending nothing."""
    url = f"{server.url}/r/first-fails?autojoin=1&lang=en&name="
    context = browser.new_context(permissions=["camera", "microphone"], locale="en-US")
    failed = []

    def once(route):
        if not failed:
            failed.append(route.request.url)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    context.route("**/dev/token*", once)
    bob = context.new_page()
    bob.goto(url + "Bob")
    alice = open_page(browser, url + "Alice", "Alice")
    try:
        poll(
            alice,
            REMOTE_MEDIA,
            lambda r: len([v for v in r["videos"] if v["w"] > 0]) == 1 and r["audios"] == 1,
            what="Alice plays Bob's camera and hears him",
        )
        assert failed, "the first token fetch was not failed"
    finally:
        alice.context.close()
        context.close()
