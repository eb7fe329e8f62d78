"""The engine over real UDP on 127.0.0.1, received by a real spead2 stream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from dsim.engine import Engine
from dsim.transport import Endpoint, TransportConfig, TransportKind

from .helpers import Receiver, check_contiguous, udp_socket

#: Paced so that a Python receiver on the same two cores keeps up.
RATE = 100e6


@pytest.fixture
async def link() -> AsyncIterator[tuple[Engine, Receiver]]:
    sock = udp_socket()
    port = sock.getsockname()[1]
    receiver = Receiver(sock)
    config = TransportConfig(
        kind=TransportKind.UDP, destinations=[Endpoint("127.0.0.1", port)], rate=RATE
    )
    engine = Engine(config, heap_size=4096)
    yield engine, receiver
    await engine.close()
    receiver.close()
    sock.close()


async def test_bounded_capture_arrives_complete(link: tuple[Engine, Receiver]) -> None:
    engine, receiver = link
    n = 1000  # not a multiple of the 128-heap batch
    assert engine.start(n) == 0
    assert await engine.wait_capture() == n
    received = await receiver.collect()
    assert received.ends == 1
    assert len(received.heaps) == n
    check_contiguous(received.heaps)
    assert received.heaps[0].descriptors
    assert not any(h.descriptors for h in received.heaps[1:])
    # Descriptors decoded into the receiver's item group with the right shape and type.
    ig = receiver.item_group
    assert ig["adc_samples"].shape == (4096,)
    assert ig["adc_samples"].dtype == "int8"
    assert ig["timestamp"].id == 0x1600 and ig["adc_samples"].id == 0x3300
    stats = engine.statistics()
    assert (stats.heaps, stats.bytes, stats.send_errors) == (n, n * 4096, 0)
    assert not stats.capturing


async def test_two_captures_continue_the_counters(link: tuple[Engine, Receiver]) -> None:
    engine, receiver = link
    assert engine.start(300) == 0
    await engine.wait_capture()
    assert engine.start(200) == 300 * 4096
    await engine.wait_capture()
    received = await receiver.collect(ends=2)
    assert received.ends == 2
    assert len(received.heaps) == 500
    check_contiguous(received.heaps)
    # Each capture starts with descriptors.
    assert [i for i, h in enumerate(received.heaps) if h.descriptors] == [0, 300]


async def test_heap_size_change_while_capturing_is_gap_free(
    link: tuple[Engine, Receiver],
) -> None:
    engine, receiver = link
    engine.start()
    await asyncio.sleep(0.1)
    first_new = await engine.set_heap_size(10000)
    assert engine.heap_size == 10000
    await asyncio.sleep(0.1)
    sent = await engine.stop()
    received = await receiver.collect()
    assert received.ends == 1
    assert len(received.heaps) == sent == engine.statistics().heaps
    check_contiguous(received.heaps)
    sizes = [h.samples for h in received.heaps]
    change = sizes.index(10000)
    assert set(sizes[:change]) == {4096} and set(sizes[change:]) == {10000}
    assert received.heaps[change].timestamp == first_new
    assert received.heaps[change].descriptors
    assert receiver.item_group["adc_samples"].shape == (10000,)


async def test_stop_mid_stream_counts_what_arrived(link: tuple[Engine, Receiver]) -> None:
    engine, receiver = link
    engine.start()
    await asyncio.sleep(0.2)
    sent = await engine.stop()
    assert not engine.capturing
    received = await receiver.collect()
    assert received.ends == 1
    assert sent > 0
    assert len(received.heaps) == sent == engine.statistics().heaps
    check_contiguous(received.heaps)
    assert engine.next_timestamp == sent * 4096
    # A stop while stopped is a no-op: no second end-of-stream heap.
    assert await engine.stop() == 0
    assert (await receiver.collect(idle_timeout=0.3)).ends == 1


async def test_several_destinations_take_turns() -> None:
    socks = [udp_socket(), udp_socket()]
    receivers = [Receiver(s) for s in socks]
    config = TransportConfig(
        destinations=[Endpoint("127.0.0.1", s.getsockname()[1]) for s in socks], rate=RATE
    )
    engine = Engine(config, heap_size=4096)
    try:
        engine.start(301)
        await engine.wait_capture()
        got = [await r.collect() for r in receivers]
    finally:
        await engine.close()
        for r, s in zip(receivers, socks, strict=True):
            r.close()
            s.close()
    assert [g.ends for g in got] == [1, 1]
    assert [len(g.heaps) for g in got] == [151, 150]
    # Every destination gets descriptors with its first heap.
    assert all(g.heaps[0].descriptors for g in got)
    merged = sorted(got[0].heaps + got[1].heaps, key=lambda h: h.timestamp)
    check_contiguous(merged)
    assert [h.timestamp % (2 * 4096) for h in got[1].heaps] == [4096] * 150


EXIT_SCRIPT = """
import asyncio
from dsim.engine import Engine
from dsim.transport import Endpoint, TransportConfig

async def main():
    global engine  # still referenced at exit, never closed
    engine = Engine(TransportConfig(destinations=[Endpoint("127.0.0.1", {port})]))
    engine.start(100000)
    await engine.wait_capture()

asyncio.run(main())
print("done")
"""


def test_process_with_an_unclosed_engine_exits() -> None:
    # A spead2 send stream destroyed in the interpreter's final garbage collection,
    # after spead2's atexit handler stopped its threads, can spin forever (spead2
    # issue #251). dsim frees its streams first; this must always exit.
    sock = udp_socket(1 << 20)
    script = EXIT_SCRIPT.format(port=sock.getsockname()[1])
    try:
        for _ in range(3):
            result = subprocess.run(
                [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout == "done\n"
    finally:
        sock.close()
