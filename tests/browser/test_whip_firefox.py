"""WHIP ingest and WHEP playback (signaling/whip.py, docs/whip.md) with Firefox.

Firefox is Debian's firefox-esr with its default preferences (apart from fake devices and what
this sandbox needs: tests/browser/firefox/bridge.mjs), driven over WebDriver BiDi as in
tests/browser/test_firefox.py, in a plain same-origin page of the server (no web client: only
``fetch`` and ``RTCPeerConnection``, as docs/whip.md shows a player). Its offers are Firefox's
own: its bundle policy, host candidates under mDNS names, every candidate in the offer once
gathering is complete and each section closed by ``a=end-of-candidates``, no trickle. The
server's answer must carry the server's candidates (Firefox gets no others).

- WHEP, the player first: Firefox offers recvonly video and audio in an empty room and applies
  the answer (every section sending from the start); only then does a Chromium page of the web
  client join with its fake camera and microphone. Firefox must play that camera (its track
  takes a free section of the first answer, with no renegotiation) and receive its audio; then
  it DELETEs its session (200, then 404).
- WHIP: Firefox publishes its fake camera and microphone (sendonly transceivers) and a Chromium
  page of the web client in the room plays the video and receives the audio; when Firefox
  DELETEs its session the page sees the participant go.

Firefox gathers no loopback candidates, so the server and both browsers run in a network
namespace the test makes (tests/support/firefox_netns.py), as test_firefox.py does. The page
scripts are Chromium's too (tests/support/whip_pages.py).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.browser.conftest import ARTIFACTS, artefact, open_page
from tests.browser.firefox import FirefoxError, FirefoxPage, missing_requirements
from tests.browser.test_whip_browser import PARTICIPANT, PUBLISHING, until, watch_playing
from tests.support import netns
from tests.support.firefox_netns import netns_fixtures
from tests.support.whip_pages import HTTP_DELETE, HTTP_STATE, WHEP_PLAY, WHIP_PUBLISH, with_arg

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements())),
]


# Firefox gathers no loopback ICE candidates: the server and both browsers run in a
# network namespace the module makes
namespace, server, browser = netns_fixtures("visio-ffwhip")


KEPT = (
    "m=",
    "a=mid:",
    "a=group:",
    "a=bundle-only",
    "a=sendrecv",
    "a=sendonly",
    "a=recvonly",
    "a=inactive",
    "a=msid:",
    "a=setup:",
    "a=ice-lite",
    "a=rtcp-mux",
    "a=rid:",
    "a=simulcast:",
    "a=end-of-candidates",
    "a=candidate:",
)


def sdp_lines(sdp: str) -> str:
    """The lines of ``sdp`` that matter here (sections, directions, bundling, candidates)."""
    lines = [line for line in sdp.splitlines() if line.startswith(KEPT)]
    return "\n".join(lines) or "(empty)"


def exchange_report(made: dict) -> str:
    return (
        f"gathering complete: {made['gathered']} ({made['gatherSeconds']:.1f} s); "
        f"POST {made['status']} {made['type']}, Location {made['location']}\n"
        f"setRemoteDescription error: {made['error']}\n"
        f"--- Firefox's offer (excerpt):\n{sdp_lines(made['offer'])}\n"
        f"--- the server's answer (excerpt):\n{sdp_lines(made['answer'])}\n"
        f"--- connection log: {made['log']}"
    )


def check_exchange(made: dict, kind: str, room: str) -> None:
    """The offer went out complete, the server answered 201, Firefox took the answer (both
    SDPs are saved as test artefacts)."""
    ARTIFACTS.mkdir(exist_ok=True)
    for which in ("offer", "answer"):
        (ARTIFACTS / f"{kind}-firefox-{which}.sdp").write_text(made[which])
    report = exchange_report(made)
    assert made["gathered"], f"Firefox's ICE gathering never completed\n{report}"
    assert made["status"] == 201, f"POST /{kind}/{room} answered {made['status']}\n{report}"
    assert made["location"].startswith(f"/{kind}/{room}/"), report
    assert made["type"].startswith("application/sdp"), report
    assert made["applied"], f"Firefox refused the server's answer\n{report}"
    assert "a=candidate:" in made["offer"], f"no candidate in Firefox's offer\n{report}"
    # the server's answer must carry its candidates (docs/whip.md): the client trickles
    # nothing and gets none later. Firefox's complete offer ends each section with
    # a=end-of-candidates after host candidates under mDNS names that no one here resolves.
    assert "a=candidate:" in made["answer"], (
        f"the server answered Firefox's {kind.upper()} offer without any ICE candidate (port 9, "
        f"only a=end-of-candidates): Firefox has no address to reach it, ICE will fail.\n"
        f"Firefox's offer: {mdns_and_end(made['offer'])}\n{report}"
    )


def mdns_and_end(sdp: str) -> str:
    """What of an offer's candidates matters to its answer: mDNS names, end-of-candidates."""
    candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
    mdns = [line for line in candidates if ".local " in line]
    ends = sdp.count("a=end-of-candidates")
    return (
        f"{len(candidates)} candidates, {len(mdns)} of them mDNS .local names; "
        f"a=end-of-candidates in {ends} of {sdp.count(chr(10) + 'm=')} sections"
    )


def directions(sdp: str) -> list[str]:
    """Each media section of ``sdp`` as ``kind direction``."""
    out: list[str] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            out.append(line[2:].split(" ")[0])
        elif out and line.startswith(("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")):
            out[-1] += " " + line[2:].strip()
    return out


def open_firefox(server, name: str) -> FirefoxPage:
    """A Firefox page at a plain page of the server (same origin for fetch), in the namespace."""
    return FirefoxPage(f"{server.url}/healthz", name=name, prefix=netns.prefix(server.netns))


def test_firefox_plays_over_whep_before_the_publisher_comes(server, browser):
    room = f"whep-ff-{uuid.uuid4().hex[:8]}"
    player_identity = "firefox-whep"
    firefox = open_firefox(server, "firefox-whep")
    camera = None
    made: dict = {}
    state: dict = {}

    def explain() -> str:
        with_shots = []
        for page, shot in ((firefox, "failure-whep-firefox"), (camera, "failure-whep-camera")):
            if page is not None:
                try:
                    artefact(page, shot)
                    with_shots.append(shot)
                except Exception as exc:  # noqa: BLE001 - a report, not a check
                    with_shots.append(f"{shot}: {exc}")
        return (
            f"--- Firefox {firefox.version} saw: {json.dumps(state, indent=1)}\n"
            f"{exchange_report(made) if made else ''}\n"
            f"--- Firefox console (last 15): {firefox.console[-15:]}\n"
            f"--- screenshots: {with_shots}\n--- server log:\n{server.output(3000)}"
        )

    def watch(check):
        def once():
            state.clear()
            state.update(firefox.evaluate(HTTP_STATE))
            return dict(state) if check(state) else None

        return once

    try:
        # the player, in a room where nobody publishes yet
        token = server.token(room, player_identity, "Firefox WHEP")
        made.update(firefox.evaluate(with_arg(WHEP_PLAY, {"room": room, "token": token}), 40))
        check_exchange(made, "whep", room)
        answered = directions(made["answer"])
        assert answered == ["video sendonly", "audio sendonly"], (
            f"{answered}\n{exchange_report(made)}"
        )
        print(
            f"\n[firefox {firefox.version}] WHEP offer {directions(made['offer'])} "
            f"answered {answered}, gathering {made['gatherSeconds']:.1f} s, "
            f"ontrack: {made['ontracks']}"
        )
        until(
            watch(lambda s: s["connection"] == "connected"),
            "Firefox's WHEP connection up in the empty room",
            explain,
            timeout=20,
        )
        assert state["frames"] == 0 and state["audio_packets"] == 0, explain()

        # only now does a publisher come: a Chromium page of the web client
        camera = open_page(
            browser, f"{server.url}/r/{room}?name=Camera&autojoin=1&lang=en", "whep-camera"
        )
        sending: dict = {}

        def publishing():
            sending.update(camera.evaluate(PUBLISHING))
            return (
                sending["publisher"] == "connected"
                and sending["video_bytes"] > 0
                and sending["audio_bytes"] > 0
            )

        until(publishing, "the Chromium camera page publishing", lambda: f"{sending}\n{explain()}")
        joined = time.monotonic()

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
            "Firefox plays the camera's video and receives its audio over WHEP",
            explain,
            timeout=40,
        )
        took = time.monotonic() - joined
        after = until(
            watch(
                lambda s: (
                    s["t"] > first["t"]
                    and s["frames"] > first["frames"] + 10
                    and s["audio_packets"] > first["audio_packets"] + 20
                )
            ),
            "Firefox's WHEP video advancing and its audio packets growing",
            explain,
        )
        assert after["connection"] == "connected" and not after["paused"], explain()
        assert after["video_tracks"] == 1, explain()
        artefact(firefox, "whep-firefox-player")
        artefact(camera, "whep-firefox-camera")
        print(
            f"[firefox] WHEP plays {after['w']}x{after['h']} {took:.1f} s after the camera "
            f"published, time {first['t']:.2f} -> {after['t']:.2f} s, {after['frames']} frames "
            f"decoded, {after['audio_packets']} audio packets, pair {after['pair']}"
        )

        # the camera page lists the player while it plays; it goes with its DELETE
        until(
            lambda: player_identity in camera.evaluate(PARTICIPANT, player_identity)["others"],
            "the camera page listing the WHEP player",
            explain,
            timeout=10,
        )
        deleted = firefox.evaluate(HTTP_DELETE)
        assert (deleted["first"], deleted["second"]) == (200, 404), f"{deleted}\n{explain()}"
        until(
            lambda: player_identity not in camera.evaluate(PARTICIPANT, player_identity)["others"],
            "the WHEP player leaving the camera page's meeting",
            explain,
            timeout=10,
        )
    except FirefoxError as exc:
        pytest.fail(f"{exc}\n{explain()}", pytrace=False)
    finally:
        firefox.close()
        if camera is not None:
            camera.context.close()


def test_chromium_watches_firefox_publishing_over_whip(server, browser):
    room = f"whip-ff-{uuid.uuid4().hex[:8]}"
    encoder = "firefox-whip"
    encoder_name = "Firefox WHIP"
    firefox = open_firefox(server, "firefox-whip")
    viewer = None
    made: dict = {}
    seen: dict = {}
    sent: dict = {}

    def explain() -> str:
        shots = []
        for page, shot in ((firefox, "failure-whip-firefox"), (viewer, "failure-whip-viewer")):
            if page is not None:
                try:
                    artefact(page, shot)
                    shots.append(shot)
                except Exception as exc:  # noqa: BLE001 - a report, not a check
                    shots.append(f"{shot}: {exc}")
        try:
            sent.update(firefox.evaluate(HTTP_STATE))
        except Exception as exc:  # noqa: BLE001
            sent["error"] = str(exc)
        return (
            f"--- Chromium viewer saw: {json.dumps(seen, indent=1)}\n"
            f"--- Firefox {firefox.version} sending: {json.dumps(sent, indent=1)}\n"
            f"{exchange_report(made) if made else ''}\n"
            f"--- Firefox console (last 15): {firefox.console[-15:]}\n"
            f"--- screenshots: {shots}\n--- server log:\n{server.output(3000)}"
        )

    try:
        # a Chromium page of the web client is in the room first
        viewer = open_page(
            browser, f"{server.url}/r/{room}?name=Viewer&autojoin=1&lang=en", "whip-viewer"
        )
        until(
            lambda: viewer.evaluate(PUBLISHING)["publisher"] == "connected",
            "the Chromium viewer in the room",
            explain,
            timeout=30,
        )

        # Firefox publishes its camera and microphone over WHIP
        token = server.token(room, encoder, encoder_name)
        made.update(firefox.evaluate(with_arg(WHIP_PUBLISH, {"room": room, "token": token}), 40))
        check_exchange(made, "whip", room)
        offered, answered = directions(made["offer"]), directions(made["answer"])
        assert sorted(offered) == ["audio sendonly", "video sendonly"], offered
        assert sorted(answered) == ["audio recvonly", "video recvonly"], (
            f"{answered}\n{exchange_report(made)}"
        )
        print(
            f"\n[firefox {firefox.version}] WHIP offer {offered} answered {answered}, "
            f"gathering {made['gatherSeconds']:.1f} s, camera {made['camera']}"
        )

        def firefox_sending():
            sent.clear()
            sent.update(firefox.evaluate(HTTP_STATE))
            ok = sent["connection"] == "connected" and min(sent["sent"].values()) > 0
            return dict(sent) if ok else None

        until(firefox_sending, "Firefox's WHIP connection up and sending", explain, timeout=20)

        def look(check):
            def once():
                seen.clear()
                seen.update(viewer.evaluate(PARTICIPANT, encoder))
                return dict(seen) if check(seen) else None

            return once

        first, after = watch_playing(viewer, encoder, seen, explain, "Firefox's")
        assert after["name"] and after["name"].startswith(encoder_name), explain()
        assert sorted(after["mids"].values()) == ["audio", "video"], explain()
        artefact(firefox, "whip-firefox-encoder")
        artefact(viewer, "whip-firefox-in-chromium")
        print(
            f"[chromium] from Firefox over WHIP: {after['w']}x{after['h']}, video time "
            f"{first['t']:.2f} -> {after['t']:.2f} s, {after['frames']} frames decoded, "
            f"{after['audio_packets']} audio packets; Firefox's pair {sent.get('pair')}"
        )

        # Firefox ends its session: the page sees the participant go
        deleted_at = time.monotonic()
        deleted = firefox.evaluate(HTTP_DELETE)
        assert (deleted["first"], deleted["second"]) == (200, 404), f"{deleted}\n{explain()}"
        until(
            look(lambda s: not s["present"] and not s["mids"]),
            "Firefox's tile and tracks leaving the Chromium page",
            explain,
            timeout=10,
        )
        print(f"[chromium] Firefox gone {time.monotonic() - deleted_at:.1f} s after its DELETE")
        assert f"room {room}: {first['sid']} left (left)" in server.output(None), explain()
    except FirefoxError as exc:
        pytest.fail(f"{exc}\n{explain()}", pytrace=False)
    finally:
        firefox.close()
        if viewer is not None:
            viewer.context.close()
