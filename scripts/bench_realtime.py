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

Part 4 (``signal``) streams a rendered signal (``--signals``: one expression,
repeated per polarisation with distinct explicit wgn seeds, or a full spec;
rendered at ``--period`` before anything is timed): (a) one polarisation at
``--replay-rate`` as a signal, as the counter pattern and by the replay sender
(with dsim's own paced burst), paced and unpaced, with the paired ratios
signal/counter and signal/replay (target: signal >= 0.95x replay, and keeping to
the clock); (b) two polarisations at each of ``--signal-rates`` (UHF and L-band),
signal and counter. All its variants are interleaved in every repetition.
Sends only to 127.0.0.1.

    .venv/bin/python scripts/bench_realtime.py [--seconds 10] [--sweep 214e6,428e6,...]
    .venv/bin/python scripts/bench_realtime.py --parts signal --signals "cw(0.5, 1e8) + wgn(0.1)"
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
from pathlib import Path

from benchkit import RESULTS_DIR, progress
from benchkit.engine_sender import DEFAULT_PERIOD, PACED_BURST, MeerkatEngine, uses_gso
from benchkit.realtime import HEADER, StreamFactory, line, measure, measure_once, summarise
from benchkit.replay import MeerkatReplay
from benchkit.rtsignal import (
    HEADER_PREFIX,
    HEADER_SUFFIX,
    Variant,
    paired,
    ratio_text,
    row_line,
    run_interleaved,
    table,
)
from benchkit.signalspec import DEFAULT_EXPRESSION, per_polarisation

#: spead2's rate-limiter burst for the "replay256K" row (spead2's default is 64 KiB).
BIG_BURST = 256 * 1024
SENDERS: dict[str, StreamFactory] = {
    "dsim": MeerkatEngine,
    "replay": MeerkatReplay,
    "replay256K": functools.partial(MeerkatReplay, burst_size=BIG_BURST),
}
PARTS = ("target", "sweep", "replay", "signal")
#: Signal part: signal >= this fraction of the replay sender's rate (paired median).
SIGNAL_TARGET = 0.95
BANDS = {1712e6: "L", 1088e6: "UHF", 875e6: "S"}


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


def band(rate: float) -> str:
    return f"{BANDS.get(rate, f'{rate / 1e6:g}M')}"


def signal_variants(args: argparse.Namespace) -> list[Variant]:
    """The signal part's variants, streams not yet made (see benchkit.rtsignal)."""

    def engine(spec: str | None) -> StreamFactory:
        return functools.partial(
            MeerkatEngine, signals=spec, period=args.period, dither_seed=args.dither_seed
        )

    variants: list[Variant] = []
    modes = [True, False] if args.signal_unpaced else [True]
    if args.replay_rate:
        spec = per_polarisation(args.signals, 1)
        group = f"{band(args.replay_rate)} 1pol"
        replay = functools.partial(MeerkatReplay, burst_size=PACED_BURST)
        for paced in modes:
            variants += [
                Variant(group, "signal", args.replay_rate, 1, paced, engine(spec)),
                Variant(group, "counter", args.replay_rate, 1, paced, engine(None)),
                Variant(group, "replay", args.replay_rate, 1, paced, replay),
            ]
    spec2 = per_polarisation(args.signals, 2)
    for rate in args.signal_rates:
        group = f"{band(rate)} 2pol"
        variants += [
            Variant(group, "signal", rate, 2, True, engine(spec2)),
            Variant(group, "counter", rate, 2, True, engine(None)),
        ]
    return variants


async def signal_part(args: argparse.Namespace) -> dict[str, object]:
    """Part 4: dsim with a rendered signal against counter and replay, interleaved."""
    variants = signal_variants(args)
    try:
        for v in variants:
            try:
                stream = v.open()
            except ValueError as exc:  # dsim's ConfigError, SignalError: one line for the user
                raise SystemExit(f"bench_realtime: {v.group} {v.sender}: {exc}") from None
            if isinstance(stream, MeerkatEngine):
                progress(
                    f"  {v.group} {v.sender} {v.mode}: set up in {stream.setup_seconds:.2f} s "
                    f"({stream.signal})"
                )
        await run_interleaved(
            variants, args.signal_seconds, args.repeats, progress, args.signal_warmup
        )
    finally:
        for v in variants:
            await v.close()
    rows = table(variants)
    print(HEADER_PREFIX + HEADER + HEADER_SUFFIX)
    for v in variants:
        print(row_line(v, summarise(v.runs)))
    by_key = {(v.group, v.sender, v.paced): v for v in variants}
    ratios: list[dict[str, object]] = []
    verdicts: list[str] = []
    all_met = True
    print("\nPaired ratios of achieved rates, median (min..max) over the rounds:")
    for (group, sender, paced), v in by_key.items():
        if sender != "signal":
            continue
        parts = []
        for other in ("counter", "replay"):
            if (group, other, paced) in by_key:
                r = paired(v, by_key[(group, other, paced)])
                ratios.append({"group": group, "mode": v.mode, "ratio": f"signal/{other}", **r})
                parts.append(ratio_text(f"signal/{other}", r))
        print(f"{group:>12} {v.mode:>8}: " + ", ".join(parts))
        if (group, "replay", paced) in by_key and paced:
            r = paired(v, by_key[(group, "replay", paced)])
            keeps = summarise(v.runs)["keeps_up"]
            met = r["median"] >= SIGNAL_TARGET and bool(keeps)
            all_met &= met
            verdicts.append(
                f"{group} paced: signal/replay {r['median']:.3f} (target >= {SIGNAL_TARGET}), "
                f"keeps to the clock: {'yes' if keeps else 'NO'} -> {'met' if met else 'NOT met'}"
            )
    for text in verdicts:
        print("Target: " + text)
    return {
        "spec": args.signals,
        "period": args.period,
        "seconds": args.signal_seconds,
        "rows": rows,
        "ratios": ratios,
        "verdicts": verdicts,
        "met": all_met,
    }


async def main_async(args: argparse.Namespace) -> int:
    engine = SENDERS["dsim"]
    print(
        f"# spead2 GSO: {uses_gso()}; median of {args.repeats} runs per point "
        f"({args.seconds:g} s, sweep {args.sweep_seconds:g} s, signal {args.signal_seconds:g} s); "
        "MB = 10^6 payload bytes"
    )
    results: dict[str, object] = {}
    status = 0
    if "target" in args.parts:
        print("Target: rate within 0.5 %")
        print(HEADER)
        target = await measure(engine, args.rate, args.polarisations, args.seconds, args.repeats)
        print(line(target))
        results["target"] = target
        status = 0 if target["keeps_up"] else 1
    if "sweep" in args.parts:
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
        results["sweep"] = sweep
        results["best"] = best
    if "replay" in args.parts and args.replay_rate:
        print(
            f"\nAgainst a minimal spead2 replay sender, one polarisation at "
            f"{args.replay_rate / 1e6:.1f} MHz (unpaced: error = headroom over that rate)"
        )
        print(f"{'sender':>10} {'mode':>8} {HEADER}")
        results["replay"] = await compare(args)
    if "signal" in args.parts:
        print(
            f"\nWith a signal: {args.signals!r} per polarisation, period {args.period} "
            f"samples, rendered before timing; replay with dsim's {PACED_BURST // 1024} KiB "
            "burst (unpaced: error = headroom over the rate)"
        )
        signal = await signal_part(args)
        results["signal"] = signal
        status |= 0 if signal["met"] else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return status


def parts(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {unknown}: choose from {PARTS}")
    return chosen


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
    parser.add_argument(
        "--parts",
        type=parts,
        default=list(PARTS),
        help=f"what to run, comma-separated (default {','.join(PARTS)})",
    )
    parser.add_argument(
        "--signals",
        default=DEFAULT_EXPRESSION,
        help="signal part: one expression, repeated per polarisation with distinct wgn seeds, "
        "or a full spec for two polarisations (default %(default)r)",
    )
    parser.add_argument(
        "--period",
        type=int,
        default=DEFAULT_PERIOD,
        help="signal part: window period in samples (default %(default)d, dsim's)",
    )
    parser.add_argument("--dither-seed", type=int, default=1)
    parser.add_argument(
        "--signal-rates",
        type=lambda t: [float(x) for x in t.split(",") if x.strip()],
        default=[1088e6, 1712e6],
        help="signal part (b): ADC rates of the two-polarisation runs (default UHF, L-band; "
        "'' skips (b))",
    )
    parser.add_argument("--signal-seconds", type=float, default=4.0)
    parser.add_argument(
        "--signal-warmup",
        type=float,
        default=2.0,
        help="signal part: seconds from start to the window (a late start is caught up at "
        "5 %% above the rate)",
    )
    parser.add_argument(
        "--signal-unpaced",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="signal part (a): also unpaced (headroom) runs",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "realtime.json")
    args = parser.parse_args()
    if "signal" in args.parts:
        try:  # (a) has one polarisation, (b) two: the spec must make both
            for pols, wanted in ((1, args.replay_rate), (2, args.signal_rates)):
                if wanted:
                    per_polarisation(args.signals, pols)
        except ValueError as exc:
            parser.error(f"--signals: {exc}")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
