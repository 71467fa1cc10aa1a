"""Instructions executed by one thread in marked stretches of a benchmark, counted by valgrind's
callgrind: exact and repeatable where CPU time on a shared machine spreads over 3x.

A benchmark re-runs itself under ``valgrind --tool=callgrind`` (``run``); in that run it calls
``Marks.toggle()`` around what it measures (collection starts off) and ``Marks.dump(label)`` at
the end of each round; ``run`` then reads each round's count for the thread asked for. Counts
are of instructions, not time: what a change adds to a code path, without what other processes
on the machine take from it (caches, memory bandwidth, a busy sibling core), which only timed
runs show. Threads in the process are run one at a time under valgrind; other processes
(spawned workers) run natively.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_SOURCE = r"""
#include <valgrind/callgrind.h>
void cg_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }
void cg_dump(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }
int cg_running(void) { return RUNNING_ON_VALGRIND; }
"""

ENV = "VISIO_BENCH_CALLGRIND"  # set in the run under valgrind
_LABEL = "desc: Trigger: Client Request: "  # a dump's header line naming its label


def available() -> str | None:
    """None if instructions can be counted here, else why not."""
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (apt install valgrind)"
    if not Path("/usr/include/valgrind/callgrind.h").exists():
        return "valgrind's headers are missing (apt install valgrind)"
    if shutil.which("cc") is None:
        return "no C compiler (apt install gcc)"
    return None


class Marks:
    """Callgrind's client requests, from Python (a three-function C library built on first use)."""

    def __init__(self) -> None:
        build = Path(tempfile.mkdtemp(prefix="visio-cg-"))
        source, library = build / "cg.c", build / "cg.so"
        source.write_text(_SOURCE)
        subprocess.run(
            ["cc", "-O1", "-shared", "-fPIC", "-o", str(library), str(source)], check=True
        )
        self._lib = ctypes.CDLL(str(library))
        shutil.rmtree(build, ignore_errors=True)  # (mapped: the files are no longer needed)
        self._lib.cg_dump.argtypes = [ctypes.c_char_p]
        self.running = bool(self._lib.cg_running())  # False: the marks do nothing

    def toggle(self) -> None:
        """Start or stop counting (every thread's, each to its own count)."""
        self._lib.cg_toggle()

    def dump(self, label: str) -> None:
        """Write the counts since the last dump, labelled, and start again from zero."""
        self._lib.cg_dump(label.encode())


def run(argv: list[str], thread: int = 1, timeout: float = 3600) -> dict[str, list[int]]:
    """Run ``python argv`` under callgrind (``ENV`` set, counting off at start); the count of
    ``thread`` (1: the main thread) in each dump, grouped by the dump's label, in order."""
    out = Path(tempfile.mkdtemp(prefix="visio-cg-out-"))
    try:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--collect-atstart=no",
            "--separate-threads=yes",
            "--trace-children=no",
            "--dump-instr=no",
            f"--callgrind-out-file={out}/cg.out",
            sys.executable,
            *argv,
        ]
        env = dict(os.environ, **{ENV: "1"})
        done = subprocess.run(command, timeout=timeout, env=env, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:  # valgrind's own chatter is on stderr: shown only on failure
            raise SystemExit(f"callgrind run failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return read_dumps(out, thread)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def read_dumps(directory: Path, thread: int) -> dict[str, list[int]]:
    """The count of ``thread`` in each labelled dump in ``directory`` (``cg.out.<n>-<thread>``,
    as ``--separate-threads=yes`` names them), grouped by label, in the order dumped."""
    name = re.compile(r"cg\.out\.(\d+)-(\d+)$")
    dumps = []
    for path in directory.iterdir():
        m = name.match(path.name)
        if m and int(m.group(2)) == thread:
            dumps.append((int(m.group(1)), path))
    counts: dict[str, list[int]] = {}
    for _n, path in sorted(dumps):
        label, total = "", None
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(_LABEL):
                label = line[len(_LABEL) :].strip()
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
        if label and total is not None:
            counts.setdefault(label, []).append(total)
    return counts
