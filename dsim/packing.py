"""N-bit two's-complement samples, packed big-endian, most significant bit first.

This is how a MeerKAT digitiser packs its 10-bit ADC samples: sample 0 takes
the top 10 bits of byte 0 and the top 2 of byte 1, and so on, so that 4 samples
fill 5 bytes. In general ``group_samples(bits)`` samples fill
``group_bytes(bits)`` whole bytes, and a heap holds a whole number of groups.
"""

from __future__ import annotations

import math

import numpy as np


def group_samples(bits: int) -> int:
    """Samples in the smallest run that fills whole bytes (4 for 10-bit samples)."""
    return 8 // math.gcd(bits, 8)


def group_bytes(bits: int) -> int:
    """Bytes in that run (5 for 10-bit samples)."""
    return group_samples(bits) * bits // 8


def full_scale(bits: int) -> int:
    """The largest positive sample value (511 for 10 bits): at or beyond it, a sample saturates."""
    return (1 << (bits - 1)) - 1


def wrap(values: np.ndarray, bits: int) -> np.ndarray:
    """`values` (any integers) wrapped into the signed `bits`-bit range."""
    half = 1 << (bits - 1)
    return (np.asarray(values, dtype=np.int64) + half) % (1 << bits) - half


def saturated(values: np.ndarray, bits: int) -> np.ndarray:
    """Which samples sit at full scale (``|value| >= 2**(bits-1) - 1``: 511 for 10 bits)."""
    return np.abs(np.asarray(values, dtype=np.int64)) >= full_scale(bits)


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack samples (last axis, a multiple of the group size) into bytes."""
    values = np.asarray(values, dtype=np.int64)
    unsigned = values & ((1 << bits) - 1)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    bit_array = ((unsigned[..., np.newaxis] >> shifts) & 1).astype(np.uint8)
    flat = bit_array.reshape(*values.shape[:-1], values.shape[-1] * bits)
    return np.packbits(flat, axis=-1)


def unpack(data: np.ndarray, bits: int) -> np.ndarray:
    """Unpack bytes (last axis) into signed `bits`-bit samples (int64)."""
    data = np.asarray(data, dtype=np.uint8)
    flat = np.unpackbits(data, axis=-1)
    n = flat.shape[-1] // bits
    bit_array = flat[..., : n * bits].reshape(*data.shape[:-1], n, bits).astype(np.int64)
    weights = 1 << np.arange(bits - 1, -1, -1, dtype=np.int64)
    unsigned = bit_array @ weights
    return wrap(unsigned, bits)


def uniform_groups(values: np.ndarray, bits: int) -> np.ndarray:
    """For each value, the packed bytes of one group of samples all equal to it.

    A heap whose samples are all `value` is this group repeated: the engine
    writes it with one broadcast assignment per batch.
    """
    values = np.asarray(values, dtype=np.int64)
    return pack(np.repeat(values[..., np.newaxis], group_samples(bits), axis=-1), bits)
