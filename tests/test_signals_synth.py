"""Rendered windows checked independently: unpack the samples and measure them with numpy.

Small periods keep this quick; a few tests use periods of several chunks (and
odd sizes) to cover chunk, task and noise-block boundaries.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest

from dsim import packing
from dsim.signals import SignalError, Window, parse, render
from dsim.signals.nodes import CHUNK, NOISE_BLOCK, Context
from dsim.signals.quantise import dither
from dsim.signals.synth import GEMM_MAX_TONES
from dsim.signals.workers import TASK

FS = 1712e6
PERIOD = 1 << 16


def window(spec: str, period: int = PERIOD, bits: int = 10, seed: int = 1, **kwargs) -> Window:
    return render(parse(spec).resolve(period, FS), bits, seed, **kwargs)


def samples(spec: str, period: int = PERIOD, bits: int = 10, seed: int = 1, **kwargs) -> list:
    w = window(spec, period, bits, seed, **kwargs)
    return [w.samples(j).astype(np.float64) for j in range(w.n_outputs)]


def cycles(frequency: float, period: int = PERIOD) -> int:
    return round(frequency * period / FS)


def amplitude_db_error(measured: float, expected: float) -> float:
    return abs(20 * math.log10(measured / expected))


def test_cw_lands_in_its_bin_with_its_amplitude_and_phase() -> None:
    (x,) = samples("cw(0.5, 232101234.0, 0.7);")
    spectrum = np.fft.rfft(x) / (PERIOD / 2) / 511
    k = cycles(232101234.0)
    assert np.argmax(np.abs(spectrum)) == k
    assert amplitude_db_error(abs(spectrum[k]), 0.5) < 0.1
    assert abs(np.angle(spectrum[k]) - 0.7) < 1e-3
    others = np.delete(np.abs(spectrum), k)
    assert others.max() < 1e-3  # dither and quantisation only: far below the tone


def test_cw_samples_match_an_independent_formula() -> None:
    """Across chunk boundaries and an odd-sized last chunk: within 1 LSB of float64 maths."""
    period = 2 * CHUNK + 4096
    k = cycles(123.4e6, period)
    (x,) = samples("nodither(cw(0.8, 123.4e6, -2.5));", period, bits=16)
    n = np.arange(period)
    expected = np.rint(0.8 * np.cos(2 * np.pi * (k * n % period) / period - 2.5) * 32767)
    assert np.abs(x - expected).max() <= 1
    assert np.mean(x != expected) < 1e-3


def test_cw_at_dc_and_nyquist() -> None:
    dc, nyquist = samples(f"nodither(cw(0.25, 0)); nodither(cw(0.5, {FS / 2!r}, 0.3));")
    assert (dc == round(0.25 * 511)).all()
    expected = np.rint(0.5 * math.cos(0.3) * 511) * (-1.0) ** np.arange(PERIOD)
    np.testing.assert_array_equal(nyquist, expected)


def test_wgn_statistics() -> None:
    (x,) = samples("wgn(0.1, 5);")
    std = x.std() / 511
    assert abs(std / 0.1 - 1) < 0.01
    assert abs(x.mean()) < 4 * 0.1 * 511 / math.sqrt(PERIOD)
    kurtosis = np.mean((x - x.mean()) ** 4) / x.var() ** 2
    assert abs(kurtosis - 3) < 0.1
    power = np.abs(np.fft.rfft(x)[1:-1]) ** 2
    low, high = power[: len(power) // 2].mean(), power[len(power) // 2 :].mean()
    assert abs(low / high - 1) < 0.05  # white
    assert abs(x).max() > 4 * 0.1 * 511  # real tails, not clipped at 3 sigma


def test_wgn_seeds() -> None:
    a, b, c, d = samples(
        "nodither(wgn(0.1, 7)); nodither(wgn(0.2, 7)); nodither(wgn(0.1, 8)); nodither(wgn(0.1));",
        bits=16,
    )
    assert np.abs(b - 2 * a).max() <= 2  # the same stream, scaled
    for other in (c, d):
        assert abs(np.corrcoef(a, other)[0, 1]) < 0.02


def test_shared_variable_gives_identical_outputs() -> None:
    w = window("c=wgn(0.1, 7);nodither(c);nodither(c);")
    np.testing.assert_array_equal(w.packed[0], w.packed[1])
    np.testing.assert_array_equal(w.saturated[0], w.saturated[1])
    a, b = samples("c = wgn(0.1, 7); c; c;")  # dithered: the same noise, independent dither
    assert 0 < np.mean(a != b) < 0.5 and np.abs(a - b).max() <= 1


def test_integer_delay_is_an_exact_roll() -> None:
    """delay(x, d) is y[n] = x[n - d]; also where the period is not a whole number of blocks."""
    for period in (PERIOD, PERIOD + 12, 2 * CHUNK + 2 * NOISE_BLOCK + 4):
        x, y, z, w = samples(
            "c = wgn(0.05, 1); nodither(c); nodither(delay(c, -8)); "
            f"nodither(delay(c, {period + 3})); nodither(delay(delay(c, 5), -5));",
            period,
        )
        np.testing.assert_array_equal(y, np.roll(x, -8))
        np.testing.assert_array_equal(z, np.roll(x, 3))
        np.testing.assert_array_equal(w, x)


def test_fractional_delay_is_a_linear_phase_slope() -> None:
    d = 2.5
    x, y = samples("c = wgn(0.1, 3); nodither(c); nodither(delay(c, 2.5));", bits=16)
    cross = np.fft.rfft(y) * np.conj(np.fft.rfft(x))
    k = np.arange(1, PERIOD // 2)
    residual = np.angle(cross[1:-1] * np.exp(2j * np.pi * k * d / PERIOD))
    assert np.median(np.abs(residual)) < 1e-3
    slope = np.polyfit(k, np.unwrap(np.angle(cross[1:-1])), 1)[0]
    assert abs(slope / (-2 * np.pi * d / PERIOD) - 1) < 1e-4


def test_fractional_delay_of_a_tone_is_a_phase_shift() -> None:
    k = cycles(100e6)
    shift = -2 * np.pi * k * 0.25 / PERIOD
    delayed, phased = samples(
        f"nodither(delay(cw(0.5, 100e6), 0.25)); nodither(cw(0.5, 100e6, {shift!r}));", bits=16
    )
    assert np.abs(delayed - phased).max() <= 1
    # At Nyquist the delayed tone is scaled by cos(pi d) and stays real.
    (nyquist,) = samples(f"nodither(delay(cw(0.5, {FS / 2!r}), 1.5));", bits=16)
    assert np.abs(nyquist).max() <= 1


def test_fractional_delays_compose() -> None:
    """Exactly so for an odd period: an even one has a Nyquist bin, which is scaled by cos(pi d)
    to stay real, and cos(pi a) cos(pi b) is not cos(pi (a + b))."""
    a, b = samples(
        "c = wgn(0.1, 9); nodither(delay(delay(c, 1.25), -3.75)); nodither(delay(c, -2.5));",
        period=PERIOD + 1,
        bits=16,
    )
    assert np.abs(a - b).max() <= 1


def count_saturated(x: np.ndarray, bits: int) -> np.ndarray:
    group = packing.group_samples(bits)
    return (np.abs(x) >= 2 ** (bits - 1) - 1).reshape(-1, group).sum(axis=1)


@pytest.mark.parametrize("bits", [8, 9, 10, 12, 16])
def test_saturation_counts_match_an_independent_count(bits: int) -> None:
    spec = "cw(1.2, 100e6) + wgn(0.05, 2); wgn(0.5, 3); 0.99; -2;"
    w = window(spec, bits=bits, tail_samples=8 * packing.group_samples(bits))
    scale = 2 ** (bits - 1) - 1
    for j in range(w.n_outputs):
        x = w.samples(j)
        assert x.min() >= -scale and x.max() <= scale  # -2**(bits-1) never appears
        expected = count_saturated(x, bits)
        np.testing.assert_array_equal(w.saturated[j, : len(expected)], expected)
    assert w.saturated[0].sum() > 0 and w.saturated[3].all()
    assert w.saturated.max() == packing.group_samples(bits)


def test_dither_through_the_quantiser() -> None:
    """A DC level of 0.3 LSB: dithered outputs average 0.3, independently; nodither gives 0."""
    a, b, c = samples("c = 0.3 / 511; c; c; nodither(c);")
    assert set(np.unique(a)) == {0, 1}
    assert abs(a.mean() - 0.3) < 0.01 and abs(b.mean() - 0.3) < 0.01
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.02
    assert (c == 0).all()
    # The dither seed changes only the dithered outputs.
    a2, b2, c2 = samples("c = 0.3 / 511; c; c; nodither(c);", seed=2)
    assert (a2 != a).any() and (b2 != b).any()
    np.testing.assert_array_equal(c2, c)


def test_dither_values() -> None:
    ctx = Context(PERIOD)
    d0 = dither(ctx, 12345, 0, 0, PERIOD).astype(np.float64)
    d1 = dither(ctx, 12345, 1, 0, PERIOD).astype(np.float64)
    assert d0.min() >= -0.5 and d0.max() < 0.5 and d0.min() < -0.49 and d0.max() > 0.49
    assert abs(d0.mean()) < 4 * math.sqrt(1 / 12 / PERIOD)
    assert abs(d0.var() - 1 / 12) < 0.002
    counts = np.histogram(d0, bins=16, range=(-0.5, 0.5))[0]
    assert counts.min() > 0.9 * PERIOD / 16
    assert abs(np.corrcoef(d0, d1)[0, 1]) < 0.02
    np.testing.assert_array_equal(d0 * 65536, np.rint(d0 * 65536))  # 16-bit resolution
    part = dither(Context(PERIOD), 12345, 0, 1000, 37)  # any range reads the same stream
    np.testing.assert_array_equal(part, d0[1000:1037])


def test_multicw_tones_are_evenly_spaced() -> None:
    # Every way of building it: tables per chunk, a matrix product, an inverse FFT.
    for count, step in ((3, 7.3e6), (60, 7.3e6), (GEMM_MAX_TONES + 5, 0.5e6)):
        amplitude, amplitude_step = 0.3 / count, 0.2 / count**2
        (x,) = samples(
            f"nodither(multicw({count}, {amplitude}, {amplitude_step}, 100e6, {step}));", bits=16
        )
        spectrum = np.abs(np.fft.rfft(x)) / (PERIOD / 2) / 32767
        k0, ks = cycles(100e6), cycles(step)  # start and step rounded, not each tone
        bins = k0 + ks * np.arange(count)
        np.testing.assert_array_equal(np.sort(np.argsort(spectrum)[-count:]), bins)
        for i, k in enumerate(bins):
            assert amplitude_db_error(spectrum[k], amplitude + amplitude_step * i) < 0.1
        assert np.delete(spectrum, bins).max() < 1e-5


def test_multicw_equals_its_tones() -> None:
    """On exact bins (elsewhere multicw rounds its start and step, cw each tone)."""
    f0, fs = (cycles(f) * FS / PERIOD for f in (100e6, 20e6))
    a, b = samples(
        f"nodither(multicw(3, 0.1, 0.05, {f0!r}, {fs!r})); "
        f"nodither(cw(0.1, {f0!r}) + cw(0.15, {f0 + fs!r}) + cw(0.2, {f0 + 2 * fs!r}));",
        bits=16,
    )
    assert np.abs(a - b).max() <= 1


def test_comb_impulses() -> None:
    every, thirds = samples("nodither(comb(0.5, 1712e6 / 64)); nodither(comb(0.25, 78370));")
    expected = np.zeros(PERIOD)
    expected[::64] = round(0.5 * 511 + 0.5)  # 255.5 rounds to even
    np.testing.assert_array_equal(every, expected)
    assert cycles(78370) == 3
    expected = np.zeros(PERIOD)
    expected[[0, 21845, 43691]] = np.rint(0.25 * 511)  # rint(c * P / 3)
    np.testing.assert_array_equal(thirds, expected)


def test_comb_across_chunks_and_delay() -> None:
    period = 2 * CHUNK + 4096
    x, y = samples("c = nodither(comb(0.5, 1e6)); c; nodither(delay(comb(0.5, 1e6), 3));", period)
    m = cycles(1e6, period)
    c = np.arange(m)
    positions = np.rint(c * period / m).astype(np.int64)
    assert set(np.flatnonzero(x)) == set(positions)
    np.testing.assert_array_equal(y, np.roll(x, 3))


def test_zeros() -> None:
    w = window("0;0;")
    assert not w.packed.any() and not w.saturated.any()


def test_arithmetic() -> None:
    a, b, c = samples(
        "x = nodither(cw(0.5, 1e8) * cw(0.5, 2e8) - 0.25); x; "
        "nodither(-(cw(0.5, 1e8) + 0.25) * 0.5); nodither(cw(0.4, 1e8) / 4 + 1 / 8);",
        bits=16,
    )
    n = np.arange(PERIOD)
    t1 = np.cos(2 * np.pi * cycles(1e8) * n / PERIOD)
    t2 = np.cos(2 * np.pi * cycles(2e8) * n / PERIOD)
    assert np.abs(a - np.rint((0.25 * t1 * t2 - 0.25) * 32767)).max() <= 1
    assert np.abs(b - np.rint(-(0.5 * t1 + 0.25) * 0.5 * 32767)).max() <= 1
    assert np.abs(c - np.rint((0.1 * t1 + 0.125) * 32767)).max() <= 1


MIXED = (
    "c = wgn(0.1, 11); cw(0.3, 1e8) + c + comb(0.1, 1e6); "
    "delay(c, 2.5) + multicw(3, 0.1, 0.01, 2e8, 1e7) - delay(c, -1000); "
    "nodither(c); nodither(c); 0.5 * c * cw(0.9, 3e8, 1); "
    "delay(multicw(6, 0.05, 0.01, 1e8, 3e7) * c, 3) + delay(multicw(9, 0.01, 0, 1e7, 1e7), 0.5);"
)


def test_same_bytes_for_any_thread_count() -> None:
    period = 2 * TASK + 4096  # three tasks, the last one a partial chunk
    resolved = parse(MIXED).resolve(period, FS)
    first = render(resolved, 10, 99, threads=1, tail_samples=4096)
    for threads in (2, 3):
        other = render(resolved, 10, 99, threads=threads, tail_samples=4096)
        np.testing.assert_array_equal(other.packed, first.packed)
        np.testing.assert_array_equal(other.saturated, first.saturated)
    np.testing.assert_array_equal(first.packed[2], first.packed[3])


@pytest.mark.parametrize("bits", [8, 10, 12, 16, 5])
def test_canonical_text_renders_the_same_bytes(bits: int) -> None:
    resolved = parse(MIXED.replace("11", "")).resolve(PERIOD, FS)  # wgn without a seed
    again = parse(resolved.canonical).resolve(PERIOD, FS)
    a = render(resolved, bits, 3)
    b = render(again, bits, 3, threads=1)
    np.testing.assert_array_equal(a.packed, b.packed)
    np.testing.assert_array_equal(a.saturated, b.saturated)


def test_tail_repeats_the_start() -> None:
    for tail in (0, 4096, 3 * PERIOD + 8):
        w = window("cw(0.5, 1e8) + wgn(0.2, 1); wgn(1, 2);", tail_samples=tail)
        period_bytes = PERIOD * 10 // 8
        packed = w.packed
        assert packed.shape[1] == (PERIOD + tail) * 10 // 8
        for start in range(period_bytes, packed.shape[1], period_bytes):
            n = min(period_bytes, packed.shape[1] - start)
            np.testing.assert_array_equal(packed[:, start : start + n], packed[:, :n])
        groups = PERIOD // 4
        for start in range(groups, w.saturated.shape[1], groups):
            n = min(groups, w.saturated.shape[1] - start)
            np.testing.assert_array_equal(w.saturated[:, start : start + n], w.saturated[:, :n])


def test_katgpucbf_corpus_produces_what_it_describes() -> None:
    k = cycles(232101234.0)
    a, b = samples("cw(0.99, 232101234.0);cw(0.99, 232101234.0);")
    for x in (a, b):
        assert np.argmax(np.abs(np.fft.rfft(x))) == k
    c, d = samples("common=wgn(0.05, 1);nodither(common);nodither(delay(common, -8));")
    np.testing.assert_array_equal(d, np.roll(c, -8))
    assert abs(c.std() / 511 / 0.05 - 1) < 0.01
    e, f = samples("common = nodither(wgn(0.05, 1)); common; common;")
    np.testing.assert_array_equal(e, f)
    np.testing.assert_array_equal(e, c)  # the same seed: the same noise
    g, h = samples("0;0;")
    assert not g.any() and not h.any()
    i, j = samples("nodither(delay(wgn(0.05, 1), -8)); nodither(wgn(0.05, 1));")
    np.testing.assert_array_equal(i, d)
    np.testing.assert_array_equal(j, c)


def test_overflowing_values_saturate_quietly() -> None:
    """float32 overflow (inf, and NaN from inf - inf or inf * 0) maps to full scale, no warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = window("cw(1e39, 1e8); cw(1e30, 1e8) * cw(1e30, 2e8) * 0; -1e300; wgn(1e38, 1);")
    cw, nan, negative, noise = (w.samples(j) for j in range(4))
    assert set(np.unique(cw)) == {-511, 511} and set(np.unique(noise)) == {-511, 511}
    assert (nan == 511).all() and (negative == -511).all()
    assert (w.saturated == 4).all()


def test_render_into_reuses_a_window() -> None:
    resolved = parse(MIXED).resolve(PERIOD, FS)
    first = render(resolved, 10, 5, tail_samples=4096)
    reused = render(parse("0; 0; 0; 0; 0; 0;").resolve(PERIOD, FS), 10, 5, tail_samples=4096)
    again = render(resolved, 10, 5, tail_samples=4096, into=reused)
    assert again.packed is reused.packed and again.saturated is reused.saturated
    np.testing.assert_array_equal(again.packed, first.packed)
    np.testing.assert_array_equal(again.saturated, first.saturated)
    with pytest.raises(ValueError, match="same outputs, period, bits, tail"):
        render(resolved, 10, 5, into=first)


def test_period_limit() -> None:
    with pytest.raises(SignalError, match=r"at most 2\*\*31"):
        window("0;", period=(1 << 31) + 4)


@pytest.mark.parametrize(
    "tones",
    [
        "cw(0.5, 100e6, 0.3)",
        f"cw(0.5, {FS / 2!r}, 0.3)",  # Nyquist: scaled by cos(pi d) per delay
        "multicw(5, 0.1, 0.01, 50e6, 33e6) - 0.125",
        "cw(0.25, 0) + cw(0.25, 200e6)",
    ],
)
@pytest.mark.parametrize("delays", [(2.75,), (0.5, 0.25), (-3.0,), (0.5, 0.5)])
def test_tone_delays_agree_with_the_fft(tones: str, delays: tuple[float, ...]) -> None:
    """A delayed sum of tones is rephased analytically; through the FFT it must come out the same.

    (Multiplying by comb(1, fs), an impulse on every sample, makes the signal one the
    compiler does not see as a sum of tones, so it takes the FFT path.)
    """
    direct, through_fft = f"({tones})", f"(({tones}) * comb(1, {FS!r}))"
    for d in delays:
        direct, through_fft = f"delay({direct}, {d})", f"delay({through_fft}, {d})"
    a, b = samples(f"nodither({direct}); nodither({through_fft});", bits=16)
    assert np.abs(a - b).max() <= 1


def test_a_failed_render_leaves_the_callers_cancel_event_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A task that raises stops the render, but the event the caller passed (the
    engine's own 'closing' flag) stays clear, so the next render works."""
    import threading

    import dsim.signals.window as window_module

    real = window_module.quantise_into
    calls = {"n": 0}

    def fail_once(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("simulated")
        return real(*args, **kwargs)

    monkeypatch.setattr(window_module, "quantise_into", fail_once)
    cancel = threading.Event()
    resolved = parse("cw(0.5, 1e8);").resolve(1 << 20, FS)
    with pytest.raises(MemoryError):
        render(resolved, 10, 1, threads=1, cancel=cancel)
    assert not cancel.is_set()
    assert render(resolved, 10, 1, threads=1, cancel=cancel).n_outputs == 1
