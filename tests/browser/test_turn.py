"""Through a TURN relay (issue 20): the server hands each client TURN credentials of its own
(signaling/turn.py, coturn's shared-secret scheme), and two Chromium pages forced to relay
(``?relay=1``: iceTransportPolicy "relay", as behind a firewall that lets no UDP through to
the server) see and hear each other through coturn, started here."""

from __future__ import annotations

import time

import pytest

from tests.browser.conftest import artefact, open_page
from tests.support.browser import REMOTE_MEDIA, poll
from tests.support.server import ServerProcess
from tests.support.turn import TurnServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PAIRS = """async () => {
  const s = window.visio.session;
  const out = [];
  for (const pc of [s.publisher, s.subscriber]) {
    if (!pc) continue;
    const stats = await pc.getStats();
    stats.forEach(x => {
      if (x.type === 'candidate-pair' && x.nominated && x.state === 'succeeded') {
        const local = stats.get(x.localCandidateId);
        out.push(local ? local.candidateType : '?');
      }
    });
  }
  return out;
}"""


@pytest.fixture(scope="module")
def turn():
    server = TurnServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def relayed_server(turn):
    env = {"VISIO_TURN_URLS": turn.url, "VISIO_TURN_SECRET": turn.secret}
    s = ServerProcess(env=env)
    yield s
    s.stop()


def test_two_pages_forced_to_relay_see_and_hear_each_other(turn, relayed_server, browser):
    pages = [
        open_page(browser, f"{relayed_server.url}/r/relayed?name={n}&autojoin=1&relay=1&lang=en", n)
        for n in ("Ann", "Ben")
    ]
    try:
        for page in pages:
            poll(
                page,
                REMOTE_MEDIA,
                lambda r: (
                    len([v for v in r["videos"] if v["w"] > 0 and v["ready"] >= 2]) == 1
                    and r["audios"] == 1
                    and r["framesDecoded"] > 10
                ),
                timeout=45,
                what="the other's video and audio, relayed",
            )
        for page in pages:
            servers = page.evaluate("() => window.visio.session.iceServers")
            assert len(servers) == 1 and servers[0]["urls"] == [turn.url], servers
            expiry, _identity = servers[0]["username"].split(":", 1)
            assert int(expiry) > time.time() + 3600  # a day by default: time-limited
            assert servers[0]["credential"]
            pairs = page.evaluate(PAIRS)
            assert pairs and all(kind == "relay" for kind in pairs), pairs
        assert turn.allocations() >= 2
        artefact(pages[0], "turn-relayed")
    finally:
        for page in pages:
            page.context.close()
