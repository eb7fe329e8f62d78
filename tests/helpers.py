"""A small real SPEAD receiver for tests: collects what a dsim stream delivered."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import numpy as np
import spead2
import spead2.recv
import spead2.recv.asyncio

#: Receive socket buffer: large, so that a paced sender loses nothing to a busy receiver.
RECV_BUFFER = 64 * 1024 * 1024
#: Linux SO_RCVBUFFORCE (not exported by Python's socket module).
SO_RCVBUFFORCE = 33


def udp_socket(buffer_size: int = RECV_BUFFER) -> socket.socket:
    """A UDP socket bound to 127.0.0.1 on a free port, with a large receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Root (as in CI) may exceed net.core.rmem_max.
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class ReceivedHeap:
    timestamp: int
    value: int  # the (uniform) sample value
    samples: int  # samples in the heap
    uniform: bool  # every sample equal
    descriptors: bool  # the heap carried descriptors


@dataclass
class Received:
    heaps: list[ReceivedHeap] = field(default_factory=list)
    ends: int = 0
    incomplete: int = 0
    descriptor_heaps: int = 0

    @property
    def timestamps(self) -> list[int]:
        return [h.timestamp for h in self.heaps]


class Receiver:
    """A spead2 receive stream on a UDP socket or an in-process queue.

    A background task takes heaps off the stream as they arrive (so that a
    long capture does not back up into the socket); :meth:`collect` waits for
    the end-of-stream heaps.
    """

    def __init__(self, source: socket.socket | spead2.InprocQueue, max_packet: int = 9200) -> None:
        self.thread_pool = spead2.ThreadPool()
        self.stream = spead2.recv.asyncio.Stream(
            self.thread_pool,
            spead2.recv.StreamConfig(max_heaps=8, stop_on_stop_item=False),
            spead2.recv.RingStreamConfig(heaps=1024),
        )
        if isinstance(source, spead2.InprocQueue):
            self.stream.add_inproc_reader(source)
        else:
            self.stream.add_udp_reader(source, max_size=max_packet)
        self.item_group = spead2.ItemGroup()
        self.received = Received()
        self._changed = asyncio.Condition()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for heap in self.stream:
            self._add(heap)
            async with self._changed:
                self._changed.notify_all()

    async def collect(self, ends: int = 1, idle_timeout: float = 5.0) -> Received:
        """Wait until `ends` end-of-stream heaps arrived, or nothing came for `idle_timeout`."""
        while self.received.ends < ends and not self._task.done():
            try:
                async with asyncio.timeout(idle_timeout), self._changed:
                    await self._changed.wait()
            except TimeoutError:
                break
        return self.received

    def _add(self, heap: spead2.recv.Heap) -> None:
        if heap.is_end_of_stream():
            self.received.ends += 1
            return
        has_descriptors = bool(heap.get_descriptors())
        self.item_group.update(heap)
        if not heap.get_items():
            self.received.descriptor_heaps += 1  # descriptors only
            return
        samples = np.asarray(self.item_group["adc_samples"].value)
        self.received.heaps.append(
            ReceivedHeap(
                timestamp=int(self.item_group["timestamp"].value),
                value=int(samples[0]),
                samples=len(samples),
                uniform=bool((samples == samples[0]).all()),
                descriptors=has_descriptors,
            )
        )

    def close(self) -> None:
        self.received.incomplete = self.stream.stats["incomplete_heaps_evicted"]
        self.stream.stop()
        self._task.cancel()


def int8(n: int) -> int:
    return (n + 128) % 256 - 128


def check_contiguous(
    heaps: list[ReceivedHeap], first_heap: int = 0, first_timestamp: int = 0
) -> None:
    """Assert heaps follow the generator: heap n has value int8(n), timestamps contiguous."""
    t = first_timestamp
    for i, heap in enumerate(heaps):
        n = first_heap + i
        assert heap.timestamp == t, f"heap {i}: timestamp {heap.timestamp}, expected {t}"
        assert heap.uniform, f"heap {i}: samples not all equal"
        assert heap.value == int8(n), f"heap {i}: value {heap.value}, expected {int8(n)}"
        t += heap.samples
