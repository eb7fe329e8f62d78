"""dsim-verify against signal windows: byte-for-byte checks, measurements and the plot."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dsim.errors import ConfigError
from dsim.packing import group_samples, pack, unpack
from dsim.spead import full_scale, status_word
from dsim.verify import Checker, DataHeap, SampleCollector, WindowPattern, measure
from dsim.verify.plot import plot_spectra, require

BITS = 10
FS = full_scale(BITS)
PERIOD = 1 << 16
H = 4096


@dataclass
class FakeWindow:
    """A rendered window as dsim.signals gives it: packed rows and per-run saturation."""

    rows: list[np.ndarray]
    bits: int = BITS

    @property
    def packed(self) -> np.ndarray:
        return np.stack([pack(row, self.bits) for row in self.rows])

    @property
    def saturated(self) -> np.ndarray:
        full = np.abs(np.stack(self.rows)) >= full_scale(self.bits)
        return full.reshape(len(self.rows), -1, group_samples(self.bits)).sum(axis=2)

    def samples(self, output: int) -> np.ndarray:
        return self.rows[output].astype(np.int16)


def quantise(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x * FS, -FS, FS)).astype(np.int64)


def two_outputs(seed: int = 1) -> FakeWindow:
    """Output 0: a 0.5 tone plus noise; output 1: the same noise (clipped somewhere)."""
    rng = np.random.default_rng(seed)
    t = np.arange(PERIOD)
    noise = rng.normal(0, 0.05, PERIOD)
    tone = 0.5 * np.cos(2 * np.pi * 1000 * t / PERIOD)
    second = noise.copy()
    second[100:110] = 2.0  # ten saturated samples
    return FakeWindow([quantise(tone + noise), quantise(second)])


def window_heap(window: FakeWindow, cnt: int, t: int, stream: int, n: int = H) -> DataHeap:
    """The heap a faithful sender sends for `stream` (digitiser id) at timestamp `t`."""
    row = window.rows[stream % 2]
    samples = row[(t + np.arange(n)) % PERIOD]
    count = int(np.count_nonzero(np.abs(samples) >= FS))
    return DataHeap(cnt, t, pack(samples, BITS).tobytes(), BITS, stream, int(status_word(count)))


def test_a_window_stream_is_checked_byte_for_byte() -> None:
    window = two_outputs()
    checker = Checker(pattern=WindowPattern(window, PERIOD, BITS, "test window"))
    cnt = 0
    for i in range(40):  # 2.5 periods: heaps wrap around the window
        for pol in (0, 1):
            h = window_heap(window, cnt, i * H, pol)
            if (i, pol) == (21, 1):  # corrupt one byte of one heap
                payload = bytearray(h.payload or b"")
                payload[1000] ^= 0x10
                h = DataHeap(h.cnt, h.timestamp, bytes(payload), BITS, h.stream, h.status)
            checker.heap(h)
            cnt += 2
    r = checker.report
    assert r.heaps == 80 and r.bad_payload == 1 and r.bad_status == 0 and r.pattern == "test window"
    (error,) = r.bad_payload_locations
    assert (error.timestamp, error.stream, error.sample) == (21 * H, 1, 1000 * 8 // BITS)
    assert error.expected == window.rows[1][(21 * H + error.sample) % PERIOD]
    assert error.got != error.expected


def test_window_saturation_counts_must_match_the_status() -> None:
    window = two_outputs()
    pattern = WindowPattern(window, PERIOD, BITS, "w")
    h = window_heap(window, 0, 0, 1)
    assert pattern.saturated(1, 0, h.payload or b"", BITS) == 10
    checker = Checker(pattern=pattern)
    checker.heap(h)
    checker.heap(DataHeap(4, H, window_heap(window, 4, H, 1).payload, BITS, 1, h.status))
    assert checker.report.bad_status == 1  # heap 1 has no saturated samples


def test_heaps_not_starting_on_a_byte_boundary_are_compared_by_sample() -> None:
    window = two_outputs()
    pattern = WindowPattern(window, PERIOD, BITS, "w")
    h = window_heap(window, 0, 6, 0, n=8)  # starts at sample 6: mid-byte in 10-bit packing
    assert pattern.check(0, 6, h.payload or b"", BITS) is None
    assert pattern.check(0, 7, h.payload or b"", BITS) is not None


def test_a_window_of_another_width_says_so() -> None:
    window = two_outputs()
    checker = Checker(pattern=WindowPattern(window, PERIOD, BITS, "w"))
    checker.heap(DataHeap(0, 0, bytes(H), 8))
    assert checker.report.bad_payload == 1
    assert "window is 10-bit but the stream's samples are 8-bit" in checker.report.notes[0]


# ------------------------------------------------------------ measurements


def collect(window: FakeWindow, heaps: range, streams: tuple[int, ...] = (0, 1)) -> SampleCollector:
    collector = SampleCollector(1 << 20)
    for i in heaps:
        for s in streams:
            collector.add(window_heap(window, 0, i * H, s))
    return collector


def test_tones_noise_correlation_and_saturation_are_measured() -> None:
    window = two_outputs()
    rate = 1712e6
    measurements, correlations, spectra = measure(collect(window, range(64)), 5, rate)
    first, second = measurements
    assert (first.stream, first.samples, first.fft_length) == (0, 64 * H, 1 << 16)
    tone = first.tones[0]
    assert tone.cycles_per_sample == pytest.approx(1000 / PERIOD, abs=1e-7)
    assert tone.frequency_hz == pytest.approx(1000 / PERIOD * rate, rel=1e-6)
    assert tone.level_dbfs == pytest.approx(20 * np.log10(0.5), abs=0.05)
    assert len(first.tones) == 1  # noise makes no tones
    assert first.noise_rms == pytest.approx(0.05 * FS, rel=0.03)
    assert second.tones == [] and second.noise_rms == pytest.approx(0.05 * FS, rel=0.05)
    assert (first.saturated, second.saturated) == (0, 4 * 10)  # 4 periods, 10 each
    (correlation,) = correlations
    x = np.tile(window.rows[0], 4).astype(float)
    y = np.tile(window.rows[1], 4).astype(float)
    assert correlation.streams == (0, 1) and correlation.samples == 64 * H
    assert correlation.coefficient == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)
    assert [s.stream for s in spectra] == [0, 1]
    peak = int(np.argmax(spectra[0].level_dbfs))
    assert spectra[0].level_dbfs[peak] == pytest.approx(20 * np.log10(0.5), abs=0.1)


def test_identical_polarisations_correlate_fully() -> None:
    rng = np.random.default_rng(3)
    common = quantise(rng.normal(0, 0.05, PERIOD))
    window = FakeWindow([common, common])
    _, (correlation,), _ = measure(collect(window, range(16)))
    assert correlation.coefficient == pytest.approx(1.0)


def test_a_tone_between_bins_reads_at_its_level() -> None:
    t = np.arange(PERIOD)
    window = FakeWindow([quantise(0.25 * np.cos(2 * np.pi * 0.1234567 * t)), np.zeros(PERIOD)])
    (first, second), _, _ = measure(collect(window, range(16)))
    assert first.tones[0].cycles_per_sample == pytest.approx(0.1234567, abs=2e-6)
    assert first.tones[0].level_dbfs == pytest.approx(20 * np.log10(0.25), abs=0.05)
    assert second.rms == 0 and second.tones == []


def test_a_share_of_the_heaps_still_gives_a_spectrum() -> None:
    window = two_outputs()
    (first,), _, _ = measure(collect(window, range(0, 64, 8), (0,)))  # one group of eight
    assert first.fft_length == H
    assert first.tones[0].level_dbfs == pytest.approx(20 * np.log10(0.5), abs=0.1)


def test_unpack_of_collected_heaps_matches() -> None:
    window = two_outputs()
    collector = collect(window, range(2), (1,))
    samples = collector.samples(1)
    assert list(samples) == [0, H]
    assert (samples[H] == window.rows[1][H : 2 * H]).all()
    assert (unpack(pack(window.rows[1][:H], BITS), BITS) == samples[0]).all()


# -------------------------------------------------------------------- plot


def test_plot_file_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    window = two_outputs()
    measurements, _, spectra = measure(collect(window, range(16)), 5, 1712e6)
    path = tmp_path / "spectrum.png"
    plot_spectra(str(path), spectra, measurements, 1712e6, [[1000 / PERIOD * 1712e6], []])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] == "matplotlib":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ConfigError, match=r"^--plot needs matplotlib.*dsim\[plot\]") as info:
        require()
    assert "\n" not in str(info.value)
