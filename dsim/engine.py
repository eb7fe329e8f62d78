"""The engine: capture state, pacing, batches in flight, signal and heap-size changes.

Everything the engine sends comes from a *plan*: one heap size and one signal,
with every heap built once in a :class:`~dsim.ring.HeapRing`. Sending a batch
is then

1. wait until fewer than ``batches`` batches are in flight;
2. write the batch's timestamps into the ring (one numpy operation);
3. hand the ring's slice to spead2 with one ``async_send_heaps`` call,

so no payload is touched and no Python runs per heap. A new heap size or
signal gets a new plan, built off the event loop while the old one keeps
streaming, and swapped in at a batch boundary with no gap in the timestamps.

Pacing: unpaced, batches go as fast as spead2 takes them. With a rate, or on a
real-time ADC clock, the engine releases each batch shortly before it is due
and spead2 only smooths it out, so a few milliseconds of data at most are
ever queued: every stop, at any rate, ends within a fraction of a second.

The engine knows nothing of katcp: :mod:`dsim.server` drives it through
:meth:`Engine.start`, :meth:`Engine.stop`, :meth:`Engine.set_heap_size`,
:meth:`Engine.set_signals` and :meth:`Engine.statistics`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import spead2
import spead2.send

from .clock import Clock, check_finite
from .errors import ConfigError, DsimError
from .layout import PacketChoice, WireFormat, end_heaps, wire_bytes
from .pattern import Signal
from .ring import HeapRing, ring_length
from .spead import TIMESTAMP_MODULUS
from .stats import RateMeter, Statistics
from .transport import (
    SendStream,
    TransportConfig,
    TransportKind,
    make_thread_pool,
    open_stream,
    spead2_uses_gso,
)

if TYPE_CHECKING:
    from .signals import Program

logger = logging.getLogger(__name__)

#: Seconds between descriptor heaps while capturing (receivers that join late).
DEFAULT_DESCRIPTOR_INTERVAL = 5.0
#: Target payload per batch, and batches in flight (about 2 MiB). With two, a
#: delayed wake-up of the Python thread drained spead2's queue at GSO rates
#: (measured: 4 batches 1.04-1.13x of 2 on the GSO build, neutral on the wheel).
DEFAULT_BATCH_BYTES = 512 * 1024
DEFAULT_BATCHES = 4
#: Upper bound on timestamps per batch, so that tiny heaps do not make huge batches.
MAX_BATCH_STEPS = 8192
#: Paced streams: a batch covers at most this many seconds of samples ...
PACED_BATCH = 0.002
#: ... is released this long before its first sample is due ...
RELEASE_LEAD = 0.002
#: ... and spead2 sends it this much faster than nominal, so that it never falls
#: behind on its own, but never slower than one timestamp (all polarisations)
#: in this many seconds, so that what is queued always drains quickly.
PACED_HEADROOM = 0.01
MAX_STEP_SECONDS = 0.005
#: Paced streams: bytes spead2 may send back to back before it sleeps. Its default
#: (64 KiB) made the rate limiter, not the CPU, the limit at MeerKAT L-band rates
#: (measured with scripts/bench_realtime.py: 256 KiB kept to the clock at 1712 MHz).
PACED_BURST = 256 * 1024
#: Real time: falling this far behind the ADC clock is logged (at most every 10 s).
LAG_WARN = 0.1
LAG_LOG_PERIOD = 10.0
#: Default signal window and the largest one allowed, in samples.
DEFAULT_PERIOD = 1 << 25
DEFAULT_MAX_PERIOD = 1 << 27
#: Free-running streams read signal frequencies against this ADC rate (MeerKAT L-band).
DEFAULT_NOMINAL_SAMPLE_RATE = 1712e6
#: Unlimited or fast (bytes/s) sending without GSO is worth a warning.
FAST_RATE = 1e9


class CaptureError(DsimError):
    """A capture request that does not fit the current state."""


@dataclass(frozen=True)
class SignalSettings:
    """How signals are generated: window sizes, dither and the rate Hz are read against."""

    period: int = DEFAULT_PERIOD
    max_period: int = DEFAULT_MAX_PERIOD
    dither_seed: int = 0
    #: Free-running streams have no ADC clock; frequencies are read against this rate.
    nominal_sample_rate: float = DEFAULT_NOMINAL_SAMPLE_RATE
    #: Worker threads for rendering windows (None: one per core).
    threads: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_period, bool) or self.max_period <= 0:
            raise ConfigError(f"max period must be a positive sample count, not {self.max_period}")
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


#: Engines not yet closed; see :func:`_release_at_exit`.
_live_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _release_at_exit() -> None:
    """Free the spead2 streams of engines never closed, before spead2's own exit handler.

    spead2 stops its thread pools in an atexit handler; a send stream destroyed
    after that (in the interpreter's final garbage collection) can spin forever
    waiting for a thread that is gone (spead2 issue #251). Registered after
    spead2 was imported, this handler runs before spead2's.
    """
    for engine in list(_live_engines):
        engine._release()


@dataclass
class Plan:
    """Everything that depends on the heap size and the signal."""

    signal: Signal
    heap_size: int
    heap_samples: int
    packets: PacketChoice
    steps: int  #: timestamps per full batch
    ring: HeapRing
    descriptor_heap: spead2.send.Heap
    #: Wire bytes of one timestamp's heaps (all polarisations), headers included.
    step_wire_bytes: int
    #: Samples per second the stream is paced at; 0 = unpaced.
    paced_rate: float

    @property
    def spead2_rate(self) -> float:
        """The rate spead2 sends at (bytes/s, 0 = unlimited); see the module docstring."""
        if not self.paced_rate:
            return 0.0
        nominal = self.paced_rate / self.heap_samples * self.step_wire_bytes
        return max(nominal * (1 + PACED_HEADROOM), self.step_wire_bytes / MAX_STEP_SECONDS)


@dataclass
class _InFlight:
    """One batch handed to spead2."""

    future: asyncio.Future[int]
    heaps: int
    payload_bytes: int
    end_timestamp: int  #: timestamp just after the batch's last sample
    plan: Plan  # keeps the heaps and their memory alive until sent


@dataclass
class _Change:
    """A new plan waiting for its place in the stream."""

    plan: Plan
    timestamp: int | None  #: switch exactly here; None: at the next batch boundary
    future: asyncio.Future[int]
    what: str


@dataclass
class _Pacer:
    """When the heap with timestamp ``t`` is due: ``wall0 + (t - t0) / rate``."""

    wall0: float
    t0: int
    rate: float  # samples per second

    def due(self, timestamp: int) -> float:
        return self.wall0 + (timestamp - self.t0) / self.rate


class Engine:
    """Streams a signal's heaps through a spead2 stream, in captures.

    The transport, the wire format and the clock are fixed for the engine's
    life; the heap size and the signal can change at any time. Without a
    `clock` the stream runs free from timestamp 0, paced at the transport's
    `rate` (bytes/s on the wire) or unpaced; with one it follows the simulated
    ADC clock. Descriptors go out as heaps of their own (odd heap ids; data
    heaps have even ones) when a capture starts, after a heap-size change and
    every `descriptor_interval` seconds (0: never periodically). Captures end
    with end-of-stream heaps if `end_of_stream` (default: the format's own
    default; never for meerkat, whose receivers stop for good on one).
    """

    def __init__(
        self,
        transport: TransportConfig,
        heap_size: int | None = None,
        *,
        wire_format: WireFormat | None = None,
        clock: Clock | None = None,
        signals: SignalSettings | None = None,
        initial_signal: Program | None = None,
        descriptor_interval: float = DEFAULT_DESCRIPTOR_INTERVAL,
        end_of_stream: bool | None = None,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        batches: int = DEFAULT_BATCHES,
        throughput_window: float = 1.0,
    ) -> None:
        from .layout import TutorialFormat

        if batches < 2:
            raise ConfigError(f"at least two batches must be in flight, not {batches}")
        if batch_bytes <= 0:
            raise ConfigError(f"batch bytes must be positive, not {batch_bytes}")
        check_finite(descriptor_interval, "descriptor interval", non_negative=True)
        transport.validate()
        self.transport = transport
        self.format = wire_format or TutorialFormat(transport.n_substreams)
        if self.format.n_substreams != transport.n_substreams:
            raise ConfigError("the wire format and the transport disagree on the destinations")
        self.clock = clock
        if clock is not None and transport.rate:
            raise ConfigError("a real-time stream is paced by its ADC clock: give no rate")
        self.signal_settings = signals or SignalSettings()
        self.end_of_stream = (
            self.format.default_end_of_stream if end_of_stream is None else end_of_stream
        )
        self._descriptor_interval = descriptor_interval
        self._batch_bytes = batch_bytes
        self._n_batches = batches
        if heap_size is None:
            heap_size = self.format.default_heap_size
        self._check_heap_size(heap_size)
        #: Set when the engine closes: a render or plan being built stops at once.
        self._cancel = threading.Event()
        if initial_signal is None:
            signal = Signal.counter(self.format.n_pols)
        else:
            signal = self._render(initial_signal, self.signal_settings.period)
        self._signal_period = self.signal_settings.period
        self._thread_pool = make_thread_pool(transport)
        self._plan = self._make_plan(signal, heap_size)
        self._stream: SendStream | None = None
        self._current_key: tuple[int, float, int] | None = None
        self._data_submitted = 0  # data heaps handed to spead2: their (even) heap ids
        self._odd_submitted = 0  # descriptor and end-of-stream heaps: odd heap ids
        self._open_stream(self._plan)
        self._next_timestamp = 0
        self._steady_state = 0
        # Capture state
        self._task: asyncio.Task[int] | None = None
        self._stop_requested = False
        self._wake: asyncio.Event | None = None
        self._inflight: deque[_InFlight] = deque()
        self._descriptor_future: asyncio.Future[int] | None = None
        self._pending: _Change | None = None
        self._change_lock = asyncio.Lock()
        self._listeners: list[Callable[[], None]] = []
        # Statistics
        self._heaps = 0
        self._bytes = 0
        self._send_errors = 0
        self._capture_heaps = 0
        self._meter = RateMeter(throughput_window)
        self._last_error_log = -1e9
        self._errors_since_log = 0
        self._last_lag_log = -1e9
        self.failure: BaseException | None = None
        #: Real time: wall time when the last batch was sent, less the time of its
        #: last sample (what katgpucbf's simulator exports as dsim_time_error_s).
        self.time_error = 0.0
        #: Seconds the last signal change took, from request to ready.
        self.last_signals_seconds = 0.0
        self._closed = False
        _live_engines.add(self)

    # ------------------------------------------------------------------ set-up

    @property
    def sample_rate(self) -> float:
        """The ADC rate signal frequencies are read against (real, or nominal when free)."""
        if self.clock is not None:
            return self.clock.adc_sample_rate
        return self.signal_settings.nominal_sample_rate

    def _check_heap_size(self, heap_size: int) -> None:
        self.format.check_heap_size(heap_size, self.transport.max_packet_size)
        if self.clock is not None:
            samples = self.format.heap_samples(heap_size)
            if self.clock.align_samples % samples:
                raise ConfigError(
                    f"heap size {heap_size} ({samples} samples) does not divide the "
                    f"alignment of {self.clock.align_samples} samples"
                )

    def _render(self, program: Program, period: int) -> Signal:
        """Check `program` against this stream and render it (slow for windows)."""
        settings = self.signal_settings
        program.check_outputs(self.format.n_pols)
        if not program.is_counter:
            check_period(period, settings.max_period)
            if period % self.format.group_samples:
                raise ConfigError(
                    f"period {period} is not a multiple of {self.format.group_samples} samples"
                )
        return Signal.render(
            program,
            period,
            self.sample_rate,
            self.format.sample_bits,
            settings.dither_seed,
            settings.threads,
            self._cancel,
        )

    def _make_plan(self, signal: Signal, heap_size: int) -> Plan:
        """Build everything for `heap_size` and `signal` (slow: thousands of heaps)."""
        fmt = self.format
        heap_samples = fmt.heap_samples(heap_size)
        signal.check_heap_samples(heap_samples)
        packets = fmt.packet_size(
            heap_size,
            self.transport.max_packet_size,
            self.transport.packet_size,
            # Equal packets pay only where UDP GSO can send runs of them in one call.
            equal=self.transport.kind == TransportKind.UDP and spead2_uses_gso(),
        )
        step_wire = (
            wire_bytes(fmt.sample_heap(heap_size, packets.repeat_pointers), packets.size)
            * fmt.n_pols
        )
        if self.clock is not None:
            paced_rate = self.clock.adc_sample_rate
        elif self.transport.rate:
            paced_rate = self.transport.rate / step_wire * heap_samples
        else:
            paced_rate = 0.0
        steps = max(1, min(MAX_BATCH_STEPS, round(self._batch_bytes / (heap_size * fmt.n_pols))))
        if paced_rate:
            steps = min(steps, max(1, int(paced_rate * PACED_BATCH / heap_samples)))
        slots = signal.slots(fmt, heap_size, ring_length(fmt, 1, self._n_batches * steps))
        ring = HeapRing(fmt, slots, packets, self._n_batches * steps, self._cancel)
        return Plan(
            signal=signal,
            heap_size=heap_size,
            heap_samples=heap_samples,
            packets=packets,
            steps=steps,
            ring=ring,
            descriptor_heap=fmt.descriptor_heap(heap_size),
            step_wire_bytes=step_wire,
            paced_rate=paced_rate,
        )

    def _stream_key(self, plan: Plan) -> tuple[int, float, int]:
        """What a stream for `plan` is configured with: packet size, rate and queue length."""
        max_heaps = self._n_batches * plan.steps * self.format.n_pols + 2 * self.format.n_substreams
        return plan.packets.size, plan.spead2_rate, max_heaps

    def _needs_new_stream(self, plan: Plan) -> bool:
        return (
            self._stream is None
            or self._stream_key(plan) != self._current_key
            or self.transport.kind == TransportKind.IBVERBS  # ibverbs registers the memory
        )

    def _open_stream(self, plan: Plan) -> None:
        """Make the stream `plan` needs, unless the current one will do (nothing in flight)."""
        if not self._needs_new_stream(plan):
            return
        key = self._stream_key(plan)
        packet_size, rate, max_heaps = key
        config = spead2.send.StreamConfig(
            max_packet_size=packet_size, rate=rate, max_heaps=max_heaps
        )
        if rate:
            config.burst_size = PACED_BURST
        memory = [plan.ring.slots.payload]
        self._stream = open_stream(self.transport, self._thread_pool, config, memory)
        self._current_key = key
        # Heap ids run on across streams, as if there were only ever one: data even.
        self._stream.set_cnt_sequence(2 * self._data_submitted + 2, 2)

    # -------------------------------------------------------------- properties

    @property
    def heap_size(self) -> int:
        return self._plan.heap_size

    @property
    def heap_samples(self) -> int:
        return self._plan.heap_samples

    @property
    def packet_size(self) -> int:
        """Maximum packet size in use for the current heap size."""
        return self._plan.packets.size

    @property
    def rate(self) -> float:
        """Average rate on the wire (bytes/s) the stream is paced at; 0 = unlimited."""
        plan = self._plan
        return plan.paced_rate / plan.heap_samples * plan.step_wire_bytes

    @property
    def batch_heaps(self) -> int:
        """Heaps in a full batch (all polarisations)."""
        return self._plan.steps * self.format.n_pols

    @property
    def signal(self) -> Signal:
        """The signal in effect now (a scheduled switch not yet reached is not)."""
        return self._plan.signal

    @property
    def period(self) -> int:
        """The window period in samples that ``?signals`` uses unless given one."""
        return self._signal_period

    @property
    def capturing(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def next_timestamp(self) -> int:
        """Timestamp of the next heap to be sent."""
        return self._next_timestamp

    @property
    def steady_state_timestamp(self) -> int:
        """Every heap at or after this timestamp reflects every change requested so far."""
        return self._steady_state

    def statistics(self) -> Statistics:
        return Statistics(
            heaps=self._heaps,
            bytes=self._bytes,
            send_errors=self._send_errors,
            throughput=self._meter.rate() if self.capturing else 0.0,
            capturing=self.capturing,
            heap_size=self.heap_size,
            packet_size=self.packet_size,
            next_timestamp=self.next_timestamp,
            capture_heaps=self._capture_heaps,
            time_lag=self.time_lag(),
        )

    def time_lag(self) -> float | None:
        """Seconds by which the heaps being sent trail the simulated ADC clock.

        The newest heap handed to spead2 is compared with the wall clock; a
        stream that keeps up stays slightly ahead (negative), one that cannot
        keep up falls further behind. None when free-running or not capturing.
        """
        if self.clock is None or not self.capturing:
            return None
        return time.time() - self.clock.time_of(self._next_timestamp)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` when a capture starts or ends, or the heap size or signal changes."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            try:
                callback()
            except Exception:
                logger.exception("engine listener failed")

    # ---------------------------------------------------------------- control

    def _check_open(self) -> None:
        if self._closed:
            raise CaptureError("engine is closed")

    def start(self, heaps: int | None = None, timestamp: int | None = None) -> int:
        """Start a capture; with `heaps`, send exactly that many per polarisation and stop.

        Returns the timestamp of the capture's first heap: `timestamp` if given
        (a heap boundary not yet passed; in real time, not in the past), else
        where the stream continues (real time: the next aligned sample after
        now, and sending starts at its time).
        """
        self._check_open()
        if self.capturing:
            raise CaptureError("capture already in progress")
        if heaps is not None and (
            isinstance(heaps, bool) or not isinstance(heaps, int) or heaps <= 0
        ):
            raise CaptureError(f"heap count must be a positive integer, not {heaps!r}")
        first = self._first_timestamp(timestamp)
        self._pending_due(first)
        first = self._aligned(first)
        self._next_timestamp = first
        if self._pending is None:
            self._steady_state = max(self._steady_state, first)
        self.failure = None
        self._stop_requested = False
        self._wake = asyncio.Event()
        self._capture_heaps = 0
        self._meter.reset()
        self._meter.record(self._bytes)
        start_at = self.clock.time_of(first) - RELEASE_LEAD if self.clock is not None else None
        self._task = asyncio.get_running_loop().create_task(
            self._capture(heaps, start_at), name="dsim-capture"
        )
        self._task.add_done_callback(self._capture_done)
        logger.info(
            "capture started at timestamp %d (%s, heap size %d)",
            first,
            f"{heaps} heaps" if heaps is not None else "unbounded",
            self.heap_size,
        )
        self._warn_if_slow_build()
        self._notify()
        return first

    def _first_timestamp(self, timestamp: int | None) -> int:
        """Where a new capture starts (see :meth:`start`)."""
        now = time.time()
        if timestamp is None:
            if self.clock is not None:
                return self.clock.next_aligned(self._next_timestamp, now)
            return self._next_timestamp
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
            raise CaptureError(f"timestamp must be a non-negative integer, not {timestamp!r}")
        if timestamp < self._next_timestamp:
            raise CaptureError(
                f"timestamp {timestamp} has passed: the stream is at {self._next_timestamp}"
            )
        if self._aligned(timestamp) != timestamp:
            raise CaptureError(
                f"timestamp {timestamp} is not where a heap may start: "
                f"use a multiple of {self.heap_samples} samples"
            )
        if self.clock is not None and self.clock.time_of(timestamp) < now:
            raise CaptureError(
                f"timestamp {timestamp} is in the past (now is about "
                f"{int(self.clock.timestamp_at(now))})"
            )
        return timestamp

    def _aligned(self, timestamp: int, plan: Plan | None = None) -> int:
        """Where heaps of `plan` (default: the current one) may start, at or after `timestamp`."""
        plan = plan or self._plan
        t = self.format.start_timestamp(timestamp, plan.heap_samples)
        return plan.signal.start_timestamp(t, plan.heap_samples)

    async def stop(self) -> int:
        """Stop the capture; returns its heap count once everything it sent is on the wire.

        Batches not yet handed to spead2 are dropped and a real-time capture
        still waiting for its start is cancelled, so this returns within a
        fraction of a second at any rate. Without a capture, returns 0 at once.
        """
        task = self._task
        if task is None or task.done():
            return 0
        self._stop_requested = True
        if self._wake is not None:
            self._wake.set()
        return await asyncio.shield(task)

    async def wait_capture(self) -> int:
        """Wait for the current capture (if any) to end; returns its heap count."""
        task = self._task
        if task is None:
            return 0
        return await asyncio.shield(task)

    # ---------------------------------------------------------------- changes

    async def set_heap_size(self, heap_size: int) -> int:
        """Change the heap size; returns the timestamp of the first heap of the new size.

        While capturing, the change happens at the next batch boundary and the
        descriptors go out again first. Timestamps continue with no gap where
        the format and signal allow (tutorial with ``counter()``); otherwise at
        the next multiple of the new heap's samples.
        """
        self._check_open()
        self._check_heap_size(heap_size)
        self._plan.signal.check_heap_samples(self.format.heap_samples(heap_size))
        async with self._change_lock:
            self._refuse_if_scheduled()
            signal = self._plan.signal
            plan = await asyncio.to_thread(self._make_plan, signal, heap_size)
            return await self._submit(plan, None, "heap size")

    async def set_signals(
        self, program: Program, period: int | None = None, timestamp: int | None = None
    ) -> int:
        """Change the signal; returns the first timestamp that carries it.

        The window is rendered in a worker thread while the current signal
        keeps streaming. With `timestamp` the switch happens exactly there (a
        heap boundary not yet passed); otherwise at the next batch boundary.
        """
        self._check_open()
        period = self._signal_period if period is None else period
        program.check_outputs(self.format.n_pols)
        if not program.is_counter:
            check_period(period, self.signal_settings.max_period)
            if period % self.heap_samples:
                raise ConfigError(
                    f"period {period} is not a multiple of the heap's {self.heap_samples} samples"
                )
        if timestamp is not None:
            self._check_switch_timestamp(timestamp)
        async with self._change_lock:
            self._refuse_if_scheduled()
            started = time.monotonic()
            signal = await asyncio.to_thread(self._render, program, period)
            plan = await asyncio.to_thread(self._make_plan, signal, self.heap_size)
            self.last_signals_seconds = time.monotonic() - started
            if timestamp is not None:
                self._check_switch_timestamp(timestamp)  # may have passed while rendering
            if not program.is_counter:
                self._signal_period = period
            return await self._submit(plan, timestamp, "signal")

    def _check_switch_timestamp(self, timestamp: int) -> None:
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
            raise ConfigError(f"timestamp must be a non-negative integer, not {timestamp!r}")
        if timestamp < self._next_timestamp:
            raise ConfigError(
                f"timestamp {timestamp} has passed: the stream is at {self._next_timestamp}"
            )
        if (timestamp - self._next_timestamp) % self.heap_samples:
            raise ConfigError(
                f"timestamp {timestamp} is not a heap boundary: heaps start at "
                f"{self._next_timestamp} + a multiple of {self.heap_samples}"
            )

    def _refuse_if_scheduled(self) -> None:
        if self._pending is not None:
            raise ConfigError(
                f"a {self._pending.what} change is already scheduled for timestamp "
                f"{self._pending.timestamp}"
            )

    async def _submit(self, plan: Plan, timestamp: int | None, what: str) -> int:
        """Put `plan` into effect: now if idle, else via the capture loop."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        change = _Change(plan, timestamp, future, what)
        if not self.capturing and (timestamp is None or timestamp <= self._next_timestamp):
            self._install(change)
        else:
            self._pending = change
            if timestamp is not None:
                # The reply does not wait for the stream to get there.
                self._steady_state = max(self._steady_state, timestamp)
                return timestamp
            if self._wake is not None:
                self._wake.set()
        return await future

    def _pending_due(self, timestamp: int) -> None:
        """Install a pending change due at or before `timestamp` (nothing is in flight)."""
        change = self._pending
        if change is not None and (change.timestamp is None or change.timestamp <= timestamp):
            self._install(change)

    def _install(self, change: _Change) -> None:
        """Make `change` the plan from the next heap on (nothing may be in flight)."""
        self._pending = None
        previous = self._plan
        try:
            self._plan = change.plan
            self._open_stream(change.plan)
        except Exception as exc:
            self._plan = previous
            if not change.future.done():
                change.future.set_exception(exc)
            return
        first = self._aligned(max(self._next_timestamp, change.timestamp or 0))
        self._next_timestamp = first
        self._steady_state = max(self._steady_state, first)
        if not change.future.done():
            change.future.set_result(first)
        logger.info(
            "%s change in effect from timestamp %d (heap size %d, packet size %d, signal %s)",
            change.what,
            first,
            self.heap_size,
            self.packet_size,
            change.plan.signal.canonical,
        )
        self._notify()

    async def close(self) -> None:
        """Stop any capture and any signal being rendered, then free the stream and its thread."""
        self._cancel.set()
        await self.stop()
        if self._pending is not None and not self._pending.future.done():
            self._pending.future.set_exception(CaptureError("engine closed"))
        self._release()

    def _release(self) -> None:
        # Dropping the last references destroys the spead2 stream and thread pool now,
        # while the interpreter is fully alive (see _release_at_exit).
        self._closed = True
        self._stream = None
        self._thread_pool = None  # type: ignore[assignment]
        _live_engines.discard(self)

    # ----------------------------------------------------------- capture loop

    async def _capture(self, limit: int | None, start_at: float | None) -> int:
        remaining = limit
        pacer = self._make_pacer(self._plan)
        next_descriptors = 0.0
        submitted = self._data_submitted
        try:
            if start_at is not None and not await self._sleep_until(start_at):
                return self._capture_heaps
            while not self._stop_requested and remaining != 0:
                change = self._pending
                if change is not None and (
                    change.timestamp is None or change.timestamp <= self._next_timestamp
                ):
                    await self._apply(change)
                    pacer = self._make_pacer(self._plan, pacer)
                    next_descriptors = 0.0
                    continue
                now = time.monotonic()
                if now >= next_descriptors:
                    await self._send_descriptors()
                    next_descriptors = (
                        now + self._descriptor_interval
                        if self._descriptor_interval
                        else float("inf")
                    )
                plan = self._plan
                ring = plan.ring
                t = self._next_timestamp
                position = ring.position(t)
                steps = min(plan.steps, ring.length - position)
                if remaining is not None:
                    steps = min(steps, remaining)
                if change is not None and change.timestamp is not None:
                    steps = min(steps, -(-(change.timestamp - t) // plan.heap_samples))
                if pacer is not None and not await self._sleep_until(pacer.due(t) - RELEASE_LEAD):
                    break
                yielded = False
                while len(self._inflight) >= self._n_batches:
                    await self._retire()
                    yielded = True
                ring.prepare(position, steps, t)
                stream = self._stream
                assert stream is not None, "the engine was released while capturing"
                heaps = steps * self.format.n_pols
                future = stream.async_send_heaps(
                    ring.batch(position, steps), spead2.send.GroupMode.SERIAL
                )
                self._next_timestamp = t + steps * plan.heap_samples
                self._inflight.append(
                    _InFlight(future, heaps, heaps * plan.heap_size, self._next_timestamp, plan)
                )
                self._data_submitted += heaps
                if remaining is not None:
                    remaining -= steps
                if self.clock is not None:
                    self._check_lag()
                if not yielded:
                    await asyncio.sleep(0)  # let katcp in, even when spead2 keeps up
        finally:
            await self._drain()
            if self.end_of_stream and self._data_submitted > submitted:
                await self._send_end()
            change = self._pending
            if change is not None and change.timestamp is None:
                self._install(change)
        return self._capture_heaps

    def _make_pacer(self, plan: Plan, previous: _Pacer | None = None) -> _Pacer | None:
        """The release schedule for `plan`: the ADC clock, or the rate from now on."""
        if self.clock is not None:
            return _Pacer(self.clock.sync_time, 0, self.clock.adc_sample_rate)
        if not plan.paced_rate:
            return None
        start = time.time()
        if previous is not None:
            start = max(start, previous.due(self._next_timestamp))
        return _Pacer(start, self._next_timestamp, plan.paced_rate)

    async def _sleep_until(self, when: float) -> bool:
        """Sleep until UNIX time `when`, or a stop or change; returns False if stopping."""
        wake = self._wake
        assert wake is not None
        delay = when - time.time()
        if delay > 0 and not wake.is_set():
            try:
                async with asyncio.timeout(delay):
                    await wake.wait()
            except TimeoutError:
                pass
        if not self._stop_requested:
            wake.clear()
        return not self._stop_requested

    async def _apply(self, change: _Change) -> None:
        """Switch to `change`'s plan at this batch boundary."""
        if self._needs_new_stream(change.plan):
            await self._drain()  # a new stream must not overtake what the old one holds
        self._install(change)

    async def _send_descriptors(self) -> None:
        """Send a descriptor heap to every destination, with the next odd heap ids."""
        if self._descriptor_future is not None:
            future, self._descriptor_future = self._descriptor_future, None
            await self._settle(future)
        stream = self._stream
        assert stream is not None
        refs = [
            spead2.send.HeapReference(
                self._plan.descriptor_heap, cnt=self._next_odd_cnt(), substream_index=substream
            )
            for substream in range(self.format.n_substreams)
        ]
        self._descriptor_future = stream.async_send_heaps(
            spead2.send.HeapReferenceList(refs), spead2.send.GroupMode.SERIAL
        )

    def _next_odd_cnt(self) -> int:
        self._odd_submitted += 1
        return 2 * self._odd_submitted - 1

    async def _settle(self, future: asyncio.Future[int]) -> bool:
        """Wait for a send; count and log a failure. Returns whether it succeeded."""
        try:
            await future
        except (RuntimeError, OSError) as exc:
            self._send_errors += 1
            self._log_send_error(exc)
            return False
        return True

    async def _retire(self) -> None:
        """Wait for the oldest batch in flight and account for it."""
        batch = self._inflight[0]
        ok = await self._settle(batch.future)
        self._inflight.popleft()
        if ok:
            self._heaps += batch.heaps
            self._capture_heaps += batch.heaps
            self._bytes += batch.payload_bytes
            self._meter.record(self._bytes)
            if self.clock is not None:
                self.time_error = time.time() - self.clock.time_of(batch.end_timestamp)

    async def _drain(self) -> None:
        while self._inflight:
            await self._retire()
        if self._descriptor_future is not None:
            future, self._descriptor_future = self._descriptor_future, None
            await self._settle(future)

    async def _send_end(self) -> None:
        if self._stream is None:
            return
        first = 2 * self._odd_submitted + 1
        self._odd_submitted += self.format.n_substreams
        heaps = end_heaps(self.format.n_substreams, first)
        await self._settle(self._stream.async_send_heaps(heaps, spead2.send.GroupMode.SERIAL))

    def _check_lag(self) -> None:
        """Log (at most every 10 s) when the stream falls behind its ADC clock."""
        lag = self.time_lag()
        now = time.monotonic()
        if lag is not None and lag > LAG_WARN and now - self._last_lag_log >= LAG_LOG_PERIOD:
            self._last_lag_log = now
            logger.warning(
                "falling behind the ADC clock: the stream is %.3f s late (see the time-lag "
                "sensor); the machine cannot send this rate",
                lag,
            )

    def _warn_if_slow_build(self) -> None:
        """At an unlimited or high rate, say once if spead2 sends without GSO."""
        if self.transport.kind != TransportKind.UDP or spead2_uses_gso():
            return
        rate = self.rate
        if (rate == 0 or rate >= FAST_RATE) and not getattr(self, "_gso_warned", False):
            self._gso_warned = True
            logger.warning(
                "sending at %s with a spead2 built without GSO (the PyPI wheel): it can cap "
                "throughput at about half of what the machine allows; scripts/build_spead2.sh "
                "builds it with GSO",
                f"{rate:g} B/s" if rate else "unlimited rate",
            )

    def _log_send_error(self, exc: BaseException) -> None:
        """Log send failures at most once per second, with a count of those not logged."""
        self._errors_since_log += 1
        now = time.monotonic()
        if now - self._last_error_log >= 1.0:
            logger.warning(
                "send failed (%d failed batch sends since last report, %d in all): %s",
                self._errors_since_log,
                self._send_errors,
                exc,
            )
            self._last_error_log = now
            self._errors_since_log = 0

    def _capture_done(self, task: asyncio.Task[int]) -> None:
        self._inflight.clear()
        self._descriptor_future = None
        if task.cancelled():
            logger.info("capture cancelled after %d heaps", self._capture_heaps)
        elif task.exception() is not None:
            # Never permanent: the next capture starts afresh (the failure shows until then).
            self.failure = task.exception()
            logger.error("capture failed: %s", self.failure, exc_info=self.failure)
        else:
            stats = self.statistics()
            logger.info(
                "capture stopped: %d heaps sent (%d in all, %d payload bytes, %d send errors); "
                "next timestamp %d",
                self._capture_heaps,
                stats.heaps,
                stats.bytes,
                stats.send_errors,
                stats.next_timestamp,
            )
        if self._next_timestamp >= TIMESTAMP_MODULUS:
            logger.warning("timestamps exceed 48 bits and wrap on the wire")
        self._notify()
