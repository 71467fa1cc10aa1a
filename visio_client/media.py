"""Synthetic media with a recognisable signature: each publisher's colour and tone.

A received, decoded frame or audio chunk can then be attributed to its publisher, which is how
the end-to-end tests prove that the SFU delivers the right media to the right subscriber.
"""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc import MediaStreamTrack

VIDEO_CLOCK = 90000
AUDIO_RATE = 48000

#: distinct (U, V) chroma pairs: a publisher's "colour"
PALETTE = [(60, 200), (200, 60), (60, 60), (200, 200), (128, 40), (40, 128)]
#: distinct tones in Hz, one per publisher
TONES = [440.0, 880.0, 1320.0, 660.0, 1100.0, 1540.0]


class PatternVideoTrack(MediaStreamTrack):
    """Video frames of one flat colour with a moving bright bar (the frame counter)."""

    kind = "video"

    def __init__(
        self, index: int, width: int = 320, height: int = 240, fps: int = 15, grain: int = 0
    ) -> None:
        """``grain``: amplitude of noise over the luma, as a camera's: it sets the bitrate
        (and so the packets per frame) without changing the colour the tests read."""
        super().__init__()
        self.u, self.v = PALETTE[index % len(PALETTE)]
        self.width, self.height, self.fps = width, height, fps
        self.count = 0
        self._start: float | None = None
        self._grain = (
            [
                np.random.default_rng(index * 8 + k).integers(0, grain, (height, width), np.uint8)
                for k in range(4)
            ]
            if grain
            else None
        )

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.time()
        target = self._start + self.count / self.fps
        delay = target - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        y = np.full((self.height, self.width), 100, dtype=np.uint8)
        if self._grain is not None:
            y += self._grain[self.count % 4]
        bar = (self.count * 8) % self.width
        y[:, bar : bar + 8] = 235
        u = np.full((self.height // 2, self.width // 2), self.u, dtype=np.uint8)
        v = np.full((self.height // 2, self.width // 2), self.v, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(
            np.concatenate([y, u.reshape(-1, self.width), v.reshape(-1, self.width)]),
            format="yuv420p",
        )
        frame.pts = int(self.count * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.count += 1
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """A continuous sine tone at one publisher's frequency, 20 ms per frame."""

    kind = "audio"

    def __init__(self, index: int) -> None:
        super().__init__()
        self.freq = TONES[index % len(TONES)]
        self.samples = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        n = AUDIO_RATE // 50
        if self._start is None:
            self._start = time.time()
        target = self._start + self.samples / AUDIO_RATE
        delay = target - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (np.arange(n) + self.samples) / AUDIO_RATE
        pcm = (np.sin(2 * np.pi * self.freq * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self.samples
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.samples += n
        return frame


def frame_colour(frame: av.VideoFrame) -> tuple[float, float]:
    """Mean (U, V) of a decoded frame."""
    yuv = frame.to_ndarray(format="yuv420p")
    h = frame.height
    w = frame.width
    chroma = yuv[h:].reshape(-1)
    quarter = (h // 2) * (w // 2)
    return float(chroma[:quarter].mean()), float(chroma[quarter : 2 * quarter].mean())


def colour_index(frame: av.VideoFrame, tolerance: float = 25.0) -> int | None:
    """Which publisher's colour a decoded frame shows, if any."""
    u, v = frame_colour(frame)
    for i, (pu, pv) in enumerate(PALETTE):
        if abs(u - pu) < tolerance and abs(v - pv) < tolerance:
            return i
    return None


def dominant_frequency(samples: np.ndarray, rate: int = AUDIO_RATE) -> float:
    """The strongest frequency in a mono signal, in Hz."""
    samples = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    spectrum[0] = 0
    return float(np.argmax(spectrum) * rate / len(samples))


def tone_index(samples: np.ndarray, rate: int = AUDIO_RATE, tolerance: float = 30.0) -> int | None:
    """Which publisher's tone a decoded audio signal carries, if any."""
    f = dominant_frequency(samples, rate)
    for i, tone in enumerate(TONES):
        if abs(f - tone) < tolerance:
            return i
    return None


def audio_samples(frame: av.AudioFrame) -> np.ndarray:
    """Mono int16 samples of a decoded audio frame (first channel)."""
    data = frame.to_ndarray()
    if frame.format.is_planar:
        return data[0]
    channels = len(frame.layout.channels)
    return data.reshape(-1)[::channels]
