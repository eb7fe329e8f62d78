"""The orchestrator's side of the worker processes: one per spead2 build (interpreter).

Each worker is ``PYTHON -m benchkit.worker`` with this repository's root and
``scripts/`` first on ``PYTHONPATH``, so every build imports the dsim of this
tree. The orchestrator is idle while a worker measures; the other workers are
blocked reading their stdin.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Protocol

from . import REPO_ROOT, progress
from .model import BenchError, RunRequest

SCRIPTS = REPO_ROOT / "scripts"


class Backend(Protocol):
    """Something that runs measurements: a Python worker, or the C++ sender."""

    name: str
    gso: bool
    info: dict[str, Any]

    @property
    def pid(self) -> int | None: ...

    def run(self, request: RunRequest) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


class WorkerProcess:
    """A persistent worker in one interpreter (one spead2 build)."""

    def __init__(self, name: str | None, python: str) -> None:
        self.python = python
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        paths = [str(REPO_ROOT), str(SCRIPTS)] + ([path] if path else [])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        self.proc = subprocess.Popen(
            [python, "-m", "benchkit.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        self.info: dict[str, Any] = self._receive(f"starting {python}")["hello"]
        self.gso: bool = bool(self.info["gso"])
        self.name: str = name if name is not None else ("gso" if self.gso else "nogso")

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def _receive(self, what: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            status = self.proc.wait()
            raise BenchError(f"worker {self.python} exited (status {status}) while {what}")
        message: dict[str, Any] = json.loads(line)
        if not message.get("ok"):
            raise BenchError(f"{what}: {message.get('error')}")
        return message

    def run(self, request: RunRequest) -> dict[str, Any]:
        """One measurement (blocks until the worker answers)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": "run", "request": asdict(request)}) + "\n")
        self.proc.stdin.flush()
        return self._receive(f"{self.name} {request.sender}[{request.variant}]")

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()

    def describe(self) -> str:
        info = self.info
        return (
            f"{self.name} = {self.python}: python {info['python']}, spead2 {info['spead2']} "
            f"({'GSO' if info['gso'] else 'no GSO'}), numpy {info['numpy']}, "
            f"dsim from {info['dsim']}"
        )


def start_workers(pythons: Sequence[tuple[str | None, str]]) -> dict[str, WorkerProcess]:
    """A worker per interpreter, keyed by build name (made unique); all closed on failure."""
    workers: dict[str, WorkerProcess] = {}
    try:
        for name, python in pythons:
            worker = WorkerProcess(name, python)
            if worker.name in workers:
                worker.name += f"-{len(workers) + 1}"
            workers[worker.name] = worker
            progress(f"worker {worker.describe()}")
    except BaseException:
        for worker in workers.values():
            worker.close()
        raise
    return workers
