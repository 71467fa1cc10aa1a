"""Smoke test of the VP9 SVC per-packet benchmark (benchmarks/svc.py): it runs, and what it
measures is what it says (every packet forwarded at the top layer, a third at layer 0,
a twelfth at layer 0 and temporal layer 0)."""

from __future__ import annotations

from benchmarks import svc


def test_svc_benchmark_measures_what_it_says():
    results = svc.measure(subscribers=2, count=60)
    assert results["vp8: forwarded share"] == 1.0
    assert results["vp9 svc, top layer: forwarded share"] == 1.0
    assert abs(results["vp9 svc, layer 0: forwarded share"] - 1 / 3) < 0.01
    # spatial layer 0 of T0 pictures only: one picture in four
    assert abs(results["vp9 svc, layer 0 at T0: forwarded share"] - 1 / 12) < 0.01
    assert all(v > 0 for v in results.values())
