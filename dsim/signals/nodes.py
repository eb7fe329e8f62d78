"""Evaluation nodes: each produces the samples ``[start, start + n)`` of the periodic window.

A resolved signal is compiled (see :mod:`.synth`) into a DAG of these nodes;
every node can produce any range of the window, which is what makes ``delay``
a mere change of `start`. Each worker thread has its own :class:`Context` of
scratch buffers, positioned random-number streams and a chunk cache.

Random numbers come from PCG64 streams (``numpy.random.PCG64`` seeded by a
``SeedSequence``), read with ``random_raw`` and positioned with ``advance``, so
any range of the window can be produced directly and the noise is a fixed
function of the seed and the sample index:

* ``wgn(std, seed)``: block b (NOISE_BLOCK samples) of the window takes 64-bit
  draws ``[b * NOISE_BLOCK/2, (b+1) * NOISE_BLOCK/2)`` of the stream of
  ``SeedSequence(seed)``, seen as little-endian 32-bit words ``w``; with
  ``u1 = ((w[i] >> 8) + 1) / 2**24`` and ``u2 = (w[H + i] >> 8) / 2**24`` (H =
  half a block), sample i of the block is ``std * sqrt(-2 ln u1) * cos(2 pi u2)``
  and sample H + i the same with ``sin`` (Box-Muller in float32, computed as
  ``sqrt(-2 ln(2) std**2 log2(u1))``: about 3x faster than numpy's ziggurat
  here; the tails reach 5.8 sigma).

The bytes are reproducible for the same numpy and CPU family; across machines
numpy's float32 log2/sin/cos and BLAS kernels may differ in the last bit, which
flips a rare sample by one LSB.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

#: Samples per chunk: the unit of evaluation (and of float32 rounding: fixed, never
#: derived from the thread count).
CHUNK = 1 << 19
#: Samples per Box-Muller block of wgn noise.
NOISE_BLOCK = 1 << 13
#: Below this bound on every node's magnitude, float32 arithmetic (FFTs included)
#: cannot overflow, so no sample can be inf or NaN.
SAFE_BOUND = 1e20

_TWO_PI = 2.0 * math.pi
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_U24 = np.float32(2.0**-24)
_PHASE24 = np.float32(2.0 * math.pi * 2.0**-24)

#: OpenBLAS runs a matrix product of at most this many multiply-adds (m * n * k) in
#: the calling thread (interface/gemm.c: SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD).
_BLAS_SINGLE_THREAD = 65536 * 4

Value = np.ndarray | float
"""The samples of a node over a range: an array, or a float when the node is constant."""


def noise_stream(seed: int) -> np.random.PCG64:
    """The random stream of ``wgn(std, seed)``."""
    return np.random.PCG64(np.random.SeedSequence(seed))


def dither_stream(seed: int, output: int) -> np.random.PCG64:
    """The random stream of the dither of `output` for dither seed `seed`."""
    return np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(output,)))


class Context:
    """One worker thread's scratch: buffers by length, positioned random streams, chunk cache."""

    def __init__(self, period: int) -> None:
        self.period = period
        self._free: dict[tuple[int, str], list[np.ndarray]] = {}
        self._streams: dict[tuple[object, ...], list] = {}  # key -> [bit generator, position]
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def get(self, n: int, dtype: type = np.float32) -> np.ndarray:
        """A scratch array of length `n` (give it back with put)."""
        free = self._free.get((n, np.dtype(dtype).char))
        if free:
            return free.pop()
        return np.empty(n, dtype)

    def put(self, array: np.ndarray) -> None:
        """Return a scratch array obtained from get."""
        self._free.setdefault((array.shape[0], array.dtype.char), []).append(array)

    def raw(
        self, key: tuple[object, ...], make: Callable[[], np.random.PCG64], first: int, count: int
    ) -> np.ndarray:
        """64-bit draws ``[first, first + count)`` of the stream `key` (created by `make`)."""
        entry = self._streams.get(key)
        if entry is None:
            entry = self._streams[key] = [make(), 0]
        generator, position = entry
        if position != first:
            generator.advance((first - position) % (1 << 128))
        entry[1] = first + count
        return generator.random_raw(count)

    def value(self, node: SNode, start: int, n: int) -> tuple[Value, bool]:
        """The samples of `node` over ``[start, start + n)``, and whether the caller owns them.

        An owned array is a scratch buffer the caller may overwrite and must put
        back; otherwise the values are borrowed (cached or a view) and read-only.
        """
        if not node.shared:
            return node.eval(self, start, n)
        key = (id(node), start)
        cached = self._cache.get(key)
        if cached is not None:
            return cached, False
        result, owned = node.eval(self, start, n)
        if owned:
            assert isinstance(result, np.ndarray)
            self._cache[key] = result
        return result, False

    def end_chunk(self) -> None:
        """Release the cached values of the chunk just finished."""
        for array in self._cache.values():
            self.put(array)
        self._cache.clear()


class SNode:
    """An evaluation node: produces samples of the periodic window over any range."""

    shared = False  # used more than once: cache its value within a chunk
    #: An upper bound on the magnitude of every sample (inf when unknown or huge).
    bound = math.inf

    def eval(self, ctx: Context, start: int, n: int) -> tuple[Value, bool]:
        """Samples ``[start, start + n)`` (start in [0, period), n <= min(CHUNK, period))."""
        raise NotImplementedError

    def children(self) -> tuple[SNode, ...]:
        return ()


class _Wrapping(SNode):
    """A node that fills ranges within the period; wrapped ranges are split in two."""

    def eval(self, ctx: Context, start: int, n: int) -> tuple[Value, bool]:
        out = ctx.get(n)
        first = min(n, ctx.period - start)
        self.fill(ctx, start, out[:first])
        if first < n:
            self.fill(ctx, 0, out[first:])
        return out, True

    def fill(self, ctx: Context, start: int, out: np.ndarray) -> None:
        raise NotImplementedError


class SConst(SNode):
    def __init__(self, value: float) -> None:
        self.value = value
        self.bound = abs(value)

    def eval(self, ctx: Context, start: int, n: int) -> tuple[Value, bool]:
        return self.value, False


def _unit_circle(cycles: int, period: int, n: int) -> np.ndarray:
    """``exp(2j pi cycles j / period)`` for j < n (complex128, accurate to float64).

    The product of two short tables (j = hi * B + lo), each of exactly reduced
    phases: a few thousand float64 sin/cos (slow in numpy) instead of n.
    """
    block = 1 << max(0, (n.bit_length() + 1) // 2)
    hi = np.arange(-(-n // block), dtype=np.int64) * block
    lo = np.arange(block, dtype=np.int64)
    scale = 2j * math.pi / period
    return np.outer(
        np.exp(scale * (cycles * hi % period)), np.exp(scale * (cycles * lo % period))
    ).reshape(-1)[:n]


class STone(SNode):
    """``amplitude * cos(2 pi cycles n / period + phase)``.

    Per chunk: ``alpha * C[j] - beta * S[j]`` with tables C, S of the tone's
    cos/sin from the chunk start and alpha, beta from the start phase
    (computed exactly in float64), so there is no drift along the window.
    """

    def __init__(self, amplitude: float, cycles: int, phase: float, period: int) -> None:
        self.amplitude = amplitude
        self.cycles = cycles
        self.phase = phase
        self.period = period
        self.bound = abs(amplitude)
        turns = _unit_circle(cycles, period, min(CHUNK, period))
        self.cos = turns.real.astype(np.float32)
        self.sin = turns.imag.astype(np.float32)

    def eval(self, ctx: Context, start: int, n: int) -> tuple[Value, bool]:
        theta = _TWO_PI * (self.cycles * start % self.period) / self.period + self.phase
        out = ctx.get(n)
        tmp = ctx.get(n)
        np.multiply(self.cos[:n], self.amplitude * math.cos(theta), out=out)
        np.multiply(self.sin[:n], self.amplitude * math.sin(theta), out=tmp)
        np.subtract(out, tmp, out=out)
        ctx.put(tmp)
        return out, True


class SGemm(SNode):
    """A sum of m tones ``A_i cos(2 pi k_i n / P + phi_i)``, a chunk at a time, by matrix product.

    With ``n = start + a Q + b`` (Q columns), the chunk is ``Re(sum_i U[a, i]
    V[i, b])`` with ``U[a, i] = A_i exp(j (2 pi k_i (start + a Q) / P + phi_i))``
    and ``V[i, b] = exp(2j pi k_i b / P)``: float32 matrix products
    ``[Re U, -Im U] @ [Re V; Im V]`` (BLAS), about 4m flops per sample. They are
    cut into a stack of small products, each below OpenBLAS's threshold for
    using its own threads (which would fight the render threads), all in one
    numpy call. Phases are reduced exactly (integers mod P), so nothing drifts.
    """

    def __init__(
        self, amplitudes: np.ndarray, cycles: np.ndarray, phases: np.ndarray, period: int
    ) -> None:
        self.amplitudes = amplitudes.astype(np.float32)
        self.cycles = cycles
        self.phases = np.remainder(phases, _TWO_PI)  # so that float32 angles stay precise
        self.period = period
        self.bound = float(np.abs(amplitudes).sum())
        m2 = 2 * len(cycles)
        self.columns = min(256 if m2 <= 1024 else 128, period)
        self.rows = max(1, _BLAS_SINGLE_THREAD // (self.columns * m2))  # per small product
        v = np.exp(1j * (_TWO_PI / period) * (np.outer(cycles, np.arange(self.columns)) % period))
        self.right = np.concatenate([v.real, v.imag], axis=0).astype(np.float32)

    def eval(self, ctx: Context, start: int, n: int) -> tuple[Value, bool]:
        period, columns, rows = self.period, self.columns, self.rows
        blocks = -(-n // (columns * rows))
        a = (start + np.arange(blocks * rows, dtype=np.int64) * columns) % period
        angle = (np.outer(a, self.cycles) % period).astype(np.float64) * (_TWO_PI / period)
        angle += self.phases
        angle32 = angle.astype(np.float32)
        left = np.empty((blocks * rows, self.right.shape[0]), np.float32)
        m = len(self.cycles)
        np.cos(angle32, out=left[:, :m])
        np.sin(angle32, out=left[:, m:])
        left[:, :m] *= self.amplitudes
        left[:, m:] *= -self.amplitudes
        size = blocks * rows * columns
        out = ctx.get(n)
        target = out if size == n else np.empty(size, np.float32)
        np.matmul(
            left.reshape(blocks, rows, -1), self.right, out=target.reshape(blocks, rows, columns)
        )
        if target is not out:
            out[:] = target[:n]
        return out, True


class SComb(_Wrapping):
    """``count`` impulses per period: impulse c at sample ``round(c * period / count)``.

    Ties round to even, as ``numpy.rint(arange(count) / count * period)`` (the
    placement katgpucbf's tests describe) but in exact integer arithmetic.
    """

    def __init__(self, amplitude: float, count: int, period: int) -> None:
        self.amplitude = amplitude
        self.count = count
        self.period = period
        self.bound = abs(amplitude)

    def fill(self, ctx: Context, start: int, out: np.ndarray) -> None:
        m, period, n = self.count, self.period, out.shape[0]
        out.fill(0)
        first = max(0, start * m // period - 1)
        last = min(m, -(-(start + n) * m // period) + 1)
        c = np.arange(first, last, dtype=np.int64)
        q, r = np.divmod(c * period, m)
        q += (2 * r > m) | ((2 * r == m) & (q % 2 == 1))
        q = q[(q >= start) & (q < start + n)]
        out[q - start] = self.amplitude


class SNoise(_Wrapping):
    """``wgn(std, seed)``: Box-Muller blocks of a PCG64 stream (see the module docstring)."""

    def __init__(self, std: float, seed: int) -> None:
        self.std = std
        self.seed = seed
        self.bound = 6.0 * std  # Box-Muller's radius is at most sqrt(48 ln 2) = 5.77
        self.key = ("noise", seed)
        # times log2(u1); a std beyond float32 saturates rather than overflowing
        self.scale = np.float32(max(-2.0 * math.log(2.0) * std * std, -_FLOAT32_MAX))

    def fill(self, ctx: Context, start: int, out: np.ndarray) -> None:
        n = out.shape[0]
        first_block = start // NOISE_BLOCK
        blocks = -(-(start + n) // NOISE_BLOCK) - first_block
        if start % NOISE_BLOCK == 0 and n == blocks * NOISE_BLOCK:
            self._blocks(ctx, first_block, out)
        else:
            scratch = ctx.get(blocks * NOISE_BLOCK)
            self._blocks(ctx, first_block, scratch)
            offset = start - first_block * NOISE_BLOCK
            out[:] = scratch[offset : offset + n]
            ctx.put(scratch)

    def _blocks(self, ctx: Context, first_block: int, out: np.ndarray) -> None:
        half = NOISE_BLOCK // 2
        blocks = out.shape[0] // NOISE_BLOCK
        raw = ctx.raw(self.key, lambda: noise_stream(self.seed), first_block * half, blocks * half)
        words = raw.astype("<u8", copy=False).view("<u4").reshape(blocks, NOISE_BLOCK)
        np.right_shift(words, 8, out=words)
        ints = words.view(np.int32)
        np.add(ints[:, :half], 1, out=ints[:, :half])
        radius = ctx.get(blocks * half).reshape(blocks, half)
        angle = ctx.get(blocks * half).reshape(blocks, half)
        np.multiply(ints[:, :half], _U24, out=radius, dtype=np.float32)  # u1 in (0, 1]
        np.log2(radius, out=radius)  # (faster than log in numpy's float32)
        np.multiply(radius, self.scale, out=radius)  # -2 std**2 ln u1
        np.sqrt(radius, out=radius)
        np.multiply(ints[:, half:], _PHASE24, out=angle, dtype=np.float32)  # 2 pi u2
        grid = out.reshape(blocks, NOISE_BLOCK)
        np.cos(angle, out=grid[:, :half])
        np.multiply(grid[:, :half], radius, out=grid[:, :half])
        np.sin(angle, out=grid[:, half:])
        np.multiply(grid[:, half:], radius, out=grid[:, half:])
        ctx.put(radius.reshape(-1))
        ctx.put(angle.reshape(-1))


class SArray(SNode):
    """A node materialised as a whole window (filled by :meth:`.synth.Plan.materialise`).

    `build(plan, workers)` computes the window.
    """

    def __init__(
        self, build: Callable[..., np.ndarray], deps: tuple[SNode, ...], bound: float
    ) -> None:
        self.build = build
        self.deps = deps
        self.bound = bound
        self.data: np.ndarray | None = None

    def children(self) -> tuple[SNode, ...]:
        return self.deps

    def eval(self, ctx: Context, start: int, n: int) -> tuple[Value, bool]:
        assert self.data is not None, "materialise the plan first"
        if start + n <= ctx.period:
            return self.data[start : start + n], False
        out = ctx.get(n)
        first = ctx.period - start
        out[:first] = self.data[start:]
        out[first:] = self.data[: n - first]
        return out, True


class SShift(SNode):
    """The child read `offset` samples later: value at n is child at (n + offset) mod period."""

    def __init__(self, child: SNode, offset: int) -> None:
        self.child = child
        self.offset = offset
        self.bound = child.bound

    def children(self) -> tuple[SNode, ...]:
        return (self.child,)

    def eval(self, ctx: Context, start: int, n: int) -> tuple[Value, bool]:
        return ctx.value(self.child, (start + self.offset) % ctx.period, n)


class SNeg(SNode):
    def __init__(self, child: SNode) -> None:
        self.child = child
        self.bound = child.bound

    def children(self) -> tuple[SNode, ...]:
        return (self.child,)

    def eval(self, ctx: Context, start: int, n: int) -> tuple[Value, bool]:
        value, owned = ctx.value(self.child, start, n)
        if isinstance(value, float):
            return -value, False
        out = value if owned else ctx.get(n)
        np.negative(value, out=out)
        return out, True


_UFUNCS = {"+": np.add, "-": np.subtract, "*": np.multiply}


class SBin(SNode):
    """``left op right`` in float32 (a constant side is a float32 scalar)."""

    def __init__(self, op: str, left: SNode, right: SNode) -> None:
        self.op = op
        self.ufunc = _UFUNCS[op]
        self.left = left
        self.right = right
        if op == "*":
            self.bound = left.bound * right.bound if left.bound and right.bound else 0.0
        else:
            self.bound = left.bound + right.bound

    def children(self) -> tuple[SNode, ...]:
        return (self.left, self.right)

    def eval(self, ctx: Context, start: int, n: int) -> tuple[Value, bool]:
        a, a_owned = ctx.value(self.left, start, n)
        b, b_owned = ctx.value(self.right, start, n)
        if isinstance(a, float) and isinstance(b, float):
            return float(self.ufunc(np.float32(a), np.float32(b))), False
        if a_owned:
            out = a
        elif b_owned:
            out = b
        else:
            out = ctx.get(n)
        assert isinstance(out, np.ndarray)
        self.ufunc(a, b, out=out)
        if b_owned and out is not b:
            assert isinstance(b, np.ndarray)
            ctx.put(b)
        return out, True
