"""dsim-verify: the checker's rules, a defective sender, and the command itself."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterable

import numpy as np
import pytest
import spead2
import spead2.send
import spead2.send.asyncio

from dsim import layout
from dsim.generator import sample_value
from dsim.verify import Checker, Verifier, VerifyConfig

HEAP = 1024


def feed(checker: Checker, heaps: Iterable[int | tuple[int, int]], size: int = HEAP) -> None:
    """Feed heap numbers (or (number, value) for a wrong payload) of a contiguous stream."""
    for h in heaps:
        n, value = h if isinstance(h, tuple) else (h, sample_value(h))
        checker.heap(n * size, np.full(size, value, np.int8))


def test_clean_stream() -> None:
    checker = Checker()
    checker.descriptors(HEAP)
    feed(checker, range(300))  # the int8 counter wraps: still clean
    checker.end_of_stream()
    r = checker.report
    assert (r.heaps, r.bytes, r.captures, r.problems) == (300, 300 * HEAP, 1, 0)
    assert r.clean


def test_missing_heaps_are_counted_with_their_range() -> None:
    checker = Checker()
    feed(checker, [0, 1, 2, 5, 6, 9])
    r = checker.report
    assert r.missing == 4
    assert r.missing_ranges == [(3 * HEAP, 5 * HEAP), (7 * HEAP, 9 * HEAP)]
    assert r.bad_payload == 0  # the counter skipped along with the timestamps
    assert not r.clean


def test_duplicates_and_out_of_order() -> None:
    checker = Checker()
    feed(checker, [0, 1, 2, 2, 4, 3, 5, 1])
    r = checker.report
    assert r.duplicates == 2 and r.duplicate_timestamps == [2 * HEAP, 1 * HEAP]
    assert r.out_of_order == 1 and r.out_of_order_timestamps == [3 * HEAP]
    assert r.missing == 0  # heap 3 came late, not never
    assert r.bad_payload == 0


def test_wrong_payloads() -> None:
    checker = Checker()
    feed(checker, [0, 1, (2, 77), 3])
    samples = np.full(HEAP, sample_value(4), np.int8)
    samples[100] = 0  # one bad sample
    checker.heap(4 * HEAP, samples)
    r = checker.report
    assert r.bad_payload == 2 and r.bad_payload_timestamps == [2 * HEAP, 4 * HEAP]


def test_captures_and_heap_size_changes_are_segments_not_errors() -> None:
    checker = Checker()
    checker.descriptors(HEAP)
    feed(checker, range(10))
    checker.end_of_stream()
    feed(checker, range(10, 20))  # the next capture continues the counters
    checker.descriptors(2 * HEAP)
    for n in range(20, 25):  # then the heap size doubles
        checker.heap(20 * HEAP + (n - 20) * 2 * HEAP, np.full(2 * HEAP, sample_value(n), np.int8))
    checker.end_of_stream()
    r = checker.report
    assert r.clean and r.captures == 2
    assert [(s.capture, s.heap_size, s.first_timestamp, s.heaps) for s in r.segments] == [
        (0, HEAP, 0, 10),
        (1, HEAP, 10 * HEAP, 10),
        (1, 2 * HEAP, 20 * HEAP, 5),
    ]


def test_a_size_change_without_descriptors_is_reported() -> None:
    checker = Checker()
    checker.descriptors(HEAP)
    feed(checker, range(3))
    checker.heap(3 * HEAP, np.full(2 * HEAP, sample_value(3), np.int8))
    assert checker.report.undescribed == 1


def test_a_restarted_sender_starts_a_new_reference() -> None:
    checker = Checker()
    feed(checker, range(5, 10))
    checker.end_of_stream()
    feed(checker, range(0, 5))  # timestamps back at 0: another run of dsim
    checker.end_of_stream()
    assert checker.report.clean and checker.report.captures == 2


# ------------------------------------------------------------ a defective sender


async def send_heaps(port: int, heaps: list[tuple[int, int]], heap_size: int = 8192) -> None:
    """Send (timestamp, value) heaps in the dsim layout, descriptors first, then an end."""
    config = spead2.send.StreamConfig(max_packet_size=8972, rate=50e6)
    stream = spead2.send.asyncio.UdpStream(spead2.ThreadPool(), [("127.0.0.1", port)], config)
    ig = layout.make_item_group(heap_size)
    for i, (timestamp, value) in enumerate(heaps):
        ig["timestamp"].value = timestamp
        ig["adc_samples"].value = np.full(heap_size, value, np.int8)
        await stream.async_send_heap(ig.get_heap(descriptors="all" if i == 0 else "none"))
    await stream.async_send_heap(ig.get_end())


async def test_injected_defects_are_located_exactly() -> None:
    size = 8192
    good = [(n * size, sample_value(n)) for n in range(200)]
    heaps = good[:50] + good[51:120] + [good[119]] + good[120:160]
    heaps += [(good[160][0], 99)] + good[161:]
    verifier = Verifier(VerifyConfig(port=0, idle_timeout=10))
    task = asyncio.create_task(verifier.run())
    await send_heaps(verifier.port, heaps, size)
    report = await task
    assert report.stopped_by == "end-of-stream"
    assert report.heaps == 200
    assert report.missing == 1 and report.missing_ranges == [(50 * size, 51 * size)]
    assert report.duplicates == 1 and report.duplicate_timestamps == [119 * size]
    assert report.bad_payload == 1 and report.bad_payload_timestamps == [160 * size]
    assert report.out_of_order == 0 and report.incomplete == 0
    assert not report.clean


def run_verify_cli(port_arg: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dsim.verify_cli", port_arg, "--json", "--timeout", "10", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def wait_ready(proc: subprocess.Popen[str]) -> None:
    """Wait for the 'receiving on' line, so the socket is bound before we send."""
    assert proc.stderr is not None
    line = await asyncio.to_thread(proc.stderr.readline)
    assert line.startswith("dsim-verify: receiving on"), line


async def test_cli_reports_defects_with_exit_status_1(unused_udp_port: int) -> None:
    proc = run_verify_cli(str(unused_udp_port))
    await wait_ready(proc)
    heaps = [(n * 8192, sample_value(n)) for n in range(20) if n != 7]
    await send_heaps(unused_udp_port, heaps)
    out, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 1, err
    report = json.loads(out)
    for key in ["heaps", "bytes", "missing", "duplicates", "out_of_order", "bad_payload",
                "incomplete", "captures"]:
        assert isinstance(report[key], int), key
    assert report["heaps"] == 19 and report["missing"] == 1
    assert report["missing_ranges"] == [[7 * 8192, 8 * 8192]]
    assert report["clean"] is False


async def test_cli_clean_stream_exit_0_and_text_summary(unused_udp_port: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsim.verify_cli", f"127.0.0.1:{unused_udp_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    await wait_ready(proc)
    await send_heaps(unused_udp_port, [(n * 8192, sample_value(n)) for n in range(30)])
    out, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0, err
    assert out.startswith("30 heaps, 245760 bytes in ")
    assert "missing 0, duplicates 0, out of order 0, bad payload 0" in out
    assert "capture 0: 30 heaps of 8192 samples from timestamp 0" in out
    assert out.rstrip().endswith("CLEAN (stopped by end-of-stream)")


def test_cli_timeout_with_nothing_received_exits_1(unused_udp_port: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dsim.verify_cli", str(unused_udp_port), "--timeout", "0.5"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1
    assert "NOTHING RECEIVED (stopped by timeout)" in result.stdout


def test_cli_interrupt_still_prints_the_summary(unused_udp_port: int) -> None:
    proc = run_verify_cli(str(unused_udp_port))
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("dsim-verify: receiving on")
    proc.send_signal(2)  # SIGINT, as Ctrl-C
    out, _ = proc.communicate(timeout=30)
    assert json.loads(out)["stopped_by"] == "interrupted"
    assert proc.returncode == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["banana"], "bad port"),
        (["127.0.0.1:0"], "port must be 1-65535"),
        (["7148", "--heaps", "-1"], "must be positive"),
        (["7148", "--timeout", "x"], "not a number"),
        ([], "the following arguments are required"),
        (["7148", "--multicast", "10.0.0.1"], "not a multicast group"),
        (["7148", "--sync-time", "5"], "--sync-time and --adc-sample-rate go together"),
    ],
)
def test_cli_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dsim.verify_cli", *args], capture_output=True, text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert message in lines[-1] and lines[-1].startswith("dsim-verify: error: ")
