"""N-bit two's-complement samples, packed big-endian, most significant bit first.

This is how a MeerKAT digitiser packs its 10-bit ADC samples: sample 0 takes
the top 10 bits of byte 0 and the top 2 of byte 1, and so on, so that 4 samples
fill 5 bytes. In general ``group_samples(bits)`` samples fill
``group_bytes(bits)`` whole bytes, and a heap holds a whole number of groups.

Speed matters here (the signal renderer packs whole windows of samples), and
numpy is slow on strided data, so the fast paths work on *units* of 4 samples
viewed as one little-endian ``uint64``: a few whole-array shifts and masks build
each unit's ``4 * bits`` packed bits, and one structured (big-endian) field
assignment per few bytes stores them. That covers every even width; 8 and 16
bits are plain casts; odd widths take a slower general path.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np

from .errors import ConfigError
from .spead import wrap_signed

#: Samples per unit of the fast even-width paths (one uint64 of int16 samples).
_UNIT = 4
#: Sample widths dsim packs (and generates, and checks): 2 to 16 bits.
MIN_SAMPLE_BITS = 2
MAX_SAMPLE_BITS = 16


def check_sample_bits(bits: object) -> int:
    """`bits` if it is a sample width dsim packs; else :exc:`ConfigError`, in words."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ConfigError(f"sample bits must be a whole number, not {bits!r}")
    if not MIN_SAMPLE_BITS <= bits <= MAX_SAMPLE_BITS:
        raise ConfigError(f"sample bits must be {MIN_SAMPLE_BITS}-{MAX_SAMPLE_BITS}, not {bits}")
    return bits


def group_samples(bits: int) -> int:
    """Samples in the smallest run that fills whole bytes (4 for 10-bit samples)."""
    return 8 // math.gcd(bits, 8)


def group_bytes(bits: int) -> int:
    """Bytes in that run (5 for 10-bit samples)."""
    return group_samples(bits) * bits // 8


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 32:
        raise ValueError(f"sample bits must be 1..32, not {bits}")


@functools.cache
def _fields(nbytes: int) -> tuple[tuple[int, int], ...]:
    """Split `nbytes` big-endian bytes into (byte offset, width) fields of 8, 4, 2 or 1 bytes."""
    out = []
    offset = 0
    for width in (8, 4, 2, 1):
        while nbytes - offset >= width:
            out.append((offset, width))
            offset += width
    return tuple(out)


def _field_name(offset: int) -> str:
    return "abcdefgh"[offset]


@functools.cache
def _unit_dtype(nbytes: int) -> np.dtype:
    """A structured dtype of big-endian unsigned fields covering one unit's `nbytes` bytes."""
    names = []
    formats = []
    offsets = []
    for offset, width in _fields(nbytes):
        names.append(_field_name(offset))
        formats.append(f">u{width}")
        offsets.append(offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": nbytes})


def pack_into(samples: np.ndarray, bits: int, out: np.ndarray) -> None:
    """Pack a 1-D contiguous int16 array of samples into the 1-D uint8 array `out`.

    This is the hot path of the renderer. ``len(samples)`` must be a multiple
    of ``group_samples(bits)`` and `out` exactly ``len(samples) * bits // 8``
    bytes. Values outside the `bits`-bit range are wrapped.
    """
    n = samples.shape[0]
    if out.shape[0] * 8 != n * bits:
        raise ValueError(f"{n} {bits}-bit samples need {n * bits // 8} bytes, not {out.shape[0]}")
    if bits == 8:
        np.copyto(out, samples, casting="unsafe")
    elif bits == 16:
        np.copyto(out.view(">i2"), samples)
    elif bits % 2:
        out[:] = pack(samples, bits)
    else:
        whole = n - n % _UNIT
        _pack_units(samples[:whole], bits, out[: whole * bits // 8])
        if whole < n:
            rest = np.zeros(_UNIT, np.int16)
            rest[: n - whole] = samples[whole:]
            tail = np.empty(_UNIT * bits // 8, np.uint8)
            _pack_units(rest, bits, tail)
            out[whole * bits // 8 :] = tail[: (n - whole) * bits // 8]


_local = threading.local()


def _scratch(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two uint64 work arrays of length `n`, kept per thread (the renderer packs in threads)."""
    arrays = getattr(_local, "arrays", None)
    if arrays is None or arrays[0].shape[0] < n:
        arrays = (np.empty(n, np.uint64), np.empty(n, np.uint64))
        _local.arrays = arrays
    return arrays[0][:n], arrays[1][:n]


def _pack_units(samples: np.ndarray, bits: int, out: np.ndarray) -> None:
    """Even `bits`: pack samples (a multiple of 4, contiguous int16) four at a time.

    Sample i of a unit sits at bit 16*i of the uint64; packed, it belongs at
    bit ``bits * (3 - i)`` of the unit's ``4 * bits``-bit value. For widths of 8
    or more, samples 0 and 1 are moved together by one multiplication (by
    ``2**(3b) + 2**(2b - 16)``: the two wanted products land on bits
    ``[2b, 4b)``, the two unwanted ones outside them, with nothing to carry).
    """
    if samples.shape[0] == 0:
        return
    units = np.ascontiguousarray(samples, dtype=np.int16).view("<u8")
    mask = (1 << bits) - 1
    total = _UNIT * bits  # packed bits per unit, right-aligned in `value`
    value, part = _scratch(units.shape[0])
    if bits >= 8:
        np.bitwise_and(units, mask | mask << 16, out=value)
        np.multiply(value, (1 << 3 * bits) + (1 << 2 * bits - 16), out=value)
        np.bitwise_and(value, ((1 << 2 * bits) - 1) << 2 * bits, out=value)
        first = 2
    else:
        value[:] = 0
        first = 0
    for i in range(first, _UNIT):
        # part = sample i moved from bit 16*i to bit total - bits*(i+1), masked.
        shift = 16 * i - (total - bits * (i + 1))
        if shift > 0:
            np.right_shift(units, shift, out=part)
        elif shift < 0:
            np.left_shift(units, -shift, out=part)
        else:
            part[:] = units
        np.bitwise_and(part, mask << (total - bits * (i + 1)), out=part)
        np.bitwise_or(value, part, out=value)
    nbytes = total // 8
    records = out.view(_unit_dtype(nbytes))
    for offset, width in _fields(nbytes):
        shift = 8 * (nbytes - offset - width)
        if shift:
            np.right_shift(value, shift, out=part)
            source = part
        else:
            source = value
        np.copyto(records[_field_name(offset)], source, casting="unsafe")


def unpack_into(data: np.ndarray, bits: int, out: np.ndarray) -> None:
    """Unpack the 1-D uint8 array `data` into the 1-D int16 array `out` (inverse of pack_into)."""
    n = out.shape[0]
    if data.shape[0] * 8 != n * bits:
        raise ValueError(f"{n} {bits}-bit samples need {n * bits // 8} bytes, not {data.shape[0]}")
    if bits == 8:
        np.copyto(out, data.view(np.int8))
    elif bits == 16:
        np.copyto(out, data.view(">i2"))
    elif bits % 2:
        out[:] = unpack(data, bits)
    else:
        whole = n - n % _UNIT
        _unpack_units(data[: whole * bits // 8], bits, out[:whole])
        if whole < n:
            tail = np.zeros(_UNIT * bits // 8, np.uint8)
            tail[: data.shape[0] - whole * bits // 8] = data[whole * bits // 8 :]
            rest = np.empty(_UNIT, np.int16)
            _unpack_units(tail, bits, rest)
            out[whole:] = rest[: n - whole]


def _unpack_units(data: np.ndarray, bits: int, out: np.ndarray) -> None:
    """Even `bits`: the inverse of _pack_units (`out` contiguous int16, a multiple of 4 long)."""
    if out.shape[0] == 0:
        return
    nbytes = _UNIT * bits // 8
    records = np.ascontiguousarray(data).view(_unit_dtype(nbytes))
    value = np.zeros(records.shape, np.uint64)
    part = np.empty(records.shape, np.uint64)
    for offset, width in _fields(nbytes):
        np.copyto(part, records[_field_name(offset)])
        np.left_shift(part, 8 * (nbytes - offset - width), out=part)
        np.bitwise_or(value, part, out=value)
    mask = (1 << bits) - 1
    units = out.view("<u8")
    units[:] = 0
    total = _UNIT * bits
    half = 1 << (bits - 1)
    for i in range(_UNIT):
        shift = total - bits * (i + 1)
        np.right_shift(value, shift, out=part)
        np.bitwise_and(part, mask, out=part)
        np.left_shift(part, 16 * i, out=part)
        np.bitwise_or(units, part, out=units)
    # Sign-extend each 16-bit lane from `bits` bits: (v ^ half) - half, in int16.
    np.bitwise_xor(out, half, out=out)
    np.subtract(out, half, out=out)


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack samples (last axis, a multiple of the group size) into bytes."""
    _check_bits(bits)
    values = np.asarray(values)
    n = values.shape[-1]
    if n % group_samples(bits):
        raise ValueError(
            f"{n} samples are not a whole number of {group_samples(bits)}-sample groups"
        )
    lead = values.shape[:-1]
    rows = values.reshape(-1, n) if n else values.reshape(-1, 0)
    if bits % 2 or bits > 16:
        return _pack_general(rows, bits).reshape(*lead, n * bits // 8)
    # Pad each row to whole units: the padding only adds bytes after the row's own.
    padded_n = -(-n // _UNIT) * _UNIT
    flat = np.zeros((rows.shape[0], padded_n), np.int16)
    flat[:, :n] = wrap_signed(rows, bits)
    out = np.empty((rows.shape[0], padded_n * bits // 8), np.uint8)
    pack_into(flat.reshape(-1), bits, out.reshape(-1))
    return out[:, : n * bits // 8].reshape(*lead, n * bits // 8)


def _pack_general(values: np.ndarray, bits: int) -> np.ndarray:
    """Any width: each output byte of a group ORs together the bits of the samples it overlaps."""
    group = group_samples(bits)
    rows, n = values.shape
    unsigned = (values.astype(np.int64) & ((1 << bits) - 1)).reshape(rows, n // group, group)
    out = np.zeros((rows, n // group, group_bytes(bits)), np.int64)
    for byte in range(group_bytes(bits)):
        lo, hi = 8 * byte, 8 * byte + 8  # bit range of this byte within the group, MSB first
        for j in range(lo // bits, (hi - 1) // bits + 1):
            start = j * bits  # the sample's first (most significant) bit
            # Place the sample so that its bits line up with this byte's bits.
            shift = (start + bits) - hi
            part = unsigned[..., j] >> shift if shift >= 0 else unsigned[..., j] << -shift
            out[..., byte] |= part & 0xFF
    return out.astype(np.uint8).reshape(rows, -1)


def unpack(data: np.ndarray, bits: int) -> np.ndarray:
    """Unpack bytes (last axis) into signed `bits`-bit samples (int64)."""
    _check_bits(bits)
    data = np.asarray(data, dtype=np.uint8)
    nbytes = data.shape[-1]
    n = nbytes * 8 // bits
    lead = data.shape[:-1]
    rows = data.reshape(-1, nbytes)
    if bits % 2 or bits > 16:
        return _unpack_general(rows, bits)[:, :n].reshape(*lead, n)
    # Pad each row to whole units (zero bytes after the row's own), unpack, trim.
    padded_n = -(-n // _UNIT) * _UNIT + (_UNIT if n * bits != nbytes * 8 else 0)
    flat = np.zeros((rows.shape[0], padded_n * bits // 8), np.uint8)
    flat[:, :nbytes] = rows
    out = np.empty((rows.shape[0], padded_n), np.int16)
    unpack_into(flat.reshape(-1), bits, out.reshape(-1))
    return out[:, :n].astype(np.int64).reshape(*lead, n)


def _unpack_general(data: np.ndarray, bits: int) -> np.ndarray:
    """Any width: each sample ORs together the bits of the bytes it overlaps (whole groups)."""
    gb = group_bytes(bits)
    group = group_samples(bits)
    rows, nbytes = data.shape
    whole = nbytes // gb * gb
    if whole != nbytes:  # a partial trailing group: pad it with zero bytes
        padded = np.zeros((rows, whole + gb), np.uint8)
        padded[:, :nbytes] = data
        data = padded
    groups = data.astype(np.int64).reshape(rows, -1, gb)
    out = np.zeros((rows, groups.shape[1], group), np.int64)
    for j in range(group):
        start, end = j * bits, (j + 1) * bits  # the sample's bit range within the group
        for byte in range(start // 8, (end - 1) // 8 + 1):
            shift = end - (8 * byte + 8)  # where this byte's bits sit within the sample
            part = groups[..., byte] << shift if shift >= 0 else groups[..., byte] >> -shift
            out[..., j] |= part
    return wrap_signed(out.reshape(rows, -1) & ((1 << bits) - 1), bits)
