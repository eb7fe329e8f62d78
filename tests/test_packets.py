"""Packet sizing: heaps split into equal packets (for GSO), and which spead2 build runs."""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter

import numpy as np
import pytest
import spead2.send

from dsim import layout
from dsim.engine import Engine
from dsim.transport import Endpoint, TransportConfig, spead2_uses_gso
from dsim.verify import Verifier, VerifyConfig

from .helpers import udp_socket


def data_heap(heap_size: int, repeat_pointers: bool) -> spead2.send.Heap:
    ig = layout.make_item_group(heap_size)
    ig["timestamp"].value = np.zeros((), layout.TIMESTAMP_DTYPE)
    ig["adc_samples"].value = np.zeros(heap_size, layout.SAMPLE_DTYPE)
    heap = ig.get_heap(descriptors="none", data="all")
    heap.repeat_pointers = repeat_pointers
    return heap


def splits_evenly(heap: spead2.send.Heap, packet_size: int) -> bool:
    sizes = layout.packet_sizes(heap, packet_size)
    return min(sizes) == max(sizes)


@pytest.mark.parametrize("heap_size", [2048, 8192, 16384, 65536, 1 << 20, 10000, 24576])
@pytest.mark.parametrize("max_size", [1472, 8972, 9000])
def test_auto_packet_size_is_the_largest_even_split(heap_size: int, max_size: int) -> None:
    size = layout.auto_packet_size(heap_size, max_size)
    heap = data_heap(heap_size, True)
    assert size is not None and size <= max_size
    assert splits_evenly(heap, size)
    count = len(layout.packet_sizes(heap, size))
    if count > 1:
        # No larger setting splits the heap evenly into fewer (larger) packets.
        for p in range(size + 1, max_size + 1):
            assert not splits_evenly(heap, p) or len(layout.packet_sizes(heap, p)) == count


def test_known_sizes() -> None:
    assert layout.auto_packet_size(16384, 8972) == 8248  # 2 x (8192 + 56)
    assert layout.auto_packet_size(1 << 20, 8972) == 8248  # 128 packets
    assert layout.auto_packet_size(8192, 8972) == 8972  # one packet per heap: any size will do
    assert layout.auto_packet_size(12345, 8972) is None  # odd: no even split
    # Without repeated pointers the first packet is 16 bytes longer: 9000 + 7480 bytes.
    assert layout.packet_sizes(data_heap(16384, False), 9000) == [9000, 7480]


def test_odd_heap_sizes_fall_back_to_the_maximum() -> None:
    engine = Engine(TransportConfig(max_packet_size=8972), heap_size=12345)
    assert engine.packet_size == 8972


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


@pytest.mark.parametrize(
    ("heap_size", "expected"),
    [
        (8192, (8972, True)),  # one packet per heap anyway
        (16384, (8248, True)),  # 2 x 8248 rather than 9000 + 7480
        (65536, (8248, True)),  # 8 packets either way
        (1 << 20, (8972, False)),  # 128 equal packets would be more than 118
        (12345, (8972, False)),  # no equal split
    ],
)
def test_automatic_choice_with_gso(heap_size: int, expected: tuple[int, bool]) -> None:
    assert layout.TutorialFormat(1).packet_size(heap_size, 8972, None, equal=True) == expected


def test_automatic_choice_without_gso_is_the_maximum() -> None:
    # Without GSO equal packets gain nothing (measured: 16 KiB 0.85x), so: fewest packets.
    assert layout.TutorialFormat(1).packet_size(16384, 8972, None, equal=False) == (8972, False)
    assert layout.TutorialFormat(1).packet_size(16384, 8972, 9000, equal=True) == (9000, False)


async def test_the_wire_carries_the_chosen_packets() -> None:
    sock = udp_socket()
    engine = Engine(
        TransportConfig(destinations=[Endpoint("127.0.0.1", sock.getsockname()[1])], rate=50e6),
        heap_size=16384,
    )
    gso = spead2_uses_gso()
    try:
        assert engine.packet_size == (8248 if gso else 8972)
        engine.start(200)
        sizes = await receive_packet_sizes(sock)
        await engine.wait_capture()
    finally:
        packet_size = engine.packet_size
        await engine.close()
        sock.close()
    # 200 data heaps' packets as spead2 splits them; descriptors and end heaps differ.
    heap = layout.TutorialFormat(1).sample_heap(16384, repeat_pointers=gso)
    per_heap = Counter(layout.packet_sizes(heap, packet_size))
    assert (set(per_heap) == {8248}) if gso else (len(per_heap) == 2)
    expected = {size: 200 * count for size, count in per_heap.items()}
    for size, count in expected.items():
        assert count - 1 <= sizes[size] <= count
    assert sum(sizes.values()) - sum(expected.values()) <= 4


async def test_a_forced_packet_size_is_used_as_given() -> None:
    sock = udp_socket()
    engine = Engine(
        TransportConfig(
            destinations=[Endpoint("127.0.0.1", sock.getsockname()[1])], rate=50e6,
            packet_size=9000,
        ),
        heap_size=16384,
    )
    try:
        assert engine.packet_size == 9000
        engine.start(100)
        sizes = await receive_packet_sizes(sock)
    finally:
        await engine.close()
        sock.close()
    assert sizes[9000] >= 99 and sizes[7480] >= 99


async def test_auto_sized_streams_verify_clean_across_resizes() -> None:
    verifier = Verifier(VerifyConfig(port=0, idle_timeout=10))
    task = asyncio.create_task(verifier.run())
    engine = Engine(
        TransportConfig(destinations=[Endpoint("127.0.0.1", verifier.port)], rate=100e6),
        heap_size=65536,
    )
    try:
        engine.start()
        await asyncio.sleep(0.2)
        await engine.set_heap_size(24576)
        assert engine.packet_size == (8248 if spead2_uses_gso() else 8972)  # 3 x (8192 + 56)
        await asyncio.sleep(0.2)
        sent = await engine.stop()
        report = await task
    finally:
        await engine.close()
    assert report.clean, report
    assert report.heaps == sent
    assert [s.heap_size for s in report.segments] == [65536, 24576]


def test_gso_probe_matches_the_build() -> None:
    expected = os.environ.get("DSIM_EXPECT_GSO")
    uses = spead2_uses_gso()
    assert isinstance(uses, bool)
    if expected is not None:
        assert uses == (expected == "1"), "scripts/dev.py --gso must give a GSO build"
