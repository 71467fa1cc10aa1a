"""Media encoded once before a load run: a VP8 clip and an Opus clip, as RTP payloads.

Publishers loop over these payloads, so a run with a hundred publishers costs no encoding at
all. The VP8 clip is real libvpx output (moving noise, so the encoder spends its whole
budget), packetized with aiortc's VP8 payloader; each second starts with a keyframe.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass

import av
import numpy as np
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder


@dataclass
class Clip:
    """Frames of RTP payloads: ``frames[i]`` is the list of payloads of frame i."""

    frames: list[list[bytes]]
    clock_step: int  # RTP timestamp increment per frame
    interval: float  # seconds per frame

    @property
    def packets_per_second(self) -> float:
        """Packets a publisher of this clip sends each second."""
        return sum(len(f) for f in self.frames) / (len(self.frames) * self.interval)

    @property
    def bitrate(self) -> float:
        """Payload bits per second."""
        size = sum(len(p) for f in self.frames for p in f)
        return size * 8 / (len(self.frames) * self.interval)


def video_clip(
    bitrate: int = 1_500_000, fps: int = 30, seconds: float = 2.0, size: tuple = (640, 360)
) -> Clip:
    """A VP8 clip at about ``bitrate`` bits per second, one keyframe each second."""
    width, height = size
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.bit_rate = bitrate
    codec.qmin, codec.qmax = 4, 63
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "minrate": str(bitrate),
        "maxrate": str(bitrate),
        "bufsize": str(bitrate),
        "undershoot-pct": "95",
    }
    rng = np.random.default_rng(7)
    # blocky noise: detail the encoder must spend bits on, yet compressible at any bitrate
    blocks = rng.integers(0, 256, (height * 3 // 32 + 1, width // 16 + 1), dtype=np.uint8)
    base = np.kron(blocks, np.ones((16, 16), dtype=np.uint8))[: height * 3 // 2, :width]
    frames: list[list[bytes]] = []
    picture_id = 0
    count = int(fps * seconds)
    for i in range(count):
        image = np.roll(base, i * 7, axis=1)
        image[: height // 16] = rng.integers(0, 256, (height // 16, width), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = i
        frame.time_base = codec.time_base
        if i % fps == 0:
            frame.pict_type = av.video.frame.PictureType.I
        data = b"".join(bytes(p) for p in codec.encode(frame))
        frames.append(Vp8Encoder._packetize(data, picture_id) if data else [])
        picture_id = (picture_id + 1) & 0x7FFF
    return Clip(frames, 90000 // fps, 1 / fps)


def audio_clip(seconds: float = 2.0) -> Clip:
    """An Opus clip of a tone, 20 ms per packet."""
    encoder = OpusEncoder()
    frames: list[list[bytes]] = []
    samples = 960  # 20 ms at 48 kHz
    t = np.arange(samples) / 48000
    for i in range(int(seconds * 50)):
        tone = (np.sin(2 * np.pi * 440 * (t + i * samples / 48000)) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = 48000
        frame.pts = i * samples
        frame.time_base = fractions.Fraction(1, 48000)
        payloads, _ = encoder.encode(frame)
        frames.append(payloads[:1])
    return Clip([f for f in frames if f] or [[b"\xf8\xff\xfe"]], 960, 0.02)
