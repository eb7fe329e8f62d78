"""The ``dsim`` command: arguments, logging, signals.

Exit status: 0 after a clean shutdown (``?halt``, SIGINT or SIGTERM, with any
capture stopped); 1 when start-up fails (port in use, ibverbs not available);
2 for a bad command line. Errors the user can fix are one line on stderr,
never a traceback. A second SIGINT or SIGTERM exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

import spead2

from ._version import __version__
from .cliutil import OneLineParser, integer, number
from .errors import ConfigError
from .layout import FORMATS
from .settings import Settings
from .simulator import Simulator, StartupError
from .spead import DEFAULT_DATA_PORT
from .transport import spead2_uses_gso

#: The option defaults, as Settings (and so the Python API) has them.
DEFAULTS = Settings()

logger = logging.getLogger("dsim")


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
        help=f"host:port to send to (default 127.0.0.1:{DEFAULT_DATA_PORT}); ADDRESS+N:port is "
        "N+1 consecutive addresses (MeerKAT writes 239.102.0.64+7:7148), over which the heaps "
        "are spread in turn. tutorial: all DESTs take turns; meerkat: one DEST per polarisation",
    )
    katcp = parser.add_argument_group("katcp")
    katcp.add_argument(
        "--katcp-host",
        default=DEFAULTS.katcp_host,
        help="address to listen on (default %(default)s; 0.0.0.0 = every "
        "interface: anyone who can reach it controls dsim)",
    )
    katcp.add_argument(
        "--katcp-port",
        type=integer,
        default=DEFAULTS.katcp_port,
        help="port to listen on; 0 picks a free one (logged) (default %(default)s)",
    )
    katcp.add_argument(
        "--prometheus-port",
        type=integer,
        metavar="PORT",
        help="serve Prometheus metrics over HTTP on this port (0 = a free one)",
    )
    stream = parser.add_argument_group("stream")
    stream.add_argument(
        "--format",
        choices=FORMATS,
        default=DEFAULTS.format,
        help="wire format: spead2's tutorial layout, or the MeerKAT digitiser's "
        "(default %(default)s)",
    )
    stream.add_argument(
        "--heap-size",
        type=integer,
        help="payload bytes per heap (default 8192 for tutorial, 4096 samples "
        "= 5120 bytes for meerkat)",
    )
    stream.add_argument(
        "--sample-bits", type=integer, help="meerkat: bits per sample, 2-16 (default 10)"
    )
    stream.add_argument(
        "--digitiser-id",
        type=integer,
        default=DEFAULTS.digitiser_id,
        help="meerkat: digitiser_id of the first polarisation, even (receivers "
        "take the polarisation from the low bit); the next is +1 (default "
        "%(default)s)",
    )
    stream.add_argument(
        "--max-packet-size",
        type=integer,
        default=DEFAULTS.max_packet_size,
        help="largest packet size dsim may pick: it picks the largest that "
        "splits every heap into equal packets where that pays (default "
        "%(default)s, a 9000-byte jumbo frame less IP and UDP headers)",
    )
    stream.add_argument(
        "--packet-size", type=integer, help="use exactly this maximum packet size instead"
    )
    stream.add_argument(
        "--rate",
        type=number,
        default=DEFAULTS.rate,
        help="average send rate in bytes/s on the wire, 0 = as fast as possible "
        "(default %(default)s)",
    )
    stream.add_argument(
        "--start",
        action="store_true",
        help="start capturing at once instead of waiting for ?capture-start",
    )
    stream.add_argument(
        "--descriptor-interval",
        type=number,
        default=DEFAULTS.descriptor_interval,
        metavar="SECONDS",
        help="send descriptors this often while capturing, 0 = only at the "
        "start and after heap-size changes (default %(default)s)",
    )
    stream.add_argument(
        "--end-of-stream",
        action=argparse.BooleanOptionalAction,
        help="end every capture with end-of-stream heaps (default: yes for "
        "tutorial; no for meerkat, whose F-engine receivers stop for good on one)",
    )
    signals = parser.add_argument_group("signals")
    signals.add_argument(
        "--signals",
        metavar="SPEC",
        help="signal of each polarisation at start-up, e.g. "
        "'cw(0.5, 1e8) + wgn(0.1);' (default counter(), the checkable pattern)",
    )
    signals.add_argument(
        "--period",
        type=integer,
        default=DEFAULTS.period,
        metavar="SAMPLES",
        help="samples after which a signal window repeats (default %(default)s)",
    )
    signals.add_argument(
        "--max-period",
        type=integer,
        default=DEFAULTS.max_period,
        metavar="SAMPLES",
        help="largest period ?signals may ask for (default %(default)s)",
    )
    signals.add_argument(
        "--dither-seed",
        type=integer,
        metavar="N",
        help="seed of the quantisation dither (default: drawn at start-up)",
    )
    signals.add_argument(
        "--nominal-sample-rate",
        type=number,
        default=DEFAULTS.nominal_sample_rate,
        metavar="HZ",
        help="free-running: the ADC rate signal frequencies are read against "
        "(default %(default)g, MeerKAT L-band)",
    )
    clock = parser.add_argument_group("real-time clock")
    clock.add_argument(
        "--adc-sample-rate",
        type=number,
        metavar="HZ",
        help="pace the stream at this ADC sample rate and tie timestamps to "
        "the wall clock (default: free-running)",
    )
    clock.add_argument(
        "--sync-time",
        type=number,
        metavar="UNIX",
        help="UNIX time of timestamp 0 (default: when dsim started)",
    )
    clock.add_argument(
        "--align-samples",
        type=integer,
        default=DEFAULTS.align_samples,
        metavar="N",
        help="captures start at a multiple of N samples, a multiple of the "
        "heap's samples (default %(default)s)",
    )
    network = parser.add_argument_group("network")
    network.add_argument(
        "--ttl", type=integer, default=DEFAULTS.ttl, help="multicast TTL (default %(default)s)"
    )
    network.add_argument(
        "--interface",
        metavar="ADDRESS",
        help="IPv4 address of the interface to send from (needed by --ibv)",
    )
    network.add_argument(
        "--ibv", action="store_true", help="send with ibverbs (multicast destinations only)"
    )
    network.add_argument(
        "--buffer-size", type=integer, help="socket buffer (UDP) or send ring (ibverbs) in bytes"
    )
    network.add_argument(
        "--affinity", type=integer, metavar="CORE", help="CPU core for spead2's sending thread"
    )
    network.add_argument(
        "--main-affinity",
        type=integer,
        metavar="CORE",
        help="CPU core for dsim's Python thread (katcp and batch preparation)",
    )
    parser.add_argument(
        "--log-level",
        default=DEFAULTS.log_level,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="logging level (default %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Parse and check the command line; any problem exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    options = vars(args)
    if not options["destinations"]:
        del options["destinations"]
    settings = Settings(**options)
    try:
        settings.check()
    except ConfigError as exc:
        parser.error(str(exc))
    return settings


async def run(settings: Settings) -> None:
    """Run dsim until halted or signalled."""
    simulator = Simulator(settings)
    loop = asyncio.get_running_loop()
    # Handle signals before announcing the port, so that a signal right after never kills us.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal, simulator, sig)
    await simulator.start(connect_client=False)
    engine = simulator.engine
    if engine is None or simulator.halted:  # signalled while starting
        await simulator.stop()
        logger.info("shut down before starting")
        return
    host, port = simulator.katcp_address
    if logger.isEnabledFor(logging.INFO):
        logger.info("katcp server listening on %s:%d", host, port)
    else:  # scripts and dsim.array read the port from this line, at any log level
        print(f"dsim: katcp server listening on {host}:{port}", file=sys.stderr, flush=True)
    if simulator.prometheus_port is not None:
        logger.info("Prometheus metrics on port %d", simulator.prometheus_port)
    logger.info(
        "sending %s (%s format) to %s, heap size %d, packet size %d%s, rate %s",
        engine.transport.kind.value,
        engine.format.name,
        settings.destinations_text,
        engine.heap_size,
        engine.packet_size,
        (
            " (one packet per heap)"
            if settings.format == "meerkat"
            else ""
            if settings.packet_size
            else f" (picked, at most {settings.max_packet_size})"
        ),
        f"{engine.rate:g} B/s" if engine.rate else "unlimited",
    )
    logger.info("signal %s", engine.signal.canonical)
    if engine.clock is not None:
        logger.info(
            "real time: ADC at %g Hz, sync time %.6f, captures aligned to %d samples",
            engine.clock.adc_sample_rate,
            engine.clock.sync_time,
            engine.clock.align_samples,
        )
    logger.info(
        "spead2 %s sends UDP %s segmentation offload (GSO)",
        spead2.__version__,
        "with" if spead2_uses_gso() else "without",
    )
    await simulator.join()
    await simulator.stop()
    logger.info("shut down")


_signalled = False


def _on_signal(simulator: Simulator, sig: signal.Signals) -> None:
    global _signalled
    if _signalled:
        logger.warning("received %s again: exiting now", sig.name)
        logging.shutdown()
        os._exit(128 + sig.value)
    _signalled = True
    logger.info("received %s, shutting down (again to exit at once)", sig.name)
    simulator.halt()


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Rendering a signal runs numpy in worker threads; hand the GIL back to the event
    # loop every millisecond rather than every 5, so katcp stays prompt meanwhile.
    sys.setswitchinterval(1e-3)
    try:
        asyncio.run(run(settings))
    except StartupError as exc:
        print(f"dsim: {exc}", file=sys.stderr)
        return _exit(1)
    except ConfigError as exc:
        print(f"dsim: error: {exc}", file=sys.stderr)
        return _exit(2)
    return _exit(0)


def _exit(status: int) -> int:
    """Return `status`, or exit at once if a render thread is still busy.

    Everything that matters has been stopped and closed by now; a render
    stage that cannot be interrupted (a full-window FFT, seconds at 2**27)
    must not hold the process up.
    """
    # Render workers are joined at interpreter exit, daemon threads or not.
    busy = [t for t in threading.enumerate() if t.name.startswith(("dsim-build", "dsim-render"))]
    if busy:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
