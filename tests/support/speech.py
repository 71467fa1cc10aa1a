"""Known sentences spoken by espeak-ng into WAV files, an aiortc microphone that plays them,
Opus RTP made from them, and the word error rate of what a recogniser heard."""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import re
import shutil
import subprocess
import time
import unicodedata
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack

CACHE = Path(__file__).resolve().parents[2] / "test-artifacts" / "speech"
RATE = 48000


def need_espeak() -> str:
    """espeak-ng's path, or skip (scripts/test.sh installs it)."""
    path = shutil.which("espeak-ng")
    if path is None:
        pytest.skip("espeak-ng is not installed (scripts/test.sh installs it)")
    return path


def speak(text: str, voice: str = "en-us", speed: int = 150) -> Path:
    """A WAV file of espeak-ng saying ``text`` (cached by content)."""
    espeak = need_espeak()
    CACHE.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(f"{voice}|{speed}|{text}".encode()).hexdigest()[:16]
    path = CACHE / f"{voice}-{digest}.wav"
    if not path.exists():
        tmp = path.with_suffix(".tmp.wav")
        subprocess.run([espeak, "-v", voice, "-s", str(speed), "-w", str(tmp), text], check=True)
        tmp.rename(path)
    return path


def read_wav(path: Path, rate: int = RATE) -> np.ndarray:
    """A mono 16-bit WAV as int16 samples at ``rate`` (linear interpolation)."""
    with wave.open(str(path)) as w:
        source = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64)
    n = int(len(x) * rate / source)
    return np.interp(np.arange(n) * source / rate, np.arange(len(x)), x).astype(np.int16)


class WavAudioTrack(MediaStreamTrack):
    """A microphone that plays a script: [(start second, samples at 48 kHz)], silence between
    and after, in real time, 20 ms per frame. ``spoken`` records when each clip really played
    (monotonic start and end)."""

    kind = "audio"

    def __init__(
        self,
        script: list[tuple[float, np.ndarray]],
        gain: float = 1.0,
        epoch: float | None = None,
    ) -> None:
        """``epoch``: the wall-clock time of the script's 0 (several tracks sharing one take
        turns whenever each starts sending); default: its first frame."""
        super().__init__()
        self.script = sorted(script, key=lambda item: item[0])
        self.gain = gain
        self.epoch = epoch
        self.samples = 0
        self._offset = 0  # script samples already past when the first frame was asked for
        self._start: float | None = None
        self.spoken: list[tuple[float, float]] = []

    def _pcm(self, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float64)
        pos = self.samples + self._offset
        for at, clip in self.script:
            begin = int(at * RATE)
            lo, hi = max(begin, pos), min(begin + len(clip), pos + n)
            if lo < hi:
                out[lo - pos : hi - pos] = clip[lo - begin : hi - begin]
                if lo == begin:
                    now = time.monotonic()
                    self.spoken.append((now, now + len(clip) / RATE))
        return np.clip(out * self.gain, -32768, 32767).astype(np.int16)

    async def recv(self) -> av.AudioFrame:
        n = RATE // 50
        if self._start is None:
            self._start = time.time()
            if self.epoch is not None:
                self._offset = max(int((self._start - self.epoch) * RATE), 0)
        delay = self._start + self.samples / RATE - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.AudioFrame.from_ndarray(self._pcm(n).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.samples
        frame.time_base = fractions.Fraction(1, RATE)
        self.samples += n
        return frame


def opus_packets(samples: np.ndarray, silence_after: float = 1.0) -> list[bytes]:
    """Opus payloads (20 ms each) of 48 kHz int16 mono samples followed by silence."""
    pcm = np.concatenate([samples, np.zeros(int(silence_after * RATE), np.int16)])
    pcm = pcm[: len(pcm) - len(pcm) % 960]
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = RATE
    encoder.layout = "stereo"
    encoder.format = "s16"
    encoder.bit_rate = 32000
    encoder.time_base = fractions.Fraction(1, RATE)
    out = []
    for i in range(0, len(pcm), 960):
        chunk = np.repeat(pcm[i : i + 960], 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = i
        out += [bytes(p) for p in encoder.encode(frame)]
    out += [bytes(p) for p in encoder.encode(None)]
    return out


def normalise(text: str) -> list[str]:
    """Words for scoring: lower case, no accents or punctuation, numbers as written."""
    plain = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return re.findall(r"[a-z0-9]+", plain)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d = d, np.empty_like(d)
        d[0] = i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return float(d[-1]) / max(len(ref), 1)
