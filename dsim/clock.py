"""The simulated ADC clock that ties timestamps to the wall clock.

A real digitiser samples on a clock locked to an observatory time reference:
sample ``t`` is taken at UNIX time ``sync_time + t / adc_sample_rate``. dsim's
engine paces a real-time stream by it, and dsim-verify checks arrivals
against it; both use this one class.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .errors import ConfigError
from .spead import MAX_TIMESTAMP, TIMESTAMP_MODULUS

#: Real-time captures start at a multiple of this many samples by default (the
#: chunk size correlator receivers gather heaps into).
DEFAULT_ALIGN_SAMPLES = 1 << 20


def check_finite(
    value: float, what: str, *, positive: bool = False, non_negative: bool = False
) -> float:
    """Return `value` if it is a finite number (and positive/non-negative as asked)."""
    if not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, not {value}")
    if positive and not value > 0:
        raise ConfigError(f"{what} must be positive, not {value:g}")
    if non_negative and not value >= 0:
        raise ConfigError(f"{what} must be >= 0, not {value:g}")
    return value


@dataclass(frozen=True)
class Clock:
    """Sample ``t`` is taken at UNIX time ``sync_time + t / adc_sample_rate``.

    `align_samples` is where a capture may start: a real-time capture starts
    at the first multiple of it that is not in the past.
    """

    adc_sample_rate: float
    sync_time: float
    align_samples: int = DEFAULT_ALIGN_SAMPLES

    def __post_init__(self) -> None:
        check_finite(self.adc_sample_rate, "ADC sample rate", positive=True)
        check_finite(self.sync_time, "sync time", non_negative=True)
        if isinstance(self.align_samples, bool) or self.align_samples <= 0:
            raise ConfigError(
                f"alignment must be a positive sample count, not {self.align_samples}"
            )
        now = self.timestamp_at(time.time())
        if now > MAX_TIMESTAMP:
            raise ConfigError(
                f"at {self.adc_sample_rate:g} samples/s from sync time {self.sync_time:g} the "
                f"ADC clock is at timestamp {now:.3g} now, past 2**62: check the ADC sample "
                "rate and sync time"
            )

    def check_heap_samples(self, heap_samples: int) -> None:
        """Raise :exc:`ConfigError` unless captures can start on heap boundaries."""
        if self.align_samples % heap_samples:
            raise ConfigError(
                f"the alignment of {self.align_samples} samples (--align-samples) is not a "
                f"multiple of the heap's {heap_samples} samples"
            )

    def time_of(self, timestamp: int) -> float:
        """UNIX time at which sample `timestamp` is taken."""
        return self.sync_time + timestamp / self.adc_sample_rate

    def timestamp_at(self, when: float) -> float:
        """The (fractional) sample index taken at UNIX time `when`."""
        return (when - self.sync_time) * self.adc_sample_rate

    def next_aligned(self, not_before: int, now: float) -> int:
        """The first aligned timestamp that is at least `not_before` and not in the past."""
        first = max(not_before, math.ceil(self.timestamp_at(now)))
        return -(-first // self.align_samples) * self.align_samples

    def unwrap(self, wire_timestamp: int, when: float) -> int:
        """The full timestamp whose low 48 bits are `wire_timestamp`, nearest to time `when`."""
        now = self.timestamp_at(when)
        return (
            wire_timestamp + round((now - wire_timestamp) / TIMESTAMP_MODULUS) * TIMESTAMP_MODULUS
        )
