"""The katcp device server: requests and sensors in front of the engine.

It holds no send logic: each request validates its arguments, calls the
:class:`~dsim.engine.Engine` and replies; sensors mirror the engine's
statistics. Request docstrings are what ``?help`` shows.
"""

# No `from __future__ import annotations`: aiokatcp reads the request
# handlers' annotations at class creation to decode arguments.
import asyncio
import logging
import time
from collections import Counter

import aiokatcp
from aiokatcp import DeviceStatus, FailReply, Sensor, SensorSampler

from . import __version__
from .engine import CaptureError, Engine
from .errors import ConfigError
from .layout import MAX_HEAP_SIZE
from .transport import spead2_uses_gso

logger = logging.getLogger(__name__)

#: How often sensors are refreshed from the engine while it runs.
SENSOR_PERIOD = 0.5
#: Fast-changing sensors report at most this often to `auto` subscribers ...
AUTO_MIN_PERIOD = 0.5
#: ... and at least this often while they change.
AUTO_MAX_PERIOD = 10.0
#: time-lag above this (seconds) is a warning: the stream cannot keep up with its clock.
TIME_LAG_WARN = 0.1
#: send-errors stays in `warn` (device-status `degraded`) this long after an error.
SEND_ERROR_HOLD = 10.0


def parse_positive_int(text: str, what: str, maximum: int | None = None) -> int:
    """Parse a katcp argument as a positive integer, with a reason fit for ``!fail``."""
    try:
        value = int(text, 10)
    except ValueError:
        raise FailReply(f"{what} must be a positive integer, not {text!r}") from None
    if value <= 0:
        raise FailReply(f"{what} must be a positive integer, not {value}")
    if maximum is not None and value > maximum:
        raise FailReply(f"{what} must be at most {maximum}, not {value}")
    return value


class DeviceStatusSensor(aiokatcp.SimpleAggregateSensor[DeviceStatus]):
    """``device-status``: ok, degraded if any sensor warns, fail if any is in error."""

    def __init__(self, target: aiokatcp.SensorSet) -> None:
        self._statuses: Counter[Sensor.Status] = Counter()
        super().__init__(
            target, DeviceStatus, "device-status", "Overall health of the simulator"
        )

    def aggregate_add(self, sensor: Sensor, reading: aiokatcp.Reading) -> bool:
        self._statuses[reading.status] += 1
        return True

    def aggregate_remove(self, sensor: Sensor, reading: aiokatcp.Reading) -> bool:
        self._statuses[reading.status] -= 1
        return True

    def aggregate_compute(self) -> tuple[Sensor.Status, DeviceStatus]:
        if self._statuses[Sensor.Status.ERROR] or self._statuses[Sensor.Status.FAILURE]:
            return Sensor.Status.ERROR, DeviceStatus.FAIL
        if self._statuses[Sensor.Status.WARN]:
            return Sensor.Status.WARN, DeviceStatus.DEGRADED
        return Sensor.Status.NOMINAL, DeviceStatus.OK


class DeviceServer(aiokatcp.DeviceServer):
    """Digitiser simulator: streams SPEAD heaps of ADC samples on request."""

    VERSION = "dsim-1.0"
    BUILD_STATE = f"dsim-{__version__}"

    def __init__(self, engine: Engine, host: str, port: int, **kwargs: object) -> None:
        super().__init__(host, port, **kwargs)  # type: ignore[arg-type]
        self.engine = engine
        self._last_errors = 0
        self._last_error_time = -1e9
        fast = {
            "auto_strategy": SensorSampler.Strategy.EVENT_RATE,
            "auto_strategy_parameters": (AUTO_MIN_PERIOD, AUTO_MAX_PERIOD),
        }
        transport = engine.transport
        destinations = ",".join(str(e) for e in transport.destinations)
        if transport.inproc_queues:
            destinations = "inproc"
        self._capture_active = Sensor(
            bool, "capture-active", "Whether heaps are being streamed", default=False,
            initial_status=Sensor.Status.NOMINAL,
        )
        self._heaps = Sensor(
            int, "transmitted-heaps", "Heaps sent since the process started", "heaps",
            default=0, initial_status=Sensor.Status.NOMINAL, **fast,  # type: ignore[arg-type]
        )
        self._bytes = Sensor(
            int, "transmitted-bytes", "Payload (sample) bytes sent since the process started",
            "B", default=0, initial_status=Sensor.Status.NOMINAL, **fast,  # type: ignore[arg-type]
        )
        self._throughput = Sensor(
            float, "throughput", "Payload bytes per second over about the last second",
            "B/s", default=0.0, initial_status=Sensor.Status.NOMINAL,
            **fast,  # type: ignore[arg-type]
        )
        self._heap_size = Sensor(
            int, "heap-size", "Payload bytes (one byte per sample) per heap", "B",
            default=engine.heap_size, initial_status=Sensor.Status.NOMINAL,
        )
        self._next_timestamp = Sensor(
            int, "next-timestamp", "Timestamp (sample index) of the next heap to be sent",
            "samples", default=0, initial_status=Sensor.Status.NOMINAL,
            **fast,  # type: ignore[arg-type]
        )
        self._packet_size = Sensor(
            int, "packet-size", "Maximum packet size in use for the current heap size", "B",
            default=engine.packet_size, initial_status=Sensor.Status.NOMINAL,
        )
        self._rate = Sensor(
            float, "rate", "Send rate on the wire in use, 0 = unlimited", "B/s",
            default=engine.rate, initial_status=Sensor.Status.NOMINAL,
        )
        self._time_lag = Sensor(
            float, "time-lag",
            "Real time: seconds the stream trails the ADC clock (warn above 0.1 s)", "s",
            default=0.0, initial_status=Sensor.Status.NOMINAL,
            **fast,  # type: ignore[arg-type]
        )
        self._send_errors = Sensor(
            int, "send-errors", "Failed batch sends since the process started (warn while recent)",
            default=0, initial_status=Sensor.Status.NOMINAL,
        )
        constants: list[Sensor] = [
            Sensor(str, "destinations", "Where heaps are sent (host:port, comma-separated)",
                   default=destinations, initial_status=Sensor.Status.NOMINAL),
            Sensor(str, "transport", "How heaps are sent (udp or ibverbs)",
                   default=transport.kind.value, initial_status=Sensor.Status.NOMINAL),
            Sensor(int, "max-packet-size",
                   "Upper bound for automatic packet sizing (0 = sizes are forced)", "B",
                   default=0 if transport.packet_size else transport.max_packet_size,
                   initial_status=Sensor.Status.NOMINAL),
            Sensor(bool, "spead2-gso",
                   "Whether spead2 sends UDP with segmentation offload (GSO)",
                   default=spead2_uses_gso(), initial_status=Sensor.Status.NOMINAL),
            Sensor(str, "format", "Wire format (tutorial or meerkat)",
                   default=engine.format.name, initial_status=Sensor.Status.NOMINAL),
            Sensor(int, "sample-bits", "Bits per ADC sample", "bit",
                   default=engine.format.sample_bits, initial_status=Sensor.Status.NOMINAL),
            Sensor(int, "polarisations", "Streams (one per polarisation) sent per timestamp",
                   default=engine.format.streams, initial_status=Sensor.Status.NOMINAL),
            Sensor(float, "sync-time", "UNIX time of timestamp 0 (0 when free-running)", "s",
                   default=engine.clock.sync_time if engine.clock else 0.0,
                   initial_status=Sensor.Status.NOMINAL),
            Sensor(float, "adc-sample-rate",
                   "Simulated ADC sample rate (0 when free-running)", "Hz",
                   default=engine.clock.adc_sample_rate if engine.clock else 0.0,
                   initial_status=Sensor.Status.NOMINAL),
        ]
        sensors: list[Sensor] = [
            self._capture_active, self._heaps, self._bytes, self._throughput,
            self._heap_size, self._packet_size, self._rate, self._next_timestamp,
            self._time_lag, self._send_errors,
            *constants,
        ]
        for s in sensors:
            self.sensors.add(s)
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
        """Copy the engine's statistics into the sensors."""
        stats = self.engine.statistics()
        now = time.time()
        self._capture_active.set_value(
            stats.capturing,
            Sensor.Status.ERROR if self.engine.failure is not None else Sensor.Status.NOMINAL,
            timestamp=now,
        )
        self._heaps.set_value(stats.heaps, timestamp=now)
        self._bytes.set_value(stats.bytes, timestamp=now)
        self._throughput.set_value(stats.throughput, timestamp=now)
        self._heap_size.set_value(stats.heap_size, timestamp=now)
        self._packet_size.set_value(stats.packet_size, timestamp=now)
        self._rate.set_value(self.engine.rate, timestamp=now)
        lag = stats.time_lag or 0.0
        self._time_lag.set_value(
            lag, Sensor.Status.WARN if lag > TIME_LAG_WARN else Sensor.Status.NOMINAL,
            timestamp=now,
        )
        self._next_timestamp.set_value(stats.next_timestamp, timestamp=now)
        if stats.send_errors != self._last_errors:
            self._last_errors = stats.send_errors
            self._last_error_time = time.monotonic()
        recent = time.monotonic() - self._last_error_time < SEND_ERROR_HOLD
        self._send_errors.set_value(
            stats.send_errors,
            Sensor.Status.WARN if recent else Sensor.Status.NOMINAL,
            timestamp=now,
        )

    async def request_time(self, ctx: aiokatcp.RequestContext) -> float:
        """Return the server's UNIX time (to compare with sync-time and timestamps)."""
        return time.time()

    async def request_capture_start(self, ctx: aiokatcp.RequestContext, heaps: str = "") -> int:
        """Start streaming (with a count: that many heaps, then stop); replies the first timestamp.

        Parameters
        ----------
        heaps : int, optional
            Number of heaps to send per polarisation (meerkat format: per
            destination); without it the capture runs until ?capture-stop.
            In real time the first timestamp is the next aligned sample after
            now, and sending starts at its time.
        """
        count = parse_positive_int(heaps, "heap count") if heaps else None
        try:
            return self.engine.start(count)
        except CaptureError as exc:
            raise FailReply(str(exc)) from None

    async def request_capture_stop(self, ctx: aiokatcp.RequestContext) -> int:
        """Stop once heaps in flight and the end-of-stream heap are sent; replies heaps sent.

        Without a capture this succeeds at once and sends nothing.
        """
        try:
            heaps = await self.engine.stop()
        except Exception as exc:
            raise FailReply(f"capture failed: {exc}") from None
        self.update_sensors()
        return heaps

    async def request_heap_size(
        self, ctx: aiokatcp.RequestContext, size: str = ""
    ) -> tuple[int, int] | int:
        """Query or set the heap size in bytes; when set, replies with it and its first timestamp.

        Parameters
        ----------
        size : int, optional
            New payload bytes per heap (one byte per sample), 1 to 67108864.
            While streaming it takes effect at the next batch boundary, with
            no gap in the timestamps. Without it, the current size is returned.
        """
        if not size:
            return self.engine.heap_size
        value = parse_positive_int(size, "heap size", MAX_HEAP_SIZE)
        try:
            timestamp = await self.engine.set_heap_size(value)
        except ConfigError as exc:
            raise FailReply(str(exc)) from None
        self.update_sensors()
        return value, timestamp

