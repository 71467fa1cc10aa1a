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


def test_callgrind_dumps_are_read_per_thread_and_label(tmp_path):
    """The counts --instructions reports: each labelled dump of the thread asked for, in the
    order dumped (the headers as callgrind 3.19 writes them; other threads' files ignored)."""
    from benchmarks.callgrind import read_dumps

    def dump(name: str, part: int, thread: int, label: str, total: int) -> None:
        (tmp_path / name).write_text(
            f"# callgrind format\nversion: 1\npart: {part}\nthread: {thread}\n\n"
            "desc: Timerange: Basic block 0 - 710074509\n"
            f"desc: Trigger: Client Request: {label}\n\n"
            f"positions: line\nevents: Ir\nsummary: {total}\n\nob=(3) libc.so.6\n66 1200\n"
            f"totals: {total}\n"
        )

    dump("cg.out.1-01", 1, 1, "none", 100)
    dump("cg.out.2-01", 2, 1, "both", 130)
    dump("cg.out.10-01", 10, 1, "none", 90)  # ordered by part number, not by name
    dump("cg.out.3-01", 3, 1, "none", 110)
    dump("cg.out.1-02", 1, 2, "none", 5)  # another thread
    (tmp_path / "cg.out-01").write_text("desc: Trigger: Program termination\nsummary: 0\n")
    assert read_dumps(tmp_path, 1) == {"none": [100, 110, 90], "both": [130]}
    assert read_dumps(tmp_path, 2) == {"none": [5]}
