"""Receive a dsim stream and check every heap against the generator's rules.

Two parts, usable separately:

* :class:`Checker` is pure logic: feed it decoded heaps (timestamp, samples,
  whether descriptors came with it) and end-of-stream markers, and it keeps a
  :class:`Report` of heaps and bytes, missing heaps (with their timestamp
  ranges), duplicates, out-of-order heaps, wrong payloads, captures and
  segments (runs of one heap size).
* :func:`verify` receives with spead2 from a UDP port (unicast or multicast),
  decodes each heap and feeds the checker, until end-of-stream, a heap count,
  an idle timeout or cancellation.

The rules (see :mod:`dsim.generator`): within a capture each heap's timestamp
is the previous one plus the previous heap's sample count, and all its samples
equal ``int8(n)`` for a heap counter ``n`` that goes up by one per heap. The
first heap of a capture, and the first after a heap-size change, carry the
descriptors. Timestamps are compared modulo 2**48, the flavour's range.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import spead2
import spead2.recv
import spead2.recv.asyncio

from . import layout
from .errors import ConfigError

#: How many defect locations a report lists (the counts are always complete).
MAX_LOCATIONS = 100
#: Linux SO_RCVBUFFORCE, which lets root exceed net.core.rmem_max.
_SO_RCVBUFFORCE = 33
_HALF_RANGE = layout.TIMESTAMP_MODULUS // 2


def _wrap(delta: int) -> int:
    """`delta` as a signed distance modulo the timestamp range."""
    return (delta + _HALF_RANGE) % layout.TIMESTAMP_MODULUS - _HALF_RANGE


@dataclass
class Segment:
    """A run of heaps of one size within a capture."""

    capture: int
    heap_size: int
    first_timestamp: int
    heaps: int = 0


@dataclass
class Report:
    """What a verification found. ``clean`` is the verdict."""

    heaps: int = 0
    bytes: int = 0
    seconds: float = 0.0
    missing: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    bad_payload: int = 0
    undescribed: int = 0
    incomplete: int = 0
    captures: int = 0
    stopped_by: str = ""
    missing_ranges: list[tuple[int, int]] = field(default_factory=list)
    duplicate_timestamps: list[int] = field(default_factory=list)
    out_of_order_timestamps: list[int] = field(default_factory=list)
    bad_payload_timestamps: list[int] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Payload bytes per second over the receiving time."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def problems(self) -> int:
        return (
            self.missing
            + self.duplicates
            + self.out_of_order
            + self.bad_payload
            + self.undescribed
            + self.incomplete
        )

    @property
    def clean(self) -> bool:
        """True if heaps arrived and nothing was wrong with any of them."""
        return self.heaps > 0 and self.problems == 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rate"] = self.rate
        out["clean"] = self.clean
        return out


def _note(locations: list[Any], value: Any) -> None:
    if len(locations) < MAX_LOCATIONS:
        locations.append(value)


class Checker:
    """Checks a sequence of heaps against the generator's rules.

    A capture starts with the first heap seen and after each end-of-stream
    heap. A new capture whose first timestamp continues the previous one is
    also checked for the heap counter running on; one that starts elsewhere
    (another dsim, or one restarted) just sets a new reference.
    """

    def __init__(self) -> None:
        self.report = Report()
        self._expected: int | None = None  # timestamp of the next heap
        self._next_value = 0  # int8 value expected next (valid once _expected is set)
        self._heap_samples = 0  # samples in the last heap
        self._described_size: int | None = None  # heap size the last descriptors gave
        self._gaps: list[tuple[int, int]] = []  # missing ranges [start, end) this capture
        self._new_capture = True
        self._segment: Segment | None = None

    # ------------------------------------------------------------ input

    def descriptors(self, heap_size: int) -> None:
        """Descriptors arrived announcing `heap_size` samples per heap."""
        self._described_size = heap_size

    def end_of_stream(self) -> None:
        self.report.captures += 1
        self._new_capture = True
        self._gaps = []

    def heap(self, timestamp: int, samples: np.ndarray) -> None:
        """Check one data heap, given its `samples` as integers (one per sample)."""
        report = self.report
        n_samples = len(samples)
        report.heaps += 1
        report.bytes += samples.nbytes
        if self._described_size is not None and n_samples != self._described_size:
            report.undescribed += 1
        value = int(samples[0]) if n_samples else 0
        uniform = n_samples > 0 and bool((samples == samples[0]).all())

        if self._expected is None or self._new_capture:
            continues = self._expected is not None and timestamp == self._expected
            self._start_segment(timestamp, n_samples)
            self._new_capture = False
            self._gaps = []
            expected = self._next_value if continues else None
            self._check_payload(timestamp, uniform, value, expected)
            self._advance(timestamp, n_samples, value if expected is None else expected)
            return

        delta = _wrap(timestamp - self._expected)
        if delta < 0:
            self._late(timestamp, n_samples, uniform, value)
            return
        expected_value = self._next_value
        if delta > 0:
            # Heaps in [expected, timestamp) never came (or have not come yet).
            lost = -(-delta // self._heap_samples)
            report.missing += lost
            self._gaps.append((self._expected, timestamp))
            _note(report.missing_ranges, (self._expected, timestamp))
            expected_value += lost
        if n_samples != self._heap_samples:
            self._start_segment(timestamp, n_samples)
        self._check_payload(timestamp, uniform, value, expected_value)
        # Follow the expected counter, so that one corrupted heap does not cascade.
        self._advance(timestamp, n_samples, expected_value)

    # ---------------------------------------------------------- helpers

    def _late(self, timestamp: int, n_samples: int, uniform: bool, value: int) -> None:
        """A heap behind the expected timestamp: a gap being filled, or a repeat."""
        report = self.report
        assert self._expected is not None
        for gap in self._gaps:
            start, end = gap
            if _wrap(timestamp - start) >= 0 and _wrap(end - timestamp) > 0:
                report.out_of_order += 1
                report.missing -= 1
                _note(report.out_of_order_timestamps, timestamp)
                # Split the gap around the heap that arrived.
                self._gaps.remove(gap)
                after = (timestamp + n_samples) % layout.TIMESTAMP_MODULUS
                self._gaps += [g for g in ((start, timestamp), (after, end)) if _wrap(g[1] - g[0]) > 0]
                heaps_back = -(-_wrap(self._expected - timestamp) // self._heap_samples)
                self._check_payload(timestamp, uniform, value, self._next_value - heaps_back)
                if self._segment is not None:
                    self._segment.heaps += 1
                return
        report.duplicates += 1
        _note(report.duplicate_timestamps, timestamp)

    def _check_payload(
        self, timestamp: int, uniform: bool, value: int, expected: int | None
    ) -> None:
        if not uniform or (expected is not None and (value - expected) % 256 != 0):
            self.report.bad_payload += 1
            _note(self.report.bad_payload_timestamps, timestamp)

    def _start_segment(self, timestamp: int, n_samples: int) -> None:
        self._segment = Segment(self.report.captures, n_samples, timestamp)
        _note(self.report.segments, self._segment)
        self._heap_samples = n_samples

    def _advance(self, timestamp: int, n_samples: int, value: int) -> None:
        self._expected = (timestamp + n_samples) % layout.TIMESTAMP_MODULUS
        self._next_value = (value + 1) % 256
        self._heap_samples = n_samples
        assert self._segment is not None
        self._segment.heaps += 1


# ------------------------------------------------------------------ receiving


@dataclass
class VerifyConfig:
    """Where to receive and when to stop.

    `captures`: stop after this many end-of-stream heaps (0: never).
    `heaps`: stop after this many data heaps. `idle_timeout`: stop after this
    many seconds without a heap. `buffer_size`: the socket receive buffer (as
    root it may exceed net.core.rmem_max).
    """

    port: int
    host: str = "127.0.0.1"
    multicast: str | None = None
    interface: str = "0.0.0.0"
    buffer_size: int = 64 * 1024 * 1024
    max_packet_size: int = 65536
    heaps: int | None = None
    idle_timeout: float | None = None
    captures: int = 1


def open_socket(config: VerifyConfig) -> socket.socket:
    """A bound UDP socket with a large buffer, joined to the multicast group if any."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, config.buffer_size)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, config.buffer_size)
        if config.multicast is not None:
            group = ipaddress.IPv4Address(config.multicast)
            if not group.is_multicast:
                raise ConfigError(f"{config.multicast} is not a multicast group")
            sock.bind((str(group), config.port))
            mreq = struct.pack(
                "4s4s", group.packed, ipaddress.IPv4Address(config.interface).packed
            )
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            sock.bind((config.host, config.port))
    except (OSError, ValueError) as exc:
        sock.close()
        if isinstance(exc, ConfigError):
            raise
        where = config.multicast or config.host
        raise ConfigError(f"cannot receive on {where}:{config.port}: {exc}") from None
    return sock


class _Decoder:
    """Turns received heaps into checker calls, with the descriptors seen so far."""

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.undecodable = 0

    def feed(self, heap: spead2.recv.Heap) -> None:
        if heap.is_end_of_stream():
            self.checker.end_of_stream()
            return
        for raw in heap.get_descriptors():
            descriptor = spead2.Descriptor.from_raw(raw, heap.flavour)
            if descriptor.id == layout.ADC_SAMPLES_ID and descriptor.shape:
                self.checker.descriptors(int(descriptor.shape[0] or 0))
        timestamp: int | None = None
        samples: np.ndarray | None = None
        for item in heap.get_items():
            if item.id == layout.TIMESTAMP_ID:
                timestamp = (
                    item.immediate_value
                    if item.is_immediate
                    else int.from_bytes(bytes(item), "big")
                )
            elif item.id == layout.ADC_SAMPLES_ID:
                samples = np.frombuffer(item, np.int8)
        if timestamp is None or samples is None:
            self.undecodable += 1
            self.checker.report.undescribed += 1
            return
        self.checker.heap(timestamp, samples)


class Verifier:
    """A bound receiver and its checker; :meth:`run` receives until a stop condition.

    The socket is bound when the verifier is created, so a sender started
    afterwards loses nothing. :meth:`stop` ends :meth:`run` early (for Ctrl-C);
    the report is complete either way.
    """

    def __init__(self, config: VerifyConfig) -> None:
        self.config = config
        self.checker = Checker()
        self._decoder = _Decoder(self.checker)
        self._sock = open_socket(config)
        self._thread_pool = spead2.ThreadPool()
        self._stream = spead2.recv.asyncio.Stream(
            self._thread_pool,
            spead2.recv.StreamConfig(max_heaps=8, stop_on_stop_item=False),
            spead2.recv.RingStreamConfig(heaps=1024),
        )
        self._stream.add_udp_reader(self._sock, max_size=config.max_packet_size)
        self._interrupted = False

    @property
    def report(self) -> Report:
        return self.checker.report

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def stop(self) -> None:
        """Stop receiving (as on Ctrl-C); :meth:`run` returns the report so far."""
        self._interrupted = True
        self._stream.stop()

    async def run(
        self,
        progress: Callable[[Report], None] | None = None,
        progress_period: float = 1.0,
    ) -> Report:
        config = self.config
        report = self.checker.report
        stream = self._stream
        start: float | None = None
        last = last_progress = time.monotonic()
        try:
            while True:
                try:
                    heap = stream.get_nowait()
                except spead2.Empty:
                    try:
                        async with asyncio.timeout(config.idle_timeout):
                            heap = await stream.get()
                    except TimeoutError:
                        report.stopped_by = "timeout"
                        break
                last = time.monotonic()
                if start is None:
                    start = last
                self._decoder.feed(heap)
                if config.captures and report.captures >= config.captures:
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
            report.incomplete = stream.stats["incomplete_heaps_evicted"]
            stream.stop()
            self._sock.close()
        return report


async def verify(
    config: VerifyConfig, progress: Callable[[Report], None] | None = None
) -> Report:
    """Receive and check a stream until a stop condition; returns the report."""
    return await Verifier(config).run(progress)
