"""The katcp device server: requests and sensors in front of the engine.

It holds no send logic: each request parses its arguments, calls the
:class:`~dsim.engine.Engine` and replies; sensors mirror the engine. Request
docstrings are what ``?help`` shows, so they are plain sentences that read
well in a telnet session.
"""

# No `from __future__ import annotations`: aiokatcp reads the request
# handlers' annotations at class creation to decode arguments.
import asyncio
import inspect
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import aiokatcp
from aiokatcp import DeviceStatus, FailReply, Sensor, SensorSampler

from ._version import __version__
from .engine import LAG_WARN, Engine
from .errors import DsimError

logger = logging.getLogger(__name__)

#: How often sensors are refreshed from the engine while it runs.
SENSOR_PERIOD = 0.5
#: Fast-changing sensors report at most this often to `auto` subscribers ...
AUTO_MIN_PERIOD = 0.5
#: ... and at least this often while they change.
AUTO_MAX_PERIOD = 10.0
#: ?sensor-sampling periods shorter than this (seconds) are refused.
MIN_SAMPLING_PERIOD = 0.01
#: What each argument of a sampling strategy with periods is: the period (or longest
#: period) between updates, the shortest one, or a value (left to aiokatcp).
_SAMPLING_ARGS = {
    SensorSampler.Strategy.PERIOD: ("longest",),
    SensorSampler.Strategy.EVENT_RATE: ("shortest", "longest"),
    SensorSampler.Strategy.DIFFERENTIAL_RATE: ("value", "shortest", "longest"),
}
#: send-errors stays in `warn` (device-status `degraded`) this long after an error.
SEND_ERROR_HOLD = 10.0
_DIGITS = re.compile(r"[0-9]+")
_F = TypeVar("_F", bound=Callable[..., Any])


def parse_count(text: str, what: str, *, zero: bool = False) -> int:
    """A katcp argument as a plain decimal integer (ASCII digits only), for ``!fail`` reasons.

    ``+5``, ``1_0``, non-ASCII digits and katcp's empty argument ``\\@`` are
    refused: Python's ``int()`` would take the first three.
    """
    if not _DIGITS.fullmatch(text):
        kind = "a non-negative" if zero else "a positive"
        raise FailReply(f"{what} must be {kind} integer (decimal digits), not {text!r}")
    value = int(text)
    if value == 0 and not zero:
        raise FailReply(f"{what} must be a positive integer, not 0")
    return value


class DeviceStatusSensor(aiokatcp.SimpleAggregateSensor[DeviceStatus]):
    """``device-status``: ok, degraded if any sensor warns, fail if any is in error."""

    def __init__(self, target: aiokatcp.SensorSet) -> None:
        self._statuses: Counter[Sensor.Status] = Counter()
        super().__init__(target, DeviceStatus, "device-status", "Overall health of the simulator")

    def aggregate_add(self, sensor: Sensor, reading: aiokatcp.Reading) -> bool:
        self._statuses[reading.status] += 1
        return self._changed()

    def aggregate_remove(self, sensor: Sensor, reading: aiokatcp.Reading) -> bool:
        self._statuses[reading.status] -= 1
        return self._changed()

    def _changed(self) -> bool:
        """Whether the aggregate differs from the current reading (so `auto` hears only news)."""
        try:
            current = (self.status, self.value)
        except AttributeError:  # still being constructed
            return True
        return self.aggregate_compute() != current

    def aggregate_compute(self) -> tuple[Sensor.Status, DeviceStatus]:
        if self._statuses[Sensor.Status.ERROR] or self._statuses[Sensor.Status.FAILURE]:
            return Sensor.Status.ERROR, DeviceStatus.FAIL
        if self._statuses[Sensor.Status.WARN]:
            return Sensor.Status.WARN, DeviceStatus.DEGRADED
        return Sensor.Status.NOMINAL, DeviceStatus.OK


def plain_help(func: _F) -> _F:
    """Make a request's docstring a summary line and one paragraph, for ``?help``.

    katcp sends the docstring as one escaped line: source indentation would
    show as runs of ``\\_`` in a terminal. (A decorator, because aiokatcp
    copies the docstring when the class is created.)
    """
    summary, _, body = inspect.cleandoc(func.__doc__ or "").partition("\n")
    func.__doc__ = summary + ("\n" + " ".join(body.split()) if body.strip() else "")
    return func


def _float(text: bytes) -> float | None:
    """A finite number, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _update(sensor: Sensor, value: Any, status: Sensor.Status = Sensor.Status.NOMINAL) -> None:
    """Set `sensor` only if its value or status changes, so `auto` subscribers hear news only."""
    reading = sensor.reading
    if reading.value != value or reading.status != status:
        sensor.set_value(value, status)


class DeviceServer(aiokatcp.DeviceServer):
    """Digitiser simulator: streams SPEAD heaps of ADC samples on request."""

    VERSION = "dsim-1.1"
    BUILD_STATE = f"dsim-{__version__}"

    def __init__(
        self, engine: Engine, host: str, port: int, *, destinations: str = "", **kwargs: Any
    ) -> None:
        super().__init__(host, port, **kwargs)
        self.engine = engine
        self._last_errors = 0
        self._last_error_time = -1e9
        fast = dict(
            auto_strategy=SensorSampler.Strategy.EVENT_RATE,
            auto_strategy_parameters=(AUTO_MIN_PERIOD, AUTO_MAX_PERIOD),
        )
        nominal = Sensor.Status.NOMINAL
        transport = engine.transport
        fmt = engine.format
        clock = engine.clock
        settings = engine.signal_settings

        def sensor(
            kind: type,
            name: str,
            description: str,
            units: str = "",
            default: Any = None,
            **extra: Any,
        ) -> Sensor:
            s: Sensor = Sensor(
                kind, name, description, units, default=default, initial_status=nominal, **extra
            )
            self.sensors.add(s)
            return s

        self._capture_active = sensor(
            bool, "capture-active", "Whether heaps are being streamed", default=False
        )
        self._heaps = sensor(
            int, "transmitted-heaps", "Heaps sent since the process started", "heaps", 0, **fast
        )
        self._bytes = sensor(
            int,
            "transmitted-bytes",
            "Payload (sample) bytes sent since the process started",
            "B",
            0,
            **fast,
        )
        self._throughput = sensor(
            float,
            "throughput",
            "Payload bytes per second over about the last second",
            "B/s",
            0.0,
            **fast,
        )
        self._heap_size = sensor(int, "heap-size", "Payload bytes per heap", "B", engine.heap_size)
        self._next_timestamp = sensor(
            int,
            "next-timestamp",
            "Timestamp (sample index) of the next heap to be sent",
            "samples",
            0,
            **fast,
        )
        self._packet_size = sensor(
            int,
            "packet-size",
            "Maximum packet size in use for the current heap size",
            "B",
            engine.packet_size,
        )
        self._rate = sensor(
            float, "rate", "Average send rate on the wire, 0 = unlimited", "B/s", engine.rate
        )
        self._time_lag = sensor(
            float,
            "time-lag",
            f"Real time: seconds the stream trails the ADC clock (warn above {LAG_WARN} s)",
            "s",
            0.0,
            **fast,
        )
        self._send_errors = sensor(
            int,
            "send-errors",
            "Failed batch sends since the process started (warn while recent)",
            "",
            0,
        )
        self._signals = sensor(
            str,
            "signals",
            "The signal in effect, every seed and rounded "
            "value spelled out (send it back to reproduce it)",
            "",
            engine.signal.canonical,
        )
        self._signals_orig = sensor(
            str, "signals-orig", "The signal as it was requested", "", engine.signal.original
        )
        self._period = sensor(
            int, "period", "Samples after which a signal window repeats", "samples", engine.period
        )
        self._steady = sensor(
            int,
            "steady-state-timestamp",
            "Every heap at or after this timestamp reflects all requests so far",
            "samples",
            engine.steady_state_timestamp,
        )
        sensor(int, "max-period", "Largest signal period allowed", "samples", settings.max_period)
        sensor(
            str,
            "dither-seed",
            "Seed of the quantisation dither (an integer)",
            "",
            str(settings.dither_seed),
        )
        sensor(
            str,
            "destinations",
            "Where heaps are sent (host:port, comma-separated)",
            "",
            destinations or ",".join(str(e) for e in transport.destinations),
        )
        sensor(
            str,
            "transport",
            "How heaps are sent (udp, ibverbs or inproc)",
            "",
            transport.kind.value,
        )
        sensor(
            int,
            "max-packet-size",
            "Upper bound for automatic packet sizing (0 = sizes are forced)",
            "B",
            0 if transport.packet_size else transport.max_packet_size,
        )
        sensor(
            bool,
            "spead2-gso",
            "Whether spead2 sends UDP with segmentation offload (GSO)",
            "",
            engine.uses_gso,
        )
        sensor(str, "format", "Wire format (tutorial or meerkat)", "", fmt.name)
        sensor(int, "sample-bits", "Bits per ADC sample", "bit", fmt.sample_bits)
        sensor(
            int,
            "polarisations",
            "Streams (one per polarisation) sent per timestamp",
            "",
            fmt.n_pols,
        )
        sensor(
            bool,
            "real-time",
            "Whether the stream follows a real-time ADC clock",
            "",
            clock is not None,
        )
        sensor(
            float,
            "sync-time",
            "UNIX time of timestamp 0 (0 when free-running)",
            "s",
            clock.sync_time if clock else 0.0,
        )
        sensor(
            float,
            "adc-sample-rate",
            "ADC sample rate signal frequencies are read against "
            "(real time: the clock's; free-running: nominal)",
            "Hz",
            engine.sample_rate,
        )
        self.sensors.add(DeviceStatusSensor(self.sensors))
        engine.add_listener(self.update_sensors)

    async def start(self) -> None:
        await super().start()
        self.add_service_task(asyncio.create_task(self._refresh(), name="dsim-sensors"))

    async def on_stop(self) -> None:
        await self.engine.close()
        self.update_sensors()

    async def _refresh(self) -> None:
        while True:
            self.update_sensors()
            await asyncio.sleep(SENSOR_PERIOD)

    def update_sensors(self) -> None:
        """Copy the engine's state into the sensors (those that changed)."""
        engine = self.engine
        stats = engine.statistics()
        error = Sensor.Status.ERROR if engine.failure is not None else Sensor.Status.NOMINAL
        _update(self._capture_active, stats.capturing, error)
        _update(self._heaps, stats.heaps)
        _update(self._bytes, stats.bytes)
        _update(self._throughput, stats.throughput)
        _update(self._heap_size, stats.heap_size)
        _update(self._packet_size, stats.packet_size)
        _update(self._rate, engine.rate)
        lag = stats.time_lag or 0.0
        _update(
            self._time_lag,
            lag,
            Sensor.Status.WARN if lag > LAG_WARN else Sensor.Status.NOMINAL,
        )
        _update(self._next_timestamp, stats.next_timestamp)
        if stats.send_errors != self._last_errors:
            self._last_errors = stats.send_errors
            self._last_error_time = time.monotonic()
        recent = time.monotonic() - self._last_error_time < SEND_ERROR_HOLD
        _update(
            self._send_errors,
            stats.send_errors,
            Sensor.Status.WARN if recent else Sensor.Status.NOMINAL,
        )
        _update(self._signals, engine.signal.canonical)
        _update(self._signals_orig, engine.signal.original)
        _update(self._period, engine.period)
        _update(self._steady, engine.steady_state_timestamp)

    @plain_help
    async def request_sensor_sampling(
        self,
        ctx: aiokatcp.RequestContext,
        name: str,
        strategy: SensorSampler.Strategy | None = None,
        *args: bytes,
    ) -> tuple:
        """Query or set how a sensor is reported, with katcp's sampling strategies.

        none, auto, period, event, differential, event-rate and
        differential-rate, as in katcp, with one limit: a period between
        updates must be finite and at least 0.01 s (a period of nan or 1e-9
        would flood the connection and starve the stream's event loop); the
        shortest period of the -rate strategies may be 0.
        """
        roles = _SAMPLING_ARGS.get(strategy) if strategy is not None else None
        if strategy is not None and roles is not None:
            if len(args) != len(roles):
                raise FailReply(
                    f"{strategy.name.lower().replace('_', '-')} takes {len(roles)} argument(s)"
                )
            for role, arg in zip(roles, args, strict=True):
                if role == "value":
                    continue
                value = _float(arg)
                least = MIN_SAMPLING_PERIOD if role == "longest" else 0.0
                if value is None or value < least:
                    raise FailReply(
                        f"sampling period {arg.decode(errors='replace')!r} must be a finite "
                        f"number of seconds, at least {least}"
                    )
        return await super().request_sensor_sampling(ctx, name, strategy, *args)

    @plain_help
    async def request_time(self, ctx: aiokatcp.RequestContext) -> float:
        """Return the server's UNIX time (to compare with sync-time and timestamps)."""
        return time.time()

    @plain_help
    async def request_capture_start(
        self,
        ctx: aiokatcp.RequestContext,
        heaps: str | None = None,
        timestamp: str | None = None,
    ) -> int:
        """Start streaming; replies with the timestamp of the first heap.

        With a heap count, sends exactly that many heaps per polarisation and
        stops by itself (0: no limit, so that a timestamp can follow). With a
        timestamp, the capture starts exactly there (a heap boundary not yet
        passed; in real time, not in the past), so that
        several simulators can start on the same sample. In real time without
        one, it starts at the next aligned sample after now. Fails if a capture
        is running (which carries on).
        """
        count = None if heaps is None else parse_count(heaps, "heap count", zero=True)
        first = None if timestamp is None else parse_count(timestamp, "timestamp", zero=True)
        try:
            return self.engine.start(count or None, first)
        except DsimError as exc:
            raise FailReply(str(exc)) from None

    @plain_help
    async def request_capture_stop(self, ctx: aiokatcp.RequestContext) -> int:
        """Stop streaming; replies with the heaps the capture sent.

        Heaps already handed to the network are sent (and the end-of-stream
        heaps, where the format has them); nothing else is. Without a capture
        this succeeds at once and sends nothing.
        """
        try:
            heaps = await self.engine.stop()
        except Exception as exc:
            raise FailReply(f"capture failed: {exc}") from None
        self.update_sensors()
        return heaps

    @plain_help
    async def request_heap_size(
        self, ctx: aiokatcp.RequestContext, size: str | None = None
    ) -> tuple[int, int] | int:
        """Query or set the payload bytes per heap; when set, also replies the first timestamp.

        While streaming, the new size takes effect at the next batch boundary:
        in the tutorial format with counter() the timestamps continue with no
        gap, otherwise at the next multiple of the new heap's samples. The size
        must suit the format (meerkat: whole groups of samples in one packet)
        and, for a signal window, divide its period.
        """
        if size is None:
            return self.engine.heap_size
        value = parse_count(size, "heap size")
        try:
            timestamp = await self.engine.set_heap_size(value)
        except DsimError as exc:
            raise FailReply(str(exc)) from None
        self.update_sensors()
        return value, timestamp

    @plain_help
    async def request_signals(
        self,
        ctx: aiokatcp.RequestContext,
        spec: str,
        period: str | None = None,
        timestamp: str | None = None,
    ) -> int:
        """Set the signal of each polarisation; replies with the first timestamp carrying it.

        The spec is one statement per polarisation, each ending in a semicolon,
        e.g. "cw(0.5, 200e6) + wgn(0.05); cw(0.5, 200e6) + wgn(0.05);" or
        "c = wgn(0.1, 1); nodither(c); nodither(delay(c, 2.5));". Functions:
        cw, multicw, comb, wgn, delay, nodither, counter. The window repeats
        every period samples (default: the current period). The switch happens
        at the next batch boundary, or exactly at the given timestamp. A bad
        spec fails and changes nothing.
        """
        window = None if period is None else parse_count(period, "period")
        at = None if timestamp is None else parse_count(timestamp, "timestamp", zero=True)
        try:
            first = await self.engine.set_signals(spec, window, at)
        except DsimError as exc:
            raise FailReply(str(exc)) from None
        self.update_sensors()
        return first
