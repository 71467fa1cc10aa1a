"""A participant whose network address changes keeps its session (issue 20), with Chromium and
the web client doing what they do by themselves.

Ann's Chromium runs in a network namespace of its own, joined to the server's by a link (as a
laptop on Wi-Fi); Ben's and Cid's run in the server's. In the middle of the meeting Ann's
address changes: the new one is added and the old one removed from her interface, as when a
laptop moves to another network. Her connections' path dies with the old address, and so
does her signalling socket: the web client makes the socket again, resuming her session with
her peer connections kept (docs/protocol.md, Resuming: ``keep``), and restarts ICE on both
(ice_restart); Chromium gathers on the new address, the server's checks find it, and everyone
sees and hears everyone again, on the same RTCPeerConnections, without Ann leaving the room
or the others seeing her leave."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.browser.conftest import ARGS, CHROMIUM, artefact, open_page
from tests.support import netns
from tests.support.browser import PATHS, REMOTE_MEDIA, advancing, everyone_meets, poll
from tests.support.impair import CLIENT_ADDRESS, SERVER_ADDRESS, linked_namespaces
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

NEW_ADDRESS = "198.18.17.3"

WATCH = """() => {
  const s = window.visio.session;
  window.watched = {states: [], restarts: [], pcs: [s.publisher, s.subscriber]};
  s.on('state', (x) => window.watched.states.push(x));
  s.on('ice_restart', (x) => window.watched.restarts.push(x.target));
}"""

WATCHED = """() => {
  const s = window.visio.session, w = window.watched;
  return {states: w.states, restarts: w.restarts,
          same: w.pcs[0] === s.publisher && w.pcs[1] === s.subscriber, sid: s.me.sid};
}"""


@pytest.fixture(scope="module")
def net():
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"the test makes network namespaces, but {reason}")
    with linked_namespaces(netns.unique_name("visio-move")) as n:
        yield n


def test_an_address_change_keeps_the_session(net):
    from playwright.sync_api import sync_playwright

    server = ServerProcess(
        host=SERVER_ADDRESS, extra=["--ice-address", SERVER_ADDRESS], netns=net.server
    )
    device = "imp-c"  # Ann's end of the link (tests/support/impair.py)
    try:
        with sync_playwright() as p:
            # http://198.18.17.1 is no secure context: the camera needs it to be treated as one
            args = [*ARGS, f"--unsafely-treat-insecure-origin-as-secure={server.url}"]
            browsers = {
                ns: p.chromium.launch(
                    executable_path=str(netns.wrapper(ns, CHROMIUM)), headless=True, args=args
                )
                for ns in (net.server, net.client)
            }
            url = f"{server.url}/r/moving?autojoin=1&lang=en&name="
            pages = {
                "Ann": open_page(browsers[net.client], url + "Ann", "Ann"),
                "Ben": open_page(browsers[net.server], url + "Ben", "Ben"),
                "Cid": open_page(browsers[net.server], url + "Cid", "Cid"),
            }
            ann = pages["Ann"]
            console: list[str] = []
            ann.on("console", lambda m: console.append(f"{time.monotonic():.1f} {m.text}"))
            for page in pages.values():
                everyone_meets(page, 2)
            before = ann.evaluate(PATHS)
            assert {t: v["address"] for t, v in before.items()} == {
                "publisher": CLIENT_ADDRESS,
                "subscriber": CLIENT_ADDRESS,
            }, before
            ann.evaluate(WATCH)
            sid = ann.evaluate(WATCHED)["sid"]
            restarts = server.metric("visio_ice_restarts_total")

            # Ann's laptop changes networks: a new address, the old one gone
            changed = time.monotonic()
            ip = ["ip", "-n", net.client, "addr"]
            subprocess.run([*ip, "add", f"{NEW_ADDRESS}/32", "dev", device], check=True)
            subprocess.run([*ip, "del", f"{CLIENT_ADDRESS}/24", "dev", device], check=True)

            after = poll(
                ann,
                PATHS,
                lambda r: (
                    all(
                        v["state"] == "connected" and v["address"] == NEW_ADDRESS
                        for v in r.values()
                    )
                    and len(r) == 2
                ),
                timeout=60,
                what="Ann's connections on her new address",
            )
            back = time.monotonic() - changed
            for name, page in pages.items():
                seen = page.evaluate(REMOTE_MEDIA)
                advancing(page, seen, f"{name}'s media after Ann's address changed")
                everyone_meets(page, 2, timeout=10)
            watched = ann.evaluate(WATCHED)
            print(f"Ann's paths {before} -> {after}: {back:.1f} s; {watched}")
            artefact(ann, "after-address-change")
            assert watched["same"], f"Ann's connections were replaced: {console}"
            # her signalling socket died with the address too: made again, alone
            assert watched["states"] in ([], ["reconnecting", "connected"]), watched
            assert {"publisher", "subscriber"} <= set(watched["restarts"]), watched
            assert watched["sid"] == sid
            assert server.metric("visio_ice_restarts_total") >= restarts + 2
            for browser in browsers.values():
                browser.close()
    finally:
        server.stop()
