"""What a verification found: the :class:`Report` and its human-readable summary.

Counts are always complete; lists of locations (where something went wrong,
segments, captures) keep the first :data:`MAX_LOCATIONS` entries, so that a
long, lossy run cannot grow the report without bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: How many locations of each kind a report keeps (the counts are always complete).
MAX_LOCATIONS = 100


def note(locations: list[Any], value: Any) -> bool:
    """Append `value` unless the list already holds :data:`MAX_LOCATIONS`; True if kept."""
    if len(locations) < MAX_LOCATIONS:
        locations.append(value)
        return True
    return False


@dataclass
class Segment:
    """A run of heaps of one size within a capture, of one stream (a digitiser id, or None)."""

    capture: int
    heap_size: int  # samples
    first_timestamp: int
    heaps: int = 0
    stream: int | None = None


@dataclass
class CaptureStart:
    """Where a capture began, and what showed it: ``start`` (the first heap seen),
    ``end-of-stream`` (the first heap after end-of-stream heaps), ``jump`` (a forward
    timestamp jump with no heap ids missing: a documented capture start) or
    ``restart`` (heap ids went back: the sender was restarted)."""

    capture: int
    first_timestamp: int
    started_by: str
    stream: int | None = None


@dataclass
class PayloadError:
    """A heap whose samples differ from what was expected, and its first wrong sample."""

    timestamp: int
    sample: int  # index within the heap
    got: int | None
    expected: int | None
    stream: int | None = None


@dataclass
class Tone:
    """A spectral line: its frequency and its level (0 dBFS is a full-scale sine)."""

    cycles_per_sample: float
    frequency_hz: float | None
    level_dbfs: float
    amplitude: float  # LSB (peak)


@dataclass
class Measurement:
    """What one polarisation's received samples look like."""

    stream: int | None
    samples: int  # samples measured
    bits: int
    mean: float  # LSB (DC)
    rms: float  # LSB, everything (DC, tones and noise)
    noise_rms: float | None  # LSB, the white floor with DC and tones taken out
    saturated: int  # samples at full scale
    tones: list[Tone] = field(default_factory=list)
    fft_length: int = 0  # 0: too few contiguous samples for a spectrum


@dataclass
class Correlation:
    """The correlation coefficient of two polarisations over the samples at equal timestamps."""

    streams: tuple[int | None, int | None]
    samples: int
    coefficient: float | None  # None when either is constant


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
    bad_timestamp: int = 0
    #: Captures seen (see :class:`CaptureStart` for what starts one).
    captures: int = 0
    #: Captures that ended with end-of-stream heaps (one run of them, whatever its length).
    end_of_stream: int = 0
    end_of_stream_heaps: int = 0
    descriptor_heaps: int = 0
    streams: list[int] = field(default_factory=list)
    format: str = ""
    #: What the payloads were checked against: ``counter``, a signal spec, or ``unchecked``.
    pattern: str = "counter"
    clock_checked: int = 0
    clock_offset_max: float | None = None
    clock_offset_mean: float | None = None
    #: spead2's "worker thread blocked by full ringbuffer" warnings (the verifier fell behind).
    ringbuffer_full: int = 0
    stopped_by: str = ""
    missing_ranges: list[tuple[int, int]] = field(default_factory=list)
    duplicate_timestamps: list[int] = field(default_factory=list)
    out_of_order_timestamps: list[int] = field(default_factory=list)
    bad_payload_timestamps: list[int] = field(default_factory=list)
    bad_payload_locations: list[PayloadError] = field(default_factory=list)
    bad_timestamp_timestamps: list[int] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    capture_starts: list[CaptureStart] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    correlations: list[Correlation] = field(default_factory=list)
    #: One-line remarks about the run (e.g. a sample width that does not match the signal).
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Payload bytes per second over the receiving time."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def problems(self) -> int:
        """Heaps found wrong in any way (a heap may count more than once)."""
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
            + self.bad_timestamp
        )

    @property
    def clean(self) -> bool:
        """True if heaps arrived and nothing was wrong with any of them."""
        return self.heaps > 0 and self.problems == 0

    def to_dict(self) -> dict[str, Any]:
        """Everything, as JSON-ready values (``rate`` and ``clean`` included)."""
        out = asdict(self)
        out["rate"] = self.rate
        out["clean"] = self.clean
        return out


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f} MB/s"


def _ranges(ranges: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"[{a}, {b})" for a, b in ranges)


def _stream(stream: int | None) -> str:
    return "" if stream is None else f" (digitiser id {stream})"


def _measurement_lines(report: Report) -> list[str]:
    lines = []
    for m in report.measurements:
        name = "samples" if m.stream is None else f"digitiser id {m.stream}"
        noise = "n/a" if m.noise_rms is None else f"{m.noise_rms:.2f}"
        lines.append(
            f"{name}: {m.samples} samples measured, mean {m.mean:.2f}, rms {m.rms:.2f}, "
            f"noise rms {noise} LSB, saturated {m.saturated}"
        )
        for tone in m.tones:
            where = (
                f"{tone.frequency_hz / 1e6:.6f} MHz"
                if tone.frequency_hz is not None
                else f"{tone.cycles_per_sample:.6f} cycles/sample"
            )
            lines.append(f"  tone at {where}: {tone.level_dbfs:.2f} dBFS")
    for c in report.correlations:
        coefficient = "n/a" if c.coefficient is None else f"{c.coefficient:.4f}"
        a, b = ("-" if s is None else str(s) for s in c.streams)
        lines.append(
            f"correlation of digitiser ids {a} and {b}: {coefficient} over {c.samples} samples"
        )
    return lines


def summary(report: Report) -> str:
    """The human-readable summary: counts, then where things went wrong, then the verdict."""
    lines = [
        f"{report.heaps} heaps, {report.bytes} bytes in {report.seconds:.2f} s "
        f"({_mb(report.rate)}); {report.captures} capture(s), "
        f"{report.end_of_stream_heaps} end-of-stream heap(s)",
        f"missing {report.missing}, duplicates {report.duplicates}, out of order "
        f"{report.out_of_order}, bad payload {report.bad_payload}, undescribed "
        f"{report.undescribed}, incomplete {report.incomplete}, bad timestamp "
        f"{report.bad_timestamp}",
        f"payload checked against: {report.pattern}",
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
    if report.ringbuffer_full:
        lines.append(
            f"the verifier fell behind: {report.ringbuffer_full} spead2 'ringbuffer full' "
            "warning(s) (losses may be the receiver's own; give it a larger --buffer or a "
            "lower rate)"
        )
    if report.missing_ranges:
        lines.append(f"missing timestamps: {_ranges(report.missing_ranges)}")
    for name, values in [
        ("duplicate", report.duplicate_timestamps),
        ("out-of-order", report.out_of_order_timestamps),
        ("bad timestamp", report.bad_timestamp_timestamps),
    ]:
        if values:
            lines.append(f"{name} heaps at timestamps: {', '.join(map(str, values))}")
    if report.bad_payload_locations:
        shown = ", ".join(
            f"{e.timestamp}{_stream(e.stream)} sample {e.sample} (got {e.got}, expected "
            f"{e.expected})"
            for e in report.bad_payload_locations[:10]
        )
        more = len(report.bad_payload_locations) - 10
        lines.append(
            f"bad payload heaps at timestamps: {shown}" + (f" and {more} more" if more > 0 else "")
        )
    for start in report.capture_starts:
        if start.started_by != "start":
            seen = "" if start.stream is None else f", first seen on digitiser id {start.stream}"
            lines.append(
                f"capture {start.capture} from timestamp {start.first_timestamp} "
                f"({start.started_by}{seen})"
            )
    for seg in report.segments:
        lines.append(
            f"capture {seg.capture}{_stream(seg.stream)}: {seg.heaps} heaps of "
            f"{seg.heap_size} samples from timestamp {seg.first_timestamp}"
        )
    lines += _measurement_lines(report)
    lines += [f"note: {n}" for n in report.notes]
    verdict = "CLEAN" if report.clean else ("NOTHING RECEIVED" if not report.heaps else "PROBLEMS")
    lines.append(f"{verdict} (stopped by {report.stopped_by})")
    return "\n".join(lines)
