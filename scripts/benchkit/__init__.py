"""dsim's benchmark kit: the pieces behind ``scripts/bench_*.py`` and ``scripts/soak.py``.

The entry scripts stay the commands people run; this package holds what they
share (starting dsim, katcp look-ups, UDP sinks, /proc readings) and the send
benchmark's parts (senders, workers, runner, reports). What is measured and why
is written up in ``docs/benchmarks.md``.

Only :mod:`benchkit.engine_sender` touches dsim's engine, layout and transport,
so that an engine API change is adapted in one place.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The repository root (this package lives in ``scripts/benchkit``).
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
#: Where the benchmarks write CSV, JSON and plots (git-ignored).
RESULTS_DIR = REPO_ROOT / "bench-results"
#: Every benchmark sends only here.
LOCALHOST = "127.0.0.1"


def progress(text: str) -> None:
    """A progress line on stderr (stdout carries the results)."""
    print(text, file=sys.stderr, flush=True)
