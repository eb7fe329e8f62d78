"""The wire formats: which items a heap carries, how heaps are built, packet sizes.

Two formats, chosen at start-up:

* ``tutorial`` (default), the layout of spead2's "Batching heaps" tutorial:
  item 0x1600 ``timestamp`` (immediate: the index of the heap's first ADC
  sample) and item 0x3300 ``adc_samples`` (int8, one byte per sample). One
  polarisation; with several destinations the heaps take turns among them.
  Every capture ends with an end-of-stream heap per destination, as the
  tutorial's receivers expect.
* ``meerkat``, what a MeerKAT digitiser sends its F-engines: every heap is
  exactly one packet and repeats all item pointers; items 0x1600
  ``timestamp``, 0x3101 ``digitiser_id``, 0x3102 ``digitiser_status`` and
  0x3300 ``raw_data`` (N-bit samples packed big-endian, see
  :mod:`dsim.packing`). One polarisation per destination (each possibly
  fanned out over several multicast groups); the heaps of all polarisations
  for a timestamp go out together. No end-of-stream heaps unless asked: a
  MeerKAT F-engine receiver stops for good on the first one.

Both use SPEAD-64-48 (see :mod:`dsim.spead`). Heaps only ever *reference*
numpy memory: :meth:`WireFormat.build_heap` points the items at a timestamp
cell, a status cell and a payload row, and whatever those hold when spead2
sends the heap is what goes on the wire.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import spead2
import spead2.send

from . import packing
from .errors import ConfigError
from .spead import (
    ADC_SAMPLES_ID,
    DIGITISER_ID_ID,
    DIGITISER_STATUS_ID,
    FLAVOUR,
    IMMEDIATE_BITS,
    TIMESTAMP_ID,
)

#: Largest heap size accepted, in bytes.
MAX_HEAP_SIZE = 64 * 1024 * 1024
#: Largest digitiser id that fits an immediate item.
MAX_DIGITISER_ID = (1 << IMMEDIATE_BITS) - 1
#: Type of the cells that immediate items reference (big-endian, as on the wire).
CELL_DTYPE = np.dtype(">u8")
_CELL_BYTES = IMMEDIATE_BITS // 8


def immediate_bytes(cells: np.ndarray) -> np.ndarray:
    """The wire bytes of each cell of a 1-d ``>u8`` array: shape ``(n, 6)``, views, not copies.

    An immediate item carries the low 48 bits of its value; this is what
    spead2's own items hand it, so writing a cell changes the next send.
    """
    return cells.view(np.uint8).reshape(len(cells), 8)[:, 8 - _CELL_BYTES :]


class _ItemBuffer:
    """An item as spead2's ``Heap.add_item`` reads it: an id and a buffer, nothing else.

    ``spead2.send.Heap.add_item`` takes any object with ``id``,
    ``to_buffer()`` and ``allow_immediate()``. ``spead2.Item`` answers those
    with a general format machinery that costs three times as much per heap;
    dsim builds thousands of heaps per signal, from buffers already in wire
    form, so it hands spead2 just the buffer. Tests compare the packets with
    those of heaps built by ``spead2.send.ItemGroup``.
    """

    __slots__ = ("_buffer", "_immediate", "id")

    def __init__(self, item_id: int, buffer: np.ndarray, immediate: bool) -> None:
        self.id = item_id
        self._buffer = buffer
        self._immediate = immediate

    def to_buffer(self) -> np.ndarray:
        return self._buffer

    def allow_immediate(self) -> bool:
        return self._immediate


def _add(heap: spead2.send.Heap, item_id: int, buffer: np.ndarray, immediate: bool) -> None:
    """Add an item to `heap` straight from a wire-form buffer (see :class:`_ItemBuffer`)."""
    heap.add_item(_ItemBuffer(item_id, buffer, immediate))  # type: ignore[arg-type]


@dataclass(frozen=True)
class PacketChoice:
    """How heaps of one size are put into packets."""

    size: int  #: maximum packet size given to spead2
    repeat_pointers: bool  #: every packet repeats all item pointers


def validate_heap_size(heap_size: object) -> int:
    """Return `heap_size` if it is a usable heap size in bytes, else raise :exc:`ConfigError`."""
    if isinstance(heap_size, bool) or not isinstance(heap_size, int):
        raise ConfigError(f"heap size must be an integer, not {heap_size!r}")
    if heap_size <= 0:
        raise ConfigError(f"heap size must be positive, not {heap_size}")
    if heap_size > MAX_HEAP_SIZE:
        raise ConfigError(f"heap size {heap_size} exceeds the maximum of {MAX_HEAP_SIZE} bytes")
    return heap_size


class WireFormat(ABC):
    """A wire format; `groups[p]` destinations (spead2 substreams) for polarisation `p`.

    The heap whose timestamp is ``t`` (of `H` samples) for polarisation `p` goes
    to that polarisation's destination ``(t // H) mod groups[p]``: MeerKAT's
    fan-out of a polarisation over consecutive multicast groups, and the
    tutorial's destinations taking turns.
    """

    name: ClassVar[str]
    sample_bits: int
    default_heap_size: int
    #: Whether captures end with end-of-stream heaps unless told otherwise.
    default_end_of_stream: ClassVar[bool]

    def __init__(self, groups: Sequence[int]) -> None:
        if not groups or any(g < 1 for g in groups):
            raise ConfigError("every polarisation needs at least one destination")
        self.groups = tuple(groups)
        self.first_substream = tuple(sum(self.groups[:p]) for p in range(len(self.groups)))

    @property
    def n_pols(self) -> int:
        """Polarisations: heaps per timestamp."""
        return len(self.groups)

    @property
    def n_substreams(self) -> int:
        return sum(self.groups)

    @property
    def group_samples(self) -> int:
        """Heaps hold a whole number of runs of this many samples (whole bytes)."""
        return packing.group_samples(self.sample_bits)

    def heap_samples(self, heap_size: int) -> int:
        """ADC samples in a heap of `heap_size` payload bytes."""
        return heap_size * 8 // self.sample_bits

    def substream(self, pol: int, heap_index: int) -> int:
        """The substream of the `heap_index`-th heap (timestamp / heap samples) of `pol`."""
        return self.first_substream[pol] + heap_index % self.groups[pol]

    def start_timestamp(self, timestamp: int, heap_samples: int) -> int:
        """Where a run of heaps of `heap_samples` may start, at or after `timestamp`."""
        return timestamp

    def check_heap_size(self, heap_size: int, max_packet_size: int) -> None:
        """Raise :exc:`ConfigError` unless the format can send heaps of `heap_size` bytes."""
        validate_heap_size(heap_size)
        group = packing.group_bytes(self.sample_bits)
        if heap_size % group:
            raise ConfigError(
                f"heap size {heap_size} is not whole groups of {self.sample_bits}-bit samples "
                f"(a multiple of {group} bytes)"
            )

    # ---- items and heaps

    @abstractmethod
    def item_group(self, heap_size: int) -> spead2.send.ItemGroup:
        """The items, as the descriptors describe them."""

    def descriptor_heap(self, heap_size: int) -> spead2.send.Heap:
        """A heap with the descriptors and no data."""
        return self.item_group(heap_size).get_heap(descriptors="all", data="none")

    @abstractmethod
    def build_heap(
        self,
        timestamp: np.ndarray,
        payload: np.ndarray,
        status: np.ndarray,
        pol: int,
        repeat_pointers: bool,
    ) -> spead2.send.Heap:
        """A data heap whose items reference these wire-form buffers.

        `timestamp` and `status` are 6-byte rows of :func:`immediate_bytes`,
        `payload` a row of packed samples (uint8).
        """

    def sample_heap(self, heap_size: int, repeat_pointers: bool) -> spead2.send.Heap:
        """One data heap of zeros, to work out packet sizes."""
        cells = immediate_bytes(np.zeros(2, CELL_DTYPE))
        payload = np.zeros(heap_size, np.uint8)
        # spead2 holds references to the buffers, so they live as long as the heap.
        return self.build_heap(cells[0], payload, cells[1], 0, repeat_pointers)

    def packet_size(
        self, heap_size: int, max_packet_size: int, forced: int | None, equal: bool = True
    ) -> PacketChoice:
        """The packet size to send with, and whether heaps repeat their pointers.

        Forced sizes are used as given. Otherwise, with `equal` (the sender has
        GSO): the largest size up to `max_packet_size` that splits a heap into
        equal packets, with pointers repeated so that power-of-two heaps split
        evenly, unless that takes more packets than the maximum size does (1 MiB
        heaps: 128 x 8248 bytes against 118 at 8972; per-packet cost then
        outweighs the GSO gain). In every other case, the maximum.
        """
        if forced is not None:
            return PacketChoice(forced, False)
        if equal:
            size = equal_packet_size(self.sample_heap(heap_size, True), max_packet_size)
            if size is not None:
                evenly = len(packet_sizes(self.sample_heap(heap_size, True), size))
                fewest = len(packet_sizes(self.sample_heap(heap_size, False), max_packet_size))
                if evenly <= fewest:
                    return PacketChoice(size, True)
        return PacketChoice(max_packet_size, False)


class TutorialFormat(WireFormat):
    """spead2's tutorial layout: timestamp and int8 samples; destinations take turns."""

    name = "tutorial"
    sample_bits = 8
    default_heap_size = 8192
    default_end_of_stream = True

    def __init__(self, destinations: int = 1) -> None:
        super().__init__([destinations])

    def item_group(self, heap_size: int) -> spead2.send.ItemGroup:
        item_group = spead2.send.ItemGroup(flavour=FLAVOUR)
        _add_immediate(
            item_group, TIMESTAMP_ID, "timestamp", "Index of the first ADC sample in the heap"
        )
        item_group.add_item(
            ADC_SAMPLES_ID,
            "adc_samples",
            "ADC samples, one signed byte each",
            shape=(heap_size,),
            dtype=np.int8,
        )
        return item_group

    def build_heap(
        self,
        timestamp: np.ndarray,
        payload: np.ndarray,
        status: np.ndarray,
        pol: int,
        repeat_pointers: bool,
    ) -> spead2.send.Heap:
        heap = spead2.send.Heap(FLAVOUR)
        heap.repeat_pointers = repeat_pointers
        _add(heap, TIMESTAMP_ID, timestamp, True)
        # Immediate when it fits (heaps of 6 bytes or less), as spead2 does for an int8 array.
        _add(heap, ADC_SAMPLES_ID, payload, True)
        return heap


class MeerkatFormat(WireFormat):
    """The MeerKAT digitiser format: one packet per heap, one stream per polarisation."""

    name = "meerkat"
    default_end_of_stream = False

    def __init__(
        self, groups: Sequence[int] = (1, 1), sample_bits: int = 10, digitiser_id: int = 0
    ) -> None:
        super().__init__(groups)
        if self.n_pols > 2:
            # A third id, 2k + 2, would read as the next antenna's first polarisation.
            raise ConfigError(
                f"a MeerKAT digitiser has at most two polarisations (one DEST each), "
                f"not {self.n_pols}"
            )
        packing.check_sample_bits(sample_bits)
        if isinstance(digitiser_id, bool) or not 0 <= digitiser_id <= MAX_DIGITISER_ID:
            raise ConfigError(
                f"digitiser id must be 0 to 2**{IMMEDIATE_BITS} - 1 (it is a "
                f"{IMMEDIATE_BITS}-bit immediate item), not {digitiser_id}"
            )
        if digitiser_id % 2 and self.n_pols > 1:
            raise ConfigError(
                f"digitiser id {digitiser_id} is odd: receivers take the polarisation from the "
                "id's low bit, so the first polarisation needs an even id"
            )
        self.sample_bits = sample_bits
        self.digitiser_id = digitiser_id
        self.default_heap_size = 4096 * sample_bits // 8
        self._ids = immediate_bytes(
            np.arange(digitiser_id, digitiser_id + self.n_pols, dtype=CELL_DTYPE)
        )

    def start_timestamp(self, timestamp: int, heap_samples: int) -> int:
        # F-engines place heaps by timestamp / heap samples: keep them multiples.
        return -(-timestamp // heap_samples) * heap_samples

    def check_heap_size(self, heap_size: int, max_packet_size: int) -> None:
        super().check_heap_size(heap_size, max_packet_size)
        size = self._single_packet(heap_size)
        if size > max_packet_size:
            raise ConfigError(
                f"heap size {heap_size} needs {size}-byte packets (one packet per heap), "
                f"more than the maximum packet size {max_packet_size}"
            )

    def packet_size(
        self, heap_size: int, max_packet_size: int, forced: int | None, equal: bool = True
    ) -> PacketChoice:
        # Exactly one packet per heap, whatever was asked.
        return PacketChoice(self._single_packet(heap_size), True)

    def _single_packet(self, heap_size: int) -> int:
        """The packet size that makes spead2 send a heap of `heap_size` as exactly one packet.

        spead2 fills packets in 8-byte steps and needs room to repeat every item
        pointer, so the size is found with its own packet generator rather than
        computed: the packet itself is the 72-byte header plus the payload.
        """
        heap = self.sample_heap(heap_size, True)
        natural = packet_sizes(heap, heap_size + 1024)[0]
        reason = "no packet size works"
        for size in range(natural, natural + 64):
            try:
                if len(packet_sizes(heap, size)) == 1:
                    return size
            except ValueError as exc:  # spead2 refuses the size
                reason = str(exc)
        raise ConfigError(
            f"heap size {heap_size} cannot be sent as one packet per heap (spead2: {reason})"
        )

    def item_group(self, heap_size: int) -> spead2.send.ItemGroup:
        item_group = spead2.send.ItemGroup(flavour=FLAVOUR)
        _add_immediate(
            item_group, TIMESTAMP_ID, "timestamp", "Index of the first ADC sample in the heap"
        )
        _add_immediate(
            item_group,
            DIGITISER_ID_ID,
            "digitiser_id",
            "Digitiser serial number; the low bit is the polarisation",
        )
        _add_immediate(
            item_group,
            DIGITISER_STATUS_ID,
            "digitiser_status",
            "Bits 47..32: samples at full scale in the heap; bit 1: saturation flag",
        )
        raw: dict[str, Any] = dict(
            shape=(self.heap_samples(heap_size),), format=[("i", self.sample_bits)]
        )
        item_group.add_item(
            ADC_SAMPLES_ID,
            "raw_data",
            f"Raw ADC samples, {self.sample_bits}-bit two's complement, packed big-endian",
            **raw,
        )
        return item_group

    def build_heap(
        self,
        timestamp: np.ndarray,
        payload: np.ndarray,
        status: np.ndarray,
        pol: int,
        repeat_pointers: bool,
    ) -> spead2.send.Heap:
        heap = spead2.send.Heap(FLAVOUR)
        # Always, whatever the packet plan asks: a MeerKAT F-engine takes each packet's
        # timestamp and digitiser id from that packet, as the real digitiser sends them.
        heap.repeat_pointers = True
        _add(heap, TIMESTAMP_ID, timestamp, True)
        _add(heap, DIGITISER_ID_ID, self._ids[pol], True)
        _add(heap, DIGITISER_STATUS_ID, status, True)
        # Never immediate, as spead2 decides for items of a non-whole-byte sample type.
        _add(heap, ADC_SAMPLES_ID, payload, False)
        return heap


FORMATS = ("tutorial", "meerkat")


def make_format(
    name: str, groups: Sequence[int], sample_bits: int | None = None, digitiser_id: int = 0
) -> WireFormat:
    """The format called `name`, with `groups[p]` destinations for polarisation `p`.

    For ``tutorial`` the destinations of every ``DEST`` are one polarisation's,
    taking turns; for ``meerkat`` each ``DEST`` is a polarisation.
    """
    if name == "tutorial":
        if sample_bits not in (None, 8):
            raise ConfigError(
                "the tutorial format has 8-bit samples (--sample-bits is for meerkat)"
            )
        if digitiser_id:
            raise ConfigError(
                "the tutorial format has no digitiser id (--digitiser-id is for meerkat)"
            )
        return TutorialFormat(sum(groups))
    if name == "meerkat":
        return MeerkatFormat(groups, 10 if sample_bits is None else sample_bits, digitiser_id)
    raise ConfigError(f"unknown format {name!r} (tutorial or meerkat)")


def end_heaps(n_substreams: int, first_cnt: int) -> spead2.send.HeapReferenceList:
    """End-of-stream heaps, one per substream, with odd heap ids from `first_cnt`."""
    heap = spead2.send.Heap(FLAVOUR)
    heap.add_end()
    return spead2.send.HeapReferenceList(
        [
            spead2.send.HeapReference(heap, cnt=first_cnt + 2 * i, substream_index=i)
            for i in range(n_substreams)
        ]
    )


def _add_immediate(
    item_group: spead2.send.ItemGroup, item_id: int, name: str, description: str
) -> None:
    item_group.add_item(item_id, name, description, shape=(), format=[("u", IMMEDIATE_BITS)])


def _header_size(packet: bytes) -> int:
    """Bytes of SPEAD header and item pointers at the start of `packet`."""
    return 8 + 8 * int.from_bytes(packet[6:8], "big")


def packet_sizes(heap: spead2.send.Heap, max_packet_size: int) -> list[int]:
    """Sizes of the packets spead2 splits `heap` into with this maximum packet size."""
    return [len(p) for p in spead2.send.PacketGenerator(heap, 1, max_packet_size)]


def wire_bytes(heap: spead2.send.Heap, max_packet_size: int) -> int:
    """Bytes `heap` takes on the wire (UDP payloads), headers included."""
    return sum(packet_sizes(heap, max_packet_size))


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


def lcm(values: Sequence[int]) -> int:
    """Least common multiple of `values` (1 for none)."""
    return math.lcm(*values) if values else 1
