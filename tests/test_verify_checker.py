"""dsim-verify's rules as pure logic: synthetic heaps into the Checker (and the decoder)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
import spead2
import spead2.recv
import spead2.send

from dsim.clock import Clock
from dsim.packing import group_samples, pack, unpack
from dsim.spead import FLAVOUR, full_scale, status_word, wrap_signed
from dsim.verify import Checker, CounterPattern, DataHeap, Report
from dsim.verify.decode import Decoder, HeapKind

H = 1024  # samples per heap


def heap(
    cnt: int,
    t: int,
    n: int = H,
    *,
    bits: int = 8,
    stream: int | None = None,
    value: int | None = None,
    status: int | None = None,
    **extra: object,
) -> DataHeap:
    """A counter-pattern heap (or all samples `value`), with the right status for meerkat."""
    v = int(wrap_signed(t // n, bits)) if value is None else value
    if stream is not None and status is None:
        status = int(status_word(n if abs(v) >= full_scale(bits) else 0))
    payload = pack(np.full(n, v), bits).tobytes()
    return DataHeap(cnt, t, payload, bits, stream, status, **extra)  # type: ignore[arg-type]


def tutorial(
    checker: Checker, indices: Iterable[int], n: int = H, t0: int = 0, c0: int = 0
) -> None:
    """Heaps number i of a one-destination tutorial stream: id c0 + 2i, timestamp t0 + i*n."""
    for i in indices:
        checker.heap(heap(c0 + 2 * i, t0 + i * n, n))


def starts(report: Report) -> list[tuple[int, int, str]]:
    return [(c.capture, c.first_timestamp, c.started_by) for c in report.capture_starts]


# ------------------------------------------------------------------ basics


def test_clean_stream() -> None:
    checker = Checker()
    tutorial(checker, range(300))  # the int8 counter wraps: still clean
    checker.end_of_stream()
    r = checker.report
    assert (r.heaps, r.bytes, r.captures, r.end_of_stream, r.problems) == (300, 300 * H, 1, 1, 0)
    assert r.clean and r.format == "tutorial" and r.pattern == "counter"
    assert [(s.capture, s.heap_size, s.first_timestamp, s.heaps) for s in r.segments] == [
        (0, H, 0, 300)
    ]


def test_missing_heaps_are_counted_with_their_range() -> None:
    checker = Checker()
    tutorial(checker, [0, 1, 2, 5, 6, 9])
    r = checker.report
    assert r.missing == 4
    assert r.missing_ranges == [(3 * H, 5 * H), (7 * H, 9 * H)]
    assert r.bad_payload == 0 and r.captures == 1  # the payload follows the timestamp
    assert not r.clean


def test_duplicates_and_out_of_order() -> None:
    checker = Checker()
    tutorial(checker, [0, 1, 2, 2, 4, 3, 5, 1])
    r = checker.report
    assert r.duplicates == 2 and r.duplicate_timestamps == [2 * H, 1 * H]
    assert r.out_of_order == 1 and r.out_of_order_timestamps == [3 * H]
    assert r.missing == 0 and r.missing_ranges == []  # heap 3 came late, not never
    assert r.bad_payload == 0 and r.bad_timestamp == 0


def test_a_late_heap_splits_the_missing_range() -> None:
    checker = Checker()
    tutorial(checker, [0, 1, 5, 3])
    r = checker.report
    assert r.missing == 2 and r.out_of_order == 1
    assert r.missing_ranges == [(2 * H, 3 * H), (4 * H, 5 * H)]


def test_wrong_payloads_are_located_to_the_sample() -> None:
    checker = Checker()
    tutorial(checker, [0, 1])
    checker.heap(heap(4, 2 * H, value=77))
    tutorial(checker, [3])
    samples = np.full(H, 4, np.int64)
    samples[100] = 0  # one bad sample
    checker.heap(DataHeap(8, 4 * H, pack(samples, 8).tobytes()))
    r = checker.report
    assert r.bad_payload == 2 and r.bad_payload_timestamps == [2 * H, 4 * H]
    located = [(e.timestamp, e.sample, e.got, e.expected) for e in r.bad_payload_locations]
    assert located == [(2 * H, 0, 77, 2), (4 * H, 100, 0, 4)]
    assert r.missing == 0  # the ids say nothing was lost


def test_the_counter_follows_the_timestamp_not_a_heap_count() -> None:
    # After a jump the value is timestamp // H: nothing to carry over from before.
    checker = Checker()
    tutorial(checker, range(3))
    checker.heap(heap(6, 1000 * H))
    checker.heap(heap(8, 1001 * H, value=3))  # the old counter's idea of the next value
    assert checker.report.bad_payload == 1
    assert checker.report.bad_payload_locations[0].expected == wrap_signed(1001, 8)


# ------------------------------------------------------ documented jumps


def test_a_real_time_capture_start_is_a_new_capture_not_loss() -> None:
    checker = Checker()
    tutorial(checker, range(10))
    # capture-stop, then capture-start in real time: ids run on, timestamps jump to
    # the next aligned timestamp after now.
    start = 5 << 20
    tutorial(checker, range(10, 20), t0=start - 10 * H)
    r = checker.report
    assert r.clean, r
    assert r.missing == 0 and r.missing_ranges == [] and r.bad_payload == 0
    assert r.captures == 2
    assert starts(r) == [(0, 0, "start"), (1, start, "jump")]
    assert [(s.capture, s.first_timestamp, s.heaps) for s in r.segments] == [
        (0, 0, 10),
        (1, start, 10),
    ]


def test_loss_across_a_jump_is_still_loss() -> None:
    checker = Checker()
    tutorial(checker, range(9))  # heap 9, the last of the capture, is lost ...
    start = 5 << 20
    tutorial(checker, range(11, 20), t0=start - 10 * H)  # ... and the first of the next
    r = checker.report
    assert r.missing == 2 and r.captures == 2 and r.bad_payload == 0
    assert r.missing_ranges == [(9 * H, start + H)]  # somewhere in there
    assert not r.clean


def test_a_meerkat_resize_to_the_next_multiple_is_a_segment_not_loss() -> None:
    checker = Checker(digitiser_ids=(4, 5))
    cnt = 0
    for i in range(11):  # 4096-sample heaps, two polarisations interleaved
        for pol in (4, 5):
            checker.heap(heap(cnt, i * 4096, 4096, bits=10, stream=pol))
            cnt += 2
    # The new size starts at the next multiple of 8192 samples: 49152, not 45056.
    for i in range(6, 12):
        for pol in (4, 5):
            checker.heap(heap(cnt, i * 8192, 8192, bits=10, stream=pol))
            cnt += 2
    r = checker.report
    assert r.clean, r
    assert r.captures == 1 and r.streams == [4, 5] and r.format == "meerkat"
    assert [(s.stream, s.heap_size, s.first_timestamp, s.heaps) for s in r.segments] == [
        (4, 4096, 0, 11),
        (5, 4096, 0, 11),
        (4, 8192, 49152, 6),
        (5, 8192, 49152, 6),
    ]


def test_a_tutorial_resize_continues_without_a_gap() -> None:
    checker = Checker()
    tutorial(checker, range(5))
    for i in range(5):
        checker.heap(heap(10 + 2 * i, 5 * H + i * 3000, 3000))
    r = checker.report
    assert r.clean and r.captures == 1
    assert [(s.heap_size, s.first_timestamp) for s in r.segments] == [(H, 0), (3000, 5 * H)]


def test_end_of_stream_heaps_end_a_capture_and_ids_still_count_across() -> None:
    checker = Checker()
    tutorial(checker, range(10))
    checker.end_of_stream()
    checker.end_of_stream()  # one per destination: still one capture end
    tutorial(checker, range(11, 20))  # free-running: continues, but heap 10 was lost
    checker.end_of_stream()
    r = checker.report
    assert r.end_of_stream == 2 and r.end_of_stream_heaps == 3 and r.captures == 2
    assert r.missing == 1
    assert starts(r) == [(0, 0, "start"), (1, 11 * H, "end-of-stream")]


def test_a_restarted_sender_starts_a_new_capture() -> None:
    checker = Checker()
    tutorial(checker, range(5, 10), c0=0)
    tutorial(checker, range(0, 5))  # ids and timestamps back at 0: dsim restarted
    r = checker.report
    assert r.clean and r.captures == 2
    assert starts(r)[1] == (1, 0, "restart")


def test_a_silence_then_ids_going_back_is_a_restart_not_duplicates() -> None:
    checker = Checker()
    for i in range(5):
        checker.heap(heap(2 * i, i * H, received=100.0 + i * 0.01))
    # Five seconds later the same ids and timestamps again: a new run of dsim.
    for i in range(5):
        checker.heap(heap(2 * i, i * H, received=105.0 + i * 0.01))
    r = checker.report
    assert r.clean and r.duplicates == 0 and r.captures == 2


def test_restart_in_real_time_jumps_forward_with_ids_from_zero() -> None:
    checker = Checker()
    tutorial(checker, range(50))
    tutorial(checker, range(10), t0=7 << 20)
    r = checker.report
    assert r.clean and r.captures == 2 and starts(r)[1] == (1, 7 << 20, "restart")


# --------------------------------------------------------- shares and strides


def test_one_destination_of_two_sees_every_other_heap_and_that_is_clean() -> None:
    checker = Checker()
    # Heaps take turns between 2 destinations; this one gets heaps 1, 3, 5, ...
    for i in range(1, 40, 2):
        if i != 21:
            checker.heap(heap(2 * i, i * H))
    r = checker.report
    assert r.missing == 1 and r.missing_ranges == [(20 * H, 23 * H)]
    assert r.captures == 1 and r.bad_timestamp == 0


def test_one_group_of_an_eight_group_fan_out() -> None:
    checker = Checker()
    n, pols, groups, group = 4096, 2, 8, 3
    # Heap i of polarisation p has id 2 * (i * pols + p); group g gets i = g mod 8.
    for i in range(group, 400, groups):
        if i == group + 10 * groups:
            continue  # one lost
        checker.heap(heap(2 * (i * pols), i * n, n, bits=10, stream=0))
    r = checker.report
    assert r.missing == 1 and r.captures == 1 and r.misaligned == 0 and r.bad_timestamp == 0


def test_a_stride_learnt_late_recounts_the_loss() -> None:
    checker = Checker()
    # The first step already lost a heap: the stride (2) only shows later.
    for i in [0, 2, 3, 4, 5]:
        checker.heap(heap(2 * i, i * H))
    assert checker.report.missing == 1


def test_timestamps_that_contradict_the_ids_are_reported() -> None:
    checker = Checker()
    tutorial(checker, range(5))
    checker.heap(heap(10, 5 * H - 8))  # 8 samples early
    checker.heap(heap(12, 6 * H))
    r = checker.report
    assert r.bad_timestamp == 1 and r.bad_timestamp_timestamps == [5 * H - 8]


# --------------------------------------------------------------- meerkat


def test_meerkat_status_alignment_and_ids() -> None:
    checker = Checker(digitiser_ids=(6,))
    bits, n = 10, 64
    # Heap 511 is at full scale: every sample saturated, and the status says so.
    checker.heap(heap(0, 511 * n, n, bits=bits, stream=6))
    assert checker.report.clean
    checker.heap(heap(2, 512 * n, n, bits=bits, stream=6, status=0xABC))  # wrong status
    checker.heap(heap(4, 513 * n, n, bits=bits, stream=6, value=511, status=0))  # bad payload
    checker.heap(heap(6, 514 * n, n, bits=bits, stream=9))  # a stranger
    checker.heap(heap(0, 515 * n + 4, n, bits=bits, stream=7))  # misaligned
    r = checker.report
    assert r.bad_status == 1 and r.bad_payload == 1 and r.wrong_id == 2 and r.misaligned == 1
    assert r.streams == [6, 7, 9]
    assert int(status_word(n)) == (n << 32) | 2


def test_undescribed_and_foreign_heaps() -> None:
    checker = Checker()
    checker.heap(heap(0, 0, described=True))
    checker.heap(heap(2, H, 2 * H, described=False))
    checker.foreign_heap()
    checker.descriptor_heap()
    r = checker.report
    assert r.undescribed == 2 and r.descriptor_heaps == 1


def test_the_wall_clock_check() -> None:
    clock = Clock(1e6, 1000.0)
    checker = Checker(clock=clock, clock_tolerance=0.01)
    checker.heap(heap(0, 0, arrived=1000.001))
    checker.heap(heap(2, H, arrived=clock.time_of(H) + 0.02))  # 20 ms late
    checker.heap(heap(4, 2 * H))  # no arrival time: not checked
    r = checker.report
    assert r.clock_checked == 2 and r.off_clock == 1
    assert r.clock_offset_max == pytest.approx(0.02)


# ----------------------------------------------------------- pieces


@pytest.mark.parametrize("bits", [2, 3, 8, 10, 11, 12, 16])
def test_bits_round_trip(bits: int) -> None:
    rng = np.random.default_rng(bits)
    samples = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), 40 * group_samples(bits))
    assert (unpack(pack(samples, bits), bits) == samples).all()


def test_ten_bit_packing_is_big_endian_msb_first() -> None:
    assert pack(np.array([1, -1, 0, -512]), 10).tolist() == [0x00, 0x7F, 0xF0, 0x02, 0x00]


def test_counter_pattern_values() -> None:
    pattern = CounterPattern()
    for bits in (8, 10):
        timestamps = np.arange(0, 5000 * 64, 64)
        assert [pattern.value(int(t), 64, bits) for t in timestamps] == list(
            wrap_signed(timestamps // 64, bits)
        )
    assert pattern.value(511 * 4096, 4096, 10) == 511
    assert pattern.value(512 * 4096, 4096, 10) == -512
    good = pack(np.full(4096, -512), 10).tobytes()
    assert pattern.check(0, 512 * 4096, good, 10) is None
    assert pattern.saturated(0, 512 * 4096, good, 10) == 4096


def _received(*heaps: spead2.send.Heap) -> list[spead2.recv.Heap]:
    """Heaps through spead2's in-process transport, as a receiver gets them."""
    queue = spead2.InprocQueue()
    sender = spead2.send.InprocStream(spead2.ThreadPool(), [queue])
    for h in heaps:
        sender.send_heap(h)
    queue.stop()
    receiver = spead2.recv.Stream(
        spead2.ThreadPool(), spead2.recv.StreamConfig(stop_on_stop_item=False)
    )
    receiver.add_inproc_reader(queue)
    return list(receiver)


def test_heaps_of_six_bytes_or_less_travel_as_immediates_and_are_decoded() -> None:
    items = spead2.send.ItemGroup(flavour=FLAVOUR)
    items.add_item(0x1600, "timestamp", "", shape=(), format=[("u", 48)])
    items.add_item(0x3300, "adc_samples", "", shape=(3,), dtype=np.int8)
    items["timestamp"].value = 12
    items["adc_samples"].value = np.array([4, 4, 4], np.int8)
    first = items.get_heap(descriptors="all")
    items["timestamp"].value = 15
    items["adc_samples"].value = np.array([5, -2, 5], np.int8)
    second = items.get_heap(descriptors="none")
    received = _received(first, second, items.get_end())
    samples_item = next(i for i in received[1].get_items() if i.id == 0x3300)
    assert samples_item.is_immediate  # what this test is about
    decoder = Decoder()
    decoded = [decoder.decode(h) for h in received]
    assert decoded[2] is HeapKind.END_OF_STREAM
    a, b = decoded[0], decoded[1]
    assert isinstance(a, DataHeap) and isinstance(b, DataHeap)
    assert (a.timestamp, a.payload, a.heap_samples, a.described) == (12, bytes([4, 4, 4]), 3, True)
    assert b.payload == bytes([5, 0xFE, 5])
    checker = Checker()
    checker.heap(a)
    checker.heap(b)
    r = checker.report
    assert r.heaps == 2 and r.bytes == 6 and r.bad_payload == 1
    assert r.bad_payload_locations[0].sample == 1


def test_an_immediate_payload_without_descriptors_is_undescribed() -> None:
    items = spead2.send.ItemGroup(flavour=FLAVOUR)
    items.add_item(0x1600, "timestamp", "", shape=(), format=[("u", 48)])
    items.add_item(0x3300, "adc_samples", "", shape=(3,), dtype=np.int8)
    items["timestamp"].value = 0
    items["adc_samples"].value = np.zeros(3, np.int8)
    (received,) = _received(items.get_heap(descriptors="none"))
    decoded = Decoder().decode(received)
    assert isinstance(decoded, DataHeap) and decoded.payload is None
    checker = Checker()
    checker.heap(decoded)
    assert checker.report.undescribed == 1 and checker.report.bad_payload == 0
