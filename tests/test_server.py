"""The katcp server over real TCP: with aiokatcp.Client, and with raw lines as a person types."""

# No `from __future__ import annotations`: aiokatcp decodes inform callback
# arguments from their annotations.
import asyncio
import time
from collections.abc import AsyncIterator

import aiokatcp
import pytest

from dsim import Simulator
from dsim.transport import spead2_uses_gso

from .conftest import TEST_RATE, Sink
from .support import TIMEOUT, check_contiguous, check_counter


@pytest.fixture
async def sim(sink: Sink) -> AsyncIterator[Simulator]:
    async with Simulator(destinations=[sink.dest], rate=TEST_RATE, heap_size=4096) as simulator:
        yield simulator


async def raw_sensor(sim: Simulator, name: str) -> bytes:
    async with asyncio.timeout(TIMEOUT):
        _, informs = await sim.client.request("sensor-value", name)
    return informs[0].arguments[4]


async def test_bounded_capture_and_sensors_agree(sim: Simulator, sink: Sink) -> None:
    assert await sim.capture_start(500) == 0
    assert await sim.sensor("capture-active") is True
    assert sim.engine is not None
    await sim.engine.wait_capture()
    received = await sink.receiver.collect()
    assert received.ends == 1 and len(received.heaps) == 500
    check_contiguous(received.heaps, 0)
    check_counter(received.heaps)
    # Exactly right at the end of the capture, without waiting for a refresh.
    assert await sim.sensor("transmitted-heaps") == 500
    assert await sim.sensor("transmitted-bytes") == 500 * 4096
    assert await sim.sensor("next-timestamp") == 500 * 4096
    assert await sim.sensor("capture-active") is False
    assert await sim.sensor("throughput") == 0.0
    assert await raw_sensor(sim, "device-status") == b"ok"


async def test_capture_stop_mid_stream(sim: Simulator, sink: Sink) -> None:
    await sim.capture_start()
    await asyncio.sleep(1.2)
    assert await sim.sensor("throughput") > 0.5 * TEST_RATE
    sent = await sim.capture_stop()
    received = await sink.receiver.collect()
    assert received.ends == 1
    assert len(received.heaps) == sent > 0
    assert await sim.sensor("transmitted-heaps") == sent
    # Idempotent: ok again, and no second end-of-stream heap.
    assert await sim.capture_stop() == 0
    assert (await sink.receiver.collect(idle_timeout=0.3)).ends == 1


async def test_heap_size_while_streaming(sim: Simulator, sink: Sink) -> None:
    assert await sim.request("heap-size") == [b"4096"]
    await sim.capture_start()
    await asyncio.sleep(0.1)
    first = await sim.set_heap_size(6000)
    assert await sim.sensor("steady-state-timestamp") == first
    await asyncio.sleep(0.1)
    await sim.capture_stop()
    received = await sink.receiver.collect()
    check_contiguous(received.heaps, 0)
    check_counter(received.heaps)
    change = [len(h.samples) for h in received.heaps].index(6000)
    assert received.heaps[change].timestamp == first
    assert await sim.sensor("heap-size") == 6000
    assert sim.heap_size == 6000


async def test_a_capture_starts_at_an_exact_timestamp(sim: Simulator, sink: Sink) -> None:
    assert await sim.capture_start(20, 4096 * 100) == 4096 * 100
    assert sim.engine is not None
    await sim.engine.wait_capture()
    with pytest.raises(aiokatcp.FailReply, match="has passed"):
        await sim.capture_start(5, 0)
    # 0 heaps = no limit, so that a timestamp can follow.
    assert await sim.capture_start(0, 4096 * 500) == 4096 * 500
    await asyncio.sleep(0.1)
    assert sim.engine.capturing
    await sim.capture_stop()
    received = await sink.receiver.collect(ends=2)
    assert received.timestamps[:20] == [4096 * (100 + i) for i in range(20)]
    assert received.timestamps[20] == 4096 * 500
    check_counter(received.heaps)


async def test_event_rate_sampling_while_streaming(sim: Simulator) -> None:
    updates: list[int] = []

    def on_status(timestamp: bytes, count: bytes, name: bytes, status: bytes, value: bytes) -> None:
        if name == b"transmitted-heaps":
            updates.append(int(value))

    sim.client.add_inform_callback("sensor-status", on_status)
    await sim.request("sensor-sampling", "transmitted-heaps", "event-rate", 0.2, 5)
    await sim.capture_start()
    await asyncio.sleep(2.0)
    await sim.capture_stop()
    await asyncio.sleep(0.3)
    # A few updates a second (not thousands), increasing, the last one exact.
    assert 4 <= len(updates) <= 15
    assert updates == sorted(updates)
    assert sim.engine is not None and updates[-1] == sim.engine.statistics().heaps


async def test_auto_sampling_reports_only_changes(sim: Simulator) -> None:
    """Unchanging sensors are not repeated; counters update at most twice a second."""
    updates: list[bytes] = []
    sim.client.add_inform_callback("sensor-status", lambda *args: updates.append(args[2]))
    for name in ("device-status", "signals", "heap-size", "transmitted-bytes", "capture-active"):
        await sim.request("sensor-sampling", name, "auto")
    initial = len(updates)
    await sim.capture_start()
    await asyncio.sleep(2.0)
    await sim.capture_stop()
    await asyncio.sleep(0.6)
    assert initial == 5  # one reading each on subscribing
    assert updates.count(b"device-status") == 1
    assert updates.count(b"signals") == 1
    assert updates.count(b"heap-size") == 1
    assert updates.count(b"capture-active") == 3  # subscribe, start, stop
    assert 3 <= updates.count(b"transmitted-bytes") <= 9


async def test_constant_sensors(sim: Simulator, sink: Sink) -> None:
    assert await sim.sensor("destinations") == sink.dest
    assert await sim.sensor("transport") == "udp"
    assert await sim.sensor("packet-size") == 8972  # a 4096-byte heap fits one packet
    assert await sim.sensor("max-packet-size") == 8972
    assert await sim.sensor("spead2-gso") is spead2_uses_gso()
    assert await sim.sensor("rate") == pytest.approx(TEST_RATE)
    assert await sim.sensor("send-errors") == 0
    assert await sim.sensor("signals") == "counter();"
    assert await sim.sensor("signals-orig") == "counter();"
    assert await sim.sensor("real-time") is False
    assert await sim.sensor("adc-sample-rate") == 1712e6  # the nominal rate, free-running
    assert await sim.sensor("period") == 1 << 25
    assert await sim.sensor("max-period") == 1 << 27
    assert int(await sim.sensor("dither-seed")) >= 0


async def test_device_status_follows_the_engine(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's state, as the server maps it: send errors make the device degraded
    (for SEND_ERROR_HOLD after the last one), a failed capture makes it fail."""
    from dsim import server as server_module

    assert sim.server is not None and sim.engine is not None
    assert await raw_sensor(sim, "device-status") == b"ok"
    sim.engine._sender.send_errors += 3
    sim.server.update_sensors()
    assert await raw_sensor(sim, "send-errors") == b"3"
    assert await raw_sensor(sim, "device-status") == b"degraded"
    monkeypatch.setattr(server_module, "SEND_ERROR_HOLD", 0.0)  # the hold has passed
    sim.server.update_sensors()
    assert await raw_sensor(sim, "device-status") == b"ok"
    sim.engine.failure = RuntimeError("injected")
    sim.server.update_sensors()
    assert await raw_sensor(sim, "device-status") == b"fail"
    sim.engine.failure = None
    sim.server.update_sensors()
    assert await raw_sensor(sim, "device-status") == b"ok"


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
async def typist(sim: Simulator) -> AsyncIterator[Typist]:
    reader, writer = await asyncio.open_connection(*sim.katcp_address)
    async with asyncio.timeout(TIMEOUT):
        for _ in range(3):  # #version-connect lines
            assert (await reader.readline()).startswith(b"#version-connect")
    yield Typist(reader, writer)
    writer.close()


async def test_a_telnet_session(sim: Simulator, sink: Sink, typist: Typist) -> None:
    lines = await typist.type("?help")
    assert lines[-1] == f"!help ok {len(lines) - 1}"
    helps = {line.split(" ")[1]: line for line in lines[:-1]}
    assert helps["capture-start"].startswith(r"#help capture-start Start\_streaming")
    assert "capture-stop" in helps and "heap-size" in helps and "signals" in helps
    engine = sim.engine
    assert engine is not None

    assert (await typist.type("?capture-start"))[-1] == "!capture-start ok 0"
    assert (await typist.type("?capture-start"))[-1] == (
        r"!capture-start fail capture\_already\_in\_progress"
    )
    assert engine.capturing  # the running capture is unaffected

    value = await typist.type("?sensor-value transmitted-heaps")
    assert value[0].split(" ")[3:5] == ["transmitted-heaps", "nominal"]
    assert value[-1] == "!sensor-value ok 1"

    assert (await typist.type("?heap-size banana"))[-1] == (
        r"!heap-size fail heap\_size\_must\_be\_a\_positive\_integer\_(decimal\_digits),"
        r"\_not\_'banana'"
    )
    assert (await typist.type("?heap-size 999999999999"))[-1] == (
        r"!heap-size fail heap\_size\_999999999999\_exceeds\_the\_maximum\_of\_67108864\_bytes"
    )
    unknown = (await typist.type("?frobnicate"))[-1]
    assert unknown == r"!frobnicate invalid unknown\_request\_frobnicate"
    junk = await typist.type("hello there")
    assert junk[-1].startswith("#log error")
    assert engine.capturing and engine.heap_size == 4096

    stop = (await typist.type("?capture-stop"))[-1].split(" ")
    assert stop[:2] == ["!capture-stop", "ok"]
    sent = int(stop[2])
    assert (await typist.type("?capture-stop"))[-1] == "!capture-stop ok 0"
    received = await sink.receiver.collect(idle_timeout=0.5)
    assert received.ends == 1 and len(received.heaps) == sent
    check_contiguous(received.heaps, 0)

    # Still serving, and the stream still flows.
    assert (await typist.type("?capture-start 10"))[-1] == f"!capture-start ok {sent * 4096}"
    await engine.wait_capture()
    received = await sink.receiver.collect(ends=2)
    assert received.ends == 2 and len(received.heaps) == sent + 10


@pytest.mark.parametrize(
    "argument",
    ["\\@", "+5", "1_0", "-5", "many", "\u0661\u0662", "5.0", "0x10"],
)
async def test_heap_counts_are_plain_decimal_digits(
    sim: Simulator, typist: Typist, argument: str
) -> None:
    reply = (await typist.type(f"?capture-start {argument}"))[-1]
    assert reply.startswith(r"!capture-start fail heap\_count\_must\_be")
    assert sim.engine is not None and not sim.engine.capturing
    assert (await typist.type("?heap-size " + argument))[-1].startswith("!heap-size fail")
    assert sim.heap_size == 4096


async def test_help_reads_well_in_a_terminal(typist: Typist) -> None:
    for name in ("capture-start", "capture-stop", "heap-size", "signals", "time"):
        (line, reply) = await typist.type(f"?help {name}")
        assert reply == "!help ok 1"
        assert "----" not in line  # no numpydoc underlines
        assert r"\_\_" not in line  # no runs of escaped spaces (indentation)


async def test_sensor_sampling_periods_that_would_flood_are_refused(typist: Typist) -> None:
    from dsim.server import MIN_SAMPLING_PERIOD

    for args in ("period nan", "period 1e-9", "period -1", "period inf", "event-rate 0 1e-9",
                 "event-rate nan 1", "period", "period 1 2",
                 "differential-rate 1 0.001 0.001", "differential-rate 1 0 nan"):  # fmt: skip
        reply = (await typist.type(f"?sensor-sampling heap-size {args}"))[-1]
        assert reply.startswith("!sensor-sampling fail"), (args, reply)
    ok = await typist.type(f"?sensor-sampling heap-size period {MIN_SAMPLING_PERIOD}")
    assert ok[-1].startswith("!sensor-sampling ok heap-size period"), ok
    ok = await typist.type("?sensor-sampling heap-size event-rate 0 1")
    assert ok[-1].startswith("!sensor-sampling ok heap-size event-rate"), ok
    ok = await typist.type("?sensor-sampling heap-size differential-rate 1 0 1")
    assert ok[-1].startswith("!sensor-sampling ok heap-size differential-rate"), ok
    helps = await typist.type("?help")
    summary = next(line for line in helps if line.startswith("#help sensor-sampling "))
    assert summary.endswith("strategies."), summary  # the whole first sentence
    (line, _) = await typist.type("?help sensor-sampling")
    assert f"{MIN_SAMPLING_PERIOD}\\_s" in line
    assert (await typist.type("?watchdog"))[-1] == "!watchdog ok"


async def test_signals_help_names_every_function(typist: Typist) -> None:
    from dsim.signals import FUNCTIONS

    (line, _) = await typist.type("?help signals")
    for name in FUNCTIONS:
        assert f"\\_{name}," in line or f"\\_{name}." in line, name


async def test_meerkat_real_time_sensors_and_time_request(sinks: object) -> None:
    sync = time.time() - 10.0
    async with Simulator(
        destinations=["127.0.0.1:7148", "127.0.0.1:7149"],
        format="meerkat",
        adc_sample_rate=1e6,
        sync_time=sync,
        align_samples=1 << 16,
    ) as sim:
        assert await sim.sensor("format") == "meerkat"
        assert await sim.sensor("sample-bits") == 10
        assert await sim.sensor("polarisations") == 2
        assert await sim.sensor("sync-time") == pytest.approx(sync)
        assert await sim.sensor("adc-sample-rate") == 1e6
        assert await sim.sensor("real-time") is True
        assert await sim.sensor("rate") == pytest.approx(1e6 / 4096 * 5192 * 2)
        assert await sim.request("heap-size") == [b"5120"]
        (now,) = await sim.request("time")
        assert abs(float(now) - time.time()) < 1.0
        with pytest.raises(aiokatcp.FailReply, match="whole groups of 10-bit samples"):
            await sim.set_heap_size(5121)
        first = await sim.capture_start(10)
        assert first % (1 << 16) == 0
        assert -0.2 < sync + first / 1e6 - time.time() < 0.3  # next 2^16 samples: 65 ms
        assert sim.engine is not None
        await sim.engine.wait_capture()
        assert await sim.sensor("transmitted-heaps") == 20
