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
        # Scratch ramp 0, 1, 2, ..., grown on demand; avoids an arange per batch.
        self._ramp = np.arange(0, dtype=np.int64)

    def _ramp_of(self, count: int) -> np.ndarray:
        if len(self._ramp) < count:
            self._ramp = np.arange(count, dtype=np.int64)
        return self._ramp[:count]

    def fill(self, samples: np.ndarray, timestamps: np.ndarray, count: int) -> None:
        """Fill the first `count` heaps of a batch and advance the counters.

        `samples` has shape ``(heaps, samples_per_heap)`` and `timestamps`
        shape ``(heaps,)``. One numpy operation per array, whatever `count`.
        """
        heap_samples = samples.shape[1]
        ramp = self._ramp_of(count)
        # Wrap in a wide type before casting: int8 overflow is an error in numpy 2.
        values = ((ramp + self.next_heap) & 0xFF).astype(np.uint8).view(np.int8)
        samples[:count] = values[:, np.newaxis]
        np.multiply(ramp, heap_samples, out=timestamps[:count], casting="unsafe")
        timestamps[:count] += np.uint64(self.next_timestamp % (1 << 64))
        self.next_heap += count
        self.next_timestamp += count * heap_samples
