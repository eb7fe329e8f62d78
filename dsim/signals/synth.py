"""Resolved program -> float32 waveforms, a cache-sized chunk at a time.

The resolved tree is compiled into a DAG of evaluation nodes (equal
sub-expressions merged, so a shared variable or a repeated ``cw(...)`` is
computed once per chunk). Every node can produce the samples ``[start, start+n)``
of the periodic window for any `start`, which is what makes ``delay`` a mere
change of `start`. Outputs are evaluated in fixed chunks of CHUNK samples (fits
in a core's cache; the values depend on CHUNK but never on the thread count),
each thread with its own :class:`Context` of scratch buffers and random-number
streams. Nodes that need the whole window at once (a fractional delay of
anything but tones, a sum of very many tones) are *materialised* into a full
array first. A delay of a sum of tones (cw, multicw, constants) is applied
exactly to each tone's phase instead, with no FFT.

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

import itertools
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import DsimError
from .tree import BinOp, Comb, Const, Cw, Delay, MultiCw, Neg, Node, Nodither, Wgn, deref

#: Samples per chunk: the unit of evaluation (and of float32 rounding: fixed, never
#: derived from the thread count).
CHUNK = 1 << 19
#: Samples per task handed to a worker thread (a whole number of chunks).
TASK = 1 << 19
#: Samples per Box-Muller block of wgn noise.
NOISE_BLOCK = 1 << 13
#: Below this bound on every node's magnitude, float32 arithmetic (FFTs included)
#: cannot overflow, so no sample can be inf or NaN.
SAFE_BOUND = 1e20

_TWO_PI = 2.0 * math.pi
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_U24 = np.float32(2.0**-24)
_PHASE24 = np.float32(2.0 * math.pi * 2.0**-24)

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
    """A node materialised as a whole window (filled by :meth:`Plan.materialise`)."""

    def __init__(
        self, build: Callable[[Plan, _Workers], np.ndarray], deps: tuple[SNode, ...], bound: float
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


class RenderCancelled(DsimError):
    """A render was stopped before it finished (the engine is closing)."""


#: Render threads run at this niceness (Linux: per thread), so that the event loop and
#: the sending threads of the process (and everything else) preempt them at once.
RENDER_NICE = 10


def _lower_priority() -> None:
    """Make the calling thread a background one (best effort; Linux sets nice per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RENDER_NICE)
    except (AttributeError, OSError):  # pragma: no cover - not Linux, or not allowed
        pass


class _Workers:
    """A small pool of background threads running loops over numbered tasks.

    Each thread has its own Context. Every piece of rendering work, including a
    single-threaded FFT, runs in these threads (never the caller's), at
    RENDER_NICE.
    """

    def __init__(self, threads: int, period: int, quiet: bool = False) -> None:
        self.threads = threads
        self.period = period
        self.quiet = quiet  # silence numpy's overflow warnings (a plan that is not safe)
        self.executor = ThreadPoolExecutor(threads, "dsim-render", initializer=_lower_priority)

    def call(self, fn: Callable[[], np.ndarray]) -> np.ndarray:
        """Run `fn` in one of the threads and return its result."""
        return self.executor.submit(self._quietly, fn).result()

    def _quietly(self, fn: Callable[[], np.ndarray]) -> np.ndarray:
        if self.quiet:
            with np.errstate(over="ignore", invalid="ignore"):
                return fn()
        return fn()

    def run(
        self,
        n_tasks: int,
        task: Callable[[Context, int], None],
        cancel: threading.Event | None = None,
    ) -> None:
        """Run ``task(ctx, i)`` for i in range(n_tasks), spread over the threads.

        Setting `cancel` stops the threads at their next task and raises
        :exc:`RenderCancelled` (a closing engine must not wait for a long render).
        """
        counter = itertools.count()
        lock = threading.Lock()
        failed = cancel if cancel is not None else threading.Event()

        def loop() -> None:
            ctx = Context(self.period)
            while not failed.is_set():
                with lock:
                    i = next(counter)
                if i >= n_tasks:
                    return
                try:
                    if self.quiet:
                        with np.errstate(over="ignore", invalid="ignore"):
                            task(ctx, i)
                    else:
                        task(ctx, i)
                except BaseException:
                    failed.set()
                    raise

        futures = [self.executor.submit(loop) for _ in range(max(1, min(self.threads, n_tasks)))]
        for future in futures:
            future.result()
        if cancel is not None and cancel.is_set():
            raise RenderCancelled("rendering was cancelled")

    def close(self) -> None:
        self.executor.shutdown()


class Plan:
    """The compiled outputs of a resolved program for one period."""

    def __init__(self, period: int, roots: list[SNode], dither: tuple[bool, ...]) -> None:
        self.period = period
        self.roots = roots
        self.dither = dither
        self.order = _post_order(roots)  # children before parents
        uses: dict[int, int] = {}
        for node in self.order:
            for child in node.children():
                uses[id(child)] = uses.get(id(child), 0) + 1
        for root in roots:
            uses[id(root)] = uses.get(id(root), 0) + 1
        for node in self.order:
            node.shared = uses.get(id(node), 0) > 1 and not isinstance(node, SConst | SArray)
        #: No value anywhere can overflow float32 (else the quantiser maps inf/NaN to full scale).
        self.safe = all(node.bound < SAFE_BOUND for node in self.order)

    def materialise(self, workers: _Workers) -> None:
        """Compute every whole-window node, innermost first."""
        for node in self.order:
            if isinstance(node, SArray) and node.data is None:
                node.data = node.build(self, workers)

    def window(self, node: SNode, workers: _Workers) -> np.ndarray:
        """The whole window of `node` as a float32 array (computed in parallel chunks)."""
        period = self.period
        full = np.empty(period, np.float32)

        def task(ctx: Context, i: int) -> None:
            for start in range(i * TASK, min(period, (i + 1) * TASK), CHUNK):
                n = min(CHUNK, period - start)
                value, owned = ctx.value(node, start, n)
                full[start : start + n] = value
                if owned:
                    assert isinstance(value, np.ndarray)
                    ctx.put(value)
                ctx.end_chunk()

        workers.run(-(-period // TASK), task)
        return full


def _post_order(roots: list[SNode]) -> list[SNode]:
    seen: set[int] = set()
    order: list[SNode] = []

    def visit(node: SNode) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        for child in node.children():
            visit(child)
        order.append(node)

    for root in roots:
        visit(root)
    return order


def _fractional_delay(
    child: SNode, fraction: float, nyquist: float
) -> Callable[[Plan, _Workers], np.ndarray]:
    """Build a whole-window delay by 0 <= fraction < 1 sample: a linear phase ramp on the FFT.

    The window is periodic, so ``y[n] = x[n - d]`` is exactly (up to float32
    rounding) bin k times ``exp(-2j pi k d / P)``. The Nyquist bin of an even
    period must stay real: it is scaled by `nyquist` (``cos(pi d)`` for one
    delay, a product of those for nested ones; see :class:`_Delay`).
    """

    def build(plan: Plan, workers: _Workers) -> np.ndarray:
        held = [plan.window(child, workers)]
        return workers.call(lambda: delay(held))

    def delay(held: list[np.ndarray]) -> np.ndarray:
        period = held[0].shape[0]
        # norm="ortho" both ways: numpy's unscaled transforms (norm "backward" forwards,
        # "forward" backwards) take a path about 3x slower using 3x the memory.
        spectrum = np.fft.rfft(held.pop(), norm="ortho")  # (the window itself is freed here)
        bins = spectrum.shape[0]
        last = float(spectrum[-1].real)
        for first in range(0, bins, CHUNK):
            k = np.arange(first, min(bins, first + CHUNK), dtype=np.float64)
            spectrum[first : first + k.shape[0]] *= np.exp(
                (-_TWO_PI * fraction / period) * 1j * k
            ).astype(spectrum.dtype)
        if period % 2 == 0:
            spectrum[-1] = last * nyquist
        return np.fft.irfft(spectrum, n=period, norm="ortho").astype(np.float32, copy=False)

    return build


#: Tones beyond this many are summed by one inverse FFT rather than a matrix product.
GEMM_MAX_TONES = 1024
#: OpenBLAS runs a matrix product of at most this many multiply-adds (m * n * k) in
#: the calling thread (interface/gemm.c: SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD).
_BLAS_SINGLE_THREAD = 65536 * 4


def _spectrum(
    amplitudes: np.ndarray, cycles: np.ndarray, phases: np.ndarray
) -> Callable[[Plan, _Workers], np.ndarray]:
    """Build very many tones over the whole window with one inverse real FFT."""

    def build(plan: Plan, workers: _Workers) -> np.ndarray:
        return workers.call(lambda: tones(plan.period))

    def tones(period: int) -> np.ndarray:
        spectrum = np.zeros(period // 2 + 1, np.complex128)
        # The Hermitian spectrum of a tone is A/2 exp(j phi) at bin k (DC and Nyquist:
        # A cos(phi), once); irfft divides by the period (its fast, scaled path).
        edge = (cycles == 0) | (2 * cycles == period)
        values = period * amplitudes * np.where(edge, np.cos(phases), np.exp(1j * phases) / 2)
        np.add.at(spectrum, cycles, values)
        return np.fft.irfft(spectrum.astype(np.complex64), n=period).astype(np.float32, copy=False)

    return build


class _Compiler:
    """Resolved tree -> SNode DAG, merging equal sub-expressions."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.nodes: dict[tuple[object, ...], SNode] = {}
        self.memo: dict[tuple[int, _Delay], SNode] = {}

    def intern(self, key: tuple[object, ...], make: Callable[[], SNode]) -> SNode:
        node = self.nodes.get(key)
        if node is None:
            node = self.nodes[key] = make()
        return node

    def const(self, value: float) -> SNode:
        return self.intern(("const", value, math.copysign(1.0, value)), lambda: SConst(value))

    def shift(self, child: SNode, offset: int) -> SNode:
        offset %= self.period
        if isinstance(child, SShift):
            offset = (offset + child.offset) % self.period
            child = child.child
        if offset == 0 or isinstance(child, SConst):
            return child
        return self.intern(("shift", id(child), offset), lambda: SShift(child, offset))

    def node(self, node: Node, delay: _Delay | None = None) -> SNode:
        """The SNode of `node`, delayed by `delay` (see _Delay)."""
        node = deref(node)
        delay = delay or _NO_DELAY
        key = (id(node), delay)
        if key not in self.memo:
            self.memo[key] = self._node(node, delay)
        return self.memo[key]

    def _node(self, node: Node, delay: _Delay) -> SNode:
        if isinstance(node, Nodither):
            return self.node(node.operand, delay)
        if isinstance(node, Delay):
            return self.node(node.operand, delay.then(node.samples))
        if delay != _NO_DELAY and not self.tonal(node):
            return self.delayed(self.node(node), delay)
        # Undelayed, or a sum of tones: a delay is a change of phase of each tone.
        if isinstance(node, Const):
            return self.const(node.value)
        if isinstance(node, Neg):
            child = self.node(node.operand, delay)
            if isinstance(child, SConst):
                return self.const(-child.value)
            return self.intern(("neg", id(child)), lambda: SNeg(child))
        if isinstance(node, BinOp):
            left, right = self.node(node.left, delay), self.node(node.right, delay)
            op = node.op
            return self.intern(("bin", op, id(left), id(right)), lambda: SBin(op, left, right))
        if isinstance(node, Cw):
            return self.tones(
                np.array([node.amplitude]),
                np.array([_cycles(node.cycles)], np.int64),
                np.array([node.phase]),
                delay,
            )
        if isinstance(node, MultiCw):
            count, k0, ks = node.count, _cycles(node.cycles), _cycles(node.cycles_step)
            i = np.arange(count, dtype=np.int64)
            amplitudes = node.amplitude + node.amplitude_step * i.astype(np.float64)
            if ks == 0 or count <= 1:  # all on one bin: the sum of an arithmetic progression
                total = count * node.amplitude + node.amplitude_step * (count * (count - 1) / 2)
                amplitudes, i = np.array([total]), np.zeros(1, np.int64)
            return self.tones(amplitudes, k0 + ks * i, np.zeros(len(amplitudes)), delay)
        if isinstance(node, Comb):
            amplitude, count, period = node.amplitude, _cycles(node.count), self.period
            return self.intern(("comb", amplitude, count), lambda: SComb(amplitude, count, period))
        if isinstance(node, Wgn):
            if node.std == 0:
                return self.const(0.0)
            std, seed = node.std, node.seed
            return self.intern(("wgn", std, seed), lambda: SNoise(std, seed))
        raise TypeError(f"cannot synthesise {node!r}")

    def tonal(self, node: Node) -> bool:
        """Whether `node` is a sum of tones (and constants), which a delay merely rephases."""
        node = deref(node)
        if isinstance(node, Const | Cw | MultiCw):
            return True
        if isinstance(node, Neg | Delay):
            return self.tonal(node.operand)
        if isinstance(node, BinOp):
            if node.op == "*":
                left, right = deref(node.left), deref(node.right)
                return (isinstance(left, Const) and self.tonal(right)) or (
                    isinstance(right, Const) and self.tonal(left)
                )
            return self.tonal(node.left) and self.tonal(node.right)
        return False

    def tones(
        self, amplitudes: np.ndarray, cycles: np.ndarray, phases: np.ndarray, delay: _Delay
    ) -> SNode:
        """A sum of tones, delayed: up to 3 use tables, more matrix products, very many an FFT."""
        period = self.period
        amplitudes, phases = delay.rephase(amplitudes, cycles, phases, period)
        dc = cycles == 0
        offset = float((amplitudes[dc] * np.cos(phases[dc])).sum()) if dc.any() else 0.0
        amplitudes, cycles, phases = amplitudes[~dc], cycles[~dc], phases[~dc]
        parts: list[SNode] = []
        key = ("tones", amplitudes.tobytes(), cycles.tobytes(), phases.tobytes())
        if len(amplitudes) > GEMM_MAX_TONES:
            bound = float(np.abs(amplitudes).sum())
            build = _spectrum(amplitudes, cycles, phases)
            parts.append(self.intern(key, lambda: SArray(build, (), bound)))
        elif len(amplitudes) > 3:
            parts.append(self.intern(key, lambda: SGemm(amplitudes, cycles, phases, period)))
        else:
            tones = zip(amplitudes.tolist(), cycles.tolist(), phases.tolist(), strict=True)
            for a, k, phi in tones:
                parts.append(
                    self.intern(("tone", a, k, phi), lambda: STone(a, k, phi, period))  # noqa: B023
                )
        if offset or not parts:
            parts.append(self.const(offset))
        result = parts[0]
        for part in parts[1:]:
            left, right = result, part
            result = self.intern(("bin", "+", id(left), id(right)), lambda: SBin("+", left, right))  # noqa: B023
        return result

    def delayed(self, child: SNode, delay: _Delay) -> SNode:
        """`child` (not a sum of tones) delayed: a shift, after an FFT for a fraction."""
        if isinstance(child, SConst):
            return child
        whole = math.floor(delay.samples)
        fraction = delay.samples - whole
        # A whole-sample shift flips the Nyquist bin by (-1)**whole: the FFT does the rest.
        nyquist = delay.nyquist * (-1.0 if whole % 2 else 1.0)
        if fraction or (self.period % 2 == 0 and nyquist != 1.0):
            key = ("fraction", id(child), fraction, nyquist)
            bound = child.bound * (2 + 2 / math.pi * math.log(self.period))
            build = _fractional_delay(child, fraction, nyquist)
            child = self.intern(key, lambda: SArray(build, (child,), bound))
        return self.shift(child, -whole)


@dataclass(frozen=True)
class _Delay:
    """A delay by `samples` (the sum of nested delays) as the FFT defines it.

    Every bin k but Nyquist turns by ``exp(-2j pi k samples / P)``; the Nyquist
    bin of an even period is scaled by `nyquist`, the product of ``cos(pi d)``
    over the nested delays d (so that it stays real), which is not in general
    ``cos(pi samples)``: nested fractional delays are applied one by one.
    """

    samples: float = 0.0
    nyquist: float = 1.0

    def then(self, samples: float) -> _Delay:
        return _Delay(self.samples + samples, self.nyquist * _cos_pi(samples))

    def rephase(
        self, amplitudes: np.ndarray, cycles: np.ndarray, phases: np.ndarray, period: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tones delayed: each turns by ``-2 pi k samples / P``; a Nyquist tone is scaled."""
        if self == _NO_DELAY:
            return amplitudes, phases
        whole = math.floor(self.samples)
        fraction = self.samples - whole
        turn = ((cycles * (whole % period)) % period + cycles * fraction) * (_TWO_PI / period)
        nyquist = 2 * cycles == period
        amplitudes = np.where(nyquist, amplitudes * np.cos(phases) * self.nyquist, amplitudes)
        phases = np.where(nyquist, 0.0, phases - turn)
        return amplitudes, phases


_NO_DELAY = _Delay()


def _cos_pi(samples: float) -> float:
    """cos(pi * samples), exactly +-1 for whole samples."""
    whole = math.floor(samples)
    if samples == whole:
        return -1.0 if whole % 2 else 1.0
    return math.cos(math.pi * (samples - whole)) * (-1.0 if whole % 2 else 1.0)


def _cycles(value: int | None) -> int:
    assert value is not None, "resolve the program first"
    return value


def compile_outputs(outputs: tuple[Node, ...], period: int) -> Plan:
    """Compile resolved output expressions into a Plan for `period` samples."""
    compiler = _Compiler(period)
    roots = [compiler.node(output) for output in outputs]
    dither = tuple(not isinstance(deref(output), Nodither) for output in outputs)
    return Plan(period, roots, dither)
