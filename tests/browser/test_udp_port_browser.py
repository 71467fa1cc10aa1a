"""One UDP port for every peer (issue 20: ``--udp-port``, visio_sfu/udpmux.py) with Chromium:
two pages of the web client see and hear each other, every connection of both through the
server's one port; one page reloads (new connections from new sockets) and they meet again
on that port. And over IPv6 alone: the server's candidates on ::1, the same port number."""

from __future__ import annotations

import socket

import pytest

from tests.browser.conftest import artefact, open_page
from tests.support.browser import everyone_meets
from tests.support.server import ServerProcess, ipv6_loopback

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PORTS = """async () => {
  const s = window.visio.session;
  const out = [];
  for (const pc of [s.publisher, s.subscriber]) {
    if (!pc) continue;
    const stats = await pc.getStats();
    stats.forEach(x => {
      if (x.type === 'candidate-pair' && x.nominated && x.state === 'succeeded') {
        const remote = stats.get(x.remoteCandidateId);
        out.push(remote ? remote.port : -1);
      }
    });
  }
  return out;
}"""

#: the server's address on each connection's selected pair
ADDRESSES = """async () => {
  const s = window.visio.session;
  const out = [];
  for (const pc of [s.publisher, s.subscriber]) {
    const stats = await pc.getStats();
    stats.forEach(x => {
      if (x.type === 'transport' && x.selectedCandidatePairId) {
        const pair = stats.get(x.selectedCandidatePairId);
        const remote = pair && stats.get(pair.remoteCandidateId);
        out.push(remote ? `[${remote.address}]:${remote.port}` : '?');
      }
    });
  }
  return out;
}"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_port_server():
    port = free_udp_port()
    s = ServerProcess(extra=["--udp-port", str(port)])
    s.udp_port = port
    yield s
    s.stop()


def test_two_pages_meet_through_one_udp_port(one_port_server, browser):
    url = f"{one_port_server.url}/r/one-port?autojoin=1&lang=en&name="
    pages = [open_page(browser, url + n, n) for n in ("Ann", "Ben")]
    try:
        for page in pages:
            everyone_meets(page, 1)
        for page in pages:
            ports = page.evaluate(PORTS)
            assert ports and set(ports) == {one_port_server.udp_port}, ports
        artefact(pages[0], "one-udp-port")
        pages[1].reload()  # Ben's connections made again, from new sockets
        for page in pages:
            everyone_meets(page, 1)
        ports = pages[1].evaluate(PORTS)
        assert ports and set(ports) == {one_port_server.udp_port}, ports
    finally:
        for page in pages:
            page.context.close()


@pytest.mark.skipif(ipv6_loopback() is not None, reason=str(ipv6_loopback()))
def test_two_pages_meet_over_ipv6(browser):
    """The server's ICE address is ::1 only: Chromium reaches it over IPv6, on the media
    port's number (the mux's IPv6 socket)."""
    server = ServerProcess(extra=["--ice-address", "::1"])  # with 127.0.0.1 for HTTP
    url = f"{server.url}/r/six?autojoin=1&lang=en&name="
    pages = []
    try:
        pages = [open_page(browser, url + n, n) for n in ("Ann", "Ben")]
        for page in pages:
            everyone_meets(page, 1)
        for page in pages:
            addresses = page.evaluate(ADDRESSES)
            assert addresses and set(addresses) == {f"[::1]:{server.udp_port}"}, addresses
        artefact(pages[0], "one-udp-port-ipv6")
    finally:
        for page in pages:
            page.context.close()
        server.stop()
