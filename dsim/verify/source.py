"""Where the expected signal comes from: the command line, or dsim's katcp sensors.

A signal other than ``counter()`` is a periodic window that dsim renders from
the signal language (:mod:`dsim.signals`); the verifier renders the same
window from the same inputs (spec, period, dither seed, sample width and the
ADC rate its frequencies are read against) and compares heaps byte for byte.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..signals import DEFAULT_NOMINAL_SAMPLE_RATE, Resolved, parse, render
from .expect import CounterPattern, Pattern, WindowPattern

#: Seconds allowed for connecting to dsim and for each katcp request.
KATCP_TIMEOUT = 10.0


@dataclass
class SignalSource:
    """What dsim says it sends (its katcp sensors), or what the command line says."""

    signals: str
    period: int | None = None
    dither_seed: int | None = None
    sample_bits: int | None = None
    adc_sample_rate: float | None = None
    format: str | None = None
    polarisations: int | None = None
    sync_time: float | None = None
    real_time: bool | None = None
    heap_size: int | None = None


@dataclass
class ExpectedSignal:
    """The pattern to check payloads against, and the tones each output should carry."""

    pattern: Pattern
    #: Per window output, the frequencies of its tones (Hz).
    tones: list[list[float]] = field(default_factory=list)


def _tone_frequencies(resolved: Resolved) -> list[list[float]]:
    """Per output, the frequencies (Hz) of the tones ``resolved.tones()`` lists (for a plot)."""
    return [[frequency for frequency, _ in output] for output in resolved.tones()]


def expected_signal(
    spec: str,
    period: int | None,
    dither_seed: int | None,
    adc_sample_rate: float | None,
    sample_bits: int,
) -> ExpectedSignal:
    """Parse `spec` and render its window (slow for long periods: seconds at 2**27).

    Raises :exc:`ConfigError` (one line) for a bad spec or missing inputs.
    """
    program = parse(spec)
    if program.is_counter:
        return ExpectedSignal(CounterPattern())
    if period is None or dither_seed is None:
        raise ConfigError(
            "a signal other than counter() needs its period and dither seed "
            "(--period, --dither-seed, or --katcp)"
        )
    if adc_sample_rate is None:
        # What a free-running dsim reads frequencies against unless told otherwise.
        adc_sample_rate = DEFAULT_NOMINAL_SAMPLE_RATE
    resolved = program.resolve(period, adc_sample_rate)
    if parse(spec).resolve(period, adc_sample_rate).canonical != resolved.canonical:
        raise ConfigError(
            "the spec has noise without a seed (wgn(std) draws a new one each time): give "
            "the seeds dsim shows in its `signals` sensor, or read it with --katcp"
        )
    window = render(resolved, sample_bits, dither_seed)
    description = f"{resolved.canonical} (period {period}, dither seed {dither_seed})"
    pattern = WindowPattern(window, period, sample_bits, description)
    return ExpectedSignal(pattern, _tone_frequencies(resolved))


async def read_sensors(host: str, port: int, timeout: float = KATCP_TIMEOUT) -> SignalSource:
    """What the dsim at `host`:`port` says it sends, from its sensors."""
    import aiokatcp

    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            # One attempt: a refused connection is an answer, not something to wait out.
            client = await aiokatcp.Client.connect(host, port, auto_reconnect=False)
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ConfigError(f"cannot connect to dsim's katcp server at {where}: {reason}") from None

    async def value(name: str, kind: type, required: bool = True) -> Any:
        try:
            async with asyncio.timeout(timeout):
                return await client.sensor_value(name, kind)
        except TimeoutError:
            raise ConfigError(f"dsim at {where} did not answer for sensor {name!r}") from None
        except (aiokatcp.FailReply, aiokatcp.InvalidReply, ValueError) as exc:
            if required:
                raise ConfigError(f"dsim at {where}: cannot read sensor {name!r}: {exc}") from None
            return None

    try:
        seed = await value("dither-seed", str, required=False)
        try:
            dither_seed = int(seed) if seed not in (None, "") else None
        except ValueError:
            reason = f"dsim at {where}: its dither-seed sensor is not an integer"
            raise ConfigError(reason) from None
        rate = await value("adc-sample-rate", float, required=False)
        sync = await value("sync-time", float, required=False)
        source = SignalSource(
            signals=await value("signals", str),
            period=await value("period", int, required=False),
            dither_seed=dither_seed,
            sample_bits=await value("sample-bits", int, required=False),
            adc_sample_rate=rate if rate else None,
            format=await value("format", str, required=False),
            polarisations=await value("polarisations", int, required=False),
            sync_time=sync,
            real_time=await value("real-time", bool, required=False),
            heap_size=await value("heap-size", int, required=False),
        )
    finally:
        client.close()
        await client.wait_closed()
    return source
