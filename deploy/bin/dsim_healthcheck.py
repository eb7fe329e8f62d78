#!/usr/bin/env python3
"""Container health check: is dsim's katcp server answering ``?watchdog``?

Installed in the image as ``dsim-healthcheck`` (the image's HEALTHCHECK and the
Kubernetes liveness probe). Asks DSIM_KATCP_HOST:DSIM_KATCP_PORT; where those are not
set, the ``--katcp-host``/``--katcp-port`` that the container's main process (PID 1,
dsim) was started with; else 127.0.0.1:7147. Exits 0 on ``!watchdog ok`` within
DSIM_HEALTH_TIMEOUT seconds (default 3), else 1 with one line on stderr. Standard
library only.
"""

from __future__ import annotations

import os
import socket
import sys
import time


def watchdog(host: str, port: int, timeout: float) -> str | None:
    """None if the server answers ``!watchdog ok`` in time, else what went wrong."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"?watchdog\n")
            buffer = b""
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    return "connection closed before the reply"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:  # informs (#version-connect ...) come first
                    if line.startswith(b"!watchdog"):
                        ok = line.split()[1:2] == [b"ok"]
                        return None if ok else f"reply {line.decode(errors='replace')!r}"
    except OSError as exc:  # refused, unreachable, timed out
        return f"{type(exc).__name__}: {exc}"


def main_process_options(cmdline: str = "/proc/1/cmdline") -> dict[str, str]:
    """``--katcp-host``/``--katcp-port`` of the container's main process, if it has them."""
    try:
        with open(cmdline, "rb") as file:
            args = [a.decode(errors="replace") for a in file.read().split(b"\0")]
    except OSError:
        return {}
    found: dict[str, str] = {}
    for i, arg in enumerate(args):
        for name in ("--katcp-host", "--katcp-port"):
            if arg == name and i + 1 < len(args):
                found[name] = args[i + 1]
            elif arg.startswith(name + "="):
                found[name] = arg.split("=", 1)[1]
    return found


def main() -> int:
    options = main_process_options()
    host = os.environ.get("DSIM_KATCP_HOST") or options.get("--katcp-host") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # listening everywhere: ask over loopback
        host = "127.0.0.1"
    try:
        port = int(os.environ.get("DSIM_KATCP_PORT") or options.get("--katcp-port") or 7147)
        timeout = float(os.environ.get("DSIM_HEALTH_TIMEOUT") or 3)
    except ValueError as exc:
        print(f"dsim-healthcheck: bad setting: {exc}", file=sys.stderr)
        return 1
    problem = watchdog(host, port, timeout)
    if problem is not None:
        print(f"dsim-healthcheck: katcp {host}:{port}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
