"""What a heap should contain: the counter pattern, or a signal's window.

Every check here is stateless: a heap's expected samples follow from its
timestamp, its length and its polarisation alone, so each heap is checked on
its own, whatever came before it (lost, repeated or reordered heaps, capture
starts and heap-size changes cannot make a good heap look bad).

* :class:`CounterPattern`, dsim's default ``counter()``: every sample of the heap
  whose timestamp is ``t`` and which holds ``H`` samples equals
  ``wrap_signed(t // H, bits)``.
* :class:`WindowPattern`, any other signal: the sample at timestamp ``t`` of
  polarisation ``p`` is ``window[p][t mod period]``; heaps are compared byte for
  byte with the packed window.
* :class:`UncheckedPattern`: anything goes (measure a stream without knowing it).

Each also says how many of a heap's samples are at full scale, which is what
a MeerKAT heap's ``digitiser_status`` must report.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import numpy as np

from ..packing import group_bytes, group_samples, pack, unpack
from ..spead import full_scale
from .report import PayloadError

#: Expected payloads of the counter pattern kept at once (one per value and heap size).
_CACHE_LIMIT = 4096
#: Heap saturation counts of a window kept at once (one per output and heap slot).
_SATURATED_CACHE_LIMIT = 1 << 18


def saturated_count(payload: bytes, bits: int) -> int:
    """Samples at full scale (``|s| >= 2**(bits-1) - 1``) in packed `payload`."""
    samples = unpack(np.frombuffer(payload, np.uint8), bits)
    return int(np.count_nonzero(np.abs(samples) >= full_scale(bits)))


def first_difference(
    payload: bytes, expected: np.ndarray, bits: int, timestamp: int, stream: int | None
) -> PayloadError:
    """Where `payload` first differs from the `expected` samples (int array)."""
    got = unpack(np.frombuffer(payload, np.uint8), bits)
    n = min(len(got), len(expected))
    wrong = np.flatnonzero(got[:n] != expected[:n])
    if len(wrong):
        i = int(wrong[0])
        return PayloadError(timestamp, i, int(got[i]), int(expected[i]), stream)
    # Equal as far as both go: the length (or a partial run at the end) is wrong.
    return PayloadError(
        timestamp,
        n,
        int(got[n]) if n < len(got) else None,
        int(expected[n]) if n < len(expected) else None,
        stream,
    )


class Pattern(ABC):
    """The expected content of every heap."""

    #: Shown in the report: what payloads are checked against.
    description: str

    @abstractmethod
    def check(
        self, stream: int | None, timestamp: int, payload: bytes, bits: int
    ) -> PayloadError | None:
        """None if `payload` (packed `bits`-bit samples) is right for this heap, else where not."""

    @abstractmethod
    def saturated(self, stream: int | None, timestamp: int, payload: bytes, bits: int) -> int:
        """Samples of this heap at full scale (called for heaps that passed :meth:`check`)."""

    def explain(self, bits: int) -> str | None:
        """Why every heap of `bits`-bit samples would fail, if the pattern cannot fit them."""
        return None


class CounterPattern(Pattern):
    """``counter()``: every sample of the heap at ``t`` of ``H`` samples is ``t // H``, wrapped."""

    description = "counter"

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int, int], bytes] = {}

    @staticmethod
    def value(timestamp: int, heap_samples: int, bits: int) -> int:
        """The value of every sample of the heap at `timestamp` holding `heap_samples`."""
        # wrap_signed's rule in plain integers: numpy scalars cost microseconds per heap.
        half = 1 << (bits - 1)
        return (timestamp // heap_samples + half) % (half << 1) - half

    def _expected(self, value: int, nbytes: int, bits: int) -> bytes:
        key = (value, nbytes, bits)
        expected = self._cache.get(key)
        if expected is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            run = pack(np.full(group_samples(bits), value), bits).tobytes()
            expected = self._cache[key] = run * (nbytes // len(run))
        return expected

    def check(
        self, stream: int | None, timestamp: int, payload: bytes, bits: int
    ) -> PayloadError | None:
        nbytes = len(payload)
        n = nbytes * 8 // bits
        if n == 0 or nbytes % group_bytes(bits):
            return PayloadError(timestamp, 0, None, None, stream)
        value = self.value(timestamp, n, bits)
        if payload == self._expected(value, nbytes, bits):
            return None
        return first_difference(payload, np.full(n, value), bits, timestamp, stream)

    def saturated(self, stream: int | None, timestamp: int, payload: bytes, bits: int) -> int:
        n = len(payload) * 8 // bits
        return n if abs(self.value(timestamp, n, bits)) >= full_scale(bits) else 0


class Window(Protocol):
    """What :func:`dsim.signals.render` returns, as far as the verifier uses it."""

    @property
    def packed(self) -> np.ndarray:
        """uint8, shape ``(outputs, >= period * bits / 8)``: each output's samples, packed."""

    @property
    def saturated(self) -> np.ndarray:
        """Per output, the count of full-scale samples in each run of ``group_samples`` samples."""

    def samples(self, output: int) -> np.ndarray:
        """Output `output`'s samples (one period)."""


class WindowPattern(Pattern):
    """A periodic window: polarisation ``p``'s sample at ``t`` is ``window[p][t mod period]``.

    The polarisation of a MeerKAT heap is its digitiser id modulo the window's
    outputs (the low bit, for two); a tutorial stream is output 0.
    """

    def __init__(self, window: Window, period: int, bits: int, description: str) -> None:
        self.window = window
        self.period = period
        self.bits = bits
        self.description = description
        self.outputs = int(window.packed.shape[0])
        self._period_bytes = period * bits // 8
        self._byte_aligned = (period * bits) % 8 == 0
        self._samples: dict[int, np.ndarray] = {}
        self._saturated_cache: dict[tuple[int, int, int], int] = {}
        saturated = np.asarray(window.saturated)
        runs = period // group_samples(bits)
        self._saturated = (
            saturated[:, :runs]
            if saturated.ndim == 2
            and saturated.shape[0] == self.outputs
            and saturated.shape[1] >= runs
            and period % group_samples(bits) == 0
            else None
        )

    def explain(self, bits: int) -> str | None:
        if bits == self.bits:
            return None
        return (
            f"the signal window is {self.bits}-bit but the stream's samples are {bits}-bit "
            f"(give --sample-bits {bits})"
        )

    def output(self, stream: int | None) -> int:
        """The window output that `stream` (a digitiser id, or None) sends."""
        return 0 if stream is None else stream % self.outputs

    def _output_samples(self, output: int) -> np.ndarray:
        samples = self._samples.get(output)
        if samples is None:
            # As rendered (int16): a long window widened to int64 would take gigabytes.
            samples = self._samples[output] = np.asarray(self.window.samples(output))[: self.period]
        return samples

    def expected_samples(self, stream: int | None, timestamp: int, n: int) -> np.ndarray:
        """The `n` samples expected from `timestamp` on."""
        indices = (timestamp + np.arange(n, dtype=np.int64)) % self.period
        return self._output_samples(self.output(stream))[indices]

    def _expected_bytes(self, output: int, start: int, nbytes: int) -> bytes | None:
        """Packed bytes from sample `start` of the period, if they are whole bytes there."""
        if not self._byte_aligned or (start * self.bits) % 8 or nbytes > self._period_bytes:
            return None
        row = self.window.packed[output]
        first = start * self.bits // 8
        end = first + nbytes
        if end <= self._period_bytes:
            return bytes(row[first:end])
        return bytes(row[first : self._period_bytes]) + bytes(row[: end - self._period_bytes])

    def check(
        self, stream: int | None, timestamp: int, payload: bytes, bits: int
    ) -> PayloadError | None:
        n = len(payload) * 8 // bits
        if bits != self.bits or n == 0 or len(payload) % group_bytes(bits):
            return PayloadError(timestamp, 0, None, None, stream)
        expected = self._expected_bytes(self.output(stream), timestamp % self.period, len(payload))
        if expected is not None and payload == expected:
            return None
        samples = self.expected_samples(stream, timestamp, n)
        if expected is None and np.array_equal(
            unpack(np.frombuffer(payload, np.uint8), bits), samples
        ):
            return None
        return first_difference(payload, samples, bits, timestamp, stream)

    def saturated(self, stream: int | None, timestamp: int, payload: bytes, bits: int) -> int:
        n = len(payload) * 8 // bits
        output, start = self.output(stream), timestamp % self.period
        key = (output, start, n)
        count = self._saturated_cache.get(key)
        if count is None:
            if len(self._saturated_cache) >= _SATURATED_CACHE_LIMIT:
                self._saturated_cache.clear()
            count = self._saturated_cache[key] = self._count_saturated(output, start, n, bits)
        return count

    def _count_saturated(self, output: int, start: int, n: int, bits: int) -> int:
        """Full-scale samples in `n` samples of `output` from `start` (each heap slot once)."""
        runs = group_samples(bits)
        if self._saturated is not None and start % runs == 0 and n % runs == 0:
            counts = self._saturated[output]
            first, count = start // runs, n // runs
            if first + count <= len(counts):
                return int(counts[first : first + count].sum())
            indices = (first + np.arange(count)) % len(counts)
            return int(counts[indices].sum())
        indices = (start + np.arange(n, dtype=np.int64)) % self.period
        samples = self._output_samples(output)[indices]
        return int(np.count_nonzero(np.abs(samples) >= full_scale(bits)))


class UncheckedPattern(Pattern):
    """Any payload is accepted; saturation is counted from the samples themselves."""

    description = "unchecked"

    def check(
        self, stream: int | None, timestamp: int, payload: bytes, bits: int
    ) -> PayloadError | None:
        return None

    def saturated(self, stream: int | None, timestamp: int, payload: bytes, bits: int) -> int:
        return saturated_count(payload, bits)
