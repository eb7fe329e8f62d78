"""Signal spec text -> checked program tree (and back to canonical text).

The spec language is the one katgpucbf's dsim speaks (``name = expr;`` and
``expr;`` statements, ``+ - *``, function calls), parsed with Python's own
:mod:`ast` and a whitelist of node types: nothing is ever evaluated as Python.
Each statement is parsed on its own (statements are split at ``;``, which
cannot occur inside one), with its whitespace made single spaces, so that
line breaks may fall anywhere.
"""

from __future__ import annotations

import ast
import math
import secrets
from collections.abc import Callable

from .errors import SignalError, fail
from .resolve import Resolved, resolve
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
    Number,
    Statement,
    Var,
    Wgn,
    deref,
)

#: The functions of the language, in the order error messages list them.
FUNCTIONS = ("cw", "multicw", "comb", "wgn", "delay", "nodither", "counter")

#: Deepest nesting of an expression accepted (keeps every recursive walk safe).
MAX_DEPTH = 200

#: Characters other than letters, digits and whitespace that a spec may contain.
_PUNCTUATION = frozenset("+-*/().,=;_")

_NAMES = {
    ast.Compare: "a comparison",
    ast.BoolOp: "'and'/'or'",
    ast.IfExp: "an if-expression",
    ast.Lambda: "a lambda",
    ast.Attribute: "an attribute",
    ast.Subscript: "a subscript",
    ast.Tuple: "a tuple",
    ast.List: "a list",
    ast.Set: "a set",
    ast.Dict: "a dict",
    ast.Starred: "'*' unpacking",
    ast.NamedExpr: "':='",
}

_OPERATORS = {
    ast.Pow: "**",
    ast.Mod: "%",
    ast.FloorDiv: "//",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class Program:
    """A parsed, checked signal spec (frequencies not yet rounded to a period).

    `text` is the spec as given. Every wgn without a seed has been given one
    (drawn once, here), so resolving and rendering are deterministic.
    """

    def __init__(self, text: str, statements: tuple[Statement, ...]) -> None:
        self.text = text
        self.statements = statements
        self.outputs: tuple[Node, ...] = tuple(s.expr for s in statements if s.name is None)

    @property
    def n_outputs(self) -> int:
        """How many outputs (polarisations) the spec describes."""
        return len(self.outputs)

    @property
    def is_counter(self) -> bool:
        """Whether every output is ``counter()`` (the engine's own test pattern)."""
        return isinstance(deref(self.outputs[0]), Counter)

    def check_outputs(self, n: int) -> None:
        """Raise SignalError unless the spec has exactly `n` outputs."""
        if n != self.n_outputs:
            raise SignalError(
                f"the spec has {_plural(self.n_outputs, 'output')}; "
                f"this stream has {_plural(n, 'polarisation')}"
            )

    def resolve(self, period: int, adc_sample_rate: float) -> Resolved:
        """Round every frequency to whole cycles per `period` samples at `adc_sample_rate` Hz.

        SignalError if a frequency then falls outside 0..Nyquist (naming its place).
        """
        return resolve(self.text, self.statements, period, adc_sample_rate)

    def __repr__(self) -> str:
        return f"Program({self.text!r})"


def parse(text: str) -> Program:
    """Parse and check a spec; SignalError (one line, naming the place) if it is invalid."""
    if not isinstance(text, str):
        raise SignalError(f"a signal spec is text, not {type(text).__name__}")
    return _Parser(text).program()


class _Parser:
    """One parse of one spec: the variables defined so far and the statements."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.variables: dict[str, Node] = {}
        self.statements: list[Statement] = []
        self.offset = 0  # character offset of the statement being parsed
        self.code = ""  # its text as given to ast (whitespace made spaces)

    def error(self, offset: int, message: str) -> SignalError:
        return fail(self.text, offset, message)

    def at(self, node: ast.AST) -> int:
        """The spec offset of an ast node (ast counts UTF-8 bytes within the statement)."""
        col = getattr(node, "col_offset", 0)
        return self.offset + len(self.code.encode()[:col].decode(errors="ignore"))

    def program(self) -> Program:
        text = self.text
        if not text.strip() or not text.replace(";", "").strip():
            raise SignalError("the signal spec is empty")
        for i, char in enumerate(text):
            if not (char.isalnum() or char.isspace() or char in _PUNCTUATION):
                raise self.error(i, f"unexpected character {char!r}")
        start = 0
        while start <= len(text):
            end = text.find(";", start)
            last = end < 0
            if last:
                end = len(text)
            segment = text[start:end]
            if segment.strip():
                lead = len(segment) - len(segment.lstrip())
                self.statement(start + lead, segment.strip())
            elif not last:
                raise self.error(end, "empty statement (two ';' in a row, or a leading ';')")
            start = end + 1
        outputs = [s for s in self.statements if s.name is None]
        if not outputs:
            raise SignalError("the spec has no outputs (only definitions)")
        counters = [isinstance(deref(s.expr), Counter) for s in outputs]
        if any(counters) and not all(counters):
            odd = outputs[counters.index(not counters[0])]
            raise self.error(odd.pos, "either every output is counter() or none is")
        return Program(text, tuple(self.statements))

    def statement(self, offset: int, code: str) -> None:
        self.offset = offset
        self.code = "".join(" " if c.isspace() else c for c in code)
        try:
            module = ast.parse(self.code, mode="exec")
        except SyntaxError as exc:
            col = (exc.offset or 1) - 1 if exc.lineno in (None, 1) else len(self.code)
            message = (exc.msg or "invalid syntax").split("\n")[0]
            if col >= len(code) and message.startswith("invalid syntax"):
                message = "incomplete expression"
            raise self.error(offset + max(0, min(col, len(code))), message) from None
        except (RecursionError, MemoryError):
            raise self.error(offset, "expression nested too deeply") from None
        if len(module.body) != 1:  # pragma: no cover - ';' already split statements
            raise self.error(offset, "expected one statement")
        stmt = module.body[0]
        try:
            if isinstance(stmt, ast.Assign):
                self.definition(stmt)
            elif isinstance(stmt, ast.Expr):
                expr = self.signal(stmt.value, 0, top="output")
                self.statements.append(Statement(None, expr, offset))
            elif isinstance(stmt, ast.AugAssign):
                raise self.error(self.at(stmt), "augmented assignment is not supported")
            else:
                raise self.error(self.at(stmt), "expected an expression or 'name = expression'")
        except RecursionError:
            raise self.error(offset, "expression nested too deeply") from None

    def definition(self, stmt: ast.Assign) -> None:
        if len(stmt.targets) != 1:
            raise self.error(self.at(stmt.targets[1]), "chained assignment is not supported")
        target = stmt.targets[0]
        if not isinstance(target, ast.Name):
            raise self.error(self.at(target), "only a plain name can be defined")
        name = target.id
        if name in FUNCTIONS:
            raise self.error(self.at(target), f"'{name}' is a function; choose another name")
        if name in self.variables:
            raise self.error(self.at(target), f"'{name}' is already defined")
        expr = self.signal(stmt.value, 0, top="definition")
        self.variables[name] = expr
        self.statements.append(Statement(name, expr, self.offset))

    # Expressions ---------------------------------------------------------------

    def signal(self, node: ast.expr, depth: int, top: str | None = None) -> Node:
        """A signal expression (a constant becomes a DC signal).

        `top` is "output" or "definition" for the whole expression of a
        statement, where nodither (and, for outputs, counter) may stand.
        """
        value = self.expr(node, depth, top)
        if isinstance(value, Node):
            return value
        return Const(float(value), pos=self.at(node))

    def expr(self, node: ast.expr, depth: int, top: str | None = None) -> Node | Number:
        """A signal or, when it is constant arithmetic, a number (ints stay exact)."""
        if depth > MAX_DEPTH:
            raise self.error(self.at(node), f"expression nested too deeply (over {MAX_DEPTH})")
        pos = self.at(node)
        if isinstance(node, ast.Constant):
            return self.number(node)
        if isinstance(node, ast.Name):
            return self.variable(node, top)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, depth)
        if isinstance(node, ast.BinOp):
            return self.binary(node, depth)
        if isinstance(node, ast.Call):
            return self.call(node, depth, top)
        raise self.error(pos, f"{_NAMES.get(type(node), 'this expression')} is not allowed here")

    def number(self, node: ast.Constant) -> Number:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            if isinstance(value, complex):
                raise self.error(self.at(node), "complex numbers are not supported")
            raise self.error(self.at(node), f"{value!r} is not a number")
        return self.finite(value, node)

    def finite(self, value: Number, node: ast.AST) -> Number:
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(self.at(node), "number is not finite")
        return value

    def variable(self, node: ast.Name, top: str | None) -> Node:
        name = node.id
        pos = self.at(node)
        if name in FUNCTIONS:
            raise self.error(pos, f"'{name}' is a function: call it, e.g. {name}(...)")
        if name not in self.variables:
            raise self.error(pos, f"unknown variable '{name}'")
        target = self.variables[name]
        if isinstance(deref(target), Nodither) and top is None:
            raise self.error(
                pos, f"'{name}' is a nodither(...) signal: it can only be a whole output"
            )
        return Var(name, target, pos=pos)

    def unary(self, node: ast.UnaryOp, depth: int) -> Node | Number:
        operand = self.expr(node.operand, depth + 1)
        if isinstance(node.op, ast.UAdd):
            return operand
        if not isinstance(node.op, ast.USub):
            op = "not" if isinstance(node.op, ast.Not) else "~"
            raise self.error(self.at(node), f"operator '{op}' is not supported")
        if isinstance(operand, Node):
            if isinstance(operand, Neg):
                return operand.operand
            return Neg(operand, pos=self.at(node))
        return -operand

    def binary(self, node: ast.BinOp, depth: int) -> Node | Number:
        pos = self.at(node)
        if type(node.op) in _OPERATORS:
            raise self.error(pos, f"operator '{_OPERATORS[type(node.op)]}' is not supported")
        left = self.expr(node.left, depth + 1)
        right = self.expr(node.right, depth + 1)
        if isinstance(node.op, ast.Div):
            if isinstance(right, Node):
                raise self.error(self.at(node.right), "can only divide by a constant")
            if right == 0:
                raise self.error(self.at(node.right), "division by zero")
            if not isinstance(left, Node):
                return self.arith(lambda a, b: a / b, left, right, node)
            reciprocal = self.arith(lambda a, b: a / b, 1.0, right, node)
            return BinOp("*", left, Const(float(reciprocal), pos=pos), pos=pos)
        op = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}[type(node.op)]
        if not isinstance(left, Node) and not isinstance(right, Node):
            fn: Callable[[Number, Number], Number] = {
                "+": lambda a, b: a + b,
                "-": lambda a, b: a - b,
                "*": lambda a, b: a * b,
            }[op]
            return self.arith(fn, left, right, node)
        if not isinstance(left, Node):
            left = Const(float(left), pos=self.at(node.left))
        if not isinstance(right, Node):
            right = Const(float(right), pos=self.at(node.right))
        return BinOp(op, left, right, pos=pos)

    def arith(
        self, fn: Callable[[Number, Number], Number], a: Number, b: Number, node: ast.AST
    ) -> Number:
        try:
            value = fn(a, b)
            if isinstance(value, int) and value.bit_length() > 4096:
                raise OverflowError
        except (OverflowError, ZeroDivisionError):
            raise self.error(self.at(node), "number is not finite") from None
        return self.finite(value, node)

    # Calls --------------------------------------------------------------------

    def call(self, node: ast.Call, depth: int, top: str | None) -> Node:
        pos = self.at(node)
        if not isinstance(node.func, ast.Name):
            raise self.error(pos, "only the functions of the language can be called")
        name = node.func.id
        if name not in FUNCTIONS:
            if name in self.variables:
                raise self.error(pos, f"'{name}' is a variable, not a function")
            raise self.error(pos, f"unknown function '{name}' (known: {', '.join(FUNCTIONS)})")
        if node.keywords:
            raise self.error(self.at(node.keywords[0].value), "keyword arguments are not supported")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.error(self.at(arg), "'*' unpacking is not allowed here")
        args = node.args
        if name == "cw":
            self.arity(node, name, 2, 3, "cw(amplitude, frequency[, phase])")
            amplitude = self.real(args[0], name, 1, depth)
            frequency = self.frequency(args[1], name, 2, depth)
            phase = self.real(args[2], name, 3, depth) if len(args) > 2 else 0.0
            return Cw(amplitude, frequency, phase, pos=pos)
        if name == "multicw":
            self.arity(
                node, name, 5, 5, "multicw(n, amplitude, amplitude_step, frequency, frequency_step)"
            )
            count = self.whole(args[0], name, 1, depth, "tone count")
            return MultiCw(
                count,
                self.real(args[1], name, 2, depth),
                self.real(args[2], name, 3, depth),
                self.frequency(args[3], name, 4, depth),
                self.real(args[4], name, 5, depth),
                pos=pos,
            )
        if name == "comb":
            self.arity(node, name, 2, 2, "comb(amplitude, frequency)")
            amplitude = self.real(args[0], name, 1, depth)
            frequency = self.frequency(args[1], name, 2, depth)
            if frequency == 0:
                raise self.error(self.at(args[1]), "comb frequency must be above 0 Hz")
            return Comb(amplitude, frequency, pos=pos)
        if name == "wgn":
            self.arity(node, name, 1, 2, "wgn(std[, seed])")
            std = self.real(args[0], name, 1, depth)
            if std < 0:
                raise self.error(self.at(args[0]), f"wgn std {std!r} is negative")
            if len(args) > 1:
                seed = self.expr(args[1], depth + 1)
                if isinstance(seed, Node) or isinstance(seed, float) or seed < 0:
                    raise self.error(
                        self.at(args[1]), "wgn seed (argument 2) must be a non-negative integer"
                    )
            else:
                seed = secrets.randbits(128)
            return Wgn(std, seed, pos=pos)
        if name == "delay":
            self.arity(node, name, 2, 2, "delay(signal, samples)")
            operand = self.signal(args[0], depth + 1)
            samples = self.real(args[1], name, 2, depth)
            return Delay(operand, samples, pos=pos)
        if name == "nodither":
            self.arity(node, name, 1, 1, "nodither(signal)")
            if top is None:
                raise self.error(
                    pos, "nodither(...) must be a whole output (or define a variable used so)"
                )
            return Nodither(self.signal(args[0], depth + 1), pos=pos)
        self.arity(node, name, 0, 0, "counter()")
        if top != "output":
            raise self.error(pos, "counter() can only be a whole output statement ('counter();')")
        return Counter(pos=pos)

    def arity(self, node: ast.Call, name: str, low: int, high: int, usage: str) -> None:
        n = len(node.args)
        if low <= n <= high:
            return
        want = str(low) if low == high else f"{low} or {high}"
        raise self.error(
            self.at(node), f"{name} takes {want} argument{'s' * (high != 1)}, not {n}: {usage}"
        )

    def constant(self, node: ast.expr, name: str, index: int, depth: int) -> Number:
        value = self.expr(node, depth + 1)
        if isinstance(value, Node):
            raise self.error(
                self.at(node), f"argument {index} of {name} must be a number, not a signal"
            )
        return value

    def real(self, node: ast.expr, name: str, index: int, depth: int) -> float:
        value = self.constant(node, name, index, depth)
        try:
            return float(value)
        except OverflowError:
            raise self.error(self.at(node), "number is not finite") from None

    def frequency(self, node: ast.expr, name: str, index: int, depth: int) -> float:
        value = self.real(node, name, index, depth)
        if value < 0:
            raise self.error(self.at(node), f"{name} frequency {value!r} Hz is negative")
        return value

    def whole(self, node: ast.expr, name: str, index: int, depth: int, what: str) -> int:
        value = self.constant(node, name, index, depth)
        if isinstance(value, float):
            if not value.is_integer():
                raise self.error(self.at(node), f"{name} {what} must be a whole number")
            value = int(value)
        if value < 0:
            raise self.error(self.at(node), f"{name} {what} must not be negative")
        return value
