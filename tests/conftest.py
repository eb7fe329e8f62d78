"""Fixtures shared by the test modules (helpers themselves are in ``support.py``)."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable

import pytest
import spead2

from dsim.address import Endpoint
from dsim.engine import Engine
from dsim.transport import TransportConfig, TransportKind
from dsim.verify.receiver import udp_socket as verify_socket

from .support import DsimProcess, Receiver

#: Receive socket buffer: large, so that a paced sender loses nothing to a busy receiver.
RECV_BUFFER = 64 * 1024 * 1024
#: Pace test streams so that the Python test receiver never falls behind.
TEST_RATE = 50e6

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip for a private network namespace",
)


def udp_socket(buffer_size: int = RECV_BUFFER) -> socket.socket:
    """A UDP socket bound to 127.0.0.1 on a free port, with a large receive buffer."""
    return verify_socket(0, "127.0.0.1", buffer_size)


class Sink:
    """A bound UDP socket with a spead2 receiver on it."""

    def __init__(self, sample_bits: int = 10) -> None:
        self.sock = udp_socket()
        self.port = int(self.sock.getsockname()[1])
        self.receiver = Receiver(self.sock, sample_bits)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)

    @property
    def dest(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.receiver.close()
        self.sock.close()


@pytest.fixture
async def sinks() -> AsyncIterator[Callable[..., Sink]]:
    """A factory of UDP sinks, closed at the end of the test."""
    made: list[Sink] = []

    def factory(sample_bits: int = 10) -> Sink:
        made.append(Sink(sample_bits))
        return made[-1]

    yield factory
    for sink in made:
        sink.close()


@pytest.fixture
async def sink(sinks: Callable[..., Sink]) -> Sink:
    return sinks()


@pytest.fixture
async def engines() -> AsyncIterator[Callable[..., Engine]]:
    """A factory of engines (closed at the end): ``engines(transport, heap_size, **kw)``."""
    made: list[Engine] = []

    def factory(
        transport: TransportConfig, heap_size: int | None = None, **kwargs: object
    ) -> Engine:
        made.append(Engine(transport, heap_size, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield factory
    for engine in made:
        await engine.close()


def inproc_transport(queues: int = 1, **kwargs: object) -> TransportConfig:
    """An in-process transport with `queues` fresh queues (one per destination)."""
    return TransportConfig(
        kind=TransportKind.INPROC,
        inproc_queues=[spead2.InprocQueue() for _ in range(queues)],
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def dsim_processes() -> AsyncIterator[Callable[..., object]]:
    """Start ``python -m dsim`` processes; any still running at the end are killed."""
    made: list[DsimProcess] = []

    async def start(*args: str) -> DsimProcess:
        made.append(await DsimProcess.start(*args))
        return made[-1]

    yield start
    for process in made:
        process.kill()
        await process.finish()
