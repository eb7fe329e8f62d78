"""A minimal spead2 replay sender of the MeerKAT format: the floor for dsim's real time.

Prebuilt one-packet heaps (SPEAD-64-48; immediate ``timestamp`` 0x1600,
``digitiser_id`` 0x3101, ``digitiser_status`` 0x3102; 5120 bytes of packed
10-bit samples 0x3300; ``repeat_pointers``, so 5192-byte packets) that all
reference one fixed payload array. Per batch only the timestamps change, with
one numpy operation, and the batch goes to spead2 in one
``async_send_heaps(..., GroupMode.SERIAL)`` call; four batches of about 512 KiB
are in flight. It does nothing per heap in Python and fills no payload, so it
is what a Python sender on this spead2 build can reach at best.

Paced (an ADC rate given), it follows the simulated ADC clock as dsim's engine
does: sample ``t`` belongs to time ``sync + t / rate``, a batch is handed to
spead2 at most 2 ms before its first sample, and spead2 paces it 1 % faster
than nominal. Unpaced, it sends as fast as it can from timestamp 0. It
implements :class:`benchkit.realtime.Stream` and may be started and stopped
repeatedly.

`burst_size` is spead2's rate-limiter burst (default 64 KiB). At GSO rates a
64 KiB burst lasts about 30 us, and the sending thread's wake-ups between
bursts cost a few per cent: measured here at 1712 MHz, one polarisation, the
default fell 4-8 % short of 2.14 GB/s while 256 KiB kept to the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import spead2
import spead2.send
import spead2.send.asyncio

from dsim.spead import (
    ADC_SAMPLES_ID,
    DIGITISER_ID_ID,
    DIGITISER_STATUS_ID,
    FLAVOUR,
    TIMESTAMP_ID,
)

from . import LOCALHOST

HEAP_SAMPLES = 4096
SAMPLE_BITS = 10
PAYLOAD_BYTES = HEAP_SAMPLES * SAMPLE_BITS // 8  # 5120
BATCH_BYTES = 512 * 1024
BATCHES = 4
#: As dsim's engine: a real-time batch covers at most this much time, is handed to
#: spead2 at most LEAD seconds early, and is paced HEADROOM faster than nominal.
MAX_BATCH_SECONDS = 0.002
LEAD = 0.002
HEADROOM = 0.01
ALIGN_SAMPLES = 1 << 20


def item_group() -> spead2.send.ItemGroup:
    """The MeerKAT digitiser items, the raw samples as the bytes they are on the wire."""
    group = spead2.send.ItemGroup(flavour=FLAVOUR)
    immediate = [("u", FLAVOUR.heap_address_bits)]
    group.add_item(TIMESTAMP_ID, "timestamp", "First sample", shape=(), format=immediate)
    group.add_item(DIGITISER_ID_ID, "digitiser_id", "Digitiser id", shape=(), format=immediate)
    group.add_item(DIGITISER_STATUS_ID, "digitiser_status", "Status", shape=(), format=immediate)
    group.add_item(
        ADC_SAMPLES_ID, "raw_data", "Packed samples", shape=(PAYLOAD_BYTES,), dtype=np.uint8
    )
    return group


@dataclass
class _Batch:
    timestamps: np.ndarray  # '>u8', one per step (shared by the polarisations)
    heaps: spead2.send.HeapReferenceList
    future: asyncio.Future[int] | None = None


class MeerkatReplay:
    """Replays one fixed window of heaps to one port per polarisation (see the module)."""

    def __init__(
        self, ports: Sequence[int], adc_rate: float | None, burst_size: int | None = None
    ) -> None:
        pols = len(ports)
        self.adc_rate = adc_rate
        steps = max(1, BATCH_BYTES // (PAYLOAD_BYTES * pols))
        if adc_rate is not None:
            steps = min(steps, max(1, int(MAX_BATCH_SECONDS * adc_rate / HEAP_SAMPLES)))
        self.steps = steps
        self.heap_bytes = PAYLOAD_BYTES
        #: The one payload array every heap references (a fixed, arbitrary pattern).
        self.payload = np.random.default_rng(1).integers(0, 256, (steps, PAYLOAD_BYTES), np.uint8)
        self.status = np.zeros((), ">u8")
        self.offsets = np.arange(steps, dtype=np.uint64) * np.uint64(HEAP_SAMPLES)
        group = item_group()
        self.batches: list[_Batch] = []
        for _ in range(BATCHES):
            timestamps = np.zeros(steps, ">u8")
            refs = []
            for j in range(steps):
                for pol in range(pols):
                    group["timestamp"].value = timestamps[j, ...]  # 0-d view: referenced
                    group["digitiser_id"].value = pol
                    group["digitiser_status"].value = self.status
                    group["raw_data"].value = self.payload[j]
                    heap = group.get_heap(descriptors="none", data="all")
                    heap.repeat_pointers = True
                    refs.append(spead2.send.HeapReference(heap, substream_index=pol))
            self.batches.append(_Batch(timestamps, spead2.send.HeapReferenceList(refs)))
        self.descriptors = spead2.send.HeapReferenceList(
            [
                spead2.send.HeapReference(
                    group.get_heap(descriptors="all", data="none"), substream_index=pol
                )
                for pol in range(pols)
            ]
        )
        sizes = [len(p) for p in spead2.send.PacketGenerator(heap, 1, 1 << 16)]
        assert len(sizes) == 1, "a MeerKAT heap is one packet"
        self.packet_size = sizes[0]  # 5192
        rate = 0.0
        if adc_rate is not None:
            rate = adc_rate / HEAP_SAMPLES * self.packet_size * pols * (1 + HEADROOM)
        config = spead2.send.StreamConfig(
            max_packet_size=self.packet_size,
            rate=rate,
            max_heaps=BATCHES * steps * pols + pols,
        )
        if burst_size is not None:
            config.burst_size = burst_size
        self.thread_pool = spead2.ThreadPool(1)
        self.stream: spead2.send.asyncio.UdpStream | None = spead2.send.asyncio.UdpStream(
            self.thread_pool, [(LOCALHOST, port) for port in ports], config
        )
        self.batch_payload = steps * pols * PAYLOAD_BYTES
        self.sync_time = time.time()
        self.next_timestamp = 0
        self.sent_bytes = 0
        self.send_errors = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def time_of(self, timestamp: int) -> float:
        assert self.adc_rate is not None
        return self.sync_time + timestamp / self.adc_rate

    def start(self) -> None:
        """Start sending (again, after :meth:`stop`: at the next aligned sample after now)."""
        self._stopping = False
        if self.adc_rate is not None:
            now = (time.time() - self.sync_time) * self.adc_rate
            self.next_timestamp = math.ceil(now / ALIGN_SAMPLES) * ALIGN_SAMPLES
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _count(self, future: asyncio.Future[int]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.send_errors += 1
        else:
            self.sent_bytes += self.batch_payload

    async def _run(self) -> None:
        stream = self.stream
        assert stream is not None
        await stream.async_send_heaps(self.descriptors, spead2.send.GroupMode.SERIAL)
        index = 0
        samples = np.uint64(self.steps * HEAP_SAMPLES)
        try:
            while not self._stopping:
                batch = self.batches[index % BATCHES]
                index += 1
                if batch.future is not None:
                    with contextlib.suppress(Exception):
                        await batch.future  # its heaps are sent: the timestamps may change
                if self._stopping:
                    break
                if self.adc_rate is not None:
                    delay = self.time_of(self.next_timestamp) - LEAD - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                np.add(self.offsets, np.uint64(self.next_timestamp), out=batch.timestamps)
                batch.future = stream.async_send_heaps(batch.heaps, spead2.send.GroupMode.SERIAL)
                batch.future.add_done_callback(self._count)
                self.next_timestamp += int(samples)
        finally:
            for batch in self.batches:
                if batch.future is not None:
                    with contextlib.suppress(Exception):
                        await batch.future

    def bytes_sent(self) -> int:
        """Payload bytes whose sends have completed."""
        return self.sent_bytes

    def time_lag(self) -> float | None:
        """Seconds the newest heap handed to spead2 trails the ADC clock (None: unpaced)."""
        if self.adc_rate is None:
            return None
        return time.time() - self.time_of(self.next_timestamp)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            await self._task

    async def close(self) -> None:
        await self.stop()
        self.stream = None
