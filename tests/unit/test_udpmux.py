"""UdpMux without peers: datagrams from real sockets on 127.0.0.1 reach the connection their
STUN USERNAME or their address names; an unknown address is dropped and counted; an address
held by one connection moves to another only with a request that verifies with the other's
password; a closed connection's addresses are free again."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aioice import stun

from tests.support.server import ipv6_loopback
from visio_sfu.udpmux import UdpMux, stun_username


class FakeConnection:
    """What UdpMux and aioice's StunProtocol need of an aioice Connection: names, and where a
    request or data goes."""

    def __init__(self, ufrag: str, password: str) -> None:
        self._local_username = ufrag
        self.local_password = password
        self._protocols: list = []
        self.requests: list[tuple] = []
        self.data: list[bytes] = []

    @property
    def local_username(self) -> str:  # read-only, as aioice's
        return self._local_username

    def request_received(self, message, addr, protocol) -> None:
        self.requests.append((message.attributes.get("USERNAME"), addr))

    def data_received(self, data: bytes, component: int) -> None:
        self.data.append(data)

    def protocol_lost(self, protocol) -> None:
        pass


def binding(username: str, password: str | None) -> bytes:
    """A STUN binding request with USERNAME, and MESSAGE-INTEGRITY if ``password``."""
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    if password is not None:
        message.add_message_integrity(password.encode())
    return bytes(message)


async def settle() -> None:
    await asyncio.sleep(0.05)


async def test_datagrams_reach_the_connection_named_or_holding_the_address():
    mux = await UdpMux(0, host="127.0.0.1").start()
    a, b = FakeConnection("ua", "pa" * 11), FakeConnection("ub", "pb" * 11)
    [ca] = mux.candidates(a, 1, ["127.0.0.1", "::1"])
    [cb] = mux.candidates(b, 1, ["127.0.0.1"])
    assert (ca.host, ca.port) == ("127.0.0.1", mux.port) and cb.port == mux.port
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    here = peer.getsockname()
    target = ("127.0.0.1", mux.port)
    try:
        peer.sendto(b"\x17junk before any STUN", target)  # nobody holds this address yet
        await settle()
        assert mux.unknown == 1 and not a.data and not b.data
        peer.sendto(binding("ua:them", "pa" * 11), target)
        await settle()
        assert a.requests == [("ua:them", here)]
        peer.sendto(b"\x17dtls", target)  # now the address is a's
        await settle()
        assert a.data == [b"\x17dtls"] and not b.data
        # b's ufrag without integrity from a's address: delivered nowhere, a keeps it
        peer.sendto(binding("ub:them", None), target)
        peer.sendto(binding("ub:them", "wrong password"), target)
        await settle()
        assert mux.refused == 2 and not b.requests
        peer.sendto(b"\x17more", target)
        await settle()
        assert a.data[-1] == b"\x17more"
        # with b's password: the address moves (an ICE restart from the same socket)
        peer.sendto(binding("ub:them", "pb" * 11), target)
        peer.sendto(b"\x17for b", target)
        await settle()
        assert b.requests == [("ub:them", here)] and b.data == [b"\x17for b"] and mux.moved == 1
        # what a connection sends goes out of the mux's port, and claims the address
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.bind(("127.0.0.1", 0))
        other.settimeout(2)
        a._protocols[0].transport.sendto(b"\x17hello", other.getsockname())
        data, source = other.recvfrom(100)
        assert data == b"\x17hello" and source == target
        other.sendto(b"\x17answer", target)
        await settle()
        assert a.data[-1] == b"\x17answer"
        other.close()
        # closed: its addresses and its ufrag are free
        b._protocols[0].transport.close()
        await settle()
        peer.sendto(b"\x17after", target)
        peer.sendto(binding("ub:them", "pb" * 11), target)
        await settle()
        assert b.data == [b"\x17for b"] and mux.connections == 1
    finally:
        peer.close()
        mux.close()


def test_stun_username_reads_only_what_is_there():
    assert stun_username(binding("x:y", "p" * 22)) == b"x:y"
    assert stun_username(binding("x:y", None)[:22]) is None  # cut short
    assert stun_username(b"\x17" + bytes(40)) is None  # not STUN
    assert stun_username(b"\x00\x01\xff\xff" + bytes(16)) is None  # length past the end


async def test_a_public_address_is_announced_instead_of_the_hosts():
    """Behind a 1:1 NAT (``--public-ip``): the candidates carry the public address and the
    mux's port; the settings are checked at start."""
    import pytest

    from signaling.config import ConfigError, load_config

    mux = await UdpMux(0, host="127.0.0.1", advertise=["203.0.113.7"]).start()
    try:
        [candidate] = mux.candidates(FakeConnection("u", "p" * 22), 1, ["127.0.0.1"])
        assert (candidate.host, candidate.port, candidate.type) == (
            "203.0.113.7",
            mux.port,
            "host",
        )
    finally:
        mux.close()
    config = load_config(env={"VISIO_UDP_PORT": "7882", "VISIO_PUBLIC_IPS": "203.0.113.7"})
    assert config.udp_port == 7882 and config.public_ips == ["203.0.113.7"]
    assert load_config(env={}).udp_port == 7882  # the default: one port
    with pytest.raises(ConfigError, match="needs udp_port"):
        load_config(env={"VISIO_UDP_PORT": "0", "VISIO_PUBLIC_IPS": "203.0.113.7"})
    with pytest.raises(ConfigError, match="not an IPv4 address"):
        load_config(env={"VISIO_UDP_PORT": "7882", "VISIO_PUBLIC_IPS": "visio.example.org"})
    with pytest.raises(ConfigError, match="udp_port"):
        load_config(env={"VISIO_UDP_PORT": "70000"})


async def test_no_address_is_taken_by_sending_or_without_the_password():
    """A connection sending to an address another holds (an attacker's candidate naming a
    victim's) does not take its media; answers to a connection's checks reach it by their
    transaction; an unsigned request cannot claim even a free address; malformed STUN is
    dropped and counted."""
    mux = await UdpMux(0, host="127.0.0.1").start()
    victim, attacker = FakeConnection("uv", "pv" * 11), FakeConnection("ux", "px" * 11)
    mux.candidates(victim, 1, ["127.0.0.1"])
    mux.candidates(attacker, 1, ["127.0.0.1"])
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(2)
    target = ("127.0.0.1", mux.port)
    try:
        peer.sendto(binding("uv:them", "pv" * 11), target)
        await settle()
        assert victim.requests  # the peer's address is the victim's now
        # the attacker's check to that address: sent, but the address stays the victim's
        check = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        attacker._protocols[0].transport.sendto(bytes(check), peer.getsockname())
        data, _ = peer.recvfrom(200)
        peer.sendto(b"\x17media", target)
        await settle()
        assert victim.data == [b"\x17media"] and not attacker.data and mux.moved == 0
        # the answer to the attacker's own check still reaches the attacker's protocol
        answer = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=stun.parse_message(data).transaction_id,
        )
        got = []
        attacker._protocols[0].transactions[answer.transaction_id] = type(
            "T", (), {"response_received": lambda self, m, a: got.append(m)}
        )()
        peer.sendto(bytes(answer), target)
        await settle()
        assert len(got) == 1 and not victim.data[1:]
        # unsigned, from a free address: refused, claims nothing
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.bind(("127.0.0.1", 0))
        other.sendto(binding("uv:them", None), target)
        other.sendto(b"\x17x", target)
        await settle()
        assert mux.refused == 1 and mux.unknown == 2 and len(victim.requests) == 1  # both dropped
        # a signed request with a malformed attribute (PRIORITY of 3 bytes): dropped, counted
        body = binding("uv:them", None)[20:] + b"\x00\x24\x00\x03abc\x00"
        head = b"\x00\x01" + (len(body) + 24).to_bytes(2, "big") + binding("x", None)[4:20]
        integrity = stun.message_integrity(head + body, ("pv" * 11).encode())
        other.sendto(head + body + b"\x00\x08\x00\x14" + integrity, target)
        await settle()
        assert mux.refused + mux.errors == 2
        other.close()
    finally:
        peer.close()
        mux.close()


def test_reserve_gives_each_connection_its_own_long_ufrag():
    mux = UdpMux(0)
    first, second = FakeConnection("abcd", "p" * 22), FakeConnection("abcd", "p" * 22)
    mux.reserve(first)
    mux._by_ufrag[first.local_username.encode()] = object()
    second._local_username = first.local_username
    mux.reserve(second)
    assert len(first.local_username) == 8 and second.local_username != first.local_username


def test_send_batch_sends_each_datagram_once_and_refuses_bad_items():
    """visio_sfu/_batch.c (built by pip; scripts/test.sh installs a compiler): one sendmmsg
    for several datagrams to several addresses; malformed items are a ValueError, not a
    crash; the mux falls back to sendto without it."""
    import pytest

    from visio_sfu import udpmux

    assert udpmux.send_batch is not None, "visio_sfu._batch was not built"
    receivers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for r in receivers:
            r.bind(("127.0.0.1", 0))
            r.settimeout(2)
        items = [(bytes([i]) * (100 + i), r.getsockname()) for i, r in enumerate(receivers)]
        items.append((bytearray(b"again"), receivers[0].getsockname()))
        assert udpmux.send_batch(sender.fileno(), items) == 4
        assert receivers[0].recv(500) == bytes([0]) * 100
        assert receivers[0].recv(500) == b"again"
        assert receivers[1].recv(500) == bytes([1]) * 101
        assert receivers[2].recv(500) == bytes([2]) * 102
        for bad in ([("x", 1)], [(b"x", ("not an address", 9))], [(b"x", ("127.0.0.1", 70000))]):
            with pytest.raises((ValueError, TypeError)):
                udpmux.send_batch(sender.fileno(), bad)
        assert udpmux.send_batch(sender.fileno(), []) == 0
        # a destination the kernel refuses (port 0) in the middle: the others still go
        items = [(b"one", receivers[0].getsockname()), (b"refused", ("127.0.0.1", 0))]
        items.append((b"three", receivers[1].getsockname()))
        skipped: list[int] = []
        assert udpmux.send_batch(sender.fileno(), items, skipped) == 3 and skipped == [1]
        assert receivers[0].recv(100) == b"one" and receivers[1].recv(100) == b"three"
        # the mux counts the refused one as not sent, not as batched
        mux = UdpMux(0)
        mux._fd, mux.transport = sender.fileno(), object()
        for data, addr in items:
            assert mux.batch.add(data, addr)
        mux._flush()
        assert len(mux.batch) == 0
        assert (mux.batches, mux.batched, mux.send_errors) == (1, 2, 1)
        assert receivers[0].recv(100) == b"one" and receivers[1].recv(100) == b"three"
    finally:
        sender.close()
        for r in receivers:
            r.close()


async def test_ice_over_tcp_on_the_same_port():
    """``tcp=True``: a passive TCP candidate on the port's number; a client's TCP connection
    whose first frame (RFC 4571: two bytes of length) is a STUN request signed for a
    connection is that connection's; what it sends there goes down the stream, framed; a TCP
    connection that names nobody is closed."""
    mux = await UdpMux(0, host="127.0.0.1", tcp=True).start()
    a = FakeConnection("ua", "pa" * 11)
    udp, tcp = mux.candidates(a, 1, ["127.0.0.1"])
    assert (udp.transport, tcp.transport, tcp.tcptype, tcp.port) == (
        "udp",
        "tcp",
        "passive",
        mux.port,
    )
    assert tcp.priority < udp.priority
    reader, writer = await asyncio.open_connection("127.0.0.1", mux.port)
    try:
        request = binding("ua:them", "pa" * 11)
        writer.write(len(request).to_bytes(2, "big") + request)
        await writer.drain()
        await settle()
        here = writer.get_extra_info("sockname")[:2]
        assert a.requests == [("ua:them", here)]
        a._protocols[0].transport.sendto(b"\x17down the stream", here)
        size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 2), "big")
        assert await reader.readexactly(size) == b"\x17down the stream"
        writer.write(b"\x00\x05\x17tcp!")
        await writer.drain()
        await settle()
        assert a.data == [b"\x17tcp!"]
        # a stranger's TCP connection: closed after its first frame
        r2, w2 = await asyncio.open_connection("127.0.0.1", mux.port)
        junk = binding("ua:them", None)
        w2.write(len(junk).to_bytes(2, "big") + junk)
        await w2.drain()
        assert await asyncio.wait_for(r2.read(10), 2) == b""  # closed by the mux
        w2.close()
        assert mux.refused == 1 and mux.tcp_clients == 2
        # a UDP peer's address and port: a TCP connection from the same is refused
        udp_peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp_peer.bind(("127.0.0.1", 0))
        udp_peer.sendto(binding("ua:them", "pa" * 11), ("127.0.0.1", mux.port))
        await settle()
        assert udp_peer.getsockname() in mux._owner, (udp_peer.getsockname(), list(mux._owner))
        same = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        same.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        same.bind(udp_peer.getsockname())
        same.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(same, ("127.0.0.1", mux.port))
        assert await asyncio.wait_for(loop.sock_recv(same, 10), 2) == b""  # closed at once
        same.close()
        udp_peer.close()
        # the stream closed: what the connection sends to it goes nowhere, not over UDP
        writer.close()
        await settle()
        errors = mux.send_errors
        a._protocols[0].transport.sendto(b"\x17late", here)
        assert mux.send_errors == errors + 1
    finally:
        writer.close()
        mux.close()


@pytest.mark.skipif(ipv6_loopback() is not None, reason=str(ipv6_loopback()))
async def test_ipv6_peers_on_the_same_port_number():
    """``host6``: an IPv6 socket on the IPv4 one's port number; a connection's candidates
    carry both; an IPv6 peer is routed as an IPv4 one is, and what the connection sends it
    (alone or while a datagram is handled, when IPv4 sends are batched) leaves by IPv6."""
    mux = await UdpMux(0, host="127.0.0.1", host6="::1").start()
    peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        assert mux.transport6 is not None, "IPv6 on ::1 is needed here"
        a = FakeConnection("ua", "pa" * 11)
        candidates = mux.candidates(a, 1, ["127.0.0.1", "::1", "fe80::1"])
        assert [(c.host, c.port) for c in candidates] == [
            ("127.0.0.1", mux.port),
            ("::1", mux.port),
        ]
        peer.bind(("::1", 0))
        peer.settimeout(2)
        here = peer.getsockname()[:2]
        target = ("::1", mux.port)
        peer.sendto(b"\x17nobody's", target)
        await settle()
        assert mux.unknown == 1 and not a.data
        peer.sendto(binding("ua:them", "pa" * 11), target)
        peer.sendto(b"\x17dtls", target)
        await settle()
        assert a.requests == [("ua:them", here)] and a.data == [b"\x17dtls"]
        a._protocols[0].transport.sendto(b"\x17reply", here)
        data, source = peer.recvfrom(100)
        assert data == b"\x17reply" and source[:2] == target
        # sent while a datagram is being handled (batched for IPv4): IPv6 still goes out
        mux._pending = []
        a._protocols[0].transport.sendto(b"\x17during", here)
        assert mux._pending == []
        mux._pending = None
        data, _ = peer.recvfrom(100)
        assert data == b"\x17during"
    finally:
        peer.close()
        mux.close()
    # no IPv6 where asked: IPv4 goes on alone
    mux = await UdpMux(0, host="127.0.0.1", host6="2001:db8::1").start()
    try:
        assert mux.transport6 is None and mux.transport is not None
        [c] = mux.candidates(FakeConnection("ub", "pb" * 11), 1, ["127.0.0.1", "::1"])
        assert c.host == "127.0.0.1"
    finally:
        mux.close()


def test_media_hosts_follow_the_ice_addresses():
    from signaling.app import media_hosts

    assert media_hosts([]) == ("0.0.0.0", "::")
    assert media_hosts(["127.0.0.1"]) == ("127.0.0.1", None)
    assert media_hosts(["127.0.0.1", "::1"]) == ("127.0.0.1", "::1")
    assert media_hosts(["::1"]) == ("127.0.0.1", "::1")
    assert media_hosts(["10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"]) == ("0.0.0.0", "::")
    # workers' ports are checked on the same addresses: ::1 alone is no IPv4 address to bind
    from signaling.app import media_ports_free
    from signaling.config import load_config
    from tests.support.server import free_udp_ports

    config = load_config(
        env={}, overrides={"ice_addresses": ["::1"], "udp_port": free_udp_ports(2)}
    )
    assert media_ports_free(config, 2) is None
