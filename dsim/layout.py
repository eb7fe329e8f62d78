"""The wire format: which items a heap carries and how heaps are built.

This is the tutorial layout of spead2's "Batching heaps" tutorial, which the
rest of dsim is built around:

* item 0x1600 ``timestamp``: immediate unsigned integer, the index of the
  heap's first ADC sample;
* item 0x3300 ``adc_samples``: int8 array of shape ``(heap_size,)``.

dsim sends it with the SPEAD-64-48 flavour (48-bit immediates), as MeerKAT
does, so that timestamps wrap only after 2**48 samples (about 31 hours at
2.5 GB/s) instead of 2**40 (about 7 minutes). spead2 receivers detect the
flavour from the packets, so they need no configuration for it.

Heaps are built once per heap size and only ever *reference* numpy memory:
the engine rewrites the arrays between sends and the next send carries the new
values.
"""

from __future__ import annotations

import spead2
import spead2.send
import numpy as np

from .errors import ConfigError

#: SPEAD-64-48: 64-bit item pointers with 48-bit heap addresses.
FLAVOUR = spead2.Flavour(4, 64, 48, 0)
TIMESTAMP_ID = 0x1600
ADC_SAMPLES_ID = 0x3300
#: Timestamps on the wire are taken modulo this.
TIMESTAMP_MODULUS = 1 << FLAVOUR.heap_address_bits
#: Largest heap size accepted, in bytes. Two batches of at least one heap each
#: are kept in memory, so this bounds dsim's payload memory at 128 MiB.
MAX_HEAP_SIZE = 64 * 1024 * 1024
#: Type of the per-heap timestamp array that immediate items reference.
TIMESTAMP_DTYPE = np.dtype(">u8")
SAMPLE_DTYPE = np.dtype(np.int8)


def validate_heap_size(heap_size: int) -> int:
    """Return `heap_size` if it is a usable heap size, else raise :exc:`ConfigError`."""
    if isinstance(heap_size, bool) or not isinstance(heap_size, int):
        raise ConfigError(f"heap size must be an integer, not {heap_size!r}")
    if heap_size <= 0:
        raise ConfigError(f"heap size must be positive, not {heap_size}")
    if heap_size > MAX_HEAP_SIZE:
        raise ConfigError(f"heap size {heap_size} exceeds the maximum of {MAX_HEAP_SIZE} bytes")
    return heap_size


def make_item_group(heap_size: int) -> spead2.send.ItemGroup:
    """Create the item group (items and descriptors) for one heap size."""
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
        dtype=SAMPLE_DTYPE,
    )
    return item_group


def make_heaps(
    item_group: spead2.send.ItemGroup,
    samples: np.ndarray,
    timestamps: np.ndarray,
    n_substreams: int,
    repeat_pointers: bool = False,
) -> tuple[spead2.send.HeapReferenceList, spead2.send.HeapReferenceList]:
    """Build the heaps of one batch, referencing rows of `samples` and `timestamps`.

    Heap ``j`` goes to substream ``j % n_substreams``. Two lists are returned:
    the plain one, and one whose first `n_substreams` heaps also carry the
    descriptors (one for each destination), used to start a capture or after a
    heap-size change. They share every other heap. With `repeat_pointers`
    every packet carries all item pointers (the timestamp among them), which
    makes every packet of a heap the same size when the payload divides evenly.
    """
    timestamp_item = item_group["timestamp"]
    samples_item = item_group["adc_samples"]
    plain: list[spead2.send.HeapReference] = []
    first: list[spead2.send.HeapReference] = []
    for j in range(len(timestamps)):
        # ``[j, ...]`` is a 0-d / 1-d *view*, so the heap references the array.
        timestamp_item.value = timestamps[j, ...]
        samples_item.value = samples[j, ...]
        substream = j % n_substreams
        heap = item_group.get_heap(descriptors="none", data="all")
        heap.repeat_pointers = repeat_pointers
        plain.append(spead2.send.HeapReference(heap, substream_index=substream))
        if j < n_substreams:
            heap = item_group.get_heap(descriptors="all", data="all")
            heap.repeat_pointers = repeat_pointers
            first.append(spead2.send.HeapReference(heap, substream_index=substream))
        else:
            first.append(plain[-1])
    return spead2.send.HeapReferenceList(plain), spead2.send.HeapReferenceList(first)


def make_end_heaps(n_substreams: int) -> spead2.send.HeapReferenceList:
    """End-of-stream heaps, one per substream, so that every receiver stops."""
    heap = spead2.send.Heap(FLAVOUR)
    heap.add_end()
    return spead2.send.HeapReferenceList(
        [spead2.send.HeapReference(heap, substream_index=i) for i in range(n_substreams)]
    )


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


def auto_packet_size(heap_size: int, max_packet_size: int) -> int | None:
    """:func:`equal_packet_size` for a data heap of `heap_size` (pointers repeated)."""
    item_group = make_item_group(heap_size)
    item_group["timestamp"].value = np.zeros((), TIMESTAMP_DTYPE)
    item_group["adc_samples"].value = np.zeros(heap_size, SAMPLE_DTYPE)
    heap = item_group.get_heap(descriptors="none", data="all")
    heap.repeat_pointers = True
    return equal_packet_size(heap, max_packet_size)
