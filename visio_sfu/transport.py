"""PeerTransport: an aiortc RTCPeerConnection whose media pipeline is bypassed.

The only module that touches aiortc, aioice and pylibsrtp, with udpmux.py (one UDP port for
every connection, which it hooks into aioice's gathering: ``set_udp_mux``). aiortc gives us
SDP, ICE, DTLS and SRTP; we take over at the DTLS transport, where decrypted RTP/RTCP arrive and
raw RTP/RTCP leave, so that no aiortc decoder, encoder, jitter buffer or per-packet
``RtpPacket`` is ever involved. Everything else in the SFU sees our own values (``Codec``,
``NegotiatedMedia``, ``Slot``), never an aiortc object. The process-wide hook into aioice is
installed by ``install()`` (every PeerTransport calls it), not on import.
``tests/test_transport_hooks.py`` fails loudly if an upgrade moves a hook, and sends a packet
through the hooked path.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import logging
import secrets
import socket
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

import aioice.ice
import aiortc.rtcpeerconnection
from aioice.ice import StunProtocol
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceCandidate,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtcdtlstransport import (
    SRTP_AEAD_AES_128_GCM,
    SRTP_AEAD_AES_256_GCM,
    SRTP_AES128_CM_SHA1_80,
    SRTP_PROFILES,
)
from aiortc.rtcrtpparameters import (
    RTCRtcpFeedback,
    RTCRtpCodecCapability,
    RTCRtpCodecParameters,
)
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.sdp import candidate_from_sdp
from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

from . import icerestart, udpmux
from .errors import TransportError
from .media import Codec, NegotiatedMedia
from .udpmux import UdpMux

try:  # libsrtp's protect in one call from Python (visio_sfu/_batch.c), when it was built
    from ._batch import Route  # type: ignore[import-not-found]
    from ._batch import srtp_protect_copy as _protect_copy
except ImportError:  # pragma: no cover - depends on the build
    _protect_copy = Route = None
_PROTECT_ADDRESS = int(_srtp_ffi.cast("uintptr_t", _srtp_ffi.addressof(_srtp_lib, "srtp_protect")))

logger = logging.getLogger(__name__)

RtpHandler = Callable[[bytes, float], None]
RtcpHandler = Callable[[bytes], None]
#: ``(label, message)`` for every message a data channel of the peer receives
DataHandler = Callable[[str, bytes], None]
#: the largest data-channel message accepted from a peer; longer ones are dropped
MAX_DATA_MESSAGE = 64 * 1024
#: receive buffer asked for each ICE socket: a second of a 1080p camera and its simulcast
#: layers, so that a pause of the event loop (a collection, a burst of work) does not drop
#: datagrams in the kernel (Linux's default, 208 KiB, holds 0.3 s of 5 Mbit/s; the kernel caps
#: what is given at net.core.rmem_max)
RECEIVE_BUFFER = 4 * 1024 * 1024
_buffer_warned = False

#: DTLS ciphers: aiortc's ECDSA suites plus ECDHE-RSA ones, so that clients with RSA
#: certificates (GStreamer's webrtcbin, WHIP tools) can complete the handshake.
DTLS_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:"
    b"ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-SHA"
)


#: Codecs the SFU's connections negotiate beside aiortc's own: VP9 (profile 0), which the SFU
#: forwards as bytes (spatial and temporal layers chosen per subscriber: forwarder.SvcForwarder)
#: and aiortc never has to encode or decode. Only inside a PeerTransport's negotiation calls
#: (a ContextVar), so an aiortc client in the same process never offers or accepts it.
_FEEDBACK = [RTCRtcpFeedback("nack"), RTCRtcpFeedback("nack", "pli"), RTCRtcpFeedback("goog-remb")]
SFU_CODECS: dict[str, list[RTCRtpCodecParameters]] = {
    "video": [
        RTCRtpCodecParameters(
            mimeType="video/VP9",
            clockRate=90000,
            payloadType=103,
            rtcpFeedback=_FEEDBACK,
            parameters={"profile-id": "0"},
        ),
        RTCRtpCodecParameters(
            mimeType="video/rtx", clockRate=90000, payloadType=104, parameters={"apt": 103}
        ),
    ]
}
_negotiating = contextvars.ContextVar("visio_sfu_negotiating", default=False)


class _Codecs(dict):
    """aiortc's codec table as its RTCPeerConnection reads it: with SFU_CODECS added while a
    PeerTransport negotiates."""

    def __getitem__(self, kind: str) -> list[RTCRtpCodecParameters]:
        codecs = super().__getitem__(kind)
        if _negotiating.get() and kind in SFU_CODECS:
            return codecs + SFU_CODECS[kind]
        return codecs


def _profile_ids(sdp: str) -> dict[int, str]:
    """VP9 payload types of an SDP and their profile-id ("0" when absent)."""
    vp9: dict[int, str] = {}
    for line in sdp.splitlines():
        if line.startswith("a=rtpmap:") and " VP9/" in line.upper():
            head = line[9:].split(" ", 1)[0]
            if head.isdigit():
                vp9.setdefault(int(head), "0")
    for line in sdp.splitlines():
        if line.startswith("a=fmtp:"):
            head, _, params = line[7:].partition(" ")
            if head.isdigit() and int(head) in vp9:
                for item in params.split(";"):
                    key, _, value = item.strip().partition("=")
                    if key == "profile-id":
                        vp9[int(head)] = value.strip()
    return vp9


def _keep_vp9_profile_0(pc: RTCPeerConnection, offer_sdp: str) -> None:
    """Drop from the negotiated codecs the VP9 payload types of other profiles (aiortc
    matches VP9 by name only), and their RTX."""
    other = {pt for pt, profile in _profile_ids(offer_sdp).items() if profile != "0"}
    if not other:
        return
    for t in pc.getTransceivers():
        t._codecs = [
            c
            for c in t._codecs
            if c.payloadType not in other and (c.parameters or {}).get("apt") not in other
        ]


def _offered_formats(sdp: str) -> dict[str, dict[int, str]]:
    """Each m-section's payload types and their codec names (lower case), by mid."""
    out: dict[str, dict[int, str]] = {}
    formats: dict[int, str] = {}
    for line in sdp.splitlines():
        if line.startswith("m="):
            formats = {}
        elif line.startswith("a=mid:"):
            out[line[6:].strip()] = formats
        elif line.startswith("a=rtpmap:"):
            head, _, rest = line[9:].partition(" ")
            if head.isdigit():
                formats[int(head)] = rest.split("/", 1)[0].strip().lower()
    return out


def _keep_offered_formats(pc: RTCPeerConnection, offer_sdp: str) -> None:
    """Keep only the negotiated codecs whose payload type the offer gives that codec.

    aiortc keeps its own payload type for a codec the offer numbers below 96 (Chromium gives
    newer formats 35-63): such a codec would reach the answer under a number the offer gives
    another codec (seen: VP9 as 103, the offer's H.264 RTX), and the browser rejects the
    answer ("Duplicate payload type with conflicting codec name"). Those are dropped, and
    the RTX of a dropped codec with them."""
    offered = _offered_formats(offer_sdp)
    for t in pc.getTransceivers():
        formats = offered.get(t.mid or "")
        if formats is None:
            continue
        kept: list = []
        seen: set[int] = set()
        for c in t._codecs:
            pt = c.payloadType
            if pt is None or pt in seen:
                continue
            name = formats.get(pt)
            if name != c.mimeType.split("/")[-1].lower() and (name is not None or pt >= 96):
                continue  # (a static payload type may come without its a=rtpmap)
            kept.append(c)
            seen.add(pt)
        t._codecs = [
            c
            for c in kept
            if not c.mimeType.lower().endswith("/rtx")
            or int((c.parameters or {}).get("apt", -1)) in seen
        ]


def _prefer_codecs(pc: RTCPeerConnection, prefer: dict[str, str]) -> None:
    """Move a codec (and its RTX) first in the negotiated codecs of some m-sections."""
    for t in pc.getTransceivers():
        mime = prefer.get(t.mid or "", "").lower()
        first = next((c for c in t._codecs if c.mimeType.lower() == mime), None)
        if first is None:
            continue
        rtx = [c for c in t._codecs if (c.parameters or {}).get("apt") == first.payloadType]
        t._codecs = [first, *rtx] + [c for c in t._codecs if c is not first and c not in rtx]


#: SRTP profiles in our order of preference: AES-GCM costs about 1.5 µs to protect a 1200-byte
#: packet here, AES-CM with HMAC-SHA1 about 2.4 µs (benchmarks/hotpath.py); 128-bit keys first.
PREFERRED_SRTP_PROFILES = [
    p
    for p in (SRTP_AEAD_AES_128_GCM, SRTP_AEAD_AES_256_GCM, SRTP_AES128_CM_SHA1_80)
    if p in SRTP_PROFILES
]

_MAX_PACKET = 1500
_SRTP_TRAILER = 144  # the largest SRTP/SRTCP trailer libsrtp may append


class SrtpProtector:
    """SRTP protect straight through libsrtp: one preallocated buffer, no copy to ``bytes`` first.

    pylibsrtp's ``Session.protect`` allocates per call and insists on ``bytes``; on the
    forwarding path that costs about 0.5 µs per packet (benchmarks/hotpath.py).
    """

    __slots__ = ("session", "_ctx", "_cdata", "_buffer", "_len", "_address")

    def __init__(self, session: Any) -> None:
        self.session = session  # keeps the libsrtp context alive
        self._ctx = session._srtp[0]
        self._cdata = _srtp_ffi.new("char[]", _MAX_PACKET + _SRTP_TRAILER)
        self._buffer = _srtp_ffi.buffer(self._cdata)
        self._len = _srtp_ffi.new("int *")
        self._address = int(_srtp_ffi.cast("uintptr_t", self._ctx))

    def protect(self, data: bytes | bytearray) -> bytes | None:
        """The SRTP packet for an RTP packet, or None if libsrtp refused it. A copy of its
        own (cffi's slice): the media port sends a fan-out's packets after all are made
        (udpmux batching); a view of the shared buffer would send the last one N times.
        Compiled (``_batch.srtp_protect_copy``: the same call, into new bytes) when built."""
        if _protect_copy is not None:
            return _protect_copy(_PROTECT_ADDRESS, self._address, data)
        n = len(data)
        if n > _MAX_PACKET:
            return None
        self._buffer[0:n] = data
        self._len[0] = n
        if _srtp_lib.srtp_protect(self._ctx, self._cdata, self._len):
            return None
        return self._buffer[0 : self._len[0]]


def _without_mdns(sdp: str) -> str:
    """A remote description as aiortc should see it: no candidate with an mDNS name (Firefox's
    and Chromium's host candidates, ``<uuid>.local``: aioice spends a second failing to resolve
    each, the address is learnt from peer-reflexive checks instead, as for trickled ones) and,
    when some were left out, no ``a=end-of-candidates`` (with no candidate left, aioice then
    gave up on the component and our answer carried no candidate at all: Firefox's WHIP and
    WHEP offers). A description with addresses keeps its end: aioice then fails its checks in
    time when nothing answers."""
    if ".local" not in sdp:
        return sdp
    lines = sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n")
    kept = []
    for line in lines:
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) > 4 and fields[4].lower().endswith(".local"):
                continue
        kept.append(line)
    if len(kept) < len(lines):  # names left out: the end is not the end (checks may come)
        kept = [line for line in kept if not line.startswith("a=end-of-candidates")]
    return ("\r\n" if "\r\n" in sdp else "\n").join(kept)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


_loopback_only = False
_ice_addresses: list[str] | None = None


def ice_addresses() -> list[str] | None:
    """The addresses set by set_ice_addresses (None: every non-loopback interface), so that
    whoever changes them for a while can put them back."""
    return None if _ice_addresses is None else list(_ice_addresses)


def set_ice_addresses(addresses: list[str] | None) -> None:
    """Gather host candidates on these addresses only (None: every non-loopback interface).

    Process-wide: aioice reads the host addresses from one module-level function. When every
    address is a loopback one, remote candidates elsewhere are ignored (they are unreachable).
    """
    global _loopback_only, _ice_addresses
    if not addresses:
        aioice.ice.get_host_addresses = _default_host_addresses
        _loopback_only = False
        _ice_addresses = None
        return
    chosen = list(addresses)
    _ice_addresses = list(chosen)
    _loopback_only = all(_is_loopback(a) for a in chosen)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


_default_host_addresses = aioice.ice.get_host_addresses

_udp_mux: UdpMux | None = None


def set_udp_mux(mux: UdpMux | None) -> None:
    """Gather every PeerTransport made from now on on this one UDP port (a started UdpMux),
    instead of sockets of its own on ephemeral ports (None: those again). Process-wide."""
    global _udp_mux
    if mux is not None:
        udpmux.install()
    _udp_mux = mux


def udp_mux() -> UdpMux | None:
    """The mux set by set_udp_mux, if any."""
    return _udp_mux


#: SRTP/SRTCP datagrams of a connected PeerTransport skip aioice's receive queue and aiortc's
#: DTLS receive task: they are unprotected and dispatched in the datagram callback itself.
FAST_RECEIVE = True

_stun_datagram_received = StunProtocol.datagram_received


def _datagram_received(self: StunProtocol, data: bytes, addr: tuple) -> None:
    if FAST_RECEIVE and data and 127 < data[0] < 192:
        media = getattr(self.receiver, "_visio_media", None)
        if media is not None and media(data):
            return
    _stun_datagram_received(self, data, addr)


def install() -> None:
    """Route SRTP datagrams of connected PeerTransports past aioice's queue (process-wide,
    idempotent; every PeerTransport calls it). Other aioice users are unaffected: a datagram
    whose connection has no PeerTransport goes the usual way."""
    if StunProtocol.datagram_received is not _datagram_received:
        setattr(StunProtocol, "datagram_received", _datagram_received)  # noqa: B010
    if not isinstance(aiortc.rtcpeerconnection.CODECS, _Codecs):
        aiortc.rtcpeerconnection.CODECS = _Codecs(aiortc.rtcpeerconnection.CODECS)


def installed() -> bool:
    """Whether install() has run."""
    return StunProtocol.datagram_received is _datagram_received


class Slot:
    """One m-section we send on (the subscriber connection): an aiortc transceiver behind our
    own small API, so that no other module handles aiortc objects."""

    __slots__ = ("_t",)

    def __init__(self, transceiver: RTCRtpTransceiver) -> None:
        self._t = transceiver

    @property
    def mid(self) -> str | None:
        """The m-section's mid, once an offer has been made."""
        return self._t.mid

    @property
    def kind(self) -> str:
        """audio or video."""
        return self._t.kind

    @property
    def direction(self) -> str:
        """The direction offered next: sendonly, or inactive when released."""
        return self._t.direction

    @direction.setter
    def direction(self, value: str) -> None:
        self._t.direction = value

    def set_msid(self, stream_id: str, track_id: str) -> None:
        """Set the a=msid written for this m-section."""
        self._t.sender._stream_id = stream_id
        self._t.sender._track_id = track_id

    def release_msid(self) -> None:
        """Give a slot that carries no track an msid of its own: no stream ("-") and a fresh
        track id. Browsers reject a whole offer in which two m-sections share an msid
        (Chromium: "Duplicate a=msid lines detected"), so released slots never share one."""
        self.set_msid("-", f"unused-{secrets.token_hex(8)}")

    @property
    def msid(self) -> tuple[str, str]:
        """(stream id, track id) of the a=msid written for this m-section."""
        return self._t.sender._stream_id, self._t.sender._track_id

    def set_codec(self, codec: Codec | None) -> None:
        """Offer only the codec capability matching ``codec``."""
        _set_codec(self._t, codec)

    def describe(self) -> NegotiatedMedia:
        """What this m-section negotiated."""
        return _describe(self._t)


def _codec(c: RTCRtpCodecParameters) -> Codec:
    return Codec(
        mime=c.mimeType,
        clock_rate=c.clockRate,
        payload_type=c.payloadType if c.payloadType is not None else 0,
        channels=c.channels,
        parameters=dict(c.parameters or {}),
    )


def _describe(t: RTCRtpTransceiver) -> NegotiatedMedia:
    return NegotiatedMedia(
        mid=t.mid or "",
        kind=t.kind,
        direction=t.currentDirection or t.direction,
        codecs=[_codec(c) for c in t._codecs],
        extensions={e.uri: e.id for e in t._headerExtensions},
        ssrc=t.sender._ssrc,
        rtx_ssrc=t.sender._rtx_ssrc
        if any(c.mimeType.lower().endswith("/rtx") for c in t._codecs)
        else 0,
    )


def _set_codec(transceiver: RTCRtpTransceiver, codec: Codec | None) -> None:
    if codec is None:
        return
    extra = next(
        (
            c
            for c in SFU_CODECS.get(transceiver.kind, [])
            if c.mimeType.lower() == codec.mime.lower()
        ),
        None,
    )
    if extra is not None:
        transceiver._preferred_codecs = [
            RTCRtpCodecCapability(extra.mimeType, extra.clockRate, parameters=extra.parameters)
        ]
        return
    caps = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    best: RTCRtpCodecCapability | None = None
    for cap in caps:
        if cap.mimeType.lower() != codec.mime.lower():
            continue
        if codec.mime.lower() == "video/h264":
            want = codec.parameters or {}
            if str(cap.parameters.get("packetization-mode", "0")) != str(
                want.get("packetization-mode", "0")
            ):
                continue
            pli = str(want.get("profile-level-id", ""))[:2].lower()
            if pli and str(cap.parameters.get("profile-level-id", ""))[:2].lower() != pli:
                continue
        best = cap
        break
    if best is not None:
        # video with its retransmission format (RFC 4588): resends and probes go on the RTX
        # stream, where a receiver's SRTP replay check and jitter buffer take them
        rtx = next((c for c in caps if c.mimeType.lower().endswith("/rtx")), None)
        transceiver.setCodecPreferences([best] if rtx is None else [best, rtx])


class PeerTransport:
    """One peer connection, bypassing aiortc's media pipeline.

    ``on_rtp(data, arrival_s)`` receives every decrypted RTP packet as bytes, ``on_rtcp(data)``
    every decrypted compound RTCP packet; ``send_rtp``/``send_rtcp`` protect and send raw bytes
    synchronously, in the caller's call chain.
    """

    #: every transport not yet closed, for leak checks and stats
    open_transports: weakref.WeakSet[PeerTransport] = weakref.WeakSet()
    #: SRTP/SRTCP failures of closed transports (so that totals never go down)
    closed_errors: dict[str, int] = {"receive": 0, "send": 0}
    #: ICE restarts of every transport of this process (a client's network changed)
    ice_restarts_total = 0

    @classmethod
    def errors(cls) -> dict[str, int]:
        """SRTP/SRTCP packets that failed to unprotect ("receive") or protect ("send"), all
        transports of this process, open and closed."""
        out = dict(cls.closed_errors)
        for t in list(cls.open_transports):
            out["receive"] += t.receive_errors
            out["send"] += t.send_errors
        return out

    def __init__(
        self,
        on_rtp: RtpHandler | None = None,
        on_rtcp: RtcpHandler | None = None,
        on_state: Callable[[str], None] | None = None,
        decrypt: bool = True,
        on_data: DataHandler | None = None,
    ) -> None:
        install()
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.on_state = on_state
        self._mux = _udp_mux  # the one UDP port its ICE gathers on (None: ports of its own)
        self._dtls: Any = None  # the RTCDtlsTransport we hooked (private API: untyped)
        self._sized: set[int] = set()  # ICE protocols whose socket buffer was sized
        #: receive buffer asked for this transport's ICE sockets (0: the kernel's default)
        self.receive_buffer = RECEIVE_BUFFER
        self._protector: SrtpProtector | None = None
        self._armed: SrtpProtector | None = None  # the protector the pair was last taken with
        self._pair: Any = None  # the nominated pair send_rtp last used, and its remote address
        self._pair_addr: Any = None
        mux = self._mux
        #: the compiled send into the media port's batch (see rtp_sender), when there is one
        self._route: Any = (
            Route(mux.batch, self.send_rtp) if mux is not None and mux.batch is not None else None
        )
        self._closed = False
        self.send_errors = 0
        self.receive_errors = 0
        # False: on_rtp gets SRTP packets as they arrived (header in clear, payload still
        # encrypted): load tools count packets without paying for decryption
        self.decrypt = decrypt
        self.pc.on("connectionstatechange", self._state_changed)
        # data channels (SCTP): those the peer opens, and ours (open_data_channels), by label
        self.on_data = on_data
        self._channels: dict[str, Any] = {}
        self._sctp_first = False  # our channels were made before any transceiver
        self.data_dropped = 0  # messages too large, or sent while no channel was open
        # ICE restarts (icerestart.py): our next offer renews our credentials; candidates
        # trickled for a generation not applied yet wait for it
        self._restart_wanted = False
        self._trickle = icerestart.TrickleBuffer()
        self._checks: asyncio.Future | None = None
        self._pending_restart: Any = None  # restarted by receive_offer, for make_answer
        self.ice_restarts = 0
        if on_data is not None:
            self.pc.on("datachannel", self._channel_opened)
        PeerTransport.open_transports.add(self)

    # -- state ---------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The peer connection state: new, connecting, connected, failed or closed; closed
        from the moment it starts closing (by either side), when aiortc stops taking new
        transceivers, where its own connectionState says so only once the closing is done."""
        if self._closed or self.pc.signalingState == "closed":
            return "closed"
        return self.pc.connectionState

    def _state_changed(self) -> None:
        if self.on_state is not None:
            self.on_state(self.pc.connectionState)

    # -- negotiation -----------------------------------------------------------------------
    async def answer(self, offer_sdp: str, prefer: dict[str, str] | None = None) -> str:
        """Apply a remote offer and return our answer (the publisher connection); ``prefer``:
        mid -> the MIME type to put first in that m-section's answer (what the sender uses)."""
        token = _negotiating.set(True)
        try:
            restarted = self._restart_from(offer_sdp, renew=True)
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=_without_mdns(offer_sdp), type="offer")
            )
            _keep_vp9_profile_0(self.pc, offer_sdp)
            _keep_offered_formats(self.pc, offer_sdp)
            if prefer:
                _prefer_codecs(self.pc, prefer)
            self._hook_all()
            self._gather_on_mux()
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
            await self._restarted(restarted)
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise TransportError(f"offer rejected: {exc}") from None
        except Exception as exc:  # aiortc's InternalError, InvalidStateError...
            raise TransportError(f"offer rejected: {type(exc).__name__}: {exc}") from None
        finally:
            _negotiating.reset(token)
        self._hook_all()
        return self.pc.localDescription.sdp

    async def receive_offer(
        self, offer_sdp: str, prefer: dict[str, str] | None = None
    ) -> list[Slot]:
        """Apply a remote offer whose m-sections we will send on (a WHEP player's, or a
        single-connection client's); returns them in order, to be given a direction and a
        track before ``make_answer``. ``prefer``: as for ``answer``."""
        token = _negotiating.set(True)
        try:
            self._pending_restart = self._restart_from(offer_sdp, renew=True)
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=_without_mdns(offer_sdp), type="offer")
            )
            _keep_vp9_profile_0(self.pc, offer_sdp)
            _keep_offered_formats(self.pc, offer_sdp)
            if prefer:
                _prefer_codecs(self.pc, prefer)
        except Exception as exc:  # aiortc raises ValueError, KeyError, InternalError...
            raise TransportError(f"offer rejected: {type(exc).__name__}: {exc}") from None
        finally:
            _negotiating.reset(token)
        self._hook_all()
        return [Slot(t) for t in self.pc.getTransceivers()]

    async def make_answer(self) -> str:
        """Create and apply our answer to the remote offer applied by ``receive_offer``."""
        token = _negotiating.set(True)
        try:
            self._gather_on_mux()
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
            restarted, self._pending_restart = self._pending_restart, None
            await self._restarted(restarted)
        except Exception as exc:  # aiortc's InternalError, InvalidStateError...
            raise TransportError(f"offer rejected: {type(exc).__name__}: {exc}") from None
        finally:
            _negotiating.reset(token)
        self._hook_all()
        return self.pc.localDescription.sdp

    def add_slot(self, kind: str, codec: Codec | None) -> Slot:
        """Add a send-only m-section (subscriber connection), offering only ``codec``."""
        transceiver = self.pc.addTransceiver(kind, direction="sendonly")
        _set_codec(transceiver, codec)
        self._hook_transceiver(transceiver)
        self._hook_all()
        return Slot(transceiver)

    async def create_offer(self) -> str:
        """Create and apply a local offer (the subscriber connection)."""
        token = _negotiating.set(True)
        try:
            self._gather_on_mux()
            if self._restart_wanted:
                self._restart_wanted = False
                for ice in self._started_ice():
                    icerestart.renew_local(ice._connection, self._mux)
            offer = await self.pc.createOffer()
            await self.pc.setLocalDescription(offer)
        finally:
            _negotiating.reset(token)
        self._hook_all()
        return self.pc.localDescription.sdp

    @property
    def has_remote_description(self) -> bool:
        """Whether a remote description was applied (candidates can be added)."""
        return self.pc.remoteDescription is not None

    async def apply_answer(self, answer_sdp: str) -> None:
        """Apply the remote answer to our offer."""
        token = _negotiating.set(True)
        try:
            restarted = self._restart_from(answer_sdp, renew=False)
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=_without_mdns(answer_sdp), type="answer")
            )
            await self._restarted(restarted)
        except Exception as exc:
            raise TransportError(f"answer rejected: {type(exc).__name__}: {exc}") from None
        finally:
            _negotiating.reset(token)
        self._hook_all()

    async def add_ice_candidate(self, candidate: dict | None) -> None:
        """Add a trickled remote candidate ({candidate, sdpMid, sdpMLineIndex}; None = end)."""
        if candidate is None or not candidate.get("candidate"):
            return  # end of candidates: aioice needs nothing
        text = candidate["candidate"]
        if not isinstance(text, str) or len(text) > 1024:
            raise TransportError("candidate must be a string")
        if text.startswith("candidate:"):
            text = text[len("candidate:") :]
        try:
            ice: RTCIceCandidate = candidate_from_sdp(text)
        except Exception:
            raise TransportError("candidate could not be parsed") from None
        ufrag = candidate.get("usernameFragment")
        started = self._started_ice()
        current = started[0]._connection.remote_username if started else None
        if isinstance(ufrag, str) and self._trickle.early(ufrag, current):
            self._trickle.keep(ufrag, candidate)  # for an ICE restart not applied yet
            return
        ice.sdpMid = candidate.get("sdpMid")
        ice.sdpMLineIndex = candidate.get("sdpMLineIndex")
        if ice.sdpMid is None and ice.sdpMLineIndex is None:
            ice.sdpMLineIndex = 0
        if ice.ip.endswith(".local"):
            return  # mDNS names: the address is learnt from peer-reflexive checks instead
        if _loopback_only and not _is_loopback(ice.ip):
            return  # our sockets are bound to loopback: that address is unreachable
        try:
            if self._sctp_first and self.pc.sctp is not None:
                # every section is bundled on the SCTP transport's: aiortc would add the
                # candidate nowhere (see open_data_channels)
                await self.pc.sctp.transport.transport.addRemoteCandidate(ice)
            else:
                await self.pc.addIceCandidate(ice)
        except Exception as exc:
            raise TransportError(f"candidate rejected: {type(exc).__name__}") from None

    # -- ICE restarts (icerestart.py) ----------------------------------------------------------
    def restart_ice(self) -> None:
        """Our next offer restarts ICE: new credentials, then new checks once the answer
        comes (a client whose network changed asks for it on the connection we offer on)."""
        self._restart_wanted = True

    async def restart_with(self, ufrag: str, pwd: str) -> tuple[str, str, list[str]]:
        """Restart ICE with the peer's new credentials given out of band, not in a description
        (a WHIP or WHEP client's PATCH, RFC 9725 section 4.4.1): ours are renewed, then the
        peer's new candidates are added as they come. Returns our new ``(ufrag, pwd,
        candidates)`` (``candidate:...`` lines) for the peer; TransportError if there is no
        connection to restart."""
        started = self._started_ice()
        if len(started) != 1:
            raise TransportError("no ICE connection to restart")
        connection = self._restart(started[0], ufrag, pwd, renew=True)
        await self._restarted(connection)
        lines = [f"candidate:{c.to_sdp()}" for c in connection.local_candidates]
        return connection.local_username, connection.local_password, lines

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """Where media to the peer goes (the nominated pair's remote address), if anywhere."""
        started = self._started_ice()
        return icerestart.nominated_address(started[0]._connection) if started else None

    def _started_ice(self) -> list[Any]:
        """aiortc's ICE transports that applied a remote description and still run."""
        transports = self.pc._RTCPeerConnection__iceTransports  # type: ignore[attr-defined]
        return [
            ice
            for ice in transports
            if ice.state != "closed" and ice._connection.remote_username is not None
        ]

    def _restart_from(self, sdp: str, renew: bool) -> Any:
        """Before a remote description: if it carries new ICE credentials (the peer restarts
        ICE), start the new generation (``renew``: ours are renewed too, as we answer); the
        aioice Connection restarted, or None."""
        credentials = icerestart.ice_credentials(sdp)
        started = self._started_ice()
        if credentials is None or len(started) != 1:
            return None  # a first negotiation (or unbundled transports: not restarted)
        connection = started[0]._connection
        if credentials == (connection.remote_username, connection.remote_password):
            return None
        return self._restart(started[0], *credentials, renew=renew)

    def _restart(self, ice: Any, ufrag: str, pwd: str, renew: bool) -> Any:
        """Start the peer's new ICE generation on aiortc's ICE transport ``ice`` (``renew``:
        with new credentials of ours); its aioice Connection."""
        connection = ice._connection
        if renew:
            icerestart.renew_local(connection, self._mux)
        icerestart.restart_remote(connection, ufrag, pwd, gatherer=ice.iceGatherer)
        self.ice_restarts += 1
        PeerTransport.ice_restarts_total += 1
        logger.info("ICE restart (%d on this connection)", self.ice_restarts)
        return connection

    async def _restarted(self, connection: Any) -> None:
        """After the description that restarted ICE: the candidates that waited for it, then
        checks, if we control."""
        if connection is None:
            return
        for candidate in self._trickle.take(connection.remote_username):
            try:
                await self.add_ice_candidate(candidate)
            except TransportError:
                pass  # a candidate we cannot use, as on the first generation
        if connection.ice_controlling:
            if self._checks is not None:
                self._checks.cancel()
            self._checks = asyncio.ensure_future(icerestart.run_checks(connection))

    def negotiated(self) -> list[NegotiatedMedia]:
        """The m-sections as negotiated so far (codecs, extension ids, our SSRC)."""
        return [_describe(t) for t in self.pc.getTransceivers() if t.mid is not None]

    # -- hooks -------------------------------------------------------------------------
    def _gather_on_mux(self) -> None:
        """Before a local description: the ICE connections that have not gathered yet
        gather on the process's UdpMux, if there is one (set_udp_mux)."""
        mux = self._mux
        if mux is None:
            return
        for ice in self.pc._RTCPeerConnection__iceTransports:  # type: ignore[attr-defined]
            connection = ice.iceGatherer._connection
            if not connection._local_candidates_start:
                mux.reserve(connection)
                connection._visio_mux = mux

    # -- hooks -------------------------------------------------------------------------
    def _hook_all(self) -> None:
        for t in self.pc.getTransceivers():
            self._hook_transceiver(t)
        self._size_buffers()

    def _size_buffers(self) -> None:
        """Give each ICE socket gathered so far a RECEIVE_BUFFER (once each); warn once per
        process if the kernel gives less (raise net.core.rmem_max)."""
        global _buffer_warned
        size = self.receive_buffer
        if self._dtls is None or size <= 0:
            return
        for protocol in self._dtls.transport._connection._protocols:
            transport = protocol.transport
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is None or id(protocol) in self._sized:
                continue
            self._sized.add(id(protocol))
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
                given = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            except OSError:
                continue
            if sys.platform.startswith("linux"):
                given //= 2  # Linux reports twice what it gives (room for its bookkeeping)
            if given < size and not _buffer_warned:
                _buffer_warned = True
                logger.warning(
                    "UDP receive buffers are %d KiB, not the %d KiB asked for: a pause of the "
                    "event loop may drop media; raise net.core.rmem_max (sysctl) to %d",
                    given // 1024,
                    size // 1024,
                    size,
                )

    def _hook_transceiver(self, t: RTCRtpTransceiver) -> None:
        sender: Any = t.sender  # private attributes are set below: untyped on purpose
        receiver: Any = t.receiver
        if not getattr(sender, "_visio_hooked", False):
            # aiortc's sender would start an RTP loop (polling for a track, encoding) and an
            # RTCP loop (sender reports with zero timestamps, BYE on stop): neither runs.
            async def send(parameters: object) -> None:
                return None

            sender.send = send
            sender._visio_hooked = True
        if not getattr(receiver, "_visio_hooked", False):
            # aiortc's receiver would start a decoder thread and an RTCP loop: neither runs.
            async def receive(parameters: object) -> None:
                return None

            receiver.receive = receive
            receiver._visio_hooked = True
        dtls = receiver.transport
        if dtls is not None:
            self._hook_dtls(dtls)

    def _hook_dtls(self, dtls: Any) -> None:  # an RTCDtlsTransport, hooked through its privates
        if getattr(dtls, "_visio_hooked", False):
            self._dtls = self._dtls or dtls
            return
        dtls._visio_hooked = True
        dtls._srtp_profiles = PREFERRED_SRTP_PROFILES
        # cipher list with RSA suites (see DTLS_CIPHERS); the certificate object builds it
        cert = dtls._RTCDtlsTransport__local_certificate
        if not getattr(cert, "_visio_hooked", False):
            cert._visio_hooked = True
            original = cert._create_ssl_context

            def create_ssl_context(srtp_profiles: list) -> object:
                ctx = original(srtp_profiles)
                ctx.set_cipher_list(DTLS_CIPHERS)
                return ctx

            cert._create_ssl_context = create_ssl_context

        async def handle_rtp(data: bytes, arrival_time_ms: int) -> None:
            self._deliver_rtp(data)

        async def handle_rtcp(data: bytes) -> None:
            self._deliver_rtcp(data)

        dtls._handle_rtp_data = handle_rtp
        dtls._handle_rtcp_data = handle_rtcp
        if self._dtls is None:
            self._dtls = dtls
            dtls.transport._connection._visio_media = self._media_datagram

    def _media_datagram(self, data: bytes) -> bool:
        """Handle one SRTP/SRTCP datagram now; False leaves it to aiortc (DTLS not done)."""
        now = time.monotonic()
        dtls = self._dtls
        srtp = dtls._rx_srtp if dtls is not None else None
        if srtp is None or self._closed:
            return False
        if len(data) > 1 and 191 < data[1] < 224:  # RTCP packet types 192-223 (RFC 5761)
            try:
                plain = srtp.unprotect_rtcp(data)
            except Exception:
                self.receive_errors += 1
                return True
            self._deliver_rtcp(plain)
            return True
        if self.on_rtp is None:
            return True
        if self.decrypt:
            try:
                data = srtp.unprotect(data)
            except Exception:
                self.receive_errors += 1
                return True
        self._deliver_rtp(data, now)
        return True

    def _deliver_rtp(self, data: bytes, now: float | None = None) -> None:
        """Hand one RTP packet to on_rtp with its arrival time (now if not given); a failing
        handler drops the packet, nothing more."""
        handler = self.on_rtp
        if handler is not None:
            try:
                handler(data, time.monotonic() if now is None else now)
            except Exception:
                logger.exception("RTP handler failed; packet dropped")

    def _deliver_rtcp(self, data: bytes) -> None:
        """Hand one compound RTCP packet to on_rtcp, as _deliver_rtp does for RTP."""
        handler = self.on_rtcp
        if handler is not None:
            try:
                handler(data)
            except Exception:
                logger.exception("RTCP handler failed; packet dropped")

    # -- data channels -------------------------------------------------------------------
    def open_data_channels(self, labels: tuple[tuple[str, bool], ...]) -> None:
        """Create our data channels, ``(label, reliable)`` each: reliable ones ordered, the
        others unordered without retransmission. Call before the first offer.

        aiortc with max-bundle and data channels made before any transceiver replaces the SCTP
        transport's DTLS transport with itself when the answer is applied, then stops it, and
        the connection never comes up; marking the SCTP transport bundled avoids that. Its
        trickled candidates then go to its ICE transport directly (``add_ice_candidate``)."""
        for label, reliable in labels:
            if reliable:
                channel = self.pc.createDataChannel(label, ordered=True)
            else:
                channel = self.pc.createDataChannel(label, ordered=False, maxRetransmits=0)
            self._watch_channel(channel)
        sctp = self.pc.sctp
        if sctp is not None and not self.pc.getTransceivers():
            sctp._bundled = True
            self._sctp_first = True

    def _channel_opened(self, channel: Any) -> None:
        self._watch_channel(channel)

    def _watch_channel(self, channel: Any) -> None:
        label = str(channel.label)[:64]
        if label not in self._channels or self._channels[label].readyState != "open":
            self._channels[label] = channel

        def on_message(message: bytes | str) -> None:
            handler = self.on_data
            if handler is None:
                return
            data = message.encode() if isinstance(message, str) else bytes(message)
            if len(data) > MAX_DATA_MESSAGE:
                self.data_dropped += 1
                return
            try:
                handler(label, data)
            except Exception:
                logger.exception("data handler failed; message dropped")

        channel.on("message", on_message)

    def data_labels(self) -> list[str]:
        """The labels of the data channels open now."""
        return [k for k, c in self._channels.items() if c.readyState == "open"]

    def send_data(self, label: str, data: bytes) -> bool:
        """Send one message on the open data channel ``label``; False if there is none."""
        channel = self._channels.get(label)
        if channel is None or channel.readyState != "open" or self._closed:
            self.data_dropped += 1
            return False
        try:
            channel.send(data)
        except Exception:
            self.data_dropped += 1
            return False
        return True

    # -- introspection for benchmarks and tools -------------------------------------------
    @property
    def ready(self) -> bool:
        """True once DTLS-SRTP is up and ICE has nominated a pair: media can flow."""
        dtls = self._dtls
        return (
            dtls is not None
            and dtls._tx_srtp is not None
            and dtls.transport._connection._nominated.get(1) is not None
        )

    def srtp_tx(self) -> object:
        """The outbound pylibsrtp Session (after DTLS)."""
        return self._dtls._tx_srtp

    def srtp_rx(self) -> object:
        """The inbound pylibsrtp Session (after DTLS)."""
        return self._dtls._rx_srtp

    def socket_sender(self) -> Callable[[bytes], None]:
        """A function sending one datagram to the peer on the nominated pair, as send_rtp does."""
        pair = self._dtls.transport._connection._nominated[1]
        return lambda data: self._sendto(pair, data)

    def sockets(self) -> list[socket.socket]:
        """This side's UDP sockets (ICE candidates), e.g. to size their buffers."""
        out = []
        for protocol in self._dtls.transport._connection._protocols:
            sock = protocol.transport.get_extra_info("socket") if protocol.transport else None
            if sock is not None:
                out.append(sock)
        return out

    def stop_receiving(self) -> None:
        """Close this side's UDP sockets, leaving the peer sending into the void (benchmarks)."""
        for protocol in self._dtls.transport._connection._protocols:
            if protocol.transport is not None:
                protocol.transport.close()

    def datagram_entry(self) -> Callable[[bytes], None]:
        """What the event loop calls for each datagram arriving on the nominated pair."""
        pair = self._dtls.transport._connection._nominated[1]
        protocol, addr = pair.protocol, pair.remote_addr
        mux = self._mux
        if mux is not None:  # the shared socket's protocol, which finds the connection
            return lambda data: mux.datagram_received(data, addr)
        return lambda data: protocol.datagram_received(data, addr)

    # -- sending -----------------------------------------------------------------------
    @property
    def rtp_sender(self) -> Callable[[bytes | bytearray], bool]:
        """What a DownTrack sends each packet with: ``send_rtp``, or on the media port with
        batching, the compiled Route's ``send``: while the media port handles a datagram, it
        protects the packet straight into the port's batch (one call instead of four), and
        calls ``send_rtp`` whenever it cannot (the batch closed, the pair or SRTP changed)."""
        return self._route.send if self._route is not None else self.send_rtp

    def send_rtp(self, data: bytes | bytearray) -> bool:
        """Protect and send one RTP packet now; False if the transport cannot send yet."""
        dtls = self._dtls
        if dtls is None or self._closed:
            return False
        session = dtls._tx_srtp
        if session is None:
            return False
        pair = dtls._transport._connection._nominated.get(1)
        if pair is None:
            return False
        protector = self._protector
        if protector is None or protector.session is not session:
            protector = self._protector = SrtpProtector(session)
        protected = protector.protect(data)
        if protected is None:
            self.send_errors += 1
            return False
        if pair is not self._pair or protector is not self._armed:
            # aioice builds the address anew at each call: kept
            self._pair, self._pair_addr, self._armed = pair, pair.remote_addr, protector
            self._arm(pair, session, protector)
        protocol = pair.protocol
        if type(protocol) is StunProtocol:  # _sendto, inlined (once per packet sent)
            transport = protocol.transport
            if transport is not None:
                transport.sendto(protected, self._pair_addr)
        else:  # TURN and other relayed protocols are asynchronous
            asyncio.ensure_future(protocol.send_data(protected, self._pair_addr))
        return True

    def _arm(self, pair: Any, session: Any, protector: SrtpProtector) -> None:
        """A new nominated pair: the Route sends on it, if it is an IPv4 UDP address of the
        media port (TURN, ICE-TCP and IPv6 stay with send_rtp), for as long as the pair's
        protocol sends through the media port's transport (a test's impairment wraps it) and
        holds the address there (the mux's sendto claims it again when nobody does). The Route
        checks these again only after a change: the connection's nominated pairs and the mux's
        owner table are ``udpmux.Watched``; whoever wraps a protocol's transport calls
        ``udpmux.invalidate_routes``."""
        route, mux = self._route, self._mux
        if route is None or mux is None:
            return
        addr = self._pair_addr
        if (
            type(pair.protocol) is StunProtocol
            and isinstance(pair.protocol.transport, udpmux._MuxTransport)
            and addr not in mux._tcp
            and addr not in mux._tcp_closed
        ):
            connection = self._dtls._transport._connection
            if type(connection._nominated) is not udpmux.Watched:  # its changes tell the Routes
                connection._nominated = udpmux.Watched(connection._nominated)
            route.arm(
                _PROTECT_ADDRESS,
                protector._address,
                session,
                self._dtls,
                connection._nominated,
                pair,
                pair.protocol,
                pair.protocol.transport,
                mux._owner,
                addr,
            )
        else:
            route.disarm()

    def send_rtcp(self, data: bytes) -> bool:
        """Protect and send one compound RTCP packet now."""
        dtls = self._dtls
        if dtls is None or dtls._tx_srtp is None or self._closed:
            return False
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            return False
        try:
            protected = dtls._tx_srtp.protect_rtcp(data)
        except Exception:
            self.send_errors += 1
            return False
        self._sendto(pair, protected)
        return True

    def _sendto(self, pair: Any, data: bytes) -> None:
        protocol = pair.protocol
        if type(protocol) is StunProtocol:
            transport = protocol.transport
            if transport is not None:
                transport.sendto(data, pair.remote_addr)
        else:  # TURN and other relayed protocols are asynchronous
            asyncio.ensure_future(protocol.send_data(data, pair.remote_addr))

    # -- teardown ----------------------------------------------------------------------
    async def close(self) -> None:
        """Close the peer connection and release its sockets and tasks."""
        if self._closed:
            return
        self._closed = True
        if self._route is not None:
            self._route.disarm()
        if self._checks is not None:
            self._checks.cancel()
        PeerTransport.open_transports.discard(self)
        PeerTransport.closed_errors["receive"] += self.receive_errors
        PeerTransport.closed_errors["send"] += self.send_errors
        self.on_rtp = self.on_rtcp = self.on_state = None
        self.on_data = None
        self._channels.clear()
        if self._dtls is not None:
            self._dtls.transport._connection._visio_media = None
        try:
            await self.pc.close()
        except Exception:
            logger.debug("error closing peer connection", exc_info=True)
