"""The batching engine: capture state, batches in flight, statistics.

This follows the "Batching heaps" technique of spead2's tutorial. For one heap
size (a *plan*) the engine allocates a few batches; each batch owns numpy arrays
for the samples and timestamps of its heaps, and the heaps themselves are built
once and only reference those arrays. Sending a batch is then:

1. wait for that batch's previous send to finish (its memory is free again);
2. rewrite its samples and timestamps with one numpy operation each;
3. hand the whole batch to spead2 with one ``async_send_heaps`` call.

While one batch is on the wire the next one is being prepared, and no Python
runs per heap. The engine knows nothing of katcp: :mod:`dsim.server` drives it
through :meth:`Engine.start`, :meth:`Engine.stop`, :meth:`Engine.set_heap_size`
and :meth:`Engine.statistics`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import spead2
import spead2.send

from . import layout
from .errors import ConfigError, DsimError
from .generator import Generator
from .stats import RateMeter, Statistics
from .transport import (
    SendStream,
    TransportConfig,
    TransportKind,
    make_thread_pool,
    open_stream,
    spead2_uses_gso,
)

logger = logging.getLogger(__name__)

DEFAULT_HEAP_SIZE = 8192
#: Seconds between descriptor heaps while capturing (MeerKAT receivers that join late).
DEFAULT_DESCRIPTOR_INTERVAL = 5.0
#: Target payload per batch. Four batches (about 2 MiB) are in flight: with two, a
#: delayed wake-up of the Python thread drained spead2's queue at GSO rates (measured:
#: 4 batches 1.04-1.13x of 2 on the GSO build, neutral on the wheel).
DEFAULT_BATCH_BYTES = 512 * 1024
DEFAULT_BATCHES = 4
#: Real time: a batch covers at most this many seconds of samples.
REAL_TIME_BATCH = 0.002
#: Real time: a batch may be handed to spead2 this long before its first sample (asyncio
#: sleeps to about a millisecond; spead2 still paces it, so it leaves little earlier).
REAL_TIME_LEAD = 0.002
#: Real time: spead2 paces each batch this much faster than nominal.
REAL_TIME_HEADROOM = 0.01
#: Upper bound on steps per batch, so that tiny heaps do not make huge batches.
MAX_BATCH_HEAPS = 8192


class CaptureError(DsimError):
    """A capture request that does not fit the current state."""


#: Engines not yet closed; see :func:`_release_at_exit`.
_live_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _release_at_exit() -> None:
    """Free the spead2 streams of engines that were never closed, before spead2's own exit.

    spead2 stops its thread pools in an atexit handler; a send stream destroyed
    after that (in the interpreter's final garbage collection) can spin forever
    waiting for a thread that is gone. Registered after spead2 was imported,
    this handler runs before spead2's.
    """
    for engine in list(_live_engines):
        engine._release()


@dataclass(frozen=True)
class Clock:
    """The simulated ADC clock of a real-time stream.

    Sample ``t`` is taken at UNIX time ``sync_time + t / adc_sample_rate``. A
    capture starts at the first multiple of `align_samples` after now, and the
    stream is paced at exactly the rate that keeps timestamps on the wall clock.
    """

    adc_sample_rate: float
    sync_time: float
    align_samples: int = 1 << 20

    def __post_init__(self) -> None:
        if not self.adc_sample_rate > 0:
            raise ConfigError(f"ADC sample rate must be positive, not {self.adc_sample_rate}")
        if self.align_samples <= 0:
            raise ConfigError(
                f"alignment must be a positive sample count, not {self.align_samples}"
            )

    def time_of(self, timestamp: int) -> float:
        """UNIX time at which sample `timestamp` is taken."""
        return self.sync_time + timestamp / self.adc_sample_rate

    def next_aligned(self, not_before: int, now: float) -> int:
        """The first aligned timestamp that is at least `not_before` and not in the past."""
        current = math.ceil((now - self.sync_time) * self.adc_sample_rate)
        first = max(not_before, current)
        return -(-first // self.align_samples) * self.align_samples


@dataclass
class _Batch:
    """One batch: arrays the heaps reference, the heaps, and its last send."""

    arrays: layout.BatchArrays
    plain: spead2.send.HeapReferenceList
    first: spead2.send.HeapReferenceList
    future: asyncio.Future[int] | None = None
    in_flight: int = 0  # steps


@dataclass
class _Plan:
    """Everything that depends on the heap size."""

    heap_size: int
    heap_samples: int
    steps: int  # per batch
    packet_size: int
    rate: float  # bytes/s on the wire, 0 = unlimited
    descriptor_heap: spead2.send.Heap
    batches: list[_Batch] = field(default_factory=list)

    @property
    def payload_arrays(self) -> list[np.ndarray]:
        return [batch.arrays.payload for batch in self.batches]


def steps_for(heap_bytes: int, batch_bytes: int, multiple: int) -> int:
    """Steps per batch: about `batch_bytes` of payload, at least one step.

    `heap_bytes` is the payload of one step (all its heaps). Rounded up to a
    multiple of `multiple` (the tutorial format's destinations, so that they
    take turns evenly).
    """
    steps = max(1, min(MAX_BATCH_HEAPS, round(batch_bytes / heap_bytes)))
    return -(-steps // multiple) * multiple


def _available_memory() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class Engine:
    """Streams heaps from a running generator through a spead2 stream.

    Create it inside a running event loop. The transport, the wire format and
    the clock are fixed for the engine's life; the heap size can change at any
    time. Without a `clock` the stream runs free (as fast as the transport's
    rate allows) from timestamp 0; with one it follows the simulated ADC clock.
    Descriptors go out as heaps of their own (odd heap IDs; data heaps have even
    ones) when a capture starts, after a heap-size change and every
    `descriptor_interval` seconds (0: never periodically).
    """

    def __init__(
        self,
        transport: TransportConfig,
        heap_size: int | None = None,
        *,
        wire_format: layout.WireFormat | None = None,
        clock: Clock | None = None,
        descriptor_interval: float = DEFAULT_DESCRIPTOR_INTERVAL,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        batches: int = DEFAULT_BATCHES,
        throughput_window: float = 1.0,
    ) -> None:
        if batches < 2:
            raise ConfigError(f"at least two batches must be in flight, not {batches}")
        if descriptor_interval < 0:
            raise ConfigError(f"descriptor interval must be >= 0, not {descriptor_interval}")
        transport.validate()
        self.transport = transport
        self.format = wire_format or layout.TutorialFormat(transport.n_substreams)
        if self.format.destinations != transport.n_substreams:
            raise ConfigError("the wire format and the transport disagree on the destinations")
        self.clock = clock
        self._descriptor_interval = descriptor_interval
        self._batch_bytes = batch_bytes
        self._n_batches = batches
        self._n_substreams = transport.n_substreams
        self._generator = Generator()
        self._thread_pool = make_thread_pool(transport)
        self._end_heaps = layout.make_end_heaps(self._n_substreams)
        if heap_size is None:
            heap_size = self.format.default_heap_size
        self._plan = self._make_plan(heap_size)
        self._data_heaps_submitted = 0  # for the (even) data heap IDs
        self._descriptors_submitted = 0  # for the (odd) descriptor heap IDs
        self._descriptor_future: asyncio.Future[int] | None = None
        self._stream: SendStream | None = self._open_stream(self._plan)
        # Capture state
        self._task: asyncio.Task[int] | None = None
        self._stop_requested = False
        self._resize: tuple[int, asyncio.Future[int]] | None = None
        self._resize_lock = asyncio.Lock()
        self._listeners: list[Callable[[], None]] = []
        # Statistics
        self._heaps = 0
        self._bytes = 0
        self._send_errors = 0
        self._capture_heaps = 0
        self._meter = RateMeter(throughput_window)
        self._last_error_log = -1e9
        self._errors_since_log = 0
        self.failure: BaseException | None = None
        self._closed = False
        _live_engines.add(self)

    # ------------------------------------------------------------------ set-up

    def check_heap_size(self, heap_size: int) -> None:
        """Raise :exc:`ConfigError` unless `heap_size` works with this format and clock."""
        self.format.check_heap_size(heap_size, self.transport.max_packet_size)
        if self.clock is not None:
            samples = self.format.heap_samples(heap_size)
            if self.clock.align_samples % samples:
                raise ConfigError(
                    f"heap size {heap_size} ({samples} samples) does not divide the "
                    f"alignment of {self.clock.align_samples} samples"
                )

    def _make_plan(self, heap_size: int) -> _Plan:
        self.check_heap_size(heap_size)
        fmt = self.format
        steps = steps_for(heap_size * fmt.streams, self._batch_bytes, fmt.step_multiple)
        heap_samples = fmt.heap_samples(heap_size)
        if self.clock is not None:
            # Short batches in real time: each is released on the clock (see _capture).
            short = math.ceil(self.clock.adc_sample_rate * REAL_TIME_BATCH / heap_samples)
            steps = min(steps, -(-short // fmt.step_multiple) * fmt.step_multiple)
        needed = self._n_batches * steps * fmt.streams * heap_size
        if needed > _available_memory() // 2:
            raise ConfigError(
                f"heap size {heap_size} needs {needed} bytes of batch memory, "
                "more than half the free memory"
            )
        packet_size, repeat_pointers = fmt.packet_size(
            heap_size,
            self.transport.max_packet_size,
            self.transport.packet_size,
            # Equal packets pay only where UDP GSO can send runs of them in one call.
            equal=self.transport.kind == TransportKind.UDP and spead2_uses_gso(),
        )
        rate = self.transport.rate
        if self.clock is not None:
            # Wire bytes of one step (all polarisations), adc_rate / heap_samples times a second.
            sample_heap = fmt.sample_heap(heap_size, repeat_pointers)
            wire = sum(layout.packet_sizes(sample_heap, packet_size))
            rate = self.clock.adc_sample_rate / heap_samples * wire * fmt.streams
        descriptor_heap = layout.make_descriptor_heap(fmt.descriptor_item_group(heap_size))
        plan = _Plan(heap_size, heap_samples, steps, packet_size, rate, descriptor_heap)
        for _ in range(self._n_batches):
            arrays = fmt.allocate(steps, heap_size)
            plain, first = fmt.make_heaps(heap_size, arrays, repeat_pointers)
            plan.batches.append(_Batch(arrays, plain, first))
        return plan

    def _open_stream(self, plan: _Plan) -> SendStream:
        """A stream sized for `plan` (and, for ibverbs, registered on its memory)."""
        config = spead2.send.StreamConfig(
            max_packet_size=plan.packet_size,
            # In real time the clock releases the batches; spead2 only smooths each one
            # out, a little faster than nominal so that it never falls behind.
            rate=plan.rate * (1 + REAL_TIME_HEADROOM) if self.clock is not None else plan.rate,
            max_heaps=self._n_batches * plan.steps * self.format.streams + 2 * self._n_substreams,
        )
        stream = open_stream(self.transport, self._thread_pool, config, plan.payload_arrays)
        # Heap IDs run on across streams, as if there were only ever one: data even.
        stream.set_cnt_sequence(2 * self._data_heaps_submitted + 2, 2)
        return stream

    # -------------------------------------------------------------- properties

    @property
    def heap_size(self) -> int:
        return self._plan.heap_size

    @property
    def heap_samples(self) -> int:
        return self._plan.heap_samples

    @property
    def batch_heaps(self) -> int:
        """Heaps in a full batch (all polarisations)."""
        return self._plan.steps * self.format.streams

    @property
    def packet_size(self) -> int:
        """Maximum packet size in use for the current heap size."""
        return self._plan.packet_size

    @property
    def rate(self) -> float:
        """Send rate in use, bytes/s on the wire (0 = unlimited)."""
        return self._plan.rate

    @property
    def capturing(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def next_timestamp(self) -> int:
        """Timestamp of the next heap to be generated."""
        return self._generator.next_timestamp

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
        return time.time() - self.clock.time_of(self.next_timestamp)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` when a capture starts or ends, or the heap size changes."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            try:
                callback()
            except Exception:
                logger.exception("engine listener failed")

    # ---------------------------------------------------------------- control

    def start(self, heaps: int | None = None) -> int:
        """Start a capture; with `heaps`, send exactly that many per polarisation and stop.

        Returns the timestamp of the capture's first heap. With a clock, that
        is the next aligned sample after now, and sending starts at its time.
        """
        if self._closed:
            raise CaptureError("engine is closed")
        if self.failure is not None:
            raise CaptureError(f"engine has failed: {self.failure}")
        if self.capturing:
            raise CaptureError("capture already in progress")
        if heaps is not None and (isinstance(heaps, bool) or heaps <= 0):
            raise CaptureError(f"heap count must be a positive integer, not {heaps}")
        start_at = self._align_start()
        first_timestamp = self.next_timestamp
        self._stop_requested = False
        self._capture_heaps = 0
        self._meter.reset()
        self._meter.record(self._bytes)
        self._task = asyncio.get_running_loop().create_task(
            self._capture(heaps, start_at), name="dsim-capture"
        )
        self._task.add_done_callback(self._capture_done)
        logger.info(
            "capture started at timestamp %d (%s, heap size %d)",
            first_timestamp,
            f"{heaps} heaps" if heaps is not None else "unbounded",
            self.heap_size,
        )
        self._notify()
        return first_timestamp

    def _align_start(self) -> float | None:
        """Move the timestamp to where a new run of heaps must start; returns when to send it.

        Real time: the next aligned sample after now. MeerKAT format: the next
        multiple of the heap's samples. Otherwise the counters just run on.
        """
        if self.clock is not None:
            first = self.clock.next_aligned(self.next_timestamp, time.time())
            self._generator.skip_to(first)
            if first >= layout.TIMESTAMP_MODULUS:
                logger.warning(
                    "timestamps exceed 48 bits and wrap on the wire: the sync time is more "
                    "than %.1f hours ago",
                    layout.TIMESTAMP_MODULUS / self.clock.adc_sample_rate / 3600,
                )
            return self.clock.time_of(first)
        if isinstance(self.format, layout.MeerkatFormat):
            samples = self.heap_samples
            self._generator.skip_to(-(-self.next_timestamp // samples) * samples)
        return None

    async def stop(self) -> int:
        """Stop the capture; returns once everything in flight and the end heap are sent.

        Returns the number of heaps the capture sent. Without a capture, returns
        0 at once and sends nothing.
        """
        task = self._task
        if task is None or task.done():
            return 0
        self._stop_requested = True
        return await asyncio.shield(task)

    async def wait_capture(self) -> int:
        """Wait for the current capture (if any) to end; returns its heap count."""
        task = self._task
        if task is None:
            return 0
        return await asyncio.shield(task)

    async def set_heap_size(self, heap_size: int) -> int:
        """Change the heap size; returns the timestamp of the first heap of the new size.

        While capturing, the change happens at the next batch boundary and the
        descriptors go out again first. Free-running tutorial streams continue
        with no gap in the timestamps; MeerKAT streams continue at the next
        multiple of the new heap's samples, and real-time streams at the next
        aligned sample after now.
        """
        validate = layout.validate_heap_size(heap_size)
        self.check_heap_size(validate)
        if self._closed:
            raise CaptureError("engine is closed")
        async with self._resize_lock:
            if not self.capturing:
                self._apply_heap_size(heap_size)
                self._align_start()
                return self.next_timestamp
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._resize = (heap_size, future)
            return await future

    def _apply_heap_size(self, heap_size: int) -> None:
        """Switch plan and stream; only when nothing is in flight."""
        if heap_size != self.heap_size:
            plan = self._make_plan(heap_size)
            self._stream = self._open_stream(plan)
            self._plan = plan
            logger.info(
                "heap size now %d (%d heaps per batch, packet size %d)",
                heap_size,
                self.batch_heaps,
                self.packet_size,
            )
        self._notify()

    async def close(self) -> None:
        """Stop any capture, then free the stream and its thread (the engine is done)."""
        await self.stop()
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
        first = True
        index = 0
        next_descriptors = 0.0
        try:
            if start_at is not None:
                await asyncio.sleep(max(0.0, start_at - time.time()))
            while True:
                if self._resize is not None:
                    await self._drain()
                    start_at = self._finish_resize()
                    if start_at is not None:
                        await asyncio.sleep(max(0.0, start_at - time.time()))
                    first = True
                    index = 0
                plan = self._plan
                batch = plan.batches[index % len(plan.batches)]
                index += 1
                await self._retire(batch)
                if self._stop_requested or remaining == 0:
                    break
                now = time.monotonic()
                if first or (self._descriptor_interval and now >= next_descriptors):
                    await self._send_descriptors()
                    next_descriptors = now + self._descriptor_interval
                steps = plan.steps if remaining is None else min(plan.steps, remaining)
                if self.clock is not None:
                    # Release a batch at most REAL_TIME_LEAD before its first sample:
                    # this, not spead2's rate limiter, keeps timestamps on the wall clock.
                    due = self.clock.time_of(self._generator.next_timestamp) - REAL_TIME_LEAD
                    delay = due - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                counters, timestamps = self._generator.advance(steps, plan.heap_samples)
                self.format.fill(batch.arrays, counters, timestamps)
                heaps = batch.first if first else batch.plain
                if steps < plan.steps:
                    heaps = heaps[: steps * self.format.streams]
                stream = self._stream
                assert stream is not None, "the engine was released while capturing"
                batch.future = stream.async_send_heaps(heaps, spead2.send.GroupMode.SERIAL)
                batch.in_flight = steps
                self._data_heaps_submitted += steps * self.format.streams
                first = False
                if remaining is not None:
                    remaining -= steps
        finally:
            await self._drain()
            await self._send_end()
            if self._resize is not None:
                self._finish_resize()
        return self._capture_heaps

    def _finish_resize(self) -> float | None:
        """Apply the pending heap-size change; returns when to send the next heap (real time)."""
        assert self._resize is not None
        heap_size, future = self._resize
        self._resize = None
        try:
            self._apply_heap_size(heap_size)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return None
        start_at = self._align_start()
        if not future.done():
            future.set_result(self.next_timestamp)
        return start_at

    async def _send_descriptors(self) -> None:
        """Send a descriptor heap to every destination, with the next odd heap IDs."""
        if self._descriptor_future is not None:
            await self._settle(self._descriptor_future)
        stream = self._stream
        assert stream is not None
        refs = []
        for substream in range(self._n_substreams):
            cnt = 2 * self._descriptors_submitted + 1
            self._descriptors_submitted += 1
            refs.append(
                spead2.send.HeapReference(
                    self._plan.descriptor_heap, cnt=cnt, substream_index=substream
                )
            )
        self._descriptor_future = stream.async_send_heaps(
            spead2.send.HeapReferenceList(refs), spead2.send.GroupMode.SERIAL
        )

    async def _settle(self, future: asyncio.Future[int]) -> bool:
        """Wait for a send; count and log a failure. Returns whether it succeeded."""
        try:
            await future
        except (RuntimeError, OSError) as exc:
            self._send_errors += 1
            self._log_send_error(exc)
            return False
        return True

    async def _retire(self, batch: _Batch) -> None:
        """Wait for the batch's last send and account for it."""
        if batch.future is None:
            return
        future, steps = batch.future, batch.in_flight
        batch.future = None
        batch.in_flight = 0
        if await self._settle(future):
            heaps = steps * self.format.streams
            self._heaps += heaps
            self._capture_heaps += heaps
            self._bytes += heaps * self._plan.heap_size
            self._meter.record(self._bytes)

    async def _drain(self) -> None:
        for batch in self._plan.batches:
            await self._retire(batch)
        if self._descriptor_future is not None:
            future, self._descriptor_future = self._descriptor_future, None
            await self._settle(future)

    async def _send_end(self) -> None:
        if self._stream is None:
            return
        self._data_heaps_submitted += len(self._end_heaps)
        await self._settle(
            self._stream.async_send_heaps(self._end_heaps, spead2.send.GroupMode.SERIAL)
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
        if task.cancelled():
            logger.info("capture cancelled after %d heaps", self._capture_heaps)
        elif task.exception() is not None:
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
        self._notify()
