"""The running ADC-sample and timestamp generator.

Two counters start at zero when the process starts: the heap counter ``n`` and
the sample counter ``t``. Each heap carries timestamp ``t`` (the index of its
first sample) and a payload in which every sample is ``int8(n)``; then
``n += 1`` and ``t += samples in that heap``. The counters never go back, across
captures and heap-size changes alike, so a receiver never sees a timestamp
twice and can tell at once if a heap is missing, repeated or out of order.
"""

from __future__ import annotations

import numpy as np


def sample_value(n: int) -> int:
    """The value of every sample in heap `n`: ``int8(n)``, i.e. `n` wrapped to [-128, 127]."""
    return (n + 128) % 256 - 128


class Generator:
    """Sample and timestamp counters, and the numpy code that fills a batch from them."""

    def __init__(self) -> None:
        self.next_heap = 0
        self.next_timestamp = 0

    def fill(self, samples: np.ndarray, timestamps: np.ndarray, count: int) -> None:
        """Fill the first `count` heaps of a batch and advance the counters.

        `samples` has shape ``(heaps, samples_per_heap)`` and `timestamps`
        shape ``(heaps,)``. One numpy operation per array, whatever `count`.
        """
        heap_samples = samples.shape[1]
        n, t = self.next_heap, self.next_timestamp
        # astype wraps to int8 (int8(n) itself would overflow in numpy 2).
        samples[:count] = np.arange(n, n + count, dtype=np.int64).astype(np.int8)[:, np.newaxis]
        timestamps[:count] = np.arange(t, t + count * heap_samples, heap_samples, dtype=np.uint64)
        self.next_heap = n + count
        self.next_timestamp = t + count * heap_samples
