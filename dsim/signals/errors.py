"""The error a bad signal spec raises, and how it names the place."""

from __future__ import annotations

from ..errors import ConfigError


class SignalError(ConfigError):
    """A signal spec (or a setting it is used with) is invalid.

    The message is one line; for a fault in the spec it starts with the place,
    ``column C: ...`` or, when the spec has several lines, ``line L, column C: ...``
    (both 1-based, counting characters).
    """


def place(text: str, offset: int) -> str:
    """Name the 0-based character `offset` of `text` as "column C" or "line L, column C"."""
    offset = max(0, min(offset, len(text)))
    if "\n" not in text.rstrip("\n"):
        return f"column {offset + 1}"
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def fail(text: str, offset: int, message: str) -> SignalError:
    """A SignalError for `message` at `offset` of the spec `text` (raise it)."""
    return SignalError(f"{place(text, offset)}: {message}")
