"""The katcp server over real TCP, with aiokatcp.Client and with raw typed lines."""

# No `from __future__ import annotations`: aiokatcp decodes inform callback
# arguments from their annotations.
import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiokatcp
import pytest

from dsim.engine import Engine
from dsim.server import DeviceServer
from dsim.transport import Endpoint, TransportConfig, spead2_uses_gso

from .helpers import Receiver, check_contiguous, udp_socket

RATE = 50e6  # 12 000 heaps/s: well within what the Python test receiver decodes
TIMEOUT = 10.0


@dataclass
class Setup:
    engine: Engine
    server: DeviceServer
    receiver: Receiver
    port: int  # katcp


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    sock = udp_socket()
    receiver = Receiver(sock)
    config = TransportConfig(destinations=[Endpoint("127.0.0.1", sock.getsockname()[1])], rate=RATE)
    engine = Engine(config, heap_size=4096)
    server = DeviceServer(engine, "127.0.0.1", 0)
    await server.start()
    yield Setup(engine, server, receiver, server.sockets[0].getsockname()[1])
    await server.stop()
    receiver.close()
    sock.close()


@pytest.fixture
async def client(setup: Setup) -> AsyncIterator[aiokatcp.Client]:
    async with asyncio.timeout(TIMEOUT):
        client = await aiokatcp.Client.connect("127.0.0.1", setup.port)
    yield client
    client.close()
    await client.wait_closed()


async def request(client: aiokatcp.Client, name: str, *args: object) -> list[bytes]:
    async with asyncio.timeout(TIMEOUT):
        reply, _ = await client.request(name, *args)
    return reply


async def sensor(client: aiokatcp.Client, name: str) -> bytes:
    async with asyncio.timeout(TIMEOUT):
        _, informs = await client.request("sensor-value", name)
    return informs[0].arguments[4]


async def test_bounded_capture_and_sensors_agree(setup: Setup, client: aiokatcp.Client) -> None:
    assert await request(client, "capture-start", 500) == [b"0"]
    assert await sensor(client, "capture-active") == b"1"
    await setup.engine.wait_capture()
    received = await setup.receiver.collect()
    assert received.ends == 1 and len(received.heaps) == 500
    check_contiguous(received.heaps)
    # Exactly right at the end of the capture, without waiting for a refresh.
    assert await sensor(client, "transmitted-heaps") == b"500"
    assert await sensor(client, "transmitted-bytes") == str(500 * 4096).encode()
    assert await sensor(client, "next-timestamp") == str(500 * 4096).encode()
    assert await sensor(client, "capture-active") == b"0"
    assert await sensor(client, "throughput") == b"0.0"
    assert await sensor(client, "device-status") == b"ok"


async def test_capture_stop_mid_stream(setup: Setup, client: aiokatcp.Client) -> None:
    await request(client, "capture-start")
    await asyncio.sleep(1.2)
    assert float(await sensor(client, "throughput")) > 0.5 * RATE
    reply = await request(client, "capture-stop")
    sent = int(reply[0])
    received = await setup.receiver.collect()
    assert received.ends == 1
    assert len(received.heaps) == sent > 0
    assert await sensor(client, "transmitted-heaps") == str(sent).encode()
    # Idempotent: ok again, and no second end-of-stream heap.
    assert await request(client, "capture-stop") == [b"0"]
    assert (await setup.receiver.collect(idle_timeout=0.3)).ends == 1


async def test_heap_size_while_streaming(setup: Setup, client: aiokatcp.Client) -> None:
    assert await request(client, "heap-size") == [b"4096"]
    await request(client, "capture-start")
    await asyncio.sleep(0.1)
    size, first = await request(client, "heap-size", 6000)
    assert size == b"6000"
    await asyncio.sleep(0.1)
    await request(client, "capture-stop")
    received = await setup.receiver.collect()
    check_contiguous(received.heaps)
    change = [h.samples for h in received.heaps].index(6000)
    assert received.heaps[change].timestamp == int(first)
    assert await sensor(client, "heap-size") == b"6000"
    assert await request(client, "heap-size") == [b"6000"]


async def test_event_rate_sampling_while_streaming(setup: Setup, client: aiokatcp.Client) -> None:
    updates: list[int] = []

    def on_status(timestamp: bytes, count: bytes, name: bytes, status: bytes, value: bytes) -> None:
        if name == b"transmitted-heaps":
            updates.append(int(value))

    client.add_inform_callback("sensor-status", on_status)
    await request(client, "sensor-sampling", "transmitted-heaps", "event-rate", 0.2, 5)
    await request(client, "capture-start")
    await asyncio.sleep(2.0)
    await request(client, "capture-stop")
    await asyncio.sleep(0.3)
    # A few updates a second (not thousands), increasing, the last one exact.
    assert 4 <= len(updates) <= 15
    assert updates == sorted(updates)
    assert updates[-1] == setup.engine.statistics().heaps


async def test_auto_strategy_is_rate_limited(setup: Setup, client: aiokatcp.Client) -> None:
    updates: list[bytes] = []
    client.add_inform_callback("sensor-status", lambda *args: updates.append(args[2]))
    await request(client, "sensor-sampling", "transmitted-bytes", "auto")
    await request(client, "capture-start")
    await asyncio.sleep(2.0)
    await request(client, "capture-stop")
    assert 2 <= updates.count(b"transmitted-bytes") <= 8


async def test_constant_sensors(setup: Setup, client: aiokatcp.Client) -> None:
    port = setup.engine.transport.destinations[0].port
    assert await sensor(client, "destinations") == f"127.0.0.1:{port}".encode()
    assert await sensor(client, "transport") == b"udp"
    assert await sensor(client, "packet-size") == b"8972"  # a 4096-byte heap fits one packet
    assert await sensor(client, "max-packet-size") == b"8972"
    assert await sensor(client, "spead2-gso") == (b"1" if spead2_uses_gso() else b"0")
    assert float(await sensor(client, "rate")) == RATE
    assert await sensor(client, "send-errors") == b"0"


async def test_device_status_follows_sensor_statuses(setup: Setup, client: aiokatcp.Client) -> None:
    errors = setup.server.sensors["send-errors"]
    errors.set_value(3, aiokatcp.Sensor.Status.WARN)
    assert await sensor(client, "device-status") == b"degraded"
    errors.set_value(3, aiokatcp.Sensor.Status.NOMINAL)
    assert await sensor(client, "device-status") == b"ok"
    setup.server.sensors["capture-active"].set_value(False, aiokatcp.Sensor.Status.ERROR)
    assert await sensor(client, "device-status") == b"fail"


# --------------------------------------------------------------------------- raw lines


class Typist:
    """A person at a telnet prompt: types one line, reads up to the reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def type(self, line: str) -> list[str]:
        """Send `line`; return every line received up to and including its reply."""
        self.writer.write(line.encode() + b"\n")
        name = line[1:].split()[0] if line.startswith("?") else None
        lines: list[str] = []
        async with asyncio.timeout(TIMEOUT):
            while True:
                got = (await self.reader.readline()).decode().rstrip("\n")
                lines.append(got)
                if name is None and got.startswith("#log"):
                    return lines
                if name is not None and got.split(" ")[0] == f"!{name}":
                    return lines


@pytest.fixture
async def typist(setup: Setup) -> AsyncIterator[Typist]:
    reader, writer = await asyncio.open_connection("127.0.0.1", setup.port)
    async with asyncio.timeout(TIMEOUT):
        for _ in range(3):  # #version-connect lines
            assert (await reader.readline()).startswith(b"#version-connect")
    yield Typist(reader, writer)
    writer.close()


async def test_a_telnet_session(setup: Setup, typist: Typist) -> None:
    lines = await typist.type("?help")
    assert lines[-1] == f"!help ok {len(lines) - 1}"
    helps = {line.split(" ")[1]: line for line in lines[:-1]}
    assert helps["capture-start"].startswith(r"#help capture-start Start\_streaming")
    assert "capture-stop" in helps and "heap-size" in helps

    assert (await typist.type("?capture-start"))[-1] == "!capture-start ok 0"
    assert (await typist.type("?capture-start"))[-1] == (
        r"!capture-start fail capture\_already\_in\_progress"
    )
    assert setup.engine.capturing  # the running capture is unaffected

    value = (await typist.type("?sensor-value transmitted-heaps"))
    assert value[0].split(" ")[3:5] == ["transmitted-heaps", "nominal"]
    assert value[-1] == "!sensor-value ok 1"

    assert (await typist.type("?heap-size banana"))[-1] == (
        r"!heap-size fail heap\_size\_must\_be\_a\_positive\_integer,\_not\_'banana'"
    )
    assert (await typist.type("?heap-size -1"))[-1] == (
        r"!heap-size fail heap\_size\_must\_be\_a\_positive\_integer,\_not\_-1"
    )
    assert (await typist.type("?heap-size 999999999999"))[-1] == (
        r"!heap-size fail heap\_size\_must\_be\_at\_most\_67108864,\_not\_999999999999"
    )
    assert (await typist.type("?capture-start -5"))[-1] == (
        r"!capture-start fail heap\_count\_must\_be\_a\_positive\_integer,\_not\_-5"
    )
    unknown = (await typist.type("?frobnicate"))[-1]
    assert unknown == r"!frobnicate invalid unknown\_request\_frobnicate"
    junk = await typist.type("hello there")
    assert junk[-1].startswith("#log error")
    assert setup.engine.capturing and setup.engine.heap_size == 4096

    stop = (await typist.type("?capture-stop"))[-1].split(" ")
    assert stop[:2] == ["!capture-stop", "ok"]
    sent = int(stop[2])
    assert (await typist.type("?capture-stop"))[-1] == "!capture-stop ok 0"
    received = await setup.receiver.collect(idle_timeout=0.5)
    assert received.ends == 1 and len(received.heaps) == sent
    check_contiguous(received.heaps)

    # Still serving, and the stream still flows.
    assert (await typist.type("?capture-start 10"))[-1] == f"!capture-start ok {sent * 4096}"
    assert (await typist.type("?capture-start 0"))[-1].startswith("!capture-start fail")
    await setup.engine.wait_capture()
    received = await setup.receiver.collect(ends=2)
    assert received.ends == 2 and len(received.heaps) == sent + 10


async def test_bad_heap_counts(setup: Setup, typist: Typist) -> None:
    assert (await typist.type("?capture-start 0"))[-1] == (
        r"!capture-start fail heap\_count\_must\_be\_a\_positive\_integer,\_not\_0"
    )
    assert (await typist.type("?capture-start many"))[-1] == (
        r"!capture-start fail heap\_count\_must\_be\_a\_positive\_integer,\_not\_'many'"
    )
    assert not setup.engine.capturing


async def test_meerkat_real_time_sensors_and_time_request() -> None:
    from dsim import layout
    from dsim.engine import Clock

    sync = time.time() - 10.0
    engine = Engine(
        TransportConfig(destinations=[Endpoint("127.0.0.1", 7148), Endpoint("127.0.0.1", 7149)]),
        wire_format=layout.MeerkatFormat(2, 10),
        clock=Clock(1e6, sync, align_samples=1 << 16),
    )
    server = DeviceServer(engine, "127.0.0.1", 0)
    await server.start()
    client = await aiokatcp.Client.connect("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        assert await sensor(client, "format") == b"meerkat"
        assert await sensor(client, "sample-bits") == b"10"
        assert await sensor(client, "polarisations") == b"2"
        assert float(await sensor(client, "sync-time")) == pytest.approx(sync)
        assert float(await sensor(client, "adc-sample-rate")) == 1e6
        assert float(await sensor(client, "rate")) == pytest.approx(1e6 / 4096 * 5192 * 2)
        assert await request(client, "heap-size") == [b"5120"]
        (now,) = await request(client, "time")
        assert abs(float(now) - time.time()) < 1.0
        with pytest.raises(aiokatcp.FailReply, match="whole groups of 10-bit samples"):
            await request(client, "heap-size", 5121)
        (first,) = await request(client, "capture-start", 10)
        assert int(first) % (1 << 16) == 0
        assert -0.2 < sync + int(first) / 1e6 - time.time() < 0.3  # next 2^16 samples: 65 ms
        await engine.wait_capture()
        assert await sensor(client, "transmitted-heaps") == b"20"
    finally:
        client.close()
        await client.wait_closed()
        await server.stop()
