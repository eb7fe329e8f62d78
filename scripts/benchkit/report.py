"""bench_send's tables: medians and ratios per build and sender, spreads, auto against
fixed packets, the targets, and the placement variants."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from .model import AUTO, CXX_BUILD, PYTHON_SENDERS, Config, Measurement, PacketMode, Slot
from .stats import Stats, Table, paired_ratios, ratio_range
from .units import format_size
from .workers import Backend

#: Measurements during which other processes used more CPUs than this count as noisy.
NOISY_CPUS = 0.1
#: The targets checked at the end of the main table.
TARGET_GSO_OVER_WHEEL = 2.0
TARGET_8K_MB_S = 5000.0
TARGET_AUTO_OVER_9000 = 1.3
#: The comparison with the C++ sender the project is judged on (9000-byte packets).
CXX_HEAP_SIZES = (8 << 10, 64 << 10, 1 << 20)
CONFIG_TITLES = ["heap", "packet", "size", "pkts/heap"]


def format_grid(groups: Sequence[tuple[str, Sequence[str]]], rows: Sequence[Sequence[str]]) -> str:
    """A right-aligned table: groups of columns (group title, column titles), ' | ' between."""
    titles = [title for _, columns in groups for title in columns]
    widths = [len(title) for title in titles]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=False)]
    start = 0
    for group, columns in groups:  # widen a group's columns to fit its title
        end = start + len(columns)
        short = len(group) - (sum(widths[start:end]) + len(columns) - 1)
        for i in range(max(0, short)):
            widths[end - 1 - i % len(columns)] += 1
        start = end
    top: list[str] = []
    heads: list[str] = []
    bodies: list[list[str]] = [[] for _ in rows]
    start = 0
    for group, columns in groups:
        span = widths[start : start + len(columns)]
        text = " ".join(f"{t:>{w}}" for t, w in zip(columns, span, strict=True))
        top.append(f"{group:^{len(text)}}")
        heads.append(text)
        for body, row in zip(bodies, rows, strict=True):
            cells = row[start : start + len(columns)]
            body.append(" ".join(f"{c:>{w}}" for c, w in zip(cells, span, strict=True)))
        start += len(columns)
    lines = [" | ".join(top).rstrip(), " | ".join(heads)]
    lines.append("-" * len(lines[1]))
    lines.extend(" | ".join(body) for body in bodies)
    return "\n".join(lines)


def per_build(values: Sequence[object]) -> str:
    """One value if all builds agree, else each build's, in build order, joined by '/'."""
    texts = [str(value) for value in values]
    if not texts:
        return "?"
    return texts[0] if len(set(texts)) == 1 else "/".join(texts)


def config_cells(config: Config, stats: Sequence[Stats]) -> list[str]:
    """Heap, packet mode, and the size and packets per heap used (per build if they differ)."""
    return [
        format_size(config.heap_size),
        str(config.packet),
        per_build([s.packet_size for s in stats]),
        per_build([s.packets_per_heap for s in stats]),
    ]


def fmt_rate(stats: Stats | None) -> str:
    return "-" if stats is None else f"{stats.median:.0f}"


def fmt_ratio(a: Stats | None, b: Stats | None) -> str:
    return "-" if a is None or b is None else f"{a.median / b.median:.2f}"


class Lookup:
    """Finds a sender's stats: the engine in the chosen variant, the others in default."""

    def __init__(self, table: Table, variant: str) -> None:
        self.table = table
        self.variant = variant

    def __call__(self, build: str | None, sender: str, config: Config) -> Stats | None:
        if sender == "cxx":
            return self.table.get((Slot(CXX_BUILD, "cxx"), config))
        if build is None:
            return None
        v = self.variant if sender == "engine" else "default"
        return self.table.get((Slot(build, sender, v), config))


def main_tables(
    table: Table,
    configs: Sequence[Config],
    builds: Sequence[str],
    senders: Sequence[str],
    variant: str,
) -> str:
    """Medians and ratios; spreads and packets seen at the sink; auto against 9000."""
    get = Lookup(table, variant)
    python = [s for s in senders if s in PYTHON_SENDERS]
    has_cxx = "cxx" in senders
    has_engine = "engine" in senders

    def build_stats(config: Config) -> list[Stats]:
        """The first sender's stats in each build (the packets it used)."""
        found = [get(build, python[0], config) for build in builds] if python else []
        if not python and has_cxx:
            found = [get(None, "cxx", config)]
        return [stats for stats in found if stats is not None]

    references = [r for r in ("plain", "tutorial", "cxx") if has_engine and r in senders]
    # Table 1: medians and ratios.
    groups: list[tuple[str, Sequence[str]]] = [("", CONFIG_TITLES)]
    groups += [(f"{build} (MB/s)", python) for build in builds if python]
    if has_cxx:
        groups.append(("C++", ["cxx"]))
    if has_engine and len(builds) > 1:
        groups.append(("engine", [f"{b}/{builds[0]}" for b in builds[1:]]))
    if references:
        for build in builds:
            groups.append((f"{build} ratios", [f"eng/{r[:4]}" for r in references]))
    rows = []
    for config in configs:
        row = config_cells(config, build_stats(config))
        for build in builds if python else []:
            row += [fmt_rate(get(build, sender, config)) for sender in python]
        if has_cxx:
            row.append(fmt_rate(get(None, "cxx", config)))
        if has_engine and len(builds) > 1:
            base = get(builds[0], "engine", config)
            row += [fmt_ratio(get(b, "engine", config), base) for b in builds[1:]]
        if references:
            for build in builds:
                engine = get(build, "engine", config)
                row += [fmt_ratio(engine, get(build, r, config)) for r in references]
        rows.append(row)
    parts = [format_grid(groups, rows)]
    # Table 2: spreads, and the packets per heap the sink saw (first sender of each build).
    groups = [("", CONFIG_TITLES[:2])]
    groups += [(f"{build} spread (max-min)/median", python) for build in builds if python]
    sink_columns = [f"{build}:{python[0]}" for build in builds] if python else []
    if has_cxx:
        groups.append(("C++ spread", ["cxx"]))
        sink_columns.append("cxx")
    groups.append(("sink pkts/heap", sink_columns))
    rows = []
    for config in configs:
        row = config_cells(config, [])[:2]
        for build in builds if python else []:
            for sender in python:
                stats = get(build, sender, config)
                row.append("-" if stats is None else f"{100 * stats.spread:.1f}%")
        if has_cxx:
            stats = get(None, "cxx", config)
            row.append("-" if stats is None else f"{100 * stats.spread:.1f}%")
        sink_stats = [get(build, python[0], config) for build in builds] if python else []
        if has_cxx:
            sink_stats.append(get(None, "cxx", config))
        for stats in sink_stats:
            seen = stats.sink_per_heap if stats else []
            row.append(f"{statistics.median(seen):.2f}" if seen else "-")
        rows.append(row)
    parts.append(format_grid(groups, rows))
    # Table 3: auto against 9000-byte packets (Python senders; the C++ one has no auto).
    autos = [c for c in configs if c.packet == AUTO and Config(c.heap_size, 9000) in configs]
    if autos and python:
        groups = [("", ["heap", "auto size"])]
        groups += [(f"{build}: auto / 9000", python) for build in builds]
        rows = []
        for config in autos:
            fixed = Config(config.heap_size, 9000)
            split = per_build([s.packet_split for s in build_stats(config)])
            row = [format_size(config.heap_size), split]
            for build in builds:
                row += [fmt_ratio(get(build, s, config), get(build, s, fixed)) for s in python]
            rows.append(row)
        parts.append(format_grid(groups, rows))
    return "\n\n".join(parts)


def targets(
    table: Table, backends: Sequence[Backend], variant: str, senders: Sequence[str]
) -> list[str]:
    """The targets, for the first GSO build against the first non-GSO one, and the
    engine against the C++ sender."""
    if "engine" not in senders:
        return []
    python = [b for b in backends if b.name != CXX_BUILD]
    gso = next((b.name for b in python if b.gso), None)
    wheel = next((b.name for b in python if not b.gso), None)
    lookup = Lookup(table, variant)

    def get(build: str | None, sender: str, heap_size: int, packet: PacketMode) -> Stats | None:
        return lookup(build, sender, Config(heap_size, packet))

    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    lines = [
        f"targets (engine variant {variant}; GSO build {gso or 'none'}, "
        f"non-GSO build {wheel or 'none'}):"
    ]
    a, b = get(gso, "engine", 1 << 20, 9000), get(wheel, "engine", 1 << 20, 9000)
    if a and b:
        lines.append(
            f"  1 MiB heaps, 9000-byte packets: engine {gso} {a.median:.0f} MB/s / {wheel} "
            f"{b.median:.0f} MB/s = {ratio_range(a, b)}; target >= {TARGET_GSO_OVER_WHEEL:g}: "
            f"{verdict(a.median / b.median >= TARGET_GSO_OVER_WHEEL)}"
        )
    else:
        lines.append("  1 MiB / 9000 gso/wheel: not measured (needs both builds and that config)")
    a = get(gso, "engine", 8 << 10, 9000)
    if a:
        refs = [
            f"{name} sender {tut.median:.0f} MB/s"
            for name, tut in (
                (f"tutorial on {gso}", get(gso, "tutorial", 8 << 10, 9000)),
                ("C++", get(gso, "cxx", 8 << 10, 9000)),
            )
            if tut
        ]
        ref = f" ({'; '.join(refs)})" if refs else ""
        lines.append(
            f"  8 KiB heaps, 9000-byte packets: engine {gso} {a.median:.0f} MB/s "
            f"(min {a.low:.0f}, max {a.high:.0f}){ref}; target >= {TARGET_8K_MB_S:.0f} MB/s: "
            f"{verdict(a.median >= TARGET_8K_MB_S)}"
        )
    else:
        lines.append("  8 KiB / 9000 on GSO: not measured")
    for build in (gso, wheel):
        a, b = get(build, "engine", 16 << 10, AUTO), get(build, "engine", 16 << 10, 9000)
        if a and b:
            lines.append(
                f"  16 KiB heaps, auto ({a.packet_split}) vs 9000-byte packets "
                f"({b.packet_split}), engine {build}: {a.median:.0f} / {b.median:.0f} MB/s = "
                f"{ratio_range(a, b)}"
                + (
                    f"; target >= {TARGET_AUTO_OVER_9000:g}: "
                    f"{verdict(a.median / b.median >= TARGET_AUTO_OVER_9000)}"
                    if build == gso
                    else " (no target without GSO)"
                )
            )
        elif build == gso:
            lines.append("  16 KiB auto vs 9000 on GSO: not measured")
    if "cxx" in senders:
        lines += cxx_comparison(lookup, gso)
    return lines


def cxx_comparison(get: Lookup, gso: str | None) -> list[str]:
    """dsim's engine on the GSO build against spead2's C++ sender, 9000-byte packets."""
    lines = [f"engine ({gso or 'no GSO build'}) / C++ sender, 9000-byte packets, same run:"]
    for heap_size in CXX_HEAP_SIZES:
        config = Config(heap_size, 9000)
        a, b = get(gso, "engine", config), get(None, "cxx", config)
        if a and b:
            wins = paired_ratios(a, b)
            lines.append(
                f"  {format_size(heap_size):>7} heaps: {a.median:.0f} / {b.median:.0f} MB/s = "
                f"{ratio_range(a, b)}; paired by repeat "
                f"{min(wins):.2f}-{max(wins):.2f}"
            )
        else:
            lines.append(f"  {format_size(heap_size):>7} heaps: not measured")
    return lines


def placement_table(
    table: Table, configs: Sequence[Config], builds: Sequence[str], variants: Sequence[str]
) -> str:
    """Each engine variant against the default of the same build, paired by repetition."""
    groups: list[tuple[str, Sequence[str]]] = [
        ("", ["build", "heap", "packet", "size", "variant"]),
        ("MB/s", ["median", "min", "max", "spread"]),
        ("vs default (paired by repeat)", ["median", "min", "max", "wins"]),
    ]
    rows = []
    summary: dict[tuple[str, str], list[float]] = {}
    for build in builds:
        for config in configs:
            base = table.get((Slot(build, "engine", "default"), config))
            for variant in variants:
                stats = table.get((Slot(build, "engine", variant), config))
                if stats is None or base is None:
                    continue
                row = [
                    build,
                    format_size(config.heap_size),
                    str(config.packet),
                    str(stats.packet_size),
                    variant,
                    f"{stats.median:.0f}",
                    f"{stats.low:.0f}",
                    f"{stats.high:.0f}",
                    f"{100 * stats.spread:.1f}%",
                ]
                if variant == "default":
                    row += ["", "", "", ""]
                else:
                    ratios = paired_ratios(stats, base)
                    summary.setdefault((build, variant), []).append(statistics.median(ratios))
                    wins = sum(r > 1 for r in ratios)
                    row += [
                        f"{statistics.median(ratios):.3f}",
                        f"{min(ratios):.3f}",
                        f"{max(ratios):.3f}",
                        f"{wins}/{len(ratios)}",
                    ]
                rows.append(row)
    parts = [format_grid(groups, rows)]
    groups = [
        ("", ["build", "variant"]),
        ("median paired ratio vs default", ["geomean", "min", "max"]),
    ]
    rows = []
    for (build, variant), ratios in summary.items():
        geomean = math.exp(statistics.fmean(math.log(r) for r in ratios))
        rows.append([build, variant, f"{geomean:.3f}", f"{min(ratios):.3f}", f"{max(ratios):.3f}"])
    if rows:
        parts.append("over the configurations above:\n" + format_grid(groups, rows))
    return "\n\n".join(parts)


def noise_summary(results: Sequence[Measurement]) -> str:
    """How busy other processes kept the machine during the measurements."""
    seen = [m.other_cpu for m in results if m.other_cpu is not None]
    if not seen:
        return "other processes' CPU use: unknown (no /proc)"
    busy = sum(value > NOISY_CPUS for value in seen)
    return (
        f"other processes' CPU use during the measurements: median {statistics.median(seen):.2f}, "
        f"max {max(seen):.2f} CPUs; {busy} of {len(seen)} measurements above {NOISY_CPUS:g}"
    )
