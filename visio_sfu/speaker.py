"""SpeakerDetector: who is speaking, from every audio track's RFC 6464 levels at once (numpy).

Levels arrive in -dBov (0 loud .. 127 silent) from the ``ssrc-audio-level`` header extension.
They are turned into linear amplitudes, smoothed over time, and the loudest track above a
threshold is the speaker; a challenger must be clearly louder to take over (hysteresis).
Pure: arrays in, decision out, time implied by the caller's cadence.
"""

from __future__ import annotations

import numpy as np

SILENCE_DBOV = 50  # quieter than -50 dBov is not speech
TAKE_OVER = 1.5  # a new speaker must be this much louder than the current one


class SpeakerDetector:
    """Smooths audio levels of many tracks and names the active speaker."""

    def __init__(self, alpha: float = 0.4) -> None:
        self.alpha = alpha
        self.keys: list[str] = []
        self.smoothed = np.zeros(0)
        self.speaker: str | None = None

    def update(self, keys: list[str], levels: np.ndarray, voice: np.ndarray) -> str | None:
        """Feed the latest level of each track (by key); returns the active speaker's key."""
        if keys != self.keys:  # tracks came or went: carry over what is still there
            old = dict(zip(self.keys, self.smoothed, strict=True))
            self.smoothed = np.array([old.get(k, 0.0) for k in keys], dtype=np.float64)
            self.keys = list(keys)
        if not keys:
            self.speaker = None
            return None
        amplitude = np.power(10.0, -np.asarray(levels, dtype=np.float64) / 20.0)
        amplitude = np.where(np.asarray(voice, dtype=bool) | (amplitude > 0), amplitude, 0.0)
        self.smoothed = self.alpha * amplitude + (1 - self.alpha) * self.smoothed
        floor = 10.0 ** (-SILENCE_DBOV / 20.0)
        best = int(np.argmax(self.smoothed))
        loudest = self.smoothed[best]
        current = self.keys.index(self.speaker) if self.speaker in self.keys else -1
        if loudest < floor:
            self.speaker = None
        elif current < 0 or self.smoothed[current] < floor:
            self.speaker = self.keys[best]
        elif best != current and loudest > TAKE_OVER * self.smoothed[current]:
            self.speaker = self.keys[best]
        return self.speaker
