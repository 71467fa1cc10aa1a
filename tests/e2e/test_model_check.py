"""The speech model's check at start-up: every process of a server with workers (the front and
each worker) hashed the model (145 MB for base: 5-26 s a restart under load). Now one of them
hashes it and records a stamp; the others, and the next start, skip the hash while the file is
unchanged; a model changed since is hashed again and refused. The model here is a small
stand-in, pinned like an operator's own (transcription.model_dir and model_sha256)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time

import pytest

from tests.support.server import ServerProcess

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        importlib.util.find_spec("faster_whisper") is None, reason="needs visio-sfu[notes]"
    ),
]

HASHED = "sha256 matches its pin"
READY = "transcription ready: model"


def run_server(model, pin: str, cache) -> str:
    """Start a server with two workers, wait until its three processes checked the model,
    stop it; its output."""
    server = ServerProcess(
        extra=[
            "--workers",
            "2",
            "--transcription-model-dir",
            str(model),
            "--transcription-model-sha256",
            pin,
        ],
        env={"VISIO_MODEL_CACHE": str(cache)},
        start_timeout=90,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = server.output(None)
            if text.count(READY) + text.count("transcription refuses to start") >= 3:
                break
            time.sleep(0.2)
        return server.output(None)
    finally:
        server.stop()


def test_a_server_with_workers_hashes_the_model_once(tmp_path):
    model, cache = tmp_path / "model", tmp_path / "cache"
    model.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (model / name).write_text("{}")
    content = os.urandom(8 << 20)
    (model / "model.bin").write_bytes(content)
    pin = hashlib.sha256(content).hexdigest()

    first = run_server(model, pin, cache)
    assert first.count(READY) == 3, first[-3000:]  # the front and two workers
    assert first.count(HASHED) == 1, first[-3000:]  # one of them hashed
    again = run_server(model, pin, cache)
    assert again.count(READY) == 3 and again.count(HASHED) == 0, again[-3000:]
    # a model changed in place (same size): hashed again, refused by every process
    with open(model / "model.bin", "r+b") as f:
        f.write(bytes([content[0] ^ 0xFF]))
    changed = run_server(model, pin, cache)
    assert changed.count(READY) == 0, changed[-3000:]
    assert changed.count(f"expected {pin}: refusing to load") == 3, changed[-3000:]
