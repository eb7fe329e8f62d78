"""dsim's engine as a benchmarked sender: the one module that touches dsim's engine API.

Everything the benchmarks need of ``dsim.engine``, ``dsim.layout`` and
``dsim.transport`` is here, so that an engine API change is adapted in this file
alone: the free-running tutorial-format sender of ``bench_send.py``
(:class:`EngineSender`), the MeerKAT-format real-time (or unpaced) stream of
``bench_realtime.py`` (:class:`MeerkatEngine`), the engine's packet-size choice,
its defaults and limits, and dsim's GSO probe. Signal specs reach the engine
here too (``initial_signal`` and :class:`~dsim.engine.SignalSettings`), parsed
with :func:`dsim.signals.parse`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

from dsim.address import Endpoint
from dsim.clock import Clock
from dsim.engine import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCHES,
    DEFAULT_MAX_PERIOD,
    DEFAULT_PERIOD,
    Engine,
    SignalSettings,
)
from dsim.errors import ConfigError
from dsim.layout import MeerkatFormat, TutorialFormat, validate_heap_size
from dsim.plan import PACED_BURST
from dsim.signals import parse
from dsim.transport import (
    DEFAULT_MAX_PACKET_SIZE,
    MAX_PACKET_SIZE,
    MIN_PACKET_SIZE,
    TransportConfig,
    TransportKind,
    spead2_uses_gso,
)

from . import LOCALHOST

__all__ = [
    "DEFAULT_BATCHES",
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_MAX_PACKET_SIZE",
    "DEFAULT_MAX_PERIOD",
    "DEFAULT_PERIOD",
    "MAX_PACKET_SIZE",
    "MIN_PACKET_SIZE",
    "PACED_BURST",
    "EngineSender",
    "MeerkatEngine",
    "auto_choice",
    "heap_size_error",
    "uses_gso",
]


def uses_gso() -> bool:
    """Whether this process's spead2 sends UDP with GSO (dsim's own probe)."""
    return spead2_uses_gso()


def heap_size_error(heap_size: int) -> str | None:
    """Why dsim cannot use this heap size, or None if it can."""
    try:
        validate_heap_size(heap_size)
    except ConfigError as exc:
        return str(exc)
    return None


@functools.cache
def auto_choice(heap_size: int, max_packet_size: int) -> tuple[int, bool]:
    """The engine's packet size and repeat_pointers for `heap_size` over UDP, not forced."""
    choice = TutorialFormat(1).packet_size(heap_size, max_packet_size, None, equal=uses_gso())
    return choice.size, choice.repeat_pointers


class EngineSender:
    """dsim's engine in the tutorial format, created (outside the timer) for one measurement.

    `packet` None lets the engine pick the size (up to `max_packet_size`); the
    pick is checked against :func:`auto_choice`, which the reference senders copy.
    """

    def __init__(
        self,
        port: int,
        heap_size: int,
        packet: int | None,
        max_packet_size: int,
        send_core: int | None,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        batches: int = DEFAULT_BATCHES,
    ) -> None:
        transport = TransportConfig(
            kind=TransportKind.UDP,
            destinations=[Endpoint(LOCALHOST, port)],
            max_packet_size=max_packet_size,
            packet_size=packet,
            send_core=send_core,
        )
        self.heap_size = heap_size
        self.engine = Engine(transport, heap_size, batch_bytes=batch_bytes, batches=batches)
        self.packet_size: int = self.engine.statistics().packet_size
        self.repeat_pointers = False
        if packet is None:
            expected, self.repeat_pointers = auto_choice(heap_size, max_packet_size)
            if expected != self.packet_size:
                raise ConfigError(
                    f"engine picked {self.packet_size}-byte packets, expected {expected}"
                )
        self.sent = -1

    async def send(self, heaps: int) -> None:
        """The timed part: one bounded capture of `heaps` heaps, to its end."""
        self.engine.start(heaps)
        self.sent = await self.engine.wait_capture()

    async def close(self) -> None:
        await self.engine.close()

    def check(self, heaps: int) -> list[str]:
        """What went wrong, if anything: every heap counted, every byte, no send errors."""
        stats = self.engine.statistics()
        problems = []
        failure = getattr(self.engine, "failure", None)
        if failure is not None:
            problems.append(f"engine failed: {failure!r}")
        if self.sent != heaps or stats.capture_heaps != heaps or stats.heaps != heaps:
            problems.append(
                f"heap count: asked {heaps}, wait_capture {self.sent}, "
                f"capture_heaps {stats.capture_heaps}, heaps {stats.heaps}"
            )
        if stats.bytes != heaps * self.heap_size:
            problems.append(f"bytes {stats.bytes} != {heaps * self.heap_size}")
        if stats.send_errors:
            problems.append(f"{stats.send_errors} send errors")
        return problems


class MeerkatEngine:
    """dsim's engine in the MeerKAT format, one polarisation per port, for bench_realtime.

    With an `adc_rate` it runs on the simulated ADC clock (real time, synchronised
    now); with None it runs unpaced. `signals` (a full spec, one output per port)
    is parsed and rendered here, in the constructor, so before any timed part
    (``initial_signal``, with `period` and `dither_seed` as
    :class:`~dsim.engine.SignalSettings`); None sends the counter pattern. The
    stream may be started and stopped repeatedly. It implements
    :class:`benchkit.realtime.Stream`.
    """

    def __init__(
        self,
        ports: Sequence[int],
        adc_rate: float | None,
        sample_bits: int = 10,
        signals: str | None = None,
        period: int = DEFAULT_PERIOD,
        dither_seed: int = 1,
    ):
        clock = None if adc_rate is None else Clock(adc_rate, time.time(), align_samples=1 << 20)
        started = time.monotonic()
        self.engine = Engine(
            TransportConfig(destinations=[Endpoint(LOCALHOST, port) for port in ports]),
            wire_format=MeerkatFormat([1] * len(ports), sample_bits),
            clock=clock,
            signals=SignalSettings(period=period, dither_seed=dither_seed),
            initial_signal=None if signals is None else parse(signals),
        )
        #: Seconds the constructor took (rendering the signal, building the heap ring).
        self.setup_seconds = time.monotonic() - started
        if signals is not None and self.engine.signal.is_counter:
            raise ConfigError(f"the engine did not take the signal {signals!r}")

    @property
    def signal(self) -> str:
        """The canonical spec the engine sends (``counter();...`` for the counter pattern)."""
        return self.engine.signal.canonical

    def start(self) -> None:
        self.engine.start()

    def bytes_sent(self) -> int:
        """Payload bytes whose sends have completed."""
        return self.engine.statistics().bytes

    def time_lag(self) -> float | None:
        """Seconds the newest heap handed to spead2 trails the ADC clock (None: unpaced)."""
        return self.engine.statistics().time_lag

    async def stop(self) -> None:
        await self.engine.stop()

    async def close(self) -> None:
        await self.engine.close()
