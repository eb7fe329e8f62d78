"""bench_realtime's signal part: dsim streaming a rendered signal, against counter and replay.

Every *variant* (sender x ADC rate x polarisations x paced or not) gets its
own unread sinks and its own stream, made once before anything is timed (a
signal variant renders its window then) and kept for the whole run. Each
repetition then measures every variant once, back to back, by
:func:`benchkit.realtime.measure_stream`, the order rotated by one place per
repetition, so slow spells of the shared machine hit all variants of a round
alike. Ratios are paired: variant A / variant B within each repetition, then
the median (and range) over the repetitions.
"""

from __future__ import annotations

import socket
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .net import port_of, udp_socket
from .realtime import Stream, line, measure_stream, summarise

#: Builds a stream to these ports, paced at this ADC rate (None: unpaced).
Maker = Callable[[Sequence[int], float | None], Stream]


@dataclass
class Variant:
    """One sender in one configuration, with its sinks and stream (see the module)."""

    group: str  #: which comparison it belongs to, e.g. "L 1pol"
    sender: str  #: "signal", "counter" or "replay"
    adc_rate: float
    pols: int
    paced: bool
    make: Maker
    sinks: list[socket.socket] = field(default_factory=list)
    stream: Stream | None = None
    runs: list[dict[str, float]] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return "paced" if self.paced else "unpaced"

    def open(self) -> Stream:
        """Make the sinks and the stream (a signal is rendered here, before any timing)."""
        self.sinks = [udp_socket() for _ in range(self.pols)]
        self.stream = self.make(
            [port_of(s) for s in self.sinks], self.adc_rate if self.paced else None
        )
        return self.stream

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.close()
            self.stream = None
        for sink in self.sinks:
            sink.close()
        self.sinks = []


async def run_interleaved(
    variants: Sequence[Variant],
    seconds: float,
    repeats: int,
    progress: Callable[[str], None],
    warmup: float = 1.0,
) -> None:
    """`repeats` rounds, every variant once per round, the order rotated between rounds."""
    for r in range(repeats):
        shift = r % len(variants)
        for v in [*variants[shift:], *variants[:shift]]:
            assert v.stream is not None, "open every variant first"
            result = await measure_stream(v.stream, v.adc_rate, v.pols, seconds, v.paced, warmup)
            v.runs.append(result)
            progress(
                f"  round {r + 1}/{repeats} {v.group:>12} {v.sender:>8} {v.mode:>8}: "
                f"{100 * (result['ratio'] - 1):+.3f}%"
            )


def paired(a: Variant, b: Variant) -> dict[str, float]:
    """Achieved rate of `a` over `b`, round by round: median, min, max."""
    ratios = [
        ra["achieved_Bps"] / rb["achieved_Bps"] for ra, rb in zip(a.runs, b.runs, strict=True)
    ]
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "n": len(ratios),
    }


HEADER_PREFIX = f"{'group':>12} {'sender':>8} {'mode':>8} "
#: After :data:`benchkit.realtime.HEADER`: CPUs other processes kept busy (median of rounds).
HEADER_SUFFIX = f" {'others':>6}"


def row_line(v: Variant, row: dict[str, float]) -> str:
    others = [r["other_cpu"] for r in v.runs if r["other_cpu"] == r["other_cpu"]]
    busy = f"{statistics.median(others):6.2f}" if others else f"{'-':>6}"
    return f"{v.group:>12} {v.sender:>8} {v.mode:>8} {line(row)} {busy}"


def table(variants: Sequence[Variant]) -> list[dict[str, object]]:
    """Medians of every variant (printed by the caller with :func:`row_line`)."""
    rows: list[dict[str, object]] = []
    for v in variants:
        row = summarise(v.runs)
        rows.append(
            {"group": v.group, "sender": v.sender, "mode": v.mode, **row, "runs": list(v.runs)}
        )
    return rows


def ratio_text(name: str, r: dict[str, float]) -> str:
    return f"{name} {r['median']:.3f} ({r['min']:.3f}..{r['max']:.3f})"
