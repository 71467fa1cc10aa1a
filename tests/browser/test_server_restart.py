"""The server process restarts under a meeting of three Chromium pages (an operator's Ctrl-C or
SIGTERM, then the same command again on the same ports), three times. The new process knows
nobody: every client must notice, show the outage, and come back into the room by itself, and
the meeting must then be whole again on every page:

- each page is in the room (state connected, no outage banner, no "ended" screen) with one
  tile for each of the two others;
- it plays the two others' cameras (decoded frames and video time advancing) and receives
  their microphones (an audio track whose inbound bytes grow);
- the mute icons tell the truth: Carol, muted before the first restart, shows muted on the
  two other pages, Alice and Bob do not;
- while the server goes away, no page says anybody *left* (no "… left" toast): the people did
  not leave, the server did.

The pages' consoles and the servers' logs are printed on failure, with a screenshot per page.
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from tests.browser.conftest import artefact
from tests.browser.test_meeting_lifecycle import Meeting, _video_plays, tracks_advance
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

NAMES = ("Alice", "Bob", "Carol")
#: how the server stops, and for how long it stays down: Ctrl-C, SIGTERM (systemd, docker
#: stop), Ctrl-C, and a crash (nothing said to the clients: their sockets just drop, they try to
#: resume, keeping their connections, and the new process refuses) that lasts 8 s
RESTARTS = (
    (signal.SIGINT, 0.0),
    (signal.SIGTERM, 0.0),
    (signal.SIGINT, 0.0),
    (signal.SIGKILL, 8.0),
)

# The mute flag of every remote tile, by name; the toasts seen since the page was watched
# (WATCH_TOASTS); the outage banner; the session's state.
SHOWN = """() => {
  const tiles = {};
  for (const t of document.querySelectorAll('#grid .tile:not(.self)')) {
    const name = t.querySelector('.name').textContent;
    tiles[name] = (tiles[name] || []).concat([t.dataset.micMuted === 'true']);
  }
  const s = window.visio.session;
  return {tiles, toasts: window.__toasts || [], outage: !document.querySelector('#outage').hidden,
          ended: !document.querySelector('#ended').hidden, state: s ? s.state : 'none',
          selfMuted: document.querySelector('#mic-button .text').textContent === 'Unmute'};
}"""

# Records every toast the page shows from now on (they vanish after a few seconds).
WATCH_TOASTS = """() => {
  window.__toasts = [];
  if (window.__toastWatch) return;
  window.__toastWatch = new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) window.__toasts.push(n.textContent);
  });
  window.__toastWatch.observe(document.querySelector('#toasts'), {childList: true});
}"""


@pytest.fixture
def restartable():
    """A server this test stops and starts again; the last one is stopped at the end."""
    holder = {"server": ServerProcess()}
    yield holder
    holder["server"].stop()


def mute_icons_true(shown: dict, viewer: str, muted: set[str]) -> bool:
    """One tile for each other participant on ``viewer``'s page, muted exactly when they are."""
    others = [n for n in NAMES if n != viewer]
    return sorted(shown["tiles"]) == sorted(others) and all(
        shown["tiles"][n] == [n in muted] for n in others
    )


def plays(m: Meeting, viewer: str, muted: set[str], timeout: float) -> dict:
    """Wait until ``viewer`` plays the camera of each other participant (decoded frames and
    video time advancing between two polls) and receives their microphone: a live audio track
    on an m-section of the subscriber connection, its inbound bytes growing (a muted one's
    sends nothing: its track must be there, not growing)."""
    others = [n for n in NAMES if n != viewer]

    def items(r):
        out = {}
        for name in others:
            tiles = [t for t in r["tiles"] if t["name"] == name]
            if len(tiles) != 1:
                return None
            video, audio = tiles[0]["video"], tiles[0]["audio"]
            if not _video_plays(r, video) or not (audio and audio["live"] and audio["track"]):
                return None
            if audio["track"] not in r["inbound"]:
                return None
            out[f"camera:{name}"] = (
                video["track"],
                video["t"],
                r["inbound"][video["track"]]["frames"],
            )
            out[f"mic:{name}"] = (audio["track"], 0, r["inbound"][audio["track"]]["bytes"])
        return out

    check = tracks_advance(items, still=lambda k: k.startswith("mic:") and k[4:] in muted)
    return m.poll(viewer, check, f"plays camera+mic of {'+'.join(others)}", timeout)


def whole_again(m: Meeting, muted: set[str], when: str, timeout: float = 45.0) -> None:
    """Every page is in the room, plays the two others' camera and microphone (advancing), and
    shows the true mute state of each."""
    started = time.monotonic()
    for name in NAMES:
        left = max(timeout - (time.monotonic() - started), 5.0)
        m.poll(
            name,
            lambda r: r["state"] == "connected",
            f"back in the room {when}",
            timeout=left,
        )
    for name in NAMES:
        left = max(timeout - (time.monotonic() - started), 10.0)
        plays(m, name, muted, timeout=left)
    for name in NAMES:
        page = m.pages[name]
        deadline = time.monotonic() + 10
        shown = page.evaluate(SHOWN)
        while not mute_icons_true(shown, name, muted) and time.monotonic() < deadline:
            page.wait_for_timeout(300)
            shown = page.evaluate(SHOWN)
        assert mute_icons_true(shown, name, muted), (when, name, shown)
        assert not shown["outage"] and not shown["ended"], (when, name, shown)
        assert shown["selfMuted"] == (name in muted), (when, name, shown)
    print(f"meeting whole again {when} in {time.monotonic() - started:.1f} s")


def test_meeting_survives_server_restarts(restartable, browser):
    m = Meeting(restartable["server"], browser, f"restart-{uuid.uuid4().hex[:6]}")
    muted = {"Carol"}
    with m.reporting("server-restart"):
        for name in NAMES:
            m.join(name)
        for name in NAMES:
            m.wait_plays(name, cameras=[n for n in NAMES if n != name], timeout=45)
        carol = m.pages["Carol"]
        carol.click("#mic-button")
        whole_again(m, muted, "before any restart")
        artefact(m.pages["Alice"], "restart-0-Alice")

        for restart, (sig, down) in enumerate(RESTARTS, 1):
            for page in m.pages.values():
                page.evaluate(WATCH_TOASTS)
            old = restartable["server"]
            started = time.monotonic()
            old.stop(sig)
            # the pages show the outage (not people leaving)
            for page in m.pages.values():
                page.locator("#outage").wait_for(state="visible", timeout=10000)
            shown = {n: p.evaluate(SHOWN) for n, p in m.pages.items()}
            for name, s in shown.items():
                assert sorted(s["tiles"]) == sorted(n for n in NAMES if n != name), (
                    f"restart {restart}: tiles gone from {name}'s page during the outage",
                    s,
                )
            for name, page in m.pages.items():  # an earlier outage's toast is not left up
                toasts = page.locator("#toasts p").all_inner_texts()
                assert "Reconnected" not in toasts, (restart, name, toasts)
            artefact(m.pages["Bob"], f"restart-{restart}-outage-Bob")
            time.sleep(down)
            new = old.again()
            restartable["server"] = m.server = new
            print(
                f"restart {restart} ({signal.Signals(sig).name}): server back after "
                f"{time.monotonic() - started:.1f} s"
            )
            whole_again(m, muted, f"after restart {restart}")
            for name, page in m.pages.items():
                toasts = page.evaluate(SHOWN)["toasts"]
                # nobody left, nobody new came: no notice says otherwise
                news = [t for t in toasts if t.endswith((" left", " joined"))]
                assert not news, (restart, name, toasts)
            for name in NAMES:
                artefact(m.pages[name], f"restart-{restart}-{name}")
        # Carol's microphone, muted all along, is heard once she unmutes
        carol.click("#mic-button")
        whole_again(m, set(), "after Carol unmuted")
        # Bob leaves, muted; "Join again" takes him back into the meeting (not to the lobby)
        bob = m.pages["Bob"]
        for name in ("Alice", "Carol"):
            m.pages[name].evaluate(WATCH_TOASTS)
        bob.click("#mic-button")
        bob.click("#leave-button")
        bob.locator("#ended").wait_for(state="visible", timeout=5000)
        bob.wait_for_timeout(4500)  # away longer than a blip: his leave and return are news
        with bob.expect_navigation():
            bob.click("#rejoin-button")
        bob.locator("#room").wait_for(state="visible", timeout=15000)
        assert bob.locator("#lobby").is_hidden()
        whole_again(m, {"Bob"}, "after Bob clicked Join again")
        artefact(bob, "restart-Bob-joined-again")
        # the others were told, though he was among those back after the restarts
        for name in ("Alice", "Carol"):
            told = m.pages[name].evaluate(SHOWN)["toasts"]
            assert "Bob left" in told and "Bob joined" in told, (name, told)
        m.assert_clean()
