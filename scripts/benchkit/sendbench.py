"""bench_send's run: start the backends, measure, print the tables, write CSV and plot."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence

from . import REPO_ROOT, progress
from .csvout import write_csv
from .cxx import CxxSender, find_binary
from .model import CXX_BUILD, PYTHON_SENDERS, SENDERS, BenchError, Slot
from .net import UdpSink
from .plot import write_plot
from .report import main_tables, noise_summary, placement_table, targets
from .runner import Plan, Runner
from .stats import tabulate
from .variants import explain_variant, parse_variant
from .workers import Backend, WorkerProcess, start_workers

BUILD_HINT = "build it with scripts/build_cxx_sender.sh .venv-gso"


def git_state() -> str:
    """``git describe`` of the tree, and whether dsim/ has uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "dsim"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + (" (dsim/ has uncommitted changes)" if dirty else "")


def cxx_backend(
    args: argparse.Namespace, workers: dict[str, WorkerProcess], wanted: bool
) -> CxxSender | None:
    """The C++ sender for the GSO build's spead2 version (else the first build's), if any."""
    if args.cxx is not None:
        return CxxSender(args.cxx.resolve())
    first = next((w for w in workers.values() if w.gso), next(iter(workers.values()), None))
    binary = find_binary(first.info["spead2"] if first else None)
    if binary is None:
        if wanted:
            raise BenchError(f"no C++ sender in .cache/cxx-sender: {BUILD_HINT}")
        progress(f"C++ sender not built, left out ({BUILD_HINT})")
        return None
    return CxxSender(binary)


def make_slots(
    args: argparse.Namespace, senders: Sequence[str], builds: Sequence[str]
) -> list[Slot]:
    """Every build x sender (the C++ sender once); with --placement, build x variant."""
    if args.placement:
        return [Slot(b, "engine", v) for v in args.variants for b in builds]
    slots = []
    for sender in senders:
        if sender == "cxx":
            slots.append(Slot(CXX_BUILD, "cxx"))
            continue
        variant = args.engine_variant if sender == "engine" else "default"
        slots += [Slot(build, sender, variant) for build in builds]
    return slots


def header(args: argparse.Namespace, tree: str, backends: Sequence[Backend]) -> list[str]:
    lines = [f"# {tree}"]
    lines += [f"# build {backend.describe()}" for backend in backends]
    versions = {b.info.get("spead2") for b in backends}
    if len(versions) > 1 and any(b.name == CXX_BUILD for b in backends):
        lines.append(
            f"# NOTE: spead2 versions differ between the builds: {sorted(map(str, versions))}"
        )
    lines.append(
        f"# machine: {os.cpu_count()} CPUs, kernel {platform.release()}; sink 127.0.0.1 "
        f"(unread UDP socket); medians of {args.repeats} interleaved repeats, "
        + (f"~{args.seconds:g} s each" if args.bytes is None else f"{args.bytes} bytes each")
    )
    send_core = args.send_core if args.send_core is not None else "not pinned"
    lines.append(
        f"# MB/s = 10^6 payload bytes/s; spead2 send thread: {send_core} unless the variant "
        f"pins it; packet 'auto' = engine picks (max {args.max_packet_size}), plain and "
        "tutorial run at the engine's size and repeat_pointers setting"
    )
    return lines


def run(args: argparse.Namespace) -> int:
    """The whole benchmark; 0 on success, 1 if a measurement failed."""
    # Recorded before measuring: workers import dsim at start-up, so this is the code
    # measured even if the tree is edited or committed while the benchmark runs.
    tree = f"dsim at {git_state()}"
    requested = args.senders
    senders: Sequence[str] = requested or SENDERS
    if args.placement:
        senders = ("engine",)
    sink = UdpSink()
    backends: dict[str, Backend] = {}
    try:
        workers: dict[str, WorkerProcess] = {}
        if any(s in PYTHON_SENDERS for s in senders):
            workers = start_workers(args.pythons)
        backends.update(workers)
        builds = list(workers)
        if "cxx" in senders:
            try:
                cxx = cxx_backend(args, workers, wanted=requested is not None)
            except BenchError as exc:
                print(f"FAILED: {exc}", file=sys.stderr)
                return 1
            if cxx is None:
                senders = [s for s in senders if s != "cxx"]
            else:
                backends[CXX_BUILD] = cxx
                progress(f"worker {cxx.describe()}")
        slots = make_slots(args, senders, builds)
        plan = Plan(
            heap_sizes=args.heap_sizes,
            packet_sizes=args.packet_sizes,
            repeats=args.repeats,
            seconds=args.seconds,
            bytes=args.bytes,
            max_packet_size=args.max_packet_size,
            send_core=args.send_core,
            plain_in_flight=args.plain_in_flight,
        )
        runner = Runner(plan, sink, backends, slots)
        sizing = (
            f"~{args.seconds:g} s per measurement (calibrated)"
            if args.bytes is None
            else f"{args.bytes} payload bytes per measurement"
        )
        progress(
            f"sink 127.0.0.1:{sink.port}; {len(runner.configs)} configurations x "
            f"{len(slots)} slots x {args.repeats} repeats, {sizing}"
        )
        started = time.perf_counter()
        try:
            results = runner.run()
        except BenchError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        total = time.perf_counter() - started
    finally:
        for backend in backends.values():
            backend.close()
        sink.close()

    table = tabulate(results)
    for line in header(args, tree, list(backends.values())):
        print(line)
    print(f"# {noise_summary(results)}")
    now = f"dsim at {git_state()}"
    if now != tree:
        print(
            f"# WARNING: the dsim tree changed during the run ({now} at the end); "
            "the results are for the state above, imported at start-up"
        )
    if args.placement:
        print(
            "# engine only; variants: "
            + "; ".join(explain_variant(parse_variant(v)) for v in args.variants)
        )
        print(placement_table(table, runner.configs, builds, args.variants))
        write_csv(args.csv, results, table, backends)
    else:
        print(f"# engine variant: {explain_variant(parse_variant(args.engine_variant))}")
        print(main_tables(table, runner.configs, builds, senders, args.engine_variant))
        print()
        for line in targets(table, list(backends.values()), args.engine_variant, senders):
            print(line)
        write_csv(args.csv, results, table, backends)
        send_core = args.send_core if args.send_core is not None else "not pinned"
        title = "\n".join(
            [
                f"dsim send throughput to an unread UDP socket on 127.0.0.1 "
                f"(medians of {args.repeats}; engine variant {args.engine_variant}; "
                f"send thread {send_core}); {tree}",
                "; ".join(
                    f"{b.name}: spead2 {b.info['spead2']} {'GSO' if b.gso else 'no GSO'}"
                    for b in backends.values()
                ),
            ]
        )
        plotted = write_plot(
            args.plot, table, runner.configs, builds, senders, args.engine_variant, title
        )
        print(f"# plot: {args.plot}" if plotted else "# plot: skipped (no matplotlib here)")
    print(f"# CSV:  {args.csv}")
    print(f"# benchmark time {total:.1f} s")
    return 0
