"""The wire formats: heap building, packet sizes, heap-size and digitiser-id rules."""

from __future__ import annotations

import numpy as np
import pytest
import spead2.send

from dsim import layout
from dsim.errors import ConfigError
from dsim.spead import FLAVOUR, status_word


def tutorial_heap(heap_size: int, repeat_pointers: bool) -> spead2.send.Heap:
    return layout.TutorialFormat(1).sample_heap(heap_size, repeat_pointers)


def splits_evenly(heap: spead2.send.Heap, packet_size: int) -> bool:
    sizes = layout.packet_sizes(heap, packet_size)
    return min(sizes) == max(sizes)


@pytest.mark.parametrize("heap_size", [3, 8192, 100000])
def test_tutorial_heaps_match_spead2s_item_group(heap_size: int) -> None:
    """dsim's lean item buffers put the same bytes on the wire as spead2.send.ItemGroup."""
    fmt = layout.TutorialFormat(1)
    cells = np.array([123456789, 0], layout.CELL_DTYPE)
    payload = (np.arange(heap_size) % 251).astype(np.uint8)
    ours = fmt.build_heap(
        layout.immediate_bytes(cells)[0], payload, layout.immediate_bytes(cells)[1], 0, False
    )
    group = fmt.item_group(heap_size)
    group["timestamp"].value = 123456789
    group["adc_samples"].value = payload.view(np.int8)
    theirs = group.get_heap(descriptors="none", data="all")
    for size in (1472, 9000):
        assert [bytes(p) for p in spead2.send.PacketGenerator(ours, 7, size)] == [
            bytes(p) for p in spead2.send.PacketGenerator(theirs, 7, size)
        ]


def test_meerkat_heaps_carry_the_digitiser_items() -> None:
    fmt = layout.MeerkatFormat([1, 1], 10, digitiser_id=6)
    cells = np.array([4096 * 5, int(status_word(7))], layout.CELL_DTYPE)
    cell_bytes = layout.immediate_bytes(cells)
    heap = fmt.build_heap(cell_bytes[0], np.zeros(5120, np.uint8), cell_bytes[1], 1, True)
    (packet,) = [bytes(p) for p in spead2.send.PacketGenerator(heap, 2, 9000)]
    assert len(packet) == 5192
    count = int.from_bytes(packet[6:8], "big")
    items = {}
    for i in range(count):
        pointer = int.from_bytes(packet[8 + 8 * i : 16 + 8 * i], "big")
        items[(pointer >> 48) & 0x7FFF] = pointer & ((1 << 48) - 1)
    assert items[0x1600] == 4096 * 5
    assert items[0x3101] == 7  # id + polarisation 1
    assert items[0x3102] == (7 << 32) | 2
    assert FLAVOUR.heap_address_bits == 48


@pytest.mark.parametrize("heap_size", [2048, 8192, 16384, 65536, 1 << 20, 10000, 24576])
@pytest.mark.parametrize("max_size", [1472, 8972, 9000])
def test_equal_packet_size_is_the_largest_even_split(heap_size: int, max_size: int) -> None:
    heap = tutorial_heap(heap_size, True)
    size = layout.equal_packet_size(heap, max_size)
    assert size is not None and size <= max_size
    assert splits_evenly(heap, size)
    count = len(layout.packet_sizes(heap, size))
    if count > 1:
        # No larger setting splits the heap evenly into fewer (larger) packets.
        for p in range(size + 1, max_size + 1):
            assert not splits_evenly(heap, p) or len(layout.packet_sizes(heap, p)) == count


def test_known_packet_sizes() -> None:
    assert layout.equal_packet_size(tutorial_heap(16384, True), 8972) == 8248  # 2 x (8192 + 56)
    assert layout.equal_packet_size(tutorial_heap(8192, True), 8972) == 8972  # one packet anyway
    assert layout.equal_packet_size(tutorial_heap(12345, True), 8972) is None  # odd: no split
    # Without repeated pointers the first packet is 16 bytes longer: 9000 + 7480 bytes.
    assert layout.packet_sizes(tutorial_heap(16384, False), 9000) == [9000, 7480]


@pytest.mark.parametrize(
    ("heap_size", "expected"),
    [
        (8192, (8972, True)),  # one packet per heap anyway
        (16384, (8248, True)),  # 2 x 8248 rather than 9000 + 7480
        (65536, (8248, True)),  # 8 packets either way
        (1 << 20, (8972, False)),  # 128 equal packets would be more than 118
        (12345, (8972, False)),  # no equal split
    ],
)
def test_automatic_choice_with_gso(heap_size: int, expected: tuple[int, bool]) -> None:
    choice = layout.TutorialFormat(1).packet_size(heap_size, 8972, None, equal=True)
    assert (choice.size, choice.repeat_pointers) == expected


def test_automatic_choice_without_gso_is_the_maximum() -> None:
    # Without GSO equal packets gain nothing (measured: 16 KiB 0.85x), so: fewest packets.
    fmt = layout.TutorialFormat(1)
    assert fmt.packet_size(16384, 8972, None, equal=False) == layout.PacketChoice(8972, False)
    assert fmt.packet_size(16384, 8972, 9000, equal=True) == layout.PacketChoice(9000, False)


@pytest.mark.parametrize("heap_size", [5, 10, 15, 20, 25, 5120, 5125, 64000])
def test_every_meerkat_heap_is_exactly_one_packet(heap_size: int) -> None:
    """spead2's own packet generator decides: tiny and odd heaps too (once 2 packets, or none)."""
    fmt = layout.MeerkatFormat([1, 1])
    fmt.check_heap_size(heap_size, 65507)
    choice = fmt.packet_size(heap_size, 8972, None)
    sizes = layout.packet_sizes(fmt.sample_heap(heap_size, True), choice.size)
    assert sizes == [72 + heap_size]


@pytest.mark.parametrize(
    ("heap_size", "message"),
    [
        (0, "must be positive"),
        (5121, "whole groups of 10-bit samples"),
        (20480, "one packet per heap\\), more than the maximum packet size 8972"),
        (layout.MAX_HEAP_SIZE + 5, "exceeds the maximum"),
    ],
)
def test_meerkat_heap_size_rules(heap_size: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        layout.MeerkatFormat([1, 1]).check_heap_size(heap_size, 8972)


@pytest.mark.parametrize(
    ("digitiser_id", "groups", "message"),
    [
        (5, [1, 1], "odd: receivers take the polarisation from the id's low bit"),
        (1 << 48, [1, 1], "0 to 2\\*\\*48 - 1"),
        (99999999999999999999999, [1], "0 to 2\\*\\*48 - 1"),
        (-2, [1, 1], "0 to 2\\*\\*48 - 1"),
        ((1 << 48) - 1, [1, 1], "odd"),
        (0, [1, 1, 1], "at most two polarisations"),
    ],
)
def test_digitiser_ids_that_receivers_would_misread_are_refused(
    digitiser_id: int, groups: list[int], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        layout.MeerkatFormat(groups, 10, digitiser_id)


def test_one_polarisation_may_have_an_odd_id() -> None:
    assert layout.MeerkatFormat([8], 10, 7).digitiser_id == 7


@pytest.mark.parametrize(
    ("bits", "message"), [(1, "2-16"), (17, "2-16"), (True, "whole number"), (10.0, "whole number")]
)
def test_sample_bits_range(bits: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        layout.MeerkatFormat([1], bits)


def test_make_format_refuses_meerkat_options_for_tutorial() -> None:
    with pytest.raises(ConfigError, match="8-bit samples"):
        layout.make_format("tutorial", [1], 10)
    with pytest.raises(ConfigError, match="no digitiser id"):
        layout.make_format("tutorial", [1], None, 4)
    assert layout.make_format("tutorial", [2, 3]).groups == (5,)
    assert layout.make_format("meerkat", [8, 8]).groups == (8, 8)
