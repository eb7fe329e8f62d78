"""What the tests share: a real spead2 receiver, a dsim process, and pattern checks.

Fixtures that use these live in ``conftest.py``; test modules import only
from here, never from each other.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import spead2
import spead2.recv
import spead2.recv.asyncio
import spead2.send
import spead2.send.asyncio

from dsim import packing
from dsim.array import launch
from dsim.spead import (
    ADC_SAMPLES_ID,
    DIGITISER_ID_ID,
    DIGITISER_STATUS_ID,
    FLAVOUR,
    TIMESTAMP_ID,
    full_scale,
    status_word,
    wrap_signed,
)

KATCPCMD = Path(sys.executable).with_name("katcpcmd")
#: Seconds any single wait in a test may take before it counts as a hang.
TIMEOUT = 20.0


@dataclass
class ReceivedHeap:
    timestamp: int
    cnt: int
    samples: np.ndarray  # signed sample values
    payload: bytes  # the samples as sent
    digitiser_id: int | None = None
    status: int | None = None


@dataclass
class Received:
    heaps: list[ReceivedHeap] = field(default_factory=list)
    ends: int = 0
    descriptor_heaps: int = 0
    descriptor_cnts: list[int] = field(default_factory=list)
    incomplete: int = 0

    @property
    def timestamps(self) -> list[int]:
        return [h.timestamp for h in self.heaps]

    def of(self, digitiser_id: int) -> list[ReceivedHeap]:
        """The heaps of one polarisation."""
        return [h for h in self.heaps if h.digitiser_id == digitiser_id]


class Receiver:
    """A spead2 receive stream on a UDP socket or an in-process queue.

    A background task takes heaps off the stream as they arrive, decoding
    both formats (meerkat samples are unpacked with `sample_bits`), so a long
    capture never backs up into the socket; :meth:`collect` waits for them.
    """

    def __init__(
        self,
        source: socket.socket | spead2.InprocQueue,
        sample_bits: int = 10,
        max_packet: int = 9200,
    ) -> None:
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
        self.sample_bits = sample_bits
        self._described_size: int | None = None  # adc_samples bytes, from the descriptors
        self.received = Received()
        self._changed = asyncio.Condition()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for heap in self.stream:
            self._add(heap)
            async with self._changed:
                self._changed.notify_all()

    async def collect(
        self, ends: int = 1, idle_timeout: float = 3.0, heaps: int | None = None
    ) -> Received:
        """Wait for `ends` end-of-stream heaps (or `heaps` data heaps), or `idle_timeout` quiet."""
        received = self.received
        while not self._task.done():
            if heaps is not None and len(received.heaps) >= heaps:
                break
            if heaps is None and received.ends >= ends:
                break
            try:
                async with asyncio.timeout(idle_timeout), self._changed:
                    await self._changed.wait()
            except TimeoutError:
                break
        return received

    def _add(self, heap: spead2.recv.Heap) -> None:
        if heap.is_end_of_stream():
            self.received.ends += 1
            return
        for raw_descriptor in heap.get_descriptors():
            descriptor = spead2.Descriptor.from_raw(raw_descriptor, heap.flavour)
            if descriptor.id == ADC_SAMPLES_ID and descriptor.shape:
                self._described_size = int(descriptor.shape[0] or 0)
        items = {item.id: item for item in heap.get_items()}
        if not items:
            self.received.descriptor_heaps += 1
            self.received.descriptor_cnts.append(heap.cnt)
            return
        timestamp = items[TIMESTAMP_ID].immediate_value
        raw = items[ADC_SAMPLES_ID]
        if DIGITISER_ID_ID in items:
            payload = bytes(memoryview(raw))  # type: ignore[arg-type]
            samples = packing.unpack(np.frombuffer(payload, np.uint8), self.sample_bits)
            self.received.heaps.append(
                ReceivedHeap(
                    timestamp,
                    heap.cnt,
                    np.asarray(samples),
                    payload,
                    items[DIGITISER_ID_ID].immediate_value,
                    items[DIGITISER_STATUS_ID].immediate_value,
                )
            )
        else:
            payload = bytes(memoryview(raw))  # type: ignore[arg-type]
            if raw.is_immediate:  # short heaps travel in the pointer, right-aligned
                size = self._described_size or 6
                payload = raw.immediate_value.to_bytes(6, "big")[6 - size :]
            samples = np.frombuffer(payload, np.int8).astype(np.int64)
            self.received.heaps.append(ReceivedHeap(timestamp, heap.cnt, samples, payload))

    def close(self) -> None:
        self.received.incomplete = self.stream.stats["incomplete_heaps_evicted"]
        self.stream.stop()
        self._task.cancel()


def counter_value(timestamp: int, heap_samples: int, bits: int = 8) -> int:
    """What every sample of a counter() heap holds."""
    return int(wrap_signed(timestamp // heap_samples, bits))


def check_counter(heaps: list[ReceivedHeap], bits: int = 8) -> None:
    """Assert there are heaps, and every one carries the counter pattern for its timestamp."""
    assert heaps, "no heaps received"
    for i, heap in enumerate(heaps):
        expected = counter_value(heap.timestamp, len(heap.samples), bits)
        assert (heap.samples == expected).all(), (
            f"heap {i} at {heap.timestamp}: samples {heap.samples[:4]}..., expected {expected}"
        )


def check_contiguous(heaps: list[ReceivedHeap], first_timestamp: int | None = None) -> None:
    """Assert there are heaps, and their timestamps run on without gaps."""
    assert heaps, "no heaps received"
    t = heaps[0].timestamp if first_timestamp is None else first_timestamp
    for i, heap in enumerate(heaps):
        assert heap.timestamp == t, f"heap {i}: timestamp {heap.timestamp}, expected {t}"
        t += len(heap.samples)


def check_cnts(heaps: list[ReceivedHeap], step: int = 2) -> None:
    """Assert data heap ids are even and consecutive (by `step`)."""
    cnts = [h.cnt for h in heaps]
    assert all(c % 2 == 0 for c in cnts)
    assert all(b - a == step for a, b in zip(cnts, cnts[1:], strict=False)), cnts[:20]


class DsimProcess:
    """A running ``python -m dsim`` whose katcp port has been read from its log."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: list[str]) -> None:
        self.process = process
        self.port = port
        self.log = log
        # Keep reading the log, so that a chatty dsim never blocks on a full pipe.
        self._reader = asyncio.create_task(self._read_log())

    async def _read_log(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.log.append(line.decode())

    @classmethod
    async def start(cls, *args: str) -> DsimProcess:
        launched = await launch(["--katcp-port", "0", *args], timeout=TIMEOUT)
        return cls(launched.process, launched.katcp_address[1], launched.log)

    async def finish(self, timeout: float = TIMEOUT) -> int:
        """Wait for the process to exit; returns its status (the log is complete then)."""
        async with asyncio.timeout(timeout):
            await self._reader
            return await self.process.wait()

    async def katcpcmd(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(KATCPCMD), f"127.0.0.1:{self.port}", *args, stdout=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(TIMEOUT):
            out, _ = await proc.communicate()
        assert proc.returncode == 0
        return out.decode()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


def _immediate(items: spead2.send.ItemGroup, item_id: int, name: str) -> None:
    items.add_item(item_id, name, "", shape=(), format=[("u", 48)])


class HeapSender:
    """Sends dsim-format heaps (tutorial or meerkat) with chosen ids, timestamps and payloads."""

    def __init__(self, port: int, rate: float = 50e6, host: str = "127.0.0.1") -> None:
        self.stream = spead2.send.asyncio.UdpStream(
            spead2.ThreadPool(),
            [(host, port)],
            spead2.send.StreamConfig(max_packet_size=8972, rate=rate, max_heaps=64),
        )

    async def send(self, heap: spead2.send.Heap, cnt: int) -> None:
        await self.stream.async_send_heap(heap, cnt)

    @staticmethod
    def tutorial_items(n: int) -> spead2.send.ItemGroup:
        items = spead2.send.ItemGroup(flavour=FLAVOUR)
        _immediate(items, 0x1600, "timestamp")
        items.add_item(0x3300, "adc_samples", "", shape=(n,), dtype=np.int8)
        return items

    async def tutorial_descriptors(self, n: int, cnt: int = 1) -> None:
        await self.send(self.tutorial_items(n).get_heap(descriptors="all", data="none"), cnt)

    async def tutorial(self, cnt: int, t: int, n: int, samples: np.ndarray | None = None) -> None:
        """A tutorial heap: the counter pattern unless `samples` are given."""
        items = self.tutorial_items(n)
        items["timestamp"].value = t
        if samples is None:
            samples = np.full(n, wrap_signed(t // n, 8))
        items["adc_samples"].value = np.asarray(samples).astype(np.int8)
        await self.send(items.get_heap(descriptors="none"), cnt)

    async def meerkat_descriptors(self, samples: int, bits: int = 10, cnt: int = 1) -> None:
        items = spead2.send.ItemGroup(flavour=FLAVOUR)
        for item_id, name in ((0x1600, "timestamp"), (0x3101, "id"), (0x3102, "status")):
            _immediate(items, item_id, name)
        items.add_item(0x3300, "raw_data", "", shape=(samples,), format=[("i", bits)])
        await self.send(items.get_heap(descriptors="all", data="none"), cnt)

    async def meerkat(
        self,
        cnt: int,
        t: int,
        stream: int,
        samples: np.ndarray,
        bits: int = 10,
        status: int | None = None,
    ) -> None:
        """A MeerKAT heap of these samples (status: the true saturation count by default)."""
        payload = packing.pack(samples, bits)
        if status is None:
            status = int(status_word(int(np.count_nonzero(np.abs(samples) >= full_scale(bits)))))
        items = spead2.send.ItemGroup(flavour=FLAVOUR)
        for item_id, name in ((0x1600, "timestamp"), (0x3101, "id"), (0x3102, "status")):
            _immediate(items, item_id, name)
        items.add_item(0x3300, "raw_data", "", shape=(len(payload),), dtype=np.uint8)
        items["timestamp"].value = t
        items["id"].value = stream
        items["status"].value = status
        items["raw_data"].value = payload
        heap = items.get_heap(descriptors="none")
        heap.repeat_pointers = True
        await self.send(heap, cnt)

    async def end(self, cnt: int = 3) -> None:
        heap = spead2.send.Heap(FLAVOUR)
        heap.add_end()
        await self.send(heap, cnt)


#: Run first in a private network namespace: loopback up, multicast routed to it.
_NETNS_PRELUDE = """
import subprocess as _subprocess
for _command in ("ip link set lo up", "ip link set lo multicast on",
                 "ip route add 239.0.0.0/8 dev lo"):
    _subprocess.run(_command.split(), check=True)
"""


def run_in_private_netns(
    script: str, *, loopback: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a Python `script` in a network namespace of its own (``unshare --net``, root).

    With `loopback`, its loopback is brought up with multicast routed to it first;
    no traffic can leave the namespace either way.
    """
    code = (_NETNS_PRELUDE if loopback else "") + script
    return subprocess.run(
        ["unshare", "--net", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
