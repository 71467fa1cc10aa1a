"""Canary for the aiortc internals transport.py relies on: fails loudly if an upgrade moves one.

Each assertion names one private attribute or method; if it fails, read the new aiortc source
and update visio_sfu/transport.py (and the aiortc version pin in pyproject.toml).
"""

import inspect

import aiortc
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from visio_sfu.transport import PeerTransport, _stun_datagram_received


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
    transceiver = t.add_transceiver("video", None)
    dtls = transceiver.receiver.transport
    assert dtls._visio_hooked and transceiver.sender._visio_hooked
    assert dtls._handle_rtp_data.__qualname__.endswith("handle_rtp")
    await t.close()
    assert t not in PeerTransport.open_transports


async def test_srtp_is_handled_in_the_datagram_callback():
    """Once connected, an SRTP datagram reaches on_rtp synchronously (no queue, no task)."""
    from benchmarks.peers import connected_pair
    from visio_sfu.rtp.header import build_rtp
    from visio_sfu.transport import PREFERRED_SRTP_PROFILES, set_ice_addresses

    set_ice_addresses(["127.0.0.1"])
    sender, receiver = await connected_pair()
    try:
        got = []
        receiver.on_rtp = lambda data, now: got.append(data)
        packet = build_rtp(96, 7, 1000, 42, b"payload")
        receiver.datagram_entry()(sender.srtp_tx().protect(packet))
        assert got == [packet]
        receiver.datagram_entry()(b"\x80" + bytes(40))  # garbage SRTP: counted, dropped
        assert receiver.receive_errors == 1 and len(got) == 1
        assert PREFERRED_SRTP_PROFILES[0].openssl_profile == b"SRTP_AEAD_AES_128_GCM"
        assert sender.send_rtp(bytearray(packet))
    finally:
        await sender.close()
        await receiver.close()
