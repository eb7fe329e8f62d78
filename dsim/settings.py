"""Every option of dsim in one place, and how they become an engine.

The ``dsim`` command, the Python API (:class:`dsim.Simulator`) and the pytest
plugin all build dsim through :class:`Settings`: the command line is parsed
into one, the API takes its fields as keywords. Each rule is checked where it
is owned (the transport checks addresses, the format checks heap sizes, the
clock checks its rate); this module only puts the pieces together and checks
what concerns several of them at once.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from .address import Endpoint, parse_destination, resolve_interface
from .clock import DEFAULT_ALIGN_SAMPLES, Clock, check_finite
from .engine import (
    DEFAULT_DESCRIPTOR_INTERVAL,
    DEFAULT_MAX_PERIOD,
    DEFAULT_NOMINAL_SAMPLE_RATE,
    DEFAULT_PERIOD,
    Engine,
    SignalSettings,
)
from .errors import ConfigError
from .layout import WireFormat, make_format
from .spead import DEFAULT_DATA_PORT, DEFAULT_KATCP_PORT
from .transport import (
    DEFAULT_MAX_PACKET_SIZE,
    TransportConfig,
    TransportKind,
)

#: When this process started: the default sync time of a real-time stream.
START_TIME = time.time()


@dataclass
class Settings:
    """dsim's options, named as on the command line (``--heap-size`` is ``heap_size``)."""

    #: ``host:port`` or ``ADDRESS+N:port`` (N+1 consecutive addresses) per DEST.
    destinations: Sequence[str] = (f"127.0.0.1:{DEFAULT_DATA_PORT}",)
    katcp_host: str = "127.0.0.1"
    katcp_port: int = DEFAULT_KATCP_PORT
    format: str = "tutorial"
    heap_size: int | None = None
    sample_bits: int | None = None
    digitiser_id: int = 0
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    packet_size: int | None = None
    rate: float = 0.0
    start: bool = False
    descriptor_interval: float = DEFAULT_DESCRIPTOR_INTERVAL
    end_of_stream: bool | None = None
    adc_sample_rate: float | None = None
    sync_time: float | None = None
    align_samples: int = DEFAULT_ALIGN_SAMPLES
    nominal_sample_rate: float = DEFAULT_NOMINAL_SAMPLE_RATE
    signals: str | None = None
    period: int = DEFAULT_PERIOD
    max_period: int = DEFAULT_MAX_PERIOD
    #: None draws a 128-bit seed at start-up (shown in the ``dither-seed`` sensor).
    dither_seed: int | None = None
    ttl: int = 1
    interface: str | None = None
    ibv: bool = False
    buffer_size: int | None = None
    affinity: int | None = None
    main_affinity: int | None = None
    prometheus_port: int | None = None
    log_level: str = "INFO"
    #: The endpoints of each DEST, filled in by :meth:`resolve`.
    _groups: list[list[Endpoint]] = field(default_factory=list, init=False, repr=False)
    #: The destinations `_groups` was resolved from (each name is looked up once).
    _resolved: tuple[str, ...] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        """Refuse a value of the wrong type, in words (the API takes any keyword value)."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            if f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            if not _has_type(value, hints[f.name]):
                raise ConfigError(f"{f.name} must be {_describe(hints[f.name])}, not {value!r}")

    @classmethod
    def from_options(cls, **options: Any) -> Settings:
        """Settings from keywords, refusing unknown ones with a clear message."""
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**options)

    # ------------------------------------------------------------------ checks

    def resolve(self) -> None:
        """Check the settings together and resolve addresses; raise :exc:`ConfigError`."""
        if isinstance(self.destinations, str):
            raise ConfigError("destinations must be a list of host:port strings")
        if not self.destinations:
            raise ConfigError("at least one destination is needed")
        if self._resolved != tuple(self.destinations):
            self._groups = [parse_destination(text) for text in self.destinations]
            self._resolved = tuple(self.destinations)
        if not self.katcp_host:
            raise ConfigError(
                "katcp host is empty: give an address to listen on (0.0.0.0 for every "
                "interface, which lets anyone on the network control dsim)"
            )
        _check_katcp_host(self.katcp_host)
        if self.main_affinity is not None and self.main_affinity not in os.sched_getaffinity(0):
            raise ConfigError(f"CPU core {self.main_affinity} is not available")
        if not 0 <= self.katcp_port <= 65535:
            raise ConfigError(f"katcp port must be 0-65535, not {self.katcp_port}")
        if self.prometheus_port is not None and not 0 <= self.prometheus_port <= 65535:
            raise ConfigError(f"Prometheus port must be 0-65535, not {self.prometheus_port}")
        if self.format == "meerkat" and self.packet_size is not None:
            raise ConfigError("the meerkat format sends one packet per heap: drop --packet-size")
        check_finite(self.descriptor_interval, "descriptor interval", non_negative=True)
        if self.adc_sample_rate is not None:
            if self.rate:
                raise ConfigError("--rate and --adc-sample-rate both set the rate: give one")
        elif self.sync_time is not None:
            raise ConfigError("--sync-time needs --adc-sample-rate (real time)")

    def wire_format(self) -> WireFormat:
        return make_format(
            self.format,
            [len(group) for group in self._groups],
            self.sample_bits,
            self.digitiser_id,
        )

    def transport(self) -> TransportConfig:
        return TransportConfig(
            kind=TransportKind.IBVERBS if self.ibv else TransportKind.UDP,
            destinations=[endpoint for group in self._groups for endpoint in group],
            max_packet_size=self.max_packet_size,
            packet_size=self.packet_size,
            rate=self.rate,
            ttl=self.ttl,
            interface=self.interface,
            buffer_size=self.buffer_size,
            send_core=self.affinity,
        )

    def clock(self) -> Clock | None:
        if self.adc_sample_rate is None:
            return None
        sync_time = START_TIME if self.sync_time is None else self.sync_time
        return Clock(self.adc_sample_rate, sync_time, self.align_samples)

    def signal_settings(self) -> SignalSettings:
        if self.dither_seed is None:
            self.dither_seed = secrets.randbits(128)
        return SignalSettings(
            period=self.period,
            max_period=self.max_period,
            dither_seed=self.dither_seed,
            nominal_sample_rate=self.nominal_sample_rate,
        )

    def check(self) -> None:
        """Everything that can be checked without starting: resolve, then build each part."""
        self.resolve()
        transport = self.transport()
        transport.validate()
        fmt = self.wire_format()
        clock = self.clock()
        self.signal_settings()
        heap_size = fmt.default_heap_size if self.heap_size is None else self.heap_size
        fmt.check_heap_size(heap_size, self.max_packet_size)
        if clock is not None:
            clock.check_heap_samples(fmt.heap_samples(heap_size))
        # The signal itself is checked once, by the engine, as it renders it.

    # ----------------------------------------------------------------- build

    def build_engine(self, cancel: threading.Event | None = None) -> Engine:
        """The engine these settings describe (renders the start-up signal: may take a second;
        setting `cancel` stops that)."""
        self.resolve()
        return Engine(
            self.transport(),
            self.heap_size,
            wire_format=self.wire_format(),
            clock=self.clock(),
            signals=self.signal_settings(),
            initial_signal=self.signals,
            descriptor_interval=self.descriptor_interval,
            end_of_stream=self.end_of_stream,
            cancel=cancel,
        )

    @property
    def destinations_text(self) -> str:
        """The destinations as given, for the ``destinations`` sensor."""
        return ",".join(self.destinations)


def _has_type(value: object, hint: Any) -> bool:
    """Whether `value` fits a field's type: ``int`` takes no bool, ``float`` takes an int."""
    if isinstance(hint, types.UnionType):
        return any(_has_type(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is Sequence:  # destinations: a list of strings
        return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    return True  # pragma: no cover - every field's type is one of the above


def _describe(hint: Any) -> str:
    names = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}
    if isinstance(hint, types.UnionType):
        arms = [arm for arm in typing.get_args(hint) if arm is not type(None)]
        return " or ".join(_describe(arm) for arm in arms) + " (or None)"
    return names.get(hint, "a list of strings")


def _check_katcp_host(host: str) -> None:
    """The katcp address must be this machine's (or every interface): say so in words if not."""
    if host in ("0.0.0.0", "::"):
        return
    try:
        resolve_interface(host)
    except ConfigError:
        raise ConfigError(
            f"katcp host {host!r} is not an address of this machine (127.0.0.1 for this "
            "machine only, 0.0.0.0 for every interface)"
        ) from None
