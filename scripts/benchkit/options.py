"""bench_send's command line: options, their parsing and their defaults."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from . import REPO_ROOT, RESULTS_DIR
from .engine_sender import (
    DEFAULT_MAX_PACKET_SIZE,
    MAX_PACKET_SIZE,
    MIN_PACKET_SIZE,
    heap_size_error,
)
from .model import AUTO, SENDERS, PacketMode
from .units import parse_size, positive_float, positive_int
from .variants import DEFAULT_VARIANTS, parse_variant, parse_variants

DEFAULT_HEAP_SIZES = [8 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20]
QUICK_HEAP_SIZES = [8 << 10, 16 << 10, 1 << 20]
PLACEMENT_HEAP_SIZES = [8 << 10, 1 << 20]
DEFAULT_PACKET_SIZES: list[PacketMode] = [1472, 9000, AUTO]
PLACEMENT_PACKET_SIZES: list[PacketMode] = [9000, AUTO]
DEFAULT_SECONDS = 0.5
QUICK_SECONDS = 0.05
MIN_REPEATS = 3
DEFAULT_REPEATS = 5


def parse_heap_sizes(text: str) -> list[int]:
    sizes = [parse_size(part) for part in text.split(",") if part.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError("no heap sizes given")
    for size in sizes:
        if error := heap_size_error(size):
            raise argparse.ArgumentTypeError(error)
    return sorted(set(sizes))


def parse_packet_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad packet size {text!r}") from None
    if not MIN_PACKET_SIZE <= size <= MAX_PACKET_SIZE:
        raise argparse.ArgumentTypeError(
            f"packet size must be {MIN_PACKET_SIZE}-{MAX_PACKET_SIZE}, not {size}"
        )
    return size


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
    """``"engine,cxx"`` -> the named senders, in the canonical order of SENDERS."""
    names = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(names - set(SENDERS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown sender(s) {', '.join(unknown)} (choose from {', '.join(SENDERS)})"
        )
    if not names:
        raise argparse.ArgumentTypeError("no senders given")
    return tuple(sender for sender in SENDERS if sender in names)


def parse_python(text: str) -> tuple[str | None, str]:
    """``"NAME=PATH"`` -> (NAME, PATH); a bare ``"PATH"`` -> (None, PATH)."""
    name, sep, path = text.partition("=")
    if not sep:
        return None, text
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise argparse.ArgumentTypeError(f"bad build name {name!r} (letters, digits, _ . -)")
    return name, path


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Sender-only UDP throughput benchmark of dsim's batching engine against a "
            "plain one-heap-at-a-time spead2 sender, spead2's batched tutorial sender and "
            "spead2's C++ batched tutorial sender, into an unread socket on 127.0.0.1, on "
            "one or more spead2 builds side by side."
        ),
        epilog="See docs/benchmarks.md for exactly what is timed.",
    )
    add = parser.add_argument
    add(
        "--python",
        type=parse_python,
        action="append",
        default=None,
        metavar="[NAME=]PATH",
        help="an interpreter (spead2 build) to measure, repeatable (default: "
        "wheel=.venv/bin/python and gso=.venv-gso/bin/python of this repository, those "
        "that exist, else this interpreter)",
    )
    add(
        "--senders",
        type=parse_senders,
        default=None,
        metavar="LIST",
        help=f"comma-separated senders to measure, from {','.join(SENDERS)} (default: all; "
        "cxx only if scripts/build_cxx_sender.sh has built it)",
    )
    add(
        "--cxx",
        type=Path,
        default=None,
        metavar="PATH",
        help="the C++ sender binary (default: the one scripts/build_cxx_sender.sh built in "
        ".cache/cxx-sender for the GSO build's spead2 version)",
    )
    add(
        "--heap-sizes",
        type=parse_heap_sizes,
        default=None,
        metavar="LIST",
        help="comma-separated heap sizes in bytes, K/M suffixes allowed "
        "(default 8K,16K,64K,256K,1M,4M; with --quick 8K,16K,1M; with --placement 8K,1M)",
    )
    add(
        "--packet-sizes",
        type=parse_packet_sizes,
        default=None,
        metavar="LIST",
        help="comma-separated packet sizes in bytes and/or 'auto' "
        "(default 1472,9000,auto; with --placement 9000,auto)",
    )
    add(
        "--max-packet-size",
        type=parse_packet_size,
        default=DEFAULT_MAX_PACKET_SIZE,
        metavar="BYTES",
        help=f"upper bound for 'auto' packet sizing (default {DEFAULT_MAX_PACKET_SIZE})",
    )
    add(
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
        help="instead of --seconds: fixed payload per measurement (e.g. 4G), the same "
        "heap count in every slot, no calibration",
    )
    add(
        "--plain-in-flight",
        type=positive_int,
        default=2,
        metavar="K",
        help="heaps the plain sender keeps in flight (default 2, as spead2's tutorial)",
    )
    add(
        "--send-core",
        type=int,
        default=None,
        metavar="CORE",
        help="pin spead2's sending thread (every Python sender) to this CPU core (default: "
        "no pinning; an engine variant that pins overrides it for the engine)",
    )
    add(
        "--engine-variant",
        type=lambda text: parse_variant(text).name,
        default="default",
        metavar="VARIANT",
        help="engine variant for the main table (default 'default'; see --variants)",
    )
    add(
        "--placement",
        action="store_true",
        help="measure only the engine, in each of --variants, against its default",
    )
    add(
        "--variants",
        type=parse_variants,
        default=DEFAULT_VARIANTS,
        metavar="LIST",
        help="engine variants for --placement: default, or '+'-joined pinned, pinned-swap, "
        f"colocated, gcfreeze, inflightN, batchSIZE (default {','.join(DEFAULT_VARIANTS)})",
    )
    add(
        "--csv",
        type=Path,
        default=None,
        metavar="PATH",
        help="CSV output (default bench-results/bench_send.csv or bench_placement.csv, "
        "with _quick for --quick)",
    )
    add(
        "--plot",
        type=Path,
        default=None,
        metavar="PATH",
        help="PNG plot output, main mode only (default bench-results/bench_send.png, "
        "or bench_send_quick.png)",
    )
    add(
        "--quick",
        action="store_true",
        help="fast smoke run: fewer heap sizes and 0.05 s measurements (explicit flags win)",
    )
    add("--worker", action="store_true", help=argparse.SUPPRESS)
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
    """Parsed options with every default filled in (``senders`` None: decided at run time)."""
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
    if args.cxx is not None and not os.access(args.cxx, os.X_OK):
        parser.error(f"--cxx {args.cxx}: not an executable")
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
