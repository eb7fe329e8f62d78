"""What the samples are: the signal in effect, cut into heap-sized slots.

Two kinds of signal, both replayed from memory that is computed once:

* ``counter()``, the verifiable test pattern (the default): every sample of
  the heap whose timestamp is ``t`` (of ``H`` samples) equals ``t // H``
  wrapped to the sample width. It repeats every ``2**bits`` heaps, so its
  memory is ``2**bits`` heaps of one value each, made anew for each heap size.
* a window rendered from the signal language (:mod:`dsim.signals`): the
  sample at timestamp ``t`` is ``window[t mod period]``. Heaps start at
  multiples of ``H``, and ``H`` divides the period, so heap ``j`` of the
  window is simply bytes ``j*H .. (j+1)*H`` of it: a view, never a copy.

Either way the result for one heap size is a :class:`Slots`: ``count``
payload rows per polarisation and the ``digitiser_status`` word of each,
which the heap ring (:mod:`dsim.ring`) points its heaps at.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import packing
from .clock import check_finite
from .errors import ConfigError
from .layout import CELL_DTYPE, WireFormat
from .memory import available_memory
from .signals import DEFAULT_NOMINAL_SAMPLE_RATE, Program, Resolved, Window, render
from .signals.window import MAX_PERIOD
from .spead import full_scale, status_word, wrap_signed

#: Default signal window and the largest one allowed, in samples. 2**25 samples
#: resolve 51 Hz at MeerKAT L-band (1712e6 samples/s), far finer than any
#: correlator channel; they take 42 MiB per polarisation (10-bit) and render in
#: about 0.4 s on two cores (see README).
DEFAULT_PERIOD = 1 << 25
DEFAULT_MAX_PERIOD = 1 << 27


@dataclass(frozen=True)
class SignalSettings:
    """How signals are generated: window sizes, dither and the rate Hz are read against."""

    period: int = DEFAULT_PERIOD
    max_period: int = DEFAULT_MAX_PERIOD
    dither_seed: int = 0
    #: Free-running streams have no ADC clock; frequencies are read against this rate.
    nominal_sample_rate: float = DEFAULT_NOMINAL_SAMPLE_RATE

    def __post_init__(self) -> None:
        if isinstance(self.max_period, bool) or not 0 < self.max_period <= MAX_PERIOD:
            raise ConfigError(
                f"max period must be a sample count from 1 to 2**31, not {self.max_period}"
            )
        check_period(self.period, self.max_period)
        if isinstance(self.dither_seed, bool) or self.dither_seed < 0:
            raise ConfigError(f"dither seed must be a non-negative integer, not {self.dither_seed}")
        check_finite(self.nominal_sample_rate, "nominal sample rate", positive=True)


def check_period(period: int, max_period: int) -> None:
    """Raise :exc:`ConfigError` unless `period` is a usable window length."""
    if isinstance(period, bool) or not isinstance(period, int) or period <= 0:
        raise ConfigError(f"period must be a positive sample count, not {period!r}")
    if period > max_period:
        raise ConfigError(f"period {period} exceeds the maximum period of {max_period} samples")


def check_window_memory(period: int, sample_bits: int, n_pols: int) -> None:
    """Refuse a window (and the one it replaces) that would not fit in half the memory available."""
    # Measured at worst (a fractional delay of noise: a full-window FFT), about 11 bytes per
    # sample per polarisation while it renders; the window itself keeps 1.5 of them.
    needed = period * n_pols * 11
    if needed > available_memory() // 2:
        raise ConfigError(
            f"a window of {period} samples x {n_pols} polarisations needs {needed / 2**20:.0f} "
            "MiB, more than half the memory available: choose a shorter period"
        )


@dataclass(frozen=True)
class Slots:
    """Payload and status of ``count`` consecutive heaps of one size, per polarisation."""

    heap_size: int
    heap_samples: int
    #: uint8, shape ``(rows, count, heap_size)``: one row per polarisation, or one
    #: row that every polarisation shares (the counter pattern).
    payload: np.ndarray
    #: ``digitiser_status`` of each heap, shape ``(count, n_pols)``, big-endian cells.
    status: np.ndarray
    #: Live slots only: ``fill(first, count, timestamp)`` writes slots ``first ..
    #: first + count - 1`` for heaps from `timestamp` on, just before they are sent.
    fill: Callable[[int, int, int], None] | None = None

    @property
    def count(self) -> int:
        return int(self.payload.shape[1])

    def row(self, pol: int) -> int:
        """The payload row polarisation `pol` sends."""
        return pol if self.payload.shape[0] > 1 else 0


@dataclass(frozen=True)
class Signal:
    """The signal in effect: what was asked for, its canonical text and its samples."""

    #: As the user sent it (katcp sensor ``signals-orig``).
    original: str
    #: Every seed and rounded value spelled out (katcp sensor ``signals``).
    canonical: str
    #: The window's period in samples; None for ``counter()``, which has none of its own.
    period: int | None = None
    window: Window | None = field(default=None, repr=False)
    resolved: Resolved | None = field(default=None, repr=False)

    @classmethod
    def counter(cls, n_pols: int, original: str | None = None) -> Signal:
        text = "counter();" * n_pols
        return cls(original if original is not None else text, text)

    @classmethod
    def render(
        cls,
        program: Program,
        period: int,
        sample_rate: float,
        sample_bits: int,
        dither_seed: int,
        threads: int | None = None,
        cancel: threading.Event | None = None,
        into: Window | None = None,
    ) -> Signal:
        """Resolve and render `program` (slow: run it off the event loop; `cancel` stops it).

        `into` is a window of the same shape that nothing sends from any more: it is
        overwritten, which saves allocating (and faulting in) a new one.
        """
        if program.is_counter:
            return cls.counter(program.n_outputs, program.text)
        resolved = program.resolve(period, sample_rate)
        window = render(
            resolved, sample_bits, dither_seed, threads=threads, cancel=cancel, into=into
        )
        return cls(program.text, resolved.canonical, period, window, resolved)

    @property
    def is_counter(self) -> bool:
        return self.window is None

    def check_heap_samples(self, heap_samples: int) -> None:
        """Raise :exc:`ConfigError` unless heaps of `heap_samples` tile the window."""
        if self.period is not None and self.period % heap_samples:
            raise ConfigError(
                f"heap of {heap_samples} samples does not divide the signal period of "
                f"{self.period} samples (choose a heap size or period that fits)"
            )

    def start_timestamp(self, timestamp: int, heap_samples: int) -> int:
        """Where heaps of this signal may start: windows need heaps on multiples of their size."""
        if self.is_counter:
            return timestamp
        return -(-timestamp // heap_samples) * heap_samples

    def slots(self, fmt: WireFormat, heap_size: int, min_count: int = 1) -> Slots:
        """The signal cut into heaps of `heap_size` bytes for `fmt`.

        `min_count` is how many heaps the ring keeps in flight: live slots (see
        :func:`counter_slots`) are made at least that many.
        """
        heap_samples = fmt.heap_samples(heap_size)
        if self.window is None:
            return counter_slots(fmt, heap_size, min_count)
        self.check_heap_samples(heap_samples)
        window = self.window
        n_pols = window.packed.shape[0]
        count = window.period // heap_samples
        period_bytes = window.period * window.sample_bits // 8
        payload = window.packed[:, :period_bytes].reshape(n_pols, count, heap_size)
        status = np.empty((count, n_pols), CELL_DTYPE)
        self.write_status(fmt, heap_samples, status)
        return Slots(heap_size, heap_samples, payload, status)

    def write_status(self, fmt: WireFormat, heap_samples: int, status: np.ndarray) -> None:
        """Write the ``digitiser_status`` of each heap of the window into `status` cells."""
        window = self.window
        assert window is not None
        n_pols = window.packed.shape[0]
        count = window.period // heap_samples
        groups = window.saturated[:, : window.period // fmt.group_samples]
        per_heap = groups.reshape(n_pols, count, -1).sum(axis=2, dtype=np.uint64)
        status[:] = status_word(per_heap.T)


#: Largest counter pattern replayed from memory. Beyond it (tutorial heaps over
#: 128 KiB) the 256 heaps no longer stay in the CPU's caches, and sending them
#: from main memory measured 0.64x of sending from a few cache-hot heaps (1 MiB
#: heaps, GSO build); so larger heaps are written just before they are sent.
COUNTER_REPLAY_MAX = 32 << 20


def counter_memory(fmt: WireFormat, heap_size: int) -> int:
    """Bytes the replayed counter pattern takes for this heap size: ``2**bits`` heaps."""
    return heap_size << fmt.sample_bits


def counter_slots(fmt: WireFormat, heap_size: int, min_count: int = 1) -> Slots:
    """Heaps of the counter pattern: every sample of heap ``t // H`` is ``t // H`` wrapped.

    Up to :data:`COUNTER_REPLAY_MAX` bytes, all ``2**bits`` heaps are made once
    and replayed (one row serves every polarisation). Beyond it the slots are
    *live*: at least `min_count` heap buffers, each written with one numpy
    operation per batch just before it is sent, as spead2's tutorial does.
    """
    bits = fmt.sample_bits
    samples = fmt.heap_samples(heap_size)
    if counter_memory(fmt, heap_size) <= COUNTER_REPLAY_MAX:
        payload = np.empty((1, 1 << bits, heap_size), np.uint8)
        status = np.empty((1 << bits, fmt.n_pols), CELL_DTYPE)
        _write_counter(fmt, payload[0], status, np.arange(1 << bits), samples)
        return Slots(heap_size, samples, payload, status)
    count = min_count
    needed = count * heap_size
    if needed > available_memory() // 2:
        raise ConfigError(
            f"heap size {heap_size} needs {needed} bytes of heap buffers, more than half the "
            "memory available"
        )
    payload = np.zeros((1, count, heap_size), np.uint8)
    status = np.zeros((count, fmt.n_pols), CELL_DTYPE)

    def fill(first: int, n: int, timestamp: int) -> None:
        values = np.arange(timestamp // samples, timestamp // samples + n)
        _write_counter(
            fmt, payload[0, first : first + n], status[first : first + n], values, samples
        )

    return Slots(heap_size, samples, payload, status, fill)


def _write_counter(
    fmt: WireFormat, rows: np.ndarray, status: np.ndarray, heaps: np.ndarray, samples: int
) -> None:
    """Write counter heaps ``heaps`` (heap indices) into `rows` and their `status` cells."""
    bits = fmt.sample_bits
    values = wrap_signed(heaps, bits)
    heap_size = rows.shape[1]
    if bits == 8:
        rows[:] = values.astype(np.int8).view(np.uint8)[:, np.newaxis]
    else:
        group = packing.pack(np.repeat(values[:, np.newaxis], fmt.group_samples, axis=1), bits)
        width = group.shape[1]
        rows[:, :width] = group
        while width < heap_size:  # double the filled prefix: a few long copies
            step = min(width, heap_size - width)
            rows[:, width : width + step] = rows[:, :step]
            width += step
    saturated = np.abs(values) >= full_scale(bits)
    status[:] = status_word(np.where(saturated, samples, 0))[:, np.newaxis]
