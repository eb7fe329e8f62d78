"""bench_realtime's measurement: payload rate and clock lag of a stream into unread sockets.

A :class:`Stream` (dsim's engine, or the minimal replay sender) sends the
MeerKAT format, one polarisation per unread UDP socket on 127.0.0.1. After a
warm-up, the payload bytes it has completed are read at the start and the end
of a window; their difference over the window's wall time is the achieved
rate, compared with what the ADC clock asks for (``rate * 10 / 8 * pols``).
The lag is read at the end: how far the newest heap handed to spead2 trails
the wall clock (keeping up means slightly ahead, negative).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from .net import port_of, udp_socket
from .procstat import CpuMonitor

#: Achieved within this fraction of requested, and lag under MAX_LAG: keeps up.
TOLERANCE = 0.005
MAX_LAG = 0.010
SAMPLE_BITS = 10
HEADER = (
    f"{'ADC MHz':>10} {'pols':>5} {'want MB/s':>12} {'got MB/s':>12} "
    f"{'error':>9} {'lag ms':>10} {'keeps up':>8} {'error range':>17}"
)


class Stream(Protocol):
    """A MeerKAT-format sender under test."""

    def start(self) -> None: ...

    def bytes_sent(self) -> int: ...

    def time_lag(self) -> float | None: ...

    async def stop(self) -> None: ...

    async def close(self) -> None: ...


#: Builds a stream to these ports, paced at this ADC rate (None: unpaced).
StreamFactory = Callable[[Sequence[int], float | None], Stream]


async def measure_once(
    factory: StreamFactory,
    adc_rate: float,
    polarisations: int,
    seconds: float,
    paced: bool = True,
    warmup: float = 1.0,
) -> dict[str, float]:
    """One run of a new stream; unpaced runs are compared with the rate `adc_rate` would need."""
    sinks = [udp_socket() for _ in range(polarisations)]
    try:
        stream = factory([port_of(s) for s in sinks], adc_rate if paced else None)
        try:
            return await measure_stream(stream, adc_rate, polarisations, seconds, paced, warmup)
        finally:
            await stream.close()
    finally:
        for sink in sinks:
            sink.close()


async def measure_stream(
    stream: Stream,
    adc_rate: float,
    polarisations: int,
    seconds: float,
    paced: bool = True,
    warmup: float = 1.0,
) -> dict[str, float]:
    """Start `stream`, measure one window after `warmup` seconds, stop it (it stays open).

    ``other_cpu`` is how many CPUs other processes kept busy during the window
    (:class:`benchkit.procstat.CpuMonitor`; NaN without /proc).
    """
    monitor = CpuMonitor([])
    stream.start()
    try:
        await asyncio.sleep(warmup)
        b0, t0, c0 = stream.bytes_sent(), time.monotonic(), monitor.snapshot()
        await asyncio.sleep(seconds)
        b1, t1, c1 = stream.bytes_sent(), time.monotonic(), monitor.snapshot()
        lag = stream.time_lag()
    finally:
        await stream.stop()
    requested = adc_rate * SAMPLE_BITS / 8 * polarisations
    achieved = (b1 - b0) / (t1 - t0)
    ratio = achieved / requested
    if paced:
        keeps_up = abs(ratio - 1) <= TOLERANCE and (lag or 0.0) < MAX_LAG
    else:
        keeps_up = ratio >= 1 - TOLERANCE  # it could keep up, if paced
    return {
        "adc_rate": adc_rate,
        "polarisations": polarisations,
        "requested_Bps": requested,
        "achieved_Bps": achieved,
        "ratio": ratio,
        "time_lag_s": float("nan") if lag is None else lag,
        "keeps_up": keeps_up,
        "other_cpu": float("nan") if (other := monitor.other_cpus(c0, c1)) is None else other,
    }


async def measure(
    factory: StreamFactory,
    adc_rate: float,
    polarisations: int,
    seconds: float,
    repeats: int,
    paced: bool = True,
) -> dict[str, float]:
    """The median of `repeats` runs (these machines are shared: single runs are noisy)."""
    runs = [
        await measure_once(factory, adc_rate, polarisations, seconds, paced) for _ in range(repeats)
    ]
    return summarise(runs)


def summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median run by ratio, with the range of ratios over all runs."""
    runs = sorted(runs, key=lambda r: r["ratio"])
    median = dict(runs[len(runs) // 2])
    median["ratio_min"] = runs[0]["ratio"]
    median["ratio_max"] = runs[-1]["ratio"]
    return median


def line(r: dict[str, float]) -> str:
    """One row under :data:`HEADER`."""
    lag = r["time_lag_s"]
    return (
        f"{r['adc_rate'] / 1e6:10.1f} {int(r['polarisations']):5d} "
        f"{r['requested_Bps'] / 1e6:12.1f} {r['achieved_Bps'] / 1e6:12.1f} "
        f"{100 * (r['ratio'] - 1):+8.3f}% "
        + (f"{1e3 * lag:10.2f} " if lag == lag else f"{'-':>10} ")
        + f"{'yes' if r['keeps_up'] else 'NO':>8} "
        f"{100 * (r['ratio_min'] - 1):+7.2f}%..{100 * (r['ratio_max'] - 1):+.2f}%"
    )
