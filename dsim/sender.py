"""The spead2 side of the engine: one send stream, the batches in flight, what they sent.

The engine decides what to send and when; the :class:`Sender` hands it to
spead2 and keeps the books. Heaps and bytes are counted only when spead2
reports their batch sent, so nothing unsent is ever counted. Heap ids follow
:mod:`dsim.spead`'s rule: data heaps take consecutive even ids (spead2's own
sequence, carried across streams), descriptor and end-of-stream heaps odd ones.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
import weakref
from collections import deque
from dataclasses import dataclass

import spead2
import spead2.send

from .clock import Clock
from .layout import WireFormat, end_heaps
from .plan import Plan
from .stats import RateMeter
from .transport import (
    SendStream,
    TransportConfig,
    TransportKind,
    make_thread_pool,
    open_stream,
)

logger = logging.getLogger(__name__)

#: Senders not yet released; see :func:`_release_at_exit`.
_live_senders: weakref.WeakSet[Sender] = weakref.WeakSet()


@atexit.register
def _release_at_exit() -> None:
    """Free the spead2 streams of senders never released, before spead2's own exit handler.

    spead2 stops its thread pools in an atexit handler; a send stream destroyed
    after that (in the interpreter's final garbage collection) can spin forever
    waiting for a thread that is gone (spead2 issue #251). Registered after
    spead2 was imported, this handler runs before spead2's.
    """
    for sender in list(_live_senders):
        sender.release()


@dataclass
class _InFlight:
    """One batch handed to spead2."""

    future: asyncio.Future[int]
    heaps: int
    payload_bytes: int
    end_timestamp: int  #: timestamp just after the batch's last sample
    plan: Plan  #: keeps the heaps and their memory alive until sent
    capture: int  #: which capture sent it (a failed one's batches may finish later)


class Sender:
    """One spead2 send stream at a time, its batches in flight and their accounting."""

    def __init__(
        self,
        transport: TransportConfig,
        fmt: WireFormat,
        clock: Clock | None,
        batches: int,
    ) -> None:
        self.transport = transport
        self.format = fmt
        self.clock = clock
        self.batches = batches
        self._thread_pool: spead2.ThreadPool | None = make_thread_pool(transport)
        self._stream: SendStream | None = None
        self._key: tuple[int, float, int] | None = None
        self._data_submitted = 0  # data heaps handed to spead2: their (even) heap ids
        self._odd_submitted = 0  # descriptor and end-of-stream heaps: odd heap ids
        self._inflight: deque[_InFlight] = deque()
        self._descriptor_future: asyncio.Future[int] | None = None
        #: Heaps and payload bytes sent (all time, and this capture), failed batch sends.
        self.heaps = 0
        self.bytes = 0
        self.capture_heaps = 0
        self._capture = 0
        self.send_errors = 0
        self.meter = RateMeter()
        #: Real time: wall time when the last batch was sent, less the time of its
        #: last sample (what katgpucbf's simulator exports as dsim_time_error_s).
        self.time_error = 0.0
        self._last_error_log = -1e9
        self._errors_since_log = 0
        _live_senders.add(self)

    @property
    def stream(self) -> SendStream | None:
        return self._stream

    @property
    def full(self) -> bool:
        """Whether as many batches as allowed are in flight."""
        return len(self._inflight) >= self.batches

    @property
    def submitted(self) -> int:
        """Data heaps handed to spead2 so far."""
        return self._data_submitted

    # ----------------------------------------------------------------- stream

    def _key_for(self, plan: Plan) -> tuple[int, float, int]:
        config = plan.stream_config(self.batches, self.format.n_substreams)
        return config.max_packet_size, config.rate, config.max_heaps

    def needs_new_stream(self, plan: Plan) -> bool:
        """Whether `plan` needs a stream other than the current one."""
        return (
            self._stream is None
            or self._key_for(plan) != self._key
            or self.transport.kind == TransportKind.IBVERBS  # ibverbs registers the memory
        )

    def open_for(self, plan: Plan) -> None:
        """Make the stream `plan` needs, unless the current one will do (nothing in flight)."""
        if not self.needs_new_stream(plan):
            return
        assert self._thread_pool is not None, "the sender was released"
        config = plan.stream_config(self.batches, self.format.n_substreams)
        stream = open_stream(self.transport, self._thread_pool, config, [plan.ring.slots.payload])
        # Heap ids run on across streams, as if there were only ever one: data even.
        stream.set_cnt_sequence(2 * self._data_submitted + 2, 2)
        self._stream = stream
        self._key = self._key_for(plan)

    def release(self) -> None:
        """Free the stream and its thread now, while the interpreter is fully alive."""
        self._stream = None
        self._thread_pool = None
        _live_senders.discard(self)

    # ---------------------------------------------------------------- sending

    def submit(self, plan: Plan, position: int, steps: int, end_timestamp: int) -> None:
        """Hand `steps` timestamps of `plan`'s ring from `position` to spead2 as one batch."""
        stream = self._stream
        assert stream is not None, "the sender was released while capturing"
        heaps = steps * self.format.n_pols
        future = stream.async_send_heaps(
            plan.ring.batch(position, steps), spead2.send.GroupMode.SERIAL
        )
        batch = _InFlight(future, heaps, heaps * plan.heap_size, end_timestamp, plan, self._capture)
        # Counted as soon as spead2 has sent it (one callback a batch), not when the loop
        # next waits for it: at low rates that can be minutes later.
        future.add_done_callback(lambda _: self._account(batch))
        self._inflight.append(batch)
        self._data_submitted += heaps

    async def send_descriptors(self, plan: Plan) -> None:
        """Send `plan`'s descriptor heap to every destination, with the next odd heap ids."""
        if self._descriptor_future is not None:
            future, self._descriptor_future = self._descriptor_future, None
            await self._settle(future)
        assert self._stream is not None
        refs = [
            spead2.send.HeapReference(
                plan.descriptor_heap, cnt=self._next_odd_cnt(), substream_index=substream
            )
            for substream in range(self.format.n_substreams)
        ]
        self._descriptor_future = self._stream.async_send_heaps(
            spead2.send.HeapReferenceList(refs), spead2.send.GroupMode.SERIAL
        )

    async def send_end(self) -> None:
        """Send an end-of-stream heap to every destination and wait for it."""
        if self._stream is None:
            return
        first = 2 * self._odd_submitted + 1
        self._odd_submitted += self.format.n_substreams
        heaps = end_heaps(self.format.n_substreams, first)
        await self._settle(self._stream.async_send_heaps(heaps, spead2.send.GroupMode.SERIAL))

    def _next_odd_cnt(self) -> int:
        self._odd_submitted += 1
        return 2 * self._odd_submitted - 1

    # ------------------------------------------------------------- accounting

    def start_capture(self) -> None:
        self._capture += 1
        self.capture_heaps = 0
        self.meter.reset()
        self.meter.record(self.bytes)

    async def retire(self) -> None:
        """Wait for the oldest batch in flight (its callback has counted it)."""
        batch = self._inflight[0]
        await asyncio.wait([batch.future])
        self._inflight.popleft()

    def _account(self, batch: _InFlight) -> None:
        """Count a batch spead2 has finished with: sent, or a failed send."""
        if batch.future.cancelled():
            return
        exc = batch.future.exception()
        if exc is not None:
            self.send_errors += 1
            self._log_send_error(exc)
            return
        self.heaps += batch.heaps
        if batch.capture == self._capture:
            self.capture_heaps += batch.heaps
        self.bytes += batch.payload_bytes
        self.meter.record(self.bytes)
        if self.clock is not None:
            self.time_error = time.time() - self.clock.time_of(batch.end_timestamp)

    async def drain(self) -> None:
        """Wait for everything in flight (a bounded wait: the engine keeps little queued)."""
        while self._inflight:
            await self.retire()
        if self._descriptor_future is not None:
            future, self._descriptor_future = self._descriptor_future, None
            await self._settle(future)

    async def unused(self, plan: Plan) -> None:
        """Wait until no batch in flight sends from `plan`'s heaps (so its memory may change)."""
        futures = [batch.future for batch in self._inflight if batch.plan is plan]
        if futures:
            await asyncio.wait(futures)

    def forget(self) -> None:
        """Drop the books of a capture that failed (spead2 keeps what it holds alive)."""
        self._inflight.clear()
        self._descriptor_future = None

    async def _settle(self, future: asyncio.Future[int]) -> bool:
        """Wait for a send; count and log a failure. Returns whether it succeeded."""
        try:
            await future
        except (RuntimeError, OSError) as exc:
            self.send_errors += 1
            self._log_send_error(exc)
            return False
        return True

    def _log_send_error(self, exc: BaseException) -> None:
        """Log send failures at most once per second, with a count of those not logged."""
        self._errors_since_log += 1
        now = time.monotonic()
        if now - self._last_error_log >= 1.0:
            logger.warning(
                "send failed (%d failed batch sends since last report, %d in all): %s",
                self._errors_since_log,
                self.send_errors,
                exc,
            )
            self._last_error_log = now
            self._errors_since_log = 0
