"""float32 waveform chunks -> dithered, quantised, packed samples and saturation counts.

As a MeerKAT digitiser does: with ``s = 2**(bits-1) - 1``,
``q = rint(clip(x * s + d, -s, s))`` (so ``-2**(bits-1)`` never occurs), d the
dither, uniform in [-0.5, 0.5) LSB; a sample is saturated when ``|q| >= s``.

Dither sample n of output j is 16-bit word n of the PCG64 stream of
``SeedSequence(dither_seed, spawn_key=(j,))`` (64-bit draws split into
little-endian words): ``d = w / 2**16 - 0.5``, exact in float32 (a resolution of
2**-16 LSB is far below anything the quantiser can show, and takes half the
random bits of float32's 24).
"""

from __future__ import annotations

import numpy as np

from .. import packing
from ..spead import full_scale
from .nodes import Context, Value, dither_stream

_U16 = np.float32(2.0**-16)


def dither(ctx: Context, seed: int, output: int, start: int, n: int) -> np.ndarray:
    """The dither of `output` for window samples ``[start, start + n)`` (a scratch array)."""
    first = start // 4
    count = -(-(start + n) // 4) - first
    raw = ctx.raw(("dither", output), lambda: dither_stream(seed, output), first, count)
    words = raw.astype("<u8", copy=False).view("<u2")[start - 4 * first : start - 4 * first + n]
    np.bitwise_xor(words, 0x8000, out=words)  # as int16: w - 32768
    out = ctx.get(n)
    np.multiply(words.view(np.int16), _U16, out=out, dtype=np.float32)
    return out


def quantise_into(
    x: Value,
    owned: bool,
    dither: np.ndarray | None,
    bits: int,
    packed: np.ndarray,
    saturated: np.ndarray,
    ctx: Context,
    safe: bool = True,
) -> None:
    """Quantise the chunk `x` (plus `dither`, if any) into `packed` bytes and `saturated` counts.

    `packed` receives ``n * bits // 8`` bytes, `saturated` (uint8) one count per
    packing group of ``packing.group_samples(bits)`` samples. If `owned`, `x` is
    a scratch array that is overwritten (and still belongs to the caller).
    Unless `safe` (the values are known to be finite), +-inf and NaN are
    clipped to full scale (NaN to +full scale), at the cost of one more pass.
    """
    n = packed.shape[0] * 8 // bits
    scale = full_scale(bits)
    y = x if owned and isinstance(x, np.ndarray) else ctx.get(n)
    if isinstance(x, float):
        y.fill(x)
        np.multiply(y, scale, out=y)
    else:
        np.multiply(x, scale, out=y)
    if dither is not None:
        np.add(y, dither, out=y)
    if safe:
        np.clip(y, -scale, scale, out=y)
    else:
        np.fmin(y, scale, out=y)  # fmin/fmax, unlike clip, turn NaN into a number
        np.fmax(y, -scale, out=y)
    np.rint(y, out=y)
    q = ctx.get(n, np.int16)
    np.copyto(q, y, casting="unsafe")
    packing.pack_into(q, bits, packed)
    np.abs(y, out=y)
    flags = ctx.get(n, np.bool_)
    np.greater_equal(y, scale, out=flags)
    count_groups(flags, packing.group_samples(bits), saturated, ctx)
    ctx.put(flags)
    ctx.put(q)
    if y is not x:
        ctx.put(y)


#: For a group of g one-byte flags read as one unsigned integer, multiplying by
#: this sums the bytes into the top byte (each flag is 0 or 1, so nothing carries).
_SUMMERS = {
    2: (np.uint16, 0x0101, 8),
    4: (np.uint32, 0x01010101, 24),
    8: (np.uint64, 0x0101010101010101, 56),
}


def count_groups(flags: np.ndarray, group: int, out: np.ndarray, ctx: Context) -> None:
    """``out[i] = flags[i*group:(i+1)*group].sum()`` for a bool array (group 1, 2, 4 or 8)."""
    if group == 1:
        np.copyto(out, flags, casting="unsafe")
        return
    dtype, summer, shift = _SUMMERS[group]
    words = flags.view(dtype)
    total = ctx.get(words.shape[0], dtype)
    np.multiply(words, summer, out=total)
    np.right_shift(total, shift, out=out, casting="unsafe")
    ctx.put(total)
