"""Packets on the wire: the sizes the engine picks, and which spead2 build runs."""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter
from collections.abc import Callable

from dsim import layout
from dsim.address import Endpoint
from dsim.engine import Engine
from dsim.transport import TransportConfig, spead2_uses_gso
from dsim.verify import Verifier, VerifyConfig

from .conftest import udp_socket

Factory = Callable[..., Engine]


async def receive_packet_sizes(sock: socket.socket, idle: float = 1.0) -> Counter[int]:
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    sizes: Counter[int] = Counter()
    while True:
        try:
            async with asyncio.timeout(idle):
                data = await loop.sock_recv(sock, 65536)
        except TimeoutError:
            return sizes
        sizes[len(data)] += 1


def test_gso_probe_matches_the_build() -> None:
    expected = os.environ.get("DSIM_EXPECT_GSO")
    uses = spead2_uses_gso()
    assert isinstance(uses, bool)
    if expected is not None:
        assert uses == (expected == "1"), "scripts/dev.py --gso must give a GSO build"


async def test_the_wire_carries_the_chosen_packets(engines: Factory) -> None:
    sock = udp_socket()
    port = sock.getsockname()[1]
    engine = engines(TransportConfig(destinations=[Endpoint("127.0.0.1", port)], rate=50e6), 16384)
    gso = spead2_uses_gso()
    assert engine.packet_size == (8248 if gso else 8972)
    engine.start(200)
    sizes = await receive_packet_sizes(sock)
    await engine.wait_capture()
    sock.close()
    # 200 data heaps' packets as spead2 splits them; descriptors and end heaps differ.
    heap = layout.TutorialFormat(1).sample_heap(16384, repeat_pointers=gso)
    per_heap = Counter(layout.packet_sizes(heap, engine.packet_size))
    assert (set(per_heap) == {8248}) if gso else (len(per_heap) == 2)
    for size, count in per_heap.items():
        assert sizes[size] == 200 * count
    assert sum(sizes.values()) - 200 * sum(per_heap.values()) == 2  # descriptors, end


async def test_a_forced_packet_size_is_used_as_given(engines: Factory) -> None:
    sock = udp_socket()
    port = sock.getsockname()[1]
    engine = engines(
        TransportConfig(destinations=[Endpoint("127.0.0.1", port)], rate=50e6, packet_size=9000),
        16384,
    )
    assert engine.packet_size == 9000
    engine.start(100)
    sizes = await receive_packet_sizes(sock)
    sock.close()
    assert sizes[9000] == 100 and sizes[7480] == 100


async def test_auto_sized_streams_verify_clean_across_resizes(engines: Factory) -> None:
    verifier = Verifier(VerifyConfig(port=0, idle_timeout=10))
    task = asyncio.create_task(verifier.run())
    engine = engines(
        TransportConfig(destinations=[Endpoint("127.0.0.1", verifier.port)], rate=100e6), 65536
    )
    engine.start()
    await asyncio.sleep(0.2)
    await engine.set_heap_size(24576)
    assert engine.packet_size == (8248 if spead2_uses_gso() else 8972)  # 3 x (8192 + 56)
    await asyncio.sleep(0.2)
    sent = await engine.stop()
    report = await task
    assert report.clean, report
    assert report.heaps == sent
    assert [s.heap_size for s in report.segments] == [65536, 24576]
