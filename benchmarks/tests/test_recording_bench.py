"""The recording benchmark at a tiny scale: it runs and the recorder writes frames; no timing
is checked here."""

from benchmarks import recording


async def test_recording_benchmark_runs():
    figures = await recording.measure(subscribers=1, count=200, rounds=1)
    assert figures["forwarding (loop thread), no recording"] > 0
    assert figures["frames written (all rounds)"] > 0
    assert 0 < figures["RecordingSink.write alone"] < 50
