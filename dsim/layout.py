"""The wire formats: which items a heap carries, how heaps are built and filled.

Two formats, chosen at startup:

* ``tutorial`` (default), the layout of spead2's "Batching heaps" tutorial:
  item 0x1600 ``timestamp`` (immediate: the index of the heap's first ADC
  sample) and item 0x3300 ``adc_samples`` (int8, one byte per sample). With
  several destinations, the heaps take turns among them. The first heap of a
  capture (or after a heap-size change) also carries the descriptors.
* ``meerkat``, what a MeerKAT digitiser sends its F-engines: every heap is
  exactly one packet and repeats all item pointers; items 0x1600
  ``timestamp``, 0x3101 ``digitiser_id`` (first id + polarisation), 0x3102
  ``digitiser_status`` (saturation count in bits 47..32, flag in bit 1) and
  0x3300 ``raw_data`` (N-bit samples packed big-endian, see
  :mod:`dsim.packing`). One stream per polarisation: each destination is a
  polarisation, and the heaps of all polarisations for a timestamp go out
  together.

Both use the SPEAD-64-48 flavour (48-bit immediates), as MeerKAT does, so that
timestamps wrap only after 2**48 samples (about 31 hours at 2.5 GB/s) instead
of 2**40 (about 7 minutes). spead2 receivers detect the flavour from the
packets. Descriptors are also sent as heaps of their own (see the engine).

Heaps are built once per heap size and only ever *reference* numpy memory: the
engine rewrites the arrays of a batch with a few numpy operations and the next
send carries the new values. A batch holds ``steps`` timestamps of
``streams`` heaps each (``streams`` is 1 for tutorial, the number of
polarisations for meerkat).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import spead2
import spead2.send

from . import packing
from .errors import ConfigError

#: SPEAD-64-48: 64-bit item pointers with 48-bit heap addresses.
FLAVOUR = spead2.Flavour(4, 64, 48, 0)
TIMESTAMP_ID = 0x1600
DIGITISER_ID_ID = 0x3101
DIGITISER_STATUS_ID = 0x3102
ADC_SAMPLES_ID = 0x3300
#: Timestamps on the wire are taken modulo this.
TIMESTAMP_MODULUS = 1 << FLAVOUR.heap_address_bits
#: Largest heap size accepted, in bytes. Four batches of at least one heap each
#: are kept in memory, so this bounds dsim's payload memory at 256 MiB.
MAX_HEAP_SIZE = 64 * 1024 * 1024
#: Type of the per-heap arrays that immediate items reference.
TIMESTAMP_DTYPE = np.dtype(">u8")
SAMPLE_DTYPE = np.dtype(np.int8)
#: digitiser_status: saturation flag bit and where the saturation count goes.
STATUS_SATURATED = 1 << 1
STATUS_COUNT_SHIFT = 32
STATUS_COUNT_MAX = 0xFFFF


def validate_heap_size(heap_size: int) -> int:
    """Return `heap_size` if it is a usable heap size in bytes, else raise :exc:`ConfigError`."""
    if isinstance(heap_size, bool) or not isinstance(heap_size, int):
        raise ConfigError(f"heap size must be an integer, not {heap_size!r}")
    if heap_size <= 0:
        raise ConfigError(f"heap size must be positive, not {heap_size}")
    if heap_size > MAX_HEAP_SIZE:
        raise ConfigError(f"heap size {heap_size} exceeds the maximum of {MAX_HEAP_SIZE} bytes")
    return heap_size


@dataclass
class BatchArrays:
    """The memory one batch's heaps reference; shapes ``(steps, streams, ...)``."""

    payload: np.ndarray
    timestamps: np.ndarray
    status: np.ndarray | None = None


class WireFormat(ABC):
    """A wire format for `destinations` destinations."""

    name: str
    sample_bits: int
    #: Whether the first data heap of a capture also carries the descriptors.
    descriptors_in_data: bool
    default_heap_size: int

    def __init__(self, destinations: int) -> None:
        self.destinations = destinations

    # ---- shape of the stream

    @property
    @abstractmethod
    def streams(self) -> int:
        """Heaps per timestamp (polarisations)."""

    @abstractmethod
    def substream(self, step: int, stream: int) -> int:
        """The destination (spead2 substream) of heap `stream` of batch step `step`."""

    @property
    def step_multiple(self) -> int:
        """Steps per batch are rounded up to a multiple of this."""
        return 1

    def heap_samples(self, heap_size: int) -> int:
        """ADC samples in a heap of `heap_size` payload bytes."""
        return heap_size * 8 // self.sample_bits

    def check_heap_size(self, heap_size: int, max_packet_size: int) -> None:
        """Raise :exc:`ConfigError` unless the format can use this heap size."""
        validate_heap_size(heap_size)

    # ---- items and heaps

    @abstractmethod
    def data_item_group(self, heap_size: int) -> spead2.send.ItemGroup:
        """Items as the data heaps reference them."""

    def descriptor_item_group(self, heap_size: int) -> spead2.send.ItemGroup:
        """Items as the descriptors describe them (the data items, unless they differ)."""
        return self.data_item_group(heap_size)

    @abstractmethod
    def allocate(self, steps: int, heap_size: int) -> BatchArrays:
        """Zeroed arrays for one batch."""

    @abstractmethod
    def _set_values(self, item_group: spead2.send.ItemGroup, arrays: BatchArrays,
                    step: int, stream: int) -> None:
        """Point the items at the memory of heap (`step`, `stream`)."""

    def make_heaps(
        self, heap_size: int, arrays: BatchArrays, repeat_pointers: bool
    ) -> tuple[spead2.send.HeapReferenceList, spead2.send.HeapReferenceList]:
        """Build a batch's heaps: a plain list and one whose first heaps carry descriptors.

        The second list is used to start a capture in formats with
        :attr:`descriptors_in_data`; it shares every other heap with the first.
        """
        item_group = self.data_item_group(heap_size)
        plain: list[spead2.send.HeapReference] = []
        first: list[spead2.send.HeapReference] = []
        steps = arrays.timestamps.shape[0]
        for step in range(steps):
            for stream in range(self.streams):
                self._set_values(item_group, arrays, step, stream)
                substream = self.substream(step, stream)
                heap = item_group.get_heap(descriptors="none", data="all")
                heap.repeat_pointers = repeat_pointers
                plain.append(spead2.send.HeapReference(heap, substream_index=substream))
                if self.descriptors_in_data and step * self.streams + stream < self.destinations:
                    heap = item_group.get_heap(descriptors="all", data="all")
                    heap.repeat_pointers = repeat_pointers
                    first.append(spead2.send.HeapReference(heap, substream_index=substream))
                else:
                    first.append(plain[-1])
        return spead2.send.HeapReferenceList(plain), spead2.send.HeapReferenceList(first)

    def sample_heap(self, heap_size: int, repeat_pointers: bool) -> spead2.send.Heap:
        """One data heap (zero samples), to work out packet sizes."""
        arrays = self.allocate(1, heap_size)
        item_group = self.data_item_group(heap_size)
        self._set_values(item_group, arrays, 0, 0)
        heap = item_group.get_heap(descriptors="none", data="all")
        heap.repeat_pointers = repeat_pointers
        return heap

    def packet_size(
        self, heap_size: int, max_packet_size: int, forced: int | None, equal: bool = True
    ) -> tuple[int, bool]:
        """The maximum packet size to send with, and whether heaps repeat their pointers.

        Forced sizes are used as given. Otherwise, with `equal` (the sender has
        GSO): the largest size up to `max_packet_size` that splits a heap into
        equal packets, with pointers repeated so that power-of-two heaps split
        evenly, unless that takes more packets than the maximum size does (1 MiB
        heaps: 128 x 8248 bytes against 118 at 8972; per-packet cost then
        outweighs the GSO gain). In every other case, the maximum.
        """
        if forced is not None:
            return forced, False
        if equal:
            size = equal_packet_size(self.sample_heap(heap_size, True), max_packet_size)
            if size is not None:
                evenly = len(packet_sizes(self.sample_heap(heap_size, True), size))
                fewest = len(packet_sizes(self.sample_heap(heap_size, False), max_packet_size))
                if evenly <= fewest:
                    return size, True
        return max_packet_size, False

    # ---- filling

    @abstractmethod
    def fill(self, arrays: BatchArrays, counters: np.ndarray, timestamps: np.ndarray) -> None:
        """Write steps ``0 .. len(counters)-1`` of a batch: heap counter and timestamp per step."""


class TutorialFormat(WireFormat):
    """spead2's tutorial layout: timestamp and int8 samples; destinations take turns."""

    name = "tutorial"
    sample_bits = 8
    descriptors_in_data = True
    default_heap_size = 8192

    @property
    def streams(self) -> int:
        return 1

    def substream(self, step: int, stream: int) -> int:
        return step % self.destinations

    @property
    def step_multiple(self) -> int:
        return self.destinations

    def data_item_group(self, heap_size: int) -> spead2.send.ItemGroup:
        item_group = spead2.send.ItemGroup(flavour=FLAVOUR)
        _add_timestamp(item_group)
        item_group.add_item(
            ADC_SAMPLES_ID, "adc_samples", "ADC samples, one signed byte each",
            shape=(heap_size,), dtype=SAMPLE_DTYPE,
        )
        return item_group

    def allocate(self, steps: int, heap_size: int) -> BatchArrays:
        return BatchArrays(
            payload=np.zeros((steps, 1, heap_size), SAMPLE_DTYPE),
            timestamps=np.zeros((steps, 1), TIMESTAMP_DTYPE),
        )

    def _set_values(self, item_group: spead2.send.ItemGroup, arrays: BatchArrays,
                    step: int, stream: int) -> None:
        # ``[i, j, ...]`` is a 0-d / 1-d *view*, so the heap references the array.
        item_group["timestamp"].value = arrays.timestamps[step, stream, ...]
        item_group["adc_samples"].value = arrays.payload[step, stream, ...]

    def fill(self, arrays: BatchArrays, counters: np.ndarray, timestamps: np.ndarray) -> None:
        count = len(counters)
        # astype wraps to int8 (int8(n) itself would overflow in numpy 2).
        arrays.payload[:count] = counters.astype(np.int8)[:, np.newaxis, np.newaxis]
        arrays.timestamps[:count] = timestamps[:, np.newaxis]


class MeerkatFormat(WireFormat):
    """The MeerKAT digitiser format: one packet per heap, one stream per polarisation.

    Heap ``n`` of a polarisation has every sample equal to ``n`` wrapped into
    the signed `sample_bits` range (for 10 bits: -512..511), so the pattern
    runs 0, 1, ..., 511, -512, ..., -1, 0, ... Heaps at full scale (511, -511
    and -512 for 10 bits) report every sample saturated in digitiser_status.
    """

    name = "meerkat"
    descriptors_in_data = False

    def __init__(self, destinations: int, sample_bits: int = 10, digitiser_id: int = 0) -> None:
        super().__init__(destinations)
        if not 2 <= sample_bits <= 32:
            raise ConfigError(f"sample bits must be 2-32, not {sample_bits}")
        if digitiser_id < 0:
            raise ConfigError(f"digitiser id must be >= 0, not {digitiser_id}")
        self.sample_bits = sample_bits
        self.digitiser_id = digitiser_id
        self.default_heap_size = 4096 * sample_bits // 8

    @property
    def streams(self) -> int:
        return self.destinations

    def substream(self, step: int, stream: int) -> int:
        return stream

    def check_heap_size(self, heap_size: int, max_packet_size: int) -> None:
        validate_heap_size(heap_size)
        group = packing.group_bytes(self.sample_bits)
        if heap_size % group:
            raise ConfigError(
                f"heap size {heap_size} is not whole groups of {self.sample_bits}-bit samples "
                f"(a multiple of {group} bytes)"
            )
        packet = self._single_packet_size(heap_size)
        if packet > max_packet_size:
            raise ConfigError(
                f"heap size {heap_size} needs {packet}-byte packets (one packet per heap), "
                f"more than the maximum packet size {max_packet_size}"
            )

    def packet_size(
        self, heap_size: int, max_packet_size: int, forced: int | None, equal: bool = True
    ) -> tuple[int, bool]:
        # Exactly one packet per heap, whatever the user asked for.
        return self._single_packet_size(heap_size), True

    def _single_packet_size(self, heap_size: int) -> int:
        """Bytes of the one packet that carries a whole heap (payload plus header)."""
        return packet_sizes(self.sample_heap(heap_size, True), 1 << 30)[0]

    def data_item_group(self, heap_size: int) -> spead2.send.ItemGroup:
        # Sent as the bytes they are: the samples are packed by dsim, not by spead2.
        return self._item_group(heap_size, "Packed raw samples", dict(
            shape=(heap_size,), dtype=np.uint8))

    def descriptor_item_group(self, heap_size: int) -> spead2.send.ItemGroup:
        return self._item_group(
            heap_size,
            f"Raw ADC samples, {self.sample_bits}-bit two's complement, packed big-endian",
            dict(shape=(self.heap_samples(heap_size),), format=[("i", self.sample_bits)]),
        )

    def _item_group(self, heap_size: int, raw_description: str,
                    raw_type: dict[str, Any]) -> spead2.send.ItemGroup:
        item_group = spead2.send.ItemGroup(flavour=FLAVOUR)
        _add_timestamp(item_group)
        _add_immediate(item_group, DIGITISER_ID_ID, "digitiser_id",
                       "Digitiser serial number; the low bit is the polarisation")
        _add_immediate(item_group, DIGITISER_STATUS_ID, "digitiser_status",
                       "Bits 47..32: samples at full scale in the heap; bit 1: saturation flag")
        item_group.add_item(ADC_SAMPLES_ID, "raw_data", raw_description, **raw_type)
        return item_group

    def allocate(self, steps: int, heap_size: int) -> BatchArrays:
        return BatchArrays(
            payload=np.zeros((steps, self.streams, heap_size), np.uint8),
            timestamps=np.zeros((steps, self.streams), TIMESTAMP_DTYPE),
            status=np.zeros((steps, self.streams), TIMESTAMP_DTYPE),
        )

    def _set_values(self, item_group: spead2.send.ItemGroup, arrays: BatchArrays,
                    step: int, stream: int) -> None:
        assert arrays.status is not None
        item_group["timestamp"].value = arrays.timestamps[step, stream, ...]
        item_group["digitiser_status"].value = arrays.status[step, stream, ...]
        item_group["digitiser_id"].value = self.digitiser_id + stream
        item_group["raw_data"].value = arrays.payload[step, stream, ...]

    def status_word(self, values: np.ndarray, heap_samples: int) -> np.ndarray:
        """digitiser_status for heaps whose samples all equal `values`."""
        saturated = packing.saturated(values, self.sample_bits)
        word = (min(heap_samples, STATUS_COUNT_MAX) << STATUS_COUNT_SHIFT) | STATUS_SATURATED
        return np.where(saturated, np.uint64(word), np.uint64(0))

    def fill(self, arrays: BatchArrays, counters: np.ndarray, timestamps: np.ndarray) -> None:
        assert arrays.status is not None
        count = len(counters)
        bits = self.sample_bits
        values = packing.wrap(counters, bits)
        groups = packing.uniform_groups(values, bits)  # (count, group bytes)
        _, streams, heap_size = arrays.payload.shape
        # Every heap is its first group repeated: write the group, then double the
        # filled prefix until the heap is full (a few long copies, instead of a
        # broadcast whose innermost run is a handful of bytes: 60 us, not 700,
        # for 102 heaps of 5120 bytes).
        rows = arrays.payload[:count].reshape(count * streams, heap_size)
        width = groups.shape[1]
        rows[:, :width] = np.repeat(groups, streams, axis=0)
        while width < heap_size:
            step = min(width, heap_size - width)
            rows[:, width: width + step] = rows[:, :step]
            width += step
        arrays.timestamps[:count] = timestamps[:, np.newaxis]
        heap_samples = self.heap_samples(heap_size)
        arrays.status[:count] = self.status_word(values, heap_samples)[:, np.newaxis]


def make_format(
    name: str, destinations: int, sample_bits: int | None = None, digitiser_id: int = 0
) -> WireFormat:
    """The format called `name` ("tutorial" or "meerkat")."""
    if name == "tutorial":
        if sample_bits not in (None, 8):
            raise ConfigError(
                "the tutorial format has 8-bit samples (--sample-bits is for meerkat)"
            )
        return TutorialFormat(destinations)
    if name == "meerkat":
        return MeerkatFormat(destinations, 10 if sample_bits is None else sample_bits,
                             digitiser_id)
    raise ConfigError(f"unknown format {name!r} (tutorial or meerkat)")


def _add_timestamp(item_group: spead2.send.ItemGroup) -> None:
    _add_immediate(
        item_group, TIMESTAMP_ID, "timestamp", "Index of the first ADC sample in the heap"
    )


def _add_immediate(item_group: spead2.send.ItemGroup, item_id: int, name: str,
                   description: str) -> None:
    item_group.add_item(
        item_id, name, description, shape=(), format=[("u", FLAVOUR.heap_address_bits)]
    )


def make_end_heaps(n_substreams: int) -> spead2.send.HeapReferenceList:
    """End-of-stream heaps, one per substream, so that every receiver stops."""
    heap = spead2.send.Heap(FLAVOUR)
    heap.add_end()
    return spead2.send.HeapReferenceList(
        [spead2.send.HeapReference(heap, substream_index=i) for i in range(n_substreams)]
    )


def make_descriptor_heap(item_group: spead2.send.ItemGroup) -> spead2.send.Heap:
    """A heap with the descriptors of `item_group` and no data."""
    return item_group.get_heap(descriptors="all", data="none")

def _header_size(packet: bytes) -> int:
    """Bytes of SPEAD header and item pointers at the start of `packet`."""
    return 8 + 8 * int.from_bytes(packet[6:8], "big")


def packet_sizes(heap: spead2.send.Heap, max_packet_size: int) -> list[int]:
    """Sizes of the packets spead2 splits `heap` into with this maximum packet size."""
    return [len(p) for p in spead2.send.PacketGenerator(heap, 1, max_packet_size)]


def equal_packet_size(heap: spead2.send.Heap, max_packet_size: int) -> int | None:
    """The largest packet size, at most `max_packet_size`, that splits `heap` into equal packets.

    Linux UDP segmentation offload (GSO) hands runs of equal-sized packets to
    the kernel in one call; a heap that splits unevenly (16 KiB with 9000-byte
    packets: 9000 + 7480 bytes) breaks the run at every heap. The split is
    worked out from the real packet headers (the first packet of a heap carries
    more item pointers than the rest unless the heap repeats its pointers) and
    spead2's 8-byte payload granularity, then checked with spead2's own packet
    generator. Returns None if there is no such size (for example an odd heap
    size) with at most four times the fewest packets.
    """
    packets = list(spead2.send.PacketGenerator(heap, 1, max_packet_size))
    if len(packets) == 1:
        return max_packet_size  # every packet is a whole heap: all the same size
    first = _header_size(packets[0])
    rest = _header_size(packets[1])
    payload = sum(len(p) - _header_size(p) for p in packets)
    # m packets of size P carry m * P - first - (m - 1) * rest bytes of payload.
    total = payload + first - rest
    fewest = -(-total // (max_packet_size - rest))
    for m in range(fewest, 4 * fewest + 1):
        if total % m == 0 and (total // m) % 8 == 0:
            size = rest + total // m
            sizes = packet_sizes(heap, size)
            if len(sizes) == m and min(sizes) == max(sizes):
                return size
    return None


def make_item_group(heap_size: int) -> spead2.send.ItemGroup:
    """The tutorial format's items for `heap_size` (for tools and tests that build heaps)."""
    return TutorialFormat(1).data_item_group(heap_size)


def auto_packet_size(heap_size: int, max_packet_size: int) -> int | None:
    """:func:`equal_packet_size` for a tutorial data heap of `heap_size` (pointers repeated)."""
    return equal_packet_size(TutorialFormat(1).sample_heap(heap_size, True), max_packet_size)
