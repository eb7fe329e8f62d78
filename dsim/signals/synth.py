"""Resolved program -> float32 waveforms, a cache-sized chunk at a time.

The resolved tree is compiled into a DAG of evaluation nodes (:mod:`.nodes`;
equal sub-expressions merged, so a shared variable or a repeated ``cw(...)`` is
computed once per chunk). Outputs are evaluated in fixed chunks of CHUNK
samples (fits in a core's cache; the values depend on CHUNK but never on the
thread count), in the threads of :mod:`.workers`. Nodes that need the whole
window at once (a fractional delay of anything but tones, a sum of very many
tones) are *materialised* into a full array first. A delay of a sum of tones
(cw, multicw, constants) is applied exactly to each tone's phase instead, with
no FFT.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .nodes import (
    _TWO_PI,
    CHUNK,
    SAFE_BOUND,
    Context,
    SArray,
    SBin,
    SComb,
    SConst,
    SGemm,
    SNeg,
    SNode,
    SNoise,
    SShift,
    STone,
)
from .tree import BinOp, Comb, Const, Cw, Delay, MultiCw, Neg, Node, Nodither, Wgn, deref
from .workers import TASK, Workers


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

    def materialise(self, workers: Workers) -> None:
        """Compute every whole-window node, innermost first."""
        for node in self.order:
            if isinstance(node, SArray) and node.data is None:
                node.data = node.build(self, workers)

    def window(self, node: SNode, workers: Workers) -> np.ndarray:
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
) -> Callable[[Plan, Workers], np.ndarray]:
    """Build a whole-window delay by 0 <= fraction < 1 sample: a linear phase ramp on the FFT.

    The window is periodic, so ``y[n] = x[n - d]`` is exactly (up to float32
    rounding) bin k times ``exp(-2j pi k d / P)``. The Nyquist bin of an even
    period must stay real: it is scaled by `nyquist` (``cos(pi d)`` for one
    delay, a product of those for nested ones; see :class:`_Delay`).
    """

    def build(plan: Plan, workers: Workers) -> np.ndarray:
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


def _spectrum(
    amplitudes: np.ndarray, cycles: np.ndarray, phases: np.ndarray
) -> Callable[[Plan, Workers], np.ndarray]:
    """Build very many tones over the whole window with one inverse real FFT."""

    def build(plan: Plan, workers: Workers) -> np.ndarray:
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
