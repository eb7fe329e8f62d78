"""Measurements a person wants to see: tones, noise, correlation, saturation.

:class:`SampleCollector` keeps the first samples of each polarisation (up to
a budget, a few million by default), by timestamp. :func:`measure` then works
out, per polarisation:

* the mean (DC), the rms and the count of samples at full scale;
* a power spectrum: Welch's method (Hann window, non-overlapping segments) over
  runs of contiguous heaps, segments of up to 65536 samples;
* the strongest tones: local maxima of the spectrum at least 20 dB above its
  median, each measured from the power of its whole main lobe (so a tone
  between bins reads as loud as one on a bin). The level is in dBFS, where a
  sine of amplitude ``2**(bits-1) - 1`` (full scale) is 0 dBFS;
* the noise rms in LSB: the spectrum's white floor with DC and tone lobes left
  out (for white noise, mean bin power / sum of the squared window);

and for each pair of polarisations the correlation coefficient over the
samples at equal timestamps.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..packing import unpack
from ..spead import full_scale
from .checker import DataHeap
from .report import Correlation, Measurement, Tone

#: Samples kept per polarisation for measuring, by default.
DEFAULT_MEASURE_SAMPLES = 1 << 22
#: Longest FFT segment.
MAX_FFT = 1 << 16
#: Shortest useful spectrum.
MIN_FFT = 256
#: A tone stands this many dB above the spectrum's median.
TONE_THRESHOLD_DB = 20.0
#: Bins on each side of a tone's peak counted as its main lobe (Hann: 2, plus margin).
LOBE = 3
#: Bins at the bottom of the spectrum taken as DC, not tones.
DC_BINS = 3


@dataclass
class Spectrum:
    """A polarisation's averaged power spectrum, scaled so that a full-scale sine peaks at 0."""

    stream: int | None
    cycles_per_sample: np.ndarray
    level_dbfs: np.ndarray


class SampleCollector:
    """Keeps up to `max_samples` samples per stream (the first heaps to arrive), by timestamp."""

    def __init__(self, max_samples: int = DEFAULT_MEASURE_SAMPLES) -> None:
        self.max_samples = max_samples
        self.heaps: dict[int | None, dict[int, bytes]] = {}
        self.bits: dict[int | None, int] = {}
        self._counts: dict[int | None, int] = {}

    def add(self, heap: DataHeap) -> None:
        """Keep `heap`'s samples if its stream still has room."""
        if heap.payload is None or not self.max_samples:
            return
        count = self._counts.get(heap.stream, 0)
        if count >= self.max_samples:
            return
        heaps = self.heaps.setdefault(heap.stream, {})
        if heap.timestamp not in heaps:
            heaps[heap.timestamp] = heap.payload
            self._counts[heap.stream] = count + heap.heap_samples
            self.bits[heap.stream] = heap.bits

    def samples(self, stream: int | None) -> dict[int, np.ndarray]:
        """The samples kept for `stream`, by timestamp, in timestamp order."""
        bits = self.bits[stream]
        return {
            t: unpack(np.frombuffer(self.heaps[stream][t], np.uint8), bits)
            for t in sorted(self.heaps[stream])
        }


def contiguous_runs(heaps: dict[int, np.ndarray]) -> list[np.ndarray]:
    """The samples of runs of heaps that follow each other without a gap."""
    runs: list[list[np.ndarray]] = []
    end: int | None = None
    for t, samples in heaps.items():
        if end is None or t != end:
            runs.append([])
        runs[-1].append(samples)
        end = t + len(samples)
    return [np.concatenate(run) for run in runs]


def welch(runs: list[np.ndarray], mean: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Average power ``|FFT(w x)|**2`` per bin over segments of the runs, and the window w."""
    longest = max((len(run) for run in runs), default=0)
    if longest < MIN_FFT:
        return None
    n = min(MAX_FFT, 1 << int(math.log2(longest)))
    window = np.hanning(n + 1)[:n]  # periodic Hann
    segments = [run[i * n : (i + 1) * n] for run in runs for i in range(len(run) // n)]
    power = np.zeros(n // 2 + 1)
    for segment in segments:
        power += np.abs(np.fft.rfft((segment - mean) * window)) ** 2
    return power / len(segments), window


def find_tones(
    power: np.ndarray,
    window: np.ndarray,
    bits: int,
    max_tones: int,
    adc_sample_rate: float | None,
) -> tuple[list[Tone], np.ndarray]:
    """The strongest tones, and a mask of the bins that are neither DC nor a tone's lobe."""
    n = len(window)
    energy = float(np.sum(window**2))
    floor = float(np.median(power[DC_BINS + 1 :])) if len(power) > DC_BINS + 1 else 0.0
    threshold = max(floor * 10 ** (TONE_THRESHOLD_DB / 10), float(power.max()) * 1e-12)
    free = np.ones(len(power), bool)
    free[: DC_BINS + 1] = False
    free[-1] = False  # Nyquist
    peaks = (
        np.flatnonzero(
            (power[1:-1] >= power[:-2]) & (power[1:-1] >= power[2:]) & (power[1:-1] > threshold)
        )
        + 1
    )
    tones: list[Tone] = []
    for k in peaks[np.argsort(power[peaks])[::-1]]:
        if len(tones) >= max_tones:
            break
        if not free[k]:
            continue
        lo, hi = max(0, k - LOBE), min(len(power), k + LOBE + 1)
        lobe = power[lo:hi]
        bins = np.arange(lo, hi)
        tone_power = max(float(lobe.sum()) - floor * len(lobe), 0.0)
        amplitude = math.sqrt(4 * tone_power / (n * energy))
        centre = float((bins * lobe).sum() / lobe.sum()) / n
        tones.append(
            Tone(
                cycles_per_sample=centre,
                frequency_hz=None if adc_sample_rate is None else centre * adc_sample_rate,
                level_dbfs=20 * math.log10(max(amplitude, 1e-300) / full_scale(bits)),
                amplitude=amplitude,
            )
        )
        free[max(0, k - LOBE - 1) : k + LOBE + 2] = False
    return tones, free


def measure_stream(
    stream: int | None,
    heaps: dict[int, np.ndarray],
    bits: int,
    max_tones: int,
    adc_sample_rate: float | None,
) -> tuple[Measurement, Spectrum | None]:
    """The measurement of one polarisation's samples (by timestamp)."""
    everything = np.concatenate(list(heaps.values())) if heaps else np.zeros(0, np.int64)
    count = len(everything)
    mean = float(everything.mean()) if count else 0.0
    rms = float(np.sqrt(np.mean(everything.astype(np.float64) ** 2))) if count else 0.0
    saturated = int(np.count_nonzero(np.abs(everything) >= full_scale(bits)))
    measurement = Measurement(stream, count, bits, mean, rms, None, saturated)
    averaged = welch(contiguous_runs(heaps), mean)
    if averaged is None:
        return measurement, None
    power, window = averaged
    n = len(window)
    tones, free = find_tones(power, window, bits, max_tones, adc_sample_rate)
    measurement.tones = tones
    measurement.fft_length = n
    if free.any():
        measurement.noise_rms = math.sqrt(float(power[free].mean()) / float(np.sum(window**2)))
    # |X| of a full-scale sine on a bin is full_scale * sum(w) / 2: that is 0 dBFS.
    reference = (full_scale(bits) * float(window.sum()) / 2) ** 2
    level = 10 * np.log10(np.maximum(power, 1e-30) / reference)
    return measurement, Spectrum(stream, np.arange(len(power)) / n, level)


def correlate(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> tuple[int, float | None]:
    """Samples at equal timestamps, and their correlation coefficient (None if either is flat)."""
    common = [t for t in a if t in b and len(a[t]) == len(b[t])]
    if not common:
        return 0, None
    x = np.concatenate([a[t] for t in common]).astype(np.float64)
    y = np.concatenate([b[t] for t in common]).astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    scale = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    return len(x), (float(np.dot(x, y)) / scale if scale > 0 else None)


def measure(
    collector: SampleCollector, max_tones: int = 5, adc_sample_rate: float | None = None
) -> tuple[list[Measurement], list[Correlation], list[Spectrum]]:
    """Measurements of every polarisation the collector holds, and correlations of each pair."""
    streams = sorted(collector.heaps, key=lambda s: -1 if s is None else s)
    samples = {stream: collector.samples(stream) for stream in streams}
    measurements, spectra = [], []
    for stream in streams:
        measurement, spectrum = measure_stream(
            stream, samples[stream], collector.bits[stream], max_tones, adc_sample_rate
        )
        measurements.append(measurement)
        if spectrum is not None:
            spectra.append(spectrum)
    correlations = []
    for a, b in itertools.combinations(streams, 2):
        count, coefficient = correlate(samples[a], samples[b])
        correlations.append(Correlation((a, b), count, coefficient))
    return measurements, correlations, spectra
