"""The program tree of a signal spec, and its canonical text.

Nodes are frozen dataclasses: equal nodes describe equal signals (positions in
the spec are kept for error messages but take no part in equality), which lets
the synthesiser compute a repeated sub-expression once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: A constant in the spec: ints stay exact (seeds, counts), everything else is a float.
Number = int | float


@dataclass(frozen=True)
class Node:
    """A signal expression; `pos` is its 0-based character offset in the spec."""

    pos: int = field(default=0, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Const(Node):
    """A constant (DC) signal."""

    value: float


@dataclass(frozen=True)
class Var(Node):
    """A use of the variable `name`, whose definition is `target` (shared, evaluated once)."""

    name: str
    target: Node


@dataclass(frozen=True)
class Neg(Node):
    """``-operand``."""

    operand: Node


@dataclass(frozen=True)
class BinOp(Node):
    """``left op right`` for op one of ``+ - *`` (division by a constant becomes ``*``)."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Cw(Node):
    """``cw(amplitude, frequency[, phase])``: ``amplitude * cos(2 pi k n / P + phase)``.

    `cycles` (k, whole cycles per period P) is set once resolved:
    ``k = round(frequency * P / fs)``. k = 0 is DC; katgpucbf uses max(1, k),
    so its ``cw(a, 0)`` is one cycle per period.
    """

    amplitude: float
    frequency: float
    phase: float = 0.0
    cycles: int | None = None


@dataclass(frozen=True)
class MultiCw(Node):
    """``multicw(count, amplitude, amplitude_step, frequency, frequency_step)``.

    Tone i (0 <= i < count) has amplitude ``amplitude + i * amplitude_step`` and
    phase 0. Once resolved, it sits at ``cycles + i * cycles_step`` cycles per
    period, where the start and the step are each rounded to whole cycles:
    ``cycles = round(frequency * P / fs)``, ``cycles_step = round(frequency_step
    * P / fs)``, so the tones are exactly evenly spaced (and the canonical text
    spells both rounded values). katgpucbf rounds each tone's frequency
    separately instead, so its spacing can vary by a bin; its ``signals``
    sensor also drops the frequencies of multicw, which ours prints.
    """

    count: int
    amplitude: float
    amplitude_step: float
    frequency: float
    frequency_step: float
    cycles: int | None = None
    cycles_step: int | None = None


@dataclass(frozen=True)
class Comb(Node):
    """``comb(amplitude, frequency)``: one-sample impulses of height `amplitude`.

    `count` (m, impulses per period P) is set once resolved:
    ``m = round(frequency * P / fs)``, 1 <= m <= P; impulse c sits at sample
    ``round(c * P / m)`` (ties to even), as katgpucbf places them.
    """

    amplitude: float
    frequency: float
    count: int | None = None


@dataclass(frozen=True)
class Wgn(Node):
    """``wgn(std, seed)``: white Gaussian noise, periodic with the window.

    A missing seed is drawn (128 bits) when the spec is parsed, so that the
    canonical text reproduces the noise.
    """

    std: float
    seed: int


@dataclass(frozen=True)
class Delay(Node):
    """``delay(operand, samples)``: ``y[n] = x[n - samples]``, circular in the window.

    Whole samples shift exactly; a fraction is applied as a linear phase ramp
    on the window's FFT (exact for the periodic window; katgpucbf allows only
    whole samples).
    """

    operand: Node
    samples: float


@dataclass(frozen=True)
class Nodither(Node):
    """``nodither(operand)``: the output is quantised without dither."""

    operand: Node


@dataclass(frozen=True)
class Counter(Node):
    """``counter()``: the engine's own heap-counter pattern (never rendered here)."""


def deref(node: Node) -> Node:
    """`node` with any chain of variable uses replaced by what they stand for."""
    while isinstance(node, Var):
        node = node.target
    return node


def format_number(value: Number) -> str:
    """The shortest text that parses back to exactly `value`."""
    return str(value) if isinstance(value, int) else repr(float(value))


def format_samples(value: float) -> str:
    """A delay in samples: whole numbers without the ".0", others as the shortest float."""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


_ADD, _MUL, _NEG, _ATOM = 1, 2, 3, 4


def _precedence(node: Node) -> int:
    if isinstance(node, BinOp):
        return _MUL if node.op == "*" else _ADD
    if isinstance(node, Neg):
        return _NEG
    if isinstance(node, Const) and math.copysign(1.0, node.value) < 0:
        return _NEG  # prints with a leading minus
    return _ATOM


def format_expr(node: Node) -> str:
    """Canonical text of an expression: variables by name, parentheses only where needed.

    Parentheses keep the tree's shape exactly (``a + (b + c)`` stays so), since
    float addition is not associative and the canonical text must reproduce the
    samples bit for bit.
    """
    if isinstance(node, Const):
        return format_number(node.value)
    if isinstance(node, Var):
        return node.name
    if isinstance(node, Neg):
        inner = format_expr(node.operand)
        return f"-({inner})" if _precedence(node.operand) <= _NEG else f"-{inner}"
    if isinstance(node, BinOp):
        prec = _precedence(node)
        left = format_expr(node.left)
        right = format_expr(node.right)
        if _precedence(node.left) < prec:
            left = f"({left})"
        if _precedence(node.right) <= prec:
            right = f"({right})"
        return f"{left} {node.op} {right}"
    return _format_call(node)


def _format_call(node: Node) -> str:
    args: list[str]
    if isinstance(node, Cw):
        args = [format_number(node.amplitude), format_number(node.frequency)]
        if node.phase != 0:
            args.append(format_number(node.phase))
        name = "cw"
    elif isinstance(node, MultiCw):
        args = [
            str(node.count),
            format_number(node.amplitude),
            format_number(node.amplitude_step),
            format_number(node.frequency),
            format_number(node.frequency_step),
        ]
        name = "multicw"
    elif isinstance(node, Comb):
        args = [format_number(node.amplitude), format_number(node.frequency)]
        name = "comb"
    elif isinstance(node, Wgn):
        args = [format_number(node.std), str(node.seed)]
        name = "wgn"
    elif isinstance(node, Delay):
        args = [format_expr(node.operand), format_samples(node.samples)]
        name = "delay"
    elif isinstance(node, Nodither):
        args = [format_expr(node.operand)]
        name = "nodither"
    elif isinstance(node, Counter):
        args = []
        name = "counter"
    else:  # pragma: no cover - every node type is handled above
        raise TypeError(f"unknown node {node!r}")
    return f"{name}({', '.join(args)})"


@dataclass(frozen=True)
class Statement:
    """``name = expr;`` (a definition) or ``expr;`` (the next output, when name is None)."""

    name: str | None
    expr: Node
    pos: int = field(default=0, compare=False)


def format_statements(statements: tuple[Statement, ...]) -> str:
    """Canonical text of a whole spec: every statement ends in ';', no spaces between."""
    parts = []
    for statement in statements:
        text = format_expr(statement.expr)
        parts.append(f"{statement.name} = {text};" if statement.name else f"{text};")
    return "".join(parts)
