"""The ``dsim-verify`` command: receive a dsim stream and say whether it was clean.

Exit status: 0 when the stream was clean, 1 when a problem was found (or no
heap arrived), 2 for a usage error: a bad option, a port that cannot be bound
(another verifier has it), a signal that does not parse, dsim's katcp server
unreachable. Every error is one line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from .._version import __version__
from ..address import parse_port
from ..cliutil import OneLineParser, bounded, integer, number
from ..clock import Clock
from ..errors import ConfigError
from ..packing import check_sample_bits
from ..spead import DEFAULT_DATA_PORT
from . import plot
from .expect import UncheckedPattern
from .receiver import DEFAULT_BUFFER, MAX_BUFFER, Verifier, VerifyConfig, multicast_groups
from .report import Report, summary
from .source import ExpectedSignal, SignalSource, expected_signal, read_sensors

PROG = "dsim-verify"


def _address(default_host: str) -> Callable[[str], tuple[str, int]]:
    def convert(text: str) -> tuple[str, int]:
        host, sep, port_text = text.rpartition(":")
        try:
            port = parse_port(port_text, repr(text))
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return (host if sep and host else default_host), port

    convert.__name__ = "address"
    return convert


def _multicast(text: str) -> str:
    try:
        multicast_groups(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    """The command line (its errors are one line, exit status 2)."""
    parser = OneLineParser(
        prog=PROG,
        description="Receive a dsim stream with spead2 and check every heap: no heap ids "
        "missing, timestamps contiguous within a capture (documented jumps are capture "
        "starts, not loss), payloads as the signal says (the counter, or a signal window "
        "byte for byte), heap-size changes announced by descriptors. Measures tones, noise, "
        "correlation and saturation of signal streams. Stops at end-of-stream, after "
        "--heaps, after --timeout without a heap, or on Ctrl-C, and prints a summary.",
        epilog="Exit status: 0 clean, 1 problems found (or nothing received), 2 usage error.",
    )
    parser.add_argument(
        "address",
        metavar="[HOST:]PORT",
        type=_address("127.0.0.1"),
        help="UDP port to receive on; HOST is the bind address (default "
        f"127.0.0.1); dsim sends to {DEFAULT_DATA_PORT} by default",
    )
    parser.add_argument(
        "--multicast",
        metavar="GROUP[+N]",
        type=_multicast,
        help="join this IPv4 multicast group, or N+1 consecutive ones (a MeerKAT "
        "polarisation is fanned out over 8: 239.102.0.64+7); HOST is then "
        "ignored",
    )
    parser.add_argument(
        "--interface",
        metavar="ADDR",
        default="0.0.0.0",
        help="interface address for --multicast (default any)",
    )
    parser.add_argument(
        "--buffer",
        type=bounded(integer, positive=True, at_most=MAX_BUFFER),
        default=DEFAULT_BUFFER,
        metavar="BYTES",
        help="socket receive buffer (default %(default)s)",
    )
    parser.add_argument(
        "--heaps", type=bounded(integer, positive=True), metavar="N", help="stop after N data heaps"
    )
    parser.add_argument(
        "--timeout",
        type=bounded(number, positive=True),
        metavar="SECONDS",
        help="stop after this long without a heap (default: wait)",
    )
    parser.add_argument(
        "--captures",
        type=bounded(integer, non_negative=True),
        default=1,
        metavar="N",
        help="stop after N captures ended by end-of-stream heaps; "
        "0 = never (default 1; MeerKAT streams send none unless asked)",
    )
    meerkat = parser.add_argument_group("MeerKAT format and real time")
    meerkat.add_argument(
        "--sample-bits",
        type=bounded(integer, positive=True),
        metavar="BITS",
        help="bits per sample until descriptors arrive, and of a --signals "
        "window (default 10; tutorial streams are 8-bit)",
    )
    meerkat.add_argument(
        "--digitiser-id",
        type=bounded(integer, non_negative=True),
        action="append",
        default=[],
        metavar="ID",
        help="expected digitiser_id (repeat for each polarisation); others are reported",
    )
    meerkat.add_argument(
        "--sync-time",
        type=bounded(number, non_negative=True),
        metavar="UNIX",
        help="with --adc-sample-rate: check arrivals against "
        "the ADC clock (sample t is taken at sync + t / rate)",
    )
    meerkat.add_argument(
        "--adc-sample-rate",
        type=bounded(number, positive=True),
        metavar="HZ",
        help="the ADC rate: for the clock check, tone frequencies in Hz, and "
        "the frequencies of --signals (default for these: 1712e6, the nominal rate a "
        "free-running dsim reads Hz against)",
    )
    meerkat.add_argument(
        "--clock-tolerance",
        type=bounded(number, positive=True),
        default=0.05,
        metavar="SECONDS",
        help="allowed |arrival - sample time| (default %(default)s)",
    )
    signals = parser.add_argument_group("signals (payloads other than the counter)")
    signals.add_argument(
        "--signals",
        metavar="SPEC",
        help="the signal dsim sends (its `signals` sensor); heaps are "
        "compared byte for byte with the window rendered from it",
    )
    signals.add_argument(
        "--period",
        type=bounded(integer, positive=True),
        metavar="SAMPLES",
        help="the signal's period (dsim's `period` sensor)",
    )
    signals.add_argument(
        "--dither-seed",
        type=bounded(integer, non_negative=True),
        metavar="SEED",
        help="the dither seed (dsim's `dither-seed` sensor)",
    )
    signals.add_argument(
        "--katcp",
        type=_address("127.0.0.1"),
        metavar="HOST:PORT",
        help="read the signal, period, dither seed, sample width, ADC rate "
        "and (real time) sync time from dsim's katcp sensors",
    )
    signals.add_argument(
        "--unchecked", action="store_true", help="do not check payloads (just measure them)"
    )
    measure = parser.add_argument_group("measurements (signal streams)")
    measure.add_argument(
        "--measure-samples",
        type=bounded(integer, non_negative=True),
        default=1 << 22,
        metavar="N",
        help="samples per polarisation to "
        "measure tones, noise and correlation over (default %(default)s; 0: "
        "none)",
    )
    measure.add_argument(
        "--tones",
        type=bounded(integer, non_negative=True),
        default=5,
        metavar="N",
        help="strongest tones to report (default %(default)s)",
    )
    measure.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw each polarisation's power spectrum, expected tones marked "
        "(needs matplotlib: pip install 'dsim[plot]')",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a machine-readable summary on stdout"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Combinations argparse cannot check (each a one-line error, exit status 2)."""
    if args.sync_time is not None and args.adc_sample_rate is None and args.katcp is None:
        parser.error("--sync-time needs --adc-sample-rate (or --katcp)")
    if args.katcp is not None and args.signals is not None:
        parser.error("give the signal either with --signals or from --katcp, not both")
    if (
        args.signals is None
        and args.katcp is None
        and (args.period is not None or args.dither_seed is not None)
    ):
        parser.error("--period and --dither-seed describe a --signals spec")
    if args.sample_bits is not None:
        try:
            check_sample_bits(args.sample_bits)
        except ConfigError as exc:
            parser.error(f"--sample-bits: {exc}")
    if args.plot is not None:
        directory = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
            parser.error(f"--plot: cannot write into {directory}")
        try:
            plot.require()
        except ConfigError as exc:
            parser.error(str(exc))


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
            f"\r{report.heaps} heaps  {rate / 1e6:.1f} MB/s  missing {report.missing}  "
            f"dup {report.duplicates}  ooo {report.out_of_order}  bad {report.bad_payload}  "
            f"captures {report.captures}\x1b[K"
        )
        self.out.flush()

    def clear(self) -> None:
        self.out.write("\r\x1b[K")
        self.out.flush()


async def _expectation(args: argparse.Namespace) -> tuple[ExpectedSignal | None, SignalSource]:
    """The signal to expect (None: the counter) and what is known of the stream."""
    if args.katcp is not None:
        source = await read_sensors(*args.katcp)
    else:
        source = SignalSource(
            signals=args.signals or "",
            period=args.period,
            dither_seed=args.dither_seed,
            adc_sample_rate=args.adc_sample_rate,
        )
    if args.sample_bits is not None:
        source.sample_bits = args.sample_bits
    elif source.sample_bits is None:
        source.sample_bits = 8 if source.format == "tutorial" else 10
    if args.adc_sample_rate is not None:
        source.adc_sample_rate = args.adc_sample_rate
    if not source.signals:
        return None, source
    assert source.sample_bits is not None
    expected = await asyncio.to_thread(
        expected_signal,
        source.signals,
        source.period,
        source.dither_seed,
        source.adc_sample_rate,
        source.sample_bits,
    )
    return expected, source


def _config(
    args: argparse.Namespace, expected: ExpectedSignal | None, source: SignalSource
) -> VerifyConfig:
    host, port = args.address
    clock = None
    sync_time = args.sync_time
    if sync_time is None and args.katcp is not None and source.real_time:
        sync_time = source.sync_time  # dsim runs on an ADC clock: check against it
    if sync_time is not None and source.adc_sample_rate is not None:
        clock = Clock(source.adc_sample_rate, sync_time)
    pattern = expected.pattern if expected is not None else None
    if args.unchecked:
        pattern = UncheckedPattern()
    return VerifyConfig(
        port=port,
        host=host,
        multicast=args.multicast,
        interface=args.interface,
        buffer_size=args.buffer,
        heaps=args.heaps,
        idle_timeout=args.timeout,
        captures=args.captures,
        sample_bits=source.sample_bits or 10,
        digitiser_ids=tuple(args.digitiser_id),
        clock=clock,
        clock_tolerance=args.clock_tolerance,
        pattern=pattern,
        measure_samples=args.measure_samples,
        max_tones=args.tones,
        adc_sample_rate=source.adc_sample_rate,
    )


async def run(args: argparse.Namespace) -> tuple[Report, Verifier, ExpectedSignal | None]:
    """Set up (signal, socket), receive until a stop condition, and return the report."""
    expected, source = await _expectation(args)
    verifier = Verifier(_config(args, expected, source))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, verifier.stop)
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    where = args.multicast or args.address[0]
    print(f"{PROG}: receiving on {where}:{args.address[1]}", file=sys.stderr, flush=True)
    try:
        return await verifier.run(progress), verifier, expected
    finally:
        if progress is not None:
            progress.clear()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        report, verifier, expected = asyncio.run(run(args))
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(summary(report))
    status = 0 if report.clean else 1
    if args.plot is not None:
        try:
            plot.plot_spectra(
                args.plot,
                verifier.spectra,
                report.measurements,
                verifier.config.adc_sample_rate,
                expected.tones if expected else (),
                title=report.pattern,
            )
        except ConfigError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
