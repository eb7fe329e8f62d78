"""The ``dsim`` command: arguments, logging, signals.

Exit status: 0 after a clean shutdown (``?halt``, SIGINT or SIGTERM, with any
capture stopped and its end-of-stream heap sent); 1 when start-up fails (port
in use, ibverbs not available); 2 for a bad command line. Errors the user can
fix are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import spead2

from . import __version__
from .cliutil import OneLineParser
from .engine import DEFAULT_DESCRIPTOR_INTERVAL, Clock, Engine
from .errors import ConfigError
from .layout import make_format
from .server import DeviceServer
from .transport import (
    DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_PORT,
    Endpoint,
    TransportConfig,
    TransportKind,
    parse_endpoint,
    spead2_uses_gso,
)

logger = logging.getLogger("dsim")
#: When this process started: the default sync time of a real-time stream.
START_TIME = time.time()

DEFAULT_KATCP_PORT = 7147
#: Rates (bytes/s) from which spead2's GSO support matters (8 Gb/s).
FAST_RATE = 1e9


def _typed(func: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """Wrap a converter so that its ConfigError/ValueError reads well in argparse."""

    def convert(text: str) -> Any:
        try:
            return func(text)
        except (ConfigError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc) or f"bad {what} {text!r}") from None

    convert.__name__ = what
    return convert


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dsim",
        description="Digitiser simulator: streams SPEAD heaps of ADC samples, "
        "controlled over katcp.",
        epilog="katcp has no authentication and any client may ?halt the server: "
        "it listens on 127.0.0.1 unless --katcp-host says otherwise.",
    )
    parser.add_argument(
        "destinations",
        metavar="DEST",
        nargs="*",
        type=_typed(parse_endpoint, "destination"),
        help=f"host:port to send to (default 127.0.0.1:{DEFAULT_PORT}); several spread "
        "the heaps over them in turn",
    )
    katcp = parser.add_argument_group("katcp")
    katcp.add_argument("--katcp-host", default="127.0.0.1",
                       help="address to listen on (default %(default)s)")
    katcp.add_argument("--katcp-port", type=_typed(_int, "port"), default=DEFAULT_KATCP_PORT,
                       help="port to listen on; 0 picks a free one (default %(default)s)")
    stream = parser.add_argument_group("stream")
    stream.add_argument("--format", choices=["tutorial", "meerkat"], default="tutorial",
                        help="wire format: spead2's tutorial layout, or the MeerKAT digitiser's "
                        "(one stream per DEST, i.e. per polarisation) (default %(default)s)")
    stream.add_argument("--heap-size", type=_typed(_int, "heap size"),
                        help="payload bytes per heap (default 8192 for tutorial, 4096 samples "
                        "= 5120 bytes for meerkat)")
    stream.add_argument("--sample-bits", type=_typed(_int, "sample bits"),
                        help="meerkat: bits per sample (default 10)")
    stream.add_argument("--digitiser-id", type=_typed(_int, "digitiser id"), default=0,
                        help="meerkat: digitiser_id of the first polarisation; the others "
                        "follow (default %(default)s)")
    stream.add_argument("--max-packet-size", type=_typed(_int, "packet size"),
                        default=DEFAULT_MAX_PACKET_SIZE,
                        help="largest packet size dsim may pick: it picks the largest that "
                        "splits every heap into equal packets (default %(default)s, a "
                        "9000-byte jumbo frame less IP and UDP headers)")
    stream.add_argument("--packet-size", type=_typed(_int, "packet size"),
                        help="use exactly this maximum packet size instead")
    stream.add_argument("--rate", type=_typed(_float, "rate"), default=0.0,
                        help="send rate in bytes/s on the wire, 0 = as fast as possible "
                        "(default %(default)s)")
    stream.add_argument("--start", action="store_true",
                        help="start capturing at once instead of waiting for ?capture-start")
    stream.add_argument("--descriptor-interval", type=_typed(_float, "interval"),
                        default=DEFAULT_DESCRIPTOR_INTERVAL, metavar="SECONDS",
                        help="send descriptors this often while capturing, 0 = only at the "
                        "start and after heap-size changes (default %(default)s)")
    clock = parser.add_argument_group("real-time clock")
    clock.add_argument("--adc-sample-rate", type=_typed(_float, "sample rate"), metavar="HZ",
                       help="pace the stream at this ADC sample rate and tie timestamps to "
                       "the wall clock (default: free-running)")
    clock.add_argument("--sync-time", type=_typed(_float, "sync time"), metavar="UNIX",
                       help="UNIX time of timestamp 0 (default: when dsim started)")
    clock.add_argument("--align-samples", type=_typed(_int, "alignment"), default=1 << 20,
                       metavar="N", help="captures start at a multiple of N samples, a multiple "
                       "of the heap's samples (default %(default)s)")
    network = parser.add_argument_group("network")
    network.add_argument("--ttl", type=_typed(_int, "TTL"), default=1,
                         help="multicast TTL (default %(default)s)")
    network.add_argument("--interface", metavar="ADDRESS",
                         help="IPv4 address of the interface to send from (needed by --ibv)")
    network.add_argument("--ibv", action="store_true",
                         help="send with ibverbs (multicast destinations only)")
    network.add_argument("--buffer-size", type=_typed(_int, "buffer size"),
                         help="socket buffer (UDP) or send ring (ibverbs) in bytes")
    network.add_argument("--affinity", type=_typed(_int, "CPU core"), metavar="CORE",
                         help="CPU core for spead2's sending thread")
    network.add_argument("--main-affinity", type=_typed(_int, "CPU core"), metavar="CORE",
                         help="CPU core for dsim's Python thread (katcp and batch preparation)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        type=str.upper, help="logging level (default %(default)s)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the command line; any problem exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.destinations:
        args.destinations = [Endpoint("127.0.0.1", DEFAULT_PORT)]
    if not 0 <= args.katcp_port <= 65535:
        parser.error(f"argument --katcp-port: must be 0-65535, not {args.katcp_port}")
    args.transport = TransportConfig(
        kind=TransportKind.IBVERBS if args.ibv else TransportKind.UDP,
        destinations=args.destinations,
        max_packet_size=args.max_packet_size,
        packet_size=args.packet_size,
        rate=args.rate,
        ttl=args.ttl,
        interface=args.interface,
        buffer_size=args.buffer_size,
        send_core=args.affinity,
    )
    try:
        args.transport.validate()
        if args.main_affinity is not None and args.main_affinity not in os.sched_getaffinity(0):
            raise ConfigError(f"CPU core {args.main_affinity} is not available")
        args.wire_format = make_format(
            args.format, len(args.destinations), args.sample_bits, args.digitiser_id
        )
        if args.heap_size is None:
            args.heap_size = args.wire_format.default_heap_size
        args.wire_format.check_heap_size(args.heap_size, args.max_packet_size)
        if args.format == "meerkat" and args.packet_size is not None:
            raise ConfigError("the meerkat format sends one packet per heap: drop --packet-size")
        args.clock = None
        if args.adc_sample_rate is not None:
            if args.rate:
                raise ConfigError("--rate and --adc-sample-rate both set the rate: give one")
            sync_time = START_TIME if args.sync_time is None else args.sync_time
            args.clock = Clock(args.adc_sample_rate, sync_time, args.align_samples)
            samples = args.wire_format.heap_samples(args.heap_size)
            if args.align_samples % samples:
                raise ConfigError(
                    f"--align-samples {args.align_samples} is not a multiple of the heap's "
                    f"{samples} samples"
                )
        elif args.sync_time is not None:
            raise ConfigError("--sync-time needs --adc-sample-rate")
        if args.descriptor_interval < 0:
            raise ConfigError("--descriptor-interval must be >= 0")
    except ConfigError as exc:
        parser.error(str(exc))
    return args


class StartupError(Exception):
    """dsim could not start (exit status 1)."""


async def run(args: argparse.Namespace) -> None:
    """Run the engine and katcp server until halted or signalled."""
    try:
        engine = Engine(
            args.transport,
            args.heap_size,
            wire_format=args.wire_format,
            clock=args.clock,
            descriptor_interval=args.descriptor_interval,
        )
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    server = DeviceServer(engine, args.katcp_host, args.katcp_port)
    # Handle signals before announcing the port, so that a signal right after never kills us.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal, server, sig)
    try:
        await server.start()
    except OSError as exc:
        await engine.close()
        raise StartupError(
            f"cannot listen for katcp on {args.katcp_host}:{args.katcp_port}: "
            f"{os.strerror(exc.errno) if exc.errno else exc}"
        ) from None
    if args.main_affinity is not None:
        # After the engine made spead2's thread, which would otherwise inherit this.
        os.sched_setaffinity(0, {args.main_affinity})
    host, port = server.sockets[0].getsockname()[:2]
    logger.info("katcp server listening on %s:%d", host, port)
    logger.info(
        "sending %s (%s format) to %s, heap size %d, packet size %d%s, rate %s",
        args.transport.kind.value,
        engine.format.name,
        ", ".join(str(d) for d in args.transport.destinations),
        engine.heap_size,
        engine.packet_size,
        (
            " (one packet per heap)" if args.format == "meerkat"
            else "" if args.packet_size else f" (picked, at most {args.max_packet_size})"
        ),
        f"{engine.rate:g} B/s" if engine.rate else "unlimited",
    )
    if args.clock is not None:
        logger.info(
            "real time: ADC at %g Hz, sync time %.6f, captures aligned to %d samples",
            args.clock.adc_sample_rate,
            args.clock.sync_time,
            args.clock.align_samples,
        )
    _log_spead2_build(args.transport, engine.rate)
    if args.start:
        engine.start()
    await server.join()
    logger.info("shut down")


def _log_spead2_build(transport: TransportConfig, rate: float) -> None:
    """Say whether spead2 sends with GSO, and warn if speed matters and it does not."""
    if transport.kind != TransportKind.UDP:
        return
    if spead2_uses_gso():
        logger.info("spead2 %s sends UDP with segmentation offload (GSO)", spead2.__version__)
        return
    logger.info("spead2 %s sends UDP without segmentation offload (GSO)", spead2.__version__)
    if rate == 0 or rate >= FAST_RATE:
        logger.warning(
            "at %s, spead2 without GSO (the PyPI wheel) can cap throughput at about half "
            "of what the machine allows: scripts/build_spead2.sh builds it with GSO",
            f"{rate:g} B/s" if rate else "unlimited rate",
        )


def _on_signal(server: DeviceServer, sig: signal.Signals) -> None:
    logger.info("received %s, shutting down", sig.name)
    server.halt()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(run(args))
    except StartupError as exc:
        print(f"dsim: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
