"""What the command-line tools share: one-line errors, and number arguments parsed strictly."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import NoReturn, TypeVar

_INTEGER = re.compile(r"[+-]?(?:[0-9]+|0[xX][0-9a-fA-F]+)")
_N = TypeVar("_N", int, float)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser that reports a bad command line in one line, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def integer(text: str) -> int:
    """A whole number: decimal digits, or hexadecimal with ``0x`` (any size; no ``1_0``)."""
    body = text.strip()
    if not _INTEGER.fullmatch(body):
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    return int(body, 16 if "x" in body.lower() else 10)  # "010" is ten, as a person means


def number(text: str) -> float:
    """A finite real number (``inf`` and ``nan`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def bounded(
    kind: Callable[[str], _N],
    *,
    positive: bool = False,
    non_negative: bool = False,
    at_most: _N | None = None,
) -> Callable[[str], _N]:
    """`kind` (:func:`integer` or :func:`number`), positive or non-negative, and no more
    than `at_most`, as asked."""

    def convert(text: str) -> _N:
        value = kind(text)
        if positive and not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        if non_negative and not value >= 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
        if at_most is not None and value > at_most:
            raise argparse.ArgumentTypeError(f"must be at most {at_most}, not {text}")
        return value

    convert.__name__ = kind.__name__  # argparse names the converter in its messages
    return convert
