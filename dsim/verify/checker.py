"""The checks, as pure logic: feed decoded heaps, read the :class:`Report`.

Each heap's payload is checked on its own against the expected pattern (see
:mod:`dsim.verify.expect`). The order of heaps is checked per *stream* (a
MeerKAT digitiser id, or the one tutorial stream) with two sequences that
dsim keeps:

* **Heap ids** (SPEAD ``cnt``): dsim gives data heaps even ids that go up by 2
  for every data heap it sends, across polarisations and destinations. A
  receiver that gets a share of them (one polarisation, one destination, one
  multicast group of a fan-out) sees ids in a constant *stride* (a multiple
  of 2), which is inferred as the gcd of the steps seen. Ids missing between
  two heaps, in units of the stride, are lost heaps: nothing else is.
* **Timestamps**: within a capture, each heap a stream receives starts
  ``share * H`` samples after the one before it (``share`` is how many of
  the stream's heaps take turns, e.g. 8 for one group of an 8-group fan-out;
  inferred as the smallest step seen in whole heaps), ``units`` times that when
  ``units - 1`` heaps are lost.

A step whose timestamp goes further forward than the ids explain is a
*documented jump*, not loss: a new capture (a real-time capture starts at the
next aligned timestamp) or, when the heap size changed, a new segment (a
meerkat heap-size change continues at the next multiple of the new size).
Heaps lost across a jump are still counted, from the ids. Ids going back are a
late (out-of-order) heap if they fill a known gap, a duplicate if that id just
arrived with that timestamp, and otherwise a restarted sender (which starts
its ids again from 0): a new capture. End-of-stream heaps end a capture; the
next heap starts a new one.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field

from ..clock import Clock
from ..spead import signed_distance, status_word
from .expect import CounterPattern, Pattern
from .report import MAX_LOCATIONS, CaptureStart, Report, Segment, note

#: A stream silent this long whose ids then go back was restarted (seconds).
RESTART_IDLE = 1.0
#: Heap ids remembered per stream to recognise duplicates.
RECENT_IDS = 4096
#: Gaps remembered per stream that a late heap may still fill.
OPEN_GAPS = 1024


@dataclass(frozen=True, slots=True)
class DataHeap:
    """One received data heap, decoded.

    `payload` is the packed samples as on the wire (None if they could not
    be decoded: then `samples` says how many the heap is taken to hold).
    `stream` is the MeerKAT digitiser id (None for the tutorial format).
    `described` says whether the heap's size matches the latest descriptors
    (None: no descriptors seen). `arrived` is the UNIX time the heap arrived,
    when that is known to be accurate (the receiver was waiting for it);
    `received` the monotonic time the receiver took it, for noticing silences.
    """

    cnt: int
    timestamp: int
    payload: bytes | None
    bits: int = 8
    stream: int | None = None
    status: int | None = None
    samples: int | None = None
    described: bool | None = None
    arrived: float | None = None
    received: float | None = None

    @property
    def heap_samples(self) -> int:
        if self.samples is not None:
            return self.samples
        return 0 if self.payload is None else len(self.payload) * 8 // self.bits

    @property
    def nbytes(self) -> int:
        if self.payload is not None:
            return len(self.payload)
        return self.heap_samples * self.bits // 8


@dataclass
class _Span:
    """The timestamps a gap leaves missing: pieces ``[start, end)``, split by late heaps."""

    pieces: list[tuple[int, int]]
    listed: bool = False  # one of the first gaps, whose pieces the report lists

    def fill(self, timestamp: int, samples: int) -> None:
        for i, (start, end) in enumerate(self.pieces):
            if signed_distance(timestamp, start) >= 0 and signed_distance(end, timestamp) > 0:
                after = timestamp + samples
                keep = [
                    (a, b)
                    for a, b in ((start, timestamp), (after, end))
                    if signed_distance(b, a) > 0
                ]
                self.pieces[i : i + 1] = keep
                return


@dataclass
class _Gap:
    """Heap ids missing between ids `lo` and `hi` (exclusive) of one stream."""

    lo: int
    hi: int
    t_lo: int
    #: Timestamp step per heap id unit, if the gap lies within a segment (timestamps known).
    step: int | None
    span: _Span


@dataclass
class _Stream:
    """What the checker remembers of one stream (a digitiser id, or the tutorial stream)."""

    key: int | None
    capture: int = 0
    segment: Segment | None = None
    max_cnt: int = 0
    last_t: int = 0
    last_n: int = 0
    stride: int = 0  # gcd of the id steps seen (0: not known yet)
    share: int | None = None  # heaps of the stream per received heap
    deltas: Counter[int] = field(default_factory=Counter)  # id step -> times seen, this run
    lost: int = 0  # heaps lost this run, by the current stride
    gaps: deque[_Gap] = field(default_factory=lambda: deque(maxlen=OPEN_GAPS))
    recent: dict[int, int] = field(default_factory=dict)  # id -> timestamp
    recent_order: deque[int] = field(default_factory=deque)
    after_eos: bool = False
    received: float | None = None

    def remember(self, cnt: int, timestamp: int) -> None:
        if cnt not in self.recent:
            self.recent_order.append(cnt)
            if len(self.recent_order) > RECENT_IDS:
                del self.recent[self.recent_order.popleft()]
        self.recent[cnt] = timestamp


class Checker:
    """Checks data heaps (of any number of streams) and end-of-stream markers.

    `pattern` is what payloads should hold (default: the counter). With
    `digitiser_ids`, heaps of other ids are reported. With `clock`, heaps that
    carry an arrival time are compared with the time of their first sample.
    """

    def __init__(
        self,
        report: Report | None = None,
        pattern: Pattern | None = None,
        *,
        digitiser_ids: tuple[int, ...] = (),
        clock: Clock | None = None,
        clock_tolerance: float = 0.05,
    ) -> None:
        self.report = Report() if report is None else report
        self.pattern = CounterPattern() if pattern is None else pattern
        self.report.pattern = self.pattern.description
        self.digitiser_ids = digitiser_ids
        self.clock = clock
        self.clock_tolerance = clock_tolerance
        self._streams: dict[int | None, _Stream] = {}
        self._capture = -1  # index of the latest capture started
        self._eos_pending = False  # end-of-stream seen: the next heap starts a capture
        self._in_eos_run = False
        self._spans: list[_Span] = []  # the first gaps, whose ranges the report lists
        self._offset_sum = 0.0
        self._noted: set[str] = set()
        self._status_words: dict[int, int] = {}

    # ------------------------------------------------------------ input

    def end_of_stream(self) -> None:
        """An end-of-stream heap. A run of them (one per destination) ends one capture."""
        report = self.report
        report.end_of_stream_heaps += 1
        if not self._in_eos_run:
            self._in_eos_run = True
            report.end_of_stream += 1
            self._eos_pending = True
            for stream in self._streams.values():
                stream.after_eos = True

    def descriptor_heap(self) -> None:
        """A heap of descriptors only."""
        self.report.descriptor_heaps += 1

    def foreign_heap(self) -> None:
        """A heap that is not a dsim data heap (no timestamp or no samples)."""
        self.report.undescribed += 1

    def heap(self, heap: DataHeap) -> None:
        """Check one data heap."""
        report = self.report
        report.heaps += 1
        report.bytes += heap.nbytes
        self._in_eos_run = False
        n = heap.heap_samples
        if heap.stream is None:
            report.format = report.format or "tutorial"
        else:
            report.format = report.format or "meerkat"
            if heap.stream not in self._streams:
                report.streams = sorted([*report.streams, heap.stream])
            if self.digitiser_ids and heap.stream not in self.digitiser_ids:
                report.wrong_id += 1
            if n and heap.timestamp % n:
                report.misaligned += 1
        if heap.described is False:
            report.undescribed += 1
        self._sequence(heap, n)
        self._payload(heap)
        if self.clock is not None and heap.arrived is not None:
            self._check_clock(self.clock, heap.timestamp, heap.arrived)

    def note(self, text: str) -> None:
        """Add a remark to the report, once."""
        if text not in self._noted:
            self._noted.add(text)
            note(self.report.notes, text)

    # ---------------------------------------------------------- payload

    def _payload(self, heap: DataHeap) -> None:
        report = self.report
        if heap.payload is None:
            return
        reason = self.pattern.explain(heap.bits)
        if reason is not None:
            self.note(reason)
        error = self.pattern.check(heap.stream, heap.timestamp, heap.payload, heap.bits)
        if error is not None:
            report.bad_payload += 1
            note(report.bad_payload_timestamps, heap.timestamp)
            note(report.bad_payload_locations, error)
            return
        if heap.stream is not None:  # meerkat: digitiser_status counts full-scale samples
            count = self.pattern.saturated(heap.stream, heap.timestamp, heap.payload, heap.bits)
            if heap.status != self._status_word(count):
                report.bad_status += 1

    def _status_word(self, count: int) -> int:
        """``status_word(count)`` as a Python int, remembered (numpy costs per heap add up)."""
        word = self._status_words.get(count)
        if word is None:
            if len(self._status_words) > 4096:
                self._status_words.clear()
            word = self._status_words[count] = int(status_word(count))
        return word

    def _check_clock(self, clock: Clock, timestamp: int, arrived: float) -> None:
        report = self.report
        offset = arrived - clock.time_of(clock.unwrap(timestamp, arrived))
        report.clock_checked += 1
        self._offset_sum += offset
        report.clock_offset_mean = self._offset_sum / report.clock_checked
        if report.clock_offset_max is None or abs(offset) > abs(report.clock_offset_max):
            report.clock_offset_max = offset
        if abs(offset) > self.clock_tolerance:
            report.off_clock += 1

    # --------------------------------------------------------- sequence

    def _sequence(self, heap: DataHeap, n: int) -> None:
        stream = self._streams.get(heap.stream)
        if stream is None:
            stream = self._streams[heap.stream] = _Stream(heap.stream)
            self._start_run(stream, heap, n, "start")
        else:
            idle = (
                heap.received is not None
                and stream.received is not None
                and heap.received - stream.received >= RESTART_IDLE
            )
            if heap.cnt > stream.max_cnt:
                self._forward(stream, heap, n)
            else:
                self._backward(stream, heap, n, idle)
        stream.received = heap.received

    def _start_run(self, stream: _Stream, heap: DataHeap, n: int, kind: str) -> None:
        """`heap` starts a run of ids: the first heap of the stream, or after a restart."""
        stream.max_cnt = heap.cnt
        stream.last_t = heap.timestamp
        stream.last_n = n
        stream.stride = 0
        stream.share = None
        stream.deltas.clear()
        stream.lost = 0
        stream.gaps.clear()
        stream.recent.clear()
        stream.recent_order.clear()
        stream.remember(heap.cnt, heap.timestamp)
        self._enter_capture(stream, "end-of-stream" if stream.after_eos else kind, heap.timestamp)
        stream.after_eos = False
        self._start_segment(stream, heap.timestamp, n)

    def _forward(self, stream: _Stream, heap: DataHeap, n: int) -> None:
        """A heap with a higher id than any before: the next one, after a gap, or after a jump."""
        report = self.report
        cnt, t = heap.cnt, heap.timestamp
        dc = cnt - stream.max_cnt
        dt = signed_distance(t, stream.last_t)
        old_stride = stream.stride
        stream.stride = math.gcd(old_stride, dc)
        stream.deltas[dc] += 1
        lost_here = dc // stream.stride - 1
        if old_stride and stream.stride != old_stride:
            # A finer stride than believed: earlier steps lost heaps after all.
            lost = sum(count * (d // stream.stride - 1) for d, count in stream.deltas.items())
        else:
            lost = stream.lost + lost_here
        report.missing += lost - stream.lost
        stream.lost = lost
        units = dc // stream.stride

        same_size = n == stream.last_n
        if same_size and dt > 0 and dt % (units * n) == 0:
            ratio = dt // (units * n)
            if stream.share is None or ratio < stream.share:
                stream.share = ratio
        share = stream.share or 1
        predicted = units * share * stream.last_n
        if stream.after_eos:
            kind = "end-of-stream"
        elif dt <= 0 or (same_size and dt < predicted):
            kind = "bad"
        elif not same_size:
            kind = "resize"
        elif dt > predicted:
            kind = "jump"
        else:
            kind = "next"

        if lost_here > 0:
            span = _Span([(stream.last_t + stream.last_n, t)] if dt > 0 else [])
            if len(self._spans) < MAX_LOCATIONS:
                span.listed = True
                self._spans.append(span)
                self._update_ranges()
            stream.gaps.append(
                _Gap(
                    stream.max_cnt,
                    cnt,
                    stream.last_t,
                    share * stream.last_n if kind == "next" else None,
                    span,
                )
            )
        if kind == "bad":
            report.bad_timestamp += 1
            note(report.bad_timestamp_timestamps, t)
        if kind in ("end-of-stream", "jump"):
            self._enter_capture(stream, kind, t)
        if kind == "next":
            assert stream.segment is not None
            stream.segment.heaps += 1
        else:
            self._start_segment(stream, t, n)
        stream.after_eos = False
        stream.max_cnt, stream.last_t, stream.last_n = cnt, t, n
        stream.remember(cnt, t)

    def _backward(self, stream: _Stream, heap: DataHeap, n: int, idle: bool) -> None:
        """A heap whose id is not above every id before: late, repeated, or a new sender."""
        report = self.report
        cnt, t = heap.cnt, heap.timestamp
        if stream.after_eos or idle:
            self._start_run(stream, heap, n, "restart")
            return
        for gap in stream.gaps:
            if gap.lo < cnt < gap.hi and stream.stride and (cnt - gap.lo) % stream.stride == 0:
                self._fill(stream, gap, heap, n)
                return
        if stream.recent.get(cnt) == t:
            report.duplicates += 1
            note(report.duplicate_timestamps, t)
            return
        if stream.stride and cnt < stream.stride:
            # dsim's first data heaps for this stream: the sender started again.
            self._start_run(stream, heap, n, "restart")
            return
        # Older than anything remembered (or than the first heap seen): late.
        report.out_of_order += 1
        note(report.out_of_order_timestamps, t)

    def _fill(self, stream: _Stream, gap: _Gap, heap: DataHeap, n: int) -> None:
        """A late heap that fills part of a known gap."""
        report = self.report
        cnt, t = heap.cnt, heap.timestamp
        report.out_of_order += 1
        report.missing -= 1
        note(report.out_of_order_timestamps, t)
        if gap.step is not None and t != gap.t_lo + (cnt - gap.lo) // stream.stride * gap.step:
            report.bad_timestamp += 1
            note(report.bad_timestamp_timestamps, t)
        stream.gaps.remove(gap)
        if cnt - gap.lo > stream.stride:
            stream.gaps.append(_Gap(gap.lo, cnt, gap.t_lo, gap.step, gap.span))
        if gap.hi - cnt > stream.stride:
            stream.gaps.append(_Gap(cnt, gap.hi, t, gap.step, gap.span))
        gap.span.fill(t, n)
        if gap.span.listed:
            self._update_ranges()
        stream.remember(cnt, t)
        if stream.segment is not None:
            stream.segment.heaps += 1

    def _update_ranges(self) -> None:
        ranges = [piece for span in self._spans for piece in span.pieces]
        self.report.missing_ranges = ranges[:MAX_LOCATIONS]

    # --------------------------------------------------------- captures

    def _enter_capture(self, stream: _Stream, kind: str, timestamp: int) -> None:
        """Put `stream` in a capture: the current one, or a new one that `kind` starts.

        Streams see a boundary one after another (each polarisation's first
        heap after it), so a stream that reaches a boundary joins the capture
        another stream has already started there.
        """
        if kind in ("start", "end-of-stream"):
            if self._eos_pending or self._capture < 0:
                self._eos_pending = False
                self._new_capture(stream, "start" if self._capture < 0 else kind, timestamp)
            stream.capture = self._capture
            return
        wanted = stream.capture + 1  # a jump or a restart
        if wanted > self._capture:
            self._capture = wanted - 1
            self._new_capture(stream, kind, timestamp)
        stream.capture = wanted

    def _new_capture(self, stream: _Stream, kind: str, timestamp: int) -> None:
        self._capture += 1
        self.report.captures = self._capture + 1
        note(self.report.capture_starts, CaptureStart(self._capture, timestamp, kind, stream.key))

    def _start_segment(self, stream: _Stream, timestamp: int, n: int) -> None:
        stream.segment = Segment(stream.capture, n, timestamp, 1, stream.key)
        note(self.report.segments, stream.segment)
