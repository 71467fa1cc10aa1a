"""RTP payloads back into frames, without sockets: VP8 (RFC 7741) and H.264 (RFC 6184) frames
reassembled byte for byte, losses turned into skipped frames up to the next keyframe, picture
sizes from VP8 keyframes and H.264 SPSs, Opus packet durations; garbage never raises."""

from __future__ import annotations

import av
from hypothesis import given
from hypothesis import strategies as st

from tests.support.recorded_media import encode_video, h264_payloads, vp8_payloads
from visio_sfu.rtp.depacketize import (
    OPUS_SILENCE_10MS,
    OPUS_SILENCE_20MS,
    H264Assembler,
    VP8Assembler,
    h264_sps_size,
    opus_samples,
    vp8_keyframe_size,
)

VP8 = encode_video("vp8", 40, 640, 480, gop=15, noise=True)
H264 = encode_video("h264", 40, 640, 480, gop=15, noise=True)


def packetize(frames, payloads):
    """(payload, ts, marker) of every packet."""
    out = []
    for i, (data, pts, _key) in enumerate(frames):
        parts = payloads(data, i)
        out += [(p, pts, j == len(parts) - 1) for j, p in enumerate(parts)]
    return out


def run(assembler, packets, lose=()):
    frames = []
    for i, (payload, ts, marker) in enumerate(packets):
        if i in lose:
            frames += assembler.lost(1)
            continue
        frames += assembler.push(payload, ts, marker, i * 0.01)
    return frames + assembler.flush()


def test_vp8_frames_come_back_byte_for_byte():
    packets = packetize(VP8, lambda d, i: vp8_payloads(d, i, mtu=300))
    assert len(packets) > 2 * len(VP8)  # frames span several packets
    frames = run(VP8Assembler(), packets)
    assert [f.data for f in frames] == [d for d, _, _ in VP8]
    assert [f.key for f in frames] == [k for _, _, k in VP8]
    assert [f.ts for f in frames] == [p for _, p, _ in VP8]
    assert (frames[0].width, frames[0].height) == (640, 480)
    decoder = av.CodecContext.create("vp8", "r")
    decoded = [f for frame in frames for f in decoder.decode(av.Packet(frame.data))]
    assert len(decoded) == len(VP8)


def test_a_lost_vp8_packet_skips_to_the_next_keyframe():
    packets = packetize(VP8, lambda d, i: vp8_payloads(d, i, mtu=300))
    firsts = [i for i, (p, _, _) in enumerate(packets) if p[0] & 0x10]  # frames' first packets
    lost = firsts[3] + 1  # inside frame 3
    assembler = VP8Assembler()
    frames = run(assembler, packets, lose={lost})
    keys = [i for i, (_, _, k) in enumerate(VP8) if k]
    assert keys[:2] == [0, 15]
    expected = [0, 1, 2, *range(15, len(VP8))]  # frame 3 broken, 4..14 need it
    assert [f.ts for f in frames] == [VP8[i][1] for i in expected]
    assert assembler.dropped == 12
    decoder = av.CodecContext.create("vp8", "r")
    for frame in frames:  # what is kept decodes without an error
        decoder.decode(av.Packet(frame.data))


def test_vp8_waits_for_a_keyframe_and_says_so():
    packets = packetize(VP8[1:], lambda d, i: vp8_payloads(d, i + 1, mtu=300))
    assembler = VP8Assembler()
    frames = []
    for payload, ts, marker in packets:
        frames += assembler.push(payload, ts, marker, 0.0)
        if ts < VP8[15][1]:
            assert assembler.need_keyframe
    assert frames[0].key and frames[0].ts == VP8[15][1]
    assert not assembler.need_keyframe


def test_a_lost_marker_packet_is_a_broken_frame_a_new_timestamp_ends_a_frame():
    packets = packetize(VP8, lambda d, i: vp8_payloads(d, i, mtu=100000))  # one per frame
    no_marker = [(p, ts, False) for p, ts, _ in packets]
    frames = run(VP8Assembler(), no_marker)
    assert [f.data for f in frames] == [d for d, _, _ in VP8]


def test_h264_access_units_come_back():
    packets = packetize(H264, lambda d, i: h264_payloads(d, mtu=300))
    kinds = {p[0] & 0x1F for p, _, _ in packets}
    assert {24, 28} <= kinds  # STAP-A and FU-A both used
    frames = run(H264Assembler(), packets)
    norm = [d.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01") for d, _, _ in H264]
    assert [f.data.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01") for f in frames] == norm
    assert frames[0].key and frames[0].has_parameter_sets
    assert (frames[0].width, frames[0].height) == (640, 480)
    decoder = av.CodecContext.create("h264", "r")
    decoded = [f for frame in frames for f in decoder.decode(av.Packet(frame.data))]
    decoded += decoder.decode(None)
    assert len(decoded) == len(H264)


def test_a_lost_h264_fragment_skips_to_the_next_keyframe():
    packets = packetize(H264, lambda d, i: h264_payloads(d, mtu=300))
    fu_middle = next(
        i
        for i, (p, ts, _m) in enumerate(packets)
        if ts > H264[2][1] and p[0] & 0x1F == 28 and not p[1] & 0xC0
    )
    assembler = H264Assembler()
    frames = run(assembler, packets, lose={fu_middle})
    assert all(f.ts < packets[fu_middle][1] or f.ts >= H264[15][1] for f in frames)
    assert frames[-1].ts == H264[-1][1] and assembler.dropped >= 1


def test_sps_sizes_with_cropping():
    for width, height in [(320, 240), (1280, 720), (1920, 1080), (642, 362)]:
        data = encode_video("h264", 1, width, height)[0][0]
        sps = next(n for n in data.split(b"\x00\x00\x01") if n and n[0] & 0x1F == 7)
        assert h264_sps_size(sps.rstrip(b"\x00")) == (width, height)
    assert h264_sps_size(b"\x67") is None


def test_vp8_keyframe_size():
    assert vp8_keyframe_size(VP8[0][0]) == (640, 480)
    assert vp8_keyframe_size(VP8[1][0]) is None  # an inter frame has no size
    assert vp8_keyframe_size(b"\x00" * 4) is None


def test_opus_packet_durations():
    assert opus_samples(OPUS_SILENCE_20MS) == 960
    assert opus_samples(OPUS_SILENCE_10MS) == 480
    assert opus_samples(bytes([0x78])) == 960  # config 15: hybrid, full band, 20 ms
    assert opus_samples(bytes([(1 << 3) | 0])) == 960  # SILK NB 20 ms
    assert opus_samples(bytes([(3 << 3) | 0])) == 2880  # SILK NB 60 ms
    assert opus_samples(bytes([(31 << 3) | 1, 0])) == 1920  # two 20 ms frames
    assert opus_samples(bytes([(31 << 3) | 3, 3])) == 2880  # three, code 3
    assert opus_samples(bytes([(31 << 3) | 3, 7])) == 0  # 140 ms: invalid
    assert opus_samples(bytes([(31 << 3) | 3])) == 0 and opus_samples(b"") == 0
    assert opus_samples(OPUS_SILENCE_20MS, rate=16000) == 320


def test_the_silence_frames_decode_to_silence():
    decoder = av.CodecContext.create("opus", "r")
    decoder.sample_rate, decoder.layout = 48000, "stereo"
    for packet in (OPUS_SILENCE_20MS, OPUS_SILENCE_10MS):
        [frame] = decoder.decode(av.Packet(packet))
        assert abs(frame.to_ndarray()).max() == 0


@given(
    st.lists(
        st.tuples(st.binary(max_size=40), st.integers(0, 5), st.booleans(), st.booleans()),
        max_size=50,
    )
)
def test_garbage_never_raises(packets):
    for assembler in (VP8Assembler(), H264Assembler()):
        for payload, ts, marker, lose in packets:
            if lose:
                assembler.lost(1)
            assembler.push(payload, ts, marker, 0.0)
        assembler.flush()
    for payload, *_ in packets:
        opus_samples(payload)
        vp8_keyframe_size(payload)
        if payload:
            h264_sps_size(payload)
