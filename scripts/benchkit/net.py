"""UDP sockets on 127.0.0.1 for the benchmarks: unread sinks, big buffers, free ports.

A sink is a socket that is bound and never read: the kernel queues packets until
its buffer is full and drops the rest silently, so a sender sees no errors and
no receiver competes with it for CPU (the loopback receive path up to the drop
still runs, usually on the sending CPU).
"""

from __future__ import annotations

import os
import socket

from dsim.verify.receiver import udp_socket as _udp_socket

from . import LOCALHOST


def udp_socket(
    buffer_size: int | None = None, host: str = LOCALHOST, port: int = 0
) -> socket.socket:
    """A UDP socket bound to `host`:`port` (0: any free port) with a receive buffer of
    `buffer_size` bytes if given (beyond ``net.core.rmem_max`` when running as root):
    dsim's own (:func:`dsim.verify.receiver.udp_socket`)."""
    return _udp_socket(port, host, buffer_size)


def port_of(sock: socket.socket) -> int:
    """The local port a socket is bound to."""
    return int(sock.getsockname()[1])


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago (for a child process to bind)."""
    with udp_socket() as sock:
        return port_of(sock)


class UdpSink:
    """An unread UDP socket on 127.0.0.1 that counts the packets dropped at it."""

    def __init__(self, buffer_size: int | None = None) -> None:
        self.sock = udp_socket(buffer_size)
        self.port = port_of(self.sock)
        self._inode = os.fstat(self.sock.fileno()).st_ino

    def drops(self) -> int | None:
        """The socket's drop counter from /proc/net/udp, or None if unavailable.

        Once the buffer is full (after a warm-up) every packet that reaches the
        socket is dropped, so the difference over a measurement counts the
        packets that really went out.
        """
        try:
            with open("/proc/net/udp") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if len(fields) >= 13 and fields[9] == str(self._inode):
                        return int(fields[12])
        except (OSError, ValueError, StopIteration):
            return None
        return None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
