"""Signal specs for the benchmarks: one expression made into one statement per polarisation.

dsim's signal language wants one output statement per polarisation
(``cw(0.5, 1e8) + wgn(0.1, 1); cw(0.5, 1e8) + wgn(0.1, 2);``). A benchmark
option takes either such a full spec, or one expression (``cw(0.5, 1e8) +
wgn(0.1)``, with or without its ``;``) that is repeated for every
polarisation. Each ``wgn(std)`` without a seed is then given an explicit one,
distinct in every place and polarisation, so runs are reproducible and the
polarisations' noise independent; a ``wgn`` with its own seed keeps it (and
the polarisations then share that noise).
"""

from __future__ import annotations

import itertools
import re

from dsim.signals import SignalError, parse

#: ``wgn(`` with a single argument that has no parentheses or commas.
_UNSEEDED_WGN = re.compile(r"\bwgn\(\s*([^(),]+?)\s*\)")

#: What the benchmarks render by default, and the ``?signals`` latency spec of the brief.
DEFAULT_EXPRESSION = "cw(0.5, 1e8) + wgn(0.1)"


def per_polarisation(spec: str, n_pols: int, first_seed: int = 1) -> str:
    """A full spec for `n_pols` outputs from `spec` (see the module); ValueError if it cannot."""
    try:
        program = parse(spec)
    except SignalError as exc:
        raise ValueError(f"bad signal spec {spec!r}: {exc}") from None
    if program.n_outputs != 1 or len(program.statements) != 1:
        if program.n_outputs == n_pols:
            return spec
        raise ValueError(
            f"signal spec {spec!r} has {program.n_outputs} outputs and "
            f"{len(program.statements)} statements: give one expression (repeated per "
            f"polarisation) or exactly {n_pols} outputs"
        )
    body = spec.strip().rstrip(";").strip()
    seeds = itertools.count(first_seed)
    statements = [
        _UNSEEDED_WGN.sub(lambda m: f"wgn({m.group(1)}, {next(seeds)})", body) + ";"
        for _ in range(n_pols)
    ]
    full = " ".join(statements)
    parse(full).check_outputs(n_pols)
    return full
