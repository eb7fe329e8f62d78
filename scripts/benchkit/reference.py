"""The Python reference senders of bench_send: spead2's tutorial patterns, written anew.

Both put the tutorial format on the wire (SPEAD-64-48, an immediate
``timestamp`` 0x1600 and an int8 ``adc_samples`` 0x3300 array of heap-size
bytes; heap i has timestamp ``i * H`` and every sample ``int8(i)``), as dsim's
engine does, over their own unpaced UDP stream to the sink:

* :class:`PlainSender`, one heap at a time with K heaps in flight (spead2's
  ``tut_8_send_reuse_memory`` pattern): what Python manages without batching;
* :class:`TutorialSender`, spead2's "batched heaps" (``tut_11_send_batch_heaps.py``):
  two batch states of about 512 KiB, each refilled with one numpy operation
  per array and sent with one ``async_send_heaps`` call.

docs/benchmarks.md says exactly what each timed region covers.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

import numpy as np
import spead2
import spead2.send
import spead2.send.asyncio

from dsim.spead import ADC_SAMPLES_ID, FLAVOUR, TIMESTAMP_ID

from . import LOCALHOST

#: Target bytes per batch of the tutorial sender, and its number of batch states.
TUTORIAL_BATCH_BYTES = 512 * 1024
TUTORIAL_BATCHES = 2


def tutorial_item_group(heap_size: int) -> spead2.send.ItemGroup:
    """The tutorial format's items for heaps of `heap_size` samples."""
    item_group = spead2.send.ItemGroup(flavour=FLAVOUR)
    item_group.add_item(
        TIMESTAMP_ID,
        "timestamp",
        "Index of the first ADC sample in the heap",
        shape=(),
        format=[("u", FLAVOUR.heap_address_bits)],
    )
    item_group.add_item(
        ADC_SAMPLES_ID,
        "adc_samples",
        "ADC samples, one signed byte each",
        shape=(heap_size,),
        dtype=np.int8,
    )
    return item_group


def packet_split(heap_size: int, packet_size: int, repeat_pointers: bool) -> list[int]:
    """Sizes of the packets of one tutorial data heap (spead2's own packetiser)."""
    item_group = tutorial_item_group(heap_size)
    item_group["timestamp"].value = 0
    item_group["adc_samples"].value = np.zeros(heap_size, np.int8)
    heap = item_group.get_heap(descriptors="none", data="all")
    heap.repeat_pointers = repeat_pointers
    return [len(packet) for packet in spead2.send.PacketGenerator(heap, 1, packet_size)]


def split_text(sizes: list[int]) -> str:
    """``[9000, 7480]`` -> ``"1x9000+1x7480"`` (largest first)."""
    counts = Counter(sizes)
    return "+".join(f"{n}x{size}" for size, n in sorted(counts.items())[::-1])


def sample_value(n: int) -> int:
    """The value of every sample of heap `n`: `n` wrapped to int8."""
    return (n + 128) % 256 - 128


def open_sink_stream(
    port: int, packet_size: int, max_heaps: int, send_core: int | None
) -> tuple[spead2.ThreadPool, spead2.send.asyncio.UdpStream]:
    """A one-thread pool (pinned to `send_core` if given) and an unpaced UDP stream to the sink."""
    pool = spead2.ThreadPool(1) if send_core is None else spead2.ThreadPool(1, [send_core])
    config = spead2.send.StreamConfig(max_packet_size=packet_size, rate=0.0, max_heaps=max_heaps)
    stream = spead2.send.asyncio.UdpStream(pool, [(LOCALHOST, port)], config)
    return pool, stream


class PlainSender:
    """One-heap-at-a-time pipelined sender (spead2 tutorial style, no batching)."""

    def __init__(
        self,
        port: int,
        heap_size: int,
        packet_size: int,
        repeat_pointers: bool,
        in_flight: int,
        send_core: int | None,
    ) -> None:
        self.heap_size = heap_size
        self.packet_size = packet_size
        self.repeat_pointers = repeat_pointers
        self.thread_pool, stream = open_sink_stream(port, packet_size, in_flight + 1, send_core)
        self.stream: spead2.send.asyncio.UdpStream | None = stream
        self.item_group = tutorial_item_group(heap_size)
        self.buffers = [np.zeros(heap_size, np.int8) for _ in range(in_flight)]

    async def send(self, heaps: int) -> None:
        """The timed part: `heaps` heaps, each filled, built and sent on its own."""
        heap_size = self.heap_size
        item_group = self.item_group
        timestamp_item = item_group["timestamp"]
        samples_item = item_group["adc_samples"]
        stream = self.stream
        assert stream is not None
        buffers = self.buffers
        futures: list[asyncio.Future[int] | None] = [None] * len(buffers)
        for i in range(heaps):
            slot = i % len(buffers)
            previous = futures[slot]
            if previous is not None:
                await previous  # that heap is sent: its buffer may be rewritten
            buffer = buffers[slot]
            buffer.fill(sample_value(i))
            timestamp_item.value = i * heap_size
            samples_item.value = buffer
            heap = item_group.get_heap(descriptors="all" if i == 0 else "none", data="all")
            if self.repeat_pointers:
                heap.repeat_pointers = True
            futures[slot] = stream.async_send_heap(heap)
        for future in futures:
            if future is not None:
                await future
        await stream.async_send_heap(item_group.get_end())

    async def close(self) -> None:
        self.stream = None

    def check(self, heaps: int) -> list[str]:
        return []  # a failed future raises in send()


@dataclass
class TutorialBatch:
    """One batch state of the tutorial sender: its arrays, its heaps and its last send."""

    samples: np.ndarray  # int8, shape (batch_heaps, heap_size)
    timestamps: np.ndarray  # '>u8', shape (batch_heaps,)
    heaps: spead2.send.HeapReferenceList
    future: asyncio.Future[int] | None = None


class TutorialSender:
    """The batched sender of spead2's tutorial (``tut_11_send_batch_heaps.py``)."""

    def __init__(
        self,
        port: int,
        heap_size: int,
        packet_size: int,
        repeat_pointers: bool,
        send_core: int | None,
    ) -> None:
        self.heap_size = heap_size
        self.packet_size = packet_size
        self.repeat_pointers = repeat_pointers
        self.batch_heaps = max(1, TUTORIAL_BATCH_BYTES // heap_size)
        self.thread_pool, stream = open_sink_stream(
            port, packet_size, TUTORIAL_BATCHES * self.batch_heaps + 1, send_core
        )
        self.stream: spead2.send.asyncio.UdpStream | None = stream
        self.item_group = tutorial_item_group(heap_size)
        self.batches: list[TutorialBatch] = []
        for _ in range(TUTORIAL_BATCHES):
            # np.ones, as in the tutorial: the pages are touched before the timer starts.
            samples = np.ones((self.batch_heaps, heap_size), np.int8)
            timestamps = np.ones(self.batch_heaps, ">u8")
            heaps = self._make_heaps(samples, timestamps, descriptors=False)
            self.batches.append(TutorialBatch(samples, timestamps, heaps))
        first = self.batches[0]
        #: The first batch of the run: batch 0's heaps, but heap 0 carries the descriptors.
        self.first_heaps = self._make_heaps(first.samples, first.timestamps, descriptors=True)

    def _make_heaps(
        self, samples: np.ndarray, timestamps: np.ndarray, descriptors: bool
    ) -> spead2.send.HeapReferenceList:
        """Heaps whose items reference row j of `samples` and `timestamps` (no copies)."""
        timestamp_item = self.item_group["timestamp"]
        samples_item = self.item_group["adc_samples"]
        refs: list[spead2.send.HeapReference] = []
        for j in range(self.batch_heaps):
            timestamp_item.value = timestamps[j, ...]  # 0-d view, not a copy
            samples_item.value = samples[j, ...]
            which = "all" if descriptors and j == 0 else "none"
            heap = self.item_group.get_heap(descriptors=which, data="all")
            heap.repeat_pointers = self.repeat_pointers
            refs.append(spead2.send.HeapReference(heap))
        return spead2.send.HeapReferenceList(refs)

    async def send(self, heaps: int) -> None:
        """The timed part: `heaps` heaps in batches, two batches in flight."""
        heap_size = self.heap_size
        batch_heaps = self.batch_heaps
        batches = self.batches
        stream = self.stream
        assert stream is not None
        for i in range(0, heaps, batch_heaps):
            batch = batches[(i // batch_heaps) % len(batches)]
            end = min(i + batch_heaps, heaps)
            n = end - i
            if batch.future is not None:
                await batch.future  # its previous batch is sent: the arrays may be rewritten
            batch.samples[:n] = np.arange(i, end).astype(np.int8)[:, np.newaxis]
            batch.timestamps[:n] = np.arange(i * heap_size, end * heap_size, heap_size)
            refs = self.first_heaps if i == 0 else batch.heaps
            if n < batch_heaps:
                refs = refs[:n]
            batch.future = stream.async_send_heaps(refs, spead2.send.GroupMode.SERIAL)
        for batch in batches:
            if batch.future is not None:
                await batch.future
        await stream.async_send_heap(self.item_group.get_end())

    async def close(self) -> None:
        self.stream = None

    def check(self, heaps: int) -> list[str]:
        return []  # a failed future raises in send()
