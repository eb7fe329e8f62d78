"""From spead2's received heaps to :class:`~dsim.verify.checker.DataHeap`.

The items are read raw (no :class:`spead2.ItemGroup`), which is cheaper per
heap and sees what is really on the wire. What the descriptors say about item
0x3300 (its sample width and its size in bytes) is remembered, because it is
needed to read a *short* payload: spead2 sends an item of at most
``heap_address_bits / 8`` bytes (6 in SPEAD-64-48) as an immediate, its value
right-aligned in the 6-byte item pointer (padding first, as spead2's own
``ItemGroup`` reads it back), so a 3-byte tutorial heap arrives as pointer
bytes ``00 00 00 s0 s1 s2`` with no payload at all.
"""

from __future__ import annotations

import enum
import math
from typing import Any, cast

import spead2
import spead2.recv

from ..spead import ADC_SAMPLES_ID, DIGITISER_ID_ID, DIGITISER_STATUS_ID, TIMESTAMP_ID
from .checker import DataHeap


class HeapKind(enum.Enum):
    """A received heap that is not a data heap."""

    END_OF_STREAM = "end-of-stream"
    DESCRIPTORS = "descriptors"
    FOREIGN = "foreign"  # neither: no timestamp or no samples


def _value(item: spead2.recv.RawItem) -> int:
    """An item's value as an unsigned integer (immediate, or a short big-endian payload)."""
    if item.is_immediate:
        return int(item.immediate_value)
    return int.from_bytes(_raw(item), "big")


def _raw(item: spead2.recv.RawItem) -> bytes:
    """An item's bytes: its payload, or for an immediate the 6 bytes of its pointer."""
    return bytes(memoryview(cast(Any, item)))


def _described(payload: bytes | None, size: int | None) -> bool | None:
    """Whether the payload matches the descriptors: None if there are none, False if the
    payload could not even be read without them."""
    if payload is None:
        return False
    return None if size is None else len(payload) == size


class Decoder:
    """Decodes heaps, remembering the descriptors seen.

    MeerKAT-format heaps (those with a ``digitiser_id``) hold `sample_bits`
    samples until descriptors give the width; tutorial heaps hold int8.
    """

    def __init__(self, sample_bits: int = 10) -> None:
        self.sample_bits = sample_bits
        #: Sample width the descriptors of item 0x3300 give (None: not seen).
        self.described_bits: int | None = None
        #: Bytes of item 0x3300 the descriptors give (None: not seen, or variable).
        self.described_bytes: int | None = None

    def describe(self, descriptor: spead2.Descriptor) -> None:
        """Take note of a descriptor (only item 0x3300's matter)."""
        if descriptor.id != ADC_SAMPLES_ID:
            return
        if descriptor.dtype is not None:
            bits = int(descriptor.dtype.itemsize) * 8
        elif descriptor.format:
            bits = sum(int(length) for _, length in descriptor.format)
        else:
            return
        shape = [n for n in descriptor.shape if isinstance(n, int) and n >= 0]
        self.described_bits = bits
        if len(shape) == len(descriptor.shape):
            self.described_bytes = -(-math.prod(shape) * bits // 8)
        else:
            self.described_bytes = None

    def decode(
        self,
        heap: spead2.recv.Heap,
        arrived: float | None = None,
        received: float | None = None,
    ) -> DataHeap | HeapKind:
        """The data heap `heap` holds, or what other kind of heap it is."""
        if heap.is_end_of_stream():
            return HeapKind.END_OF_STREAM
        descriptors = heap.get_descriptors()
        for raw_descriptor in descriptors:
            self.describe(spead2.Descriptor.from_raw(raw_descriptor, heap.flavour))
        timestamp: int | None = None
        stream: int | None = None
        status: int | None = None
        samples_item: spead2.recv.RawItem | None = None
        for item in heap.get_items():
            item_id = item.id
            if item_id == ADC_SAMPLES_ID:
                samples_item = item
            elif item_id == TIMESTAMP_ID:
                timestamp = _value(item)
            elif item_id == DIGITISER_ID_ID:
                stream = _value(item)
            elif item_id == DIGITISER_STATUS_ID:
                status = _value(item)
        if timestamp is None or samples_item is None:
            return HeapKind.DESCRIPTORS if descriptors else HeapKind.FOREIGN
        if stream is None:
            bits = self.described_bits or 8
        else:
            bits = self.described_bits or self.sample_bits
        raw = _raw(samples_item)
        size = self.described_bytes
        payload: bytes | None = raw
        samples: int | None = None
        if samples_item.is_immediate:
            if size is None or size > len(raw):
                # No descriptor says how many of the pointer's bytes are samples.
                payload, samples = None, len(raw) * 8 // bits
            else:
                payload = raw[len(raw) - size :]
        return DataHeap(
            cnt=heap.cnt,
            timestamp=timestamp,
            payload=payload,
            bits=bits,
            stream=stream,
            status=status,
            samples=samples,
            described=_described(payload, size),
            arrived=arrived,
            received=received,
        )
