"""The MeerKAT digitiser format and the real-time clock, over real UDP."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import textwrap
import time
from collections.abc import Callable

import numpy as np
import pytest
import spead2
import spead2.recv.asyncio

from dsim import layout, packing
from dsim.address import Endpoint
from dsim.clock import Clock
from dsim.engine import Engine
from dsim.spead import (
    ADC_SAMPLES_ID,
    DIGITISER_ID_ID,
    DIGITISER_STATUS_ID,
    TIMESTAMP_ID,
    status_word,
)
from dsim.transport import TransportConfig

from .conftest import TEST_RATE, Sink, needs_netns, udp_socket
from .support import (
    check_cnts,
    check_contiguous,
    check_counter,
    counter_value,
    run_in_private_netns,
)

HEAP = 5120  # 4096 10-bit samples
SAMPLES = 4096
Factory = Callable[..., Engine]


def meerkat(engines: Factory, sinks: list[Sink], **kwargs: object) -> Engine:
    fmt = layout.MeerkatFormat([1] * len(sinks), 10, digitiser_id=6)
    rate = float(kwargs.pop("rate", TEST_RATE))  # type: ignore[arg-type]
    transport = TransportConfig(destinations=[s.endpoint for s in sinks], rate=rate)
    return engines(transport, HEAP, wire_format=fmt, **kwargs)


async def datagrams(sock: socket.socket, idle: float = 1.0) -> list[bytes]:
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    out = []
    while True:
        try:
            async with asyncio.timeout(idle):
                out.append(await loop.sock_recv(sock, 65536))
        except TimeoutError:
            return out


def items_of(packet: bytes) -> dict[int, int]:
    """Item pointers of a SPEAD-64-48 packet: id -> immediate value or address."""
    count = int.from_bytes(packet[6:8], "big")
    out = {}
    for i in range(count):
        pointer = int.from_bytes(packet[8 + 8 * i : 16 + 8 * i], "big")
        out[(pointer >> 48) & 0x7FFF] = pointer & ((1 << 48) - 1)
    return out


async def test_the_wire_format_two_polarisations_interleaved(engines: Factory) -> None:
    sock = udp_socket()
    port = sock.getsockname()[1]
    fmt = layout.MeerkatFormat([1, 1], 10, digitiser_id=6)
    engine = engines(
        # Both polarisations to this one socket.
        TransportConfig(destinations=[layout_endpoint(port)] * 2, rate=TEST_RATE),
        HEAP,
        wire_format=fmt,
        descriptor_interval=0,
    )
    assert engine.packet_size == 5192
    engine.start(520)  # 520 timestamps, so the counter passes 511 (full scale)
    packets = await datagrams(sock)
    await engine.wait_capture()
    sock.close()
    data = [p for p in packets if ADC_SAMPLES_ID in items_of(p)]
    assert len(data) == 2 * 520
    assert {len(p) for p in data} == {5192}  # every heap exactly one packet
    assert len(packets) == len(data) + 2  # one descriptor heap per polarisation, no stop heaps
    for i, packet in enumerate(data):
        items = items_of(packet)
        assert int.from_bytes(packet[6:8], "big") == 8  # 4 standard + 4 items, all repeated
        assert set(items) >= {TIMESTAMP_ID, DIGITISER_ID_ID, DIGITISER_STATUS_ID, ADC_SAMPLES_ID}
        n, pol = divmod(i, 2)  # the polarisations of a timestamp go out together
        assert items[TIMESTAMP_ID] == n * SAMPLES
        assert items[DIGITISER_ID_ID] == 6 + pol
        samples = packing.unpack(np.frombuffer(packet[-HEAP:], np.uint8), 10)
        assert len(samples) == SAMPLES
        assert (samples == counter_value(n * SAMPLES, SAMPLES, 10)).all()  # bit-exact
        saturated = abs(counter_value(n * SAMPLES, SAMPLES, 10)) >= 511
        assert items[DIGITISER_STATUS_ID] == int(status_word(SAMPLES if saturated else 0))
    # Heaps 511, 512 and 513 hold 511, -512 and -511: at full scale.
    assert sum(1 for i in range(0, len(data), 2) if items_of(data[i])[0x3102]) == 3


def layout_endpoint(port: int) -> Endpoint:
    return Endpoint("127.0.0.1", port)


async def test_descriptors_have_odd_ids_and_spead2_decodes_the_samples(
    engines: Factory, sinks: Callable[..., Sink]
) -> None:
    sock = udp_socket()
    stream = spead2.recv.asyncio.Stream(
        spead2.ThreadPool(), spead2.recv.StreamConfig(stop_on_stop_item=False)
    )
    stream.add_udp_reader(sock)
    fmt = layout.MeerkatFormat([1], 10, digitiser_id=6)
    engine = engines(
        TransportConfig(destinations=[layout_endpoint(sock.getsockname()[1])], rate=TEST_RATE),
        HEAP,
        wire_format=fmt,
        descriptor_interval=0.2,
    )
    ig = spead2.ItemGroup()
    cnts: dict[str, list[int]] = {"data": [], "descriptors": []}
    decoded = None
    engine.start()
    deadline = time.monotonic() + 1.1
    while time.monotonic() < deadline:
        async with asyncio.timeout(5):
            heap = await stream.get()
        if heap.get_items():
            cnts["data"].append(heap.cnt)
            if decoded is None and "raw_data" in ig:
                ig.update(heap)  # spead2's own 10-bit unpacking
                decoded = (int(ig["timestamp"].value), np.array(ig["raw_data"].value))
        else:
            cnts["descriptors"].append(heap.cnt)
            ig.update(heap)
    await engine.stop()
    stream.stop()
    sock.close()
    assert all(c % 2 == 0 for c in cnts["data"]) and all(c % 2 == 1 for c in cnts["descriptors"])
    assert len(cnts["descriptors"]) >= 4  # at the start and every 0.2 s
    assert ig["raw_data"].format == [("i", 10)] and ig["raw_data"].shape == (SAMPLES,)
    assert decoded is not None
    timestamp, samples = decoded
    assert (samples == counter_value(timestamp, SAMPLES, 10)).all()


async def test_a_stock_receiver_gets_two_captures_completely(engines: Factory) -> None:
    """A MeerKAT F-engine receiver stops for good on a stop heap: dsim sends none.

    Two polarisations on two ports, each received by a stock spead2 stream
    (``stop_on_stop_item`` left on, as the F-engine has it); both captures
    arrive whole on both.
    """
    socks = [udp_socket(), udp_socket()]
    streams = []
    for sock in socks:
        stream = spead2.recv.asyncio.Stream(spead2.ThreadPool(), spead2.recv.StreamConfig())
        stream.add_udp_reader(sock)
        streams.append(stream)
    fmt = layout.MeerkatFormat([1, 1], 10, digitiser_id=0)
    engine = engines(
        TransportConfig(
            destinations=[layout_endpoint(s.getsockname()[1]) for s in socks], rate=TEST_RATE
        ),
        HEAP,
        wire_format=fmt,
    )
    engine.start(300)
    await engine.wait_capture()
    await asyncio.sleep(0.2)
    engine.start(200)
    await engine.wait_capture()
    for pol, stream in enumerate(streams):
        timestamps = []
        while True:
            try:
                async with asyncio.timeout(1.0):
                    heap = await stream.get()
            except TimeoutError:
                break
            items = {item.id: item for item in heap.get_items()}
            if TIMESTAMP_ID in items:
                timestamps.append(items[TIMESTAMP_ID].immediate_value)
                assert items[DIGITISER_ID_ID].immediate_value == pol
        assert timestamps == [i * SAMPLES for i in range(500)]
        stream.stop()
    for sock in socks:
        sock.close()


async def test_real_time_stream_follows_the_wall_clock(
    engines: Factory, sinks: Callable[..., Sink]
) -> None:
    rate = 5e6
    sync = time.time() - 100.0
    sink = sinks(10)
    clock = Clock(rate, sync, align_samples=1 << 18)
    engine = meerkat(engines, [sink, sink], clock=clock, descriptor_interval=1, rate=0.0)
    # 2 x 5192 bytes per 4096 samples at 5 MHz.
    assert engine.rate == pytest.approx(rate / SAMPLES * 5192 * 2)
    before = time.time()
    first = engine.start()
    assert first % (1 << 18) == 0
    assert 0 <= clock.time_of(first) - before <= (1 << 18) / rate + 0.01
    await asyncio.sleep(1.5)
    lag = engine.time_lag()
    assert lag is not None and lag < 0.1  # keeping up with the ADC clock
    sent = await engine.stop()
    received = await sink.receiver.collect(heaps=sent)
    assert len(received.heaps) == sent
    for pol in (6, 7):
        heaps = received.of(pol)
        check_contiguous(heaps, first)
        check_counter(heaps, 10)
    check_cnts(received.heaps)
    seconds = sent / 2 * SAMPLES / rate
    assert 0.8 < seconds < 1.6  # paced at the ADC rate (free-running would be ~100x more)


async def test_falling_behind_the_clock_is_logged(
    engines: Factory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    # An ADC rate no machine keeps up with: the lag grows at once.
    clock = Clock(1e13, time.time() - 1.0, align_samples=1 << 20)
    engine = meerkat(engines, [sink], clock=clock, rate=0.0)
    with caplog.at_level(logging.WARNING, "dsim.engine"):
        engine.start()
        await asyncio.sleep(0.5)
        await engine.stop()
    warnings = [r.message for r in caplog.records if "falling behind the ADC clock" in r.message]
    assert len(warnings) == 1  # rate-limited: once per 10 s


async def test_heap_size_rules_of_the_format(engines: Factory, sink: Sink) -> None:
    engine = meerkat(engines, [sink])
    with pytest.raises(Exception, match="whole groups of 10-bit samples"):
        await engine.set_heap_size(5121)
    with pytest.raises(Exception, match="one packet per heap"):
        await engine.set_heap_size(10240)
    assert await engine.set_heap_size(2560) == 0  # 2048 samples
    assert engine.packet_size == 2560 + 72


@pytest.mark.parametrize("heap_size", [5, 10, 15])
async def test_tiny_meerkat_heaps_work(
    engines: Factory, sinks: Callable[..., Sink], heap_size: int
) -> None:
    """Heaps of 15 bytes or less used to break the engine inside spead2."""
    sink = sinks(10)
    engine = meerkat(engines, [sink])
    await engine.set_heap_size(heap_size)
    engine.start(100)
    assert await engine.wait_capture() == 100
    received = await sink.receiver.collect(heaps=100)
    assert len(received.heaps) == 100
    check_contiguous(received.heaps, 0)
    check_counter(received.heaps, 10)


async def test_meerkat_heap_size_change_continues_at_a_multiple(
    engines: Factory, sinks: Callable[..., Sink]
) -> None:
    sink = sinks(10)
    engine = meerkat(engines, [sink])
    engine.start(3)
    await engine.wait_capture()  # next timestamp 3 * 4096
    first = await engine.set_heap_size(6400)  # 5120 samples: the next multiple is 15360
    assert first == 15360 and engine.next_timestamp == 15360
    engine.start(2)
    await engine.wait_capture()
    received = await sink.receiver.collect(heaps=5)
    assert received.timestamps == [0, 4096, 8192, 15360, 20480]
    check_counter(received.heaps, 10)


FANOUT_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, socket, struct, subprocess
    import spead2, spead2.recv.asyncio
    from dsim.layout import MeerkatFormat
    from dsim.engine import Engine
    from dsim.address import parse_destination
    from dsim.transport import TransportConfig


    async def main():
        groups = [parse_destination(f"239.102.0.{base}+7:7148") for base in (64, 72)]
        receivers = {}
        for pol, group in enumerate(groups):
            for endpoint in group:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((endpoint.host, endpoint.port))
                mreq = struct.pack("4s4s", socket.inet_aton(endpoint.host),
                                   socket.inet_aton("127.0.0.1"))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                stream = spead2.recv.asyncio.Stream(spead2.ThreadPool(), spead2.recv.StreamConfig())
                stream.add_udp_reader(sock)
                receivers[endpoint.host] = (stream, sock)
        engine = Engine(
            TransportConfig(destinations=[e for g in groups for e in g], interface="127.0.0.1",
                            ttl=1, rate=50e6),
            wire_format=MeerkatFormat([8, 8], 10, digitiser_id=2))
        engine.start(160)
        await engine.wait_capture()
        await engine.close()
        seen = {}
        for host, (stream, sock) in receivers.items():
            out = []
            while True:
                try:
                    async with asyncio.timeout(0.5):
                        heap = await stream.get()
                except TimeoutError:
                    break
                items = {i.id: i.immediate_value for i in heap.get_items() if i.is_immediate}
                if 0x1600 in items:
                    out.append([items[0x1600], items[0x3101]])
            seen[host] = out
            stream.stop()
        print(json.dumps(seen))

    asyncio.run(main())
    """
)


@needs_netns
def test_fan_out_over_eight_multicast_groups_per_polarisation() -> None:
    result = run_in_private_netns(FANOUT_SCRIPT)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert len(seen) == 16
    for k in range(16):
        host = f"239.102.0.{64 + k}"
        pol, group = divmod(k, 8)
        # Heap i of a polarisation (timestamp i * 4096) goes to group i mod 8.
        assert seen[host] == [[i * SAMPLES, 2 + pol] for i in range(group, 160, 8)]
