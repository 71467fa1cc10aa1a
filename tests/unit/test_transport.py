"""Canary for the aiortc internals transport.py relies on: fails loudly if an upgrade moves one.

Each assertion names one private attribute or method; if it fails, read the new aiortc source
and update visio_sfu/transport.py (and the aiortc version pin in pyproject.toml).
"""

import asyncio
import inspect

import aiortc
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from tests.support.peers import connected_pair
from visio_sfu.rtp import rtcp
from visio_sfu.rtp.header import build_rtp
from visio_sfu.transport import (
    PREFERRED_SRTP_PROFILES,
    RECEIVE_BUFFER,
    PeerTransport,
    _stun_datagram_received,
    installed,
)


def params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_aiortc_version_is_the_one_hooked():
    assert aiortc.__version__.startswith("1.16."), aiortc.__version__


def test_dtls_transport_hooks_exist():
    assert params(RTCDtlsTransport._handle_rtp_data) == ["self", "data", "arrival_time_ms"]
    assert params(RTCDtlsTransport._handle_rtcp_data) == ["self", "data"]
    src = inspect.getsource(RTCDtlsTransport)
    for name in (
        "self._tx_srtp",
        "self._rx_srtp",
        "self.__local_certificate",
        "await self._handle_rtp_data(",
        "await self._handle_rtcp_data(",
    ):
        assert name in src, name
    assert "_create_ssl_context" in dict(inspect.getmembers(RTCCertificate))
    assert "self._srtp_profiles" in src


def test_libsrtp_entry_points():
    import pylibsrtp
    from pylibsrtp._binding import lib

    assert callable(lib.srtp_protect)
    assert "self._srtp = " in inspect.getsource(pylibsrtp.Session.__init__)


def test_sender_and_receiver_entry_points():
    assert params(RTCRtpSender.send) == ["self", "parameters"]
    assert params(RTCRtpReceiver.receive) == ["self", "parameters"]
    src = inspect.getsource(RTCRtpSender.__init__)
    for name in ("self._ssrc", "self._stream_id"):
        assert name in src, name
    assert "self._track_id" in inspect.getsource(RTCRtpSender)
    t_src = inspect.getsource(RTCRtpTransceiver)
    assert "self._codecs" in t_src and "self._headerExtensions" in t_src


def test_ice_send_path():
    assert "_nominated" in inspect.getsource(Connection.__init__)
    assert "_protocols" in inspect.getsource(Connection.__init__)
    assert "self.receiver.data_received(" in inspect.getsource(_stun_datagram_received)
    assert "remote_addr" in dict(inspect.getmembers(CandidatePair))
    assert "self.transport" in inspect.getsource(StunProtocol)


async def test_hooks_are_installed_on_a_real_connection():
    t = PeerTransport()
    slot = t.add_slot("video", None)
    transceiver = slot._t
    dtls = transceiver.receiver.transport
    assert dtls._visio_hooked and transceiver.sender._visio_hooked
    assert dtls._handle_rtp_data.__qualname__.endswith("handle_rtp")
    assert installed()
    await t.close()
    assert t not in PeerTransport.open_transports


async def test_ice_sockets_get_a_large_receive_buffer():
    """Each side's ICE sockets ask for RECEIVE_BUFFER, so that a pause of the event loop does not
    drop media in the kernel (as much as net.core.rmem_max allows; Linux reports double)."""
    import socket
    from pathlib import Path

    cap = int(Path("/proc/sys/net/core/rmem_max").read_text())
    sender, receiver = await connected_pair()
    try:
        for side in (sender, receiver):
            sizes = [s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) for s in side.sockets()]
            assert sizes and all(n >= 2 * min(RECEIVE_BUFFER, cap) for n in sizes), sizes
    finally:
        await sender.close()
        await receiver.close()


async def test_a_buffer_the_kernel_caps_is_warned_of_once(caplog, monkeypatch):
    """Asking for more than net.core.rmem_max: the server says how to raise it, once."""
    from pathlib import Path

    import visio_sfu.transport as transport

    cap = int(Path("/proc/sys/net/core/rmem_max").read_text())
    monkeypatch.setattr(transport, "_buffer_warned", False)
    monkeypatch.setattr(transport, "RECEIVE_BUFFER", 4 * cap)
    sender, receiver = await connected_pair()
    try:
        warnings = [r for r in caplog.records if "net.core.rmem_max" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
        assert f"UDP receive buffers are {cap // 1024} KiB" in warnings[0].getMessage()
    finally:
        await sender.close()
        await receiver.close()


async def test_a_packet_really_goes_through_the_hooked_path():
    """Behavioural canary: RTP protected and sent by one PeerTransport over UDP on 127.0.0.1
    reaches the other's on_rtp through the datagram callback (aioice's queue and aiortc's
    receive path, made to fail here, are never used), and RTCP the same way."""
    sender, receiver = await connected_pair()
    try:
        got: list[bytes] = []
        rtcp_got: list[bytes] = []
        receiver.on_rtp = lambda data, now: got.append(bytes(data))
        receiver.on_rtcp = rtcp_got.append

        async def not_this_way(*args: object) -> None:
            raise AssertionError("aiortc's receive path was used")

        receiver._dtls._handle_rtp_data = not_this_way
        receiver._dtls._handle_rtcp_data = not_this_way
        packets = [build_rtp(96, 7 + i, 1000 + i, 42, b"payload %d" % i) for i in range(5)]
        for packet in packets:
            assert sender.send_rtp(bytearray(packet))
        assert sender.send_rtcp(rtcp.build_pli(1, 42))
        for _ in range(100):
            if len(got) == 5 and rtcp_got:
                break
            await asyncio.sleep(0.02)
        assert got == packets
        assert rtcp_got == [rtcp.build_pli(1, 42)]
        # garbage SRTP through the same entry: counted, dropped
        receiver.datagram_entry()(b"\x80" + bytes(40))
        assert receiver.receive_errors == 1 and len(got) == 5
        assert PREFERRED_SRTP_PROFILES[0].openssl_profile == b"SRTP_AEAD_AES_128_GCM"
    finally:
        await sender.close()
        await receiver.close()


def test_aioice_and_pylibsrtp_are_the_versions_hooked():
    """transport.py depends on their internals: pyproject pins the versions checked here."""
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    pins = {}
    for requirement in project["project"]["dependencies"]:
        name, _, pinned = requirement.split(";")[0].split("#")[0].partition("==")
        if pinned:
            pins[name.strip()] = pinned.strip()
    for name in ("aioice", "pylibsrtp"):
        assert name in pins, f"pyproject.toml must pin {name} (==): transport.py hooks it"
        assert version(name) == pins[name], (name, version(name), pins[name])


async def test_an_in_process_server_on_another_address_puts_the_ice_addresses_back():
    """An in-process server on another address (the impairment tests' namespace address) sets
    the process's ICE addresses; on exit the session's 127.0.0.1 comes back, or every aiortc
    peer of the tests that follow gathers on an address that is gone and never connects (the
    room layout tests failed so in CI, after the impairment tests)."""
    from tests.support.inprocess import LocalServer
    from visio_sfu.transport import ice_addresses

    assert ice_addresses() == ["127.0.0.1"]  # tests/conftest.py
    async with LocalServer(host="127.0.0.2"):
        assert ice_addresses() == ["127.0.0.2"]
    assert ice_addresses() == ["127.0.0.1"]


async def test_an_offer_with_mdns_candidates_and_their_end_is_answered_with_ours():
    """Firefox's WHEP offer (recorded; default preferences): its host candidates are mDNS
    names and it ends with ``a=end-of-candidates``. aioice cannot resolve the names, and with
    the end of candidates declared it gave up: our answer carried no candidate, and Firefox
    never connected. Those lines are left out; the address comes from its checks."""
    from pathlib import Path

    from visio_sfu.transport import PeerTransport, _without_mdns

    offer = (Path(__file__).parent / "recorded" / "firefox-whep-offer.sdp").read_text()
    assert ".local" in offer and "a=end-of-candidates" in offer
    cleaned = _without_mdns(offer)
    candidates = [x for x in cleaned.splitlines() if x.startswith("a=candidate:")]
    assert not any(".local" in x for x in candidates) and "a=end-of-candidates" not in cleaned
    assert cleaned.count("m=") == offer.count("m=") and "a=fingerprint" in cleaned
    peer = PeerTransport()
    try:
        await peer.receive_offer(offer)
        answer = await peer.make_answer()
        assert "a=candidate:" in answer, answer
    finally:
        await peer.close()
