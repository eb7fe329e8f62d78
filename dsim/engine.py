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
from .transport import SendStream, TransportConfig, make_thread_pool, open_stream

logger = logging.getLogger(__name__)

DEFAULT_HEAP_SIZE = 8192
#: Target payload per batch; two batches make about 1 MiB in flight.
DEFAULT_BATCH_BYTES = 512 * 1024
DEFAULT_BATCHES = 2
#: Upper bound on heaps per batch, so that tiny heaps do not make huge batches.
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


@dataclass
class _Batch:
    """One batch: arrays the heaps reference, the heaps, and its last send."""

    samples: np.ndarray
    timestamps: np.ndarray
    plain: spead2.send.HeapReferenceList
    first: spead2.send.HeapReferenceList
    future: asyncio.Future[int] | None = None
    in_flight: int = 0


@dataclass
class _Plan:
    """Everything that depends on the heap size."""

    heap_size: int
    batch_heaps: int
    packet_size: int
    batches: list[_Batch] = field(default_factory=list)

    @property
    def payload_arrays(self) -> list[np.ndarray]:
        return [batch.samples for batch in self.batches]


def batch_heaps_for(heap_size: int, batch_bytes: int, n_substreams: int) -> int:
    """Heaps per batch: about `batch_bytes` of payload, at least one heap.

    Rounded up to a multiple of `n_substreams` so that heap ``j`` of every
    batch goes to the same destination and the destinations take turns.
    """
    heaps = max(1, min(MAX_BATCH_HEAPS, round(batch_bytes / heap_size)))
    return -(-heaps // n_substreams) * n_substreams


def _available_memory() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class Engine:
    """Streams heaps from a running generator through a spead2 stream.

    Create it inside a running event loop. The transport is fixed for the
    engine's life; the heap size can change at any time.
    """

    def __init__(
        self,
        transport: TransportConfig,
        heap_size: int = DEFAULT_HEAP_SIZE,
        *,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        batches: int = DEFAULT_BATCHES,
        throughput_window: float = 1.0,
    ) -> None:
        if batches < 2:
            raise ConfigError(f"at least two batches must be in flight, not {batches}")
        transport.validate()
        self.transport = transport
        self._batch_bytes = batch_bytes
        self._n_batches = batches
        self._n_substreams = transport.n_substreams
        self._generator = Generator()
        self._thread_pool = make_thread_pool(transport)
        self._end_heaps = layout.make_end_heaps(self._n_substreams)
        self._plan = self._make_plan(heap_size)
        self._heaps_submitted = 0  # all heaps handed to spead2, for heap cnts
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

    def _make_plan(self, heap_size: int) -> _Plan:
        layout.validate_heap_size(heap_size)
        batch_heaps = batch_heaps_for(heap_size, self._batch_bytes, self._n_substreams)
        needed = self._n_batches * batch_heaps * heap_size
        if needed > _available_memory() // 2:
            raise ConfigError(
                f"heap size {heap_size} needs {needed} bytes of batch memory, "
                "more than half the free memory"
            )
        packet_size, auto = self._packet_size_for(heap_size)
        item_group = layout.make_item_group(heap_size)
        plan = _Plan(heap_size, batch_heaps, packet_size)
        for _ in range(self._n_batches):
            samples = np.zeros((batch_heaps, heap_size), layout.SAMPLE_DTYPE)
            timestamps = np.zeros(batch_heaps, layout.TIMESTAMP_DTYPE)
            plain, first = layout.make_heaps(
                item_group, samples, timestamps, self._n_substreams, repeat_pointers=auto
            )
            plan.batches.append(_Batch(samples, timestamps, plain, first))
        return plan

    def _packet_size_for(self, heap_size: int) -> tuple[int, bool]:
        """The packet size for `heap_size`, and whether it was picked automatically."""
        if self.transport.packet_size is not None:
            return self.transport.packet_size, False
        size = layout.auto_packet_size(heap_size, self.transport.max_packet_size)
        if size is None:
            logger.info(
                "heap size %d splits into unequal packets at any size up to %d bytes",
                heap_size,
                self.transport.max_packet_size,
            )
            return self.transport.max_packet_size, True
        return size, True

    def _open_stream(self, plan: _Plan) -> SendStream:
        """A stream sized for `plan` (and, for ibverbs, registered on its memory)."""
        config = spead2.send.StreamConfig(
            max_packet_size=plan.packet_size,
            rate=self.transport.rate,
            max_heaps=self._n_batches * plan.batch_heaps + self._n_substreams,
        )
        stream = open_stream(self.transport, self._thread_pool, config, plan.payload_arrays)
        # Heap IDs run on across streams, as if there were only ever one.
        stream.set_cnt_sequence(self._heaps_submitted + 1, 1)
        return stream

    # -------------------------------------------------------------- properties

    @property
    def heap_size(self) -> int:
        return self._plan.heap_size

    @property
    def batch_heaps(self) -> int:
        return self._plan.batch_heaps

    @property
    def packet_size(self) -> int:
        """Maximum packet size in use for the current heap size."""
        return self._plan.packet_size

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
        )

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
        """Start a capture; with `heaps`, send exactly that many and stop.

        Returns the timestamp of the capture's first heap.
        """
        if self._closed:
            raise CaptureError("engine is closed")
        if self.failure is not None:
            raise CaptureError(f"engine has failed: {self.failure}")
        if self.capturing:
            raise CaptureError("capture already in progress")
        if heaps is not None and (isinstance(heaps, bool) or heaps <= 0):
            raise CaptureError(f"heap count must be a positive integer, not {heaps}")
        first_timestamp = self.next_timestamp
        self._stop_requested = False
        self._capture_heaps = 0
        self._meter.reset()
        self._meter.record(self._bytes)
        self._task = asyncio.get_running_loop().create_task(
            self._capture(heaps), name="dsim-capture"
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

        While capturing, the change happens at the next batch boundary, with no
        gap in the timestamps, and the descriptors go out again with that heap.
        """
        layout.validate_heap_size(heap_size)
        if self._closed:
            raise CaptureError("engine is closed")
        async with self._resize_lock:
            if not self.capturing:
                self._apply_heap_size(heap_size)
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

    async def _capture(self, limit: int | None) -> int:
        remaining = limit
        first = True
        index = 0
        try:
            while True:
                if self._resize is not None:
                    await self._drain()
                    self._finish_resize()
                    first = True
                    index = 0
                plan = self._plan
                batch = plan.batches[index % len(plan.batches)]
                index += 1
                await self._retire(batch)
                if self._stop_requested or remaining == 0:
                    break
                count = plan.batch_heaps if remaining is None else min(plan.batch_heaps, remaining)
                self._generator.fill(batch.samples, batch.timestamps, count)
                heaps = batch.first if first else batch.plain
                if count < plan.batch_heaps:
                    heaps = heaps[:count]
                stream = self._stream
                assert stream is not None, "the engine was released while capturing"
                batch.future = stream.async_send_heaps(heaps, spead2.send.GroupMode.SERIAL)
                batch.in_flight = count
                self._heaps_submitted += count
                first = False
                if remaining is not None:
                    remaining -= count
        finally:
            await self._drain()
            await self._send_end()
            if self._resize is not None:
                self._finish_resize()
        return self._capture_heaps

    def _finish_resize(self) -> None:
        assert self._resize is not None
        heap_size, future = self._resize
        self._resize = None
        try:
            self._apply_heap_size(heap_size)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(self.next_timestamp)

    async def _retire(self, batch: _Batch) -> None:
        """Wait for the batch's last send and account for it."""
        if batch.future is None:
            return
        future, count = batch.future, batch.in_flight
        batch.future = None
        batch.in_flight = 0
        try:
            await future
        except (RuntimeError, OSError) as exc:
            self._send_errors += 1
            self._log_send_error(exc)
        else:
            self._heaps += count
            self._capture_heaps += count
            self._bytes += count * batch.samples.shape[1]
            self._meter.record(self._bytes)

    async def _drain(self) -> None:
        for batch in self._plan.batches:
            await self._retire(batch)

    async def _send_end(self) -> None:
        if self._stream is None:
            return
        try:
            await self._stream.async_send_heaps(self._end_heaps, spead2.send.GroupMode.SERIAL)
        except (RuntimeError, OSError) as exc:
            self._send_errors += 1
            self._log_send_error(exc)
        finally:
            self._heaps_submitted += len(self._end_heaps)

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
