"""N-bit packing (dsim.packing) against an independent bit-by-bit reference."""

from __future__ import annotations

import numpy as np
import pytest

from dsim import packing, spead


def reference_pack(values: np.ndarray, bits: int) -> np.ndarray:
    """MSB-first big-endian packing, one bit at a time (slow and obviously right)."""
    unsigned = np.asarray(values, dtype=np.int64) & ((1 << bits) - 1)
    shifts = np.arange(bits - 1, -1, -1)
    bit_array = ((unsigned[..., np.newaxis] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bit_array.reshape(*unsigned.shape[:-1], -1), axis=-1)


def random_samples(rng: np.random.Generator, shape: tuple[int, ...], bits: int) -> np.ndarray:
    half = 1 << (bits - 1)
    return rng.integers(-half, half, size=shape, dtype=np.int64)


def test_ten_bit_layout_is_msb_first_big_endian() -> None:
    assert packing.pack(np.array([1, 1, 1, 1]), 10).tolist() == [0x00, 0x40, 0x10, 0x04, 0x01]
    assert packing.pack(np.array([-1, 0, 0, 0]), 10).tolist() == [0xFF, 0xC0, 0, 0, 0]
    assert packing.pack(np.array([-512, 511, 0, 0]), 10).tolist() == [0x80, 0x1F, 0xF0, 0, 0]


def test_eight_and_sixteen_bit_layouts() -> None:
    assert packing.pack(np.array([1, -1, -128, 127]), 8).tolist() == [1, 0xFF, 0x80, 0x7F]
    assert packing.pack(np.array([1, -2]), 16).tolist() == [0x00, 0x01, 0xFF, 0xFE]
    assert packing.pack(np.array([0x123, -1]), 12).tolist() == [0x12, 0x3F, 0xFF]


@pytest.mark.parametrize("bits", range(2, 17))
def test_round_trip_and_layout_all_widths(bits: int) -> None:
    rng = np.random.default_rng(bits)
    group = packing.group_samples(bits)
    assert group * bits % 8 == 0 and packing.group_bytes(bits) == group * bits // 8
    for n in (group, 3 * group, 64 * group + group):
        for shape in ((n,), (3, n), (2, 2, n)):
            values = random_samples(rng, shape, bits)
            packed = packing.pack(values, bits)
            np.testing.assert_array_equal(packed, reference_pack(values, bits))
            np.testing.assert_array_equal(packing.unpack(packed, bits), values)


@pytest.mark.parametrize("bits", range(2, 17))
def test_pack_into_and_unpack_into(bits: int) -> None:
    """The renderer's hot path: flat int16 in, bytes out (with a partial last unit)."""
    rng = np.random.default_rng(100 + bits)
    group = packing.group_samples(bits)
    n = 4096 + 3 * group
    values = random_samples(rng, (n,), bits).astype(np.int16)
    out = np.empty(n * bits // 8, np.uint8)
    packing.pack_into(values, bits, out)
    np.testing.assert_array_equal(out, reference_pack(values, bits))
    back = np.empty(n, np.int16)
    packing.unpack_into(out, bits, back)
    np.testing.assert_array_equal(back, values)


def test_out_of_range_values_wrap() -> None:
    np.testing.assert_array_equal(
        packing.pack(np.array([512, -513, 1023, 1024]), 10),
        packing.pack(np.array([-512, 511, -1, 0]), 10),
    )


def test_wrong_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="groups"):
        packing.pack(np.zeros(3), 10)
    with pytest.raises(ValueError, match="need"):
        packing.pack_into(np.zeros(4, np.int16), 10, np.empty(4, np.uint8))


def test_the_shared_sample_rules() -> None:
    assert spead.full_scale(10) == 511 and spead.full_scale(8) == 127
    np.testing.assert_array_equal(spead.wrap_signed(np.array([512, -513, 5]), 10), [-512, 511, 5])
    np.testing.assert_array_equal(
        spead.status_word(np.array([0, 7, 70000])),
        [0, (7 << 32) | 2, (0xFFFF << 32) | 2],  # the count saturates at 16 bits
    )
