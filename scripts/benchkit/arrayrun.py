"""bench_array's measurement: N real-time dsim processes on one clock, side by side.

One run starts N ``dsim`` processes with :class:`dsim.array.Array` (MeerKAT
format, two polarisations each, one ADC rate and sync time), each sending to two
unread :class:`~benchkit.firstheap.TimestampSink` sockets on 127.0.0.1, starts
every capture on one timestamp, waits ``warmup`` seconds after that sample's
time and reads, from each instance over katcp, the sensors
``transmitted-bytes``, ``time-lag`` and ``next-timestamp`` (with the server's
reading timestamps), then again ``seconds`` later. Per instance:

* the payload rate over the window, from ``transmitted-bytes`` and its reading
  timestamps, against what the clock asks for (``rate * 10 / 8 * 2``);
* the lag at the end (``time-lag``; cross-checked from ``next-timestamp``);
* keeps up: rate within :data:`TOLERANCE` and lag under :data:`MAX_LAG`;
* the CPUs its process used over the window (/proc);
* alignment: the first data heap each sink received (kernel arrival time),
  minus the wall-clock time of its first sample, ``sync_time + T / rate``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dsim.array import Antenna, Array

from . import LOCALHOST, katcp
from .firstheap import FirstHeap, TimestampSink
from .procstat import CpuMonitor, cpu_seconds

#: Within this fraction of what the clock asks, and a final lag under MAX_LAG: keeps up.
TOLERANCE = 0.005
MAX_LAG = 0.1
SAMPLE_BITS = 10
POLS = 2
SENSORS = ("transmitted-bytes", "time-lag", "next-timestamp")


@dataclass
class Instance:
    """One dsim of a run: its rate, lag, CPU and first heaps."""

    index: int
    pid: int
    want_Bps: float
    got_Bps: float
    time_lag_s: float
    next_timestamp_lag_s: float
    cpus: float | None
    first: list[FirstHeap | None]
    #: Arrival of each polarisation's first data heap minus its first sample's time.
    offsets_s: list[float | None]
    starts_on_time: bool  #: every first heap has the requested start timestamp

    @property
    def ratio(self) -> float:
        return self.got_Bps / self.want_Bps

    @property
    def keeps_up(self) -> bool:
        return abs(self.ratio - 1) <= TOLERANCE and self.time_lag_s < MAX_LAG


@dataclass
class ArrayRun:
    """One run of N instances."""

    n: int
    adc_rate: float
    start_timestamp: int
    sync_time: float
    startup_s: float
    other_cpu: float | None
    instances: list[Instance] = field(default_factory=list)

    @property
    def keeps_up(self) -> bool:
        return all(i.keeps_up for i in self.instances)

    @property
    def offsets(self) -> list[float]:
        return [o for i in self.instances for o in i.offsets_s if o is not None]

    @property
    def spread_s(self) -> float | None:
        """Latest minus earliest first-heap offset over every instance and polarisation."""
        offsets = self.offsets
        return max(offsets) - min(offsets) if offsets else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "adc_rate": self.adc_rate,
            "start_timestamp": self.start_timestamp,
            "sync_time": self.sync_time,
            "startup_s": self.startup_s,
            "other_cpu": self.other_cpu,
            "keeps_up": self.keeps_up,
            "spread_s": self.spread_s,
            "instances": [
                {
                    "index": i.index,
                    "pid": i.pid,
                    "want_Bps": i.want_Bps,
                    "got_Bps": i.got_Bps,
                    "ratio": i.ratio,
                    "time_lag_s": i.time_lag_s,
                    "next_timestamp_lag_s": i.next_timestamp_lag_s,
                    "cpus": i.cpus,
                    "offsets_s": i.offsets_s,
                    "starts_on_time": i.starts_on_time,
                    "keeps_up": i.keeps_up,
                    "first": [None if f is None else vars(f) for f in i.first],
                }
                for i in self.instances
            ],
        }


async def _readings(antenna: Antenna) -> dict[str, tuple[float, str, str]]:
    values = await asyncio.gather(*(katcp.sensor_reading(antenna.client, s) for s in SENSORS))
    return dict(zip(SENSORS, values, strict=True))


async def _sleep_until(when: float) -> None:
    delay = when - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def run_array(
    n: int,
    adc_rate: float,
    seconds: float,
    warmup: float = 1.0,
    signals: str | None = None,
    margin: float = 1.0,
    options: dict[str, Any] | None = None,
) -> ArrayRun:
    """One run of `n` instances (see the module); `signals` is a full two-output spec."""
    sinks = [[TimestampSink() for _ in range(POLS)] for _ in range(n)]
    try:

        def destinations(k: int) -> Sequence[str]:
            return [f"{LOCALHOST}:{sink.port}" for sink in sinks[k]]

        started = time.monotonic()
        array = await Array.start(
            n,
            adc_sample_rate=adc_rate,
            destinations=destinations,
            signals=signals,
            **(options or {}),
        )
        startup = time.monotonic() - started
        try:
            antennas = array.antennas
            pids = [a.process.pid for a in antennas]
            monitor = CpuMonitor(pids)
            first = await array.capture_start(margin=margin)
            await _sleep_until(array.sync_time + first / adc_rate + warmup)
            before = await asyncio.gather(*(_readings(a) for a in antennas))
            cpu0, c0, w0 = [cpu_seconds(p) for p in pids], monitor.snapshot(), time.monotonic()
            await asyncio.sleep(seconds)
            after = await asyncio.gather(*(_readings(a) for a in antennas))
            cpu1, c1, w1 = [cpu_seconds(p) for p in pids], monitor.snapshot(), time.monotonic()
            await array.capture_stop()
        finally:
            await array.close()
        run = ArrayRun(n, adc_rate, first, array.sync_time, startup, monitor.other_cpus(c0, c1))
        want = adc_rate * SAMPLE_BITS / 8 * POLS
        for k, (r0, r1) in enumerate(zip(before, after, strict=True)):
            (ts0, _, b0), (ts1, _, b1) = r0["transmitted-bytes"], r1["transmitted-bytes"]
            nt_ts, _, nt = r1["next-timestamp"]
            heaps = [sink.first_data_heap() for sink in sinks[k]]
            offsets = [
                None if h is None else h.arrival - (array.sync_time + h.timestamp / adc_rate)
                for h in heaps
            ]
            c_0, c_1 = cpu0[k], cpu1[k]
            run.instances.append(
                Instance(
                    index=k,
                    pid=pids[k],
                    want_Bps=want,
                    got_Bps=(int(b1) - int(b0)) / (ts1 - ts0) if ts1 > ts0 else 0.0,
                    time_lag_s=float(r1["time-lag"][2]),
                    next_timestamp_lag_s=nt_ts - (array.sync_time + int(nt) / adc_rate),
                    cpus=None if c_0 is None or c_1 is None else (c_1 - c_0) / (w1 - w0),
                    first=heaps,
                    offsets_s=offsets,
                    starts_on_time=all(h is not None and h.timestamp == first for h in heaps),
                )
            )
        return run
    finally:
        for pair in sinks:
            for sink in pair:
                sink.close()
