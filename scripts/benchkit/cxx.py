"""spead2's C++ tutorial sender ("batched heaps") as a benchmark backend.

``scripts/build_cxx_sender.sh`` builds ``tut_11_send_batch_heaps`` from the
source of the installed spead2 version, with GSO, into ``.cache/cxx-sender/``.
Each measurement runs it as a subprocess against the same unread sink as the
Python senders (``-n HEAPS -p PACKET -H HEAP 127.0.0.1 PORT``) and reads the
``MB/s`` line it prints; its own timer covers its batch loop, from the first
batch to the last completion (not process start-up, nor its end heap). The
program pins spead2's thread to core 0 and its main thread to core 1.

Its heaps differ from the Python senders' in two small ways: the SPEAD-64-40
flavour (5-byte immediate timestamp; the same 8-byte item pointers, so the same
packet sizes) and no ``repeat_pointers`` (so it has no 'auto' packet mode).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from . import LOCALHOST, REPO_ROOT
from .model import CXX_BUILD, BenchError, RunRequest
from .reference import packet_split, split_text

PROGRAM = "tut_11_send_batch_heaps"
CACHE = REPO_ROOT / ".cache" / "cxx-sender"
_RATE = re.compile(r"^\s*([0-9.eE+-]+) MB/s\s*$", re.MULTILINE)


def find_binary(spead2_version: str | None = None) -> Path | None:
    """The C++ sender built for `spead2_version`, else the last one built, else None."""
    candidates = [CACHE / PROGRAM]
    if spead2_version:
        candidates.insert(0, CACHE / f"spead2-{spead2_version}" / PROGRAM)
    for path in candidates:
        if path.is_file():
            return path.resolve()
    return None


def build_info(binary: Path) -> dict[str, str]:
    """What BUILD-INFO beside the binary says (``spead2``, ``gso check``, ...)."""
    info: dict[str, str] = {}
    try:
        lines = (binary.parent / "BUILD-INFO").read_text().splitlines()
    except OSError:
        return info
    for line in lines:
        key, sep, value = line.partition(": ")
        if sep:
            info[key] = value
        elif line.startswith("spead2 "):
            info["spead2"] = line.split(" ", 1)[1]
    return info


class CxxSender:
    """Runs the C++ sender once per measurement (a :class:`benchkit.workers.Backend`)."""

    name = CXX_BUILD
    gso = True  # build_cxx_sender.sh refuses to leave a binary that does not use GSO

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.info: dict[str, Any] = dict(build_info(binary))
        self.info.setdefault("spead2", "unknown")

    @property
    def pid(self) -> int | None:
        return None  # a new process per measurement, counted as our child by CpuMonitor

    def run(self, request: RunRequest) -> dict[str, Any]:
        """One run of the program; the elapsed time is derived from the rate it prints."""
        if not isinstance(request.packet, int):
            raise BenchError("the C++ sender needs a fixed packet size")
        command = [
            str(self.binary),
            "-n",
            str(request.heaps),
            "-p",
            str(request.packet),
            "-H",
            str(request.heap_size),
            LOCALHOST,
            str(request.port),
        ]
        payload = request.heaps * request.heap_size
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=60 + payload / 50e6
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BenchError(f"C++ sender: {exc}") from exc
        match = _RATE.search(done.stdout)
        if done.returncode != 0 or match is None:
            raise BenchError(
                f"C++ sender exited with status {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-300:]}"
            )
        rate = float(match.group(1)) * 1e6
        split = packet_split(request.heap_size, request.packet, False)
        return {
            "ok": True,
            "elapsed": payload / rate,
            "heaps": request.heaps,
            "packet_size": request.packet,
            "repeat_pointers": False,
            "packets_per_heap": len(split),
            "packet_split": split_text(split),
        }

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return (
            f"{self.name} = {self.binary}: spead2 {self.info['spead2']} C++ tutorial sender "
            f"(GSO; threads pinned to cores 0 and 1)"
        )
