"""bench_katcp's measurements: katcp round trips, and ``?signals`` while others ping.

:func:`round_trips` times sequential requests on one client. :class:`Pinger`
does the same in the background on a client of its own, keeping each round
trip's start and end, so that they can be sorted afterwards into those that
overlapped a ``?signals`` request (dsim rendering a window in a worker thread
while its event loop serves katcp and feeds spead2) and those that did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiokatcp

from . import katcp


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of round trips (seconds) in ms; NaNs when there are none."""
    if not samples:
        nan = float("nan")
        return {"n": 0, "p50_ms": nan, "p90_ms": nan, "p99_ms": nan, "max_ms": nan, "mean_ms": nan}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "p50_ms": 1e3 * pick(0.50),
        "p90_ms": 1e3 * pick(0.90),
        "p99_ms": 1e3 * pick(0.99),
        "max_ms": 1e3 * ordered[-1],
        "mean_ms": 1e3 * statistics.fmean(ordered),
    }


async def round_trips(client: aiokatcp.Client, n: int, gap: float) -> list[float]:
    """`n` sequential ``?watchdog`` round trips, `gap` seconds apart (seconds each)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        await katcp.request(client, "watchdog", timeout=5)
        times.append(time.perf_counter() - start)
        await asyncio.sleep(gap)
    return times


@dataclass
class Pinger:
    """``?watchdog`` every `gap` seconds (after each reply) until stopped; keeps (start, end)."""

    client: aiokatcp.Client
    gap: float = 0.001
    trips: list[tuple[float, float]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await katcp.request(self.client, "watchdog", timeout=10)
            self.trips.append((start, time.perf_counter()))
            await asyncio.sleep(self.gap)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def split(self, windows: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
        """Round trips (seconds) that overlapped one of `windows` (perf_counter spans), and
        the others."""
        inside: list[float] = []
        outside: list[float] = []
        for start, end in self.trips:
            hit = any(start < w_end and end > w_start for w_start, w_end in windows)
            (inside if hit else outside).append(end - start)
        return inside, outside
