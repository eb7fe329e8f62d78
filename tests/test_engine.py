"""The engine over spead2's in-process transport: batching, captures, changes (fast, lossless)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import spead2

from dsim import layout
from dsim.engine import CaptureError, Engine
from dsim.errors import ConfigError
from dsim.ring import MAX_RING_HEAPS
from dsim.transport import TransportError

from .conftest import inproc_transport
from .support import Received, Receiver, check_cnts, check_contiguous, check_counter

Factory = Callable[..., Engine]


async def drain(engine: Engine, sample_bits: int = 8) -> list[Received]:
    """Everything `engine` put in each of its queues so far (the queues are then closed)."""
    out = []
    for queue in engine.transport.inproc_queues:
        queue.stop()
        receiver = Receiver(queue, sample_bits)
        out.append(await receiver.collect(ends=1_000_000, idle_timeout=5.0))
        receiver.close()
    return out


@pytest.mark.parametrize(
    ("heap_size", "n"),
    [
        (8192, 64 * 5 + 17),  # not a multiple of the batch size
        (8192, 5),  # smaller than one batch
        (8192, 64),  # exactly one batch
        (8192, 1000),  # around the counter's 256-heap ring several times
        (1024 * 1024, 7),  # heap larger than a batch: one heap per batch
        (1, 20000),  # tiny heaps: capped batches
    ],
)
async def test_bounded_capture_sends_exactly_n_with_the_counter(
    engines: Factory, heap_size: int, n: int
) -> None:
    engine = engines(inproc_transport(), heap_size)
    assert engine.start(n) == 0
    assert await engine.wait_capture() == n
    stats = engine.statistics()
    assert (stats.heaps, stats.bytes, stats.next_timestamp) == (n, n * heap_size, n * heap_size)
    (received,) = await drain(engine)
    assert received.ends == 1 and len(received.heaps) == n
    check_contiguous(received.heaps, 0)
    check_counter(received.heaps)
    check_cnts(received.heaps)
    # Descriptors go first, as a heap of their own with an odd id.
    assert received.descriptor_heaps >= 1 and all(c % 2 for c in received.descriptor_cnts)


async def test_timestamps_and_heap_ids_run_on_across_captures(engines: Factory) -> None:
    engine = engines(inproc_transport(), 4096)
    assert engine.start(100) == 0
    await engine.wait_capture()
    assert engine.start(50) == 100 * 4096
    await engine.wait_capture()
    (received,) = await drain(engine)
    assert received.ends == 2 and len(received.heaps) == 150
    check_contiguous(received.heaps, 0)
    check_counter(received.heaps)
    check_cnts(received.heaps)


async def test_stop_while_batches_in_flight(engines: Factory) -> None:
    engine = engines(inproc_transport(), 8192)
    engine.start()
    await asyncio.sleep(0.05)
    sent = await engine.stop()
    assert sent > 0 and not engine.capturing
    assert await engine.stop() == 0  # idempotent, nothing more sent
    (received,) = await drain(engine)
    assert received.ends == 1 and len(received.heaps) == sent
    check_counter(received.heaps)


async def test_heap_size_change_while_capturing_is_gap_free(engines: Factory) -> None:
    engine = engines(inproc_transport(rate=50e6), 4096)
    engine.start()
    await asyncio.sleep(0.05)
    first = await engine.set_heap_size(6000)
    await asyncio.sleep(0.05)
    await engine.stop()
    (received,) = await drain(engine)
    check_contiguous(received.heaps, 0)
    check_counter(received.heaps)
    check_cnts(received.heaps)
    sizes = [len(h.samples) for h in received.heaps]
    change = sizes.index(6000)
    assert set(sizes[:change]) == {4096} and set(sizes[change:]) == {6000}
    assert received.heaps[change].timestamp == first
    # New descriptors announced the new size before its first heap.
    assert received.descriptor_heaps >= 2


async def test_heap_size_change_while_idle(engines: Factory) -> None:
    engine = engines(inproc_transport(), 4096)
    engine.start(3)
    await engine.wait_capture()
    assert await engine.set_heap_size(1000) == 3 * 4096
    assert engine.heap_size == 1000 and engine.next_timestamp == 3 * 4096
    engine.start(4)
    await engine.wait_capture()
    (received,) = await drain(engine)
    assert [len(h.samples) for h in received.heaps] == [4096] * 3 + [1000] * 4
    check_contiguous(received.heaps, 0)
    check_counter(received.heaps)


async def test_a_start_timestamp_jumps_forward(engines: Factory) -> None:
    engine = engines(inproc_transport(), 4096)
    # The tutorial format's counter() needs no alignment: any later timestamp will do.
    assert engine.start(5, 4096 * 1000 + 7) == 4096 * 1000 + 7
    await engine.wait_capture()
    with pytest.raises(CaptureError, match="has passed"):
        engine.start(5, 0)
    (received,) = await drain(engine)
    assert len(received.heaps) == 5
    check_contiguous(received.heaps, 4096 * 1000 + 7)
    check_counter(received.heaps)


async def test_a_meerkat_start_timestamp_must_be_a_heap_boundary(engines: Factory) -> None:
    engine = engines(inproc_transport(2), wire_format=layout.MeerkatFormat([1, 1]))
    with pytest.raises(CaptureError, match="multiple of 4096 samples"):
        engine.start(5, 4096 * 10 + 1)
    assert engine.start(5, 4096 * 10) == 4096 * 10
    await engine.wait_capture()


async def test_start_twice_fails_and_leaves_capture_running(engines: Factory) -> None:
    engine = engines(inproc_transport(rate=10e6), 8192)
    engine.start()
    with pytest.raises(CaptureError, match="already in progress"):
        engine.start()
    assert engine.capturing
    await engine.stop()


@pytest.mark.parametrize("heaps", [0, -3, True, 2.5])
async def test_start_rejects_bad_heap_counts(engines: Factory, heaps: object) -> None:
    engine = engines(inproc_transport(), 8192)
    with pytest.raises(CaptureError, match="positive integer"):
        engine.start(heaps)  # type: ignore[arg-type]
    assert not engine.capturing


@pytest.mark.parametrize("size", [0, -1, layout.MAX_HEAP_SIZE + 1])
async def test_bad_heap_size_is_rejected_and_changes_nothing(engines: Factory, size: int) -> None:
    engine = engines(inproc_transport(), 8192)
    with pytest.raises(ConfigError):
        await engine.set_heap_size(size)
    assert engine.heap_size == 8192


async def test_several_destinations_take_turns(engines: Factory) -> None:
    engine = engines(inproc_transport(3), 1024)
    engine.start(100)
    await engine.wait_capture()
    per_queue = await drain(engine)
    # Heap t goes to destination (t / heap samples) mod 3; each gets its end-of-stream heap.
    for k, received in enumerate(per_queue):
        assert received.ends == 1
        assert [h.timestamp // 1024 % 3 for h in received.heaps] == [k] * len(received.heaps)
        check_counter(received.heaps)
    assert sum(len(r.heaps) for r in per_queue) == 100


async def test_meerkat_fan_out_over_groups(engines: Factory) -> None:
    """Each polarisation spread over its own destinations: heap t to group (t/H) mod N."""
    fmt = layout.MeerkatFormat([4, 2], 10, digitiser_id=6)
    engine = engines(inproc_transport(6), wire_format=fmt)
    engine.start(40)
    await engine.wait_capture()
    per_queue = await drain(engine, 10)
    for queue, received in enumerate(per_queue):
        pol = 0 if queue < 4 else 1
        group = queue if queue < 4 else queue - 4
        heaps = received.heaps
        assert len(heaps) == (10 if pol == 0 else 20)
        assert {h.digitiser_id for h in heaps} == {6 + pol}
        assert all(h.timestamp // 4096 % fmt.groups[pol] == group for h in heaps)
        assert received.ends == 0  # meerkat: no end-of-stream heaps by default
        check_counter(heaps, 10)


async def test_meerkat_end_of_stream_on_request(engines: Factory) -> None:
    engine = engines(
        inproc_transport(2), wire_format=layout.MeerkatFormat([1, 1]), end_of_stream=True
    )
    engine.start(3)
    await engine.wait_capture()
    assert [r.ends for r in await drain(engine, 10)] == [1, 1]


async def test_too_many_prebuilt_heaps_is_a_clear_failure() -> None:
    # Tiny heaps, with more in flight than the ring may hold.
    with pytest.raises(ConfigError, match=f"more than {MAX_RING_HEAPS}"):
        Engine(inproc_transport(), 1, batches=100)


async def test_a_failed_capture_is_not_permanent(
    engines: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engines(inproc_transport(), 8192)
    stream = engine._sender.stream
    assert stream is not None
    calls = 0
    real = stream.async_send_heaps

    def fail_once(heaps: spead2.send.HeapReferenceList, mode: spead2.send.GroupMode) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first data batch, after the descriptors
            raise ValueError("injected failure")
        return real(heaps, mode)

    monkeypatch.setattr(stream, "async_send_heaps", fail_once)
    engine.start(10)
    with pytest.raises(ValueError, match="injected"):
        await engine.wait_capture()
    assert engine.failure is not None and not engine.capturing
    engine.start(10)
    assert await engine.wait_capture() == 10
    assert engine.failure is None


async def test_a_scheduled_switch_that_fails_is_reported_and_the_stream_goes_on(
    engines: Factory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The ?signals reply went out long before the switch: its failure is logged and
    shown as the engine's failure (device-status), and the old signal streams on."""
    engine = engines(inproc_transport(rate=8192 * 1000), 8192)  # 1000 heaps/s
    engine.start(400)

    def fail(plan: object) -> None:
        raise TransportError("injected failure")

    monkeypatch.setattr(engine._sender, "open_for", fail)
    switch = 200 * 8192
    assert await engine.set_signals("cw(0.1, 1e5);", 1 << 16, switch) == switch
    assert await engine.wait_capture() == 400
    assert isinstance(engine.failure, TransportError)
    assert engine.signal.canonical == "counter();"
    assert "scheduled for timestamp 1638400 failed" in caplog.text
    (received,) = await drain(engine)
    assert len(received.heaps) == 400
    check_counter(received.heaps)


async def test_changes_during_a_paced_capture_keep_its_pace(engines: Factory) -> None:
    """A change wakes the paced loop to apply it; it must not release the next batch
    early (it did: each ?heap-size sent one more heap at once, whatever the rate)."""
    engine = engines(inproc_transport(rate=9000.0), 8192)  # about one heap a second
    engine.start()
    await asyncio.sleep(0.2)  # the first heap is out; the next is due in a second
    for size in (4096, 8192, 4096, 8192):
        await engine.set_heap_size(size)
    await engine.set_signals("cw(0.1, 1e6);", 1 << 16)
    sent = await engine.stop()
    assert sent <= 2, f"{sent} heaps in well under two seconds at one heap a second"


async def test_steady_state_forgets_a_replaced_switch(engines: Factory) -> None:
    """A scheduled switch replaced by an immediate one no longer holds the sensor far
    ahead: steady state is where the replacement took effect."""
    engine = engines(inproc_transport(rate=8192 * 200), 8192)  # 200 heaps/s
    engine.start()
    far = 10_000 * 8192
    assert await engine.set_signals("cw(0.1, 1e6);", 1 << 16, far) == far
    assert engine.steady_state_timestamp == far
    now = await engine.set_signals("cw(0.2, 1e6);", 1 << 16)
    assert now < far and engine.steady_state_timestamp == now
    await engine.stop()


async def test_steady_state_after_a_capture_stopped_before_its_start(engines: Factory) -> None:
    import time

    from dsim.clock import Clock

    clock = Clock(1e6, time.time(), 8192)
    engine = engines(inproc_transport(), 8192, clock=clock)
    far = 10**14  # three years on
    assert engine.start(None, far) == far
    await engine.stop()
    first = await engine.set_signals("cw(0.1, 1e5);", 1 << 16)
    assert first < far and engine.steady_state_timestamp == first


async def test_heaps_are_counted_when_sent_at_any_rate(engines: Factory) -> None:
    """At a heap a second the batches in flight take minutes to fill up: the counters
    (sensors, metrics) must not wait for that."""
    engine = engines(inproc_transport(rate=9000.0), 8192)
    engine.start()
    await asyncio.sleep(0.3)
    stats = engine.statistics()
    assert (stats.heaps, stats.bytes, stats.capture_heaps) == (1, 8192, 1)
    assert await engine.stop() == 1


async def test_time_error_is_taken_when_a_batch_is_sent(engines: Factory) -> None:
    """dsim_time_error_s: wall time as spead2 finishes a batch, less its last sample's
    time. Heaps of 82 ms released just before their first sample is due are sent some
    80 ms before their last; measured late (as the in-flight queue fills) it read
    hundreds of ms after."""
    import time

    from dsim.clock import Clock

    clock = Clock(1e5, time.time(), 8192)
    engine = engines(inproc_transport(), 8192, clock=clock)
    engine.start()
    await asyncio.sleep(0.6)
    assert engine.statistics().heaps >= 3
    assert -0.09 < engine.time_error < -0.04
    await engine.stop()


async def test_timestamps_beyond_2_to_the_62_are_refused(engines: Factory) -> None:
    """Numpy's and receivers' signed 64-bit sample counts overflow at 2**63; dsim stops
    85 years (at L-band) short of it, for captures and switches alike."""
    engine = engines(inproc_transport(), 8192)
    too_far = (1 << 62) + 8192
    with pytest.raises(CaptureError, match=r"too large \(at most 2\*\*62\)"):
        engine.start(1, too_far)
    with pytest.raises(ConfigError, match=r"too large \(at most 2\*\*62\)"):
        await engine.set_signals("cw(0.1, 1e6);", 1 << 16, too_far)
    assert engine.start(1, 1 << 62) == 1 << 62  # the limit itself is fine
    assert await engine.wait_capture() == 1


async def test_a_change_while_waiting_for_the_start_then_a_stop(engines: Factory) -> None:
    """A change while a real-time capture waits for its (far) start is put in effect;
    a stop then leaves the stream where it was, so the next capture starts now."""
    import time

    from dsim.clock import Clock

    clock = Clock(1e5, time.time(), 8192)
    engine = engines(inproc_transport(), 8192, clock=clock)
    far = (1 << 16) * 10**7  # a multiple of the heap and of the window period
    assert engine.start(None, far) == far
    first = await engine.set_signals("cw(0.1, 1e4);", 1 << 16)
    assert first == far
    assert await engine.stop() == 0
    assert engine.next_timestamp < far and engine.steady_state_timestamp < far
    assert engine.signal.canonical.startswith("cw(")
    start = engine.start(2)
    assert start < far
    assert await engine.wait_capture() == 2


async def test_a_render_out_of_memory_is_one_line(
    engines: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engines(inproc_transport(), 8192)

    def no_memory(*args: object) -> None:
        raise MemoryError("simulated")

    monkeypatch.setattr(engine, "_render", no_memory)
    with pytest.raises(ConfigError, match="^not enough memory to render a window of 65536"):
        await engine.set_signals("cw(0.1, 1e6);", 1 << 16)
    monkeypatch.undo()
    assert await engine.set_signals("cw(0.1, 1e6);", 1 << 16) == 0


async def test_a_scheduled_window_switch_must_be_on_a_heap_multiple(engines: Factory) -> None:
    """After a heap-size change the counter stream may sit between multiples of the new
    size; a window switch there is refused rather than moved later than replied."""
    engine = engines(inproc_transport(rate=200_000.0), 128)
    engine.start()
    await asyncio.sleep(0.05)
    await engine.set_heap_size(4096)
    t = engine.next_timestamp + 20 * 4096
    if t % 4096 == 0:
        t += 128 * 4096 + 2048  # still a heap boundary of the stream? make it off-multiple
    with pytest.raises(
        ConfigError, match="not a multiple of the heap's 4096 samples|heap boundary"
    ):
        await engine.set_signals("cw(0.1, 1e6);", 1 << 16, t)
    aligned = -(-engine.next_timestamp // 4096) * 4096 + 20 * 4096
    assert await engine.set_signals("cw(0.1, 1e6);", 1 << 16, aligned) == aligned
    await engine.stop()
