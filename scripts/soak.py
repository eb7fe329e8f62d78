#!/usr/bin/env python3
"""Soak benchmark: dsim at a paced rate for minutes, checked end to end by dsim-verify.

Starts ``dsim-verify`` on a free UDP port of 127.0.0.1, then ``dsim`` sending to it
at ``--rate`` bytes/s, starts a capture over katcp and lets it run for
``--minutes``. Every ``--interval`` seconds (default 10) it records dsim's resident
memory (VmRSS from /proc), the verifier's, and dsim's ``transmitted-heaps`` sensor.
Then it stops the capture and compares what dsim says it sent with what the verifier
received and found.

Targets (issue 4): zero heaps lost at 1 Gb/s (``--rate 125e6``), and dsim's memory
flat after warm-up: every sample after the first ``--warmup`` seconds within 5 % of
the first one after it.

    .venv/bin/python scripts/soak.py --minutes 10 --rate 125e6

Prints a table and a verdict, and writes JSON (``--out``, default
bench-results/soak.json). Exit status 0 if both targets were met, 1 if not.
Sends only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchkit import RESULTS_DIR, katcp
from benchkit.dsimproc import DsimProcess, drain_lines, verifier_module
from benchkit.net import free_udp_port
from benchkit.procstat import rss_kib

MEMORY_TOLERANCE = 0.05


@dataclass
class Sample:
    seconds: float
    dsim_rss_kib: int
    verify_rss_kib: int
    transmitted_heaps: int


@dataclass
class Result:
    minutes: float
    rate: float
    heap_size: int
    samples: list[Sample] = field(default_factory=list)
    sent_heaps: int = 0
    sent_bytes: int = 0
    verify: dict[str, Any] = field(default_factory=dict)
    lost: int = 0
    memory_baseline_kib: int = 0
    memory_max_deviation: float = 0.0
    passed: bool = False


async def soak(args: argparse.Namespace) -> Result:
    result = Result(args.minutes, args.rate, args.heap_size)
    port = free_udp_port()
    verify = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        verifier_module(),
        str(port),
        "--json",
        "--buffer",
        str(args.buffer),
        "--timeout",
        "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert verify.stderr is not None and verify.stdout is not None
    await verify.stderr.readline()  # "receiving on ..." : the socket is bound
    verify_log: collections.deque[str] = collections.deque(maxlen=50)
    verify_drain = asyncio.get_running_loop().create_task(drain_lines(verify.stderr, verify_log))
    dsim = await DsimProcess.start(
        ["--rate", str(args.rate), "--heap-size", str(args.heap_size), f"127.0.0.1:{port}"]
    )
    client = await katcp.connect(dsim.katcp_port)
    try:
        await katcp.request(client, "capture-start")
        start = time.monotonic()
        end = start + args.minutes * 60
        print(f"{'time s':>8} {'dsim RSS KiB':>13} {'verify RSS KiB':>15} {'heaps sent':>12}")
        while True:
            now = time.monotonic()
            sample = Sample(
                round(now - start, 1),
                rss_kib(dsim.pid),
                rss_kib(verify.pid),
                await katcp.sensor_int(client, "transmitted-heaps"),
            )
            result.samples.append(sample)
            print(
                f"{sample.seconds:8.1f} {sample.dsim_rss_kib:13d} "
                f"{sample.verify_rss_kib:15d} {sample.transmitted_heaps:12d}",
                flush=True,
            )
            if now >= end:
                break
            await asyncio.sleep(min(args.interval, end - now))
        await katcp.request(client, "capture-stop", timeout=60)
        result.sent_heaps = await katcp.sensor_int(client, "transmitted-heaps")
        result.sent_bytes = await katcp.sensor_int(client, "transmitted-bytes")
        async with asyncio.timeout(120):
            out = await verify.stdout.read()
            await verify.wait()
            await verify_drain
        result.verify = json.loads(out)
        await katcp.request(client, "halt")
    finally:
        await katcp.close(client)
        await dsim.wait()
    result.lost = result.sent_heaps - int(result.verify["heaps"])
    after = [s.dsim_rss_kib for s in result.samples if s.seconds >= args.warmup]
    if after:
        result.memory_baseline_kib = after[0]
        result.memory_max_deviation = max(abs(m - after[0]) / after[0] for m in after)
    result.passed = (
        result.lost == 0
        and result.verify.get("clean") is True
        and result.memory_max_deviation <= MEMORY_TOLERANCE
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=125e6, help="bytes/s (default 1 Gb/s)")
    parser.add_argument("--heap-size", type=int, default=8192)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument(
        "--warmup",
        type=float,
        default=30.0,
        help="seconds before the memory baseline (default %(default)s)",
    )
    parser.add_argument(
        "--buffer", type=int, default=256 * 1024 * 1024, help="verifier socket buffer in bytes"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "soak.json")
    args = parser.parse_args()
    result = asyncio.run(soak(args))
    v = result.verify
    print(
        f"\nsent {result.sent_heaps} heaps ({result.sent_bytes} bytes) in {args.minutes:g} min "
        f"at {args.rate:g} B/s; verifier: {v['heaps']} heaps, missing {v['missing']}, "
        f"duplicates {v['duplicates']}, bad payload {v['bad_payload']}, "
        f"incomplete {v['incomplete']}, clean {v['clean']}; lost {result.lost}"
    )
    print(
        f"dsim RSS after {args.warmup:g} s warm-up: baseline {result.memory_baseline_kib} KiB, "
        f"max deviation {100 * result.memory_max_deviation:.2f} % "
        f"(target <= {100 * MEMORY_TOLERANCE:.0f} %)"
    )
    print("PASS" if result.passed else "FAIL")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(asdict(result), indent=2))
    print(f"# written to {args.out}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
