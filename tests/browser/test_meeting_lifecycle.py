"""The web client in a real Chromium through a meeting's life: people leave, rejoin, share.

The other browser tests hold one meeting where nobody leaves and comes back. Here people do,
and every later negotiation must still succeed: after anyone leaves, the others' subscriber
connections carry released (inactive) m-sections, and Chromium rejects an offer whose
m-sections repeat an ``a=msid`` ("Duplicate a=msid lines detected"), after which nothing new
(a screen share, a newcomer, the end of a share) ever reaches that page.

Every check is on real media: a remote ``<video>`` with ``videoWidth > 0``, ``readyState >= 2``
and ``currentTime`` advancing, and the subscriber connection's ``inbound-rtp`` statistics for
that very track growing (``framesDecoded`` for video, ``bytesReceived`` for audio). Every page's
console is collected; a test fails as soon as any page logs a failed negotiation.

At most three pages run at once (four briefly in the first test): the machine has two cores.
"""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.browser.conftest import artefact, open_page
from tests.support.browser import REMOTE_MEDIA, poll, tile_of

pytestmark = pytest.mark.browser

# a resource the web client asks for and the server does not have (the /auth/me probe once was)
BAD_CONSOLE = ("negotiation failed", "Duplicate a=msid", "status of 404")

# What one page receives, per remote participant (by name) and per track (by track sid): the
# grid tiles' video and audio elements, the screen shares on the stage, and the subscriber
# connection's inbound-rtp statistics of every track the session maps to an m-section.
MEDIA = """async () => {
  const v = window.visio, s = v.session;
  const names = new Map([...v.participants.values()].map(
    p => [p.info.sid, p.info.name || p.info.identity]));
  const mine = [v.mine.cam, v.mine.mic, v.mine.screen].filter(Boolean).map(t => t.id);
  const videoOf = (el) => {
    const tr = el && el.srcObject && el.srcObject.getVideoTracks()[0];
    if (!tr) return null;
    return {w: el.videoWidth, t: el.currentTime, ready: el.readyState,
            live: tr.readyState === 'live', remote: !mine.includes(tr.id),
            track: el.dataset.track || ''};
  };
  const tiles = [...document.querySelectorAll('#grid .tile:not(.self)')].map(t => {
    const a = t.querySelector('audio');
    const at = a && a.srcObject && a.srcObject.getAudioTracks()[0];
    return {name: t.querySelector('.name').textContent, identity: t.dataset.identity,
            video: videoOf(t.querySelector('video')),
            audio: at ? {live: at.readyState === 'live', track: a.dataset.track || ''} : null};
  });
  const stage = [...document.querySelectorAll('#stage .tile')].map(t => ({
    screen: t.classList.contains('screen'),
    name: names.get(t.dataset.participant) || t.dataset.participant,
    track: t.dataset.track || '', video: videoOf(t.querySelector('video'))}));
  const inbound = {};
  const pc = s && s.subscriber;
  if (pc) for (const tr of pc.getTransceivers()) {
    const info = tr.mid != null && s.remote.get(tr.mid);
    if (!info) continue;
    const entry = {mid: tr.mid, kind: info.kind, source: info.source,
                   name: names.get(info.participant) || info.participant, frames: 0, bytes: 0};
    (await tr.receiver.getStats()).forEach(x => {
      if (x.type !== 'inbound-rtp') return;
      entry.frames += x.framesDecoded || 0;
      entry.bytes += x.bytesReceived || 0;
    });
    inbound[info.track] = entry;
  }
  return {me: s ? s.name : null, state: s ? s.state : 'none',
          ice: pc ? pc.connectionState : 'none', signaling: pc ? pc.signalingState : 'none',
          identity: sessionStorage.getItem('visio-identity'), tiles, stage, inbound,
          listed: [...document.querySelectorAll('#participant-list li .name')]
            .map(n => n.textContent)};
}"""


# -- predicates on what MEDIA returned ------------------------------------------------------
def _video_plays(r: dict, video: dict | None) -> bool:
    return bool(
        video
        and video["w"] > 0
        and video["ready"] >= 2
        and video["live"]
        and video["remote"]
        and r["inbound"].get(video["track"], {}).get("frames", 0) > 0
    )


def camera_of(r: dict, name: str) -> dict | None:
    """The one grid tile of ``name`` if its camera and microphone play, else None."""
    tiles = [t for t in r["tiles"] if t["name"] == name]
    if len(tiles) != 1:
        return None
    tile = tiles[0]
    audio = tile["audio"]
    if not (_video_plays(r, tile["video"]) and audio and audio["live"] and audio["track"]):
        return None
    if r["inbound"].get(audio["track"], {}).get("bytes", 0) <= 0:
        return None
    return tile


def screen_of(r: dict, name: str) -> dict | None:
    """The one screen share of ``name`` on the stage if it plays, else None."""
    shares = [s for s in r["stage"] if s["screen"]]
    if len(shares) != 1 or shares[0]["name"] != name or not _video_plays(r, shares[0]["video"]):
        return None
    return shares[0]


def camera_frames(r: dict) -> dict[str, int]:
    """Decoded frames of every camera a page receives, by track sid."""
    return {t: i["frames"] for t, i in r["inbound"].items() if i["source"] == "camera"}


def no_screen(r: dict) -> bool:
    """Nothing shared on the stage, and no screen share mapped to an m-section."""
    return not any(s["screen"] for s in r["stage"]) and not any(
        i["source"] == "screen_share" for i in r["inbound"].values()
    )


def tracks_advance(items, still=lambda key: False):
    """A poll check over ``items(report)``: name -> (track sid, video time, frames or bytes),
    or None while something is missing. True once every item advanced (frames or bytes; for
    video, its time too) since it was first seen with these same tracks; ``still(name)``: an
    item allowed not to grow (a muted microphone sends nothing)."""
    base: dict = {}

    def check(r):
        now = items(r)
        if now is None:
            return False
        if not base or {k: v[0] for k, v in base.items()} != {k: v[0] for k, v in now.items()}:
            base.clear()
            base.update(now)  # first sight of these tracks: they must advance from here
            return False
        return all(
            still(k)
            or (now[k][2] > base[k][2] and (k.startswith("mic:") or now[k][1] > base[k][1]))
            for k in now
        )

    return check


class Meeting:
    """Pages in one room, their console messages, and failure reports."""

    def __init__(self, server, browser, room: str) -> None:
        self.server = server
        self.browser = browser
        self.room = room
        self.pages: dict[str, object] = {}
        self.console: list[tuple[str, str, str]] = []  # (page, type, text)
        self.started = time.monotonic()

    def url(self, name: str) -> str:
        return f"{self.server.url}/r/{self.room}?name={name}&autojoin=1&lang=en"

    def join(self, name: str):
        """A new browser context and page for ``name``, joined (autojoin) to the room."""
        page = open_page(self.browser, "about:blank", name)
        page.on("console", lambda msg, n=name: self.console.append((n, msg.type, msg.text)))
        page.on("pageerror", lambda exc, n=name: self.console.append((n, "pageerror", str(exc))))
        page.goto(self.url(name))
        self.pages[name] = page
        return page

    def leave(self, name: str, close: bool = True) -> None:
        """``name`` clicks Leave (and, with ``close``, closes the browser context)."""
        page = self.pages[name]
        page.click("#leave-button")
        page.locator("#ended").wait_for(state="visible", timeout=5000)
        if close:
            page.context.close()
            del self.pages[name]

    def close(self) -> None:
        for page in self.pages.values():
            with contextlib.suppress(Exception):
                page.context.close()
        self.pages.clear()

    # -- checks --------------------------------------------------------------------------
    def bad_console(self) -> list[tuple[str, str, str]]:
        return [m for m in self.console if any(b in m[2] for b in BAD_CONSOLE)]

    def assert_clean(self) -> None:
        bad = self.bad_console()
        assert not bad, "pages logged failed negotiations or missing resources:\n" + "\n".join(
            f"  [{n}] {kind}: {text}" for n, kind, text in bad
        )

    def media(self, name: str) -> dict:
        return self.pages[name].evaluate(MEDIA)

    def poll(self, name: str, check, what: str, timeout: float = 30.0) -> dict:
        """Poll ``name``'s MEDIA until ``check`` holds; fail at once on a failed negotiation."""

        def guarded(r):
            self.assert_clean()
            return check(r)

        return poll(self.pages[name], MEDIA, guarded, timeout, f"{self.room} {name} {what}")

    def wait_plays(
        self,
        viewer: str,
        cameras: list[str] = (),
        screens: list[str] = (),
        exclude: set[str] = frozenset(),
        timeout: float = 30.0,
    ) -> dict:
        """Wait until ``viewer`` plays the camera and microphone of each of ``cameras`` and the
        screen share of each of ``screens`` (not one of the track sids in ``exclude``), with
        video time, decoded frames and audio bytes advancing between two polls."""

        def items(r):
            out = {}
            for name in cameras:
                tile = camera_of(r, name)
                if tile is None:
                    return None
                v, a = tile["video"], tile["audio"]
                out[f"camera:{name}"] = (v["track"], v["t"], r["inbound"][v["track"]]["frames"])
                out[f"mic:{name}"] = (a["track"], 0, r["inbound"][a["track"]]["bytes"])
            for name in screens:
                share = screen_of(r, name)
                if share is None or share["track"] in exclude:
                    return None
                v = share["video"]
                out[f"screen:{name}"] = (v["track"], v["t"], r["inbound"][v["track"]]["frames"])
            return out

        check = tracks_advance(items)
        # (also the failure screenshot's file name: no quotes, colons or commas)
        what = " and ".join(
            [
                *([f"camera+mic of {'+'.join(cameras)}"] if cameras else []),
                *([f"screen of {'+'.join(screens)}"] if screens else []),
            ]
        )
        what = f"plays {what}"
        return self.poll(viewer, check, what, timeout)

    @contextlib.contextmanager
    def reporting(self, label: str):
        """On failure: what every page saw, its console, a screenshot, and the server's log."""
        try:
            yield self
        except BaseException:
            print(
                f"\n===== {label} ({self.room}) failed after "
                f"{time.monotonic() - self.started:.1f} s ====="
            )
            for name, page in self.pages.items():
                if page.is_closed():
                    continue
                try:
                    print(f"--- {name} media: {page.evaluate(MEDIA)}")
                    print(f"--- {name} remote media: {page.evaluate(REMOTE_MEDIA)}")
                    artefact(page, f"lifecycle-{label}-{name}-failure")
                except Exception as exc:  # noqa: BLE001 - report what can be reported
                    print(f"--- {name}: could not inspect the page: {exc}")
            print("--- console messages:")
            for n, kind, text in self.console:
                print(f"  [{n}] {kind}: {text}")
            print(f"--- server output:\n{self.server.output()}")
            raise
        finally:
            self.close()


@pytest.fixture
def meeting(server, browser, request):
    """A factory of meetings, all closed at the end of the test."""
    made: list[Meeting] = []

    def make(room: str) -> Meeting:
        m = Meeting(server, browser, room)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()
        print(f"[{request.node.name}] {m.room}: {time.monotonic() - m.started:.1f} s")


def everyone_plays_everyone(m: Meeting, names: list[str]) -> None:
    for name in names:
        m.wait_plays(name, cameras=[n for n in names if n != name], timeout=40)


@pytest.mark.timeout(150)
def test_leave_then_share_then_newcomer(meeting):
    m = meeting("lifecycle-leave-share")
    with m.reporting("leave-share"):
        for name in ("Alice", "Bob", "Carol"):
            m.join(name)
        everyone_plays_everyone(m, ["Alice", "Bob", "Carol"])

        # Carol leaves: her tile goes from the others' pages, the two others still play
        m.leave("Carol")
        for name in ("Alice", "Bob"):
            tile_of(m.pages[name], "Carol").wait_for(state="detached", timeout=10000)
        m.wait_plays("Alice", cameras=["Bob"])
        m.wait_plays("Bob", cameras=["Alice"])

        # then Bob shares his screen and Dana joins
        bob = m.pages["Bob"]
        bob.click("#share-button")
        bob.wait_for_function(
            "() => document.querySelector('#share-button').dataset.pressed === 'true'",
            timeout=10000,
        )
        m.join("Dana")
        m.wait_plays("Alice", cameras=["Bob", "Dana"], screens=["Bob"])
        m.wait_plays("Bob", cameras=["Alice", "Dana"])
        m.wait_plays("Dana", cameras=["Alice", "Bob"], screens=["Bob"], timeout=40)
        artefact(m.pages["Dana"], "lifecycle-Dana-sees-Bob-share")
        artefact(m.pages["Alice"], "lifecycle-Alice-sees-Bob-share-and-Dana")

        # Bob stops sharing: the share leaves everyone's stage, nothing stays frozen there
        bob.click("#share-button")
        for name in ("Alice", "Bob", "Dana"):
            m.poll(name, no_screen, "share removed from the stage", timeout=15)
        assert bob.get_attribute("#share-button", "data-pressed") == "false"
        # and the cameras still play
        m.wait_plays("Dana", cameras=["Alice", "Bob"])
        m.wait_plays("Alice", cameras=["Bob", "Dana"])
        artefact(m.pages["Alice"], "lifecycle-Alice-after-share-stopped")
        m.assert_clean()


@pytest.mark.timeout(150)
def test_leave_and_rejoin_with_the_same_identity(meeting):
    m = meeting("lifecycle-rejoin")
    with m.reporting("rejoin"):
        for name in ("Alice", "Bob", "Carol"):
            m.join(name)
        everyone_plays_everyone(m, ["Alice", "Bob", "Carol"])
        bob = m.pages["Bob"]
        identity = bob.evaluate("() => sessionStorage.getItem('visio-identity')")
        assert identity and identity.startswith("guest-"), identity
        first = {n: m.media(n) for n in ("Alice", "Carol")}
        old_video = {n: camera_of(r, "Bob")["video"]["track"] for n, r in first.items()}

        def back(how: str) -> None:
            """Bob is back: one tile for him on each other page, with his new media."""
            assert bob.evaluate("() => sessionStorage.getItem('visio-identity')") == identity, how
            for name in ("Alice", "Carol"):
                r = m.wait_plays(name, cameras=["Bob"], timeout=40)
                mine = [t for t in r["tiles"] if t["name"] == "Bob"]
                assert len(mine) == 1, (how, name, r["tiles"])
                assert mine[0]["identity"] == identity, (how, name, mine)
                assert mine[0]["video"]["track"] != old_video[name], (how, name, "old track")
                assert len(r["tiles"]) == 2, (how, name, [t["name"] for t in r["tiles"]])
                assert r["listed"].count("Bob") == 1, (how, name, r["listed"])
            r = m.wait_plays("Bob", cameras=["Alice", "Carol"], timeout=40)
            assert sorted(t["name"] for t in r["tiles"]) == ["Alice", "Carol"], (how, r["tiles"])

        # 1. Bob reloads the page (autojoin): same identity, from sessionStorage
        bob.reload()
        back("reload")
        old_video = {n: camera_of(m.media(n), "Bob")["video"]["track"] for n in ("Alice", "Carol")}
        artefact(m.pages["Alice"], "lifecycle-Alice-after-Bob-reloaded")

        # 2. Bob clicks Leave, the others see him go, then he clicks "Join again"
        m.leave("Bob", close=False)
        for name in ("Alice", "Carol"):
            tile_of(m.pages[name], "Bob").wait_for(state="detached", timeout=10000)
            m.wait_plays(name, cameras=[n for n in ("Alice", "Carol") if n != name])
        with bob.expect_navigation():
            bob.click("#rejoin-button")
        back("rejoin button")
        artefact(m.pages["Carol"], "lifecycle-Carol-after-Bob-rejoined")
        m.assert_clean()


@pytest.mark.timeout(150)
def test_screen_share_started_and_stopped_again_and_again(meeting):
    m = meeting("lifecycle-share-cycles")
    with m.reporting("share-cycles"):
        names = ["Alice", "Bob", "Carol"]
        for name in names:
            m.join(name)
        everyone_plays_everyone(m, names)
        alice = m.pages["Alice"]
        frames = {n: camera_frames(m.media(n)) for n in names}
        shares: set[str] = set()

        def cameras_keep_playing(when: str) -> None:
            for n in names:
                before = frames[n]
                r = m.poll(
                    n,
                    lambda r, b=before: (
                        set(camera_frames(r)) == set(b)
                        and all(camera_frames(r)[t] > f for t, f in b.items())
                    ),
                    f"cameras keep playing {when}",
                    timeout=15,
                )
                frames[n] = camera_frames(r)

        for cycle in range(1, 4):
            alice.click("#share-button")
            for n in ("Bob", "Carol"):
                r = m.wait_plays(n, screens=["Alice"], exclude=shares, timeout=30)
                track = screen_of(r, "Alice")["track"]
                if n == "Bob":
                    share = track
                assert track == share, (cycle, n, track, share)
            if cycle == 1:
                artefact(m.pages["Bob"], "lifecycle-Bob-sees-Alice-share-1")
            shares.add(share)
            cameras_keep_playing(f"share {cycle}")

            alice.click("#share-button")
            assert alice.get_attribute("#share-button", "data-pressed") == "false"
            for n in ("Bob", "Carol"):
                m.poll(n, no_screen, f"share {cycle} removed from the stage", timeout=15)
            cameras_keep_playing(f"after share {cycle}")
        assert len(shares) == 3, shares
        for n in names:
            m.wait_plays(n, cameras=[x for x in names if x != n])
        artefact(m.pages["Carol"], "lifecycle-Carol-after-three-shares")
        m.assert_clean()
