"""Batching edge cases, over spead2's in-process transport (fast, lossless)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import spead2

from dsim.engine import CaptureError, Engine, steps_for
from dsim.errors import ConfigError
from dsim.transport import TransportConfig, TransportKind

from .helpers import Received, Receiver, check_contiguous

Factory = Callable[..., Engine]


@pytest.fixture
async def make_engine() -> AsyncIterator[Callable[..., Engine]]:
    """Engines on in-process queues; `collect()` stops the queues and reads them back."""
    engines: list[tuple[Engine, spead2.InprocQueue]] = []

    def factory(heap_size: int, rate: float = 0.0) -> Engine:
        queue = spead2.InprocQueue()
        config = TransportConfig(kind=TransportKind.INPROC, inproc_queues=[queue], rate=rate)
        engine = Engine(config, heap_size)
        engines.append((engine, queue))
        return engine

    yield factory
    for engine, _ in engines:
        await engine.close()


async def drain(engine: Engine) -> Received:
    """Everything `engine` put in its queue so far (the queue is then closed)."""
    queue = engine.transport.inproc_queues[0]
    queue.stop()
    receiver = Receiver(queue)
    received = await receiver.collect(ends=1_000_000, idle_timeout=5.0)
    receiver.close()
    return received


def test_batch_sizes() -> None:
    assert steps_for(8192, 512 * 1024, 1) == 64
    assert steps_for(4 * 1024 * 1024, 512 * 1024, 1) == 1  # heap larger than a batch
    assert steps_for(8192, 512 * 1024, 3) == 66  # multiple of the destinations
    assert steps_for(1, 512 * 1024, 1) == 8192  # capped


@pytest.mark.parametrize(
    ("heap_size", "n"),
    [
        (8192, 64 * 5 + 17),  # not a multiple of the batch size
        (8192, 5),  # smaller than one batch
        (8192, 64),  # exactly one batch
        (1024 * 1024, 7),  # heap larger than a batch: one heap per batch
        (1000, 1),  # a single heap
    ],
)
async def test_bounded_capture_sends_exactly_n(
    make_engine: Factory, heap_size: int, n: int
) -> None:
    engine = make_engine(heap_size)
    engine.start(n)
    assert await engine.wait_capture() == n
    received = await drain(engine)
    assert received.ends == 1
    assert len(received.heaps) == n
    check_contiguous(received.heaps)
    assert received.heaps[0].descriptors
    assert engine.statistics().heaps == n
    assert engine.statistics().bytes == n * heap_size


async def test_stop_while_batches_in_flight(make_engine: Factory) -> None:
    # Paced at 20 MB/s, each 512 KiB batch takes 26 ms: both are in flight at the stop.
    engine = make_engine(8192, rate=20e6)
    engine.start()
    await asyncio.sleep(0.05)
    sent = await engine.stop()
    assert not engine.capturing
    received = await drain(engine)
    assert received.ends == 1
    assert sent == len(received.heaps) == engine.statistics().heaps
    assert sent > 0
    check_contiguous(received.heaps)
    # Nothing sent after the stop reply: the next timestamp follows the last heap.
    assert engine.next_timestamp == sent * 8192


async def test_counters_run_on_across_captures_and_resizes(make_engine: Factory) -> None:
    engine = make_engine(1000)
    engine.start(10)
    await engine.wait_capture()
    assert await engine.set_heap_size(3000) == 10 * 1000
    assert engine.start(10) == 10 * 1000
    await engine.wait_capture()
    received = await drain(engine)
    assert received.ends == 2
    check_contiguous(received.heaps)
    assert [h.samples for h in received.heaps] == [1000] * 10 + [3000] * 10


async def test_resize_while_running_resumes_timestamps(make_engine: Factory) -> None:
    engine = make_engine(8192)
    engine.start(1000)
    first_new = await engine.set_heap_size(5000)
    await engine.wait_capture()
    received = await drain(engine)
    check_contiguous(received.heaps)
    sizes = [h.samples for h in received.heaps]
    change = sizes.index(5000)
    assert change % 64 == 0  # at a batch boundary
    assert received.heaps[change].timestamp == first_new
    assert received.heaps[change].descriptors
    assert len(received.heaps) == 1000


async def test_resize_requested_as_a_capture_ends_still_applies(make_engine: Factory) -> None:
    engine = make_engine(8192)
    engine.start(3)
    resize = asyncio.ensure_future(engine.set_heap_size(4000))
    await engine.wait_capture()
    assert await resize == 3 * 8192
    assert engine.heap_size == 4000


async def test_start_twice_fails_and_leaves_capture_running(make_engine: Factory) -> None:
    engine = make_engine(8192)
    engine.start()
    with pytest.raises(CaptureError, match="already in progress"):
        engine.start()
    assert engine.capturing
    await engine.stop()


@pytest.mark.parametrize("heaps", [0, -3])
async def test_start_rejects_non_positive_heap_counts(make_engine: Factory, heaps: int) -> None:
    engine = make_engine(8192)
    with pytest.raises(CaptureError, match="positive"):
        engine.start(heaps)
    assert not engine.capturing


@pytest.mark.parametrize("size", [0, -1, 64 * 1024 * 1024 + 1])
async def test_bad_heap_size_is_rejected_and_changes_nothing(
    make_engine: Factory, size: int
) -> None:
    engine = make_engine(8192)
    engine.start()
    with pytest.raises(ConfigError, match="heap size"):
        await engine.set_heap_size(size)
    assert engine.capturing and engine.heap_size == 8192
    await engine.stop()
    with pytest.raises(ConfigError, match="heap size"):
        make_engine(size)
