"""The MeerKAT digitiser format and the real-time clock, over real UDP."""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np
import pytest
import spead2
import spead2.recv.asyncio

from dsim import layout, packing
from dsim.engine import Clock, Engine
from dsim.errors import ConfigError
from dsim.generator import sample_value
from dsim.transport import Endpoint, TransportConfig
from dsim.verify import Verifier, VerifyConfig, WallClock

from .helpers import udp_socket

HEAP = 5120  # 4096 10-bit samples
SAMPLES = 4096


def meerkat_engine(ports: list[int], **kwargs: object) -> Engine:
    fmt = layout.MeerkatFormat(len(ports), 10, digitiser_id=6)
    transport = TransportConfig(
        destinations=[Endpoint("127.0.0.1", p) for p in ports],
        rate=float(kwargs.pop("rate", 50e6)),  # type: ignore[arg-type]
    )
    return Engine(transport, HEAP, wire_format=fmt, **kwargs)  # type: ignore[arg-type]


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
        pointer = int.from_bytes(packet[8 + 8 * i: 16 + 8 * i], "big")
        out[(pointer >> 48) & 0x7FFF] = pointer & ((1 << 48) - 1)
    return out


def test_packing_is_msb_first_big_endian() -> None:
    # 4 samples of 10 bits in 5 bytes: 1 -> 0000000001 x 4.
    assert packing.pack(np.array([1, 1, 1, 1]), 10).tolist() == [0x00, 0x40, 0x10, 0x04, 0x01]
    assert packing.pack(np.array([-1, 0, 0, 0]), 10).tolist() == [0xFF, 0xC0, 0, 0, 0]
    assert packing.pack(np.array([-512, 511, 0, 0]), 10).tolist() == [0x80, 0x1F, 0xF0, 0, 0]
    values = packing.wrap(np.arange(-2000, 2000, 7)[:400], 10)
    assert (packing.unpack(packing.pack(values, 10), 10) == values).all()


async def test_the_wire_format_two_polarisations_interleaved() -> None:
    sock = udp_socket()
    port = sock.getsockname()[1]
    engine = meerkat_engine([port, port], descriptor_interval=0)  # both polarisations here
    try:
        assert engine.packet_size == 5192
        engine.start(520)  # 520 timestamps, so the counter passes 511 (full scale)
        packets = await datagrams(sock)
        await engine.wait_capture()
    finally:
        await engine.close()
        sock.close()
    data = [p for p in packets if layout.ADC_SAMPLES_ID in items_of(p)]
    assert len(data) == 2 * 520
    assert {len(p) for p in data} == {5192}  # every heap exactly one packet
    for i, packet in enumerate(data):
        items = items_of(packet)
        assert int.from_bytes(packet[6:8], "big") == 8  # 4 standard + 4 items, all repeated
        assert set(items) >= {layout.TIMESTAMP_ID, layout.DIGITISER_ID_ID,
                              layout.DIGITISER_STATUS_ID, layout.ADC_SAMPLES_ID}
        n, pol = divmod(i, 2)  # the polarisations of a timestamp go out together
        assert items[layout.TIMESTAMP_ID] == n * SAMPLES
        assert items[layout.DIGITISER_ID_ID] == 6 + pol
        samples = packing.unpack(np.frombuffer(packet[-HEAP:], np.uint8), 10)
        assert len(samples) == SAMPLES
        assert (samples == sample_value(n, 10)).all()  # bit-exact
        saturated = abs(sample_value(n, 10)) >= 511
        status = items[layout.DIGITISER_STATUS_ID]
        assert status == ((SAMPLES << 32) | 2 if saturated else 0)
    # Heaps 511, 512 and 513 hold 511, -512 and -511: at full scale.
    assert sum(1 for i in range(0, len(data), 2) if items_of(data[i])[0x3102]) == 3


async def test_descriptors_have_odd_ids_and_spead2_decodes_the_samples() -> None:
    sock = udp_socket()
    port = sock.getsockname()[1]
    stream = spead2.recv.asyncio.Stream(
        spead2.ThreadPool(), spead2.recv.StreamConfig(stop_on_stop_item=False)
    )
    stream.add_udp_reader(sock)
    engine = meerkat_engine([port], descriptor_interval=0.2)
    ig = spead2.ItemGroup()
    cnts: dict[str, list[int]] = {"data": [], "descriptors": []}
    decoded = None
    try:
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
    finally:
        await engine.close()
        stream.stop()
        sock.close()
    assert all(c % 2 == 0 for c in cnts["data"]) and all(c % 2 == 1 for c in cnts["descriptors"])
    assert len(cnts["descriptors"]) >= 4  # at the start and every 0.2 s
    assert ig["raw_data"].format == [("i", 10)] and ig["raw_data"].shape == (SAMPLES,)
    assert decoded is not None
    timestamp, samples = decoded
    assert (samples == sample_value(timestamp // SAMPLES, 10)).all()


async def test_real_time_stream_follows_the_wall_clock() -> None:
    rate = 5e6
    sync = time.time() - 100.0
    verifier = Verifier(VerifyConfig(
        # Generous bounds: these shared machines stall for tens of milliseconds at times.
        port=0, idle_timeout=5, clock=WallClock(sync, rate), clock_tolerance=0.1,
        digitiser_ids=(6, 7),
    ))
    task = asyncio.create_task(verifier.run())
    clock = Clock(rate, sync, align_samples=1 << 18)
    engine = meerkat_engine([verifier.port, verifier.port], clock=clock, descriptor_interval=1)
    try:
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
        report = await task
    finally:
        await engine.close()
    assert report.clean, report.to_dict()
    assert report.heaps == sent and report.streams == [6, 7]
    assert report.captures == 1 and report.misaligned == 0 and report.bad_status == 0
    assert report.clock_checked > 10
    assert report.clock_offset_max is not None and abs(report.clock_offset_max) < 0.1
    seconds = sent / 2 * SAMPLES / rate
    assert 0.8 < seconds < 1.6  # paced at the ADC rate (free-running would be ~100x more)


async def test_heap_size_rules_of_the_format() -> None:
    engine = meerkat_engine([7148])
    try:
        with pytest.raises(ConfigError, match="whole groups of 10-bit samples"):
            await engine.set_heap_size(5121)
        with pytest.raises(ConfigError, match="one packet per heap"):
            await engine.set_heap_size(10240)
        assert await engine.set_heap_size(2560) == 0  # 2048 samples
        assert engine.packet_size == 2560 + 72
    finally:
        await engine.close()


async def test_verifier_flags_meerkat_defects() -> None:
    verifier = Verifier(VerifyConfig(port=0, idle_timeout=5, digitiser_ids=(6,)))
    task = asyncio.create_task(verifier.run())
    fmt = layout.MeerkatFormat(1, 10, digitiser_id=6)
    stream = spead2.send.asyncio.UdpStream(
        spead2.ThreadPool(), [("127.0.0.1", verifier.port)],
        spead2.send.StreamConfig(max_packet_size=9000, rate=20e6),
    )
    arrays = fmt.allocate(1, HEAP)
    ig = fmt.data_item_group(HEAP)
    await stream.async_send_heap(layout.make_descriptor_heap(fmt.descriptor_item_group(HEAP)))
    for n in range(520):
        fmt.fill(arrays, np.array([n]), np.array([n * SAMPLES], np.uint64))
        timestamp = int(arrays.timestamps[0, 0])
        status = int(arrays.status[0, 0])  # type: ignore[index]
        digitiser_id = 6
        if n == 100:
            status = 0xABC  # wrong status
        if n == 511:
            status = 0  # saturated heap reporting no saturation
        if n == 200:
            digitiser_id = 9  # a stranger on the stream
        ig["timestamp"].value = timestamp
        ig["digitiser_status"].value = status
        ig["digitiser_id"].value = digitiser_id
        ig["raw_data"].value = arrays.payload[0, 0]
        heap = ig.get_heap(descriptors="none", data="all")
        heap.repeat_pointers = True
        await stream.async_send_heap(heap)
    await stream.async_send_heap(ig.get_end())
    report = await task
    assert report.bad_status == 2
    assert report.wrong_id == 1
    assert report.format == "meerkat" and sorted(report.streams) == [6, 9]
    assert not report.clean


async def test_dsim_and_dsim_verify_commands_in_meerkat_real_time(unused_udp_port: int) -> None:
    from .test_cli import Dsim
    from .test_end_to_end import finish_verify, start_verify

    sync = time.time() - 5.0
    port = unused_udp_port
    verify = await start_verify(
        port, "--digitiser-id", "4", "--digitiser-id", "5", "--sync-time", str(sync),
        "--adc-sample-rate", "4e6", "--clock-tolerance", "0.1",
    )
    dsim = await Dsim.start(
        "--format", "meerkat", "--digitiser-id", "4", "--adc-sample-rate", "4e6",
        "--sync-time", str(sync), "--align-samples", str(1 << 16), "--start",
        f"127.0.0.1:{port}", f"127.0.0.1:{port}",
    )
    await asyncio.sleep(1.0)
    dsim.process.send_signal(15)
    assert await dsim.finish() == 0
    report = await finish_verify(verify)
    assert verify.returncode == 0, report
    assert report["format"] == "meerkat" and report["streams"] == [4, 5]
    assert report["captures"] == 1 and report["clean"] is True
    assert report["clock_checked"] > 10 and report["off_clock"] == 0
    log = "".join(dsim.log)
    assert "(meerkat format)" in log and "packet size 5192 (one packet per heap)" in log
    assert "real time: ADC at 4e+06 Hz" in log
