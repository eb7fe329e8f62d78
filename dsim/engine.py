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
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .background import in_thread
from .clock import Clock, check_finite
from .errors import ConfigError, DsimError
from .layout import TutorialFormat, WireFormat
from .memory import trim_memory
from .pattern import (
    DEFAULT_MAX_PERIOD,
    DEFAULT_NOMINAL_SAMPLE_RATE,
    DEFAULT_PERIOD,
    Signal,
    SignalSettings,
    check_period,
    check_window_memory,
)
from .plan import DEFAULT_BATCH_BYTES, DEFAULT_BATCHES, Plan, make_plan, reuse_plan
from .ring import check_ring_size
from .sender import Sender
from .signals import Program, Window, parse
from .spead import MAX_TIMESTAMP, TIMESTAMP_MODULUS
from .stats import Statistics
from .transport import TransportConfig, TransportKind, spead2_uses_gso

logger = logging.getLogger(__name__)

#: Seconds between descriptor heaps while capturing (receivers that join late).
DEFAULT_DESCRIPTOR_INTERVAL = 5.0
#: Paced streams: a batch is handed to spead2 this long before its first sample is due
#: (asyncio's timers and a busy event loop wake a few milliseconds late at times).
RELEASE_LEAD = 0.005
#: Real time: falling this far (seconds) behind the ADC clock is logged (at most every
#: 10 s) and makes the time-lag sensor a warning: the stream cannot keep up with its clock.
LAG_WARN = 0.1
LAG_LOG_PERIOD = 10.0
#: Unlimited or fast (bytes/s) sending without GSO is worth a warning.
FAST_RATE = 1e9

__all__ = [
    "DEFAULT_BATCHES",
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_DESCRIPTOR_INTERVAL",
    "DEFAULT_MAX_PERIOD",
    "DEFAULT_NOMINAL_SAMPLE_RATE",
    "DEFAULT_PERIOD",
    "CaptureError",
    "Engine",
    "SignalSettings",
]


class CaptureError(DsimError):
    """A capture request that does not fit the current state."""


@dataclass
class _Change:
    """A new plan waiting for its place in the stream."""

    plan: Plan
    timestamp: int | None  #: switch exactly here; None: at the next batch boundary
    future: asyncio.Future[int]
    what: str
    #: The request has been answered already (a switch scheduled for a timestamp):
    #: nobody waits on `future`, so a failure is reported by the engine itself.
    detached: bool = False


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
    with end-of-stream heaps if `end_of_stream` (default: the format's own:
    yes for tutorial, no for meerkat, whose receivers stop for good on one).
    """

    def __init__(
        self,
        transport: TransportConfig,
        heap_size: int | None = None,
        *,
        wire_format: WireFormat | None = None,
        clock: Clock | None = None,
        signals: SignalSettings | None = None,
        initial_signal: str | Program | None = None,
        descriptor_interval: float = DEFAULT_DESCRIPTOR_INTERVAL,
        end_of_stream: bool | None = None,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        batches: int = DEFAULT_BATCHES,
        cancel: threading.Event | None = None,
    ) -> None:
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
        self._cancel = cancel if cancel is not None else threading.Event()
        self._task: asyncio.Task[int] | None = None
        if initial_signal is None:
            signal = Signal.counter(self.format.n_pols)
        else:
            signal = self._render(
                _program(initial_signal),
                self.signal_settings.period,
                self.format.heap_samples(heap_size),
            )
        self._signal_period = self.signal_settings.period
        self._plan = self._make_plan(signal, heap_size)
        self._sender = Sender(transport, self.format, clock, batches)
        self._sender.open_for(self._plan)
        self._next_timestamp = 0
        self._installed_at = 0  # where the last change took effect
        # Capture state
        self._stop_requested = False
        self._wake: asyncio.Event | None = None
        self._pending: _Change | None = None
        #: A window plan no longer sent, reused by the next ?signals of the same shape.
        self._spare: Plan | None = None
        self._change_lock = asyncio.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._last_lag_log = -1e9
        self._gso_warned = False
        self.failure: BaseException | None = None
        #: Seconds the last signal change took, from request to ready.
        self.last_signals_seconds = 0.0
        self._closed = False

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
            self.clock.check_heap_samples(self.format.heap_samples(heap_size))

    def _render(
        self, program: Program, period: int, heap_samples: int, into: Window | None = None
    ) -> Signal:
        """Check `program` against this stream (heaps of `heap_samples`) and render it."""
        settings = self.signal_settings
        program.check_outputs(self.format.n_pols)
        if not program.is_counter:
            check_period(period, settings.max_period)
            if period % heap_samples:
                raise ConfigError(
                    f"period {period} is not a multiple of the heap's {heap_samples} samples"
                )
            if into is None:
                # Too many heaps, or too little memory, found before a long render.
                check_ring_size(self.format, period // heap_samples, 1, heap_samples)
                check_window_memory(period, self.format.sample_bits, self.format.n_pols)
                trim_memory()  # what earlier windows freed, before allocating another
        return Signal.render(
            program,
            period,
            self.sample_rate,
            self.format.sample_bits,
            settings.dither_seed,
            self._render_threads(),
            self._cancel,
            into,
        )

    def _render_threads(self) -> int | None:
        """Threads to render with: all cores when idle, all but one while streaming.

        Measured: with every core rendering, a real-time stream at 214 MHz x 2
        polarisations fell 0.15-0.35 s behind its clock during each ``?signals``.
        """
        if not self.capturing:
            return None
        return max(1, len(os.sched_getaffinity(0)) - 1)

    def _make_plan(self, signal: Signal, heap_size: int) -> Plan:
        """Build everything for `heap_size` and `signal` (slow: thousands of heaps)."""
        plan = make_plan(
            self.format,
            self.transport,
            self.clock,
            signal,
            heap_size,
            batches=self._n_batches,
            batch_bytes=self._batch_bytes,
            cancel=self._cancel,
        )
        # The plan's tens of thousands of objects live long: keep them out of the cyclic
        # collector's passes, each of which otherwise stalled the event loop 5-9 ms (the
        # default window) to 35 ms (2**27), late releases and katcp replies included.
        gc.freeze()
        return plan

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
        return self._plan.wire_rate

    @property
    def signal(self) -> Signal:
        """The signal in effect now (a scheduled switch not yet reached is not)."""
        return self._plan.signal

    @property
    def period(self) -> int:
        """The window period in samples that ``?signals`` uses unless given one."""
        return self._signal_period

    @property
    def uses_gso(self) -> bool:
        """Whether heaps leave through UDP with segmentation offload (spead2 built with it)."""
        return self.transport.kind == TransportKind.UDP and spead2_uses_gso()

    @property
    def capturing(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def next_timestamp(self) -> int:
        """Timestamp of the next heap to be sent."""
        return self._next_timestamp

    @property
    def steady_state_timestamp(self) -> int:
        """Every heap at or after this timestamp reflects every change requested so far:
        where the last change took effect, or the switch still scheduled (a replaced or
        abandoned one no longer counts)."""
        change = self._pending
        if change is not None and change.timestamp is not None:
            return max(self._installed_at, change.timestamp)
        return self._installed_at

    def statistics(self) -> Statistics:
        return Statistics(
            heaps=self._sender.heaps,
            bytes=self._sender.bytes,
            send_errors=self._sender.send_errors,
            throughput=self._sender.meter.rate() if self.capturing else 0.0,
            capturing=self.capturing,
            heap_size=self.heap_size,
            packet_size=self.packet_size,
            next_timestamp=self.next_timestamp,
            capture_heaps=self._sender.capture_heaps,
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
        resume = self._next_timestamp  # where the stream stays if stopped before it starts
        first = self._first_timestamp(timestamp)
        self._pending_due(first)
        first = self._aligned(first)
        self._next_timestamp = first
        self.failure = None
        self._stop_requested = False
        self._wake = asyncio.Event()
        self._sender.start_capture()
        start_at = self.clock.time_of(first) - RELEASE_LEAD if self.clock is not None else None
        self._task = asyncio.get_running_loop().create_task(
            self._capture(heaps, start_at, resume), name="dsim-capture"
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
        _check_timestamp(timestamp, CaptureError)
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

    def _aligned(self, timestamp: int) -> int:
        """Where heaps of the current plan may start, at or after `timestamp`."""
        plan = self._plan
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
            plan = await in_thread(self._make_plan, signal, heap_size)
            return await self._submit(plan, None, "heap size")

    async def set_signals(
        self, spec: str | Program, period: int | None = None, timestamp: int | None = None
    ) -> int:
        """Change the signal; returns the first timestamp that carries it.

        The window is rendered in a worker thread while the current signal
        keeps streaming. With `timestamp` the switch happens exactly there (a
        heap boundary not yet passed); otherwise at the next batch boundary.
        """
        self._check_open()
        program = _program(spec)
        period = self._signal_period if period is None else period
        if timestamp is not None:
            self._check_switch_timestamp(timestamp)
            heap = self.heap_samples
            if not program.is_counter and timestamp % heap:
                # A window's heaps start on multiples of their size (a heap-size change
                # can leave the stream between them): refuse rather than switch later.
                raise ConfigError(
                    f"timestamp {timestamp} is not a multiple of the heap's {heap} samples, "
                    "where the heaps of a signal window start"
                )
        async with self._change_lock:
            self._replace_scheduled()
            started = time.monotonic()
            spare = self._spare_for(program, period)
            try:
                if spare is not None:
                    # Render into the window no longer sent, whose heaps are all built.
                    self._spare = None
                    await self._sender.unused(spare)
                    signal = await in_thread(
                        self._render, program, period, self.heap_samples, spare.signal.window
                    )
                    plan = reuse_plan(spare, signal, self.format)
                else:
                    signal = await in_thread(self._render, program, period, self.heap_samples)
                    plan = await in_thread(self._make_plan, signal, self.heap_size)
            except MemoryError:
                # Past the check (a ulimit -v, or overcommit refused): say so in one line.
                raise ConfigError(
                    f"not enough memory to render a window of {period} samples: "
                    "choose a shorter period"
                ) from None
            self.last_signals_seconds = time.monotonic() - started
            if timestamp is not None:
                self._check_switch_timestamp(timestamp)  # may have passed while rendering
            if not program.is_counter:
                self._signal_period = period
            return await self._submit(plan, timestamp, "signal")

    def _spare_for(self, program: Program, period: int) -> Plan | None:
        """The previous window's plan, if `program` can be rendered into it (checked first)."""
        spare = self._spare
        if (
            program.is_counter
            or spare is None
            or spare.signal.period != period
            or spare.heap_size != self.heap_size
        ):
            return None
        program.resolve(period, self.sample_rate)  # a bad spec must not spoil the spare
        return spare

    def _check_switch_timestamp(self, timestamp: int) -> None:
        _check_timestamp(timestamp, ConfigError)
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
        """A heap-size change waits for no scheduled switch: it is refused (``?signals``
        replaces a scheduled switch; see :meth:`_replace_scheduled`)."""
        change = self._pending
        if change is not None:
            raise ConfigError(
                f"a {change.what} change is scheduled for timestamp {change.timestamp}: "
                "send ?signals again to replace it"
            )

    def _replace_scheduled(self) -> None:
        """A new request replaces a switch scheduled for a timestamp not reached yet.

        (A change without a timestamp holds the lock until it is in effect, so
        only a scheduled one can be pending here.) Without this, a switch
        scheduled beyond where a capture stopped would block every change.
        """
        change = self._pending
        if change is not None:
            self._pending = None
            logger.warning(
                "the %s change scheduled for timestamp %s is replaced by a new request",
                change.what,
                change.timestamp,
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
                change.detached = True
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
            self._sender.open_for(change.plan)
        except Exception as exc:
            self._plan = previous
            if change.detached:
                # Its request was answered long ago: say so where operators look (the
                # log, and device-status until the next capture), and stream on as before.
                self.failure = exc
                logger.error(
                    "the %s change scheduled for timestamp %s failed, the stream goes on "
                    "unchanged: %s",
                    change.what,
                    change.timestamp,
                    exc,
                )
            elif not change.future.done():
                change.future.set_exception(exc)
            return
        # The window just replaced (same heap size) is kept for the next ?signals to reuse.
        if change.what == "signal" and previous.signal.window is not None:
            self._spare = previous
        elif change.what != "signal":
            self._spare = None
        first = self._aligned(max(self._next_timestamp, change.timestamp or 0))
        self._next_timestamp = first
        self._installed_at = first
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
        try:
            await self.stop()
        finally:
            change = self._pending
            if change is not None and not change.detached and not change.future.done():
                change.future.set_exception(CaptureError("engine closed"))
            self._release()

    @property
    def time_error(self) -> float:
        """Real time: wall time when the last batch was sent, less its last sample's time."""
        return self._sender.time_error

    def _release(self) -> None:
        self._closed = True
        self._sender.release()

    # ----------------------------------------------------------- capture loop

    async def _capture(self, limit: int | None, start_at: float | None, resume: int) -> int:
        remaining = limit
        pacer = self._make_pacer(self._plan)
        next_descriptors = 0.0
        sender = self._sender
        submitted = sender.submitted
        try:
            # Descriptors first, so that a real-time capture's first heap is not delayed.
            await sender.send_descriptors(self._plan)
            next_descriptors = time.monotonic() + (self._descriptor_interval or float("inf"))
            while start_at is not None and time.time() < start_at:
                if not await self._sleep_until(start_at):
                    # Stopped before its start: nothing was sent, the stream stays where
                    # it was (and so do changes made meanwhile).
                    self._next_timestamp = resume
                    self._installed_at = min(self._installed_at, resume)
                    return sender.capture_heaps
                change = self._pending  # woken by a change: put it in effect, wait on
                if change is not None and change.timestamp is None:
                    await self._apply(change)
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
                    await sender.send_descriptors(self._plan)
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
                if pacer is not None:
                    due = pacer.due(t) - RELEASE_LEAD
                    if not await self._sleep_until(due):
                        break
                    if time.time() < due:  # woken early by a change: apply it, then wait on
                        continue
                yielded = False
                while sender.full:
                    await sender.retire()
                    yielded = True
                ring.prepare(position, steps, t)
                self._next_timestamp = t + steps * plan.heap_samples
                sender.submit(plan, position, steps, self._next_timestamp)
                if remaining is not None:
                    remaining -= steps
                if self.clock is not None:
                    self._check_lag()
                if not yielded:
                    await asyncio.sleep(0)  # let katcp in, even when spead2 keeps up
        finally:
            await sender.drain()
            if self.end_of_stream and sender.submitted > submitted:
                await sender.send_end()
            change = self._pending
            if change is not None and change.timestamp is None:
                self._install(change)
        return sender.capture_heaps

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
        if self._sender.needs_new_stream(change.plan):
            await self._sender.drain()  # a new stream must not overtake what the old one holds
        self._install(change)

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
        if (rate == 0 or rate >= FAST_RATE) and not self._gso_warned:
            self._gso_warned = True
            logger.warning(
                "sending at %s with a spead2 built without GSO (the PyPI wheel): it can cap "
                "throughput at about half of what the machine allows; scripts/build_spead2.sh "
                "builds it with GSO",
                f"{rate:g} B/s" if rate else "unlimited rate",
            )

    def _capture_done(self, task: asyncio.Task[int]) -> None:
        self._sender.forget()
        if task.cancelled():
            logger.info("capture cancelled after %d heaps", self._sender.capture_heaps)
        elif task.exception() is not None:
            # Never permanent: the next capture starts afresh (the failure shows until then).
            self.failure = task.exception()
            logger.error("capture failed: %s", self.failure, exc_info=self.failure)
        else:
            stats = self.statistics()
            logger.info(
                "capture stopped: %d heaps sent (%d in all, %d payload bytes, %d send errors); "
                "next timestamp %d",
                self._sender.capture_heaps,
                stats.heaps,
                stats.bytes,
                stats.send_errors,
                stats.next_timestamp,
            )
        if self._next_timestamp >= TIMESTAMP_MODULUS:
            logger.warning("timestamps exceed 48 bits and wrap on the wire")
        self._notify()


def _program(spec: str | Program) -> Program:
    """A parsed signal program (parsing a spec given as text)."""
    if isinstance(spec, str):
        return parse(spec)
    return spec


#: Timestamps are kept as 64-bit integers (48 bits go on the wire).


def _check_timestamp(timestamp: object, error: type[DsimError]) -> None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise error(f"timestamp must be a non-negative integer, not {timestamp!r}")
    if timestamp > MAX_TIMESTAMP:
        raise error(f"timestamp {timestamp} is too large (at most 2**62)")
