"""Receiving: the UDP socket, the spead2 stream, and the :class:`Verifier` that runs them.

The socket is bound *exclusively* (no ``SO_REUSEADDR``): two verifiers on one
port would each get an arbitrary share of the packets and both report loss,
so the second one fails at once instead. Its receive buffer is large (64 MiB
by default; as root ``SO_RCVBUFFORCE`` may exceed ``net.core.rmem_max``),
since the checks run in Python on the receiving host.

spead2 warns "worker thread blocked by full ringbuffer" whenever the Python
side falls behind, which at high rates floods stderr; the verifier counts
those warnings in the report instead of letting them through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import spead2
import spead2.recv
import spead2.recv.asyncio

from ..address import parse_destination
from ..clock import Clock, check_finite
from ..errors import ConfigError
from ..packing import check_sample_bits
from .analysis import DEFAULT_MEASURE_SAMPLES, SampleCollector, Spectrum, measure
from .checker import Checker, DataHeap
from .decode import Decoder, HeapKind
from .expect import CounterPattern, Pattern
from .report import Report

#: Default socket receive buffer.
DEFAULT_BUFFER = 64 * 1024 * 1024
#: Largest receive buffer (the kernel's SO_RCVBUF option is an int).
MAX_BUFFER = (1 << 31) - 1
#: Linux SO_RCVBUFFORCE (not exported by Python's socket module).
SO_RCVBUFFORCE = 33
#: Linux IP_MULTICAST_ALL: 0 = deliver only the groups this socket joined.
IP_MULTICAST_ALL = 49
#: Completed heaps spead2 may hold for Python.
RING_HEAPS = 1024


def multicast_groups(text: str) -> list[str]:
    """``GROUP`` or ``GROUP+N`` (N+1 consecutive groups, as MeerKAT writes a fan-out).

    Read as dsim reads a DEST's address (:func:`dsim.address.parse_destination`),
    without the port, which dsim-verify takes separately.
    """
    if ":" in text:
        raise ConfigError(f"{text!r}: give the group(s) without a port (GROUP or GROUP+N)")
    endpoints = parse_destination(text, default_port=1)
    if not all(e.is_multicast for e in endpoints):
        raise ConfigError(f"{text!r} is not a multicast group (or GROUP+N, a range of them)")
    return [e.host for e in endpoints]


def udp_socket(
    port: int = 0,
    host: str = "127.0.0.1",
    buffer_size: int | None = DEFAULT_BUFFER,
    *,
    groups: Sequence[str] = (),
    interface: str = "0.0.0.0",
) -> socket.socket:
    """A UDP socket bound exclusively to `host`:`port`, with a `buffer_size` receive buffer.

    The buffer may exceed ``net.core.rmem_max`` as root (None: the kernel's
    default). With multicast `groups`, it joins each (on `interface`) and is
    bound to the group (one) or to every address (several; then it takes only
    the groups it joined). Raises :exc:`ConfigError` (one line) if it cannot.
    This is the one such socket of the project: the verifier, the tests and the
    benchmarks all use it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if buffer_size is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_size)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
        if groups:
            if len(groups) > 1:
                sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            sock.bind((groups[0] if len(groups) == 1 else "0.0.0.0", port))
            local = ipaddress.IPv4Address(interface).packed
            for group in groups:
                mreq = struct.pack("4s4s", ipaddress.IPv4Address(group).packed, local)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            sock.bind((host, port))
    except (OSError, ValueError) as exc:
        sock.close()
        where = groups[0] if groups else host
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot receive on {where}:{port}: {message}") from None
    return sock


@dataclass
class VerifyConfig:
    """Where to receive, what to expect, and when to stop.

    `captures`: stop after this many captures ended with end-of-stream heaps
    (0: never). `heaps`: stop after this many data heaps. `idle_timeout`: stop
    after this many seconds without a heap. `multicast`: ``GROUP`` or
    ``GROUP+N``. `pattern`: what payloads hold (None: the counter).
    `measure_samples`: samples per polarisation kept for the measurements (0:
    none; the counter pattern is never measured). `adc_sample_rate`: to give
    tone frequencies in Hz (default: the clock's).
    """

    port: int
    host: str = "127.0.0.1"
    multicast: str | None = None
    interface: str = "0.0.0.0"
    buffer_size: int = DEFAULT_BUFFER
    max_packet_size: int = 65536
    heaps: int | None = None
    idle_timeout: float | None = None
    captures: int = 1
    #: MeerKAT format: sample width until descriptors say otherwise.
    sample_bits: int = 10
    #: MeerKAT format: digitiser ids expected (empty: any).
    digitiser_ids: tuple[int, ...] = ()
    #: Real-time streams: check arrivals against the ADC clock.
    clock: Clock | None = None
    clock_tolerance: float = 0.05
    pattern: Pattern | None = None
    measure_samples: int = DEFAULT_MEASURE_SAMPLES
    max_tones: int = 5
    adc_sample_rate: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0-65535, not {self.port}")
        if self.captures < 0:
            raise ConfigError(f"captures must be >= 0 (0: never stop on them), not {self.captures}")
        if self.heaps is not None and self.heaps <= 0:
            raise ConfigError(f"heaps must be positive, not {self.heaps}")
        if self.idle_timeout is not None:
            check_finite(self.idle_timeout, "timeout", positive=True)
        check_finite(self.clock_tolerance, "clock tolerance", positive=True)
        if self.adc_sample_rate is not None:
            check_finite(self.adc_sample_rate, "ADC sample rate", positive=True)
        if self.buffer_size <= 0:
            raise ConfigError(f"buffer size must be positive, not {self.buffer_size}")
        check_sample_bits(self.sample_bits)
        if self.measure_samples < 0:
            raise ConfigError(f"samples to measure must be >= 0, not {self.measure_samples}")
        if self.multicast is not None:
            multicast_groups(self.multicast)


class _RingbufferFull(logging.Filter):
    """Counts spead2's "blocked by full ringbuffer" warnings into a report, and drops them."""

    def __init__(self, report: Report) -> None:
        super().__init__()
        self.report = report

    def filter(self, record: logging.LogRecord) -> bool:
        if "full ringbuffer" in record.getMessage():
            self.report.ringbuffer_full += 1
            return False
        return True


class Verifier:
    """A bound receiver and its checks; :meth:`run` receives until a stop condition.

    The socket is bound when the verifier is created, so a sender started
    afterwards loses nothing. :meth:`stop` ends :meth:`run` early (for Ctrl-C);
    the report is complete either way. After :meth:`run`, :attr:`spectra`
    holds each polarisation's power spectrum (for a plot).
    """

    def __init__(self, config: VerifyConfig) -> None:
        self.config = config
        self.report = Report()
        clock = config.clock
        self.checker = Checker(
            self.report,
            config.pattern,
            digitiser_ids=config.digitiser_ids,
            clock=clock,
            clock_tolerance=config.clock_tolerance,
        )
        self.decoder = Decoder(config.sample_bits)
        # The counter's staircase has nothing to measure.
        measuring = config.pattern is not None and not isinstance(config.pattern, CounterPattern)
        self.collector = SampleCollector(config.measure_samples if measuring else 0)
        self.spectra: list[Spectrum] = []
        groups = multicast_groups(config.multicast) if config.multicast else []
        self._sock = udp_socket(
            config.port,
            config.host,
            config.buffer_size,
            groups=groups,
            interface=config.interface,
        )
        self._thread_pool = spead2.ThreadPool()
        self._stream = spead2.recv.asyncio.Stream(
            self._thread_pool,
            spead2.recv.StreamConfig(max_heaps=16, stop_on_stop_item=False),
            spead2.recv.RingStreamConfig(heaps=RING_HEAPS),
        )
        self._stream.add_udp_reader(self._sock, max_size=config.max_packet_size)
        self._interrupted = False

    @property
    def port(self) -> int:
        """The UDP port receiving (useful when bound to port 0)."""
        return int(self._sock.getsockname()[1])

    def stop(self) -> None:
        """Stop receiving (as on Ctrl-C); :meth:`run` returns the report so far."""
        self._interrupted = True
        self._stream.stop()

    def feed(self, heap: spead2.recv.Heap, arrived: float | None, received: float) -> None:
        """Decode and check one received heap."""
        decoded = self.decoder.decode(heap, arrived, received)
        if isinstance(decoded, DataHeap):
            self.checker.heap(decoded)
            self.collector.add(decoded)
        elif decoded is HeapKind.END_OF_STREAM:
            self.checker.end_of_stream()
        elif decoded is HeapKind.DESCRIPTORS:
            self.checker.descriptor_heap()
        else:
            self.checker.foreign_heap()

    async def run(
        self,
        progress: Callable[[Report], None] | None = None,
        progress_period: float = 1.0,
    ) -> Report:
        """Receive and check until a stop condition; then measure. Returns the report."""
        config = self.config
        report = self.report
        stream = self._stream
        start: float | None = None
        last = last_progress = time.monotonic()
        log_filter = _RingbufferFull(report)
        spead2_logger = logging.getLogger("spead2")
        spead2_logger.addFilter(log_filter)
        try:
            while True:
                arrived: float | None = None
                try:
                    heap = stream.get_nowait()
                except spead2.Empty:
                    try:
                        async with asyncio.timeout(config.idle_timeout):
                            heap = await stream.get()
                    except TimeoutError:
                        report.stopped_by = "timeout"
                        break
                    # We were waiting for it, so it has only just arrived.
                    arrived = time.time()
                last = time.monotonic()
                if start is None:
                    start = last
                self.feed(heap, arrived, last)
                if config.captures and report.end_of_stream >= config.captures:
                    report.stopped_by = "end-of-stream"
                    break
                if config.heaps is not None and report.heaps >= config.heaps:
                    report.stopped_by = "heaps"
                    break
                if progress is not None and last - last_progress >= progress_period:
                    last_progress = last
                    report.seconds = last - start
                    progress(report)
        except spead2.Stopped:
            report.stopped_by = "interrupted" if self._interrupted else "stopped"
        finally:
            if start is not None:
                report.seconds = last - start
            # Heaps evicted unfinished while receiving (not those cut off by stopping).
            stats = stream.stats
            report.incomplete = stats["incomplete_heaps_evicted"]
            stream.stop()
            self._sock.close()
            blocked = stats["worker_blocked"]
            if blocked > report.ringbuffer_full:
                # Warnings still on their way from spead2's logging thread: let them land here.
                await asyncio.sleep(0.1)
            spead2_logger.removeFilter(log_filter)
            report.ringbuffer_full = max(report.ringbuffer_full, blocked)
        await self._measure()
        return report

    async def _measure(self) -> None:
        """Fill in the measurements (off the event loop: a second or so of numpy)."""
        config = self.config
        rate = config.adc_sample_rate
        if rate is None and config.clock is not None:
            rate = config.clock.adc_sample_rate
        if not self.collector.heaps:
            return
        measurements, correlations, spectra = await asyncio.to_thread(
            measure, self.collector, config.max_tones, rate
        )
        self.report.measurements = measurements
        self.report.correlations = correlations
        self.spectra = spectra


async def verify(config: VerifyConfig, progress: Callable[[Report], None] | None = None) -> Report:
    """Receive and check a stream until a stop condition; returns the report."""
    return await Verifier(config).run(progress)
