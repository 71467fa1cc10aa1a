"""The transcription benchmark at a tiny scale: it works; no timing is checked here."""

from benchmarks import transcription


async def test_forwarding_with_and_without_a_tap_runs():
    figures = await transcription.forwarding(subscribers=2, count=50, rounds=1)
    assert figures["without tap, µs per received packet"] > 0
    assert figures["with tap, µs per received packet"] > 0
