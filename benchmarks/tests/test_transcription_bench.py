"""The transcription benchmark at a tiny scale: it works; no timing is checked here."""

import importlib.util

import pytest

from benchmarks import transcription


async def test_forwarding_with_and_without_transcription_runs():
    if importlib.util.find_spec("faster_whisper") is None:
        pytest.skip("visio-sfu[notes] is not installed (scripts/test.sh installs it)")
    figures = await transcription.forwarding(subscribers=2, count=100, rounds=1, rate=0)
    assert figures["loop thread, nothing attached, µs"] > 0
    assert figures["loop thread, tap attached, µs"] > 0
    assert figures["loop thread, transcription running, µs"] > 0
    assert figures["loop thread, transcription and recording, µs"] > 0
