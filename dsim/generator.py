"""The running heap and sample counters behind every stream dsim sends.

Two counters start at zero when the process starts: the heap counter ``n``
and the sample counter ``t``. Each step (one heap per polarisation) carries
timestamp ``t``, the index of its first sample, and samples that all equal
``n`` wrapped to the sample width (``int8(n)`` in the tutorial format); then
``n += 1`` and ``t += samples per heap``. The counters never go back, across
captures and heap-size changes alike, so a receiver never sees a timestamp
twice and can tell at once if a heap is missing, repeated or out of order.
The timestamp may jump *forward* (a real-time capture starts at the next
aligned sample after now); the heap counter never skips.
"""

from __future__ import annotations

import numpy as np


def sample_value(n: int, bits: int = 8) -> int:
    """The value of every sample of heap `n`: `n` wrapped to signed `bits` bits."""
    half = 1 << (bits - 1)
    return (n + half) % (1 << bits) - half


class Generator:
    """The heap and sample counters; hands out consecutive runs of them."""

    def __init__(self) -> None:
        self.next_heap = 0
        self.next_timestamp = 0

    def advance(self, count: int, heap_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """Take the next `count` steps: their heap counters (int64) and timestamps (uint64)."""
        n, t = self.next_heap, self.next_timestamp
        counters = np.arange(n, n + count, dtype=np.int64)
        timestamps = np.arange(t, t + count * heap_samples, heap_samples, dtype=np.uint64)
        self.next_heap = n + count
        self.next_timestamp = t + count * heap_samples
        return counters, timestamps

    def skip_to(self, timestamp: int) -> None:
        """Move the sample counter forward to `timestamp` (never back)."""
        self.next_timestamp = max(self.next_timestamp, timestamp)
