"""Transmit statistics: counters and a windowed throughput meter."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass


class RateMeter:
    """Throughput over the last `window` seconds, from (time, running total) samples.

    The engine records a sample once per completed batch, so the cost is one
    deque append per batch, never per heap.
    """

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def record(self, total: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._samples.append((now, total))
        self._trim(now)

    def _trim(self, now: float) -> None:
        # Keep one sample older than the window as the baseline.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    def rate(self, now: float | None = None) -> float:
        """Bytes (or whatever is counted) per second over the window; 0 when idle."""
        now = time.monotonic() if now is None else now
        self._trim(now)
        if len(self._samples) < 2 or self._samples[-1][0] <= now - self.window:
            return 0.0
        t0, v0 = self._samples[0]
        v1 = self._samples[-1][1]
        span = now - t0
        return (v1 - v0) / span if span > 0 else 0.0

    def reset(self) -> None:
        self._samples.clear()


@dataclass(frozen=True)
class Statistics:
    """A snapshot of what the engine has sent since it was created.

    Heaps and bytes count only batches whose send completed successfully, so
    nothing unsent is ever counted. `bytes` is payload (sample) bytes.
    `send_errors` counts failed batch sends (each may have lost up to a batch).
    """

    heaps: int
    bytes: int
    send_errors: int
    throughput: float
    capturing: bool
    heap_size: int
    packet_size: int
    next_timestamp: int
    capture_heaps: int
    #: Real time: seconds the stream is behind the ADC clock (negative: ahead,
    #: by the batches being prepared); None when free-running or idle.
    time_lag: float | None = None
