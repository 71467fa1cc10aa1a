"""Bytes-level RTP/RTCP: checked against aiortc's own parser, on real encoder output."""

import fractions

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtcpPacket, RtpPacket, unpack_remb_fci

from visio_sfu.packetcache import PacketCache
from visio_sfu.rtp import rtcp
from visio_sfu.rtp.codecs import h264_is_keyframe, vp8_descriptor, vp8_is_keyframe, vp8_rewrite
from visio_sfu.rtp.extensions import audio_level
from visio_sfu.rtp.header import (
    build_ext_table,
    build_rtp,
    find_extension,
    payload_end,
    payload_offset,
    rewrite_extensions,
    rewrite_header,
)


def test_header_rewrite_matches_aiortc_parse():
    data = build_rtp(
        96,
        65535,
        4_000_000_000,
        0x11223344,
        b"payload",
        marker=True,
        extensions={1: b"0", 3: b"\x01\x02\x03"},
    )
    assert payload_offset(data) == len(data) - len(b"payload")
    buf = bytearray(data)
    rewrite_header(buf, 111, 70000, 2**32 + 5, 0xAABBCCDD)
    parsed = RtpPacket.parse(bytes(buf))
    assert (parsed.payload_type, parsed.sequence_number, parsed.timestamp, parsed.ssrc) == (
        111,
        70000 & 0xFFFF,
        5,
        0xAABBCCDD,
    )
    assert parsed.marker == 1 and parsed.payload == b"payload"


def test_extensions_are_mapped_and_dropped_in_place():
    data = build_rtp(96, 1, 2, 3, b"x", extensions={1: b"0", 2: b"\x85", 3: b"abc"})
    buf = bytearray(data)
    rewrite_extensions(buf, build_ext_table({1: 0, 2: 5, 3: 3}))  # drop mid, 2 -> 5
    assert len(buf) == len(data)
    assert find_extension(buf, 1) is None
    assert bytes(find_extension(buf, 5)) == b"\x85"
    assert bytes(find_extension(buf, 3)) == b"abc"
    assert audio_level(find_extension(buf, 5)) == (True, 5)
    assert RtpPacket.parse(bytes(buf)).payload == b"x"


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x80" * 11,
        b"\x40" + bytes(20),
        b"\x8f" + bytes(12),  # 15 CSRCs announced, none there
        b"\x90" + bytes(11) + b"\xbe\xde\x00\x09",  # ext overruns
        b"\xa0" + bytes(11) + b"\x00",
    ],
)  # padding length 0
def test_invalid_packets_are_refused(bad):
    assert payload_offset(bad) == -1 and payload_end(bad) == -1
    rewrite_extensions(bytearray(bad), bytes(256))  # no exception


def test_rtcp_builders_parse_with_aiortc():
    nack = rtcp.build_nack(1, 2, [100, 101, 117, 300])
    (pkt,) = RtcpPacket.parse(nack)
    assert sorted(pkt.lost) == [100, 101, 117, 300]
    assert rtcp.parse_nack(nack) == [100, 101, 117, 300]
    remb = rtcp.build_remb(7, 2_500_000, [11, 12])
    (pkt,) = RtcpPacket.parse(remb)
    bitrate, ssrcs = unpack_remb_fci(pkt.fci)
    assert abs(bitrate - 2_500_000) < 2_500_000 / 1000 and ssrcs == [11, 12]
    assert rtcp.parse_remb(remb)[1] == [11, 12]
    sr = rtcp.build_sr(5, (123 << 32) | 456, 789, 10, 2000)
    (pkt,) = RtcpPacket.parse(sr)
    assert (pkt.ssrc, pkt.sender_info.ntp_timestamp, pkt.sender_info.rtp_timestamp) == (
        5,
        (123 << 32) | 456,
        789,
    )
    assert rtcp.parse_sr(sr) == (5, (123 << 32) | 456, 789, 10, 2000)
    rr = rtcp.build_rr(9, [(5, 25, 3, 1000, 40, 0, 0)])
    assert rtcp.parse_rr_blocks(rr) == [(5, 25, 3, 1000, 40)]
    compound = rr + rtcp.build_pli(1, 5) + rtcp.build_fir(1, 5, 3) + rtcp.build_sdes_cname(9, "x")
    kinds = [(pt, fmt) for pt, fmt, _ in rtcp.iter_rtcp(compound)]
    assert kinds == [(rtcp.RR, 1), (rtcp.PSFB, rtcp.PLI), (rtcp.PSFB, rtcp.FIR), (rtcp.SDES, 1)]
    assert len(RtcpPacket.parse(compound)) == 4
    fir = [p for pt, f, p in rtcp.iter_rtcp(compound) if f == rtcp.FIR][0]
    assert rtcp.parse_fir(fir) == [(5, 3)]
    assert list(rtcp.iter_rtcp(b"\x80\xc8\xff\xff" + bytes(10))) == []  # length overrun


def encode(mime: str, frames: int = 4):
    codec = RTCRtpCodecParameters(
        mimeType=mime, clockRate=90000, payloadType=96, parameters={"packetization-mode": "1"}
    )
    encoder = get_encoder(codec)
    out = []
    for i in range(frames):
        y = np.full((240, 320), (i * 40) % 255, np.uint8)
        frame = av.VideoFrame.from_ndarray(
            np.concatenate([y, np.full((120, 320), 128, np.uint8)]), format="yuv420p"
        )
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=(i == 0))
        out.append(payloads)
    return out


def test_vp8_keyframes_from_a_real_encoder():
    frames = encode("video/VP8")
    assert vp8_is_keyframe(frames[0][0])
    assert not any(vp8_is_keyframe(p) for p in frames[0][1:])
    assert not any(vp8_is_keyframe(p) for f in frames[1:] for p in f)
    d = vp8_descriptor(frames[1][0])
    assert d is not None and d[2] in (7, 15)
    buf = bytearray(frames[1][0])
    vp8_rewrite(buf, 0, 1234, 7)
    assert vp8_descriptor(buf)[1] == (1234 if d[2] == 15 else 1234 & 0x7F)


def test_h264_keyframes_from_a_real_encoder():
    frames = encode("video/H264")
    assert h264_is_keyframe(frames[0][0])
    assert not any(h264_is_keyframe(p) for f in frames[1:] for p in f)
    assert h264_is_keyframe(bytes([0x7C, 0x85]))  # FU-A start of an IDR
    assert not h264_is_keyframe(bytes([0x7C, 0x05]))  # FU-A continuation
    assert h264_is_keyframe(bytes([0x18, 0, 1, 0x41, 0, 1, 0x67]))  # STAP-A with an SPS


def test_packet_cache_keeps_about_one_second():
    cache = PacketCache(size=8, max_age=1.0)
    for seq in range(65530, 65536 + 4):
        cache.add(seq & 0xFFFF, bytes([seq & 0xFF]), now=seq * 0.001)
    assert cache.get(65535, 65.6) == bytes([0xFF])
    assert cache.get(3, 65.6) == bytes([3])  # across the wrap
    assert cache.get(65529, 65.6) is None  # evicted by a newer packet in its slot
    assert cache.get(3, 100.0) is None  # too old
    with pytest.raises(ValueError):
        PacketCache(size=1000)
