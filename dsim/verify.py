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

from . import layout, packing
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
    """A run of heaps of one size within a capture (of one stream: a digitiser id)."""

    capture: int
    heap_size: int  # samples
    first_timestamp: int
    heaps: int = 0
    stream: int | None = None


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
    misaligned: int = 0
    bad_status: int = 0
    wrong_id: int = 0
    off_clock: int = 0
    captures: int = 0
    end_of_stream_heaps: int = 0
    descriptor_heaps: int = 0
    streams: list[int] = field(default_factory=list)
    format: str = ""
    clock_checked: int = 0
    clock_offset_max: float | None = None
    clock_offset_mean: float | None = None
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
            + self.misaligned
            + self.bad_status
            + self.wrong_id
            + self.off_clock
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

    def __init__(
        self, report: Report | None = None, stream: int | None = None, bits: int = 8
    ) -> None:
        self.report = Report() if report is None else report
        self.stream = stream
        self._modulus = 1 << bits
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

    def end_of_stream(self, count: bool = True) -> None:
        """A capture ended; the next heap starts a new one. `count` it in the report."""
        if count:
            self.report.captures += 1
        self._new_capture = True
        self._gaps = []

    def heap(self, timestamp: int, samples: np.ndarray) -> None:
        """Check one data heap, given its `samples` as integers (one per sample)."""
        n_samples = len(samples)
        value = int(samples[0]) if n_samples else 0
        uniform = n_samples > 0 and bool((samples == samples[0]).all())
        self.heap_summary(timestamp, n_samples, samples.nbytes, value, uniform)

    def heap_summary(
        self, timestamp: int, n_samples: int, nbytes: int, value: int, uniform: bool
    ) -> None:
        """Check one data heap, given what its samples are: all `value` if `uniform`."""
        report = self.report
        report.heaps += 1
        report.bytes += nbytes
        if self._described_size is not None and n_samples != self._described_size:
            report.undescribed += 1

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
                pieces = ((start, timestamp), (after, end))
                self._gaps += [g for g in pieces if _wrap(g[1] - g[0]) > 0]
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
        if not uniform or (expected is not None and (value - expected) % self._modulus != 0):
            self.report.bad_payload += 1
            _note(self.report.bad_payload_timestamps, timestamp)

    def _start_segment(self, timestamp: int, n_samples: int) -> None:
        self._segment = Segment(self.report.captures, n_samples, timestamp, stream=self.stream)
        _note(self.report.segments, self._segment)
        self._heap_samples = n_samples

    def _advance(self, timestamp: int, n_samples: int, value: int) -> None:
        self._expected = (timestamp + n_samples) % layout.TIMESTAMP_MODULUS
        self._next_value = (value + 1) % self._modulus
        self._heap_samples = n_samples
        assert self._segment is not None
        self._segment.heaps += 1


# ------------------------------------------------------------------ receiving


@dataclass(frozen=True)
class WallClock:
    """The sender's ADC clock: sample ``t`` is taken at ``sync_time + t / adc_sample_rate``."""

    sync_time: float
    adc_sample_rate: float

    def time_of(self, timestamp: int) -> float:
        return self.sync_time + timestamp / self.adc_sample_rate

    def unwrap(self, timestamp: int, when: float) -> int:
        """The full timestamp whose low 48 bits are `timestamp`, nearest to the time `when`."""
        modulus = layout.TIMESTAMP_MODULUS
        now = (when - self.sync_time) * self.adc_sample_rate
        return timestamp + round((now - timestamp) / modulus) * modulus


@dataclass
class VerifyConfig:
    """Where to receive and when to stop.

    `captures`: stop after this many captures (end-of-stream heaps per stream; 0: never).
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
    #: MeerKAT format: sample width until descriptors say otherwise.
    sample_bits: int = 10
    #: MeerKAT format: digitiser ids expected (empty: any).
    digitiser_ids: tuple[int, ...] = ()
    #: Real-time streams: check timestamps against the wall clock.
    clock: WallClock | None = None
    clock_tolerance: float = 0.05


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
    """Turns received heaps into checks, with the descriptors seen so far.

    Heaps with a digitiser_id item are MeerKAT-format heaps: their samples are
    unpacked with the width the descriptors give (or ``sample_bits`` until
    descriptors arrive), and each digitiser id (polarisation) is checked as a
    stream of its own. Other heaps are tutorial-format (int8 samples).
    """

    def __init__(self, report: Report, config: VerifyConfig) -> None:
        self.report = report
        self.config = config
        self.checkers: dict[int | None, Checker] = {}
        self.sample_bits = config.sample_bits
        self.described_samples: int | None = None
        self._offset_sum = 0.0
        self._offset_count = 0
        # Packed bytes of one sample group -> its value, or None if its samples differ.
        self._group_values: dict[bytes, int | None] = {}

    def _checker(self, stream: int | None, bits: int) -> Checker:
        checker = self.checkers.get(stream)
        if checker is None:
            checker = Checker(self.report, stream, bits)
            if self.described_samples is not None:
                checker.descriptors(self.described_samples)
            self.checkers[stream] = checker
            if stream is not None:
                self.report.streams.append(stream)
        return checker

    def feed(self, heap: spead2.recv.Heap, arrived: float | None = None) -> None:
        """Check `heap`; `arrived` is its arrival time if known (the receiver was idle)."""
        report = self.report
        if heap.is_end_of_stream():
            report.end_of_stream_heaps += 1
            # One end-of-stream heap per stream (polarisation) ends a capture.
            streams = len(self.config.digitiser_ids) or len(self.checkers)
            report.captures = report.end_of_stream_heaps // max(1, streams)
            for checker in self.checkers.values():
                checker.end_of_stream(count=False)
            return
        raw_descriptors = heap.get_descriptors()
        for raw in raw_descriptors:
            descriptor = spead2.Descriptor.from_raw(raw, heap.flavour)
            if descriptor.id == layout.ADC_SAMPLES_ID and descriptor.shape:
                self.described_samples = int(descriptor.shape[0] or 0)
                if descriptor.format:
                    self.sample_bits = descriptor.format[0][1]
                for checker in self.checkers.values():
                    checker.descriptors(self.described_samples)
        values: dict[int, Any] = {}
        for item in heap.get_items():
            values[item.id] = item.immediate_value if item.is_immediate else item
        if not values:
            if raw_descriptors:
                report.descriptor_heaps += 1
            return
        timestamp = values.get(layout.TIMESTAMP_ID)
        payload = values.get(layout.ADC_SAMPLES_ID)
        if not isinstance(timestamp, int) or payload is None or isinstance(payload, int):
            report.undescribed += 1
            return
        digitiser_id = values.get(layout.DIGITISER_ID_ID)
        if digitiser_id is None:
            report.format = report.format or "tutorial"
            self._checker(None, 8).heap(timestamp, np.frombuffer(payload, np.int8))
        else:
            report.format = report.format or "meerkat"
            data = np.frombuffer(payload, np.uint8)
            self._meerkat_heap(timestamp, int(digitiser_id), values, data)
        clock = self.config.clock
        if clock is not None and arrived is not None:
            offset = arrived - clock.time_of(clock.unwrap(timestamp, arrived))
            report.clock_checked += 1
            self._offset_sum += offset
            self._offset_count += 1
            report.clock_offset_mean = self._offset_sum / self._offset_count
            if report.clock_offset_max is None or abs(offset) > abs(report.clock_offset_max):
                report.clock_offset_max = offset
            if abs(offset) > self.config.clock_tolerance:
                report.off_clock += 1

    def _meerkat_heap(
        self, timestamp: int, digitiser_id: int, values: dict[int, Any], data: np.ndarray
    ) -> None:
        report = self.report
        bits = self.sample_bits
        n_samples = len(data) * 8 // bits
        group = packing.group_bytes(bits)
        if len(data) % group or not len(data):
            uniform, value = False, 0
        else:
            groups = data.reshape(-1, group)
            key = groups[0].tobytes()
            if key not in self._group_values:
                first = packing.unpack(groups[0], bits)
                self._group_values[key] = int(first[0]) if (first == first[0]).all() else None
            group_value = self._group_values[key]
            value = 0 if group_value is None else group_value
            uniform = group_value is not None and bool((groups == groups[0]).all())
        self._checker(digitiser_id, bits).heap_summary(
            timestamp, n_samples, len(data), value, uniform
        )
        if n_samples and timestamp % n_samples:
            report.misaligned += 1
        if self.config.digitiser_ids and digitiser_id not in self.config.digitiser_ids:
            report.wrong_id += 1
        status = values.get(layout.DIGITISER_STATUS_ID)
        if uniform:
            saturated = abs(value) >= packing.full_scale(bits)
            count = min(n_samples, layout.STATUS_COUNT_MAX) if saturated else 0
            expected = (count << layout.STATUS_COUNT_SHIFT) | (
                layout.STATUS_SATURATED if saturated else 0
            )
            if status != expected:
                report.bad_status += 1


class Verifier:
    """A bound receiver and its checker; :meth:`run` receives until a stop condition.

    The socket is bound when the verifier is created, so a sender started
    afterwards loses nothing. :meth:`stop` ends :meth:`run` early (for Ctrl-C);
    the report is complete either way.
    """

    def __init__(self, config: VerifyConfig) -> None:
        self.config = config
        self._report = Report()
        self._decoder = _Decoder(self._report, config)
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
        return self._report

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
        report = self._report
        stream = self._stream
        start: float | None = None
        last = last_progress = time.monotonic()
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
                self._decoder.feed(heap, arrived)
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
