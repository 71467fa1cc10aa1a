"""One UDP port for every peer (``udp_port``, visio_sfu/udpmux.py) with real aiortc peers over
DTLS-SRTP on 127.0.0.1: twenty participants in one room, two of them publishing, every one
decoding both; every server connection's only candidate is that port and no socket of its own;
a participant whose connection is made again from a new socket keeps its session (ICE
restarts within one connection: tests/browser/test_ice_restart_browser.py); peers over IPv6
meet through the same port number; a second server cannot take the port."""

from __future__ import annotations

import asyncio
import socket

import pytest

from signaling.app import UDP_MUX
from signaling.config import ConfigError
from tests.support.inprocess import LocalServer
from tests.support.media import check_video, until
from tests.support.server import ipv6_loopback
from visio_client import Client
from visio_client.media import PatternVideoTrack, ToneAudioTrack
from visio_sfu.udpmux import UdpMux

pytestmark = [pytest.mark.timeout(240), pytest.mark.asyncio]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_transports(server: LocalServer) -> list:
    """Every PeerTransport of the server's participants."""
    out = []
    for room in server.sfu.rooms.values():
        for p in room.participants.values():
            if p.publishing.transport is not None:
                out.append(p.publishing.transport)
            if p.subscriber is not None:
                out.append(p.subscriber.transport)
    return out


def on_the_mux(transport, port: int) -> bool:
    """Whether every ICE connection of ``transport`` gathered on the mux and nowhere else."""
    for ice in transport.pc._RTCPeerConnection__iceTransports:
        connection = ice.iceGatherer._connection
        if not connection.local_candidates:
            return False
        if any(c.port != port for c in connection.local_candidates):
            return False
        if any(p.transport.get_extra_info("socket") is not None for p in connection._protocols):
            return False  # a socket of its own
    return True


async def test_twenty_peers_through_one_udp_port():
    port = free_udp_port()
    async with LocalServer(udp_port=port) as server:
        mux: UdpMux = server.app[UDP_MUX]
        assert mux.port == port
        clients = []
        try:
            for i in range(20):
                c = Client(server.url, server.token("hall", f"p{i}", f"P {i}"))
                await c.connect()
                clients.append(c)
            await clients[0].publish(PatternVideoTrack(1), ToneAudioTrack(1))
            await clients[1].publish(PatternVideoTrack(2), ToneAudioTrack(2))
            for i, c in enumerate(clients):
                want = 2 if i < 2 else 4  # a publisher does not receive itself
                await until(
                    lambda c=c, want=want: len(c.remote_tracks) == want,
                    timeout=60,
                    what=f"p{i} receives the tracks",
                )
            for i, c in enumerate(clients):
                for publisher, colour in ((0, 1), (1, 2)):
                    if i == publisher:
                        continue
                    sid = server.sfu.room("hall").by_identity(f"p{publisher}").sid
                    video = next(
                        t for t in c.remote_tracks if t.kind == "video" and t.participant_sid == sid
                    )
                    await check_video(video, colour, frames=3)
            transports = server_transports(server)
            assert len(transports) == 22  # 20 subscriber connections, 2 publisher ones
            assert all(on_the_mux(t, port) for t in transports)
            assert mux.connections == 22 and mux.unknown == 0
            # each publisher packet's fan-out left in one sendmmsg (visio_sfu/_batch.c)
            assert mux.batching and mux.batches > 0 and mux.send_errors == 0
            assert mux.batched / mux.batches > 5  # 19 subscribers of each publisher
            # and the subscribers' packets went into it protected in C (PeerTransport's Route)
            assert all(t.rtp_sender == t._route.send for t in transports)
            routed = sum(t._route.sent for t in transports)
            assert routed > 100 and routed > mux.batched / 2, (routed, mux.batched)
        finally:
            for c in clients:
                await c.close()
        await until(lambda: mux.connections == 0, what="every connection let go of the port")


async def test_a_peer_reconnecting_from_a_new_socket_keeps_its_session():
    """The subscriber connection made again (a new socket, a new port): the same
    participant, the video again, through the same server port; the old address is let go
    of."""
    port = free_udp_port()
    async with LocalServer(udp_port=port) as server:
        mux: UdpMux = server.app[UDP_MUX]
        alice = Client(server.url, server.token("r", "alice"))
        bob = Client(server.url, server.token("r", "bob"))
        await alice.connect()
        await bob.connect()
        await alice.publish(PatternVideoTrack(3))
        await until(lambda: bob.remote_tracks, what="bob gets alice")
        await check_video(bob.remote_tracks[0], 3)
        sid = server.sfu.room("r").by_identity("bob").sid
        before = bob.subscriber
        await bob.restart_subscriber()
        await until(lambda: bob.subscriber is not before, what="bob's new subscriber connection")
        await until(lambda: bob.remote_tracks, what="bob gets alice again")
        await check_video(bob.remote_tracks[0], 3)
        assert server.sfu.room("r").by_identity("bob").sid == sid
        assert all(on_the_mux(t, port) for t in server_transports(server))
        # alice's publisher connection and bob's new one (alice receives nothing: hers has
        # not been negotiated): bob's old one let go of the port
        await until(lambda: mux.connections == 2, what="bob's old connection let go")
        await alice.close()
        await bob.close()


@pytest.mark.skipif(ipv6_loopback() is not None, reason=str(ipv6_loopback()))
async def test_ipv6_peers_through_the_same_port_number():
    """ICE addresses of IPv6 only (::1): the mux's IPv6 socket, on its IPv4 one's port
    number, carries a publisher's and a subscriber's media both ways."""
    port = free_udp_port()
    async with LocalServer(udp_port=port, ice_addresses=["::1"]) as server:
        mux: UdpMux = server.app[UDP_MUX]
        assert mux.transport6 is not None and mux.transport6.get_extra_info("sockname")[1] == port
        alice = Client(server.url, server.token("v6", "alice"))
        bob = Client(server.url, server.token("v6", "bob"))
        try:
            await alice.connect()
            await bob.connect()
            await alice.publish(PatternVideoTrack(4), ToneAudioTrack(4))
            await until(lambda: len(bob.remote_tracks) == 2, what="bob gets alice over IPv6")
            video = next(t for t in bob.remote_tracks if t.kind == "video")
            await check_video(video, 4)
            transports = server_transports(server)
            assert transports and all(on_the_mux(t, port) for t in transports)
            # alice's publisher connection, bob's subscriber one (alice's receives nothing)
            addresses = [t.remote_address for t in transports if t.remote_address is not None]
            assert len(addresses) == 2 and {a[0] for a in addresses} == {"::1"}, addresses
            assert mux.unknown == 0 and mux.send_errors == 0
        finally:
            await alice.close()
            await bob.close()


async def test_the_port_taken_is_a_clear_error():
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        server = LocalServer(udp_port=taken.getsockname()[1])
        with pytest.raises(ConfigError, match="cannot listen on port"):
            await server.__aenter__()
    finally:
        taken.close()
    await asyncio.sleep(0)
