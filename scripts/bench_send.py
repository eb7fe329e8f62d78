#!/usr/bin/env python3
"""Sender-only throughput benchmark: dsim's batching engine against two reference senders,
on one or more spead2 builds side by side.

What is measured
----------------
Payload throughput (ADC-sample bytes per second, MB/s = 10**6 bytes/s) of three
senders (``--senders``, default all three) that put the same heaps (dsim's wire format, built by
:func:`dsim.layout.make_item_group`: SPEAD-64-48, an immediate ``timestamp`` and
an int8 ``adc_samples`` array of heap-size bytes) on the wire as fast as they
can, over UDP to 127.0.0.1, with each spead2 build given (``--python``, see below).

Packet sizes (``--packet-sizes``, default ``1472,9000,auto``): a number P forces
packets of at most P bytes for every sender (spead2's ``max_packet_size``; the
engine gets ``TransportConfig(packet_size=P)``, so it does not pick a size
itself). ``auto`` lets the engine pick: it gets ``TransportConfig(packet_size=None,
max_packet_size=M)`` (M = ``--max-packet-size``, default 8972) and uses the
largest size up to M that splits each heap into packets of one size
(with ``repeat_pointers`` set on its heaps) where that pays, else M itself:
the engine's own choice, :meth:`dsim.layout.WireFormat.packet_size` with
``equal=spead2_uses_gso()`` as the engine calls it for UDP. The benchmark asks
that function for the size and pointer setting, and checks the size against
``engine.packet_size``. The plain and tutorial senders have no such mode: for
``auto`` they run at that size and pointer setting, so the packets on the wire
are the same as the engine's (which is not what spead2's tutorial programs do).
Every measurement records the packet size used and the packets per heap (from
spead2's own ``PacketGenerator`` on a data heap).

1. **engine**: :class:`dsim.engine.Engine` with
   ``TransportConfig(kind=UDP, destinations=[Endpoint("127.0.0.1", port)],
   packet_size=P or None, max_packet_size=M, send_core=...)`` and
   ``heap_size=H``, ``batch_bytes`` and ``batches`` from the engine variant
   (by default the engine's defaults: about 512 KiB per batch, 2 batches), i.e.
   the batching technique (a few batches of pre-built heaps, each batch refilled
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
and one end heap. Throughput is ``N * H / elapsed``. Before each measurement
the worker runs ``gc.collect()``.

The sink is a UDP socket bound to 127.0.0.1 port 0 that is never read (one,
in the orchestrating process, for all builds): the kernel queues packets
until its buffer is full and drops the rest silently, so the sender sees no
errors and no receiver competes for CPU (although the kernel's loopback
receive path up to the drop still runs, usually on the sending CPU). Packets
are only ever sent to 127.0.0.1. The CSV's ``sink_packets`` column counts the
packets the kernel dropped at the sink socket during a measurement (from
``/proc/net/udp``); once the socket's buffer is full (after the warm-up) that
is every packet that reached it, which cross-checks that the heaps really
went out (compare ``sink_packets_per_heap`` with ``packets_per_heap``).
The ``other_cpu`` column is a noise indicator: the CPUs (on average) that
processes other than the benchmark's kept busy during the measurement (user,
system, irq and softirq time from ``/proc/stat`` minus the user and system
time of the workers, the orchestrator and the kernel's ksoftirqd threads;
see :class:`CpuMonitor`); the header summarises it. It cannot see slowdowns
from outside the machine (e.g. other guests on a virtual machine's host).

Builds and workers
------------------
``--python NAME=PATH`` (repeatable; a bare PATH is named ``gso`` or ``nogso``
after what it turns out to be) gives the interpreters to measure, one per
spead2 build. Default: ``wheel=.venv/bin/python`` and ``gso=.venv-gso/bin/python``
of this repository, those that exist, else only the interpreter running this
script. For each, the script starts one persistent worker process
(``PATH scripts/bench_send.py --worker``, environment passed through with
this repository's root put first on ``PYTHONPATH``, so every worker imports
the dsim of this tree; the header prints where each worker's dsim came from).
Workers talk JSON lines on stdin/stdout: at start a hello (Python, spead2 and
numpy versions, ``dsim.transport.spead2_uses_gso()``, dsim's path), then one
request per measurement (sender, engine variant, heap size, packet size or
``auto``, heap count) answered with the elapsed time, the packet size used and
the packets per heap. The timer runs inside the worker; the orchestrator is
idle while a worker measures, and the other workers are blocked reading their
stdin.

Engine variants (placement and feeding)
---------------------------------------
A variant is ``default`` or ``+``-joined options, applied to the engine only:
``pinned`` (spead2's sending thread on core 0 via ``TransportConfig(send_core=0)``,
the worker's Python thread on core 1 via ``os.sched_setaffinity(0, {1})`` set
after the engine is created and undone after the measurement), ``pinned-swap``
(the same with cores 1 and 0), ``colocated`` (both threads on core 0),
``gcfreeze`` (``gc.collect(); gc.freeze(); gc.disable()`` after the engine is
created, before the timer; undone after),
``inflightN`` (``Engine(batches=N)``: N batches of about 512 KiB in flight
instead of 2), ``batchSIZE`` (``Engine(batch_bytes=SIZE)``, e.g. ``batch1M``).
The main table uses ``--engine-variant`` (default ``default``). ``--placement``
measures instead only the engine, in every variant of ``--variants`` (default
``default,pinned,gcfreeze,inflight4,batch1M,gcfreeze+inflight4``), for
8 KiB and 1 MiB heaps with 9000-byte and auto packets unless told otherwise,
and reports each variant against ``default`` of the same build: the median
over repetitions of the per-repetition ratio (variant / default measured in
the same repetition) and its range.

How a run is organised
----------------------
* Configurations are heap size x packet size (``--heap-sizes``,
  ``--packet-sizes``); a *slot* is build x sender (x engine variant). For each
  repetition (outermost loop, ``--repeats``, at least 3; default 5, 3 with
  ``--quick``) every configuration is measured once, in every slot back to
  back. The order of the slots is rotated by one place between consecutive
  configurations and consecutive repetitions. Medians over the repetitions
  are reported. (On the 2-core virtual machine this was written on, spells
  of several seconds in which the senders run at about 60% come and go with
  nothing else running in the machine: all slots of a round are hit alike,
  so the interleaving keeps ratios fair, and five repetitions let the
  median ride out two such rounds.)
* Measurement size: by default each slot runs about ``--seconds`` (0.5 s)
  per measurement. Before the repetitions a short calibration run of each
  slot in each configuration (doubling the heap count until it takes at
  least a quarter of ``--seconds``; it also serves as warm-up) estimates its
  rate, and the heap count N for that slot and configuration is fixed from
  it for all repetitions. ``--bytes B`` instead sends a fixed
  ``ceil(B / H)`` heaps per measurement in every slot, with no calibration.

Output: tables on stdout (progress on stderr). Main mode: medians per build and
sender (``size`` is the packet size the senders used, the engine's pick for
``auto``; ``pkts/heap`` the packets of one data heap at that size; both given
per build, separated by ``/``, where the builds differ) with the
ratios engine (other build) / engine (first build), engine/plain and
engine/tutorial per build; a table of spreads ((max - min) / median) with
the packets per heap seen at the sink; the ratio of the ``auto`` to the
9000-byte figure per heap size; and the issue's three targets, checked. A CSV
with every raw measurement plus one median row per slot and configuration, and
a PNG plot of MB/s against heap size (log x axis, one subplot per build, one
line per sender x packet size, bars from the minimum to the maximum
repetition; needs matplotlib in the orchestrating interpreter, else skipped
with a note). The headers name the dsim tree (``git describe``) as it was when
the run started, which is the code measured; a warning follows if it changed
during the run.

How to run
----------
From the repository root::

    .venv/bin/python scripts/bench_send.py                 # full run, ~4-6 minutes
    .venv/bin/python scripts/bench_send.py --quick         # smoke run
    .venv/bin/python scripts/bench_send.py --placement     # variants, ~3 minutes
    .venv/bin/python scripts/bench_send.py --python wheel=.venv/bin/python \
        --python gso=.venv-gso/bin/python --heap-sizes 8K,1M --packet-sizes 9000,auto
    .venv/bin/python scripts/bench_send.py --python "$(command -v python3)" \
        --senders engine,tutorial --send-core 1

Sizes accept K/M/G suffixes (powers of 1024, optional ``iB``). By default
nothing is pinned; ``--send-core C`` pins spead2's sending thread of every
sender to core C (for the engine it is passed to ``TransportConfig(send_core=C)``)
unless the engine variant pins it itself.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import functools
import gc
import json
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
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import numpy as np
import spead2
import spead2.send
import spead2.send.asyncio

from dsim.engine import DEFAULT_BATCH_BYTES, DEFAULT_BATCHES, Engine
from dsim.errors import ConfigError
from dsim.generator import sample_value
from dsim.layout import TutorialFormat, make_item_group, validate_heap_size
from dsim.transport import (
    DEFAULT_MAX_PACKET_SIZE,
    MAX_PACKET_SIZE,
    MIN_PACKET_SIZE,
    Endpoint,
    TransportConfig,
    TransportKind,
    spead2_uses_gso,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
RESULTS_DIR = REPO_ROOT / "bench-results"
AUTO: Literal["auto"] = "auto"
PacketMode = int | Literal["auto"]
DEFAULT_HEAP_SIZES = [8 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20]
QUICK_HEAP_SIZES = [8 << 10, 16 << 10, 1 << 20]
PLACEMENT_HEAP_SIZES = [8 << 10, 1 << 20]
DEFAULT_PACKET_SIZES: list[PacketMode] = [1472, 9000, AUTO]
PLACEMENT_PACKET_SIZES: list[PacketMode] = [9000, AUTO]
DEFAULT_VARIANTS = ("default", "pinned", "gcfreeze", "inflight4", "batch1M", "gcfreeze+inflight4")
DEFAULT_SECONDS = 0.5
QUICK_SECONDS = 0.05
MIN_REPEATS = 3
DEFAULT_REPEATS = 5
#: Fewest heaps in one measurement, so that start-up costs stay small.
MIN_HEAPS = 8
SENDERS = ("engine", "plain", "tutorial")
#: Target bytes per batch of the tutorial sender, and its number of batch states.
TUTORIAL_BATCH_BYTES = 512 * 1024
TUTORIAL_BATCHES = 2
SINK_HOST = "127.0.0.1"
#: How long to wait for a worker to start (imports) or to answer one request.
WORKER_START_TIMEOUT = 60.0
#: Measurements during which other processes used more CPUs than this count as noisy.
NOISY_CPUS = 0.1
#: The issue's targets, checked at the end of the main table.
TARGET_GSO_OVER_WHEEL = 2.0
TARGET_8K_MB_S = 5000.0
TARGET_AUTO_OVER_9000 = 1.3


class BenchError(RuntimeError):
    """A measurement whose result cannot be trusted (send errors, wrong counts)."""


@dataclass(frozen=True)
class Config:
    heap_size: int
    packet: PacketMode


@dataclass(frozen=True)
class Slot:
    """Who is measured: a build's worker, a sender, and (for the engine) a variant."""

    build: str
    sender: str
    variant: str = "default"

    def label(self) -> str:
        variant = f"[{self.variant}]" if self.sender == "engine" else ""
        return f"{self.build}:{self.sender}{variant}"


@dataclass(frozen=True)
class Measurement:
    slot: Slot
    config: Config
    repeat: int
    position: int  # 1-based place of this slot in the configuration's round
    heaps: int
    elapsed: float
    sink_packets: int | None
    packet_size: int  # actually used
    packets_per_heap: int  # of a data heap, from spead2's PacketGenerator
    packet_split: str  # e.g. "2x8248" or "1x9000+1x7480"
    other_cpu: float | None  # CPUs used by other processes meanwhile (see CpuMonitor)

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


def check_packet_size(size: int) -> int:
    if not MIN_PACKET_SIZE <= size <= MAX_PACKET_SIZE:
        raise argparse.ArgumentTypeError(
            f"packet size must be {MIN_PACKET_SIZE}-{MAX_PACKET_SIZE}, not {size}"
        )
    return size


def parse_packet_size(text: str) -> int:
    try:
        return check_packet_size(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad packet size {text!r}") from None


def parse_packet_sizes(text: str) -> list[PacketMode]:
    """``"1472,9000,auto"`` -> fixed sizes in increasing order, then ``"auto"`` if given."""
    parts = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("no packet sizes given")
    fixed = sorted({parse_packet_size(part) for part in parts if part != AUTO})
    modes: list[PacketMode] = list(fixed)
    if AUTO in parts:
        modes.append(AUTO)
    return modes


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


@dataclass(frozen=True)
class Variant:
    """How the engine is placed and fed in one measurement (see the module docstring)."""

    name: str
    send_core: int | None = None
    python_core: int | None = None
    gc_freeze: bool = False
    batches: int = DEFAULT_BATCHES
    batch_bytes: int = DEFAULT_BATCH_BYTES


def parse_variant(text: str) -> Variant:
    """``"default"``, ``"pinned+gcfreeze"``, ``"inflight4"``, ``"batch1M"``... -> Variant."""
    name = text.strip()
    variant = Variant(name)
    tokens = [token.strip() for token in name.split("+")]
    if not name or any(not token for token in tokens):
        raise argparse.ArgumentTypeError(f"bad engine variant {text!r}")
    for token in tokens:
        inflight = re.fullmatch(r"inflight(\d+)", token)
        batch = re.fullmatch(r"batch(.+)", token)
        if token == "default":
            if len(tokens) > 1:
                raise argparse.ArgumentTypeError(f"'default' cannot be combined: {text!r}")
        elif token == "pinned":
            variant = replace(variant, send_core=0, python_core=1)
        elif token == "pinned-swap":
            variant = replace(variant, send_core=1, python_core=0)
        elif token == "colocated":
            variant = replace(variant, send_core=0, python_core=0)
        elif token == "gcfreeze":
            variant = replace(variant, gc_freeze=True)
        elif inflight:
            batches = int(inflight.group(1))
            if batches < 2:
                raise argparse.ArgumentTypeError(f"{token}: the engine needs at least 2")
            variant = replace(variant, batches=batches)
        elif batch:
            variant = replace(variant, batch_bytes=parse_size(batch.group(1)))
        else:
            raise argparse.ArgumentTypeError(
                f"unknown engine variant option {token!r} (default, pinned, pinned-swap, "
                "colocated, gcfreeze, inflightN, batchSIZE, joined with '+')"
            )
    return variant


def explain_variant(variant: Variant) -> str:
    parts = []
    if variant.send_core is not None:
        parts.append(f"spead2 thread on core {variant.send_core}")
    if variant.python_core is not None:
        parts.append(f"Python thread on core {variant.python_core}")
    if variant.gc_freeze:
        parts.append("gc frozen and disabled")
    parts.append(f"{variant.batches} batches of ~{format_size(variant.batch_bytes)}")
    return f"{variant.name} ({', '.join(parts)})"


def parse_variants(text: str) -> tuple[str, ...]:
    names: list[str] = []
    for part in text.split(","):
        if part.strip():
            name = parse_variant(part).name
            if name not in names:
                names.append(name)
    if not names:
        raise argparse.ArgumentTypeError("no variants given")
    if "default" in names:
        names.remove("default")
    return ("default", *names)  # the reference of every ratio, always measured


def parse_python(text: str) -> tuple[str | None, str]:
    """``"NAME=PATH"`` -> (NAME, PATH); a bare ``"PATH"`` -> (None, PATH)."""
    name, sep, path = text.partition("=")
    if not sep:
        return None, text
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise argparse.ArgumentTypeError(f"bad build name {name!r} (letters, digits, _ . -)")
    return name, path


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
            "into an unread socket on 127.0.0.1, on one or more spead2 builds side by side."
        ),
        epilog="See the module docstring (top of this file) for exactly what is timed.",
    )
    parser.add_argument(
        "--python",
        type=parse_python,
        action="append",
        default=None,
        metavar="[NAME=]PATH",
        help="an interpreter (spead2 build) to measure, repeatable (default: "
        "wheel=.venv/bin/python and gso=.venv-gso/bin/python of this repository, those "
        "that exist, else this interpreter)",
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
        "(default 8K,16K,64K,256K,1M,4M; with --quick 8K,16K,1M; with --placement 8K,1M)",
    )
    parser.add_argument(
        "--packet-sizes",
        type=parse_packet_sizes,
        default=None,
        metavar="LIST",
        help="comma-separated packet sizes in bytes and/or 'auto' "
        "(default 1472,9000,auto; with --placement 9000,auto)",
    )
    parser.add_argument(
        "--max-packet-size",
        type=parse_packet_size,
        default=DEFAULT_MAX_PACKET_SIZE,
        metavar="BYTES",
        help=f"upper bound for 'auto' packet sizing (default {DEFAULT_MAX_PACKET_SIZE})",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"interleaved repetitions per measurement, at least {MIN_REPEATS} "
        f"(default {DEFAULT_REPEATS}; with --quick {MIN_REPEATS})",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--seconds",
        type=positive_float,
        default=None,
        help=f"target duration of one measurement; heap counts are calibrated per slot "
        f"and configuration (default {DEFAULT_SECONDS}; with --quick {QUICK_SECONDS})",
    )
    size.add_argument(
        "--bytes",
        type=parse_size,
        default=None,
        help="instead of --seconds: fixed payload per measurement (e.g. 1G), the same "
        "heap count in every slot, no calibration",
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
        help="pin spead2's sending thread (every sender) to this CPU core (default: no "
        "pinning; an engine variant that pins overrides it for the engine)",
    )
    parser.add_argument(
        "--engine-variant",
        type=lambda text: parse_variant(text).name,
        default="default",
        metavar="VARIANT",
        help="engine variant for the main table (default 'default'; see --variants)",
    )
    parser.add_argument(
        "--placement",
        action="store_true",
        help="measure only the engine, in each of --variants, against its default",
    )
    parser.add_argument(
        "--variants",
        type=parse_variants,
        default=DEFAULT_VARIANTS,
        metavar="LIST",
        help="engine variants for --placement: default, or '+'-joined pinned, pinned-swap, "
        "colocated, "
        f"gcfreeze, inflightN, batchSIZE (default {','.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument(
        "--csv",
        type=Path,
        default=None,
        metavar="PATH",
        help="CSV output (default bench-results/bench_send.csv or bench_placement.csv, "
        "with _quick for --quick)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PATH",
        help="PNG plot output, main mode only (default bench-results/bench_send.png, "
        "or bench_send_quick.png)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fast smoke run: fewer heap sizes and 0.05 s measurements (explicit flags win)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser


def default_pythons() -> list[tuple[str | None, str]]:
    found: list[tuple[str | None, str]] = [
        (name, str(path))
        for name, path in (
            ("wheel", REPO_ROOT / ".venv" / "bin" / "python"),
            ("gso", REPO_ROOT / ".venv-gso" / "bin" / "python"),
        )
        if path.exists()
    ]
    return found or [(None, sys.executable)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.worker:
        return args
    if args.repeats is None:
        args.repeats = MIN_REPEATS if args.quick else DEFAULT_REPEATS
    if args.repeats < MIN_REPEATS:
        parser.error(f"--repeats must be at least {MIN_REPEATS}, not {args.repeats}")
    usable = os.sched_getaffinity(0)
    usable_text = ",".join(str(c) for c in sorted(usable))
    if args.send_core is not None and args.send_core not in usable:
        parser.error(f"--send-core {args.send_core} is not a usable core (usable: {usable_text})")
    variants = args.variants if args.placement else (args.engine_variant,)
    for name in variants:
        variant = parse_variant(name)
        for core in (variant.send_core, variant.python_core):
            if core is not None and core not in usable:
                parser.error(f"variant {name} needs core {core} (usable: {usable_text})")
    args.pythons = args.python if args.python else default_pythons()
    paths = [path for _, path in args.pythons]
    if len(set(paths)) != len(paths):
        parser.error("the same interpreter is given twice")
    names = [name for name, _ in args.pythons if name is not None]
    if len(set(names)) != len(names):
        parser.error("the same build name is given twice")
    for _, path in args.pythons:
        if not os.access(path, os.X_OK):
            parser.error(f"--python {path}: not an executable")
    if args.heap_sizes is None:
        if args.placement:
            args.heap_sizes = PLACEMENT_HEAP_SIZES
        else:
            args.heap_sizes = QUICK_HEAP_SIZES if args.quick else DEFAULT_HEAP_SIZES
    if args.packet_sizes is None:
        args.packet_sizes = PLACEMENT_PACKET_SIZES if args.placement else DEFAULT_PACKET_SIZES
    if args.seconds is None and args.bytes is None:
        args.seconds = QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    stem = "bench_placement" if args.placement else "bench_send"
    suffix = "_quick" if args.quick else ""
    if args.csv is None:
        args.csv = RESULTS_DIR / f"{stem}{suffix}.csv"
    if args.plot is None:
        args.plot = RESULTS_DIR / f"bench_send{suffix}.png"
    return args


# ====================================================================== worker
# Everything from here to the orchestrator runs in a worker process.


@dataclass(frozen=True)
class RunRequest:
    """One measurement, as sent to a worker (JSON object with these fields)."""

    sender: str
    variant: str
    heap_size: int
    packet: PacketMode
    max_packet_size: int
    heaps: int
    port: int
    send_core: int | None
    plain_in_flight: int


class Sender(Protocol):
    """What the worker needs of a sender; construction happens outside the timer."""

    packet_size: int
    repeat_pointers: bool

    async def send(self, heaps: int) -> None: ...

    async def close(self) -> None: ...

    def check(self, heaps: int) -> list[str]: ...


def describe(heap_size: int, packet: PacketMode) -> str:
    packets = "auto-sized packets" if packet == AUTO else f"{packet}-byte packets"
    return f"{format_size(heap_size)} heaps, {packets}"


def format_size(size: int) -> str:
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def make_thread_pool(send_core: int | None) -> spead2.ThreadPool:
    if send_core is None:
        return spead2.ThreadPool(1)
    return spead2.ThreadPool(1, [send_core])


@functools.cache
def auto_choice(heap_size: int, max_packet_size: int) -> tuple[int, bool]:
    """The engine's packet size and repeat_pointers for `heap_size` over UDP, not forced."""
    return TutorialFormat(1).packet_size(
        heap_size, max_packet_size, None, equal=spead2_uses_gso()
    )


class EngineSender:
    """dsim's engine, created here (outside the timer) for one measurement."""

    def __init__(self, request: RunRequest, variant: Variant, send_core: int | None) -> None:
        transport = TransportConfig(
            kind=TransportKind.UDP,
            destinations=[Endpoint(SINK_HOST, request.port)],
            max_packet_size=request.max_packet_size,
            packet_size=None if request.packet == AUTO else int(request.packet),
            send_core=send_core,
        )
        self.heap_size = request.heap_size
        self.engine = Engine(
            transport,
            heap_size=request.heap_size,
            batch_bytes=variant.batch_bytes,
            batches=variant.batches,
        )
        self.packet_size = self.engine.packet_size
        self.repeat_pointers = False
        if request.packet == AUTO:
            expected, self.repeat_pointers = auto_choice(
                request.heap_size, request.max_packet_size
            )
            if expected != self.packet_size:
                raise BenchError(
                    f"engine picked {self.packet_size}-byte packets, expected {expected}"
                )
        self.sent = -1

    async def send(self, heaps: int) -> None:
        self.engine.start(heaps)
        self.sent = await self.engine.wait_capture()

    async def close(self) -> None:
        await self.engine.close()

    def check(self, heaps: int) -> list[str]:
        engine = self.engine
        stats = engine.statistics()
        problems = []
        if engine.failure is not None:
            problems.append(f"engine failed: {engine.failure!r}")
        if self.sent != heaps or stats.capture_heaps != heaps or stats.heaps != heaps:
            problems.append(
                f"heap count: asked {heaps}, wait_capture {self.sent}, "
                f"capture_heaps {stats.capture_heaps}, heaps {stats.heaps}"
            )
        if stats.bytes != heaps * self.heap_size:
            problems.append(f"bytes {stats.bytes} != {heaps * self.heap_size}")
        if stats.send_errors:
            problems.append(f"{stats.send_errors} send errors")
        return problems


def open_sink_stream(
    port: int, packet_size: int, max_heaps: int, send_core: int | None
) -> tuple[spead2.ThreadPool, spead2.send.asyncio.UdpStream]:
    """A thread pool and an unpaced UDP stream to the sink, for the comparison senders."""
    thread_pool = make_thread_pool(send_core)
    stream_config = spead2.send.StreamConfig(
        max_packet_size=packet_size, rate=0.0, max_heaps=max_heaps
    )
    stream = spead2.send.asyncio.UdpStream(thread_pool, [(SINK_HOST, port)], stream_config)
    return thread_pool, stream


class PlainSender:
    """One-heap-at-a-time pipelined sender (spead2 tutorial style, no batching).

    See the module docstring for exactly what each heap costs.
    """

    def __init__(
        self,
        port: int,
        heap_size: int,
        packet_size: int,
        repeat_pointers: bool,
        in_flight: int,
        send_core: int | None,
    ) -> None:
        self.heap_size = heap_size
        self.packet_size = packet_size
        self.repeat_pointers = repeat_pointers
        self.thread_pool, stream = open_sink_stream(port, packet_size, in_flight + 1, send_core)
        self.stream: spead2.send.asyncio.UdpStream | None = stream
        self.item_group = make_item_group(heap_size)
        self.buffers = [np.zeros(heap_size, np.int8) for _ in range(in_flight)]

    async def send(self, heaps: int) -> None:
        heap_size = self.heap_size
        repeat_pointers = self.repeat_pointers
        item_group = self.item_group
        timestamp_item = item_group["timestamp"]
        samples_item = item_group["adc_samples"]
        stream = self.stream
        assert stream is not None
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
            if repeat_pointers:
                heap.repeat_pointers = True
            futures[slot] = stream.async_send_heap(heap)
        for future in futures:
            if future is not None:
                await future
        await stream.async_send_heap(item_group.get_end())

    async def close(self) -> None:
        self.stream = None

    def check(self, heaps: int) -> list[str]:
        return []  # a failed future raises in send()


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

    def __init__(
        self,
        port: int,
        heap_size: int,
        packet_size: int,
        repeat_pointers: bool,
        send_core: int | None,
    ) -> None:
        self.heap_size = heap_size
        self.packet_size = packet_size
        self.repeat_pointers = repeat_pointers
        self.batch_heaps = max(1, TUTORIAL_BATCH_BYTES // heap_size)
        self.thread_pool, stream = open_sink_stream(
            port, packet_size, TUTORIAL_BATCHES * self.batch_heaps + 1, send_core
        )
        self.stream: spead2.send.asyncio.UdpStream | None = stream
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
            heap.repeat_pointers = self.repeat_pointers
            refs.append(spead2.send.HeapReference(heap))
        return spead2.send.HeapReferenceList(refs)

    async def send(self, heaps: int) -> None:
        heap_size = self.heap_size
        batch_heaps = self.batch_heaps
        batches = self.batches
        stream = self.stream
        assert stream is not None
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

    async def close(self) -> None:
        self.stream = None

    def check(self, heaps: int) -> list[str]:
        return []  # a failed future raises in send()


class Worker:
    """Measures one request at a time, in this process's spead2 build."""

    def __init__(self) -> None:
        self.all_cores = os.sched_getaffinity(0)
        self._splits: dict[tuple[int, int, bool], list[int]] = {}

    def hello(self) -> dict[str, Any]:
        import dsim

        return {
            "executable": sys.executable,
            "python": platform.python_version(),
            "spead2": spead2.__version__,
            "numpy": np.__version__,
            "gso": spead2_uses_gso(),
            "dsim": str(Path(dsim.__file__).resolve().parent),
            "pid": os.getpid(),
        }

    def packet_split(self, heap_size: int, packet_size: int, repeat_pointers: bool) -> list[int]:
        """Sizes of the packets of one data heap (cached; spead2's own packetiser)."""
        key = (heap_size, packet_size, repeat_pointers)
        if key not in self._splits:
            item_group = make_item_group(heap_size)
            item_group["timestamp"].value = 0
            item_group["adc_samples"].value = np.zeros(heap_size, np.int8)
            heap = item_group.get_heap(descriptors="none", data="all")
            heap.repeat_pointers = repeat_pointers
            generator = spead2.send.PacketGenerator(heap, 1, packet_size)
            self._splits[key] = [len(packet) for packet in generator]
        return self._splits[key]

    async def make_sender(self, request: RunRequest, variant: Variant) -> Sender:
        send_core = request.send_core
        if request.sender == "engine":
            if variant.send_core is not None:
                send_core = variant.send_core
            return EngineSender(request, variant, send_core)
        if request.packet == AUTO:
            # The size the engine picks, with its pointers.
            packet_size, repeat_pointers = auto_choice(request.heap_size, request.max_packet_size)
        else:
            packet_size, repeat_pointers = int(request.packet), False
        if request.sender == "plain":
            return PlainSender(
                request.port,
                request.heap_size,
                packet_size,
                repeat_pointers,
                request.plain_in_flight,
                send_core,
            )
        if request.sender == "tutorial":
            return TutorialSender(
                request.port, request.heap_size, packet_size, repeat_pointers, send_core
            )
        raise BenchError(f"unknown sender {request.sender!r}")

    @contextmanager
    def placed(self, variant: Variant) -> Iterator[None]:
        """Apply the variant's Python-thread placement and GC setting, and undo them."""
        try:
            if variant.python_core is not None:
                os.sched_setaffinity(0, {variant.python_core})
            if variant.gc_freeze:
                gc.collect()
                gc.freeze()
                gc.disable()
            yield
        finally:
            if variant.gc_freeze:
                gc.enable()
                gc.unfreeze()
            if variant.python_core is not None:
                os.sched_setaffinity(0, self.all_cores)

    async def run(self, request: RunRequest) -> dict[str, Any]:
        what = f"{request.sender} {describe(request.heap_size, request.packet)}"
        variant = parse_variant(request.variant)
        gc.collect()  # start every measurement from the same garbage state
        sender = await self.make_sender(request, variant)
        try:
            with self.placed(variant if request.sender == "engine" else Variant("default")):
                start = time.perf_counter()
                try:
                    await sender.send(request.heaps)
                except (RuntimeError, OSError) as exc:
                    raise BenchError(f"{what}: send failed: {exc}") from exc
                elapsed = time.perf_counter() - start
        finally:
            await sender.close()
        problems = sender.check(request.heaps)
        if problems:
            raise BenchError(f"{what}: " + "; ".join(problems))
        split = self.packet_split(request.heap_size, sender.packet_size, sender.repeat_pointers)
        counts = Counter(split)
        return {
            "ok": True,
            "elapsed": elapsed,
            "heaps": request.heaps,
            "packet_size": sender.packet_size,
            "repeat_pointers": sender.repeat_pointers,
            "packets_per_heap": len(split),
            "packet_split": "+".join(f"{n}x{size}" for size, n in sorted(counts.items())[::-1]),
        }


def worker_main() -> int:
    """Serve JSON-line requests on stdin; replies on stdout (everything else to stderr)."""
    replies: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray output (Python or C) must not corrupt the protocol
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = Worker()

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    reply({"ok": True, "hello": worker.hello()})
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("op") == "quit":
            break
        try:
            request = RunRequest(**message["request"])
            reply(loop.run_until_complete(worker.run(request)))
        except Exception as exc:  # reported to the orchestrator, which stops the run
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    loop.close()
    return 0


# ================================================================ orchestrator


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


class CpuMonitor:
    """How busy the rest of the machine was during a measurement (a noise indicator).

    From /proc/stat (user + nice + system + irq + softirq time of all CPUs)
    minus the user and system time of the workers and of this process
    (/proc/PID/stat, all their threads) and of the kernel's ksoftirqd threads
    (which may run the loopback receive path for us), in clock ticks, divided
    by the wall time: the average number of CPUs that other processes kept
    busy. Interrupt and softirq time counts as busy because a kernel without
    CONFIG_IRQ_TIME_ACCOUNTING (as on the machine this was written on) books
    the softirq work done in a task's context (the loopback receive path) to
    that task as well; with that option the indicator reads a little high.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = [*pids, os.getpid(), *self.softirq_threads()]
        self.hz = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def softirq_threads() -> list[int]:
        """The kernel's ksoftirqd threads: they may run our loopback receive path."""
        pids = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().startswith("ksoftirqd/"):
                        pids.append(int(entry))
            except (OSError, ValueError):
                continue
        return pids

    def snapshot(self) -> tuple[float, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()
            # user, nice, system, and irq and softirq (see the class docstring)
            busy = sum(int(v) for v in fields[1:4]) + int(fields[6]) + int(fields[7])
            ours = 0
            for pid in self.pids:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read().rsplit(")", 1)[1].split()
                ours += int(stat[11]) + int(stat[12])
        except (OSError, ValueError, IndexError):
            return None
        return time.perf_counter(), busy - ours

    def other_cpus(
        self, before: tuple[float, int] | None, after: tuple[float, int] | None
    ) -> float | None:
        if before is None or after is None or after[0] <= before[0]:
            return None
        return max(0.0, (after[1] - before[1]) / self.hz / (after[0] - before[0]))


class WorkerProcess:
    """A persistent worker in one interpreter (one spead2 build)."""

    def __init__(self, name: str | None, python: str) -> None:
        self.python = python
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
        self.proc = subprocess.Popen(
            [python, str(SCRIPT), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        self.info: dict[str, Any] = self._receive(f"starting {python}")["hello"]
        self.gso: bool = bool(self.info["gso"])
        self.name: str = name if name is not None else ("gso" if self.gso else "nogso")

    def _receive(self, what: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            status = self.proc.wait()
            raise BenchError(f"worker {self.python} exited (status {status}) while {what}")
        message: dict[str, Any] = json.loads(line)
        if not message.get("ok"):
            raise BenchError(f"{what}: {message.get('error')}")
        return message

    def run(self, request: RunRequest) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": "run", "request": asdict(request)}) + "\n")
        self.proc.stdin.flush()
        return self._receive(f"{self.name} {request.sender}[{request.variant}]")

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()

    def describe(self) -> str:
        info = self.info
        return (
            f"{self.name} = {self.python}: python {info['python']}, spead2 {info['spead2']} "
            f"({'GSO' if info['gso'] else 'no GSO'}), numpy {info['numpy']}, "
            f"dsim from {info['dsim']}"
        )


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Runner:
    def __init__(
        self,
        args: argparse.Namespace,
        sink: UdpSink,
        workers: dict[str, WorkerProcess],
        slots: list[Slot],
    ) -> None:
        self.args = args
        self.sink = sink
        self.workers = workers
        self.slots = slots
        self.configs = [Config(h, p) for h in args.heap_sizes for p in args.packet_sizes]
        self.monitor = CpuMonitor([w.proc.pid for w in workers.values()])

    def request(self, slot: Slot, config: Config, heaps: int) -> RunRequest:
        return RunRequest(
            sender=slot.sender,
            variant=slot.variant,
            heap_size=config.heap_size,
            packet=config.packet,
            max_packet_size=self.args.max_packet_size,
            heaps=heaps,
            port=self.sink.port,
            send_core=self.args.send_core,
            plain_in_flight=self.args.plain_in_flight,
        )

    def elapsed(self, slot: Slot, config: Config, heaps: int) -> float:
        reply = self.workers[slot.build].run(self.request(slot, config, heaps))
        return float(reply["elapsed"])

    def calibrate(self, slot: Slot, config: Config) -> int:
        """Heap count that takes about --seconds (doubling probes, also a warm-up)."""
        seconds: float = self.args.seconds
        probe = seconds / 4
        heaps = max(2, -(-(256 << 10) // config.heap_size))
        while True:
            elapsed = self.elapsed(slot, config, heaps)
            if elapsed >= probe:
                break
            factor = 2.0 if elapsed <= 0 else min(16.0, max(2.0, 1.2 * probe / elapsed))
            heaps = math.ceil(heaps * factor)
        return max(MIN_HEAPS, math.ceil(heaps * seconds / elapsed))

    def heap_counts(self) -> dict[tuple[Slot, Config], int]:
        counts: dict[tuple[Slot, Config], int] = {}
        for config in self.configs:
            for slot in self.slots:
                if self.args.bytes is not None:
                    heaps = max(1, -(-self.args.bytes // config.heap_size))
                    self.elapsed(slot, config, MIN_HEAPS)  # warm-up
                else:
                    heaps = self.calibrate(slot, config)
                counts[(slot, config)] = heaps
                how = "fixed" if self.args.bytes is not None else "calibrated"
                progress(
                    f"{how} {slot.label():28s} {describe(config.heap_size, config.packet)}: "
                    f"{heaps} heaps ({heaps * config.heap_size / 1e6:.0f} MB)"
                )
        return counts

    def measure(
        self, slot: Slot, config: Config, heaps: int, repeat: int, position: int
    ) -> Measurement:
        cpu_before = self.monitor.snapshot()
        before = self.sink.drops()
        reply = self.workers[slot.build].run(self.request(slot, config, heaps))
        after = self.sink.drops()
        other_cpu = self.monitor.other_cpus(cpu_before, self.monitor.snapshot())
        packets = after - before if before is not None and after is not None else None
        return Measurement(
            slot=slot,
            config=config,
            repeat=repeat,
            position=position,
            heaps=heaps,
            elapsed=float(reply["elapsed"]),
            sink_packets=packets,
            packet_size=int(reply["packet_size"]),
            packets_per_heap=int(reply["packets_per_heap"]),
            packet_split=str(reply["packet_split"]),
            other_cpu=other_cpu,
        )

    def run(self) -> list[Measurement]:
        counts = self.heap_counts()
        slots = self.slots
        results: list[Measurement] = []
        for repeat in range(self.args.repeats):
            for index, config in enumerate(self.configs):
                shift = (repeat + index) % len(slots)
                order = slots[shift:] + slots[:shift]
                round_: list[Measurement] = []
                for position, slot in enumerate(order, start=1):
                    m = self.measure(slot, config, counts[(slot, config)], repeat, position)
                    round_.append(m)
                    results.append(m)
                rates = ", ".join(f"{m.slot.label()} {m.mb_per_s:.0f}" for m in round_)
                progress(
                    f"rep {repeat + 1}/{self.args.repeats} "
                    f"{describe(config.heap_size, config.packet)} (MB/s): {rates}"
                )
        return results


# --------------------------------------------------------------------- reports


@dataclass
class Stats:
    """The repetitions of one slot in one configuration."""

    rates: dict[int, float] = field(default_factory=dict)  # repeat -> MB/s
    packet_size: int = 0
    packets_per_heap: int = 0
    packet_split: str = ""
    sink_per_heap: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates.values())

    @property
    def low(self) -> float:
        return min(self.rates.values())

    @property
    def high(self) -> float:
        return max(self.rates.values())

    @property
    def spread(self) -> float:
        return (self.high - self.low) / self.median


Table = dict[tuple[Slot, Config], Stats]


def tabulate(results: Sequence[Measurement]) -> Table:
    table: Table = {}
    for m in results:
        stats = table.setdefault((m.slot, m.config), Stats())
        stats.rates[m.repeat] = m.mb_per_s
        stats.packet_size = m.packet_size
        stats.packets_per_heap = m.packets_per_heap
        stats.packet_split = m.packet_split
        if m.sink_packets is not None:
            stats.sink_per_heap.append(m.sink_packets / m.heaps)
    return table


def paired_ratios(a: Stats, b: Stats) -> list[float]:
    """a / b for each repetition both were measured in (same round, so same conditions)."""
    return [a.rates[r] / b.rates[r] for r in sorted(a.rates) if r in b.rates]


def format_grid(groups: Sequence[tuple[str, Sequence[str]]], rows: Sequence[Sequence[str]]) -> str:
    """A right-aligned table: groups of columns (group title, column titles), ' | ' between."""
    titles = [title for _, columns in groups for title in columns]
    widths = [len(title) for title in titles]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    top: list[str] = []
    heads: list[str] = []
    bodies: list[list[str]] = [[] for _ in rows]
    start = 0
    for group, columns in groups:
        span = widths[start:start + len(columns)]
        text = " ".join(f"{t:>{w}}" for t, w in zip(columns, span))
        top.append(f"{group:^{len(text)}}")
        heads.append(text)
        for body, row in zip(bodies, rows):
            body.append(" ".join(f"{c:>{w}}" for c, w in zip(row[start:], span)))
        start += len(columns)
    lines = [" | ".join(top).rstrip(), " | ".join(heads)]
    lines.append("-" * len(lines[1]))
    lines.extend(" | ".join(body) for body in bodies)
    return "\n".join(lines)


def packet_label(packet: PacketMode) -> str:
    return str(packet)


def per_build(values: Sequence[object]) -> str:
    """One value if all builds agree, else each build's, in build order, joined by '/'."""
    texts = [str(value) for value in values]
    if not texts:
        return "?"
    return texts[0] if len(set(texts)) == 1 else "/".join(texts)


def config_cells(config: Config, stats: Sequence[Stats]) -> list[str]:
    """Heap, packet mode, and the size and packets per heap used (per build if they differ)."""
    return [
        format_size(config.heap_size),
        packet_label(config.packet),
        per_build([s.packet_size for s in stats]),
        per_build([s.packets_per_heap for s in stats]),
    ]


CONFIG_TITLES = ["heap", "packet", "size", "pkts/heap"]


def fmt_rate(stats: Stats | None) -> str:
    return "-" if stats is None else f"{stats.median:.0f}"


def fmt_ratio(a: Stats | None, b: Stats | None) -> str:
    return "-" if a is None or b is None else f"{a.median / b.median:.2f}"


def main_tables(
    table: Table,
    configs: Sequence[Config],
    builds: Sequence[str],
    senders: Sequence[str],
    variant: str,
) -> str:
    def get(build: str, sender: str, config: Config) -> Stats | None:
        return table.get((Slot(build, sender, variant if sender == "engine" else "default"),
                          config))

    def build_stats(config: Config) -> list[Stats]:
        """The first sender's stats in each build (the packets it used)."""
        found = (get(build, senders[0], config) for build in builds)
        return [stats for stats in found if stats is not None]

    has_engine = "engine" in senders
    references = [r for r in ("plain", "tutorial") if has_engine and r in senders]
    # Table 1: medians and ratios.
    groups: list[tuple[str, Sequence[str]]] = [("", CONFIG_TITLES)]
    groups += [(f"{build} (MB/s)", list(senders)) for build in builds]
    if has_engine and len(builds) > 1:
        groups.append(("engine", [f"{b}/{builds[0]}" for b in builds[1:]]))
    if references:
        for build in builds:
            groups.append((f"{build} ratios", [f"eng/{r[:4]}" for r in references]))
    rows = []
    for config in configs:
        row = config_cells(config, build_stats(config))
        for build in builds:
            row += [fmt_rate(get(build, sender, config)) for sender in senders]
        if has_engine and len(builds) > 1:
            base = get(builds[0], "engine", config)
            row += [fmt_ratio(get(b, "engine", config), base) for b in builds[1:]]
        if references:
            for build in builds:
                engine = get(build, "engine", config)
                row += [fmt_ratio(engine, get(build, r, config)) for r in references]
        rows.append(row)
    parts = [format_grid(groups, rows)]
    # Table 2: spreads, and the packets per heap the sink saw (engine, or first sender).
    groups = [("", CONFIG_TITLES[:2])]
    groups += [(f"{build} spread (max-min)/median", list(senders)) for build in builds]
    groups += [("sink pkts/heap", [f"{build}:{senders[0]}" for build in builds])]
    rows = []
    for config in configs:
        row = config_cells(config, [])[:2]
        for build in builds:
            for sender in senders:
                stats = get(build, sender, config)
                row.append("-" if stats is None else f"{100 * stats.spread:.1f}%")
        for build in builds:
            stats = get(build, senders[0], config)
            seen = stats.sink_per_heap if stats else []
            row.append(f"{statistics.median(seen):.2f}" if seen else "-")
        rows.append(row)
    parts.append(format_grid(groups, rows))
    # Table 3: auto against 9000-byte packets.
    autos = [c for c in configs if c.packet == AUTO and Config(c.heap_size, 9000) in configs]
    if autos:
        groups = [("", ["heap", "auto size"])]
        groups += [(f"{build}: auto / 9000", list(senders)) for build in builds]
        rows = []
        for config in autos:
            fixed = Config(config.heap_size, 9000)
            split = per_build([s.packet_split for s in build_stats(config)])
            row = [format_size(config.heap_size), split]
            for build in builds:
                row += [
                    fmt_ratio(get(build, s, config), get(build, s, fixed)) for s in senders
                ]
            rows.append(row)
        parts.append(format_grid(groups, rows))
    return "\n\n".join(parts)


def ratio_range(a: Stats, b: Stats) -> str:
    """Median ratio, and the extremes over the repetitions (worst and best pairing)."""
    return (
        f"{a.median / b.median:.2f} (range {a.low / b.high:.2f}-{a.high / b.low:.2f} "
        "over all pairs of repeats)"
    )


def targets(
    table: Table, workers: Sequence[WorkerProcess], variant: str, senders: Sequence[str]
) -> list[str]:
    """The issue's three targets, for the first GSO build against the first non-GSO one."""
    if "engine" not in senders:
        return []
    gso = next((w.name for w in workers if w.gso), None)
    wheel = next((w.name for w in workers if not w.gso), None)

    def get(build: str | None, sender: str, heap_size: int, packet: PacketMode) -> Stats | None:
        if build is None:
            return None
        v = variant if sender == "engine" else "default"
        return table.get((Slot(build, sender, v), Config(heap_size, packet)))

    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    lines = [
        f"targets (engine variant {variant}; GSO build {gso or 'none'}, "
        f"non-GSO build {wheel or 'none'}):"
    ]
    a, b = get(gso, "engine", 1 << 20, 9000), get(wheel, "engine", 1 << 20, 9000)
    if a and b:
        lines.append(
            f"  1 MiB heaps, 9000-byte packets: engine {gso} {a.median:.0f} MB/s / {wheel} "
            f"{b.median:.0f} MB/s = {ratio_range(a, b)}; target >= {TARGET_GSO_OVER_WHEEL:g}: "
            f"{verdict(a.median / b.median >= TARGET_GSO_OVER_WHEEL)}"
        )
    else:
        lines.append("  1 MiB / 9000 gso/wheel: not measured (needs both builds and that config)")
    a = get(gso, "engine", 8 << 10, 9000)
    if a:
        tut = get(gso, "tutorial", 8 << 10, 9000)
        ref = f" (tutorial sender on {gso}: {tut.median:.0f} MB/s)" if tut else ""
        lines.append(
            f"  8 KiB heaps, 9000-byte packets: engine {gso} {a.median:.0f} MB/s "
            f"(min {a.low:.0f}, max {a.high:.0f}){ref}; target >= {TARGET_8K_MB_S:.0f} MB/s: "
            f"{verdict(a.median >= TARGET_8K_MB_S)}"
        )
    else:
        lines.append("  8 KiB / 9000 on GSO: not measured")
    for build in (gso, wheel):
        a, b = get(build, "engine", 16 << 10, AUTO), get(build, "engine", 16 << 10, 9000)
        if a and b:
            lines.append(
                f"  16 KiB heaps, auto ({a.packet_split}) vs 9000-byte packets "
                f"({b.packet_split}), engine {build}: {a.median:.0f} / {b.median:.0f} MB/s = "
                f"{ratio_range(a, b)}"
                + (
                    f"; target >= {TARGET_AUTO_OVER_9000:g}: "
                    f"{verdict(a.median / b.median >= TARGET_AUTO_OVER_9000)}"
                    if build == gso
                    else " (no target without GSO)"
                )
            )
        elif build == gso:
            lines.append("  16 KiB auto vs 9000 on GSO: not measured")
    return lines


def placement_table(
    table: Table, configs: Sequence[Config], builds: Sequence[str], variants: Sequence[str]
) -> str:
    groups: list[tuple[str, Sequence[str]]] = [
        ("", ["build", "heap", "packet", "size", "variant"]),
        ("MB/s", ["median", "min", "max", "spread"]),
        ("vs default (paired by repeat)", ["median", "min", "max", "wins"]),
    ]
    rows = []
    summary: dict[tuple[str, str], list[float]] = {}
    for build in builds:
        for config in configs:
            base = table.get((Slot(build, "engine", "default"), config))
            for variant in variants:
                stats = table.get((Slot(build, "engine", variant), config))
                if stats is None or base is None:
                    continue
                row = [
                    build,
                    format_size(config.heap_size),
                    packet_label(config.packet),
                    str(stats.packet_size),
                    variant,
                    f"{stats.median:.0f}",
                    f"{stats.low:.0f}",
                    f"{stats.high:.0f}",
                    f"{100 * stats.spread:.1f}%",
                ]
                if variant == "default":
                    row += ["", "", "", ""]
                else:
                    ratios = paired_ratios(stats, base)
                    summary.setdefault((build, variant), []).append(statistics.median(ratios))
                    wins = sum(r > 1 for r in ratios)
                    row += [
                        f"{statistics.median(ratios):.3f}",
                        f"{min(ratios):.3f}",
                        f"{max(ratios):.3f}",
                        f"{wins}/{len(ratios)}",
                    ]
                rows.append(row)
    parts = [format_grid(groups, rows)]
    groups = [
        ("", ["build", "variant"]),
        ("median paired ratio vs default", ["geomean", "min", "max"]),
    ]
    rows = []
    for (build, variant), ratios in summary.items():
        geomean = math.exp(statistics.fmean(math.log(r) for r in ratios))
        rows.append(
            [build, variant, f"{geomean:.3f}", f"{min(ratios):.3f}", f"{max(ratios):.3f}"]
        )
    if rows:
        parts.append("over the configurations above:\n" + format_grid(groups, rows))
    return "\n\n".join(parts)


CSV_FIELDS = [
    "record",
    "build",
    "gso",
    "sender",
    "variant",
    "heap_size",
    "packet",
    "packet_size",
    "packets_per_heap",
    "packet_split",
    "repeat",
    "position",
    "heaps",
    "payload_bytes",
    "elapsed_s",
    "mb_per_s",
    "mb_per_s_min",
    "mb_per_s_max",
    "sink_packets",
    "sink_packets_per_heap",
    "other_cpu",
]


def write_csv(
    path: Path,
    results: Sequence[Measurement],
    table: Table,
    workers: dict[str, WorkerProcess],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for m in results:
            writer.writerow(
                {
                    "record": "raw",
                    "build": m.slot.build,
                    "gso": int(workers[m.slot.build].gso),
                    "sender": m.slot.sender,
                    "variant": m.slot.variant,
                    "heap_size": m.config.heap_size,
                    "packet": m.config.packet,
                    "packet_size": m.packet_size,
                    "packets_per_heap": m.packets_per_heap,
                    "packet_split": m.packet_split,
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
                    "other_cpu": "" if m.other_cpu is None else f"{m.other_cpu:.3f}",
                }
            )
        for (slot, config), stats in table.items():
            writer.writerow(
                {
                    "record": "median",
                    "build": slot.build,
                    "gso": int(workers[slot.build].gso),
                    "sender": slot.sender,
                    "variant": slot.variant,
                    "heap_size": config.heap_size,
                    "packet": config.packet,
                    "packet_size": stats.packet_size,
                    "packets_per_heap": stats.packets_per_heap,
                    "packet_split": stats.packet_split,
                    "mb_per_s": f"{stats.median:.3f}",
                    "mb_per_s_min": f"{stats.low:.3f}",
                    "mb_per_s_max": f"{stats.high:.3f}",
                    "sink_packets_per_heap": (
                        f"{statistics.median(stats.sink_per_heap):.3f}"
                        if stats.sink_per_heap
                        else ""
                    ),
                }
            )


def write_plot(
    path: Path,
    table: Table,
    configs: Sequence[Config],
    builds: Sequence[str],
    senders: Sequence[str],
    variant: str,
    title: str,
) -> bool:
    """The plot, or False if matplotlib is missing in this interpreter."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    heap_sizes = sorted({c.heap_size for c in configs})
    packets = list(dict.fromkeys(c.packet for c in configs))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {"engine": ("-", "o"), "plain": ("--", "s"), "tutorial": (":", "^")}
    fig, axes = plt.subplots(
        1, len(builds), figsize=(6.5 * len(builds), 5.5), sharey=True, layout="constrained",
        squeeze=False,
    )
    for ax, build in zip(axes[0], builds):
        for p_index, packet in enumerate(packets):
            for sender in senders:
                v = variant if sender == "engine" else "default"
                points = [
                    (c.heap_size, table[(Slot(build, sender, v), c)])
                    for c in configs
                    if c.packet == packet and (Slot(build, sender, v), c) in table
                ]
                if not points:
                    continue
                linestyle, marker = styles[sender]
                name = "auto-sized" if packet == AUTO else f"{packet}-byte"
                ax.errorbar(
                    [x for x, _ in points],
                    [s.median for _, s in points],
                    yerr=[
                        [s.median - s.low for _, s in points],
                        [s.high - s.median for _, s in points],
                    ],
                    linestyle=linestyle,
                    marker=marker,
                    capsize=3,
                    color=colours[p_index % len(colours)],
                    label=f"{sender}, {name} packets",
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(heap_sizes)
        ax.set_xticklabels([format_size(h) for h in heap_sizes])
        ax.minorticks_off()
        ax.set_xlabel("heap size")
        ax.grid(True, alpha=0.3)
        ax.set_title(build)
        ax.legend(fontsize=7)
    top = max((s.high for (slot, _), s in table.items() if slot.build in builds), default=1.0)
    axes[0][0].set_ylim(0, 1.05 * top)  # shared by all subplots
    axes[0][0].set_ylabel("payload throughput (MB/s, median; bars: min-max)")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def noise_summary(results: Sequence[Measurement]) -> str:
    """How busy other processes kept the machine during the measurements."""
    seen = [m.other_cpu for m in results if m.other_cpu is not None]
    if not seen:
        return "other processes' CPU use: unknown (no /proc)"
    busy = sum(value > NOISY_CPUS for value in seen)
    return (
        f"other processes' CPU use during the measurements: median {statistics.median(seen):.2f}, "
        f"max {max(seen):.2f} CPUs; {busy} of {len(seen)} measurements above {NOISY_CPUS:g}"
    )


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


def start_workers(pythons: Sequence[tuple[str | None, str]]) -> dict[str, WorkerProcess]:
    workers: dict[str, WorkerProcess] = {}
    try:
        for name, python in pythons:
            worker = WorkerProcess(name, python)
            if worker.name in workers:
                worker.name += f"-{len(workers) + 1}"
            workers[worker.name] = worker
            progress(f"worker {worker.describe()}")
    except BaseException:
        for worker in workers.values():
            worker.close()
        raise
    return workers


def run(args: argparse.Namespace) -> int:
    # Recorded before measuring: workers import dsim at start-up, so this is the code
    # measured even if the tree is edited or committed while the benchmark runs.
    tree = f"dsim at {git_state()}"
    sink = UdpSink()
    workers: dict[str, WorkerProcess] = {}
    try:
        workers = start_workers(args.pythons)
        builds = list(workers)
        if args.placement:
            slots = [Slot(b, "engine", v) for v in args.variants for b in builds]
        else:
            slots = [
                Slot(b, s, args.engine_variant if s == "engine" else "default")
                for s in args.senders
                for b in builds
            ]
        runner = Runner(args, sink, workers, slots)
        sizing = (
            f"~{args.seconds:g} s per measurement (calibrated)"
            if args.bytes is None
            else f"{args.bytes} payload bytes per measurement"
        )
        progress(
            f"sink 127.0.0.1:{sink.port}; {len(runner.configs)} configurations x "
            f"{len(slots)} slots x {args.repeats} repeats, {sizing}"
        )
        started = time.perf_counter()
        try:
            results = runner.run()
        except BenchError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        total = time.perf_counter() - started
    finally:
        for worker in workers.values():
            worker.close()
        sink.close()

    table = tabulate(results)
    print(f"# {tree}")
    for worker in workers.values():
        print(f"# build {worker.describe()}")
    print(
        f"# machine: {os.cpu_count()} CPUs, kernel {platform.release()}; sink 127.0.0.1 "
        f"(unread UDP socket); medians of {args.repeats} interleaved repeats, "
        + (f"~{args.seconds:g} s each" if args.bytes is None else f"{args.bytes} bytes each")
    )
    send_core = args.send_core if args.send_core is not None else "not pinned"
    print(
        f"# MB/s = 10^6 payload bytes/s; spead2 send thread: {send_core} unless the variant "
        f"pins it; packet 'auto' = engine picks (max {args.max_packet_size}), plain and "
        "tutorial run at the engine's size and repeat_pointers setting"
    )
    print(f"# {noise_summary(results)}")
    now = f"dsim at {git_state()}"
    if now != tree:
        print(f"# WARNING: the dsim tree changed during the run ({now} at the end); "
              "the results are for the state above, imported at start-up")
    if args.placement:
        print("# engine only; variants: " + "; ".join(
            explain_variant(parse_variant(v)) for v in args.variants))
        print(placement_table(table, runner.configs, builds, args.variants))
        write_csv(args.csv, results, table, workers)
    else:
        print(f"# engine variant: {explain_variant(parse_variant(args.engine_variant))}")
        print(main_tables(table, runner.configs, builds, args.senders, args.engine_variant))
        print()
        for line in targets(table, list(workers.values()), args.engine_variant, args.senders):
            print(line)
        write_csv(args.csv, results, table, workers)
        title = "\n".join(
            [
                f"dsim send throughput to an unread UDP socket on 127.0.0.1 "
                f"(medians of {args.repeats}; engine variant {args.engine_variant}; "
                f"send thread {send_core}); {tree}",
                "; ".join(
                    f"{w.name}: spead2 {w.info['spead2']} {'GSO' if w.gso else 'no GSO'}"
                    for w in workers.values()
                ),
            ]
        )
        plotted = write_plot(
            args.plot, table, runner.configs, builds, args.senders, args.engine_variant, title
        )
        print(f"# plot: {args.plot}" if plotted else "# plot: skipped (no matplotlib here)")
    print(f"# CSV:  {args.csv}")
    print(f"# benchmark time {total:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
