"""dsim and its verifier as child processes: dsim's katcp port found out, logs drained.

dsim logs ``katcp server listening on HOST:PORT`` at INFO. With a quieter log
level (or a changed message) the port is read instead from the kernel: the TCP
socket the process listens on (/proc/net/tcp and its file descriptors). Both are
tried until one answers. Once started, dsim's stderr is drained in the
background (a full pipe would block dsim) and the last lines kept for errors.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dsim.array import katcp_address_from_log

START_TIMEOUT = 20.0


def verifier_module() -> str:
    """The module that runs dsim-verify: ``dsim.verify`` (a package with ``__main__``),
    else the older ``dsim.verify_cli``."""
    try:
        if importlib.util.find_spec("dsim.verify.__main__") is not None:
            return "dsim.verify"
    except ImportError:  # dsim.verify is a plain module
        pass
    return "dsim.verify_cli"


async def drain_lines(reader: asyncio.StreamReader, tail: collections.deque[str]) -> None:
    """Read `reader` to its end, keeping the last lines in `tail` (a full pipe would block
    the child process)."""
    while raw := await reader.readline():
        tail.append(raw.decode(errors="replace"))


def listening_tcp_port(pid: int) -> int | None:
    """The TCP port process `pid` listens on (IPv4), or None if none yet."""
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    for fd in fds:
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if m := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(m.group(1))
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # state LISTEN
            return int(fields[1].split(":")[1], 16)
    return None


class DsimProcess:
    """A running ``python -m dsim`` and its katcp port; use :meth:`start`."""

    def __init__(self, proc: asyncio.subprocess.Process, katcp_port: int) -> None:
        self.proc = proc
        self.katcp_port = katcp_port
        self.log_tail: collections.deque[str] = collections.deque(maxlen=50)
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(
        cls, args: Sequence[str], python: str = sys.executable, timeout: float = START_TIMEOUT
    ) -> DsimProcess:
        """Start ``python -m dsim --katcp-port 0 ARGS`` and wait until it listens."""
        proc = await asyncio.create_subprocess_exec(
            python, "-m", "dsim", "--katcp-port", "0", *args, stderr=asyncio.subprocess.PIPE
        )
        assert proc.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        port: int | None = None
        try:
            while port is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dsim did not start listening within {timeout:g} s")
                try:
                    raw = await asyncio.wait_for(proc.stderr.readline(), 0.1)
                except TimeoutError:
                    port = listening_tcp_port(proc.pid)
                    continue
                if not raw:
                    status = await proc.wait()
                    raise RuntimeError(
                        f"dsim exited (status {status}) during start-up: " + "".join(lines[-5:])
                    )
                line = raw.decode(errors="replace")
                lines.append(line)
                if address := katcp_address_from_log(line):
                    port = address[1]
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        self = cls(proc, port)
        self.log_tail.extend(lines)
        self._drain = asyncio.get_running_loop().create_task(
            drain_lines(proc.stderr, self.log_tail)
        )
        return self

    async def wait(self, timeout: float = 30.0) -> int:
        """Wait for dsim to exit (e.g. after ``?halt``); kill it after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                status = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            status = await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
        return status
