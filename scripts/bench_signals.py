#!/usr/bin/env python3
"""Time dsim.signals.render, and the asyncio event-loop lag while it runs in a thread.

For each (spec, period, threads) the window is rendered --repeats times into new
memory ("fresh") and each time again into that same window ("reused", as a
spare window would be), from a worker thread (``loop.run_in_executor``, as
dsim does), while an asyncio task sleeps 1 ms at a time and records how late
each tick wakes: that is how long katcp requests would wait. Prints the median
render times, the lag percentiles over all renders, the peak memory a fresh
render added (peak RSS, reset before each render) per sample of every output,
and "others": the most CPUs other processes used during any of the renders
(before each render the script waits, up to --patience seconds, for them to
use less than 0.1 CPU; a row with a high value was measured on a busy machine).

    .venv/bin/python scripts/bench_signals.py                 # the default table
    .venv/bin/python scripts/bench_signals.py --periods 24 --threads 2 --repeats 1

The machine is shared: keep runs short, and compare numbers taken together.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from dsim.signals import Window, parse, render

TARGET = "cw(0.5, 1e8) + wgn(0.1); cw(0.5, 1e8) + wgn(0.1);"
#: katgpucbf's dsim on this machine: 2**27 samples, two polarisations (REFERENCE.md).
KATGPUCBF = {
    "cw(0.5, 1e8); cw(0.5, 1.1e8);": 3.7,
    "common = nodither(wgn(0.05, 1)); common; common;": 4.1,
    "multicw(30, 0.01, 0.001, 1e8, 1e7); multicw(30, 0.01, 0.001, 1.1e8, 1e7);": 5.3,
}


def _status(field: str) -> int:
    """A VmRSS/VmHWM-style field of /proc/self/status, in bytes (0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds used by the whole machine, by this process) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path("/proc/stat").read_text().split("\n")[0].split()[1:]
    busy = sum(int(v) for i, v in enumerate(fields) if i not in (3, 4))  # all but idle, iowait
    times = os.times()
    return busy / tick, times.user + times.system


def _others(before: tuple[float, float], after: tuple[float, float], seconds: float) -> float:
    """CPUs' worth of work other processes did between two _cpu_seconds readings."""
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / seconds


async def _wait_quiet(limit: float, patience: float) -> None:
    """Wait (up to `patience` s) until other processes use less than `limit` CPUs."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        before = _cpu_seconds()
        await asyncio.sleep(0.5)
        if _others(before, _cpu_seconds(), 0.5) < limit:
            return


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


async def _measure(
    spec: str, period: int, threads: int, repeats: int, bits: int, fs: float, patience: float
) -> dict[str, float]:
    resolved = parse(spec).resolve(period, fs)
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    state = {"measuring": False, "running": True}

    async def ticker() -> None:
        while state["running"]:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            if state["measuring"]:
                lags.append(time.perf_counter() - before - 0.001)

    others: list[float] = []

    async def timed(into: Window | None) -> tuple[Window, float]:
        await _wait_quiet(0.1, patience)
        state["measuring"] = True
        cpu = _cpu_seconds()
        start = time.perf_counter()
        window = await loop.run_in_executor(
            None, lambda: render(resolved, bits, 1, threads=threads, into=into)
        )
        seconds = time.perf_counter() - start
        others.append(_others(cpu, _cpu_seconds(), seconds))
        state["measuring"] = False
        return window, seconds

    task = asyncio.create_task(ticker())
    fresh: list[float] = []
    reused: list[float] = []
    peaks = []
    for _ in range(repeats):
        base = _status("VmRSS")
        _reset_peak()
        window, seconds = await timed(None)  # new memory: the kernel maps it in as it is written
        fresh.append(seconds)
        peaks.append(_status("VmHWM") - base)
        _, seconds = await timed(window)  # into the same window: as a spare window is reused
        reused.append(seconds)
        del window
    state["running"] = False
    await task
    lags.sort()
    n_samples = period * resolved.n_outputs
    return {
        "fresh": statistics.median(fresh),
        "reused": statistics.median(reused),
        "p50": lags[len(lags) // 2] * 1e3 if lags else float("nan"),
        "p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1e3 if lags else float("nan"),
        "max": lags[-1] * 1e3 if lags else float("nan"),
        "bytes_per_sample": max(peaks) / n_samples if peaks else float("nan"),
        "others": max(others),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--periods", default="24,25,26,27", help="log2 periods (default %(default)s)"
    )
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}", help="thread counts")
    parser.add_argument("--repeats", type=int, default=3, help="renders per row (median)")
    parser.add_argument("--bits", type=int, default=10)
    parser.add_argument("--adc-sample-rate", type=float, default=1712e6)
    parser.add_argument("--spec", action="append", help="spec(s) to time (default: the target)")
    parser.add_argument(
        "--patience",
        type=float,
        default=30.0,
        help="wait up to this many seconds before each render for other processes to go quiet",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also katgpucbf's measured specs at the largest period",
    )
    args = parser.parse_args()
    periods = [int(p) for p in args.periods.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    rows = [(spec, p, t) for spec in args.spec or [TARGET] for p in periods for t in thread_counts]
    if args.compare:
        rows += [(spec, max(periods), max(thread_counts)) for spec in KATGPUCBF]
    print(
        f"{'period':>8} {'threads':>7} {'fresh s':>8} {'reused s':>8} {'lag p50':>8} {'p99':>7} "
        f"{'max':>7} {'B/sample':>8} {'others':>6} {'katgpucbf':>9}  spec"
    )
    for spec, log2, threads in rows:
        result = asyncio.run(
            _measure(
                spec,
                1 << log2,
                threads,
                args.repeats,
                args.bits,
                args.adc_sample_rate,
                args.patience,
            )
        )
        theirs = KATGPUCBF.get(spec) if log2 == 27 else None
        print(
            f"{'2**' + str(log2):>8} {threads:>7} {result['fresh']:8.3f} {result['reused']:8.3f} "
            f"{result['p50']:7.2f}m {result['p99']:6.2f}m {result['max']:6.2f}m "
            f"{result['bytes_per_sample']:8.2f} {result['others']:6.2f} "
            f"{f'{theirs:.1f} s' if theirs else '':>9}  {spec}",
            flush=True,
        )


if __name__ == "__main__":
    main()
