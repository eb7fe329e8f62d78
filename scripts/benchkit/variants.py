"""Engine variants: how the engine is placed (cores) and fed (batches, GC) in a measurement.

A variant is ``default`` or ``+``-joined options: ``pinned`` (spead2's thread on
core 0, the Python thread on core 1), ``pinned-swap`` (cores 1 and 0),
``colocated`` (both on core 0), ``gcfreeze`` (``gc.freeze(); gc.disable()``),
``inflightN`` (N batches in flight), ``batchSIZE`` (bytes per batch, e.g. ``batch1M``).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, replace

from .engine_sender import DEFAULT_BATCH_BYTES, DEFAULT_BATCHES
from .units import format_size, parse_size

DEFAULT_VARIANTS = ("default", "pinned", "gcfreeze", "inflight4", "batch1M", "gcfreeze+inflight4")


@dataclass(frozen=True)
class Variant:
    """How the engine is placed and fed in one measurement."""

    name: str
    send_core: int | None = None
    python_core: int | None = None
    gc_freeze: bool = False
    batches: int = DEFAULT_BATCHES
    batch_bytes: int = DEFAULT_BATCH_BYTES


def parse_variant(text: str) -> Variant:
    """``"default"``, ``"pinned+gcfreeze"``, ``"inflight4"``, ``"batch1M"``... -> Variant."""
    name = text.strip()
    variant = Variant(name)
    tokens = [token.strip() for token in name.split("+")]
    if not name or any(not token for token in tokens):
        raise argparse.ArgumentTypeError(f"bad engine variant {text!r}")
    for token in tokens:
        inflight = re.fullmatch(r"inflight(\d+)", token)
        batch = re.fullmatch(r"batch(.+)", token)
        if token == "default":
            if len(tokens) > 1:
                raise argparse.ArgumentTypeError(f"'default' cannot be combined: {text!r}")
        elif token == "pinned":
            variant = replace(variant, send_core=0, python_core=1)
        elif token == "pinned-swap":
            variant = replace(variant, send_core=1, python_core=0)
        elif token == "colocated":
            variant = replace(variant, send_core=0, python_core=0)
        elif token == "gcfreeze":
            variant = replace(variant, gc_freeze=True)
        elif inflight:
            batches = int(inflight.group(1))
            if batches < 2:
                raise argparse.ArgumentTypeError(f"{token}: the engine needs at least 2")
            variant = replace(variant, batches=batches)
        elif batch:
            variant = replace(variant, batch_bytes=parse_size(batch.group(1)))
        else:
            raise argparse.ArgumentTypeError(
                f"unknown engine variant option {token!r} (default, pinned, pinned-swap, "
                "colocated, gcfreeze, inflightN, batchSIZE, joined with '+')"
            )
    return variant


def explain_variant(variant: Variant) -> str:
    """``"pinned (spead2 thread on core 0, Python thread on core 1, 4 batches of ~512 KiB)"``."""
    parts = []
    if variant.send_core is not None:
        parts.append(f"spead2 thread on core {variant.send_core}")
    if variant.python_core is not None:
        parts.append(f"Python thread on core {variant.python_core}")
    if variant.gc_freeze:
        parts.append("gc frozen and disabled")
    parts.append(f"{variant.batches} batches of ~{format_size(variant.batch_bytes)}")
    return f"{variant.name} ({', '.join(parts)})"


def parse_variants(text: str) -> tuple[str, ...]:
    """``"pinned,inflight4"`` -> ``("default", "pinned", "inflight4")``: default always first."""
    names: list[str] = []
    for part in text.split(","):
        if part.strip():
            name = parse_variant(part).name
            if name not in names:
                names.append(name)
    if not names:
        raise argparse.ArgumentTypeError("no variants given")
    if "default" in names:
        names.remove("default")
    return ("default", *names)  # the reference of every ratio, always measured
