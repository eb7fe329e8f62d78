"""bench_send's CSV: every raw measurement, then one median row per slot and configuration."""

from __future__ import annotations

import csv
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from .model import Measurement
from .stats import Table
from .workers import Backend

CSV_FIELDS = [
    "record",
    "build",
    "gso",
    "sender",
    "variant",
    "heap_size",
    "packet",
    "packet_size",
    "packets_per_heap",
    "packet_split",
    "repeat",
    "position",
    "heaps",
    "payload_bytes",
    "elapsed_s",
    "mb_per_s",
    "mb_per_s_min",
    "mb_per_s_max",
    "sink_packets",
    "sink_packets_per_heap",
    "other_cpu",
]


def write_csv(
    path: Path, results: Sequence[Measurement], table: Table, backends: Mapping[str, Backend]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for m in results:
            writer.writerow(
                {
                    "record": "raw",
                    "build": m.slot.build,
                    "gso": int(backends[m.slot.build].gso),
                    "sender": m.slot.sender,
                    "variant": m.slot.variant,
                    "heap_size": m.config.heap_size,
                    "packet": m.config.packet,
                    "packet_size": m.packet_size,
                    "packets_per_heap": m.packets_per_heap,
                    "packet_split": m.packet_split,
                    "repeat": m.repeat + 1,
                    "position": m.position,
                    "heaps": m.heaps,
                    "payload_bytes": m.payload_bytes,
                    "elapsed_s": f"{m.elapsed:.6f}",
                    "mb_per_s": f"{m.mb_per_s:.3f}",
                    "sink_packets": "" if m.sink_packets is None else m.sink_packets,
                    "sink_packets_per_heap": (
                        "" if m.sink_packets is None else f"{m.sink_packets / m.heaps:.3f}"
                    ),
                    "other_cpu": "" if m.other_cpu is None else f"{m.other_cpu:.3f}",
                }
            )
        for (slot, config), stats in table.items():
            writer.writerow(
                {
                    "record": "median",
                    "build": slot.build,
                    "gso": int(backends[slot.build].gso),
                    "sender": slot.sender,
                    "variant": slot.variant,
                    "heap_size": config.heap_size,
                    "packet": config.packet,
                    "packet_size": stats.packet_size,
                    "packets_per_heap": stats.packets_per_heap,
                    "packet_split": stats.packet_split,
                    "mb_per_s": f"{stats.median:.3f}",
                    "mb_per_s_min": f"{stats.low:.3f}",
                    "mb_per_s_max": f"{stats.high:.3f}",
                    "sink_packets_per_heap": (
                        f"{statistics.median(stats.sink_per_heap):.3f}"
                        if stats.sink_per_heap
                        else ""
                    ),
                }
            )
