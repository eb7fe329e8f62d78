"""Memory as the kernel sees it: how much this process may still take, and giving it back.

Windows are large (about 1.5 bytes per sample per polarisation, 11 while they
render), so dsim refuses a window that would not fit rather than be killed by
the OOM killer halfway through a render. In a container that means the
cgroup's limit, not the host's free memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")


def available_memory() -> int:
    """Bytes this process can still allocate without swapping or being killed.

    The kernel's ``MemAvailable`` (free memory plus the page cache it can
    reclaim), and no more than any enclosing cgroup (v2) limit leaves.
    """
    room = _mem_available()
    for limit in _cgroup_rooms():
        room = min(room, limit)
    return room


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    # Not Linux, or an old kernel: free pages only.
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _cgroup_rooms() -> list[int]:
    """What the memory limit leaves, for this process's cgroup and each above it.

    cgroup v2 (``memory.max``) and the v1 memory controller (``memory.limit_in_bytes``,
    still what Docker uses on older hosts) are both read; a group that cannot be read
    is skipped.
    """
    try:
        lines = _PROC_CGROUP.read_text().splitlines()
    except OSError:
        return []
    rooms = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            root, files = _CGROUP_ROOT, ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            root, files = (
                _CGROUP_ROOT / "memory",
                ("memory.limit_in_bytes", "memory.usage_in_bytes"),
            )
        else:
            continue
        group = root / path.strip().lstrip("/")
        while True:
            room = _room(group, *files)
            if room is not None:
                rooms.append(room)
            if group == root or root not in group.parents:
                break
            group = group.parent
    return rooms


def _room(group: Path, limit_file: str, usage_file: str) -> int | None:
    try:
        limit = (group / limit_file).read_text().strip()
        if limit == "max" or int(limit) >= 1 << 62:  # no limit (v1 writes a huge number)
            return None
        return max(0, int(limit) - int((group / usage_file).read_text()))
    except (OSError, ValueError):
        return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


def trim_memory() -> None:
    """Return freed heap memory to the system (glibc keeps it otherwise: measured, a
    window's worth of render scratch per ``?signals``)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
