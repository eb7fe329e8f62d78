"""Medians, spreads and paired ratios over the repetitions of each slot and configuration."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from .model import Config, Measurement, Slot


@dataclass
class Stats:
    """The repetitions of one slot in one configuration."""

    rates: dict[int, float] = field(default_factory=dict)  # repeat -> MB/s
    packet_size: int = 0
    packets_per_heap: int = 0
    packet_split: str = ""
    sink_per_heap: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates.values())

    @property
    def low(self) -> float:
        return min(self.rates.values())

    @property
    def high(self) -> float:
        return max(self.rates.values())

    @property
    def spread(self) -> float:
        """(max - min) / median."""
        return (self.high - self.low) / self.median


Table = dict[tuple[Slot, Config], Stats]


def tabulate(results: Sequence[Measurement]) -> Table:
    """Group measurements by slot and configuration."""
    table: Table = {}
    for m in results:
        stats = table.setdefault((m.slot, m.config), Stats())
        stats.rates[m.repeat] = m.mb_per_s
        stats.packet_size = m.packet_size
        stats.packets_per_heap = m.packets_per_heap
        stats.packet_split = m.packet_split
        if m.sink_packets is not None:
            stats.sink_per_heap.append(m.sink_packets / m.heaps)
    return table


def paired_ratios(a: Stats, b: Stats) -> list[float]:
    """a / b for each repetition both were measured in (same round, so same conditions)."""
    return [a.rates[r] / b.rates[r] for r in sorted(a.rates) if r in b.rates]


def ratio_range(a: Stats, b: Stats) -> str:
    """Median ratio, and the extremes over the repetitions (worst and best pairing)."""
    return (
        f"{a.median / b.median:.2f} (range {a.low / b.high:.2f}-{a.high / b.low:.2f} "
        "over all pairs of repeats)"
    )
