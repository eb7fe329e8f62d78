"""bench_send's plot: MB/s against heap size, one subplot per build (needs matplotlib).

One line per sender and packet size, bars from the slowest to the fastest
repetition; the C++ sender, one binary, appears in every subplot for reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .model import AUTO, CXX_BUILD, Config, Slot
from .stats import Table
from .units import format_size

STYLES = {"engine": ("-", "o"), "plain": ("--", "s"), "tutorial": (":", "^"), "cxx": ("-.", "D")}


def write_plot(
    path: Path,
    table: Table,
    configs: Sequence[Config],
    builds: Sequence[str],
    senders: Sequence[str],
    variant: str,
    title: str,
) -> bool:
    """Write the plot; False if matplotlib is missing in this interpreter."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    heap_sizes = sorted({c.heap_size for c in configs})
    packets = list(dict.fromkeys(c.packet for c in configs))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = list(builds) or [CXX_BUILD]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(6.5 * len(panels), 5.5),
        sharey=True,
        layout="constrained",
        squeeze=False,
    )
    for ax, build in zip(axes[0], panels, strict=True):
        for p_index, packet in enumerate(packets):
            for sender in senders:
                if sender == "cxx":
                    slot = Slot(CXX_BUILD, "cxx")
                else:
                    slot = Slot(build, sender, variant if sender == "engine" else "default")
                points = [
                    (c.heap_size, table[(slot, c)])
                    for c in configs
                    if c.packet == packet and (slot, c) in table
                ]
                if not points:
                    continue
                linestyle, marker = STYLES[sender]
                name = "auto-sized" if packet == AUTO else f"{packet}-byte"
                ax.errorbar(
                    [x for x, _ in points],
                    [s.median for _, s in points],
                    yerr=[
                        [s.median - s.low for _, s in points],
                        [s.high - s.median for _, s in points],
                    ],
                    linestyle=linestyle,
                    marker=marker,
                    capsize=3,
                    color=colours[p_index % len(colours)],
                    label=f"{'C++ (GSO)' if sender == 'cxx' else sender}, {name} packets",
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(heap_sizes)
        ax.set_xticklabels([format_size(h) for h in heap_sizes])
        ax.minorticks_off()
        ax.set_xlabel("heap size")
        ax.grid(True, alpha=0.3)
        ax.set_title(build)
        ax.legend(fontsize=7)
    top = max((s.high for s in table.values()), default=1.0)
    axes[0][0].set_ylim(0, 1.05 * top)  # shared by all subplots
    axes[0][0].set_ylabel("payload throughput (MB/s, median; bars: min-max)")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
