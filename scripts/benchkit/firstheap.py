"""The first data heap an unread sink received, and when the kernel received it.

A :class:`TimestampSink` is an unread UDP socket on 127.0.0.1 (like
:class:`benchkit.net.UdpSink`) with ``SO_TIMESTAMPNS`` on: the kernel stamps
every packet with the wall-clock time it arrived. The socket is not read while
a stream runs, so its buffer keeps the *first* packets that arrived (the rest
are dropped once it is full); afterwards :meth:`TimestampSink.first_data_heap`
reads them with a plain ``recvmsg`` and returns the first MeerKAT data heap
(every MeerKAT heap is one packet): its timestamp, digitiser id and arrival
time. No spead2 receiver is involved. Descriptor heaps (which go out just
before the first data heap) are skipped.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from .net import port_of, udp_socket

#: Linux: SO_TIMESTAMPNS (the "old" one, a struct timespec of two longs on 64-bit);
#: the control message type equals the option. Python's socket module lacks both.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
SPEAD_MAGIC = 0x53
TIMESTAMP_ID = 0x1600
DIGITISER_ID_ID = 0x3101
ADC_SAMPLES_ID = 0x3300
HEAP_CNT_ID = 0x0001
#: Packets read at most when looking for the first data heap.
MAX_PACKETS = 256


@dataclass(frozen=True)
class FirstHeap:
    """The first data heap a sink got: wire timestamp, digitiser id, heap id, arrival time."""

    timestamp: int
    digitiser_id: int | None
    heap_cnt: int | None
    arrival: float  #: UNIX time the kernel received the packet
    skipped: int  #: packets before it (descriptors)


def parse_items(packet: bytes) -> dict[int, tuple[bool, int]] | None:
    """A SPEAD packet's item pointers as {id: (immediate, value or address)}, or None.

    Handles any flavour whose item pointers are 64 bits (MeerKAT: SPEAD-64-48).
    """
    if len(packet) < 8:
        return None
    header = int.from_bytes(packet[:8], "big")
    magic, version = header >> 56, (header >> 48) & 0xFF
    pointer_bytes = ((header >> 40) & 0xFF) + ((header >> 32) & 0xFF)
    address_bits = 8 * ((header >> 32) & 0xFF)
    n_items = header & 0xFFFF
    if magic != SPEAD_MAGIC or version != 4 or pointer_bytes != 8:
        return None
    if len(packet) < 8 + 8 * n_items:
        return None
    items: dict[int, tuple[bool, int]] = {}
    id_mask = (1 << (63 - address_bits)) - 1
    for i in range(n_items):
        pointer = int.from_bytes(packet[8 + 8 * i : 16 + 8 * i], "big")
        immediate = bool(pointer >> 63)
        item_id = (pointer >> address_bits) & id_mask
        items.setdefault(item_id, (immediate, pointer & ((1 << address_bits) - 1)))
    return items


class TimestampSink:
    """An unread UDP socket on 127.0.0.1 whose packets carry kernel arrival times."""

    def __init__(self, buffer_size: int | None = None) -> None:
        self.sock = udp_socket(buffer_size)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except BaseException:
            self.sock.close()
            raise
        self.port = port_of(self.sock)

    def first_data_heap(self) -> FirstHeap | None:
        """Read the queued packets up to the first data heap; None if there is none."""
        self.sock.setblocking(False)
        for skipped in range(MAX_PACKETS):
            try:
                data, ancdata, _, _ = self.sock.recvmsg(1 << 16, socket.CMSG_SPACE(_TIMESPEC.size))
            except BlockingIOError:
                return None
            arrival = None
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack(payload[: _TIMESPEC.size])
                    arrival = sec + nsec * 1e-9
            items = parse_items(data)
            if arrival is None or items is None:
                continue
            stamp = items.get(TIMESTAMP_ID)
            if stamp is None or not stamp[0] or ADC_SAMPLES_ID not in items:
                continue  # a descriptor heap
            dig = items.get(DIGITISER_ID_ID)
            cnt = items.get(HEAP_CNT_ID)
            return FirstHeap(
                timestamp=stamp[1],
                digitiser_id=dig[1] if dig and dig[0] else None,
                heap_cnt=cnt[1] if cnt else None,
                arrival=arrival,
                skipped=skipped,
            )
        return None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TimestampSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
