"""ICE restarts with Firefox ESR (default preferences): a Firefox user's web client restarts
ICE on both its connections in a meeting with a Chromium user (the publisher's by its own
offer with new credentials, the subscriber's by asking the server for one), twice; the same
RTCPeerConnections carry on, with new credentials, and each goes on seeing and hearing the
other. (Chromium, and a real address change: test_ice_restart_browser.py,
test_network_change_browser.py.)"""

from __future__ import annotations

import uuid

import pytest

from tests.browser.conftest import artefact
from tests.browser.firefox import FirefoxPage, missing_requirements
from tests.browser.test_firefox import MEDIA, advanced, lacks, open_chromium
from tests.support import netns
from tests.support.browser import poll
from tests.support.firefox_netns import netns_fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(240),
    pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements())),
]

namespace, server, browser = netns_fixtures("visio-ffice")

#: each connection's state and ICE username fragment
ICE = """() => {
  const s = window.visio.session;
  const out = {};
  for (const [name, pc] of [['publisher', s.publisher], ['subscriber', s.subscriber]]) {
    out[name] = {state: pc.connectionState,
                 ufrag: (pc.localDescription.sdp.match(/a=ice-ufrag:(\\S+)/) || [])[1]};
  }
  return out;
}"""

RESTART = """() => {
  const s = window.visio.session;
  if (!window.kept) {
    window.kept = [s.publisher, s.subscriber];
    window.states = [];
    s.on('state', (x) => window.states.push(x));
  }
  s.iceRestarts.publisher = s.iceRestarts.subscriber = 0;  // not 15 s apart here
  return [s.restartIce('publisher', s.publisher), s.restartIce('subscriber', s.subscriber)];
}"""

SAME = """() => {
  const s = window.visio.session;
  return window.kept[0] === s.publisher && window.kept[1] === s.subscriber
    && window.states.length === 0;
}"""


def test_firefox_restarts_ice_and_media_goes_on(server, browser):
    room = f"ffice-{uuid.uuid4().hex[:8]}"
    url = f"{server.url}/r/{room}?name={{}}&autojoin=1&lang=en"
    console: list[str] = []
    firefox = FirefoxPage(url.format("Fay"), name="firefox", prefix=netns.prefix(server.netns))
    chromium = None
    try:
        chromium = open_chromium(browser, url.format("Cid"), console)
        pages = {"Fay": (firefox, "Cid"), "Cid": (chromium, "Fay")}
        for who, (page, other) in pages.items():
            poll(page, MEDIA, lambda r, o=other: not lacks(r, o), 60, f"{who} meets {other}")
        for round_ in (1, 2):
            before = firefox.evaluate(ICE)
            seen = {who: page.evaluate(MEDIA) for who, (page, _) in pages.items()}
            assert firefox.evaluate(RESTART) == [True, True]
            after = poll(
                firefox,
                ICE,
                lambda r, b=before: all(
                    r[t]["state"] == "connected" and r[t]["ufrag"] != b[t]["ufrag"]
                    for t in ("publisher", "subscriber")
                ),
                30,
                f"Firefox's connections restarted ({round_})",
            )
            assert firefox.evaluate(SAME), "Firefox's connections were replaced, or it reconnected"
            for who, (page, other) in pages.items():
                poll(
                    page,
                    MEDIA,
                    lambda r, b=seen[who], o=other: not lacks(r, o) and not advanced(b, r),
                    30,
                    f"{who}'s media from {other} after restart {round_}",
                )
            print(f"restart {round_}: {before} -> {after}")
        restarts = [line for line in firefox.console if "restarting ICE" in line]
        assert len(restarts) == 4, firefox.console[-20:]
        artefact(chromium, "firefox-ice-restart-chromium")
    finally:
        firefox.close()
        if chromium is not None:
            chromium.context.close()
