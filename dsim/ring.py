"""The heap ring: every heap a signal needs, built once, replayed without copying.

This is the batching technique of spead2's tutorial taken one step further.
For one heap size and one signal, the ring holds ``length`` positions, each
with a prebuilt heap per polarisation: the heap at position ``i`` points at
the payload and status of slot ``i mod count`` (see :mod:`dsim.pattern`) and
at its own timestamp cell ``cells[i]``. The heap whose timestamp is ``t``
always sits at position ``(t // H) mod length``, so that, with ``length`` a
multiple of each polarisation's destinations, the heap also goes to the
destination ``(t // H) mod groups``.

Sending a batch of ``k`` consecutive heaps is then one numpy operation (write
``k`` timestamps into the cells) and one ``async_send_heaps`` of a slice of
the prebuilt :class:`spead2.send.HeapReferenceList`: no payload is touched and
no Python runs per heap. The ring is long enough that the batches in flight
never share a timestamp cell with the batch being prepared.
"""

from __future__ import annotations

import threading

import numpy as np
import spead2.send

from .errors import ConfigError
from .layout import CELL_DTYPE, PacketChoice, WireFormat, immediate_bytes, lcm
from .pattern import Slots

#: Most heaps one ring may hold (each costs a few KiB of spead2 bookkeeping).
MAX_RING_HEAPS = 1 << 17


def ring_length(fmt: WireFormat, slots: int, min_length: int) -> int:
    """The shortest length that is a multiple of `slots` and of every fan-out, >= `min_length`."""
    base = lcm([slots, *fmt.groups])
    return base * -(-min_length // base)


def check_ring_size(fmt: WireFormat, slots: int, min_length: int, heap_samples: int) -> int:
    """The ring's length for `slots` heap-sized slots; :exc:`ConfigError` if it is too many."""
    length = ring_length(fmt, slots, min_length)
    n_heaps = length * fmt.n_pols
    if n_heaps > MAX_RING_HEAPS:
        raise ConfigError(
            f"{heap_samples}-sample heaps need {n_heaps} prebuilt heaps for this signal, "
            f"more than {MAX_RING_HEAPS}: use larger heaps or a shorter period"
        )
    return length


class HeapRing:
    """Prebuilt heaps for every position of the ring, and their timestamp cells."""

    def __init__(
        self,
        fmt: WireFormat,
        slots: Slots,
        packets: PacketChoice,
        min_length: int,
        cancel: threading.Event | None = None,
    ) -> None:
        length = check_ring_size(fmt, slots.count, min_length, slots.heap_samples)
        self.slots = slots
        self.n_pols = fmt.n_pols
        self.length = length
        self.heap_samples = slots.heap_samples
        self.cells = np.zeros(length, CELL_DTYPE)
        self._steps = np.arange(length, dtype=np.uint64) * np.uint64(slots.heap_samples)
        cell_bytes = immediate_bytes(self.cells)
        status_bytes = slots.status.view(np.uint8).reshape(slots.count, fmt.n_pols, 8)[:, :, 2:]
        refs = []
        for i in range(length):
            if cancel is not None and cancel.is_set():
                raise ConfigError("building the heaps was cancelled: the engine is closing")
            j = i % slots.count
            for pol in range(fmt.n_pols):
                heap = fmt.build_heap(
                    cell_bytes[i],
                    slots.payload[slots.row(pol), j],
                    status_bytes[j, pol],
                    pol,
                    packets.repeat_pointers,
                )
                refs.append(spead2.send.HeapReference(heap, substream_index=fmt.substream(pol, i)))
        self.heaps = spead2.send.HeapReferenceList(refs)

    def position(self, timestamp: int) -> int:
        """The ring position of the heap that starts at `timestamp`."""
        return (timestamp // self.heap_samples) % self.length

    def prepare(self, position: int, count: int, timestamp: int) -> None:
        """Make positions ``position .. position + count - 1`` the heaps from `timestamp` on.

        One numpy operation writes their timestamps; live slots (large counter
        heaps) are written too. Nothing else changes: the payload is replayed.
        """
        if self.slots.fill is not None:
            self.slots.fill(position % self.slots.count, count, timestamp)
        np.add(
            self._steps[:count],
            np.uint64(timestamp),
            out=self.cells[position : position + count],
        )

    def batch(self, position: int, count: int) -> spead2.send.HeapReferenceList:
        """The heaps (all polarisations) of `count` positions from `position`."""
        return self.heaps[position * self.n_pols : (position + count) * self.n_pols]
