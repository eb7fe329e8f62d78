#!/usr/bin/env python3
"""An array on one machine: how many real-time dsims it sustains side by side, and how aligned.

Starts N = 1, 2, 3, ... ``dsim`` processes with ``dsim.array.Array`` (MeerKAT
format, two polarisations each, ADC rate ``--rate``, one sync time; counter
pattern, or ``--signals``), each sending to two unread UDP sockets on 127.0.0.1,
starts every capture on one timestamp, and after ``--warmup`` seconds measures
each instance for ``--seconds`` from its katcp sensors (``transmitted-bytes``,
``time-lag``, ``next-timestamp``). An instance keeps up if its payload rate is
within 0.5 % of what the clock asks and its final lag is under 0.1 s; N is
sustained if every instance keeps up (in most of ``--repeats`` runs). Stops at
the first N that is not (unless ``--keep-going``).

Alignment: each sink's first data heap is read afterwards with a plain socket
(``SO_TIMESTAMPNS``: the kernel's arrival time), and its arrival is compared
with the wall-clock time of its first sample, ``sync_time + T / rate``; the
table shows each instance's offsets and the spread across instances, and
whether every first heap carries the requested start timestamp.

    .venv/bin/python scripts/bench_array.py [--rate 214e6] [--max-n 8] [--seconds 5]
    .venv/bin/python scripts/bench_array.py --signals "cw(0.5, 1e8) + wgn(0.1)"

Prints a table per N and a verdict; writes JSON (``--out``). Sends only to
127.0.0.1. Exit status 0 if at least one dsim was sustained.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from benchkit import REPO_ROOT, RESULTS_DIR, progress
from benchkit.arrayrun import MAX_LAG, TOLERANCE, ArrayRun, run_array
from benchkit.engine_sender import DEFAULT_PERIOD
from benchkit.signalspec import per_polarisation

HEADER = (
    f"{'inst':>4} {'pid':>7} {'want MB/s':>10} {'got MB/s':>10} {'error':>9} {'lag ms':>8} "
    f"{'CPUs':>5} {'start T':>7} {'pol0 ms':>8} {'pol1 ms':>8} {'keeps up':>8}"
)


def ms(value: float | None, width: int = 8) -> str:
    return f"{'-':>{width}}" if value is None else f"{1e3 * value:{width}.2f}"


def print_run(run: ArrayRun) -> None:
    spread = run.spread_s
    others = "-" if run.other_cpu is None else f"{run.other_cpu:.2f}"
    print(
        f"\nN={run.n}: start timestamp {run.start_timestamp}, processes up in "
        f"{run.startup_s:.1f} s, other processes {others} CPUs"
    )
    print(HEADER)
    for i in run.instances:
        cpus = "-" if i.cpus is None else f"{i.cpus:.2f}"
        print(
            f"{i.index:4d} {i.pid:7d} {i.want_Bps / 1e6:10.1f} {i.got_Bps / 1e6:10.1f} "
            f"{100 * (i.ratio - 1):+8.3f}% {1e3 * i.time_lag_s:8.2f} {cpus:>5} "
            f"{'ok' if i.starts_on_time else 'WRONG':>7} {ms(i.offsets_s[0])} "
            f"{ms(i.offsets_s[1])} {'yes' if i.keeps_up else 'NO':>8}"
        )
    offsets = run.offsets
    if offsets:
        print(
            f"first heaps arrived {1e3 * min(offsets):+.2f}..{1e3 * max(offsets):+.2f} ms from "
            f"their first sample's time; spread across instances {ms(spread, 0).strip()} ms"
        )
    print(f"N={run.n}: {'every instance kept up' if run.keeps_up else 'NOT sustained'}")


async def main_async(args: argparse.Namespace) -> int:
    spec = None if args.signals is None else per_polarisation(args.signals, 2)
    options: dict[str, Any] = {"log_level": "INFO"}
    if spec is not None:
        options.update(period=args.period, dither_seed=args.dither_seed)
    what = f"signal {spec!r}, period {args.period}" if spec else "counter pattern"
    print(
        f"# {args.rate / 1e6:g} MHz x 2 pols per dsim (meerkat, {what}); {args.seconds:g} s "
        f"after {args.warmup:g} s warm-up; keeps up: within {100 * TOLERANCE:g} % and lag "
        f"< {1e3 * MAX_LAG:g} ms; {os.cpu_count()} CPUs"
    )
    runs: list[ArrayRun] = []
    sustained = 0
    for n in range(args.start_n, args.max_n + 1):
        passed = 0
        for r in range(args.repeats):
            progress(f"N={n} run {r + 1}/{args.repeats}: starting {n} dsim processes")
            run = await run_array(
                n, args.rate, args.seconds, args.warmup, spec, args.margin, options
            )
            runs.append(run)
            print_run(run)
            passed += run.keeps_up
            await asyncio.sleep(args.pause)
        ok = 2 * passed > args.repeats
        if ok:
            sustained = n
        elif not args.keep_going:
            break
    verdict = f"sustains {sustained} dsims at {args.rate / 1e6:g} MHz x 2 pols"
    if spec:
        verdict += " (with a signal)"
    print(f"\nVerdict: {verdict} on this {os.cpu_count()}-CPU machine")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "rate": args.rate,
                "signals": spec,
                "period": args.period if spec else None,
                "seconds": args.seconds,
                "sustained": sustained,
                "verdict": verdict,
                "runs": [run.as_dict() for run in runs],
            },
            indent=2,
        )
    )
    return 0 if sustained else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rate", type=float, default=1712e6 / 8, help="ADC samples/s (default %(default)g)"
    )
    parser.add_argument("--start-n", type=int, default=1)
    parser.add_argument("--max-n", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per run")
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds after the start sample before the window (a late start is caught up "
        "at 5 %% above the rate)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per N (majority decides)")
    parser.add_argument(
        "--keep-going", action="store_true", help="do not stop at the first N not sustained"
    )
    parser.add_argument(
        "--signals",
        help="send this signal instead of the counter pattern: one expression (repeated per "
        "polarisation with distinct wgn seeds) or a full two-output spec",
    )
    parser.add_argument("--period", type=int, default=DEFAULT_PERIOD)
    parser.add_argument("--dither-seed", type=int, default=1)
    parser.add_argument(
        "--margin", type=float, default=1.0, help="seconds ahead the common start is set"
    )
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "array.json")
    args = parser.parse_args()
    if args.signals is not None:
        try:
            per_polarisation(args.signals, 2)
        except ValueError as exc:
            parser.error(str(exc))
    # The dsim processes import this tree's dsim, whatever is installed.
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *([path] if path else [])])
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
