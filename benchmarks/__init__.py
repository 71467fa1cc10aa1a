"""Benchmarks: they print figures; no timing is asserted in the test suite."""
