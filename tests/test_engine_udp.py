"""The engine over real UDP on 127.0.0.1, received by a real spead2 stream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

from dsim.engine import Engine
from dsim.transport import TransportConfig

from .conftest import TEST_RATE, Sink, udp_socket
from .support import check_cnts, check_contiguous, check_counter

Factory = Callable[..., Engine]


async def test_captures_resizes_and_stops_arrive_complete(engines: Factory, sink: Sink) -> None:
    engine = engines(TransportConfig(destinations=[sink.endpoint], rate=TEST_RATE), 4096)
    engine.start(1000)
    assert await engine.wait_capture() == 1000
    engine.start()
    await asyncio.sleep(0.1)
    await engine.set_heap_size(2000)
    await asyncio.sleep(0.1)
    sent = await engine.stop()
    received = await sink.receiver.collect(ends=2)
    assert received.ends == 2 and len(received.heaps) == 1000 + sent
    assert received.incomplete == 0
    check_contiguous(received.heaps, 0)
    check_counter(received.heaps)
    check_cnts(received.heaps)
    assert engine.statistics().heaps == 1000 + sent


async def test_several_destinations_take_turns(
    engines: Factory, sinks: Callable[..., Sink]
) -> None:
    pair = [sinks(), sinks()]
    engine = engines(TransportConfig(destinations=[s.endpoint for s in pair], rate=TEST_RATE), 4096)
    engine.start(301)
    await engine.wait_capture()
    got = [await s.receiver.collect() for s in pair]
    assert [g.ends for g in got] == [1, 1]
    assert [len(g.heaps) for g in got] == [151, 150]
    assert all(g.descriptor_heaps == 1 for g in got)  # each destination is described
    merged = sorted(got[0].heaps + got[1].heaps, key=lambda h: h.timestamp)
    check_contiguous(merged, 0)
    check_counter(merged)
    check_cnts(merged)
    assert [h.timestamp % (2 * 4096) for h in got[1].heaps] == [4096] * 150


async def test_tiny_tutorial_heaps_travel_as_immediates(engines: Factory, sink: Sink) -> None:
    engine = engines(TransportConfig(destinations=[sink.endpoint], rate=TEST_RATE), 4)
    engine.start(600)
    await engine.wait_capture()
    received = await sink.receiver.collect()
    assert len(received.heaps) == 600
    check_contiguous(received.heaps, 0)
    check_counter(received.heaps)


EXIT_SCRIPT = """
import asyncio
from dsim.engine import Engine
from dsim.address import Endpoint
from dsim.transport import TransportConfig

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
