"""ICE restarts (issue 20: "a peer whose address changes keeps its session"), with Chromium.

Three people meet through the server's one UDP port (and, once, on ports of its own per
connection). Ann's network "changes": her web client
restarts ICE on both of its connections (``restartIce``: what it does by itself when a
connection stays disconnected), the publisher's by its own offer, the subscriber's by asking
the server (``ice_restart``). Chromium gathers new candidates on new sockets, so the server
sees Ann at new addresses; the test checks that it is the same two RTCPeerConnections, with
new local ports, that nobody saw Ann leave or join, and that everyone goes on seeing and
hearing everyone, twice over."""

from __future__ import annotations

import pytest

from tests.browser.conftest import artefact, open_page
from tests.support.browser import PATHS, REMOTE_MEDIA, advancing, everyone_meets, poll
from tests.support.server import ServerProcess, free_udp_ports

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

RESTART = """() => {
  const s = window.visio.session;
  if (!window.states) { window.states = []; s.on('state', (x) => window.states.push(x)); }
  window.sameConnections = [s.publisher, s.subscriber];
  return [s.restartIce('publisher', s.publisher), s.restartIce('subscriber', s.subscriber)];
}"""

SAME = """() => {
  const s = window.visio.session;
  return window.sameConnections[0] === s.publisher && window.sameConnections[1] === s.subscriber
    && window.states.length === 0;
}"""


ALLOW_ANOTHER = """() => {
  const r = window.visio.session.iceRestarts;
  r.publisher = r.subscriber = 0;
}"""


@pytest.fixture(scope="module", params=["one-port", "own-ports"])
def server(request):
    """The server on its one UDP port (the default), and with a port of its own per
    connection (``--udp-port 0``), where the restart happens without the mux."""
    port = free_udp_ports(1) if request.param == "one-port" else 0
    s = ServerProcess(extra=["--udp-port", str(port)])
    s.rounds = 2 if request.param == "one-port" else 1
    yield s
    s.stop()


def test_an_ice_restart_keeps_the_session_and_media_goes_on(server, browser):
    url = f"{server.url}/r/ice-restart?autojoin=1&lang=en&name="
    names = ("Ann", "Ben", "Cid")
    pages = {n: open_page(browser, url + n, n) for n in names}
    logs: dict[str, list[str]] = {n: [] for n in names}
    for n, page in pages.items():
        page.on("console", lambda m, n=n: logs[n].append(m.text))
    ann = pages["Ann"]
    try:
        for page in pages.values():
            everyone_meets(page, 2)
        restarts = server.metric("visio_ice_restarts_total")
        sid = ann.evaluate("() => window.visio.session.me.sid")
        for round_ in range(1, server.rounds + 1):
            before = ann.evaluate(PATHS)
            assert set(before) == {"publisher", "subscriber"}, before
            assert all(v["port"] > 0 for v in before.values()), before  # a selected pair each
            counters = {n: p.evaluate(REMOTE_MEDIA) for n, p in pages.items()}
            assert ann.evaluate(RESTART) == [True, True]
            after = poll(
                ann,
                PATHS,
                lambda r, b=before: all(
                    r.get(t, {}).get("state") == "connected"
                    and r[t]["ufrag"] != b[t]["ufrag"]
                    and r[t]["port"] != b[t]["port"]
                    for t in ("publisher", "subscriber")
                ),
                timeout=30,
                what="new ICE credentials and new local ports on both connections",
            )
            assert ann.evaluate(SAME), "Ann's connections were replaced, or she reconnected"
            for n, page in pages.items():
                advancing(page, counters[n], f"media after ICE restart {round_} ({n})")
            print(f"restart {round_}: {before} -> {after}")
            # the server restarted two connections each time (publisher, subscriber)
            assert server.metric("visio_ice_restarts_total") == restarts + 2 * round_
            # 15 s apart at least: a client does not restart the same connection more often
            ann.evaluate(ALLOW_ANOTHER)
        artefact(ann, "after-ice-restarts")
        assert ann.evaluate("() => window.visio.session.me.sid") == sid  # the same participant
        for n in ("Ben", "Cid"):
            everyone_meets(pages[n], 2)
        assert not [m for m in logs["Ann"] if "disconnected:" in m], logs["Ann"]
    finally:
        for page in pages.values():
            page.context.close()
