"""Through a TURN relay (issue 20): the server hands each client TURN credentials of its own
(signaling/turn.py, coturn's shared-secret scheme), and two Chromium pages forced to relay
(``?relay=1``: iceTransportPolicy "relay", as behind a firewall that lets no UDP through to
the server) see and hear each other through coturn, started here: once reached over UDP, once
over TLS only (``turns:``, a coturn with no plain listener, as on a network that lets out
nothing but TCP 443)."""

from __future__ import annotations

import time

import pytest

from tests.browser.conftest import ARGS, CHROMIUM, artefact, open_page
from tests.support.browser import REMOTE_MEDIA, poll
from tests.support.server import ServerProcess
from tests.support.turn import TurnServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

#: the local candidates of the nominated pairs in use: their type, and for relay candidates
#: how the browser reaches the TURN server (relayProtocol: udp, tcp or tls)
PAIRS = """async () => {
  const s = window.visio.session;
  const out = [];
  for (const pc of [s.publisher, s.subscriber]) {
    if (!pc) continue;
    const stats = await pc.getStats();
    stats.forEach(x => {
      if (x.type === 'candidate-pair' && x.nominated && x.state === 'succeeded') {
        const local = stats.get(x.localCandidateId);
        out.push(local ? [local.candidateType, local.relayProtocol || null] : ['?', null]);
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


@pytest.fixture(scope="module")
def turn_tls():
    server = TurnServer(tls=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_browser(browser, turn_tls):
    """Chromium trusting the test coturn's self-signed certificate. Chromium checks a TURN
    server's certificate (seen with Debian's Chromium 156: untrusted, no relay candidate,
    icecandidateerror 701 "Failed to establish connection"); this trusts that one key only
    (--ignore-certificate-errors-spki-list: a certificate with another key still fails)."""
    b = browser.browser_type.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[*ARGS, f"--ignore-certificate-errors-spki-list={turn_tls.spki_sha256}"],
    )
    yield b
    b.close()


@pytest.fixture(scope="module")
def tls_relayed_server(turn_tls):
    env = {"VISIO_TURN_URLS": turn_tls.url, "VISIO_TURN_SECRET": turn_tls.secret}
    s = ServerProcess(env=env)
    yield s
    s.stop()


def see_and_hear_relayed(browser, server, turn, room: str, protocol: str, shot: str) -> None:
    """Two pages forced to relay join ``room`` on ``server`` and see and hear each other; every
    nominated pair is a relay candidate reached over ``protocol``, coturn allocated relays."""
    pages = [
        open_page(browser, f"{server.url}/r/{room}?name={n}&autojoin=1&relay=1&lang=en", n)
        for n in ("Ann", "Ben")
    ]
    try:
        for page in pages:
            first = poll(
                page,
                REMOTE_MEDIA,
                lambda r: (
                    len([v for v in r["videos"] if v["w"] > 0 and v["ready"] >= 2]) == 1
                    and r["audios"] == 1
                    and r["framesDecoded"] > 10
                    and r["audioBytes"] > 0
                ),
                timeout=45,
                what=f"the other's video and audio, relayed over {protocol}",
            )
            # still flowing: more frames decoded, more audio received, the video advancing
            poll(
                page,
                REMOTE_MEDIA,
                lambda r, first=first: (
                    r["framesDecoded"] > first["framesDecoded"] + 10
                    and r["audioBytes"] > first["audioBytes"]
                    and r["videos"]
                    and r["videos"][0]["t"] > first["videos"][0]["t"]
                ),
                timeout=15,
                what=f"media still flowing over {protocol}",
            )
        for page in pages:
            servers = page.evaluate("() => window.visio.session.iceServers")
            assert len(servers) == 1 and servers[0]["urls"] == [turn.url], servers
            expiry, _identity = servers[0]["username"].split(":", 1)
            assert int(expiry) > time.time() + 3600  # a day by default: time-limited
            assert servers[0]["credential"]
            pairs = page.evaluate(PAIRS)
            assert pairs and all(pair == ["relay", protocol] for pair in pairs), pairs
        assert turn.allocations() >= 2
        artefact(pages[0], shot)
    finally:
        for page in pages:
            page.context.close()


def test_two_pages_forced_to_relay_see_and_hear_each_other(turn, relayed_server, browser):
    see_and_hear_relayed(browser, relayed_server, turn, "relayed", "udp", "turn-relayed")


def test_relay_reached_over_tls_only(turn_tls, tls_relayed_server, tls_browser):
    """TURN over TLS (``turns:``, issue 20): coturn with a self-signed certificate and no plain
    listener; the pages relay through it and their relay candidates are reached over TLS."""
    # the only way in is TLS: a STUN request in TLS is answered, in plain TCP it is not
    assert turn_tls.answers_stun(tls=True)
    assert not turn_tls.answers_stun(tls=False)
    see_and_hear_relayed(
        tls_browser, tls_relayed_server, turn_tls, "relayed-tls", "tls", "turn-tls"
    )
    # and coturn saw the pages' sessions in TLS, every one of them
    protocols = turn_tls.session_protocols()
    assert len(protocols) >= 2 and all(p and p.startswith("TLS") for p in protocols), protocols
