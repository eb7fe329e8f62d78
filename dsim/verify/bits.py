"""N-bit two's-complement samples packed big-endian, most significant bit first.

The receiving side's own copy of the rule, written for speed: the verifier
unpacks millions of samples for its measurements and the locations of bad
payloads, and packs a group of equal samples for each counter value. For
widths whose smallest whole-byte run fits in 8 bytes (2-8, 10, 12, 14, 16
bits, MeerKAT's 10 among them) a run is read as one big-endian integer and
split with shifts; other widths go bit by bit.
"""

from __future__ import annotations

import math

import numpy as np


def group_samples(bits: int) -> int:
    """Samples in the smallest run that fills whole bytes (4 for 10-bit samples)."""
    return 8 // math.gcd(bits, 8)


def group_bytes(bits: int) -> int:
    """Bytes in that run (5 for 10-bit samples)."""
    return bits // math.gcd(bits, 8)


def _shifts(bits: int) -> np.ndarray:
    """Right shifts that bring each sample of a run, read as one integer, to the bottom."""
    n = group_samples(bits)
    return (bits * np.arange(n - 1, -1, -1)).astype(np.uint64)


def unpack(data: np.ndarray, bits: int) -> np.ndarray:
    """Samples (int64) from packed bytes; a trailing partial run is ignored."""
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return data.view(np.int8).astype(np.int64)
    gbytes = group_bytes(bits)
    n_groups = len(data) // gbytes
    data = data[: n_groups * gbytes]
    if gbytes <= 8:
        words = np.zeros((n_groups, 8), np.uint8)
        words[:, 8 - gbytes :] = data.reshape(n_groups, gbytes)
        value = words.view(">u8").reshape(n_groups, 1).astype(np.uint64)
        unsigned = ((value >> _shifts(bits)) & np.uint64((1 << bits) - 1)).astype(np.int64)
        unsigned = unsigned.reshape(-1)
    else:
        n = len(data) * 8 // bits
        flat = np.unpackbits(data)[: n * bits].reshape(n, bits).astype(np.int64)
        unsigned = flat @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
    half = 1 << (bits - 1)
    return (unsigned ^ half) - half


def pack(samples: np.ndarray, bits: int) -> np.ndarray:
    """Packed bytes (uint8) of `samples`, whose count is a multiple of the run length."""
    values = np.asarray(samples, dtype=np.int64).reshape(-1)
    unsigned = (values & ((1 << bits) - 1)).astype(np.uint64)
    if bits == 8:
        return unsigned.astype(np.uint8)
    gsamples, gbytes = group_samples(bits), group_bytes(bits)
    if len(values) % gsamples:
        raise ValueError(f"{len(values)} samples are not whole runs of {gsamples}")
    if gbytes <= 8:
        runs = unsigned.reshape(-1, gsamples) << _shifts(bits)
        words = np.bitwise_or.reduce(runs, axis=1).astype(">u8")
        return words.view(np.uint8).reshape(-1, 8)[:, 8 - gbytes :].reshape(-1).copy()
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    bit_array = ((unsigned[:, np.newaxis] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bit_array.reshape(-1))
