"""Who speaks on a shared room microphone (experimental): speaker embeddings and online
clustering, with numpy only.

One track usually carries one person, so no diarization is needed; a meeting-room microphone
carries several. For such a track each final utterance gets a voice embedding from Resemblyzer's
pretrained encoder (GE2E: a 3-layer LSTM over 40-band mel frames, 256 values; Apache-2.0), and
is given the speaker whose running mean embedding it is closest to (cosine >=
``SAME_SPEAKER``), or a new speaker. Lines come out as "Room (speaker 2)".

Only the weights of the ``resemblyzer`` package are used, read here without PyTorch (its
pickle is loaded with a restricted unpickler that accepts tensors and nothing else): install it
with ``pip install --no-deps resemblyzer==0.1.4`` (its own dependencies, torch and librosa, are
not needed).
"""

from __future__ import annotations

import collections
import importlib.util
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL = 160  # frames per partial utterance (1.6 s)
PARTIALS_PER_SECOND = 1.3
SAME_SPEAKER = 0.8  # cosine similarity to a speaker's mean voice to be that speaker
MAX_SPEAKERS = 12


def weights_path() -> Path | None:
    """resemblyzer's pretrained.pt, if the package is installed."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    return path if path.is_file() else None


class _Tensor:
    def __init__(self, key: str, offset: int, size: tuple, stride: tuple) -> None:
        self.key, self.offset, self.size, self.stride = key, offset, size, stride


def _rebuild(storage: str, offset: int, size: tuple, stride: tuple, *rest: Any) -> _Tensor:
    return _Tensor(storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Tensors and ordered dicts only: nothing in the file can run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild
        if module == "torch" and name == "FloatStorage":
            return name
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid: Any) -> str:
        if not (isinstance(pid, tuple) and pid[0] == "storage" and pid[1] == "FloatStorage"):
            raise pickle.UnpicklingError("only float32 storages are allowed")
        return str(pid[2])


def load_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The ``model_state`` of a legacy-format (non-zip) PyTorch checkpoint, as numpy arrays."""
    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system information
            pickle.load(f)  # noqa: S301 - plain values; the state below is restricted
        state = _Unpickler(f).load()
        keys = pickle.load(f)  # noqa: S301 - a list of storage keys
        storages = {}
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            storages[str(key)] = np.frombuffer(f.read(4 * count), dtype="<f4")
    out = {}
    for name, t in state["model_state"].items():
        data = storages[t.key][t.offset :]
        strides = [s * 4 for s in t.stride]
        out[name] = np.lib.stride_tricks.as_strided(data, t.size, strides).astype(np.float32)
    return out


def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = RATE) -> np.ndarray:
    """Slaney-style mel filters (librosa's default), shape [n_mels, n_fft // 2 + 1]."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        mel = f / (200.0 / 3)
        log = f >= 1000.0
        mel[log] = 15.0 + np.log(f[log] / 1000.0) / (np.log(6.4) / 27.0)
        return mel

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        hz = m * (200.0 / 3)
        log = m >= 15.0
        hz[log] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m[log] - 15.0))
        return hz

    fft = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(np.array([sr / 2.0]))[0], n_mels + 2))
    diff = np.diff(edges)
    ramps = edges[:, None] - fft[None, :]
    lower = -ramps[:-2] / diff[:-1, None]
    upper = ramps[2:] / diff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    return weights.astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


class VoiceEncoder:
    """Resemblyzer's speaker encoder in numpy."""

    def __init__(self, path: str | Path | None = None) -> None:
        path = path or weights_path()
        if path is None:
            raise FileNotFoundError(
                "speaker diarization needs resemblyzer's weights: "
                "pip install --no-deps resemblyzer==0.1.4"
            )
        self.w = load_weights(path)
        self.filters = mel_filters()
        self.window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)

    def mel(self, wav: np.ndarray) -> np.ndarray:
        """Power mel spectrogram, frames x 40 (librosa's melspectrogram, centred)."""
        padded = np.pad(wav, N_FFT // 2)
        n = 1 + (len(padded) - N_FFT) // HOP
        idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
        spectrum = np.abs(np.fft.rfft(padded[idx] * self.window, axis=1)) ** 2
        return (spectrum.astype(np.float32) @ self.filters.T).astype(np.float32)

    def _lstm(self, x: np.ndarray) -> np.ndarray:
        """The last hidden state of the top layer, for a batch [b, t, 40]."""
        w = self.w
        batch, steps, _ = x.shape
        seq = x
        h = np.zeros((batch, 256), np.float32)
        for layer in range(3):
            wi, wh = w[f"lstm.weight_ih_l{layer}"], w[f"lstm.weight_hh_l{layer}"]
            bias = w[f"lstm.bias_ih_l{layer}"] + w[f"lstm.bias_hh_l{layer}"]
            inputs = seq @ wi.T + bias  # [b, t, 1024], all steps at once
            h = np.zeros((batch, 256), np.float32)
            c = np.zeros((batch, 256), np.float32)
            out = np.empty((batch, steps, 256), np.float32)
            for t in range(steps):
                gates = inputs[:, t] + h @ wh.T
                i, f, g, o = np.split(gates, 4, axis=1)  # PyTorch's gate order
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
                out[:, t] = h
            seq = out
        return h

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """The L2-normed voice embedding (256) of an utterance (16 kHz float32)."""
        rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
        if 0 < rms < 10 ** (-30 / 20):  # resemblyzer raises quiet input to -30 dBFS
            wav = wav * (10 ** (-30 / 20) / rms)
        frames = 1 + len(wav) // HOP
        step = max(int(round(RATE / PARTIALS_PER_SECOND / HOP)), 1)
        starts = list(range(0, max(frames - PARTIAL + step, 1), step))
        last = starts[-1]
        if len(starts) > 1 and (len(wav) - last * HOP) / (PARTIAL * HOP) < 0.75:
            starts.pop()  # a last partial mostly of padding
        need = (starts[-1] + PARTIAL) * HOP
        if need > len(wav):
            wav = np.pad(wav, (0, need - len(wav)))
        mel = self.mel(wav.astype(np.float32))
        batch = np.stack([mel[s : s + PARTIAL] for s in starts])
        hidden = self._lstm(batch)
        raw = np.maximum(hidden @ self.w["linear.weight"].T + self.w["linear.bias"], 0.0)
        raw /= np.linalg.norm(raw, axis=1, keepdims=True) + 1e-9
        mean = raw.mean(axis=0)
        return mean / (np.linalg.norm(mean) + 1e-9)


class SpeakerClusters:
    """Online speaker assignment for one shared microphone."""

    def __init__(self, threshold: float = SAME_SPEAKER) -> None:
        self.threshold = threshold
        self.sums: list[np.ndarray] = []

    def assign(self, embedding: np.ndarray) -> int:
        """The speaker (1, 2, ...) of an utterance's embedding."""
        best, score = -1, -1.0
        for i, total in enumerate(self.sums):
            mean = total / (np.linalg.norm(total) + 1e-9)
            sim = float(mean @ embedding)
            if sim > score:
                best, score = i, sim
        if best >= 0 and (score >= self.threshold or len(self.sums) >= MAX_SPEAKERS):
            self.sums[best] = self.sums[best] + embedding
            return best + 1
        self.sums.append(embedding.copy())
        return len(self.sums)
