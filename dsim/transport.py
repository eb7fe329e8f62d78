"""Making the spead2 send stream: UDP, ibverbs or in-process.

Everything that can be wrong with a transport setting (a host that does not
resolve, a bad port, ibverbs with a unicast destination or without an RDMA
device) is reported as one :exc:`~dsim.errors.ConfigError` (bad settings) or
:exc:`~dsim.errors.TransportError` (cannot start here) with a message that
a command line can print as it is.
"""

from __future__ import annotations

import functools
import math
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import spead2
import spead2.send
import spead2.send.asyncio

from .address import Endpoint, resolve_interface
from .errors import ConfigError, TransportError
from .spead import DEFAULT_DATA_PORT

#: UDP payload that fits a 9000-byte jumbo frame after the IP and UDP headers.
DEFAULT_MAX_PACKET_SIZE = 8972
#: Largest socket buffer or ibverbs send ring (the kernel's socket option is an int).
MAX_BUFFER_SIZE = (1 << 31) - 1
#: Largest UDP payload over IPv4.
MAX_PACKET_SIZE = 65507
#: Smallest packet that holds a SPEAD header, a few item pointers and payload.
MIN_PACKET_SIZE = 128
#: Linux's UDP_SEGMENT socket option (GSO segment size); not in Python's socket module.
_UDP_SEGMENT = 103
#: Where the kernel lists RDMA devices; empty or missing means ibverbs cannot work.
RDMA_SYSFS = "/sys/class/infiniband"

SendStream = (
    spead2.send.asyncio.UdpStream
    | spead2.send.asyncio.UdpIbvStream
    | spead2.send.asyncio.InprocStream
)


class TransportKind(Enum):
    """How heaps leave the process."""

    UDP = "udp"
    IBVERBS = "ibverbs"
    INPROC = "inproc"


@dataclass
class TransportConfig:
    """Where and how heaps are sent; fixed when the engine is created.

    `max_packet_size` bounds the packet size the engine picks for each heap
    size (see :func:`dsim.layout.equal_packet_size`); `packet_size` forces one.
    `rate` is in bytes per second on the wire (SPEAD headers included, as spead2
    counts it); 0 means as fast as possible. `send_core` pins spead2's sending
    thread to that CPU core. `buffer_size` is the socket send buffer (UDP) or
    the ibverbs send ring, in bytes; None means spead2's default.
    """

    kind: TransportKind = TransportKind.UDP
    destinations: Sequence[Endpoint] = (Endpoint("127.0.0.1", DEFAULT_DATA_PORT),)
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    #: Exact packet size; None lets the engine pick one that splits heaps evenly.
    packet_size: int | None = None
    rate: float = 0.0
    ttl: int = 1
    interface: str | None = None
    buffer_size: int | None = None
    send_core: int | None = None
    #: In-process queues, one per destination (only for TransportKind.INPROC).
    inproc_queues: Sequence[spead2.InprocQueue] = field(default_factory=tuple)

    def validate(self) -> None:
        """Raise :exc:`ConfigError` if the settings cannot work together.

        An interface given by name is replaced by its numeric address, so that it
        is looked up once (streams are opened again on the event loop at every
        heap-size change, where a DNS lookup would stall it).
        """
        for size in (self.max_packet_size, self.packet_size):
            if size is not None and not MIN_PACKET_SIZE <= size <= MAX_PACKET_SIZE:
                raise ConfigError(
                    f"packet size must be {MIN_PACKET_SIZE}-{MAX_PACKET_SIZE} bytes, not {size}"
                )
        if not (math.isfinite(self.rate) and self.rate >= 0.0):
            raise ConfigError(
                f"rate must be a finite number >= 0 bytes/s (0 = unlimited), not {self.rate}"
            )
        if not 0 <= self.ttl <= 255:
            raise ConfigError(f"TTL must be 0-255, not {self.ttl}")
        if self.buffer_size is not None and not 0 < self.buffer_size <= MAX_BUFFER_SIZE:
            raise ConfigError(
                f"buffer size must be 1 to {MAX_BUFFER_SIZE} bytes, not {self.buffer_size}"
            )
        if self.send_core is not None and self.send_core not in _usable_cores():
            raise ConfigError(
                f"CPU core {self.send_core} is not available (usable: {_format_cores()})"
            )
        if self.interface is not None:
            self.interface = resolve_interface(self.interface)
        if self.kind == TransportKind.INPROC:
            if not self.inproc_queues:
                raise ConfigError("the in-process transport needs at least one queue")
            return
        if not self.destinations:
            raise ConfigError("at least one destination is needed")
        if self.kind == TransportKind.IBVERBS:
            unicast = [str(e) for e in self.destinations if not e.is_multicast]
            if unicast:
                raise ConfigError(
                    "ibverbs sends only to IPv4 multicast groups; "
                    f"not multicast: {', '.join(unicast)}"
                )
            if self.interface is None:
                raise ConfigError("ibverbs needs --interface, the address of the sending NIC")

    @property
    def n_substreams(self) -> int:
        if self.kind == TransportKind.INPROC:
            return len(self.inproc_queues)
        return len(self.destinations)


def rdma_devices() -> list[str]:
    """Names of the RDMA devices the kernel knows (what ibverbs could use)."""
    try:
        return sorted(os.listdir(RDMA_SYSFS))
    except OSError:
        return []


@functools.cache
def spead2_uses_gso() -> bool:
    """Whether this spead2 build sends UDP with generic segmentation offload (GSO).

    Checked by behaviour, not by version: spead2 built with GSO support sets the
    UDP_SEGMENT option on its socket when it sends a run of packets. So send one
    small three-packet heap from a socket of our own to an unread socket on
    127.0.0.1 and look at the option. The PyPI wheels are built without it.
    """
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        sink.bind(("127.0.0.1", 0))
        stream = spead2.send.UdpStream(
            spead2.ThreadPool(1),
            sock,
            [sink.getsockname()],
            spead2.send.StreamConfig(max_packet_size=256),
        )
        heap = spead2.send.Heap(spead2.Flavour())
        payload = np.zeros(600, np.uint8)
        heap.add_item(spead2.Item(0x1000, "probe", "", payload.shape, payload.dtype, value=payload))
        try:
            stream.send_heap(heap)
            return sock.getsockopt(socket.IPPROTO_UDP, _UDP_SEGMENT) > 0
        except OSError:  # no loopback to probe with, or a kernel without UDP_SEGMENT
            return False
        finally:
            del stream


def _usable_cores() -> set[int]:
    return os.sched_getaffinity(0)


def _format_cores() -> str:
    return ",".join(str(c) for c in sorted(_usable_cores()))


def make_thread_pool(config: TransportConfig) -> spead2.ThreadPool:
    """One sending thread, pinned to `config.send_core` if given."""
    if config.send_core is None:
        return spead2.ThreadPool(1)
    return spead2.ThreadPool(1, [config.send_core])


def open_stream(
    config: TransportConfig,
    thread_pool: spead2.ThreadPool,
    stream_config: spead2.send.StreamConfig,
    memory_regions: Sequence[np.ndarray] = (),
) -> SendStream:
    """Create the send stream for `config`.

    `memory_regions` are the payload arrays; ibverbs registers them with the
    NIC so that it sends from them without a copy. Other transports ignore them.
    """
    config.validate()
    endpoints = [(e.host, e.port) for e in config.destinations]
    if config.kind == TransportKind.INPROC:
        return spead2.send.asyncio.InprocStream(
            thread_pool, list(config.inproc_queues), stream_config
        )
    if config.kind == TransportKind.IBVERBS:
        if not rdma_devices():
            raise TransportError(
                f"cannot start ibverbs transport: no RDMA device on this machine "
                f"({RDMA_SYSFS} is empty or missing); use UDP (drop --ibv)"
            )
        ibv_config = spead2.send.UdpIbvConfig(
            endpoints=endpoints,
            interface_address=config.interface or "",
            ttl=config.ttl,
            memory_regions=list(memory_regions),
        )
        if config.buffer_size is not None:
            ibv_config.buffer_size = config.buffer_size
        try:
            return spead2.send.asyncio.UdpIbvStream(thread_pool, stream_config, ibv_config)
        except (RuntimeError, OSError) as exc:
            raise TransportError(f"cannot start ibverbs transport: {exc}") from None
    buffer_size = (
        config.buffer_size
        if config.buffer_size is not None
        else spead2.send.asyncio.UdpStream.DEFAULT_BUFFER_SIZE
    )
    multicast = any(e.is_multicast for e in config.destinations)
    interface = config.interface
    udp = spead2.send.asyncio.UdpStream
    try:
        # spead2's overloads: multicast takes a TTL before the interface, unicast does not.
        if multicast and interface:
            return udp(thread_pool, endpoints, stream_config, buffer_size, config.ttl, interface)
        if multicast:
            return udp(thread_pool, endpoints, stream_config, buffer_size, config.ttl)
        if interface:
            return udp(thread_pool, endpoints, stream_config, buffer_size, interface)
        return udp(thread_pool, endpoints, stream_config, buffer_size)
    except (RuntimeError, OSError) as exc:
        where = _join(config.destinations)
        raise TransportError(f"cannot open UDP stream to {where}: {exc}") from None


def _join(endpoints: Sequence[Endpoint]) -> str:
    return ", ".join(str(e) for e in endpoints)
