"""Program tree -> resolved tree: frequencies rounded to whole cycles per period.

A window of `period` samples is replayed end to end, so every periodic
component must complete a whole number of cycles in it: a frequency f becomes
``k = round(f * period / fs)`` cycles (and is reported as ``k * fs / period``
Hz). The canonical text spells those rounded frequencies, so it reproduces the
window exactly.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

from .errors import SignalError, fail
from .tree import (
    BinOp,
    Comb,
    Const,
    Counter,
    Cw,
    Delay,
    MultiCw,
    Neg,
    Node,
    Nodither,
    Statement,
    Var,
    Wgn,
    deref,
    format_statements,
)

#: A stream without an ADC clock (free-running) reads signal frequencies against this
#: rate, MeerKAT L-band's, unless told otherwise (dsim and dsim-verify alike).
DEFAULT_NOMINAL_SAMPLE_RATE = 1712e6

#: At most this many tones per output are listed by :meth:`Resolved.tones`.
MAX_LISTED_TONES = 10_000


@dataclass(frozen=True)
class Resolved:
    """A program fitted to a period and sample rate: what :func:`render` draws.

    `canonical` is a spec text that reproduces these samples bit for bit (every
    seed and rounded frequency spelled out, variables kept). `outputs` are the
    output expressions (variables still shared), `dither` says per output
    whether it is dithered.
    """

    canonical: str
    period: int
    adc_sample_rate: float
    statements: tuple[Statement, ...]
    outputs: tuple[Node, ...]
    dither: tuple[bool, ...]
    is_counter: bool

    @property
    def n_outputs(self) -> int:
        """How many outputs (polarisations)."""
        return len(self.outputs)

    def tones(self) -> list[list[tuple[float, float]]]:
        """Per output, (frequency Hz, amplitude) of the cw/multicw terms added at top level.

        Best effort, for plot markers: terms reached through ``+``, ``-``,
        unary minus, scaling by a constant, delay, nodither and variables are
        listed (a subtracted or negated term with a negative amplitude); tones
        inside products of signals are not. At most MAX_LISTED_TONES per output.
        """
        fs, period = self.adc_sample_rate, self.period
        result = []
        for output in self.outputs:
            found: list[tuple[float, float]] = []
            _collect_tones(output, 1.0, found, fs, period)
            result.append(found[:MAX_LISTED_TONES])
        return result


def _collect_tones(
    node: Node, scale: float, found: list[tuple[float, float]], fs: float, period: int
) -> None:
    node = deref(node)
    if len(found) >= MAX_LISTED_TONES:
        return
    if isinstance(node, Nodither | Delay):
        _collect_tones(node.operand, scale, found, fs, period)
    elif isinstance(node, Neg):
        _collect_tones(node.operand, -scale, found, fs, period)
    elif isinstance(node, BinOp) and node.op in "+-":
        _collect_tones(node.left, scale, found, fs, period)
        _collect_tones(node.right, -scale if node.op == "-" else scale, found, fs, period)
    elif isinstance(node, BinOp) and node.op == "*":
        left, right = deref(node.left), deref(node.right)
        if isinstance(left, Const):
            _collect_tones(right, scale * left.value, found, fs, period)
        elif isinstance(right, Const):
            _collect_tones(left, scale * right.value, found, fs, period)
    elif isinstance(node, Cw):
        assert node.cycles is not None
        found.append((node.cycles * fs / period, scale * node.amplitude))
    elif isinstance(node, MultiCw):
        assert node.cycles is not None and node.cycles_step is not None
        for i in range(min(node.count, MAX_LISTED_TONES - len(found))):
            k = node.cycles + i * node.cycles_step
            found.append((k * fs / period, scale * (node.amplitude + i * node.amplitude_step)))


def resolve(
    text: str, statements: tuple[Statement, ...], period: int, adc_sample_rate: float
) -> Resolved:
    """Resolve a parsed program (see :meth:`Program.resolve`)."""
    if isinstance(period, bool) or not isinstance(period, numbers.Integral) or period < 1:
        raise SignalError(f"the period must be a positive whole number of samples, not {period!r}")
    period = int(period)
    fs = float(adc_sample_rate)
    if not math.isfinite(fs) or fs <= 0:
        raise SignalError(f"the ADC sample rate must be positive, not {adc_sample_rate!r}")
    resolver = _Resolver(text, period, fs)
    resolved = tuple(
        replace(s, expr=resolver.node(s.expr)) for s in statements
    )  # definitions first: uses then find them in the memo
    outputs = tuple(s.expr for s in resolved if s.name is None)
    return Resolved(
        canonical=format_statements(resolved),
        period=period,
        adc_sample_rate=fs,
        statements=resolved,
        outputs=outputs,
        dither=tuple(not isinstance(deref(o), Nodither) for o in outputs),
        is_counter=isinstance(deref(outputs[0]), Counter),
    )


class _Resolver:
    def __init__(self, text: str, period: int, fs: float) -> None:
        self.text = text
        self.period = period
        self.fs = fs
        self.memo: dict[int, Node] = {}  # id(original) -> resolved: keeps sharing

    def hz(self, cycles: int) -> float:
        return cycles * self.fs / self.period

    def cycles(self, frequency: float) -> int:
        exact = frequency * self.period / self.fs
        if not math.isfinite(exact):  # a tiny sample rate: past Nyquist, as the checks say
            return int(math.copysign(self.period + 1, exact))
        return round(exact)

    def check_tone(self, node: Node, what: str, frequency: float, cycles: int) -> None:
        nyquist = self.fs / 2
        if cycles < 0:
            raise fail(
                self.text,
                node.pos,
                f"{what} {frequency!r} Hz rounds to {self.hz(cycles)!r} Hz, below 0",
            )
        if 2 * cycles > self.period:
            raise fail(
                self.text,
                node.pos,
                f"{what} {frequency!r} Hz rounds to {self.hz(cycles)!r} Hz "
                f"(for a {self.period}-sample period), above Nyquist ({nyquist!r} Hz)",
            )

    def node(self, node: Node) -> Node:
        key = id(node)
        if key not in self.memo:
            self.memo[key] = self._node(node)
        return self.memo[key]

    def _node(self, node: Node) -> Node:
        if isinstance(node, Var):
            return replace(node, target=self.node(node.target))
        if isinstance(node, Neg | Delay | Nodither):
            return replace(node, operand=self.node(node.operand))
        if isinstance(node, BinOp):
            return replace(node, left=self.node(node.left), right=self.node(node.right))
        if isinstance(node, Cw):
            k = self.cycles(node.frequency)
            self.check_tone(node, "cw frequency", node.frequency, k)
            return replace(node, frequency=self.hz(k), cycles=k)
        if isinstance(node, MultiCw):
            k0 = self.cycles(node.frequency)
            ks = self.cycles(node.frequency_step)
            if node.count > 1 and ks == 0:
                raise fail(
                    self.text,
                    node.pos,
                    f"multicw frequency step {node.frequency_step!r} Hz rounds to 0 per "
                    f"{self.period}-sample period: its {node.count} tones would be one "
                    f"(the step must be at least {self.hz(1)!r} Hz)",
                )
            if node.count > 0:
                self.check_tone(node, "multicw first tone", node.frequency, k0)
                last = node.frequency + (node.count - 1) * node.frequency_step
                self.check_tone(node, "multicw last tone", last, k0 + (node.count - 1) * ks)
            return replace(
                node,
                frequency=self.hz(k0),
                frequency_step=self.hz(ks),
                cycles=k0,
                cycles_step=ks,
            )
        if isinstance(node, Comb):
            m = self.cycles(node.frequency)
            if m < 1:
                raise fail(
                    self.text,
                    node.pos,
                    f"comb frequency {node.frequency!r} Hz rounds to 0 impulses "
                    f"per {self.period}-sample period (at least {self.hz(1)!r} Hz)",
                )
            if m > self.period:
                raise fail(
                    self.text,
                    node.pos,
                    f"comb frequency {node.frequency!r} Hz is above the sample rate "
                    f"({self.fs!r} Hz): at most one impulse per sample",
                )
            return replace(node, frequency=self.hz(m), count=m)
        if isinstance(node, Const | Wgn | Counter):
            return node
        raise TypeError(f"unknown node {node!r}")  # pragma: no cover
