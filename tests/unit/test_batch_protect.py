"""visio_sfu._batch.srtp_protect_copy: libsrtp's protect in one call (the send path's
SrtpProtector can use it instead of a cffi buffer): the same SRTP packets as pylibsrtp."""

from __future__ import annotations

import pytest
from pylibsrtp import Policy, Session

from tests.support.srtp import PROTECT, context_of, sessions_of_one_key
from visio_sfu.rtp.header import build_rtp
from visio_sfu.udpmux import Watched, invalidate_routes

batch = pytest.importorskip("visio_sfu._batch")  # test_rewrite.py fails when it is not built


@pytest.mark.parametrize(
    "profile", [Policy.SRTP_PROFILE_AES128_CM_SHA1_80, Policy.SRTP_PROFILE_AEAD_AES_128_GCM]
)
def test_srtp_protect_copy_gives_what_pylibsrtp_gives(profile):
    ours, theirs = sessions_of_one_key(profile, 2)
    context = context_of(ours)
    for i in range(50):
        packet = build_rtp(96, 1000 + i, 3000 * i, 1234, bytes(range(256)) * 4)
        source = bytearray(packet)
        out = batch.srtp_protect_copy(PROTECT, context, source)
        assert type(out) is bytes and out == theirs.protect(packet)
        assert source == packet  # a copy was protected
    assert batch.srtp_protect_copy(PROTECT, context, bytes(1501)) is None  # too large
    assert batch.srtp_protect_copy(PROTECT, context, bytes(4)) is None  # libsrtp refuses
    with pytest.raises(TypeError):
        batch.srtp_protect_copy(PROTECT, context)


class _Dtls:
    """What a Route reads of aiortc's RTCDtlsTransport: the outbound SRTP session."""

    def __init__(self, session: Session) -> None:
        self._tx_srtp = session


class _Protocol:
    """What a Route reads of aioice's StunProtocol: the transport it sends through."""

    def __init__(self) -> None:
        self.transport = object()


def _receivers(n: int) -> list:
    import socket

    out = []
    for _ in range(n):
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind(("127.0.0.1", 0))
        r.settimeout(2)
        out.append(r)
    return out


def test_batch_holds_copies_sends_them_in_one_call_and_gives_back_the_rest():
    import socket

    receivers = _receivers(2)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        b = batch.Batch()
        assert len(b) == 0 and not b.open
        b.begin()
        assert b.open
        data = bytearray(b"first")
        assert b.add(data, receivers[0].getsockname())
        data[0:5] = b"XXXXX"  # a copy was taken
        assert b.add(b"second", receivers[1].getsockname())
        assert b.add(b"refused", ("127.0.0.1", 0))  # the kernel refuses port 0
        assert not b.add(b"v6", ("::1", 5000))  # IPv4 only: the caller sends it its own way
        assert not b.add(b"x", ("not an address", 5000))
        assert not b.add(bytes(1645), receivers[0].getsockname())  # over a slot
        assert b.end() == 3 and not b.open
        skipped: list[int] = []
        assert b.send(sender.fileno(), skipped) == 3 and skipped == [2]
        assert receivers[0].recv(100) == b"first" and receivers[1].recv(100) == b"second"
        assert len(b) == 3  # kept until taken or cleared
        assert b.take(1) == [
            (b"second", receivers[1].getsockname()),
            (b"refused", ("127.0.0.1", 0)),
        ]
        assert len(b) == 0
        for i in range(256):
            assert b.add(bytes([i % 256]), receivers[0].getsockname())
        assert not b.add(b"full", receivers[0].getsockname())
        b.clear()
        assert len(b) == 0
        with pytest.raises(TypeError):
            b.add(b"x", "127.0.0.1")
        with pytest.raises((TypeError, ValueError)):
            b.send(-1, [])
    finally:
        sender.close()
        for r in receivers:
            r.close()


def test_route_protects_into_the_open_batch_and_falls_back_otherwise():
    """Route.send: while the batch is open and the route armed for the nominated pair and
    the session in use, the packet is protected (the same bytes as pylibsrtp) into the batch
    for the armed address; anything else goes to the fallback (the Python send_rtp)."""
    ours, theirs = sessions_of_one_key(Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 2)
    context = context_of(ours)
    b = batch.Batch()
    fallen: list[bytes] = []

    def fallback(data: bytes | bytearray) -> bool:
        fallen.append(bytes(data))
        return False

    route = batch.Route(b, fallback)
    dtls, pair = _Dtls(ours), object()
    protocol = _Protocol()
    sends_through = protocol.transport
    # as the mux's owner table and aioice's nominated pairs are: a change tells the routes
    owners = Watched({("127.0.0.1", 40000): protocol, ("::1", 40000): protocol})
    nominated = Watched({1: pair})
    packets = [build_rtp(96, 1000 + i, 3000 * i, 1234, bytes(range(200))) for i in range(8)]

    assert route.send(bytearray(packets[0])) is False and len(fallen) == 1  # not armed
    assert route.arm(
        PROTECT,
        context,
        ours,
        dtls,
        nominated,
        pair,
        protocol,
        sends_through,
        owners,
        ("127.0.0.1", 40000),
    )
    assert route.pair is pair and route.session is ours
    assert route.send(packets[0]) is False and len(fallen) == 2  # the batch is closed
    b.begin()
    source = bytearray(packets[0])
    assert route.send(source) is True and source == packets[0] and route.sent == 1
    assert route.send(packets[1]) is True
    taken = b.take(0)
    assert taken == [
        (theirs.protect(packets[0]), ("127.0.0.1", 40000)),
        (theirs.protect(packets[1]), ("127.0.0.1", 40000)),
    ]
    nominated[1] = object()  # another pair nominated (an ICE restart)
    assert route.send(packets[2]) is False and len(b) == 0 and len(fallen) == 3
    nominated[1] = pair
    dtls._tx_srtp = theirs  # another SRTP session
    invalidate_routes()  # (an attribute: whoever changes it says so)
    assert route.send(packets[3]) is False and len(fallen) == 4
    dtls._tx_srtp = ours
    protocol.transport = object()  # the pair's socket wrapped (an impairment in a test)
    invalidate_routes()
    assert route.send(packets[3]) is False and len(fallen) == 5
    protocol.transport = sends_through
    fallen.pop()
    del owners[("127.0.0.1", 40000)]  # the address let go of (evicted): the mux claims it again
    assert route.send(packets[3]) is False and len(fallen) == 5
    owners[("127.0.0.1", 40000)] = protocol
    fallen.pop()
    assert route.send(bytes(1501)) is False and len(fallen) == 5  # too large
    assert route.send(memoryview(packets[4])) is False and len(fallen) == 6  # not bytes
    assert route.send(bytes(4)) is False and len(fallen) == 7  # libsrtp refuses: fallback's say
    for i in range(256):
        assert route.send(build_rtp(96, 2000 + i, 0, 1234, b"x"))
    assert route.send(packets[5]) is False and len(fallen) == 8  # the batch is full
    b.clear()
    route.disarm()
    assert route.pair is None and route.session is None
    assert route.send(packets[6]) is False and len(fallen) == 9
    assert not route.arm(
        PROTECT,
        context,
        ours,
        dtls,
        nominated,
        pair,
        protocol,
        sends_through,
        owners,
        ("::1", 40000),
    )  # IPv6
    assert route.send(packets[7]) is False and len(fallen) == 10
    with pytest.raises(TypeError):
        route.arm(
            PROTECT, context, ours, dtls, [pair], pair, protocol, None, owners, ("127.0.0.1", 1)
        )
    with pytest.raises(TypeError):
        batch.Route(b, "not callable")
    b.end()


def test_routes_sharing_a_batch_keep_the_order_each_sends_in():
    """Two subscribers' routes fill the media port's one batch in the order of their sends;
    sent with one call, each receiver gets its packets in its order; past 256, each route's
    fallback sends (the mux then sends the batch and starts it again)."""
    import socket

    receivers = _receivers(2)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = batch.Batch()
    fell: list[tuple[int, bytes]] = []
    routes, twins = [], []
    try:
        for k in range(2):
            ours, twin = sessions_of_one_key(Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 2)
            route = batch.Route(b, lambda data, k=k: fell.append((k, bytes(data))) or False)
            protocol, pair = _Protocol(), object()
            addr = receivers[k].getsockname()
            context = context_of(ours)
            assert route.arm(
                PROTECT,
                context,
                ours,
                _Dtls(ours),
                {1: pair},
                pair,
                protocol,
                protocol.transport,
                {addr: protocol},
                addr,
            )
            routes.append(route)
            twins.append(twin)
        b.begin()
        expected: list[list[bytes]] = [[], []]
        order = [0, 1, 1, 0, 1, 0, 0, 1]
        for i, k in enumerate(order):
            packet = build_rtp(96, 100 + i, 3000 * i, 1000 + k, bytes([i]) * 300)
            assert routes[k].send(packet) is True
            expected[k].append(twins[k].protect(packet))
        assert [a for _d, a in b.take(0)] == [receivers[k].getsockname() for k in order]
        for i, k in enumerate(order):  # again, now sent
            packet = build_rtp(96, 200 + i, 3000 * i, 1000 + k, bytes([i]) * 300)
            assert routes[k].send(packet) is True
            expected[k].append(twins[k].protect(packet))
        assert b.send(sender.fileno(), []) == len(order)
        for k in range(2):
            got = [receivers[k].recv(2000) for _ in range(len(expected[k]) // 2)]
            assert got == expected[k][len(expected[k]) // 2 :]
        b.clear()
        for i in range(256):
            assert routes[i % 2].send(build_rtp(96, 500 + i, 0, 1000 + i % 2, b"x"))
        packet = build_rtp(96, 900, 0, 1000, b"late")
        assert routes[0].send(packet) is False and fell == [(0, packet)]  # full: the fallback
        b.end()
    finally:
        sender.close()
        for r in receivers:
            r.close()


def test_a_route_checks_again_only_after_a_change_is_told():
    """The checks are made once per change, not per packet: a route that passed them sends
    without looking again until invalidate_routes() is called, which every change of a
    Watched table (each of its mutators) does."""
    ours, theirs = sessions_of_one_key(Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 2)
    b = batch.Batch()
    fallen: list[bytes] = []
    route = batch.Route(b, lambda data: fallen.append(bytes(data)) or False)
    dtls, pair, protocol = _Dtls(ours), object(), _Protocol()
    owners = Watched({("127.0.0.1", 40000): protocol})
    nominated = Watched({1: pair})
    addr = ("127.0.0.1", 40000)
    args = (PROTECT, context_of(ours), ours, dtls, nominated, pair, protocol)
    assert route.arm(*args, protocol.transport, owners, addr)
    packets = (build_rtp(96, 1000 + i, 0, 1234, bytes(100)) for i in range(1000))
    b.begin()
    changes = [
        lambda: owners.__setitem__(("10.0.0.1", 1), protocol),
        lambda: owners.__delitem__(("10.0.0.1", 1)),
        lambda: owners.setdefault(("10.0.0.2", 1), protocol),
        lambda: owners.pop(("10.0.0.2", 1)),
        lambda: owners.pop(("10.0.0.3", 1), None),  # nothing there: told all the same
        lambda: owners.update({("10.0.0.4", 1): protocol}),
        lambda: owners.__ior__({("10.0.0.5", 1): protocol}),
        lambda: nominated.__setitem__(2, object()),
        lambda: nominated.popitem(),
        lambda: nominated.update({}),
        invalidate_routes,
    ]
    for change in changes:
        dtls._tx_srtp = ours
        invalidate_routes()
        assert route.send(next(packets)) is True  # checked
        dtls._tx_srtp = theirs  # changed without a word: not seen
        assert route.send(next(packets)) is True
        change()
        assert route.send(next(packets)) is False  # seen at the next packet
        assert len(b) == 2 and len(fallen) == 1
        b.clear()
        b.begin()
        fallen.clear()
    dtls._tx_srtp = ours
    invalidate_routes()
    assert route.send(next(packets)) is True  # checked again, and passed
    nominated.clear()
    assert route.send(next(packets)) is False  # clear() told it: nothing nominated now
    b.end()
