#!/usr/bin/env python3
"""Control latency under load: ``?watchdog`` round trips while dsim streams flat out.

Starts ``dsim`` (``--katcp-port 0``, unlimited rate) sending to an unread UDP socket
on 127.0.0.1, connects an ``aiokatcp.Client`` and times ``--requests`` sequential
``?watchdog`` round trips, first idle and then while a capture runs at full speed
(the send path competes with the katcp handler for the Python thread). Prints
percentiles and the achieved throughput during the loaded phase, and writes JSON.

Target (issue 5): p99 under 10 ms while streaming.

    .venv/bin/python scripts/bench_katcp.py [--heap-size 8192] [--requests 2000] [-- DSIM ARGS]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import sys
import time
from pathlib import Path

import aiokatcp

ROOT = Path(__file__).resolve().parent.parent
TARGET_P99 = 0.010


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50_ms": 1e3 * pick(0.50),
        "p90_ms": 1e3 * pick(0.90),
        "p99_ms": 1e3 * pick(0.99),
        "max_ms": 1e3 * ordered[-1],
        "mean_ms": 1e3 * statistics.fmean(ordered),
    }


async def round_trips(client: aiokatcp.Client, n: int, gap: float) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        async with asyncio.timeout(5):
            await client.request("watchdog")
        times.append(time.perf_counter() - start)
        await asyncio.sleep(gap)
    return times


async def sensor(client: aiokatcp.Client, name: str) -> float:
    _, informs = await client.request("sensor-value", name)
    return float(informs[0].arguments[4])


async def run(args: argparse.Namespace) -> dict[str, object]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        port = sink.getsockname()[1]
        dsim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dsim", "--katcp-port", "0", "--heap-size",
            str(args.heap_size), "--log-level", "WARNING", *args.dsim_args,
            f"127.0.0.1:{port}", stderr=asyncio.subprocess.PIPE,
        )
        assert dsim.stderr is not None
        # At WARNING the listening line is not logged: find the port from the process.
        katcp_port = await _katcp_port(dsim.pid)
        client = await aiokatcp.Client.connect("127.0.0.1", katcp_port)
        try:
            idle = await round_trips(client, args.requests, args.gap)
            await client.request("capture-start")
            await asyncio.sleep(1.0)
            heaps0, t0 = await sensor(client, "transmitted-bytes"), time.monotonic()
            loaded = await round_trips(client, args.requests, args.gap)
            heaps1, t1 = await sensor(client, "transmitted-bytes"), time.monotonic()
            await client.request("capture-stop")
            await client.request("halt")
        finally:
            client.close()
            await client.wait_closed()
            await dsim.wait()
    return {
        "heap_size": args.heap_size,
        "requests": args.requests,
        "dsim_args": args.dsim_args,
        "idle": percentiles(idle),
        "streaming": percentiles(loaded),
        "streaming_throughput_MBps": (heaps1 - heaps0) / (t1 - t0) / 1e6,
    }


async def _katcp_port(pid: int) -> int:
    """The TCP port the dsim process `pid` listens on (from /proc/net/tcp and its fds)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue
            if m := re.fullmatch(r"socket:\[(\d+)\]", target):
                inodes.add(m.group(1))
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                return int(fields[1].split(":")[1], 16)
        await asyncio.sleep(0.1)
    raise RuntimeError("dsim did not start listening")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heap-size", type=int, default=8192)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--gap", type=float, default=0.001, help="seconds between requests")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "katcp_latency.json")
    parser.add_argument("dsim_args", nargs="*", help="extra dsim arguments (after --)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(f"?watchdog round trip, {args.requests} requests, heap size {args.heap_size}")
    print(f"{'':10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for phase in ("idle", "streaming"):
        p = result[phase]
        assert isinstance(p, dict)
        print(f"{phase:10} {p['p50_ms']:8.2f} {p['p90_ms']:8.2f} {p['p99_ms']:8.2f} "
              f"{p['max_ms']:8.2f}")
    print(f"throughput while measuring: {result['streaming_throughput_MBps']:.0f} MB/s")
    streaming = result["streaming"]
    assert isinstance(streaming, dict)
    ok = streaming["p99_ms"] < 1e3 * TARGET_P99
    print(f"p99 target < {1e3 * TARGET_P99:.0f} ms: {'met' if ok else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
