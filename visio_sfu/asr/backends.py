"""Speech recognition backends behind one small interface, used inside worker processes.

``Backend.transcribe(audio, language, final) -> str``: 16 kHz mono float32 in, text out ('' for
nothing worth showing). Two backends:

- :class:`WhisperBackend` (default): faster-whisper's CTranslate2 Whisper model on the CPU,
  int8. The encoder is given the utterance plus one second instead of Whisper's fixed 30 s
  window (CTranslate2 accepts a shorter mel input), which makes an utterance cost about a fifth
  of ``transcribe()``; decoding is greedy at temperature 0 with no fallback, the language
  forced, the output capped by the audio's length, and outputs that loop (repeated n-grams, a
  compression ratio over 2.4) or that the model itself calls non-speech are thrown away.
- :class:`HttpBackend`: an OpenAI-compatible ``POST /v1/audio/transcriptions`` (whisper.cpp's
  server, vLLM, faster-whisper-server, ...) on the operator's own GPU server.

Both are built from a :class:`BackendSpec`, a small picklable value a worker process receives.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import urllib.error
import urllib.request
import wave
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

RATE = 16000
MAX_FRAMES = 3000  # Whisper's encoder takes at most 30 s of 10 ms mel frames


class Backend(Protocol):
    """What a worker needs of a recogniser."""

    name: str

    def transcribe(self, audio: np.ndarray, language: str, final: bool) -> str:
        """The text said in ``audio`` (16 kHz mono float32), in ``language``; '' if none."""


@dataclass(frozen=True)
class BackendSpec:
    """How to build a backend in a worker process (picklable)."""

    kind: str = "whisper"  # or "http"
    model_dir: str = ""  # whisper: a verified model directory
    threads: int = 1  # whisper: CPU threads per worker
    url: str = ""  # http: the server's base URL (…/v1/audio/transcriptions is appended)
    model: str = "whisper-1"  # http: the model name it expects
    api_key: str = ""  # http: sent as a bearer token when set
    timeout: float = 30.0  # http: seconds per request
    extra: dict = field(default_factory=dict)


def build_backend(spec: BackendSpec) -> Backend:
    """The backend a spec describes (loads the model: seconds, in a worker)."""
    if spec.kind == "whisper":
        return WhisperBackend(spec.model_dir, spec.threads)
    if spec.kind == "http":
        return HttpBackend(spec.url, spec.model, spec.api_key, spec.timeout)
    raise ValueError(f"unknown transcription backend {spec.kind!r} (whisper or http)")


# -- output checks (ASR_NOTES' pitfalls) ---------------------------------------------------------


def compression_ratio(text: str) -> float:
    """Bytes of ``text`` over bytes of its zlib compression: loops compress well."""
    data = text.encode()
    return len(data) / max(len(zlib.compress(data)), 1)


def repeats(text: str, n: int = 3, times: int = 3) -> bool:
    """Whether some n-gram of words comes ``times`` times or more: a decoding loop."""
    words = re.findall(r"\w+", text.lower())
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= times:
            return True
    return False


def cut_repetition(text: str, n: int = 4) -> str:
    """``text`` up to where it starts repeating itself (a run of ``n`` words said again): the
    shortened window's decoder sometimes says a sentence twice."""
    spans = [(m.group(0).lower(), m.start()) for m in re.finditer(r"\w+", text)]
    seen: set[tuple[str, ...]] = set()
    for i in range(len(spans) - n + 1):
        gram = tuple(word for word, _ in spans[i : i + n])
        if gram in seen:
            return text[: spans[i][1]].rstrip(" ,;")
        seen.add(gram)
    return text


def cut_dangling(text: str) -> str:
    """A final line without a fragment of up to 3 words after its last full sentence (the
    decoder starting a sentence the speaker never said)."""
    match = re.fullmatch(r"(.*[.!?])\s+(\S+(?:\s+\S+){0,2})", text, re.S)
    if match and not match.group(2).endswith((".", "!", "?")):
        return match.group(1)
    return text


def plausible(text: str) -> bool:
    """A transcription worth showing: some letters, no loop."""
    if not re.search(r"\w", text):
        return False
    return not (len(text) > 24 and compression_ratio(text) > 2.4) and not repeats(text)


# -- local faster-whisper -----------------------------------------------------------------------


class WhisperBackend:
    """CTranslate2 Whisper with the encoder window shortened to the utterance."""

    name = "whisper"

    def __init__(self, model_dir: str, threads: int = 1) -> None:
        import ctranslate2
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor
        from faster_whisper.tokenizer import Tokenizer

        self._ct2 = ctranslate2
        self.model = ctranslate2.models.Whisper(
            model_dir, device="cpu", compute_type="int8", intra_threads=max(threads, 1)
        )
        self._hf = tokenizers.Tokenizer.from_file(f"{model_dir}/tokenizer.json")
        self._tokenizer_cls = Tokenizer
        self._tokenizers: dict[str, object] = {}
        self.features = FeatureExtractor(feature_size=self.model.n_mels)

    def _tokenizer(self, language: str) -> Any:
        tok = self._tokenizers.get(language)
        if tok is None:
            tok = self._tokenizer_cls(
                self._hf, self.model.is_multilingual, task="transcribe", language=language
            )
            self._tokenizers[language] = tok
        return tok

    def transcribe(self, audio: np.ndarray, language: str, final: bool) -> str:
        tok = self._tokenizer(language)
        seconds = len(audio) / RATE
        padded = np.concatenate([audio, np.zeros(RATE, dtype=np.float32)])
        mel = self.features(padded)
        frames = min(mel.shape[-1] - mel.shape[-1] % 2, MAX_FRAMES)
        mel = np.ascontiguousarray(mel[None, :, :frames], dtype=np.float32)
        prompt = [*tok.sot_sequence, tok.no_timestamps]
        # ~6 tokens/s of speech in English (ASR_NOTES), more in French and most others
        rate = 6 if language == "en" else 9
        limit = min(int(seconds * rate) + 6, 440 - len(prompt))
        result = self.model.generate(
            self._ct2.StorageView.from_array(mel),
            [prompt],
            beam_size=1,
            max_length=limit,
            suppress_blank=True,
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens = result.sequences_ids[0]
        text = cut_repetition(tok.decode(tokens).strip())
        avg_logprob = result.scores[0] if result.scores else 0.0
        if result.no_speech_prob > 0.6 and avg_logprob < -1.0:
            return ""
        if final:
            text = cut_dangling(text)
        elif len(tokens) >= limit - 1:
            text = text.rsplit(" ", 1)[0]  # cut mid-word at the cap
        return text if plausible(text) else ""


# -- OpenAI-compatible HTTP ---------------------------------------------------------------------


def wav_bytes(audio: np.ndarray) -> bytes:
    """16-bit PCM WAV of 16 kHz mono float audio."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()


def multipart(fields: dict[str, str], file: tuple[str, bytes, str]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = "visio" + secrets.token_hex(12)
    parts = []
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"{head}{value}\r\n".encode())
    filename, data, mime = file
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {mime}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class HttpBackend:
    """An OpenAI-compatible transcription endpoint (the operator's own server)."""

    name = "http"

    def __init__(self, url: str, model: str, api_key: str = "", timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"transcription URL must be http(s)://..., not {url!r}")
        base = url.rstrip("/")
        if not base.endswith("/audio/transcriptions"):
            base += (
                "/v1/audio/transcriptions" if not base.endswith("/v1") else "/audio/transcriptions"
            )
        self.url = base
        self.model = model
        self.api_key = api_key
        self.timeout = timeout

    def transcribe(self, audio: np.ndarray, language: str, final: bool) -> str:
        body, content_type = multipart(
            {
                "model": self.model,
                "language": language,
                "response_format": "json",
                "temperature": "0",
            },
            ("speech.wav", wav_bytes(audio), "audio/wav"),
        )
        headers = {"Content-Type": content_type}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                answer = json.loads(response.read(1 << 20))
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{self.url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise RuntimeError(f"{self.url} unreachable: {exc}") from None
        except ValueError:
            raise RuntimeError(f"{self.url} answered something that is not JSON") from None
        text = answer.get("text", "") if isinstance(answer, dict) else ""
        text = cut_repetition(text.strip()) if isinstance(text, str) else ""
        return text if plausible(text) else ""
