"""What /proc says about processes: resident memory, and how busy the rest of the machine is."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` in KiB (VmRSS), 0 if unknown."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class CpuMonitor:
    """How busy the rest of the machine was during a measurement (a noise indicator).

    From /proc/stat (user + nice + system + irq + softirq time of all CPUs)
    minus the user and system time of the given processes and of this one
    (/proc/PID/stat, all their threads, and their waited-for children, such as
    the C++ sender) and of the kernel's ksoftirqd threads (which may run the
    loopback receive path for us), in clock ticks, divided by the wall time:
    the average number of CPUs that other processes kept busy. Interrupt and
    softirq time counts as busy because a kernel without
    CONFIG_IRQ_TIME_ACCOUNTING books the softirq work done in a task's context
    (the loopback receive path) to that task as well; with that option the
    indicator reads a little high. It cannot see slowdowns from outside the
    machine (other guests on a virtual machine's host).
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = [*pids, os.getpid(), *self.softirq_threads()]
        self.hz = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def softirq_threads() -> list[int]:
        """The kernel's ksoftirqd threads: they may run our loopback receive path."""
        pids = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().startswith("ksoftirqd/"):
                        pids.append(int(entry))
            except (OSError, ValueError):
                continue
        return pids

    def snapshot(self) -> tuple[float, int] | None:
        """(time, busy ticks of other processes so far), or None without /proc."""
        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()
            # user, nice, system, and irq and softirq (see the class docstring)
            busy = sum(int(v) for v in fields[1:4]) + int(fields[6]) + int(fields[7])
            ours = 0
            for pid in self.pids:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read().rsplit(")", 1)[1].split()
                # utime, stime, cutime, cstime
                ours += int(stat[11]) + int(stat[12]) + int(stat[13]) + int(stat[14])
        except (OSError, ValueError, IndexError):
            return None
        return time.perf_counter(), busy - ours

    def other_cpus(
        self, before: tuple[float, int] | None, after: tuple[float, int] | None
    ) -> float | None:
        """CPUs kept busy by other processes between two snapshots."""
        if before is None or after is None or after[0] <= before[0]:
            return None
        return max(0.0, (after[1] - before[1]) / self.hz / (after[0] - before[0]))


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds `pid` (all its threads) has used, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
