#!/usr/bin/env python3
"""Sender-only throughput benchmark: dsim's batching engine against two reference senders.

What is measured
----------------
Payload throughput (ADC-sample bytes per second, MB/s = 10**6 bytes/s) of three
senders (``--senders``, default all three) that put the same heaps (dsim's wire format, built by
:func:`dsim.layout.make_item_group`: SPEAD-64-48, an immediate ``timestamp`` and
an int8 ``adc_samples`` array of heap-size bytes) on the wire as fast as they
can, over UDP to 127.0.0.1:

1. **engine**: :class:`dsim.engine.Engine` with
   ``TransportConfig(kind=UDP, destinations=[Endpoint("127.0.0.1", port)],
   max_packet_size=P, send_core=--send-core)`` and ``heap_size=H``, i.e. the
   batching technique (a few batches of pre-built heaps, each batch refilled
   with one numpy operation and handed to spead2 with one ``async_send_heaps``
   call). The engine is created *outside* the timed region; the timer covers
   ``engine.start(N)`` up to the return of ``await engine.wait_capture()``.
   Afterwards ``engine.statistics()`` must show exactly N heaps, N * H bytes
   and no send errors, or the run is reported as failed (exit status 1).

2. **plain**: the straightforward one-heap-at-a-time pipelined sender that
   spead2's tutorial builds before it introduces batching (its
   ``tut_8_send_reuse_memory.py`` pattern). It owns a
   ``spead2.send.asyncio.UdpStream`` (own ``spead2.ThreadPool(1)``, pinned
   to --send-core if given; ``StreamConfig(max_packet_size=P, rate=0,
   max_heaps=K + 1)``, default socket buffer like the engine), the same item
   group, and K (``--plain-in-flight``, default 2, as in the tutorial)
   preallocated int8 sample buffers of H bytes. For heap i it: awaits the
   future of the heap that last used buffer ``i % K`` (so at most K heaps are
   in flight and no buffer is overwritten while spead2 still reads it); fills
   that buffer with ``int8(i)`` (``ndarray.fill``); sets ``timestamp = i * H``
   and ``adc_samples = buffer``; builds a new heap with
   ``item_group.get_heap(descriptors="all" for the first heap else "none",
   data="all")``; and sends it with ``stream.async_send_heap(heap)``. Heaps
   are sent individually; nothing is batched. The stream and buffers are
   created outside the timed region; the timer covers the loop and the wait
   for the last heaps. Any failed heap future marks the run as failed.

3. **tutorial**: the batched sender of spead2's tutorial
   (``tut_11_send_batch_heaps.py``), written anew here; it is the reference
   the engine must at least match. It owns a ``spead2.send.asyncio.UdpStream``
   (own ``spead2.ThreadPool(1)``, pinned to --send-core if given;
   ``StreamConfig(max_packet_size=P, rate=0, max_heaps=2 * B + 1)``, default
   socket buffer) and the same item group. B = ``max(1, 512 KiB // H)`` heaps
   make a batch, and there are two batch states, each owning an int8 samples
   array of shape (B, H) and a ``'>u8'`` timestamps array of B entries
   (allocated with ``np.ones`` as in the tutorial, so their pages are touched
   before the timer starts). Each state's heaps are built once, before the
   timer, as a ``spead2.send.HeapReferenceList`` of B heaps whose items
   reference the views ``samples[j, ...]`` and ``timestamps[j, ...]``
   (``get_heap(descriptors="none", data="all")``); one extra list over state
   0's arrays, identical except that its heap 0 carries the descriptors, is
   used for the first batch of the run only. For the batch starting at heap i
   (``end = min(i + B, N)``, ``n = end - i``) it: awaits the future of that
   state's previous batch, if any (the states alternate, so at most two
   batches are in flight); fills ``samples[:n]`` with
   ``np.arange(i, end).astype(np.int8)[:, np.newaxis]`` (one broadcast
   assignment, every sample of heap k is ``int8(k)``) and ``timestamps[:n]``
   with ``np.arange(i * H, end * H, H)``; takes the state's list, sliced to
   its first n heaps for a partial last batch; and sends it with one
   ``stream.async_send_heaps(heaps, spead2.send.GroupMode.SERIAL)`` call,
   keeping the returned future in the state. After the loop it awaits both
   states' futures. Differences from the tutorial program: the tutorial pins
   its spead2 thread to core 0 and the Python thread to core 1, here nothing
   is pinned unless --send-core is given (then only spead2's thread, as for
   the other senders); its ``max_heaps`` is ``2 * B``, here one more for the
   end heap; and it sends the end heap after stopping its timer. The stream,
   arrays and heaps are created outside the timed region; the timer covers
   the batch loop and the wait for the last batches. Any failed future marks
   the run as failed.

All timed regions also include sending and awaiting the end-of-stream heap,
so all senders do the same work: N data heaps (the first with descriptors)
and one end heap. Throughput is ``N * H / elapsed``.

The sink is a UDP socket bound to 127.0.0.1 port 0 that is never read: the
kernel queues packets until its buffer is full and drops the rest silently,
so the sender sees no errors and no receiver competes for CPU (although the
kernel's loopback receive path up to the drop still runs, usually on the
sending CPU). Packets are only ever sent to 127.0.0.1. The CSV's
``sink_packets`` column counts the packets the kernel dropped at the sink
socket during a measurement (from ``/proc/net/udp``); once the socket's
buffer is full (after the warm-up) that is every packet that reached it,
which cross-checks that the heaps really went out (packets per heap).

How a run is organised
----------------------
* Configurations are heap size x packet size (``--heap-sizes``,
  ``--packet-sizes``). For each repetition (outermost loop, ``--repeats``,
  at least 3) every configuration is measured once, all senders back to
  back. Their order is rotated by one place between consecutive
  configurations and consecutive repetitions (with three senders and three
  repetitions each sender takes each position once per configuration).
  Medians over the repetitions are reported.
* Measurement size: by default each sender runs about ``--seconds`` (0.5 s)
  per measurement. Before the repetitions a short calibration run of each
  sender in each configuration (doubling the heap count until it takes at
  least a quarter of ``--seconds``; it also serves as warm-up) estimates its
  rate, and the heap count N for that sender and configuration is fixed from
  it for all repetitions. (A fixed payload of ~1 GiB would take ~0.4 s for the
  engine with jumbo packets but many seconds for the plain sender with small
  heaps, so the size is set by time.) ``--bytes B`` instead sends a fixed
  ``ceil(B / H)`` heaps per measurement for every sender, with no calibration.

Output: a table of medians on stdout (progress on stderr), with the ratios
engine/plain and engine/tutorial of the medians, a CSV with every
raw measurement plus one median row per sender and configuration, and a PNG
plot of MB/s against heap size (log x axis, one line per sender x packet
size, bars from the minimum to the maximum repetition). The table and plot
headers name the dsim tree (``git describe``) as it was when the run started,
which is the code measured; a warning follows if it changed during the run.

How to run
----------
From the repository root, with the project's venv::

    .venv/bin/python scripts/bench_send.py                 # full run, a few minutes
    .venv/bin/python scripts/bench_send.py --quick         # smoke run, ~5 s
    .venv/bin/python scripts/bench_send.py --heap-sizes 8K,1M --packet-sizes 9000 \
        --repeats 5 --seconds 1 --send-core 1 --csv /tmp/b.csv --plot /tmp/b.png
    .venv/bin/python scripts/bench_send.py --senders engine,tutorial

Sizes accept K/M/G suffixes (powers of 1024, optional ``iB``). By default
nothing is pinned; ``--send-core C`` pins spead2's sending thread of every
sender to core C (for the engine it is passed to
``TransportConfig(send_core=C)``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import logging
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import spead2
import spead2.send
import spead2.send.asyncio

from dsim.engine import Engine
from dsim.errors import ConfigError
from dsim.generator import sample_value
from dsim.layout import make_item_group, validate_heap_size
from dsim.transport import (
    MAX_PACKET_SIZE,
    MIN_PACKET_SIZE,
    Endpoint,
    TransportConfig,
    TransportKind,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench-results"
DEFAULT_HEAP_SIZES = [8 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20]
QUICK_HEAP_SIZES = [8 << 10, 64 << 10, 1 << 20]
DEFAULT_PACKET_SIZES = [1472, 9000]
DEFAULT_SECONDS = 0.5
QUICK_SECONDS = 0.05
MIN_REPEATS = 3
#: Fewest heaps in one measurement, so that start-up costs stay small.
MIN_HEAPS = 8
SENDERS = ("engine", "plain", "tutorial")
#: Target bytes per batch of the tutorial sender, and its number of batch states.
TUTORIAL_BATCH_BYTES = 512 * 1024
TUTORIAL_BATCHES = 2
SINK_HOST = "127.0.0.1"

#: A sender run: (heap count) -> elapsed seconds; raises BenchError on a failed check.
RunFn = Callable[[int], Awaitable[float]]


class BenchError(RuntimeError):
    """A measurement whose result cannot be trusted (send errors, wrong counts)."""


@dataclass(frozen=True)
class Config:
    heap_size: int
    packet_size: int


@dataclass(frozen=True)
class Measurement:
    sender: str
    config: Config
    repeat: int
    position: int  # 1-based place of this sender in the configuration's round
    heaps: int
    elapsed: float
    sink_packets: int | None

    @property
    def payload_bytes(self) -> int:
        return self.heaps * self.config.heap_size

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / self.elapsed / 1e6


# --------------------------------------------------------------------- parsing

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)
_SIZE_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30}


def parse_size(text: str) -> int:
    """``"8192"``, ``"8K"``, ``"8KiB"``, ``"1M"`` -> bytes (K/M/G are powers of 1024)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (expected e.g. 8192, 8K, 1MiB)")
    value = int(match.group(1)) << _SIZE_SHIFT[match.group(2).lower()]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, not {text!r}")
    return value


def parse_heap_sizes(text: str) -> list[int]:
    sizes = [parse_size(part) for part in text.split(",") if part.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError("no heap sizes given")
    for size in sizes:
        try:
            validate_heap_size(size)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return sorted(set(sizes))


def parse_packet_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad packet size list {text!r}") from None
    if not sizes:
        raise argparse.ArgumentTypeError("no packet sizes given")
    for size in sizes:
        if not MIN_PACKET_SIZE <= size <= MAX_PACKET_SIZE:
            raise argparse.ArgumentTypeError(
                f"packet size must be {MIN_PACKET_SIZE}-{MAX_PACKET_SIZE}, not {size}"
            )
    return sorted(set(sizes))


def parse_senders(text: str) -> tuple[str, ...]:
    """``"engine,tutorial"`` -> the named senders, in the canonical order of SENDERS."""
    names = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(names - set(SENDERS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown sender(s) {', '.join(unknown)} (choose from {', '.join(SENDERS)})"
        )
    if not names:
        raise argparse.ArgumentTypeError("no senders given")
    return tuple(sender for sender in SENDERS if sender in names)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Sender-only UDP throughput benchmark of dsim's batching engine against a "
            "plain one-heap-at-a-time spead2 sender and spead2's batched tutorial sender, "
            "into an unread socket on 127.0.0.1."
        ),
        epilog="See the module docstring (top of this file) for exactly what is timed.",
    )
    parser.add_argument(
        "--senders",
        type=parse_senders,
        default=SENDERS,
        metavar="LIST",
        help=f"comma-separated senders to measure (default {','.join(SENDERS)})",
    )
    parser.add_argument(
        "--heap-sizes",
        type=parse_heap_sizes,
        default=None,
        metavar="LIST",
        help="comma-separated heap sizes in bytes, K/M suffixes allowed "
        "(default 8K,16K,64K,256K,1M,4M; with --quick 8K,64K,1M)",
    )
    parser.add_argument(
        "--packet-sizes",
        type=parse_packet_sizes,
        default=None,
        metavar="LIST",
        help="comma-separated maximum packet sizes in bytes (default 1472,9000)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=MIN_REPEATS,
        help=f"interleaved repetitions per measurement, at least {MIN_REPEATS} (default 3)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--seconds",
        type=positive_float,
        default=None,
        help=f"target duration of one measurement; heap counts are calibrated per sender "
        f"and configuration (default {DEFAULT_SECONDS}; with --quick {QUICK_SECONDS})",
    )
    size.add_argument(
        "--bytes",
        type=parse_size,
        default=None,
        help="instead of --seconds: fixed payload per measurement (e.g. 1G), the same "
        "heap count for every sender, no calibration",
    )
    parser.add_argument(
        "--plain-in-flight",
        type=positive_int,
        default=2,
        metavar="K",
        help="heaps the plain sender keeps in flight (default 2, as spead2's tutorial)",
    )
    parser.add_argument(
        "--send-core",
        type=int,
        default=None,
        metavar="CORE",
        help="pin spead2's sending thread (every sender) to this CPU core (default: no pinning)",
    )
    parser.add_argument(
        "--csv",
        type=Path,
        default=None,
        metavar="PATH",
        help="CSV output (default bench-results/bench_send.csv, or bench_send_quick.csv)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PATH",
        help="PNG plot output (default bench-results/bench_send.png, or bench_send_quick.png)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fast smoke run: fewer heap sizes and 0.05 s measurements (explicit flags win)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.repeats < MIN_REPEATS:
        parser.error(f"--repeats must be at least {MIN_REPEATS}, not {args.repeats}")
    if args.send_core is not None and args.send_core not in os.sched_getaffinity(0):
        usable = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
        parser.error(f"--send-core {args.send_core} is not a usable core (usable: {usable})")
    suffix = "_quick" if args.quick else ""
    if args.heap_sizes is None:
        args.heap_sizes = QUICK_HEAP_SIZES if args.quick else DEFAULT_HEAP_SIZES
    if args.packet_sizes is None:
        args.packet_sizes = DEFAULT_PACKET_SIZES
    if args.seconds is None and args.bytes is None:
        args.seconds = QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    if args.csv is None:
        args.csv = RESULTS_DIR / f"bench_send{suffix}.csv"
    if args.plot is None:
        args.plot = RESULTS_DIR / f"bench_send{suffix}.png"
    return args


# ------------------------------------------------------------------------ sink


class UdpSink:
    """A UDP socket on 127.0.0.1 that is never read; counts the packets dropped at it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((SINK_HOST, 0))
        self.port: int = self.sock.getsockname()[1]
        self._inode = os.fstat(self.sock.fileno()).st_ino

    def drops(self) -> int | None:
        """The socket's drop counter from /proc/net/udp, or None if unavailable."""
        try:
            with open("/proc/net/udp") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if len(fields) >= 13 and fields[9] == str(self._inode):
                        return int(fields[12])
        except (OSError, ValueError, StopIteration):
            return None
        return None

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------- senders


def make_engine(port: int, config: Config, send_core: int | None) -> Engine:
    transport = TransportConfig(
        kind=TransportKind.UDP,
        destinations=[Endpoint(SINK_HOST, port)],
        max_packet_size=config.packet_size,
        send_core=send_core,
    )
    return Engine(transport, heap_size=config.heap_size)


async def run_engine(port: int, config: Config, heaps: int, send_core: int | None) -> float:
    """One engine measurement of `heaps` heaps; returns the elapsed seconds."""
    engine = make_engine(port, config, send_core)
    try:
        start = time.perf_counter()
        engine.start(heaps)
        sent = await engine.wait_capture()
        elapsed = time.perf_counter() - start
    finally:
        await engine.close()
    stats = engine.statistics()
    expected_bytes = heaps * config.heap_size
    problems = []
    if engine.failure is not None:
        problems.append(f"engine failed: {engine.failure!r}")
    if sent != heaps or stats.capture_heaps != heaps or stats.heaps != heaps:
        problems.append(
            f"heap count: asked {heaps}, wait_capture {sent}, "
            f"capture_heaps {stats.capture_heaps}, heaps {stats.heaps}"
        )
    if stats.bytes != expected_bytes:
        problems.append(f"bytes {stats.bytes} != {expected_bytes}")
    if stats.send_errors:
        problems.append(f"{stats.send_errors} send errors")
    if problems:
        raise BenchError(f"engine {describe(config)}: " + "; ".join(problems))
    return elapsed


class PlainSender:
    """One-heap-at-a-time pipelined sender (spead2 tutorial style, no batching).

    See the module docstring for exactly what each heap costs.
    """

    def __init__(self, port: int, config: Config, in_flight: int, send_core: int | None) -> None:
        self.config = config
        if send_core is None:
            self.thread_pool = spead2.ThreadPool(1)
        else:
            self.thread_pool = spead2.ThreadPool(1, [send_core])
        stream_config = spead2.send.StreamConfig(
            max_packet_size=config.packet_size, rate=0.0, max_heaps=in_flight + 1
        )
        self.stream = spead2.send.asyncio.UdpStream(
            self.thread_pool, [(SINK_HOST, port)], stream_config
        )
        self.item_group = make_item_group(config.heap_size)
        self.buffers = [np.zeros(config.heap_size, np.int8) for _ in range(in_flight)]

    async def send(self, heaps: int) -> None:
        heap_size = self.config.heap_size
        item_group = self.item_group
        timestamp_item = item_group["timestamp"]
        samples_item = item_group["adc_samples"]
        stream = self.stream
        buffers = self.buffers
        futures: list[asyncio.Future[int] | None] = [None] * len(buffers)
        for i in range(heaps):
            slot = i % len(buffers)
            previous = futures[slot]
            if previous is not None:
                await previous  # that heap is sent: its buffer may be rewritten
            buffer = buffers[slot]
            buffer.fill(sample_value(i))
            timestamp_item.value = i * heap_size
            samples_item.value = buffer
            heap = item_group.get_heap(descriptors="all" if i == 0 else "none", data="all")
            futures[slot] = stream.async_send_heap(heap)
        for future in futures:
            if future is not None:
                await future
        await stream.async_send_heap(item_group.get_end())


async def run_plain(
    port: int, config: Config, heaps: int, in_flight: int, send_core: int | None
) -> float:
    """One plain-sender measurement of `heaps` heaps; returns the elapsed seconds."""
    sender = PlainSender(port, config, in_flight, send_core)
    start = time.perf_counter()
    try:
        await sender.send(heaps)
    except (RuntimeError, OSError) as exc:
        raise BenchError(f"plain {describe(config)}: send failed: {exc}") from exc
    return time.perf_counter() - start


@dataclass
class TutorialBatch:
    """One batch state of the tutorial sender: its arrays, its heaps and its last send."""

    samples: np.ndarray  # int8, shape (batch_heaps, heap_size)
    timestamps: np.ndarray  # '>u8', shape (batch_heaps,)
    heaps: spead2.send.HeapReferenceList
    future: asyncio.Future[int] | None = None


class TutorialSender:
    """The batched sender of spead2's tutorial (``tut_11_send_batch_heaps.py``).

    See the module docstring for exactly what each batch costs.
    """

    def __init__(self, port: int, config: Config, send_core: int | None) -> None:
        self.config = config
        heap_size = config.heap_size
        self.batch_heaps = max(1, TUTORIAL_BATCH_BYTES // heap_size)
        if send_core is None:
            self.thread_pool = spead2.ThreadPool(1)
        else:
            self.thread_pool = spead2.ThreadPool(1, [send_core])
        stream_config = spead2.send.StreamConfig(
            max_packet_size=config.packet_size,
            rate=0.0,
            max_heaps=TUTORIAL_BATCHES * self.batch_heaps + 1,
        )
        self.stream = spead2.send.asyncio.UdpStream(
            self.thread_pool, [(SINK_HOST, port)], stream_config
        )
        self.item_group = make_item_group(heap_size)
        self.batches: list[TutorialBatch] = []
        for _ in range(TUTORIAL_BATCHES):
            samples = np.ones((self.batch_heaps, heap_size), np.int8)
            timestamps = np.ones(self.batch_heaps, ">u8")
            heaps = self._make_heaps(samples, timestamps, descriptors=False)
            self.batches.append(TutorialBatch(samples, timestamps, heaps))
        first = self.batches[0]
        #: The first batch of the run: batch 0's heaps, but heap 0 carries the descriptors.
        self.first_heaps = self._make_heaps(first.samples, first.timestamps, descriptors=True)

    def _make_heaps(
        self, samples: np.ndarray, timestamps: np.ndarray, descriptors: bool
    ) -> spead2.send.HeapReferenceList:
        """Heaps whose items reference row j of `samples` and `timestamps` (no copies)."""
        timestamp_item = self.item_group["timestamp"]
        samples_item = self.item_group["adc_samples"]
        refs: list[spead2.send.HeapReference] = []
        for j in range(self.batch_heaps):
            timestamp_item.value = timestamps[j, ...]  # 0-d view, not a copy
            samples_item.value = samples[j, ...]
            which = "all" if descriptors and j == 0 else "none"
            heap = self.item_group.get_heap(descriptors=which, data="all")
            refs.append(spead2.send.HeapReference(heap))
        return spead2.send.HeapReferenceList(refs)

    async def send(self, heaps: int) -> None:
        heap_size = self.config.heap_size
        batch_heaps = self.batch_heaps
        batches = self.batches
        stream = self.stream
        for i in range(0, heaps, batch_heaps):
            batch = batches[(i // batch_heaps) % len(batches)]
            end = min(i + batch_heaps, heaps)
            n = end - i
            if batch.future is not None:
                await batch.future  # its previous batch is sent: the arrays may be rewritten
            batch.samples[:n] = np.arange(i, end).astype(np.int8)[:, np.newaxis]
            batch.timestamps[:n] = np.arange(i * heap_size, end * heap_size, heap_size)
            refs = self.first_heaps if i == 0 else batch.heaps
            if n < batch_heaps:
                refs = refs[:n]
            batch.future = stream.async_send_heaps(refs, spead2.send.GroupMode.SERIAL)
        for batch in batches:
            if batch.future is not None:
                await batch.future
        await stream.async_send_heap(self.item_group.get_end())


async def run_tutorial(port: int, config: Config, heaps: int, send_core: int | None) -> float:
    """One tutorial-sender measurement of `heaps` heaps; returns the elapsed seconds."""
    sender = TutorialSender(port, config, send_core)
    start = time.perf_counter()
    try:
        await sender.send(heaps)
    except (RuntimeError, OSError) as exc:
        raise BenchError(f"tutorial {describe(config)}: send failed: {exc}") from exc
    return time.perf_counter() - start


# ------------------------------------------------------------------ the runner


def describe(config: Config) -> str:
    return f"{format_size(config.heap_size)} heaps, {config.packet_size}-byte packets"


def format_size(size: int) -> str:
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


async def calibrate(run: RunFn, heap_size: int, seconds: float) -> int:
    """Heap count that makes `run` take about `seconds` (doubling probes, also a warm-up)."""
    probe = seconds / 4
    heaps = max(2, -(-(256 << 10) // heap_size))
    while True:
        elapsed = await run(heaps)
        if elapsed >= probe:
            break
        factor = 2.0 if elapsed <= 0 else min(16.0, max(2.0, 1.2 * probe / elapsed))
        heaps = math.ceil(heaps * factor)
    return max(MIN_HEAPS, math.ceil(heaps * seconds / elapsed))


class Runner:
    def __init__(self, args: argparse.Namespace, sink: UdpSink) -> None:
        self.args = args
        self.sink = sink
        self.configs = [Config(h, p) for h in args.heap_sizes for p in args.packet_sizes]

    def runner_for(self, sender: str, config: Config) -> RunFn:
        port, core = self.sink.port, self.args.send_core
        if sender == "engine":
            return lambda heaps: run_engine(port, config, heaps, core)
        if sender == "tutorial":
            return lambda heaps: run_tutorial(port, config, heaps, core)
        in_flight = self.args.plain_in_flight
        return lambda heaps: run_plain(port, config, heaps, in_flight, core)

    async def heap_counts(self) -> dict[tuple[str, Config], int]:
        counts: dict[tuple[str, Config], int] = {}
        for config in self.configs:
            for sender in self.args.senders:
                if self.args.bytes is not None:
                    heaps = max(1, -(-self.args.bytes // config.heap_size))
                    await self.runner_for(sender, config)(MIN_HEAPS)  # warm-up
                else:
                    heaps = await calibrate(
                        self.runner_for(sender, config), config.heap_size, self.args.seconds
                    )
                counts[(sender, config)] = heaps
                how = "fixed" if self.args.bytes is not None else "calibrated"
                progress(
                    f"{how} {sender:8s} {describe(config)}: {heaps} heaps "
                    f"({heaps * config.heap_size / 1e6:.0f} MB)"
                )
        return counts

    async def measure(
        self, sender: str, config: Config, heaps: int, repeat: int, position: int
    ) -> Measurement:
        gc.collect()  # start every measurement from the same garbage state
        before = self.sink.drops()
        elapsed = await self.runner_for(sender, config)(heaps)
        after = self.sink.drops()
        packets = after - before if before is not None and after is not None else None
        return Measurement(sender, config, repeat, position, heaps, elapsed, packets)

    async def run(self) -> list[Measurement]:
        counts = await self.heap_counts()
        senders: tuple[str, ...] = self.args.senders
        results: list[Measurement] = []
        for repeat in range(self.args.repeats):
            for index, config in enumerate(self.configs):
                shift = (repeat + index) % len(senders)
                order = senders[shift:] + senders[:shift]
                round_: list[Measurement] = []
                for position, sender in enumerate(order, start=1):
                    m = await self.measure(
                        sender, config, counts[(sender, config)], repeat, position
                    )
                    round_.append(m)
                    results.append(m)
                rates = (
                    f"{m.sender} {m.mb_per_s:8.1f} MB/s ({m.elapsed:.2f} s)" for m in round_
                )
                progress(
                    f"rep {repeat + 1}/{self.args.repeats} {describe(config)}: " + ", ".join(rates)
                )
        return results


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------- reports


@dataclass(frozen=True)
class Summary:
    config: Config
    median: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]

    def ratio(self, reference: str) -> float:
        """Median engine throughput over the median of `reference`."""
        return self.median["engine"] / self.median[reference]


def summarise(
    results: Sequence[Measurement], configs: Sequence[Config], senders: Sequence[str]
) -> list[Summary]:
    summaries = []
    for config in configs:
        median: dict[str, float] = {}
        low: dict[str, float] = {}
        high: dict[str, float] = {}
        for sender in senders:
            rates = [m.mb_per_s for m in results if m.config == config and m.sender == sender]
            median[sender] = statistics.median(rates)
            low[sender] = min(rates)
            high[sender] = max(rates)
        summaries.append(Summary(config, median, low, high))
    return summaries


def format_table(summaries: Sequence[Summary], senders: Sequence[str]) -> str:
    """Medians per sender, engine/reference ratios (if the engine ran) and spreads."""
    references = [r for r in ("plain", "tutorial") if "engine" in senders and r in senders]
    rate_titles = [f"{sender} MB/s" for sender in senders]
    ratio_titles = [f"engine/{reference}" for reference in references]
    spread_titles = [f"spread {sender}" for sender in senders]
    header = f"{'heap size':>10} {'packet':>6}"
    header += "".join(f" {title:>{len(title)}}" for title in rate_titles + ratio_titles)
    header += "  " + "".join(f" {title:>{len(title)}}" for title in spread_titles)
    lines = [header, "-" * len(header)]
    for s in summaries:
        row = f"{format_size(s.config.heap_size):>10} {s.config.packet_size:>6}"
        for sender, title in zip(senders, rate_titles):
            row += f" {s.median[sender]:>{len(title)}.1f}"
        for reference, title in zip(references, ratio_titles):
            row += f" {s.ratio(reference):>{len(title)}.2f}"
        row += "  "
        for sender, title in zip(senders, spread_titles):
            spread = 100 * (s.high[sender] - s.low[sender]) / s.median[sender]
            row += f" {spread:>{len(title) - 1}.1f}%"
        lines.append(row)
    return "\n".join(lines)


CSV_FIELDS = [
    "record",
    "sender",
    "heap_size",
    "packet_size",
    "repeat",
    "position",
    "heaps",
    "payload_bytes",
    "elapsed_s",
    "mb_per_s",
    "sink_packets",
    "sink_packets_per_heap",
]


def write_csv(
    path: Path, results: Sequence[Measurement], configs: Sequence[Config], senders: Sequence[str]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for m in results:
            writer.writerow(
                {
                    "record": "raw",
                    "sender": m.sender,
                    "heap_size": m.config.heap_size,
                    "packet_size": m.config.packet_size,
                    "repeat": m.repeat + 1,
                    "position": m.position,
                    "heaps": m.heaps,
                    "payload_bytes": m.payload_bytes,
                    "elapsed_s": f"{m.elapsed:.6f}",
                    "mb_per_s": f"{m.mb_per_s:.3f}",
                    "sink_packets": "" if m.sink_packets is None else m.sink_packets,
                    "sink_packets_per_heap": (
                        "" if m.sink_packets is None else f"{m.sink_packets / m.heaps:.3f}"
                    ),
                }
            )
        for config in configs:
            for sender in senders:
                ms = [m for m in results if m.config == config and m.sender == sender]
                writer.writerow(
                    {
                        "record": "median",
                        "sender": sender,
                        "heap_size": config.heap_size,
                        "packet_size": config.packet_size,
                        "repeat": "",
                        "position": "",
                        "heaps": statistics.median(m.heaps for m in ms),
                        "payload_bytes": statistics.median(m.payload_bytes for m in ms),
                        "elapsed_s": f"{statistics.median(m.elapsed for m in ms):.6f}",
                        "mb_per_s": f"{statistics.median(m.mb_per_s for m in ms):.3f}",
                        "sink_packets": "",
                        "sink_packets_per_heap": "",
                    }
                )


def write_plot(
    path: Path, summaries: Sequence[Summary], senders: Sequence[str], title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    heap_sizes = sorted({s.config.heap_size for s in summaries})
    packet_sizes = sorted({s.config.packet_size for s in summaries})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {"engine": ("-", "o"), "plain": ("--", "s"), "tutorial": (":", "^")}
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for p_index, packet_size in enumerate(packet_sizes):
        for sender in senders:
            rows = [s for s in summaries if s.config.packet_size == packet_size]
            x = [s.config.heap_size for s in rows]
            y = [s.median[sender] for s in rows]
            yerr = [
                [s.median[sender] - s.low[sender] for s in rows],
                [s.high[sender] - s.median[sender] for s in rows],
            ]
            linestyle, marker = styles[sender]
            ax.errorbar(
                x,
                y,
                yerr=yerr,
                linestyle=linestyle,
                marker=marker,
                capsize=3,
                color=colours[p_index % len(colours)],
                label=f"{sender}, {packet_size}-byte packets",
            )
    ax.set_xscale("log", base=2)
    ax.set_xticks(heap_sizes)
    ax.set_xticklabels([format_size(h) for h in heap_sizes])
    ax.minorticks_off()
    ax.set_xlabel("heap size")
    ax.set_ylabel("payload throughput (MB/s, median; bars: min-max)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def git_state() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "dsim"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + (" (dsim/ has uncommitted changes)" if dirty else "")


def environment() -> tuple[str, str]:
    """Two lines: software and machine, and the state of the dsim tree measured."""
    return (
        f"python {platform.python_version()}, spead2 {spead2.__version__}, "
        f"numpy {np.__version__}, {os.cpu_count()} CPUs, kernel {platform.release()}",
        f"dsim at {git_state()}",
    )


async def amain(args: argparse.Namespace) -> int:
    # Recorded before measuring: dsim is imported at start-up, so this is the code measured
    # even if the tree is edited or committed while the benchmark runs.
    env = environment()
    sink = UdpSink()
    try:
        runner = Runner(args, sink)
        sizing = (
            f"~{args.seconds:g} s per measurement (calibrated)"
            if args.bytes is None
            else f"{args.bytes} payload bytes per measurement"
        )
        progress(
            f"sink 127.0.0.1:{sink.port}; {len(runner.configs)} configurations x "
            f"{len(args.senders)} senders ({','.join(args.senders)}) x {args.repeats} repeats, "
            f"{sizing}; "
            f"send core {args.send_core if args.send_core is not None else 'not pinned'}; "
            f"plain sender keeps {args.plain_in_flight} heaps in flight; "
            f"tutorial sender: {TUTORIAL_BATCHES} batches of ~{TUTORIAL_BATCH_BYTES >> 10} KiB"
        )
        started = time.perf_counter()
        try:
            results = await runner.run()
        except BenchError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        total = time.perf_counter() - started
    finally:
        sink.close()

    summaries = summarise(results, runner.configs, args.senders)
    for line in env:
        print(f"# {line}")
    now = f"dsim at {git_state()}"
    if now != env[1]:
        print(f"# WARNING: the dsim tree changed during the run ({now} at the end); "
              "the results are for the state above, imported at start-up")
    print(
        f"# medians of {args.repeats} interleaved repeats; MB/s = 10^6 payload bytes/s; "
        f"spread = (max - min) / median"
    )
    print(format_table(summaries, args.senders))
    write_csv(args.csv, results, runner.configs, args.senders)
    pinning = f"send core {args.send_core}" if args.send_core is not None else "unpinned"
    title = "\n".join(
        [
            f"dsim send throughput to an unread UDP socket on 127.0.0.1 "
            f"(medians of {args.repeats}, {pinning})",
            *env,
        ]
    )
    write_plot(args.plot, summaries, args.senders, title)
    print(f"# CSV:  {args.csv}")
    print(f"# plot: {args.plot}")
    print(f"# benchmark time {total:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
