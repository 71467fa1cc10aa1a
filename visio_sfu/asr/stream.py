"""One audio track inside a transcription worker: RTP payloads in, utterances out.

- Reordering: packets are released in sequence order; a gap still open when ``REORDER_HOLD``
  newer packets have arrived is a loss (its duration becomes silence).
- DTX and mute: a jump of the RTP timestamp is silence, up to ``GAP_FILL`` seconds of it (more
  would only cost VAD time: the utterance has ended anyway).
- Opus decoded with PyAV, resampled to 16 kHz mono float32.
- Voice gate: Silero VAD (shipped with faster-whisper) on 32 ms chunks, its state carried
  across calls; an utterance starts at speech, ends after ``END_SILENCE`` of non-speech (or at
  ``MAX_UTTERANCE``), keeps ``PREROLL`` before its first speech chunk.
- Jobs: a *final* for each finished utterance; a *partial* (what was said so far) every
  ``partial_interval`` once ``MIN_PARTIAL`` of speech was heard.

Synchronous and single-threaded: a worker process drives many of these.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

RATE = 16000
CHUNK = 512  # samples per VAD decision (32 ms)
CONTEXT = 64  # samples of context Silero v6 takes with each chunk
RTP_CLOCK = 48000
FRAME = 960  # RTP ticks of one 20 ms Opus frame
REORDER_HOLD = 6  # packets newer than a gap before it counts as lost
GAP_FILL = 1.0  # seconds of silence inserted at most for a DTX/mute gap or a loss
SPEECH_ON = 0.5  # VAD probability that starts speech
SPEECH_OFF = 0.35  # below this, a chunk is silence
END_SILENCE = 0.5  # seconds of silence that end an utterance
MIN_SPEECH = 0.25  # shorter bursts are not speech (clicks, coughs)
PREROLL = 0.2  # seconds kept before the first speech chunk
MAX_UTTERANCE = 20.0  # seconds: a longer monologue is cut into finals
MIN_PARTIAL = 0.8  # no partial before this much speech (Whisper invents words on less)


@dataclass
class Job:
    """Audio to recognise: ``final`` for a finished utterance, else a partial of one."""

    key: str
    utterance: int
    final: bool
    audio: np.ndarray  # float32, 16 kHz mono
    start: float  # seconds on the monotonic clock
    end: float
    level: float  # RMS in dBFS, to keep the louder of two microphones hearing one voice
    language: str


class StreamingVad:
    """Silero VAD over a stream: each call continues where the last one stopped."""

    def __init__(self, session: Any | None = None) -> None:
        if session is None:
            from faster_whisper.vad import get_vad_model

            session = get_vad_model().session
        self.session = session
        self.h = np.zeros((1, 1, 128), dtype=np.float32)
        self.c = np.zeros((1, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)

    def __call__(self, chunks: np.ndarray) -> np.ndarray:
        """Speech probabilities of ``chunks`` (shape [n, CHUNK])."""
        n = chunks.shape[0]
        previous = np.concatenate([self.context[None, :], chunks[:-1, -CONTEXT:]], axis=0)
        batch = np.ascontiguousarray(np.concatenate([previous, chunks], axis=1))
        out, self.h, self.c = self.session.run(None, {"input": batch, "h": self.h, "c": self.c})
        self.context = chunks[-1, -CONTEXT:].copy()
        return np.asarray(out, dtype=np.float32).reshape(n)


class OpusDecoder:
    """Opus payloads to 16 kHz mono float32 (PyAV)."""

    def __init__(self) -> None:
        import av

        self._av = av
        self.codec = av.CodecContext.create("opus", "r")
        self.codec.sample_rate = RTP_CLOCK
        self.codec.layout = "stereo"
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        self.errors = 0

    def decode(self, payload: bytes) -> np.ndarray:
        out = []
        try:
            for frame in self.codec.decode(self._av.Packet(payload)):
                for resampled in self.resampler.resample(frame):
                    out.append(resampled.to_ndarray().reshape(-1))
        except Exception:  # a corrupt packet: counted, skipped (av raises its own errors)
            self.errors += 1
        if not out:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


class AudioStream:
    """One track's audio: packets in (``push``), recognition jobs out (``jobs``)."""

    def __init__(
        self,
        key: str,
        language: str,
        vad: StreamingVad | None = None,
        decoder: OpusDecoder | None = None,
        partial_interval: float = 1.0,
    ) -> None:
        self.key = key
        self.language = language
        self.vad = vad or StreamingVad()
        self.decoder = decoder or OpusDecoder()
        self.partial_interval = partial_interval
        # reordering
        self._pending: dict[int, tuple[int, bytes]] = {}  # extended seq -> (ext ts, payload)
        self._next_seq: int | None = None
        self._last_seq = 0  # extended, highest seen
        self._last_ts = 0  # extended
        self._ts_base: int | None = None  # extended RTP ts of the stream's first packet
        self._t0 = 0.0  # monotonic time of that packet
        self._expected_ts: int | None = None  # where the next frame should start (ext ts)
        # audio not yet through the VAD, and the time of its first sample
        self._samples = np.zeros(0, dtype=np.float32)
        self._samples_time = 0.0
        # utterance
        self._preroll: deque[tuple[np.ndarray, float]] = deque(maxlen=int(PREROLL * RATE / CHUNK))
        self._speech: list[np.ndarray] = []
        self._speech_start = 0.0
        self._speech_chunks = 0  # chunks over SPEECH_ON in the utterance
        self._silence = 0  # chunks of silence at its end
        self._last_partial = 0.0
        self.utterance = 0
        self._jobs: list[Job] = []
        self.lost = 0
        self.late = 0

    # -- packets -----------------------------------------------------------------------------
    def _extend(self, seq: int, ts: int) -> tuple[int, int]:
        if self._next_seq is None:
            return seq, ts
        ext_seq = self._last_seq + ((seq - self._last_seq) & 0xFFFF)
        if ext_seq - self._last_seq > 0x8000:
            ext_seq -= 0x10000
        ext_ts = self._last_ts + ((ts - self._last_ts) & 0xFFFFFFFF)
        if ext_ts - self._last_ts > 0x80000000:
            ext_ts -= 0x100000000
        return ext_seq, ext_ts

    def push(self, packets: list[tuple[int, int, bytes]], first_arrival: float) -> None:
        """RTP packets (seq, ts, Opus payload) as they came; ``first_arrival`` is the monotonic
        time the first one arrived at the server (sets the stream's clock at its start)."""
        for seq, ts, payload in packets:
            ext_seq, ext_ts = self._extend(seq, ts)
            if self._next_seq is None:
                self._next_seq = ext_seq
                self._ts_base = ext_ts
                self._expected_ts = ext_ts
                self._t0 = first_arrival
                self._samples_time = first_arrival
            if ext_seq < self._next_seq:
                self.late += 1
                continue
            if ext_seq > self._last_seq:
                self._last_seq, self._last_ts = ext_seq, ext_ts
            self._pending[ext_seq] = (ext_ts, payload)
        self._release(flush=False)

    def _release(self, flush: bool) -> None:
        assert self._next_seq is not None or not self._pending
        while self._pending:
            assert self._next_seq is not None
            item = self._pending.pop(self._next_seq, None)
            if item is None:
                if not flush and self._last_seq - self._next_seq < REORDER_HOLD:
                    return  # wait: the missing packet may still come
                self.lost += 1
                self._next_seq += 1
                continue
            self._next_seq += 1
            self._decoded(*item)

    def _decoded(self, ext_ts: int, payload: bytes) -> None:
        assert self._expected_ts is not None and self._ts_base is not None
        gap = ext_ts - self._expected_ts
        if gap > 0:  # DTX, mute or loss: silence, at most GAP_FILL
            fill = min(gap, int(GAP_FILL * RTP_CLOCK)) * RATE // RTP_CLOCK
            self._feed(np.zeros(fill, dtype=np.float32))
            # the time of what follows is the packet's own
            skipped = (gap * RATE // RTP_CLOCK) - fill
            if skipped > 0:
                self._samples_time += skipped / RATE
        pcm = self.decoder.decode(payload)
        self._feed(pcm)
        self._expected_ts = ext_ts + len(pcm) * RTP_CLOCK // RATE if len(pcm) else ext_ts + FRAME

    # -- voice gate and utterances ----------------------------------------------------------
    def _feed(self, pcm: np.ndarray) -> None:
        if not len(pcm):
            return
        self._samples = np.concatenate([self._samples, pcm]) if len(self._samples) else pcm
        n = len(self._samples) // CHUNK
        if n == 0:
            return
        chunks = self._samples[: n * CHUNK].reshape(n, CHUNK)
        start = self._samples_time
        self._samples = self._samples[n * CHUNK :].copy()
        self._samples_time = start + n * CHUNK / RATE
        probs = self.vad(chunks)
        for i in range(n):
            self._chunk(chunks[i], float(probs[i]), start + i * CHUNK / RATE)

    def _chunk(self, chunk: np.ndarray, prob: float, at: float) -> None:
        if not self._speech:
            if prob >= SPEECH_ON:
                self._speech = [c for c, _ in self._preroll] + [chunk]
                self._speech_start = at
                self._speech_chunks = 1
                self._silence = 0
                self._last_partial = at
                self._preroll.clear()
            else:
                self._preroll.append((chunk, at))
            return
        self._speech.append(chunk)
        if prob >= SPEECH_OFF:
            self._silence = 0
            if prob >= SPEECH_ON:
                self._speech_chunks += 1
        else:
            self._silence += 1
        end = at + CHUNK / RATE
        if self._silence * CHUNK / RATE >= END_SILENCE or end - self._speech_start >= MAX_UTTERANCE:
            self._finish(end)
        elif (
            self._speech_chunks * CHUNK / RATE >= MIN_PARTIAL
            and end - self._last_partial >= self.partial_interval
        ):
            self._last_partial = end
            self._jobs.append(self._job(final=False, end=end))

    def _finish(self, end: float) -> None:
        if self._speech_chunks * CHUNK / RATE >= MIN_SPEECH:
            cut = min(max(self._silence - 6, 0), len(self._speech) - 1)  # keep ~0.2 s of tail
            if cut:
                self._speech = self._speech[:-cut]
                end -= cut * CHUNK / RATE
            self._jobs.append(self._job(final=True, end=end))
        self._speech = []
        self._speech_chunks = 0
        self._silence = 0
        self.utterance += 1

    def _job(self, final: bool, end: float) -> Job:
        audio = np.concatenate(self._speech)
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0
        level = 20 * np.log10(max(rms, 1e-9))
        return Job(
            self.key, self.utterance, final, audio, self._speech_start, end, level, self.language
        )

    def jobs(self) -> list[Job]:
        """What to recognise now (and forget)."""
        jobs, self._jobs = self._jobs, []
        return jobs

    def close(self) -> list[Job]:
        """The stream ends (track gone, transcription stopped): release what is held and
        finish the utterance under way."""
        if self._next_seq is not None:
            self._release(flush=True)
        if len(self._samples):
            pad = CHUNK - len(self._samples)
            self._feed(np.zeros(pad, dtype=np.float32))
        if self._speech:
            self._finish(self._samples_time)
        return self.jobs()
