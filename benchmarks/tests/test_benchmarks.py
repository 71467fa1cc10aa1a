"""Benchmark scripts run at a tiny scale: they work; no timing is checked here."""

from benchmarks import adaptive_stream, hotpath, selector
from visio_sfu.layers import select, select_reference


def test_selector_benchmark_inputs_agree():
    sel = selector.make(200)
    assert select(sel).tolist() == select_reference(sel)


def test_adaptive_stream_benchmark_runs():
    without = adaptive_stream.run(3.0, adaptive=False)
    with_ = adaptive_stream.run(3.0, adaptive=True)
    assert 0 < with_ < without


async def test_hotpath_benchmark_forwards_every_packet():
    figures = await hotpath.measure(subscribers=2, count=50)
    assert figures["forwarded packets"] == 100
    assert figures["whole path, per forwarded packet"] > 0
