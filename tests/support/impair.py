"""A userspace network impairment for tests: loss, delay, jitter and a rate cap on UDP.

This machine's kernel has the ``tbf`` qdisc but no ``netem``, so loss, delay and jitter are made
here, at the socket: a ``Link`` is one direction of a path (a token-bucket bottleneck with a
drop-tail queue, then propagation delay with jitter, with random loss in front), and
``impair_connection`` puts one Link on what an aioice connection sends and one on what it
receives, whichever peer owns it (an aiortc client, or the server's own PeerTransport for a
browser). By default only media (SRTP/SRTCP) is impaired: ICE and DTLS come through whole, so
a connection is set up the same way in every run and the figures are the media's.

Jitter keeps packets in order by default (a FIFO queue's delay varies, its order does not);
``reorder=True`` draws each packet's delay independently, as netem does.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.support import netns
from visio_sfu.udpmux import invalidate_routes


@dataclass
class Impairment:
    """What one direction of a link does to datagrams."""

    loss: float = 0.0  # probability that a datagram is dropped
    delay: float = 0.0  # seconds of one-way delay added
    jitter: float = 0.0  # each datagram's delay is drawn in [delay - jitter, delay + jitter]
    rate: float = 0.0  # bottleneck in bits per second (0: no cap)
    burst: int = 3_000  # bytes the token bucket may save up
    queue: float = 0.25  # seconds of queue at ``rate`` before drop-tail
    reorder: bool = False
    media_only: bool = True  # leave STUN and DTLS alone
    seed: int = 1


@dataclass
class LinkStats:
    """What a Link did: datagrams in, lost at random, dropped by the full queue, delivered."""

    packets: int = 0
    bytes: int = 0
    lost: int = 0
    overflow: int = 0
    delivered: int = 0
    delivered_bytes: int = 0
    max_queue_delay: float = 0.0
    history: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes) delivered


def is_media(data: bytes) -> bool:
    """Whether a datagram is SRTP or SRTCP (RFC 7983: first byte 128-191)."""
    return bool(data) and 127 < data[0] < 192


class Link:
    """One direction of an impaired path, in the running event loop's time."""

    def __init__(self, impairment: Impairment, deliver: Callable[[bytes, Any], None]) -> None:
        self.impairment = impairment
        self._deliver = deliver
        self._rng = random.Random(impairment.seed)
        self._free_at = 0.0  # when the bottleneck has sent everything queued so far
        self._last_arrival = 0.0
        self._scheduled = 0  # datagrams waiting for their arrival time
        self.stats = LinkStats()
        self.record = False  # keep (time, bytes) of each delivery, to measure throughput

    def set(self, **changes: Any) -> None:
        """Change the impairment from now on (a cap lifted, loss starting)."""
        for key, value in changes.items():
            setattr(self.impairment, key, value)

    def send(self, data: bytes, addr: Any) -> None:
        """Take one datagram into the link."""
        imp = self.impairment
        if imp.media_only and not is_media(data):
            self._deliver(data, addr)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        stats = self.stats
        stats.packets += 1
        stats.bytes += len(data)
        if imp.loss and self._rng.random() < imp.loss:
            stats.lost += 1
            return
        leave = now
        if imp.rate > 0:
            # token bucket: the link may run ahead of ``now`` by up to ``burst`` bytes' time
            start = max(self._free_at, now - imp.burst * 8 / imp.rate)
            leave = start + len(data) * 8 / imp.rate
            if leave - now > imp.queue:
                stats.overflow += 1
                return
            self._free_at = leave
            stats.max_queue_delay = max(stats.max_queue_delay, leave - now)
        arrival = leave + imp.delay
        if imp.jitter:
            arrival += self._rng.uniform(-imp.jitter, imp.jitter)
        if not imp.reorder:
            # strictly after the previous one: the loop's timer heap orders equal times
            # arbitrarily, which reordered the packets jitter had bunched together
            arrival = max(arrival, self._last_arrival + 1e-6)
        self._last_arrival = arrival
        if arrival <= now and not self._scheduled:
            self._out(data, addr)
        else:  # after those still scheduled, whose times are earlier
            self._scheduled += 1
            loop.call_at(arrival, self._out_later, data, addr)

    def _out_later(self, data: bytes, addr: Any) -> None:
        self._scheduled -= 1
        self._out(data, addr)

    def _out(self, data: bytes, addr: Any) -> None:
        stats = self.stats
        stats.delivered += 1
        stats.delivered_bytes += len(data)
        if self.record:
            stats.history.append((asyncio.get_running_loop().time(), len(data)))
        try:
            self._deliver(data, addr)
        except Exception:  # a closed transport: the datagram is lost, as on a real link
            pass

    def throughput(self, seconds: float) -> float:
        """Bits per second delivered over the last ``seconds`` (``record`` must be on)."""
        now = asyncio.get_running_loop().time()
        total = sum(n for t, n in self.stats.history if now - t <= seconds)
        return total * 8 / seconds


class _Transport:
    """A datagram transport whose ``sendto`` goes through a Link (any loop: uvloop's transports
    take no new attributes, so the transport is wrapped rather than patched)."""

    def __init__(self, real: Any, protocol: Any, link: Link) -> None:
        self._real = real
        self._protocol = protocol
        self._link = link

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._link.send(data, (self._protocol, addr))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@dataclass
class ImpairedPath:
    """The two Links of one peer's connection: what it sends (``up``) and receives (``down``)."""

    up: Link
    down: Link


def ice_connection(pc: Any) -> Any:
    """The aioice Connection under an aiortc RTCPeerConnection (after negotiation)."""
    for t in pc.getTransceivers():
        dtls = t.receiver.transport or t.sender.transport
        if dtls is not None:
            return dtls.transport._connection
    raise ValueError("this peer connection has no transport yet")


def impair_connection(
    connection: Any, up: Impairment | None = None, down: Impairment | None = None
) -> ImpairedPath:
    """Impair everything an aioice Connection sends (``up``) and receives (``down``).

    Wraps each of its UDP protocols: their transport's ``sendto`` and their
    ``datagram_received``, so the peer's own code (ICE, DTLS, SRTP, RTCP) runs unchanged.
    """
    protocols = [p for p in connection._protocols if p.transport is not None]
    if not protocols:
        raise ValueError("this connection has no socket")
    sends: dict[int, Callable[[bytes, Any], None]] = {}
    receives: dict[int, Callable[[bytes, Any], None]] = {}

    def out(data: bytes, target: Any) -> None:
        protocol, addr = target
        sends[id(protocol)](data, addr)

    def into(data: bytes, target: Any) -> None:
        protocol, addr = target
        receives[id(protocol)](data, addr)

    up_link = Link(up or Impairment(), out)
    down_link = Link(down or Impairment(seed=2), into)
    for protocol in protocols:
        sends[id(protocol)] = protocol.transport.sendto
        receives[id(protocol)] = protocol.datagram_received
        protocol.transport = _Transport(protocol.transport, protocol, up_link)

        def datagram_received(data: bytes, addr: Any, _p: Any = protocol) -> None:
            down_link.send(data, (_p, addr))

        protocol.datagram_received = datagram_received
    invalidate_routes()  # the server's Routes now send through the wrappers
    return ImpairedPath(up_link, down_link)


def impair_peer(
    pc: Any, up: Impairment | None = None, down: Impairment | None = None
) -> ImpairedPath:
    """``impair_connection`` for an aiortc RTCPeerConnection (a test client's)."""
    return impair_connection(ice_connection(pc), up, down)


# -- two network namespaces joined by a link --------------------------------------------
# The server's side and a client's side, each a namespace the test creates and removes, joined
# by a veth pair: what crosses it is what one client sends and receives, and the kernel's
# ``tbf`` on the server's end caps that client's downlink (this kernel has tbf, no netem).
# The server runs in the test's own event loop (for the userspace impairment above on its
# sockets), so the test's thread enters the server's namespace (setns) while it runs.

SERVER_ADDRESS = "198.18.17.1"  # RFC 2544 benchmarking range, routed nowhere
CLIENT_ADDRESS = "198.18.17.2"
CLONE_NEWNET = 0x40000000


@dataclass
class Namespaces:
    """The server's and the client's namespace, and the server's end of the link."""

    server: str
    client: str
    device: str = "imp-s"

    def cap(self, rate: float, queue: float = 0.25, burst: int = 3_000) -> None:
        """Cap what the server sends the client to ``rate`` bits per second (tbf: a token
        bucket of ``burst`` bytes, drop-tail past ``queue`` seconds of backlog)."""
        latency = f"{int(queue * 1000)}ms"
        _ip_netns(
            self.server,
            "tc",
            "qdisc",
            "replace",
            "dev",
            self.device,
            "root",
            "tbf",
            "rate",
            f"{int(rate)}bit",
            "burst",
            str(burst),
            "latency",
            latency,
        )

    def lift(self) -> None:
        """Remove the cap."""
        _ip_netns(self.server, "tc", "qdisc", "del", "dev", self.device, "root")

    def dropped(self) -> int:
        """Packets the cap dropped so far (tbf's statistics; 0 without a cap)."""
        out = _ip_netns(self.server, "tc", "-s", "qdisc", "show", "dev", self.device)
        found = re.search(r"dropped (\d+)", out)
        return int(found.group(1)) if found else 0


def _ip_netns(namespace: str, *cmd: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, *cmd], capture_output=True, text=True, check=True
    )
    return done.stdout


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def linked_namespaces(prefix: str) -> Iterator[Namespaces]:
    """Create the two namespaces (``<prefix>-s``, ``<prefix>-c``) and the link between them;
    remove them afterwards."""
    ns = Namespaces(f"{prefix}-s", f"{prefix}-c")
    peer = "imp-c"
    try:
        for name in (ns.server, ns.client):
            subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        subprocess.run(
            [
                "ip",
                "-n",
                ns.server,
                "link",
                "add",
                ns.device,
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "netns",
                ns.client,
            ],
            check=True,
            capture_output=True,
        )
        for name, dev, address in (
            (ns.server, ns.device, SERVER_ADDRESS),
            (ns.client, peer, CLIENT_ADDRESS),
        ):
            ip = ["ip", "-n", name]
            subprocess.run([*ip, "addr", "add", f"{address}/24", "dev", dev], check=True)
            for link in ("lo", dev):
                subprocess.run([*ip, "link", "set", link, "up"], check=True)
            # Chromium gathers nothing without a default route; it leads into the link only
            subprocess.run([*ip, "route", "add", "default", "dev", dev], check=True)
        yield ns
    finally:
        for name in (ns.server, ns.client):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            netns.remove_wrappers(name)


@contextmanager
def entered(namespace: str) -> Iterator[None]:
    """Move the calling thread into ``namespace`` (sockets it opens meanwhile belong there, and
    stay there), and back afterwards."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)
