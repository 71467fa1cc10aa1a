"""Issue 15's meeting features end to end, in real Chromium pages of the web client: raised hands
in order, a reaction, and a host's controls (mute someone, mute everyone, stop a screen share
and a camera, lock the meeting, remove someone), each checked on the pages of the people
concerned; and a dropped connection resumed as the same participant: the others see no leave
and no join, keep its tile, and never see its muted microphone unmuted.

Hana is the host: her page asks the development server for a host's token (``&host=1``). Alice
and Bob are participants; Carol comes late, to a locked meeting.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from pathlib import Path

import pytest

from tests.browser.conftest import artefact
from tests.browser.test_room_layout import screenshot
from tests.browser.test_room_state import SEEN, axe, new_page
from tests.browser.test_web_client import poll

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

# Per participant (by name), what a page shows of them: the hand's position on their tile, the
# reactions floating on it, and their tile's mute flag.
TILES = """() => {
  const out = {};
  for (const p of window.visio.participants.values()) {
    const name = (p.info.name || p.info.identity).replace(/ \\(you\\)$/, '');
    const bursts = [...p.tile.querySelectorAll('.reaction-burst')];
    out[name] = {hand: p.tile.dataset.hand || null, mic: p.tile.dataset.micMuted === 'true',
                 reactions: bursts.map(r => r.dataset.reaction)};
  }
  return out;
}"""
HANDS_LIST = "() => [...document.querySelectorAll('#hands-list li .name')].map(n => n.textContent)"


def ready(page) -> None:
    page.wait_for_function(
        "() => window.visioMeeting && window.visioMeeting.ready"
        " && window.visio.session.state === 'connected'",
        timeout=30000,
    )


@pytest.fixture(scope="module")
def meeting(server, browser):
    room = f"meet-{uuid.uuid4().hex[:6]}"
    url = f"{server.url}/r/{room}?lang=en&autojoin=1&name="
    pages = {}
    try:
        for name, extra in (("Hana", "&host=1"), ("Alice", ""), ("Bob", "")):
            pages[name] = new_page(browser, f"{url}{name}{extra}", name)
        for page in pages.values():
            ready(page)
        for page in pages.values():
            poll(page, TILES, lambda r: {"Hana", "Alice", "Bob"} <= set(r), what="all three")
        yield room, pages, url
    finally:
        for page in pages.values():
            with contextlib.suppress(Exception):
                page.context.close()


def people_panel(page) -> None:
    if page.get_attribute("#people-button", "aria-expanded") != "true":
        page.click("#people-button")
    page.locator("#participant-list").wait_for()


def test_only_the_host_gets_host_controls(meeting):
    _, pages, _ = meeting
    assert pages["Hana"].evaluate("() => window.visio && window.visioMeeting.host") is True
    for name, page in pages.items():
        assert page.locator("#hand-button").is_visible(), name
        assert page.locator("#react-button").is_visible(), name
        people_panel(page)
        host = name == "Hana"
        assert page.locator("#host-tools").is_visible() == host, name
        assert (page.get_by_role("button", name="Remove Alice").count() > 0) == host, name
        page.click("#people-button")


def test_raised_hands_are_seen_in_order_by_everyone(meeting):
    _, pages, _ = meeting
    hana, alice, bob = pages["Hana"], pages["Alice"], pages["Bob"]
    alice.click("#hand-button")
    poll(bob, TILES, lambda r: r["Alice"]["hand"] == "1", what="Bob sees Alice's hand")
    bob.locator("body").click(position={"x": 5, "y": 300})
    bob.keyboard.press("h")  # the shortcut
    for page in pages.values():
        seen = poll(
            page,
            TILES,
            lambda r: r["Alice"]["hand"] == "1" and r["Bob"]["hand"] == "2",
            what="the order of the hands",
        )
        assert seen["Hana"]["hand"] is None
    assert alice.locator("#hand-button .text").inner_text() == "Lower hand"
    assert alice.get_attribute("#hand-button", "data-pressed") == "true"
    people_panel(hana)
    assert hana.evaluate(HANDS_LIST) == ["Alice", "Bob"]
    hana.locator("#toasts").get_by_text("Bob raised a hand").wait_for()
    screenshot(hana, "raised-hands")
    axe(hana, "the host's People panel with two raised hands (en)")
    # the host lowers Alice's: Bob is now first, and Alice is told
    hana.get_by_role("button", name="Lower hand of Alice").click()
    poll(alice, TILES, lambda r: r["Alice"]["hand"] is None and r["Bob"]["hand"] == "1", what="1")
    alice.locator("#toasts").get_by_text("A host lowered your hand").wait_for()
    assert alice.locator("#hand-button .text").inner_text() == "Raise hand"
    poll(hana, HANDS_LIST, lambda names: names == ["Bob"], what="Bob alone in the queue")
    bob.click("#hand-button")  # lowered by himself
    poll(hana, TILES, lambda r: r["Bob"]["hand"] is None, what="no hand raised")
    assert hana.locator("#hands-box").is_hidden()
    hana.click("#people-button")


def test_a_reaction_is_seen_by_the_others(meeting):
    _, pages, _ = meeting
    alice = pages["Alice"]
    alice.click("#react-button")
    alice.locator("#react-menu").wait_for()
    alice.get_by_role("button", name="Applause").click()
    for name in ("Hana", "Bob"):
        poll(
            pages[name],
            TILES,
            lambda r: "clap" in r["Alice"]["reactions"],
            timeout=3,
            what=f"{name} sees Alice's applause",
        )
    alice.get_by_role("button", name="Love").click()  # the menu stays open for more
    poll(pages["Bob"], TILES, lambda r: "heart" in r["Alice"]["reactions"], timeout=3, what="♥")
    pages["Bob"].wait_for_timeout(600)  # grown to full size
    screenshot(pages["Bob"], "reaction")
    poll(alice, TILES, lambda r: "clap" in r["Alice"]["reactions"], timeout=3, what="her own")
    alice.keyboard.press("Escape")
    assert alice.locator("#react-menu").is_hidden()
    # gone after a few seconds
    poll(pages["Bob"], TILES, lambda r: not r["Alice"]["reactions"], timeout=8, what="it fades")


def audio_from(page, name: str) -> int:
    return page.evaluate(SEEN)[name]["audioBytes"]


def test_a_host_mutes_someone_and_they_see_it(meeting):
    _, pages, _ = meeting
    hana, alice, bob = pages["Hana"], pages["Alice"], pages["Bob"]
    poll(bob, SEEN, lambda r: r["Alice"]["audioBytes"] > 0, what="Bob hears Alice")
    assert alice.locator("#mic-button .text").inner_text() == "Mute"
    people_panel(hana)
    hana.get_by_role("button", name="Mute Alice").click()
    # Alice's own controls say she is muted, and her microphone sends nothing
    alice.locator("#toasts").get_by_text("A host muted your microphone").wait_for(timeout=10000)
    assert alice.locator("#mic-button .text").inner_text() == "Unmute"
    assert alice.get_attribute("#mic-button", "data-pressed") == "true"
    sent = "() => window.visio.session.local.get('microphone').track.enabled"
    assert alice.evaluate(sent) is False
    artefact(alice, "muted-by-host")
    # the others see her muted, and receive no more of her audio
    poll(bob, SEEN, lambda r: "microphone:muted" in r["Alice"]["tracks"], what="muted for Bob")
    assert bob.evaluate(SEEN)["Alice"]["mic"]
    bob.wait_for_timeout(500)
    before = audio_from(bob, "Alice")
    bob.wait_for_timeout(2000)
    assert audio_from(bob, "Alice") - before < 500, "Alice's muted audio still reaches Bob"
    assert hana.get_by_role("button", name="Mute Alice").count() == 0  # nothing left to mute
    # only she may unmute herself
    alice.click("#mic-button")
    poll(bob, SEEN, lambda r: not r["Alice"]["mic"], what="Alice unmuted herself")
    before = audio_from(bob, "Alice")
    poll(bob, SEEN, lambda r: r["Alice"]["audioBytes"] > before + 2000, what="Alice heard again")
    hana.click("#people-button")


def test_a_host_mutes_everyone(meeting):
    _, pages, _ = meeting
    hana, alice, bob = pages["Hana"], pages["Alice"], pages["Bob"]
    for page in (alice, bob):
        assert page.locator("#mic-button .text").inner_text() == "Mute"
    people_panel(hana)
    hana.click("#mute-all")
    for page in (alice, bob):
        page.locator("#mic-button .text", has_text="Unmute").wait_for(timeout=10000)
    assert hana.locator("#mic-button .text").inner_text() == "Mute"  # not the host herself
    seen = poll(
        hana,
        SEEN,
        lambda r: r["Alice"]["mic"] and r["Bob"]["mic"],
        what="Hana sees both muted",
    )
    assert not seen["Hana (you)"]["mic"]
    for page in (alice, bob):
        page.click("#mic-button")
    poll(hana, SEEN, lambda r: not r["Alice"]["mic"] and not r["Bob"]["mic"], what="unmuted")
    hana.click("#people-button")


def test_a_host_stops_a_screen_share_and_a_camera(meeting):
    _, pages, _ = meeting
    hana, alice, bob = pages["Hana"], pages["Alice"], pages["Bob"]
    shares = "() => document.querySelectorAll('#stage .tile.screen').length"
    bob.click("#share-button")
    bob.locator("#presenting").wait_for()
    poll(alice, shares, lambda n: n == 1, what="Alice sees Bob's share")
    people_panel(hana)
    stop = hana.get_by_role("button", name="Stop the screen share of Bob")
    stop.wait_for(timeout=10000)
    stop.click()
    # Bob's page: the share is over, and says why
    bob.locator("#toasts").get_by_text("A host stopped your screen share").wait_for(timeout=10000)
    bob.locator("#presenting").wait_for(state="hidden")
    assert bob.locator("#share-button .text").inner_text() == "Share screen"
    assert bob.evaluate("() => window.visio.mine.screen") is None
    assert bob.evaluate("() => window.visio.session.local.has('screen_share')") is False
    artefact(bob, "share-stopped-by-host")
    poll(alice, shares, lambda n: n == 0, what="the share gone for Alice")
    poll(hana, shares, lambda n: n == 0, what="the share gone for Hana")
    # his renegotiation does not publish it again
    hana.wait_for_timeout(1500)
    tracks = hana.evaluate(SEEN)["Bob"]["tracks"]
    assert not [t for t in tracks if t.startswith("screen_share")], tracks
    # his camera: stopped by the host, his page says so; he may start it again
    hana.get_by_role("button", name="Stop the video of Bob").click()
    bob.locator("#toasts").get_by_text("A host stopped your camera").wait_for(timeout=10000)
    assert bob.locator("#cam-button .text").inner_text() == "Start video"
    assert bob.evaluate("() => window.visio.session.local.has('camera')") is False
    poll(hana, SEEN, lambda r: r["Bob"]["avatar"], what="Bob's avatar for Hana")
    bob.click("#cam-button")
    bob.locator("#cam-button .text", has_text="Stop video").wait_for(timeout=10000)
    before = hana.evaluate(SEEN)["Bob"]["frames"]
    poll(hana, SEEN, lambda r: r["Bob"]["video"] and r["Bob"]["frames"] > before, what="back")
    hana.click("#people-button")


# Everything Bob's page is told about Alice, and how her tile looks every 50 ms.
WATCH = """(sid) => {
  const s = window.visio.session;
  const tile = document.querySelector(`#grid .tile[data-participant="${sid}"]`);
  window.watch = {events: [], micSamples: [], tile};
  for (const type of ['participant_joined', 'participant_left', 'track_published',
                      'track_unpublished', 'track_muted'])
    s.on(type, (m) => {
      const who = m.participant && (m.participant.sid || m.participant);
      if (who === sid) window.watch.events.push({type, muted: m.muted, track: m.track});
    });
  setInterval(() => window.watch.micSamples.push(window.watch.tile.dataset.micMuted), 50);
  return !!window.watch.tile;
}"""
WATCHED = """(sid) => ({events: window.watch.events, samples: window.watch.micSamples.length,
  unmuted: window.watch.micSamples.filter(x => x !== 'true').length,
  sameTile: document.querySelector(`#grid .tile[data-participant="${sid}"]`) === window.watch.tile,
  tiles: document.querySelectorAll(`#grid .tile[data-participant="${sid}"]`).length})"""


def test_a_dropped_connection_resumes_as_the_same_participant(meeting):
    _, pages, _ = meeting
    alice, bob = pages["Alice"], pages["Bob"]
    sid = alice.evaluate("() => window.visio.session.me.sid")
    alice.click("#mic-button")  # muted, camera on, hand raised
    alice.click("#hand-button")
    poll(bob, SEEN, lambda r: r["Alice"]["mic"], what="Alice muted")
    poll(bob, TILES, lambda r: r["Alice"]["hand"] == "1", what="Alice's hand")
    assert bob.evaluate(WATCH, sid)
    # the connection drops: the socket closes without a leave, the peer connections go (a
    # socket alone is made again keeping them: the next test)
    started = time.monotonic()
    alice.evaluate(
        "() => { const s = window.visio.session;"
        " s.publisher.close(); s.subscriber.close(); s.signal.ws.close(); }"
    )
    alice.wait_for_function("() => window.visio.session.state === 'reconnecting'", timeout=5000)
    alice.wait_for_function("() => window.visio.session.state === 'connected'", timeout=20000)
    print(f"resumed {time.monotonic() - started:.1f} s after the drop")
    assert alice.evaluate("() => window.visio.session.me.sid") == sid
    # Bob gets her camera again, on the same tile
    before = bob.evaluate(SEEN)["Alice"]["frames"]
    poll(bob, SEEN, lambda r: r["Alice"]["frames"] > before + 10, what="Alice's video back")
    poll(bob, SEEN, lambda r: "microphone:muted" in r["Alice"]["tracks"], what="mic republished")
    bob.wait_for_timeout(1000)
    seen = bob.evaluate(WATCHED, sid)
    kinds = [e["type"] for e in seen["events"]]
    assert "participant_left" not in kinds and "participant_joined" not in kinds, kinds
    assert seen["sameTile"] and seen["tiles"] == 1, seen
    # her microphone was never unmuted for Bob: republished muted, never a track_muted false
    published = [e for e in seen["events"] if e["type"] == "track_published"]
    assert published, kinds
    mics = [e for e in seen["events"] if e["type"] == "track_muted"]
    assert not [e for e in mics if not e["muted"]], mics
    assert seen["unmuted"] == 0 and seen["samples"] > 20, seen
    assert bob.evaluate(TILES)["Alice"]["hand"] == "1"  # still raised
    assert alice.locator("#mic-button .text").inner_text() == "Unmute"
    artefact(bob, "resumed")
    state = bob.evaluate(SEEN)["Alice"]
    assert state["mic"] and state["video"], state
    alice.click("#hand-button")
    alice.click("#mic-button")
    poll(bob, SEEN, lambda r: not r["Alice"]["mic"], what="Alice unmuted after the resume")


def test_a_dropped_socket_alone_keeps_the_connections(meeting):
    """Only the socket drops (a proxy's timeout, a network change): Alice's client makes it
    again keeping its peer connections (docs/protocol.md, Resuming: keep); Bob sees nothing
    happen: no track unpublished or published again, her video goes on, her hand stays up.
    What changed while she was away (Bob raised his hand) is on her page once she is back."""
    _, pages, _ = meeting
    alice, bob = pages["Alice"], pages["Bob"]
    sid = alice.evaluate("() => window.visio.session.me.sid")
    alice.click("#hand-button")
    poll(bob, TILES, lambda r: r["Alice"]["hand"] == "1", what="Alice's hand")
    assert bob.evaluate(WATCH, sid)
    # her socket drops; getting a token takes her 3 s (a slow network): she is away that long
    alice.evaluate(
        "() => { const s = window.visio.session; window.keptPcs = [s.publisher, s.subscriber];"
        " const token = s.getToken; s.getToken = async () => {"
        " await new Promise((r) => setTimeout(r, 3000)); s.getToken = token; return token(); };"
        " s.signal.ws.close(); }"
    )
    alice.wait_for_function("() => window.visio.session.state === 'reconnecting'", timeout=5000)
    bob.click("#hand-button")  # while she is away: the event is not for her
    alice.wait_for_function("() => window.visio.session.state === 'connected'", timeout=20000)
    poll(alice, TILES, lambda r: r["Bob"]["hand"] is not None, what="Bob's hand, raised meanwhile")
    bob.click("#hand-button")
    assert alice.evaluate(
        "() => { const s = window.visio.session;"
        " return window.keptPcs[0] === s.publisher && window.keptPcs[1] === s.subscriber; }"
    ), "Alice's peer connections were made again"
    assert alice.evaluate("() => window.visio.session.me.sid") == sid
    before = bob.evaluate(SEEN)["Alice"]["frames"]
    poll(bob, SEEN, lambda r: r["Alice"]["frames"] > before + 30, what="Alice's video goes on")
    seen = bob.evaluate(WATCHED, sid)
    assert seen["events"] == [] and seen["sameTile"], seen
    assert bob.evaluate(TILES)["Alice"]["hand"] == "1"
    # and the signalling works again: her hand goes down for Bob
    alice.click("#hand-button")
    poll(bob, TILES, lambda r: r["Alice"]["hand"] is None, what="Alice's hand lowered")


def test_a_locked_meeting_refuses_a_newcomer(meeting, browser):
    _, pages, url = meeting
    hana, alice = pages["Hana"], pages["Alice"]
    people_panel(hana)
    hana.click("#lock-switch")
    alice.locator("#lock-badge").wait_for(timeout=10000)
    alice.locator("#toasts").get_by_text("The meeting is locked").wait_for()
    artefact(alice, "lock-badge")
    assert hana.get_attribute("#lock-switch", "aria-checked") == "true"
    carol = new_page(browser, f"{url}Carol", "Carol")
    try:
        ended = carol.locator("#ended")
        ended.wait_for(timeout=20000)
        assert "This meeting is locked" in carol.locator("#ended-text").inner_text()
        artefact(carol, "locked")
        carol.wait_for_timeout(2500)  # and it does not keep trying
        assert carol.evaluate("() => window.visio.session") is None
        assert hana.locator("#count").inner_text() == "3 in the meeting"
    finally:
        carol.context.close()
    hana.click("#lock-switch")
    alice.locator("#lock-badge").wait_for(state="hidden", timeout=10000)
    hana.click("#people-button")


def test_a_host_removes_someone(meeting):
    _, pages, _ = meeting
    hana, alice, bob = pages["Hana"], pages["Alice"], pages["Bob"]
    people_panel(hana)
    hana.get_by_role("button", name="Remove Bob").click()
    confirm = hana.locator("#participant-list .confirm")
    assert confirm.inner_text() == "Remove Bob?"  # a second click, so that no slip removes
    assert bob.locator("#ended").is_hidden()
    confirm.click()
    bob.locator("#ended").wait_for(timeout=10000)
    assert bob.locator("#ended-text").inner_text() == "A host removed you from the meeting."
    artefact(bob, "removed")
    poll(alice, TILES, lambda r: "Bob" not in r, what="Bob gone for Alice")
    alice.locator("#count", has_text="2 in the meeting").wait_for()
    bob.wait_for_timeout(2500)  # Bob's client does not come back by itself
    assert bob.evaluate("() => window.visio.session") is None
    assert hana.locator("#count").inner_text() == "2 in the meeting"


STATIC = Path(__file__).resolve().parents[2] / "static"


def test_every_meeting_string_is_in_english_and_french():
    source = (STATIC / "meeting.js").read_text()
    keys = {k for arg in re.findall(r"\bt\(([^,)]*)", source) for k in re.findall(r"'(\w+)'", arg)}
    reactions = source.split("export const REACTIONS = {")[1].split("};")[0]
    keys |= {f"r_{name}" for name in re.findall(r"(\w+): '", reactions)}
    strings = (STATIC / "i18n.js").read_text()
    english, french = strings.split("\n  fr: {")
    assert len(keys) > 30 and {"r_party", "lockedNote", "raiseHand"} <= keys, keys
    for key in keys:
        assert re.search(rf"\b{key}: ", english), f"no English for {key}"
        assert re.search(rf"\b{key}: ", french), f"no French for {key}"
