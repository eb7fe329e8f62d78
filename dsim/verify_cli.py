"""The ``dsim-verify`` command: receive a dsim stream and say whether it was clean.

Exit status: 0 when the stream was clean, 1 when a problem was found (or no
heap arrived), 2 for a usage error (including a port that cannot be bound).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from . import __version__
from .cliutil import OneLineParser
from .errors import ConfigError
from .verify import Report, Verifier, VerifyConfig, WallClock


def _address(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, not {port}")
    return host or "127.0.0.1", port


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    convert.__name__ = getattr(kind, "__name__", "value")
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dsim-verify",
        description="Receive a dsim stream with spead2 and check every heap: timestamps "
        "contiguous within a capture, payloads following the counter pattern, heap-size "
        "changes announced by descriptors. Stops at end-of-stream, after --heaps, after "
        "--timeout without a heap, or on Ctrl-C, and prints a summary.",
        epilog="Exit status: 0 clean, 1 problems found (or nothing received), 2 usage error.",
    )
    parser.add_argument("address", metavar="[HOST:]PORT", type=_address,
                        help="UDP port to receive on; HOST is the bind address (default "
                        "127.0.0.1)")
    parser.add_argument("--multicast", metavar="GROUP",
                        help="join this IPv4 multicast group (the HOST part is then ignored)")
    parser.add_argument("--interface", metavar="ADDR", default="0.0.0.0",
                        help="interface address for --multicast (default any)")
    parser.add_argument("--buffer", type=_positive(int), default=64 * 1024 * 1024,
                        metavar="BYTES", help="socket receive buffer (default %(default)s)")
    parser.add_argument("--heaps", type=_positive(int), metavar="N",
                        help="stop after N data heaps")
    parser.add_argument("--timeout", type=_positive(float), metavar="SECONDS",
                        help="stop after this long without a heap (default: wait)")
    parser.add_argument("--captures", type=int, default=1, metavar="N",
                        help="stop after N end-of-stream heaps; 0 = never (default 1)")
    meerkat = parser.add_argument_group("MeerKAT format and real time")
    meerkat.add_argument("--sample-bits", type=_positive(int), default=10,
                         help="bits per sample until descriptors arrive (default %(default)s)")
    meerkat.add_argument("--digitiser-id", type=int, action="append", default=[], metavar="ID",
                         help="expected digitiser_id (repeat for each polarisation); others "
                         "are reported")
    meerkat.add_argument("--sync-time", type=float, metavar="UNIX",
                         help="with --adc-sample-rate: check timestamps against the wall clock")
    meerkat.add_argument("--adc-sample-rate", type=_positive(float), metavar="HZ")
    meerkat.add_argument("--clock-tolerance", type=_positive(float), default=0.05,
                         metavar="SECONDS", help="allowed |arrival - sample time| "
                         "(default %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print a machine-readable summary on stdout")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f} MB/s"


class _Progress:
    """A live status line on a terminal, redrawn once a second."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._last = (time.monotonic(), 0)

    def __call__(self, report: Report) -> None:
        now = time.monotonic()
        then, before = self._last
        rate = (report.bytes - before) / (now - then) if now > then else 0.0
        self._last = (now, report.bytes)
        self.out.write(
            f"\r{report.heaps} heaps  {_mb(rate)}  missing {report.missing}  "
            f"dup {report.duplicates}  ooo {report.out_of_order}  bad {report.bad_payload}  "
            f"captures {report.captures}\x1b[K"
        )
        self.out.flush()

    def clear(self) -> None:
        self.out.write("\r\x1b[K")
        self.out.flush()


def _ranges(ranges: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"[{a}, {b})" for a, b in ranges)


def summary(report: Report) -> str:
    """The human-readable summary."""
    lines = [
        f"{report.heaps} heaps, {report.bytes} bytes in {report.seconds:.2f} s "
        f"({_mb(report.rate)}); {report.captures} end-of-stream heap(s)",
        f"missing {report.missing}, duplicates {report.duplicates}, out of order "
        f"{report.out_of_order}, bad payload {report.bad_payload}, undescribed "
        f"{report.undescribed}, incomplete {report.incomplete}",
    ]
    if report.format == "meerkat":
        lines.append(
            f"meerkat: streams (digitiser ids) {report.streams}; misaligned {report.misaligned}, "
            f"bad status {report.bad_status}, unexpected id {report.wrong_id}"
        )
    if report.clock_checked:
        lines.append(
            f"wall clock: {report.clock_checked} heaps checked, offset mean "
            f"{1e3 * (report.clock_offset_mean or 0):.2f} ms, max "
            f"{1e3 * (report.clock_offset_max or 0):.2f} ms, off by more than the tolerance "
            f"{report.off_clock}"
        )
    if report.missing_ranges:
        lines.append(f"missing timestamps: {_ranges(report.missing_ranges)}")
    for name, values in [
        ("duplicate", report.duplicate_timestamps),
        ("out-of-order", report.out_of_order_timestamps),
        ("bad payload", report.bad_payload_timestamps),
    ]:
        if values:
            lines.append(f"{name} heaps at timestamps: {', '.join(map(str, values))}")
    for seg in report.segments:
        stream = "" if seg.stream is None else f" (digitiser id {seg.stream})"
        lines.append(
            f"capture {seg.capture}{stream}: {seg.heaps} heaps of {seg.heap_size} samples "
            f"from timestamp {seg.first_timestamp}"
        )
    verdict = "CLEAN" if report.clean else ("NOTHING RECEIVED" if not report.heaps else "PROBLEMS")
    lines.append(f"{verdict} (stopped by {report.stopped_by})")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> Report:
    host, port = args.address
    config = VerifyConfig(
        port=port,
        host=host,
        multicast=args.multicast,
        interface=args.interface,
        buffer_size=args.buffer,
        heaps=args.heaps,
        idle_timeout=args.timeout,
        captures=args.captures,
        sample_bits=args.sample_bits,
        digitiser_ids=tuple(args.digitiser_id),
        clock=(
            WallClock(args.sync_time, args.adc_sample_rate)
            if args.adc_sample_rate is not None else None
        ),
        clock_tolerance=args.clock_tolerance,
    )
    verifier = Verifier(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, verifier.stop)
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    print(
        f"dsim-verify: receiving on {args.multicast or host}:{port}", file=sys.stderr, flush=True
    )
    try:
        return await verifier.run(progress)
    finally:
        if progress is not None:
            progress.clear()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.sync_time is None) != (args.adc_sample_rate is None):
        parser.error("--sync-time and --adc-sample-rate go together")
    try:
        report = asyncio.run(run(args))
    except ConfigError as exc:
        print(f"dsim-verify: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(summary(report))
    return 0 if report.clean else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
