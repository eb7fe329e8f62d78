"""End-to-end: the dsim process, driven over katcp, checked by the dsim-verify process."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiokatcp

from .support import DsimProcess

TIMEOUT = 60.0


async def start_verify(port: int, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsim.verify", str(port), "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = await asyncio.to_thread(proc.stderr.readline)
    assert line.startswith("dsim-verify: receiving on"), line
    return proc


async def finish_verify(proc: subprocess.Popen[str]) -> Any:
    out, err = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    assert out, err
    return json.loads(out)


async def connect(dsim: DsimProcess) -> aiokatcp.Client:
    async with asyncio.timeout(10):
        return await aiokatcp.Client.connect("127.0.0.1", dsim.port)


async def sensor(client: aiokatcp.Client, name: str) -> int:
    async with asyncio.timeout(10):
        return int(await client.sensor_value(name, int))


async def test_100k_heaps_at_1_gbps_lose_nothing(
    dsim_processes: Callable[..., Any], unused_udp_port: int
) -> None:
    verify = await start_verify(unused_udp_port, "--timeout", "20")
    dsim: DsimProcess = await dsim_processes(f"127.0.0.1:{unused_udp_port}", "--rate", "125e6")
    client = await connect(dsim)
    async with asyncio.timeout(TIMEOUT):
        await client.request("capture-start", 100_000)
    report = await finish_verify(verify)
    assert verify.returncode == 0, report
    assert report["stopped_by"] == "end-of-stream"
    assert report["heaps"] == 100_000 and report["bytes"] == 100_000 * 8192
    assert report["missing"] == 0 and report["incomplete"] == 0 and report["clean"] is True
    # The server's counters agree with what arrived.
    assert await sensor(client, "transmitted-heaps") == report["heaps"]
    assert await sensor(client, "transmitted-bytes") == report["bytes"]
    client.close()


async def test_captures_and_resizes_are_segments_not_errors(
    dsim_processes: Callable[..., Any], unused_udp_port: int
) -> None:
    verify = await start_verify(unused_udp_port, "--captures", "2", "--timeout", "20")
    dsim: DsimProcess = await dsim_processes(f"127.0.0.1:{unused_udp_port}", "--rate", "125e6")
    client = await connect(dsim)
    async with asyncio.timeout(TIMEOUT):
        await client.request("capture-start", 3000)
        while await sensor(client, "capture-active"):
            await asyncio.sleep(0.05)
        await client.request("capture-start")
        await asyncio.sleep(0.3)
        (_, first_small), _ = await client.request("heap-size", 4096)
        await asyncio.sleep(0.3)
        (sent,), _ = await client.request("capture-stop")
    report = await finish_verify(verify)
    assert verify.returncode == 0, report
    assert report["clean"] is True and report["captures"] == 2
    segments = report["segments"]
    assert [(s["capture"], s["heap_size"], s["first_timestamp"]) for s in segments] == [
        (0, 8192, 0),
        (1, 8192, 3000 * 8192),
        (1, 4096, int(first_small)),
    ]
    assert segments[0]["heaps"] == 3000
    assert segments[1]["heaps"] + segments[2]["heaps"] == int(sent)
    assert report["heaps"] == await sensor(client, "transmitted-heaps")
    client.close()


async def test_meerkat_real_time_captures_without_stop_heaps(
    dsim_processes: Callable[..., Any], unused_udp_port: int
) -> None:
    """Two real-time captures and a heap-size change: found by the verifier, none is loss."""
    sync = time.time() - 5.0
    port = unused_udp_port
    verify = await start_verify(
        port,
        "--digitiser-id",
        "4",
        "--digitiser-id",
        "5",
        "--sync-time",
        str(sync),
        "--adc-sample-rate",
        "4e6",
        "--clock-tolerance",
        "0.1",
        "--timeout",
        "2",
    )
    dsim: DsimProcess = await dsim_processes(
        "--format",
        "meerkat",
        "--digitiser-id",
        "4",
        "--adc-sample-rate",
        "4e6",
        "--sync-time",
        str(sync),
        "--align-samples",
        str(1 << 16),
        f"127.0.0.1:{port}",
        f"127.0.0.1:{port}",
    )
    client = await connect(dsim)
    async with asyncio.timeout(TIMEOUT):
        await client.request("capture-start", 100)
        await asyncio.sleep(0.5)
        await client.request("capture-start")
        await asyncio.sleep(0.3)
        await client.request("heap-size", 2560)
        await asyncio.sleep(0.3)
        await client.request("capture-stop")
    report = await finish_verify(verify)
    async with asyncio.timeout(TIMEOUT):
        await client.request("halt")
    client.close()
    assert await dsim.finish() == 0
    assert verify.returncode == 0, report
    assert report["format"] == "meerkat" and report["streams"] == [4, 5]
    assert report["end_of_stream_heaps"] == 0  # a MeerKAT receiver would stop on one
    assert report["captures"] == 2 and report["missing"] == 0 and report["clean"] is True
    assert report["clock_checked"] > 10 and report["off_clock"] == 0
    log = "".join(dsim.log)
    assert "(meerkat format)" in log and "packet size 5192 (one packet per heap)" in log


async def test_a_signal_stream_checked_with_the_sensors_of_dsim(
    dsim_processes: Callable[..., Any], unused_udp_port: int
) -> None:
    port = unused_udp_port
    dsim: DsimProcess = await dsim_processes(
        "--format",
        "meerkat",
        "--rate",
        "50e6",
        "--period",
        str(1 << 18),
        "--signals",
        "c = wgn(0.1); c + cw(0.5, 200e6); nodither(delay(c, 1.5));",
        f"127.0.0.1:{port}",
        f"127.0.0.1:{port}",
    )
    verify = await start_verify(
        port, "--katcp", f"127.0.0.1:{dsim.port}", "--heaps", "256", "--timeout", "10"
    )
    client = await connect(dsim)
    async with asyncio.timeout(TIMEOUT):
        await client.request("capture-start", 128)
    report = await finish_verify(verify)
    client.close()
    assert verify.returncode == 0, report
    assert report["clean"] is True and report["bad_payload"] == 0 and report["heaps"] == 256
    measured = {m["stream"]: m for m in report["measurements"]}
    tone = max(measured[0]["tones"], key=lambda t: t["level_dbfs"])
    assert abs(tone["frequency_hz"] - 200e6) < 1712e6 / (1 << 18)
    assert abs(tone["level_dbfs"] - 20 * math.log10(0.5)) < 0.2
    assert abs(measured[1]["noise_rms"] / 511 - 0.1) < 0.01
