"""The send benchmark's vocabulary: configurations, slots, requests and measurements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .units import format_size

AUTO: Literal["auto"] = "auto"
#: A forced packet size in bytes, or "auto" (the engine picks; see docs/benchmarks.md).
PacketMode = int | Literal["auto"]
#: Every sender, in the order tables show them. "cxx" is spead2's C++ tutorial program.
SENDERS = ("engine", "plain", "tutorial", "cxx")
#: Senders that run inside a Python worker (one per spead2 build).
PYTHON_SENDERS = ("engine", "plain", "tutorial")
#: The build name of the C++ sender's slot (it is one binary, not a Python build).
CXX_BUILD = "c++"


class BenchError(RuntimeError):
    """A measurement whose result cannot be trusted (send errors, wrong counts)."""


@dataclass(frozen=True)
class Config:
    """What is sent: heap size and packet size (or auto)."""

    heap_size: int
    packet: PacketMode


@dataclass(frozen=True)
class Slot:
    """Who is measured: a build's worker, a sender, and (for the engine) a variant."""

    build: str
    sender: str
    variant: str = "default"

    def label(self) -> str:
        variant = f"[{self.variant}]" if self.sender == "engine" else ""
        return f"{self.build}:{self.sender}{variant}"

    def measures(self, config: Config) -> bool:
        """Whether this slot runs in `config` (the C++ program cannot repeat pointers,
        so it has no 'auto' packet mode)."""
        return not (self.sender == "cxx" and config.packet == AUTO)


@dataclass(frozen=True)
class RunRequest:
    """One measurement, as sent to a worker (a JSON object with these fields)."""

    sender: str
    variant: str
    heap_size: int
    packet: PacketMode
    max_packet_size: int
    heaps: int
    port: int
    send_core: int | None
    plain_in_flight: int


@dataclass(frozen=True)
class Measurement:
    """One timed run of one slot in one configuration."""

    slot: Slot
    config: Config
    repeat: int
    position: int  # 1-based place of this slot in the configuration's round
    heaps: int
    elapsed: float
    sink_packets: int | None
    packet_size: int  # actually used
    packets_per_heap: int  # of a data heap, from spead2's PacketGenerator
    packet_split: str  # e.g. "2x8248" or "1x9000+1x7480"
    other_cpu: float | None  # CPUs used by other processes meanwhile (see CpuMonitor)

    @property
    def payload_bytes(self) -> int:
        return self.heaps * self.config.heap_size

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / self.elapsed / 1e6


def describe(heap_size: int, packet: PacketMode) -> str:
    """``"8 KiB heaps, 9000-byte packets"``."""
    packets = "auto-sized packets" if packet == AUTO else f"{packet}-byte packets"
    return f"{format_size(heap_size)} heaps, {packets}"
