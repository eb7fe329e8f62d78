"""End-to-end guarantees: the dsim process, driven over katcp, checked by dsim-verify."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import aiokatcp
import pytest

from .test_cli import Dsim

TIMEOUT = 60.0


async def start_verify(port: int, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsim.verify_cli", str(port), "--json", "--timeout", "20", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = await asyncio.to_thread(proc.stderr.readline)
    assert line.startswith("dsim-verify: receiving on"), line
    return proc


async def finish_verify(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    assert out, err
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.fixture
async def katcp(
    request: pytest.FixtureRequest, unused_udp_port: int
) -> AsyncIterator[tuple[Dsim, aiokatcp.Client, int]]:
    rate = getattr(request, "param", 125e6)
    dsim = await Dsim.start(f"127.0.0.1:{unused_udp_port}", "--rate", str(rate))
    async with asyncio.timeout(10):
        client = await aiokatcp.Client.connect("127.0.0.1", dsim.port)
    yield dsim, client, unused_udp_port
    async with asyncio.timeout(10):
        await client.request("halt")
    client.close()
    await client.wait_closed()
    assert await dsim.finish() == 0


async def sensor(client: aiokatcp.Client, name: str) -> int:
    async with asyncio.timeout(10):
        _, informs = await client.request("sensor-value", name)
    return int(informs[0].arguments[4])


async def test_100k_heaps_at_1_gbps_lose_nothing(katcp: tuple[Dsim, aiokatcp.Client, int]) -> None:
    dsim, client, port = katcp
    verify = await start_verify(port)
    async with asyncio.timeout(TIMEOUT):
        await client.request("capture-start", 100_000)
    report = await finish_verify(verify)
    assert verify.returncode == 0, report
    assert report["stopped_by"] == "end-of-stream"
    assert report["heaps"] == 100_000
    assert report["bytes"] == 100_000 * 8192
    assert report["missing"] == 0 and report["incomplete"] == 0
    assert report["clean"] is True
    # The server's counters agree with what arrived.
    assert await sensor(client, "transmitted-heaps") == report["heaps"]
    assert await sensor(client, "transmitted-bytes") == report["bytes"]


async def test_captures_and_resizes_are_segments_not_errors(
    katcp: tuple[Dsim, aiokatcp.Client, int],
) -> None:
    dsim, client, port = katcp
    verify = await start_verify(port, "--captures", "2")
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
    assert isinstance(segments, list) and len(segments) == 3
    assert segments[0] == {
        "capture": 0, "heap_size": 8192, "first_timestamp": 0, "heaps": 3000, "stream": None
    }
    assert segments[1]["capture"] == 1 and segments[1]["first_timestamp"] == 3000 * 8192
    assert segments[2]["capture"] == 1 and segments[2]["heap_size"] == 4096
    assert segments[2]["first_timestamp"] == int(first_small)
    assert segments[1]["heaps"] + segments[2]["heaps"] == int(sent)
    assert report["heaps"] == await sensor(client, "transmitted-heaps")
