"""The per-build worker process: measures one request at a time in its own spead2 build.

``python -m benchkit.worker`` (run by :class:`benchkit.workers.WorkerProcess`)
answers JSON lines on stdin/stdout: first a hello (Python, spead2 and numpy
versions, whether spead2 sends with GSO, where dsim came from), then one reply
per :class:`~benchkit.model.RunRequest` with the elapsed time, the packet size
used and the packets per heap. The timer runs here, around the sender's
``send`` only; building the sender and its stream happens before it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import spead2

from .engine_sender import EngineSender, auto_choice, uses_gso
from .model import AUTO, BenchError, RunRequest, describe
from .reference import PlainSender, TutorialSender, packet_split, split_text
from .variants import Variant, parse_variant


class Sender(Protocol):
    """What the worker needs of a sender; construction happens outside the timer."""

    packet_size: int
    repeat_pointers: bool

    async def send(self, heaps: int) -> None: ...

    async def close(self) -> None: ...

    def check(self, heaps: int) -> list[str]: ...


class Worker:
    """Measures one request at a time, in this process's spead2 build."""

    def __init__(self) -> None:
        self.all_cores = os.sched_getaffinity(0)
        self._splits: dict[tuple[int, int, bool], list[int]] = {}

    def hello(self) -> dict[str, Any]:
        import dsim

        return {
            "executable": sys.executable,
            "python": platform.python_version(),
            "spead2": spead2.__version__,
            "numpy": np.__version__,
            "gso": uses_gso(),
            "dsim": str(Path(dsim.__file__).resolve().parent),
            "pid": os.getpid(),
        }

    def packet_split(self, heap_size: int, packet_size: int, repeat_pointers: bool) -> list[int]:
        """Sizes of the packets of one data heap (cached)."""
        key = (heap_size, packet_size, repeat_pointers)
        if key not in self._splits:
            self._splits[key] = packet_split(heap_size, packet_size, repeat_pointers)
        return self._splits[key]

    def make_sender(self, request: RunRequest, variant: Variant) -> Sender:
        send_core = request.send_core
        if request.sender == "engine":
            return EngineSender(
                request.port,
                request.heap_size,
                None if request.packet == AUTO else int(request.packet),
                request.max_packet_size,
                variant.send_core if variant.send_core is not None else send_core,
                batch_bytes=variant.batch_bytes,
                batches=variant.batches,
            )
        if request.packet == AUTO:
            # The size the engine picks, with its pointers.
            packet_size, repeat_pointers = auto_choice(request.heap_size, request.max_packet_size)
        else:
            packet_size, repeat_pointers = int(request.packet), False
        if request.sender == "plain":
            return PlainSender(
                request.port,
                request.heap_size,
                packet_size,
                repeat_pointers,
                request.plain_in_flight,
                send_core,
            )
        if request.sender == "tutorial":
            return TutorialSender(
                request.port, request.heap_size, packet_size, repeat_pointers, send_core
            )
        raise BenchError(f"unknown sender {request.sender!r}")

    @contextmanager
    def placed(self, variant: Variant) -> Iterator[None]:
        """Apply the variant's Python-thread placement and GC setting, and undo them."""
        try:
            if variant.python_core is not None:
                os.sched_setaffinity(0, {variant.python_core})
            if variant.gc_freeze:
                gc.collect()
                gc.freeze()
                gc.disable()
            yield
        finally:
            if variant.gc_freeze:
                gc.enable()
                gc.unfreeze()
            if variant.python_core is not None:
                os.sched_setaffinity(0, self.all_cores)

    async def run(self, request: RunRequest) -> dict[str, Any]:
        """Build the sender, time its send of `request.heaps` heaps, check it, close it."""
        what = f"{request.sender} {describe(request.heap_size, request.packet)}"
        variant = parse_variant(request.variant)
        gc.collect()  # start every measurement from the same garbage state
        sender = self.make_sender(request, variant)
        try:
            with self.placed(variant if request.sender == "engine" else Variant("default")):
                start = time.perf_counter()
                try:
                    await sender.send(request.heaps)
                except (RuntimeError, OSError) as exc:
                    raise BenchError(f"{what}: send failed: {exc}") from exc
                elapsed = time.perf_counter() - start
        finally:
            await sender.close()
        problems = sender.check(request.heaps)
        if problems:
            raise BenchError(f"{what}: " + "; ".join(problems))
        split = self.packet_split(request.heap_size, sender.packet_size, sender.repeat_pointers)
        return {
            "ok": True,
            "elapsed": elapsed,
            "heaps": request.heaps,
            "packet_size": sender.packet_size,
            "repeat_pointers": sender.repeat_pointers,
            "packets_per_heap": len(split),
            "packet_split": split_text(split),
        }


def main() -> int:
    """Serve JSON-line requests on stdin; replies on stdout (everything else to stderr)."""
    replies: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray output (Python or C) must not corrupt the protocol
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = Worker()

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    reply({"ok": True, "hello": worker.hello()})
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("op") == "quit":
            break
        try:
            request = RunRequest(**message["request"])
            reply(loop.run_until_complete(worker.run(request)))
        except Exception as exc:  # reported to the orchestrator, which stops the run
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
