"""Benchmark scripts run at a tiny scale: they work; no timing is checked here."""

import pytest

from benchmarks import adaptive_stream, hotpath, selector
from visio_sfu.layers import select, select_reference


@pytest.mark.parametrize("levels", [3, 5])
def test_selector_benchmark_inputs_agree(levels):
    """Simulcast rows, and VP9 SVC rows (``--levels 5``): numpy agrees with the reference,
    and the top level is chosen (the SVC rows' fifth)."""
    sel = selector.make(200, levels=levels)
    assert sel.bitrates.shape == sel.heights.shape == (200, levels)
    chosen = select(sel)
    assert chosen.tolist() == select_reference(sel)
    assert {-1, levels - 1} <= set(chosen.tolist())  # hidden ones, and the top level


def test_adaptive_stream_benchmark_runs():
    without = adaptive_stream.run(3.0, adaptive=False)
    with_ = adaptive_stream.run(3.0, adaptive=True)
    assert 0 < with_ < without


async def test_hotpath_benchmark_forwards_every_packet():
    figures = await hotpath.measure(subscribers=2, count=50)
    assert figures["forwarded packets (a round)"] == 100
    assert figures["whole path, per forwarded packet, best"] > 0
    # the compiled rewrite and the Python one both measured
    assert figures["DownTrack.write, Chromium-like, Python rewrite"] > 0
