"""Encoded media as RTP packets, for tests of the recorder without sockets: VP8, H.264 and
Opus encoded with PyAV, packetized here (RFC 7741, RFC 6184, RFC 7587) with small payloads so
that frames span several packets; and helpers to read back what a recording wrote."""

from __future__ import annotations

import fractions

import av
import numpy as np

from visio_sfu.rtp.header import build_rtp

VIDEO_TB = fractions.Fraction(1, 90000)
AUDIO_TB = fractions.Fraction(1, 48000)


def video_frames(n: int, width: int = 320, height: int = 240, fps: int = 30, noise: bool = False):
    """n moving-bar yuv420p frames (on noise, which makes large frames, when asked)."""
    rng = np.random.default_rng(7)
    for i in range(n):
        y = np.full((height, width), 100, np.uint8)
        if noise:
            y = rng.integers(60, 140, (height, width), dtype=np.uint8)
        bar = (i * 8) % (width - 8)
        y[:, bar : bar + 8] = 235
        chroma = np.full((height // 2, width), 128, np.uint8)
        frame = av.VideoFrame.from_ndarray(np.concatenate([y, chroma]), format="yuv420p")
        frame.pts = i * 90000 // fps
        frame.time_base = VIDEO_TB
        yield frame


def encode_video(
    codec: str,
    n: int,
    width: int = 320,
    height: int = 240,
    fps: int = 30,
    gop: int = 1000,
    noise: bool = False,
) -> list[tuple[bytes, int, bool]]:
    """(frame bytes, 90 kHz timestamp, keyframe) of n frames: VP8 or H.264 (Annex B, with
    parameter sets before each keyframe); one keyframe every ``gop`` frames."""
    name = {"vp8": "libvpx", "h264": "libx264"}[codec]
    enc = av.CodecContext.create(name, "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = VIDEO_TB
    enc.framerate = fractions.Fraction(fps, 1)
    enc.gop_size = gop
    enc.bit_rate = 400_000
    if codec == "vp8":
        enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    else:
        enc.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": "repeat-headers=1:annexb=1",
        }
    out = []
    for frame in video_frames(n, width, height, fps, noise):
        out += [(bytes(p), int(p.pts), p.is_keyframe) for p in enc.encode(frame)]
    out += [(bytes(p), int(p.pts), p.is_keyframe) for p in enc.encode(None)]
    return out


def encode_opus(n: int, freq: float = 440.0) -> list[bytes]:
    """n Opus packets of 20 ms of a sine tone (48 kHz, stereo)."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "stereo", "s16"
    enc.bit_rate = 32000
    enc.time_base = AUDIO_TB
    out: list[bytes] = []
    for i in range(n + 4):
        t = (np.arange(960) + i * 960) / 48000
        pcm = (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.stack([pcm, pcm]).T.reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts, frame.time_base = 48000, i * 960, AUDIO_TB
        out += [bytes(p) for p in enc.encode(frame)]
    return out[:n]


def vp8_payloads(frame: bytes, picture_id: int, mtu: int = 300) -> list[bytes]:
    """RFC 7741 payloads of one frame: a descriptor with a 15-bit picture id, S on the first."""
    out = []
    for i in range(0, len(frame), mtu):
        start = 0x10 if i == 0 else 0x00
        descriptor = bytes([0x80 | start, 0x80, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF])
        out.append(descriptor + frame[i : i + mtu])
    return out


def h264_payloads(frame: bytes, mtu: int = 300) -> list[bytes]:
    """RFC 6184 payloads of one Annex B access unit: small NAL units aggregated (STAP-A),
    large ones fragmented (FU-A)."""
    nals = [n for n in frame.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")]
    nals = [n.rstrip(b"\x00") if i < len(nals) - 1 else n for i, n in enumerate(nals) if n]
    out: list[bytes] = []
    small: list[bytes] = []
    for nal in nals:
        if len(nal) + 2 < mtu // 2:
            small.append(nal)
            continue
        if small:
            out.append(_stap(small))
            small = []
        if len(nal) <= mtu:
            out.append(nal)
            continue
        indicator = (nal[0] & 0xE0) | 28
        body = nal[1:]
        for i in range(0, len(body), mtu):
            header = nal[0] & 0x1F
            if i == 0:
                header |= 0x80
            if i + mtu >= len(body):
                header |= 0x40
            out.append(bytes([indicator, header]) + body[i : i + mtu])
    if small:
        out.append(_stap(small))
    return out


def _stap(nals: list[bytes]) -> bytes:
    if len(nals) == 1:
        return nals[0]
    nri = max(n[0] & 0x60 for n in nals)
    return bytes([nri | 24]) + b"".join(len(n).to_bytes(2, "big") + n for n in nals)


def video_packets(
    codec: str,
    frames: list[tuple[bytes, int, bool]],
    ssrc: int = 1111,
    pt: int = 96,
    seq: int = 1000,
    ts0: int = 12345,
    mtu: int = 300,
) -> list[tuple[bytes, int, int, float]]:
    """(RTP packet, seq, ts, send time) of encoded frames, marker on each frame's last packet."""
    out = []
    for i, (data, pts, _key) in enumerate(frames):
        payloads = vp8_payloads(data, i & 0x7FFF, mtu) if codec == "vp8" else h264_payloads(data)
        ts = (ts0 + pts) & 0xFFFFFFFF
        for j, payload in enumerate(payloads):
            last = j == len(payloads) - 1
            out.append((build_rtp(pt, seq, ts, ssrc, payload, marker=last), seq, ts, pts / 90000))
            seq = (seq + 1) & 0xFFFF
    return out


def opus_packets(
    packets: list[bytes], ssrc: int = 2222, pt: int = 111, seq: int = 500, ts0: int = 777
) -> list[tuple[bytes, int, int, float]]:
    """(RTP packet, seq, ts, send time) of 20 ms Opus packets."""
    out = []
    for i, payload in enumerate(packets):
        ts = (ts0 + i * 960) & 0xFFFFFFFF
        out.append(
            (build_rtp(pt, (seq + i) & 0xFFFF, ts, ssrc, payload), (seq + i) & 0xFFFF, ts, i * 0.02)
        )
    return out


def decode_all(path) -> dict:
    """Open a recorded file with PyAV and decode every frame of its first stream: the codec,
    the number of frames, the duration (seconds, from the container) and any decode error."""
    info: dict = {"errors": []}
    with av.open(str(path)) as container:
        stream = container.streams[0]
        info["codec"] = stream.codec_context.name
        info["kind"] = stream.type
        info["duration"] = container.duration / 1e6 if container.duration else None
        frames = 0
        samples = 0
        sizes = set()
        last = None
        try:
            for frame in container.decode(stream):
                frames += 1
                if stream.type == "audio":
                    samples += frame.samples
                else:
                    sizes.add((frame.width, frame.height))
                if frame.pts is not None and frame.time_base is not None:
                    last = float(frame.pts * frame.time_base)
        except av.error.FFmpegError as exc:
            info["errors"].append(repr(exc))
        info["frames"] = frames
        info["samples"] = samples
        info["sizes"] = sizes
        info["last_pts"] = last
    return info
