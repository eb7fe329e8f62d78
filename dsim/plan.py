"""A plan: everything that depends on the heap size and the signal, built once.

A plan holds the heap ring (every heap prebuilt, see :mod:`dsim.ring`), the
packet size, how many timestamps make a batch, and the pacing: for a real-time
stream the ADC rate, for a rate-limited one the sample rate that gives the
asked bytes per second on the wire. Building one is slow (thousands of heaps),
so the engine builds it in a worker thread while the current plan streams.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import spead2.send

from .clock import Clock
from .layout import PacketChoice, WireFormat, wire_bytes
from .pattern import Signal
from .ring import HeapRing, ring_length
from .transport import TransportConfig, TransportKind, spead2_uses_gso

#: Target payload per batch, and batches in flight (about 2 MiB). With two, a
#: delayed wake-up of the Python thread drained spead2's queue at GSO rates
#: (measured: 4 batches 1.04-1.13x of 2 on the GSO build, neutral on the wheel).
DEFAULT_BATCH_BYTES = 512 * 1024
DEFAULT_BATCHES = 4
#: Upper bound on timestamps per batch, so that tiny heaps do not make huge batches.
MAX_BATCH_STEPS = 8192
#: Paced streams: a batch covers at most this many seconds of samples, and spead2
#: sends it this much faster than nominal (so that it never falls behind on its
#: own, and catches up within seconds after the machine stalls: at 1 % a 1.8 s
#: lag took three minutes to recover), but never slower than one timestamp (all
#: polarisations) in MAX_STEP_SECONDS, so that what is queued drains quickly.
PACED_BATCH = 0.002
PACED_HEADROOM = 0.05
MAX_STEP_SECONDS = 0.005
#: Paced streams: bytes spead2 may send back to back before it sleeps. Its default
#: (64 KiB) made the rate limiter, not the CPU, the limit at MeerKAT L-band rates
#: (measured with scripts/bench_realtime.py: 256 KiB kept to the clock at 1712 MHz).
PACED_BURST = 256 * 1024


@dataclass
class Plan:
    """Everything that depends on the heap size and the signal."""

    signal: Signal
    heap_size: int
    heap_samples: int
    packets: PacketChoice
    steps: int  #: timestamps per full batch
    ring: HeapRing
    descriptor_heap: spead2.send.Heap
    #: Wire bytes of one timestamp's heaps (all polarisations), headers included.
    step_wire_bytes: int
    #: Samples per second the stream is paced at; 0 = unpaced.
    paced_rate: float

    @property
    def wire_rate(self) -> float:
        """Average bytes per second on the wire (0 = unlimited)."""
        return self.paced_rate / self.heap_samples * self.step_wire_bytes

    @property
    def spead2_rate(self) -> float:
        """The rate spead2 smooths each batch out at (bytes/s, 0 = unlimited)."""
        if not self.paced_rate:
            return 0.0
        return max(self.wire_rate * (1 + PACED_HEADROOM), self.step_wire_bytes / MAX_STEP_SECONDS)

    def stream_config(self, batches: int, n_substreams: int) -> spead2.send.StreamConfig:
        """The spead2 stream configuration this plan sends with."""
        config = spead2.send.StreamConfig(
            max_packet_size=self.packets.size,
            rate=self.spead2_rate,
            # Every heap of the batches in flight, and a descriptor and end heap per substream.
            max_heaps=batches * self.steps * self.ring.n_pols + 2 * n_substreams,
        )
        if self.paced_rate:
            config.burst_size = PACED_BURST
        return config


def make_plan(
    fmt: WireFormat,
    transport: TransportConfig,
    clock: Clock | None,
    signal: Signal,
    heap_size: int,
    *,
    batches: int = DEFAULT_BATCHES,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    cancel: threading.Event | None = None,
) -> Plan:
    """Build the plan for `signal` in heaps of `heap_size` bytes (slow: run it off the loop)."""
    heap_samples = fmt.heap_samples(heap_size)
    signal.check_heap_samples(heap_samples)
    packets = fmt.packet_size(
        heap_size,
        transport.max_packet_size,
        transport.packet_size,
        # Equal packets pay only where UDP GSO can send runs of them in one call.
        equal=transport.kind == TransportKind.UDP and spead2_uses_gso(),
    )
    step_wire = wire_bytes(fmt.sample_heap(heap_size, packets.repeat_pointers), packets.size)
    step_wire *= fmt.n_pols
    if clock is not None:
        paced_rate = clock.adc_sample_rate
    elif transport.rate:
        paced_rate = transport.rate / step_wire * heap_samples
    else:
        paced_rate = 0.0
    # At least two timestamps a batch: with one 1 MiB heap per batch the per-batch cost
    # showed (two measured 1.10x of one, unpaced, GSO build). Paced streams put at most
    # PACED_BATCH of samples in a batch, even if that is one heap: pacing comes first.
    steps = max(2, min(MAX_BATCH_STEPS, round(batch_bytes / (heap_size * fmt.n_pols))))
    if paced_rate:
        steps = min(steps, max(1, int(paced_rate * PACED_BATCH / heap_samples)))
    in_flight = batches * steps
    slots = signal.slots(fmt, heap_size, ring_length(fmt, 1, in_flight))
    return Plan(
        signal=signal,
        heap_size=heap_size,
        heap_samples=heap_samples,
        packets=packets,
        steps=steps,
        ring=HeapRing(fmt, slots, packets, in_flight, cancel),
        descriptor_heap=fmt.descriptor_heap(heap_size),
        step_wire_bytes=step_wire,
        paced_rate=paced_rate,
    )


def reuse_plan(spare: Plan, signal: Signal, fmt: WireFormat) -> Plan:
    """`spare`'s heaps for `signal`, rendered into `spare`'s own window (nothing sends from it).

    The heaps point at the window and the status cells, so only the status
    needs writing: no heap is built. Switching between two windows this way
    costs one render, not a render and thousands of heaps.
    """
    old = spare.signal.window
    assert signal.window is not None and old is not None
    assert signal.window.packed is old.packed, "render into the spare's own window"
    signal.write_status(fmt, spare.heap_samples, spare.ring.slots.status)
    return dataclasses.replace(spare, signal=signal)
