"""The send benchmark's schedule: calibration, then interleaved repetitions of every slot.

For each repetition (outermost loop) every configuration is measured once, in
every slot back to back; the order of the slots is rotated by one place between
consecutive configurations and repetitions, so slow spells of a shared machine
hit all slots alike. Heap counts are fixed per slot and configuration before
the repetitions: either calibrated to about ``--seconds`` (doubling probes, which
also warm up) or ``--bytes`` per run for everyone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import progress
from .model import Config, Measurement, PacketMode, RunRequest, Slot, describe
from .net import UdpSink
from .procstat import CpuMonitor
from .workers import Backend

#: Fewest heaps in one measurement, so that start-up costs stay small.
MIN_HEAPS = 8


@dataclass(frozen=True)
class Plan:
    """What the runner does; from bench_send's options."""

    heap_sizes: Sequence[int]
    packet_sizes: Sequence[PacketMode]
    repeats: int
    seconds: float | None  # per measurement, calibrated; or
    bytes: int | None  # fixed payload per measurement
    max_packet_size: int
    send_core: int | None
    plain_in_flight: int


class Runner:
    """Runs a :class:`Plan` over slots, each measured by its build's backend."""

    def __init__(
        self, plan: Plan, sink: UdpSink, backends: Mapping[str, Backend], slots: list[Slot]
    ) -> None:
        self.plan = plan
        self.sink = sink
        self.backends = backends
        self.slots = slots
        configs = [Config(h, p) for h in plan.heap_sizes for p in plan.packet_sizes]
        #: The configurations some slot measures (the C++ sender alone has no 'auto').
        self.configs = [c for c in configs if any(slot.measures(c) for slot in slots)]
        pids = [b.pid for b in backends.values() if b.pid is not None]
        self.monitor = CpuMonitor(pids)

    def request(self, slot: Slot, config: Config, heaps: int) -> RunRequest:
        return RunRequest(
            sender=slot.sender,
            variant=slot.variant,
            heap_size=config.heap_size,
            packet=config.packet,
            max_packet_size=self.plan.max_packet_size,
            heaps=heaps,
            port=self.sink.port,
            send_core=self.plan.send_core,
            plain_in_flight=self.plan.plain_in_flight,
        )

    def elapsed(self, slot: Slot, config: Config, heaps: int) -> float:
        reply = self.backends[slot.build].run(self.request(slot, config, heaps))
        return float(reply["elapsed"])

    def calibrate(self, slot: Slot, config: Config, seconds: float) -> int:
        """Heap count that takes about `seconds` (doubling probes, also a warm-up)."""
        probe = seconds / 4
        heaps = max(2, -(-(256 << 10) // config.heap_size))
        while True:
            elapsed = self.elapsed(slot, config, heaps)
            if elapsed >= probe:
                break
            factor = 2.0 if elapsed <= 0 else min(16.0, max(2.0, 1.2 * probe / elapsed))
            heaps = math.ceil(heaps * factor)
        return max(MIN_HEAPS, math.ceil(heaps * seconds / elapsed))

    def heap_counts(self) -> dict[tuple[Slot, Config], int]:
        counts: dict[tuple[Slot, Config], int] = {}
        fixed = self.plan.bytes
        for config in self.configs:
            for slot in self.slots:
                if not slot.measures(config):
                    continue
                if fixed is not None:
                    heaps = max(1, -(-fixed // config.heap_size))
                    self.elapsed(slot, config, MIN_HEAPS)  # warm-up
                else:
                    assert self.plan.seconds is not None
                    heaps = self.calibrate(slot, config, self.plan.seconds)
                counts[(slot, config)] = heaps
                how = "fixed" if fixed is not None else "calibrated"
                progress(
                    f"{how} {slot.label():28s} {describe(config.heap_size, config.packet)}: "
                    f"{heaps} heaps ({heaps * config.heap_size / 1e6:.0f} MB)"
                )
        return counts

    def measure(
        self, slot: Slot, config: Config, heaps: int, repeat: int, position: int
    ) -> Measurement:
        cpu_before = self.monitor.snapshot()
        before = self.sink.drops()
        reply = self.backends[slot.build].run(self.request(slot, config, heaps))
        after = self.sink.drops()
        other_cpu = self.monitor.other_cpus(cpu_before, self.monitor.snapshot())
        packets = after - before if before is not None and after is not None else None
        return Measurement(
            slot=slot,
            config=config,
            repeat=repeat,
            position=position,
            heaps=heaps,
            elapsed=float(reply["elapsed"]),
            sink_packets=packets,
            packet_size=int(reply["packet_size"]),
            packets_per_heap=int(reply["packets_per_heap"]),
            packet_split=str(reply["packet_split"]),
            other_cpu=other_cpu,
        )

    def run(self) -> list[Measurement]:
        """Every measurement, in the order taken."""
        counts = self.heap_counts()
        results: list[Measurement] = []
        for repeat in range(self.plan.repeats):
            for index, config in enumerate(self.configs):
                slots = [slot for slot in self.slots if slot.measures(config)]
                shift = (repeat + index) % len(slots)
                order = slots[shift:] + slots[:shift]
                round_: list[Measurement] = []
                for position, slot in enumerate(order, start=1):
                    m = self.measure(slot, config, counts[(slot, config)], repeat, position)
                    round_.append(m)
                    results.append(m)
                rates = ", ".join(f"{m.slot.label()} {m.mb_per_s:.0f}" for m in round_)
                progress(
                    f"rep {repeat + 1}/{self.plan.repeats} "
                    f"{describe(config.heap_size, config.packet)} (MB/s): {rates}"
                )
        return results
