"""Every stop is bounded: ?capture-stop, ?halt, SIGINT and SIGTERM end quickly at any rate.

The bounds asserted here are loose (seconds) on purpose: they tell a bounded stop
(a fraction of a second) from the unbounded ones these tests were written against
(50 s at a slow real-time rate, forever at 1 B/s), not how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import aiokatcp
import pytest

from dsim import layout
from dsim.clock import Clock
from dsim.engine import Engine
from dsim.transport import TransportConfig

from .conftest import Sink
from .support import TIMEOUT, DsimProcess

BOUND = 3.0  # seconds; a bounded stop takes well under one


async def timed(coro: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = await asyncio.wait_for(coro, TIMEOUT)
    return result, time.monotonic() - start


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 1.0},  # one 8 KiB heap every 2.3 hours
        {"rate": 2e3},
        {"clock": (2e4, 1 << 20)},  # a real-time capture waiting ~50 s for its aligned start
        {"clock": (1e-3, 1 << 20)},  # ... for 33 years
        {"clock": (1e5, 4096)},  # started at once: one heap every 41 ms
    ],
)
async def test_capture_stop_is_bounded_at_any_rate(
    engines: Callable[..., Engine], sink: Sink, kwargs: dict[str, Any]
) -> None:
    fmt = layout.MeerkatFormat([1], 10)
    transport = TransportConfig(destinations=[sink.endpoint], rate=kwargs.get("rate", 0.0))
    clock = None
    if "clock" in kwargs:
        rate, align = kwargs["clock"]
        clock = Clock(rate, time.time() - 1 / rate, align)  # now: about sample 1
    engine = engines(transport, wire_format=fmt, clock=clock)
    engine.start()
    await asyncio.sleep(0.5)
    sent, elapsed = await timed(engine.stop())
    assert elapsed < BOUND
    assert not engine.capturing
    assert engine.statistics().heaps == sent


async def test_halt_while_waiting_for_a_real_time_start(
    dsim_processes: Callable[..., Any], sink: Sink
) -> None:
    dsim: DsimProcess = await dsim_processes(
        "--format", "meerkat", "--adc-sample-rate", "2e4", "--start", sink.dest
    )
    await asyncio.sleep(0.3)
    start = time.monotonic()
    await dsim.katcpcmd("halt")
    assert await dsim.finish() == 0
    assert time.monotonic() - start < BOUND


@pytest.mark.parametrize(
    ("args", "sig"),
    [
        (["--rate", "1", "--start"], signal.SIGTERM),
        (["--rate", "1", "--start"], signal.SIGINT),
        (["--format", "meerkat", "--adc-sample-rate", "2e4", "--start"], signal.SIGTERM),
        (["--format", "meerkat", "--adc-sample-rate", "1e-3", "--start"], signal.SIGINT),
    ],
)
async def test_signals_stop_the_process_at_any_rate(
    dsim_processes: Callable[..., Any], sink: Sink, args: list[str], sig: signal.Signals
) -> None:
    dsim: DsimProcess = await dsim_processes(*args, sink.dest)
    await asyncio.sleep(0.3)
    start = time.monotonic()
    dsim.process.send_signal(sig)
    assert await dsim.finish() == 0
    assert time.monotonic() - start < BOUND
    assert any("shut down" in line for line in dsim.log)


async def test_capture_stop_in_real_time_replies_promptly(
    dsim_processes: Callable[..., Any], sink: Sink
) -> None:
    dsim: DsimProcess = await dsim_processes(
        "--format", "meerkat", "--adc-sample-rate", "1e5", "--align-samples", "4096", sink.dest
    )
    async with asyncio.timeout(TIMEOUT):
        client = await aiokatcp.Client.connect("127.0.0.1", dsim.port)
    try:
        async with asyncio.timeout(TIMEOUT):
            await client.request("capture-start")
            await asyncio.sleep(1.0)
            start = time.monotonic()
            (reply,), _ = await client.request("capture-stop")
        assert time.monotonic() - start < BOUND
        assert int(reply) > 0
    finally:
        client.close()
        await client.wait_closed()
    dsim.process.send_signal(signal.SIGTERM)
    assert await dsim.finish() == 0


async def sigterm_during(dsim: DsimProcess, request: asyncio.Task[str]) -> None:
    """SIGTERM while `request` (a ?signals) is still rendering: dsim exits cleanly within
    BOUND, and the request fails (the server halted)."""
    assert not request.done()  # still rendering: the stop below interrupts it
    start = time.monotonic()
    dsim.process.send_signal(signal.SIGTERM)
    assert await dsim.finish() == 0
    assert time.monotonic() - start < BOUND
    with contextlib.suppress(AssertionError):  # the request fails: the server halted
        await request


async def test_a_signal_being_rendered_does_not_hold_up_a_stop(
    dsim_processes: Callable[..., Any], sink: Sink
) -> None:
    dsim: DsimProcess = await dsim_processes(
        "--format", "meerkat", sink.dest, sink.dest, "--max-period", str(1 << 28)
    )
    # A quarter of a billion samples of noise per polarisation: seconds of work.
    request = asyncio.create_task(dsim.katcpcmd("signals", "wgn(0.1); wgn(0.1);", str(1 << 28)))
    await asyncio.sleep(0.5)
    await sigterm_during(dsim, request)


SLOW_SHUTDOWN = textwrap.dedent(
    """
    import asyncio, sys
    from dsim import cli, simulator

    async def stuck(self):  # a shutdown that never finishes
        await asyncio.sleep(3600)

    simulator.Simulator.stop = stuck
    sys.exit(cli.main(["--katcp-port", "0"]))
    """
)


def test_a_second_signal_exits_at_once() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_SHUTDOWN], stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        while "katcp server listening" not in process.stderr.readline():
            pass
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert process.poll() is None  # the first signal waits for a clean shutdown
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=BOUND) == 128 + signal.SIGINT
        assert "again: exiting now" in process.stderr.read()
    finally:
        process.kill()
        process.wait()


async def test_a_halt_during_a_full_window_fft_exits_at_once(
    dsim_processes: Callable[..., Any], sink: Sink
) -> None:
    """A fractional delay of noise is one FFT of the whole window: it cannot stop mid-way,
    but it must not hold the process up either."""
    dsim: DsimProcess = await dsim_processes("--format", "meerkat", sink.dest, sink.dest)
    request = asyncio.create_task(
        dsim.katcpcmd("signals", "delay(wgn(0.1, 1), 0.5); 0;", str(1 << 26))
    )
    await asyncio.sleep(1.0)  # well into the FFT (about 4 s here)
    await sigterm_during(dsim, request)


def test_a_signal_during_the_start_up_render_stops_it() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "dsim", "--katcp-port", "0", "--period", str(1 << 26),
         "--signals", "delay(wgn(0.1, 1), 0.5);", "127.0.0.1:9"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # rendering (about 4 s), not listening yet
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=BOUND) == 0
        assert time.monotonic() - start < BOUND
        assert process.stderr is not None
        log = process.stderr.read()
        assert "shut down before starting" in log and "listening" not in log
    finally:
        process.kill()
        process.wait()


async def test_a_real_time_capture_stopped_before_its_start_leaves_the_stream_where_it_was(
    engines: Callable[..., Engine], sink: Sink
) -> None:
    fmt = layout.MeerkatFormat([1], 10)
    clock = Clock(2e4, time.time() - 1 / 2e4, 1 << 20)  # the aligned start is ~50 s away
    engine = engines(TransportConfig(destinations=[sink.endpoint]), wire_format=fmt, clock=clock)
    before = engine.next_timestamp
    assert engine.start() == 1 << 20
    await asyncio.sleep(0.2)
    assert await engine.stop() == 0
    assert engine.next_timestamp == before
