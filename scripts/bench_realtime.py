#!/usr/bin/env python3
"""Real-time pacing: achieved against requested rate, and the fastest ADC dsim keeps up with.

Runs dsim's engine in the MeerKAT format with a simulated ADC clock, sending to
unread UDP sockets on 127.0.0.1 (one per polarisation), and measures over
``--seconds`` (after a short warm-up):

* the achieved payload rate (from the engine's byte counter) against the one the
  ADC clock asks for (``adc_rate * sample_bits / 8 * polarisations``);
* the time lag: how far the newest heap handed to spead2 trails the wall clock
  at the end (a stream that keeps up stays slightly ahead, i.e. negative).

Part 1 checks the target at one MeerKAT-like rate (default 1712e6/8 samples/s,
10-bit, two polarisations: within 0.5 %). Part 2 sweeps ADC rates for one
polarisation and reports the highest that keeps up (achieved within 0.5 % and
lag under 10 ms). Part 3 compares dsim, paced and unpaced, with a minimal
spead2 replay sender of the same format (prebuilt heaps, timestamps only;
``benchkit.replay``) at ``--replay-rate`` (default 1712e6: one polarisation
needs 2.14 GB/s of payload), by the same method, runs interleaved; the
``replay256K`` row is the replay sender with a 256 KiB spead2 burst instead of
the default 64 KiB.
Sends only to 127.0.0.1.

    .venv/bin/python scripts/bench_realtime.py [--seconds 10] [--sweep 214e6,428e6,...]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
from pathlib import Path

from benchkit import RESULTS_DIR
from benchkit.engine_sender import MeerkatEngine, uses_gso
from benchkit.realtime import HEADER, StreamFactory, line, measure, measure_once, summarise
from benchkit.replay import MeerkatReplay

#: spead2's rate-limiter burst for the "replay256K" row (spead2's default is 64 KiB).
BIG_BURST = 256 * 1024
SENDERS: dict[str, StreamFactory] = {
    "dsim": MeerkatEngine,
    "replay": MeerkatReplay,
    "replay256K": functools.partial(MeerkatReplay, burst_size=BIG_BURST),
}


async def compare(args: argparse.Namespace) -> list[dict[str, object]]:
    """dsim and the replay sender, paced and unpaced, one polarisation, runs interleaved."""
    modes = [(name, True) for name in SENDERS] + [("dsim", False), ("replay", False)]
    runs: dict[tuple[str, bool], list[dict[str, float]]] = {mode: [] for mode in modes}
    for _ in range(args.repeats):
        for name, paced in modes:
            factory = SENDERS[name]
            result = await measure_once(factory, args.replay_rate, 1, args.sweep_seconds, paced)
            runs[(name, paced)].append(result)
    rows: list[dict[str, object]] = []
    for name, paced in modes:
        row = summarise(runs[(name, paced)])
        mode = "paced" if paced else "unpaced"
        print(f"{name:>10} {mode:>8} {line(row)}", flush=True)
        rows.append({"sender": name, "mode": mode, **row})
    return rows


async def main_async(args: argparse.Namespace) -> int:
    engine = SENDERS["dsim"]
    print(
        f"# spead2 GSO: {uses_gso()}; median of {args.repeats} runs per point "
        f"({args.seconds:g} s, sweep {args.sweep_seconds:g} s); MB = 10^6 payload bytes"
    )
    print("Target: rate within 0.5 %")
    print(HEADER)
    target = await measure(engine, args.rate, args.polarisations, args.seconds, args.repeats)
    print(line(target))
    print("\nSweep, one polarisation")
    print(HEADER)
    sweep = []
    for rate in args.sweep:
        result = await measure(engine, rate, 1, args.sweep_seconds, args.repeats)
        sweep.append(result)
        print(line(result), flush=True)
    best = max((r["adc_rate"] for r in sweep if r["keeps_up"]), default=0.0)
    print(
        f"\nhighest ADC rate kept up with (one polarisation): {best / 1e6:.1f} MHz "
        f"(MeerKAT L-band: 1712 MHz)"
    )
    replay: list[dict[str, object]] = []
    if args.replay_rate:
        print(
            f"\nAgainst a minimal spead2 replay sender, one polarisation at "
            f"{args.replay_rate / 1e6:.1f} MHz (unpaced: error = headroom over that rate)"
        )
        print(f"{'sender':>10} {'mode':>8} {HEADER}")
        replay = await compare(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = {"target": target, "sweep": sweep, "best": best, "replay": replay}
    args.out.write_text(json.dumps(results, indent=2))
    return 0 if target["keeps_up"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1712e6 / 8, help="ADC samples/s")
    parser.add_argument("--polarisations", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--sweep",
        type=lambda t: [float(x) for x in t.split(",")],
        default=[214e6, 428e6, 642e6, 856e6, 1070e6, 1284e6, 1712e6],
    )
    parser.add_argument("--sweep-seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--replay-rate",
        type=float,
        default=1712e6,
        help="ADC samples/s of the comparison with the minimal replay sender, one "
        "polarisation (default %(default)g; 0 skips it)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "realtime.json")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
