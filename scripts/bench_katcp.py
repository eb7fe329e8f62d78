#!/usr/bin/env python3
"""Control latency under load: ``?watchdog`` while dsim streams, and ``?signals`` while it renders.

Phase ``control``: starts ``dsim`` (``--katcp-port 0``, tutorial format,
unlimited rate) sending to an unread UDP socket on 127.0.0.1, connects an
``aiokatcp.Client`` and times ``--requests`` sequential ``?watchdog`` round
trips, first idle and then while a capture runs at full speed (the send path
competes with the katcp handler for the Python thread). Prints percentiles and
the achieved throughput during the loaded phase. Target: p99 under 10 ms while
streaming. Extra dsim arguments (after ``--``) apply to this phase only.

Phase ``signals``: starts ``dsim`` in the MeerKAT format with two polarisations
(two unread sockets), real time at ``--adc-sample-rate`` (default 214 MHz), with
dsim's default signal period (or ``--period``), and starts a capture. Then,
``--signals-repeats`` times per period, it times ``?signals SPEC PERIOD`` from
request to reply (the reply comes once the new window is rendered and in the
stream), cycling through the ``--spec`` list so that every request is a real
change, at dsim's default period and at ``--max-period`` (default 2**27, dsim's
``--max-period``: katgpucbf's simulator takes 3.7-5.3 s for that here).
Meanwhile a second client sends ``?watchdog`` every ``--gap`` seconds (1 ms)
and a third reads the ``time-lag`` sensor every 0.25 s. Reports the ``?signals``
latency (median, max) per period, the watchdog round trips (p50/p99/max) that
overlapped a ``?signals`` request and those that did not, and whether the stream
kept to its clock. Targets: ``?signals`` under 2 s at the default period;
watchdog p99 under 10 ms while rendering.

    .venv/bin/python scripts/bench_katcp.py [--phases control,signals] [-- DSIM ARGS]
    .venv/bin/python scripts/bench_katcp.py --phases signals --signals-repeats 6

Writes JSON (``--out``). Exit status 0 if every target was met. Sends only to
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiokatcp

from benchkit import RESULTS_DIR, katcp, progress
from benchkit.dsimproc import DsimProcess
from benchkit.engine_sender import DEFAULT_MAX_PERIOD
from benchkit.latency import Pinger, percentiles, round_trips
from benchkit.net import UdpSink

TARGET_P99 = 0.010
TARGET_SIGNALS = 2.0
PHASES = ("control", "signals")
#: The brief's spec and a second one, so that consecutive requests really change the signal.
DEFAULT_SPECS = [
    "cw(0.5, 1e8) + wgn(0.1, 1); cw(0.5, 1e8) + wgn(0.1, 2);",
    "cw(0.5, 1e8) + wgn(0.1, 3); cw(0.5, 1e8) + wgn(0.1, 4);",
]
#: katgpucbf's simulator on this machine, 2**27 samples, two polarisations (REFERENCE.md).
KATGPUCBF_2_27 = "3.7-5.3 s"
SAMPLE_BITS = 10


def rate_mbps(bytes0: str, t0: float, bytes1: str, t1: float) -> float:
    """MB/s between two readings of ``transmitted-bytes`` (server timestamps; NaN if equal)."""
    return (int(bytes1) - int(bytes0)) / (t1 - t0) / 1e6 if t1 > t0 else float("nan")


async def control_phase(args: argparse.Namespace) -> dict[str, object]:
    with UdpSink() as sink:
        # dsim prints its port on stderr at any log level; DsimProcess reads it there.
        dsim = await DsimProcess.start(
            [
                "--heap-size",
                str(args.heap_size),
                "--log-level",
                "WARNING",
                *args.dsim_args,
                f"127.0.0.1:{sink.port}",
            ]
        )
        client = await katcp.connect(dsim.katcp_port)
        try:
            idle = await round_trips(client, args.requests, args.gap)
            await katcp.request(client, "capture-start")
            await asyncio.sleep(1.0)
            t0, _, bytes0 = await katcp.sensor_reading(client, "transmitted-bytes")
            loaded = await round_trips(client, args.requests, args.gap)
            t1, _, bytes1 = await katcp.sensor_reading(client, "transmitted-bytes")
            await katcp.request(client, "capture-stop", timeout=60)
            await katcp.request(client, "halt")
        finally:
            await katcp.close(client)
            await dsim.wait()
    return {
        "heap_size": args.heap_size,
        "requests": args.requests,
        "dsim_args": args.dsim_args,
        "idle": percentiles(idle),
        "streaming": percentiles(loaded),
        "streaming_throughput_MBps": rate_mbps(bytes0, t0, bytes1, t1),
    }


def print_control(result: dict[str, Any], args: argparse.Namespace) -> bool:
    print(f"?watchdog round trip, {args.requests} requests, heap size {args.heap_size}")
    print(f"{'':10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for phase in ("idle", "streaming"):
        p = result[phase]
        assert isinstance(p, dict)
        print(
            f"{phase:10} {p['p50_ms']:8.2f} {p['p90_ms']:8.2f} {p['p99_ms']:8.2f} "
            f"{p['max_ms']:8.2f}"
        )
    print(f"throughput while measuring: {result['streaming_throughput_MBps']:.0f} MB/s")
    streaming = result["streaming"]
    assert isinstance(streaming, dict)
    ok = bool(streaming["p99_ms"] < 1e3 * TARGET_P99)
    print(f"p99 target < {1e3 * TARGET_P99:.0f} ms: {'met' if ok else 'NOT met'}")
    return ok


@dataclass
class SignalsRequest:
    """One timed ``?signals``: from sending the request (`start`) to its reply (`end`)."""

    period: int
    spec: str
    first_timestamp: int
    start: float  #: perf_counter
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


async def poll_lag(client: aiokatcp.Client, lags: list[tuple[float, float]]) -> None:
    """Read ``time-lag`` every 0.25 s into `lags` as (perf_counter, seconds)."""
    while True:
        lag = await katcp.sensor_float(client, "time-lag")
        lags.append((time.perf_counter(), lag))
        await asyncio.sleep(0.25)


async def signals_phase(args: argparse.Namespace) -> dict[str, Any]:
    with UdpSink() as sink0, UdpSink() as sink1:
        dsim_args = [
            "--format",
            "meerkat",
            "--adc-sample-rate",
            repr(args.adc_sample_rate),
            "--log-level",
            "WARNING",
            f"127.0.0.1:{sink0.port}",
            f"127.0.0.1:{sink1.port}",
        ]
        if args.period is not None:
            dsim_args[:0] = ["--period", str(args.period)]
        if args.max_period:
            dsim_args[:0] = ["--max-period", str(max(args.max_period, DEFAULT_MAX_PERIOD))]
        dsim = await DsimProcess.start(dsim_args)
        control = await katcp.connect(dsim.katcp_port)
        pinger = Pinger(await katcp.connect(dsim.katcp_port), args.gap)
        monitor = await katcp.connect(dsim.katcp_port)
        lags: list[tuple[float, float]] = []
        lag_task: asyncio.Task[None] | None = None
        requests: list[SignalsRequest] = []
        try:
            default_period = await katcp.sensor_int(control, "period")
            periods = [default_period]
            if args.max_period and args.max_period != default_period:
                periods.append(args.max_period)
            await katcp.request(control, "capture-start")
            await asyncio.sleep(1.0)
            phase_start = time.perf_counter()
            lag_task = asyncio.get_running_loop().create_task(poll_lag(monitor, lags))
            pinger.start()
            await asyncio.sleep(1.0)  # a baseline: pings and lag before any ?signals
            t0, _, bytes0 = await katcp.sensor_reading(control, "transmitted-bytes")
            index = 0
            for period in periods:
                for i in range(args.signals_repeats):
                    spec = args.spec[index % len(args.spec)]
                    index += 1
                    await asyncio.sleep(args.settle)
                    start = time.perf_counter()
                    reply, _ = await katcp.request(
                        control, "signals", spec, period, timeout=args.signals_timeout
                    )
                    end = time.perf_counter()
                    requests.append(SignalsRequest(period, spec, int(reply[0]), start, end))
                    progress(
                        f"  ?signals period {period} #{i + 1}: {end - start:.3f} s "
                        f"({len(pinger.trips)} pings so far)"
                    )
            await asyncio.sleep(args.settle)
            t1, _, bytes1 = await katcp.sensor_reading(control, "transmitted-bytes")
            await pinger.stop()
            canonical = await katcp.sensor_value(control, "signals")
            await katcp.request(control, "capture-stop", timeout=60)
            await katcp.request(control, "halt")
        finally:
            await pinger.stop()
            if lag_task is not None:
                lag_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lag_task
            for client in (control, pinger.client, monitor):
                await katcp.close(client)
            await dsim.wait()
    per_period: list[dict[str, Any]] = []
    for period in periods:
        spans = [(r.start, r.end) for r in requests if r.period == period]
        seconds = [r.seconds for r in requests if r.period == period]
        inside, _ = pinger.split(spans)
        during = [lag for when, lag in lags if any(s < when < e for s, e in spans)]
        per_period.append(
            {
                "period": period,
                "signals_s": {
                    "median": statistics.median(seconds),
                    "max": max(seconds),
                    "min": min(seconds),
                    "all": seconds,
                },
                "watchdog_during": percentiles(inside),
                "max_time_lag_during_s": max(during, default=float("nan")),
            }
        )
    _, between = pinger.split([(r.start, r.end) for r in requests])
    first_start = requests[0].start if requests else float("inf")
    return {
        "adc_sample_rate": args.adc_sample_rate,
        "default_period": default_period,
        "requests": [{**asdict(r), "seconds": r.seconds} for r in requests],
        "periods": per_period,
        "watchdog_between": percentiles(between),
        "wanted_MBps": args.adc_sample_rate * SAMPLE_BITS / 8 * 2 / 1e6,
        "achieved_MBps": rate_mbps(bytes0, t0, bytes1, t1),
        "max_time_lag_s": max((lag for _, lag in lags), default=float("nan")),
        "max_time_lag_before_s": max(
            (lag for when, lag in lags if when < first_start), default=float("nan")
        ),
        "time_lag_series": [(when - phase_start, lag) for when, lag in lags],
        "requests_relative": [(r.start - phase_start, r.end - phase_start) for r in requests],
        "last_signal": canonical,
    }


def print_signals(result: dict[str, Any], args: argparse.Namespace) -> bool:
    periods = result["periods"]
    rate = result["adc_sample_rate"]
    print(
        f"\n?signals with dsim streaming meerkat, 2 pols, real time at {rate / 1e6:g} MHz "
        f"(specs cycled: {' | '.join(args.spec)})"
    )
    print(
        f"{'period':>10} {'n':>3} {'median s':>9} {'max s':>7} | watchdog during: "
        f"{'n':>5} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} | {'max lag ms':>10}"
    )
    ok = True
    for p in periods:
        s, w = p["signals_s"], p["watchdog_during"]
        print(
            f"{p['period']:>10} {len(s['all']):3d} {s['median']:9.3f} {s['max']:7.3f} | "
            f"{'':16} {w['n']:5d} {w['p50_ms']:7.2f} {w['p99_ms']:7.2f} {w['max_ms']:7.2f} | "
            f"{1e3 * p['max_time_lag_during_s']:10.2f}"
        )
    b = result["watchdog_between"]
    print(
        f"watchdog between requests: n {b['n']}, p50 {b['p50_ms']:.2f} ms, "
        f"p99 {b['p99_ms']:.2f} ms, max {b['max_ms']:.2f} ms"
    )
    print(
        f"stream over the phase: {result['achieved_MBps']:.1f} MB/s of "
        f"{result['wanted_MBps']:.1f} wanted; largest time-lag reading "
        f"{1e3 * result['max_time_lag_s']:.1f} ms (before the first ?signals: "
        f"{1e3 * result['max_time_lag_before_s']:.1f} ms)"
    )
    first = periods[0]
    med = first["signals_s"]["median"]
    met = med < TARGET_SIGNALS
    ok &= met
    print(
        f"Target ?signals < {TARGET_SIGNALS:g} s at the default period {first['period']}: "
        f"median {med:.3f} s -> {'met' if met else 'NOT met'}"
    )
    for p in periods:
        p99 = p["watchdog_during"]["p99_ms"]
        met = p99 < 1e3 * TARGET_P99
        ok &= met
        print(
            f"Target watchdog p99 < {1e3 * TARGET_P99:.0f} ms while rendering period "
            f"{p['period']}: {p99:.2f} ms -> {'met' if met else 'NOT met'}"
        )
    for p in periods[1:]:
        print(
            f"Period {p['period']}: median {p['signals_s']['median']:.3f} s "
            f"(katgpucbf's simulator here, 2**27: {KATGPUCBF_2_27})"
        )
    return ok


def phases(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PHASES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown phase(s) {unknown}: choose from {PHASES}")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=phases, default=list(PHASES), help="default %(default)s")
    parser.add_argument("--heap-size", type=int, default=8192, help="control phase")
    parser.add_argument("--requests", type=int, default=2000, help="control phase")
    parser.add_argument("--gap", type=float, default=0.001, help="seconds between ?watchdogs")
    parser.add_argument(
        "--adc-sample-rate",
        type=float,
        default=1712e6 / 8,
        help="signals phase: real-time ADC rate (default %(default)g)",
    )
    parser.add_argument(
        "--period", type=int, help="signals phase: dsim's --period (default: dsim's default)"
    )
    parser.add_argument(
        "--max-period",
        type=int,
        default=DEFAULT_MAX_PERIOD,
        help="signals phase: also time this period (default %(default)d; 0: skip)",
    )
    parser.add_argument(
        "--spec",
        action="append",
        help="signals phase: a full spec for two polarisations (repeatable; the requests "
        "cycle through them; default: the brief's spec and one with other seeds)",
    )
    parser.add_argument("--signals-repeats", type=int, default=4, help="?signals per period")
    parser.add_argument(
        "--settle", type=float, default=0.5, help="seconds between ?signals requests"
    )
    parser.add_argument("--signals-timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "katcp_latency.json")
    parser.add_argument("dsim_args", nargs="*", help="control phase: extra dsim arguments")
    args = parser.parse_args()
    args.spec = args.spec or DEFAULT_SPECS
    result: dict[str, Any] = {}
    ok = True
    if "control" in args.phases:
        result.update(asyncio.run(control_phase(args)))
        ok &= print_control(result, args)
    if "signals" in args.phases:
        signals = asyncio.run(signals_phase(args))
        result["signals"] = signals
        ok &= print_signals(signals, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
