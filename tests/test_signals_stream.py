"""Signals over real UDP: what arrives is what the spec describes, checked independently.

Each test receives dsim's heaps with a plain spead2 stream, unpacks the 10-bit
samples itself, puts them back in timestamp order and measures them with
numpy (FFT, std, cross-spectrum), or compares them bit for bit with a window
rendered separately from the spec.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiokatcp
import numpy as np
import pytest

from dsim import Simulator
from dsim.signals import parse, render
from dsim.spead import status_word

from .conftest import TEST_RATE, Sink
from .support import DsimProcess, ReceivedHeap, check_counter

PERIOD = 1 << 16
SAMPLES = 4096  # per heap
FS = 1712e6  # the nominal rate a free-running stream reads frequencies against
FULL = 511


def meerkat(sink: Sink, **options: Any) -> Simulator:
    options.setdefault("rate", TEST_RATE)
    options.setdefault("period", PERIOD)
    return Simulator(destinations=[sink.dest, sink.dest], format="meerkat", **options)


def assemble(heaps: list[ReceivedHeap], pol: int, first: int, samples: int) -> np.ndarray:
    """`samples` consecutive samples of digitiser id `pol` from timestamp `first`."""
    out = np.full(samples, 10_000, np.int64)
    for heap in heaps:
        if heap.digitiser_id == pol and first <= heap.timestamp < first + samples:
            start = heap.timestamp - first
            out[start : start + len(heap.samples)] = heap.samples[: samples - start]
    assert (out != 10_000).all(), "some samples never arrived"
    return out


async def capture(sim: Simulator, sink: Sink, timestamps: int) -> tuple[list[ReceivedHeap], int]:
    """Send `timestamps` heaps per polarisation; returns what arrived and the first timestamp."""
    before = len(sink.receiver.received.heaps)
    first = await sim.capture_start(timestamps)
    assert sim.engine is not None
    await sim.engine.wait_capture()
    received = await sink.receiver.collect(heaps=before + 2 * timestamps)
    assert len(received.heaps) == before + 2 * timestamps
    return received.heaps[before:], first


def window_samples(spec: str, pol: int, *, seed: int, period: int = PERIOD) -> np.ndarray:
    """The spec rendered independently of the simulator (the same rules, a fresh render)."""
    resolved = parse(spec).resolve(period, FS)
    return render(resolved, 10, seed).samples(pol).astype(np.int64)


async def test_tones_land_in_their_bins_at_their_level(sink: Sink) -> None:
    async with meerkat(sink) as sim:
        await sim.set_signals("cw(0.5, 100e6); cw(0.25, 300e6);")
        heaps, first = await capture(sim, sink, PERIOD // SAMPLES)
    for pol, (amplitude, frequency) in enumerate([(0.5, 100e6), (0.25, 300e6)]):
        x = assemble(heaps, pol, first, PERIOD) / FULL
        spectrum = np.abs(np.fft.rfft(x)) * 2 / PERIOD
        k = round(frequency * PERIOD / FS)
        assert int(np.argmax(spectrum)) == k
        assert abs(20 * np.log10(spectrum[k] / amplitude)) < 0.1


async def test_noise_has_the_asked_std_and_shared_noise_is_identical(sink: Sink) -> None:
    async with meerkat(sink, period=1 << 18) as sim:
        await sim.set_signals("c = wgn(0.1, 9); nodither(c); nodither(c);")
        heaps, first = await capture(sim, sink, (1 << 18) // SAMPLES)
    x0 = assemble(heaps, 0, first, 1 << 18)
    x1 = assemble(heaps, 1, first, 1 << 18)
    assert np.array_equal(x0, x1)  # one noise, evaluated once, no dither
    assert abs(np.std(x0 / FULL) / 0.1 - 1) < 0.01


async def test_a_fractional_delay_is_a_phase_slope(sink: Sink) -> None:
    delay = 2.5
    async with meerkat(sink) as sim:
        await sim.set_signals(f"c = wgn(0.2, 5); nodither(c); nodither(delay(c, {delay}));")
        heaps, first = await capture(sim, sink, PERIOD // SAMPLES)
    x0 = np.fft.rfft(assemble(heaps, 0, first, PERIOD).astype(float))
    x1 = np.fft.rfft(assemble(heaps, 1, first, PERIOD).astype(float))
    k = np.arange(1, PERIOD // 4)  # well inside the band
    phase = np.unwrap(np.angle(x1[k] * np.conj(x0[k])))
    slope = np.polyfit(k, phase, 1)[0]
    assert slope == pytest.approx(-2 * np.pi * delay / PERIOD, rel=1e-3)
    # The delayed copy is also a correlation peak between samples 2 and 3.
    xcorr = np.fft.irfft(x1 * np.conj(x0))
    assert int(np.argmax(xcorr)) in (2, 3)


async def test_saturation_counts_match_an_independent_count(sink: Sink) -> None:
    async with meerkat(sink) as sim:
        await sim.set_signals("cw(1.2, 50e6); cw(0.3, 50e6);")
        heaps, _ = await capture(sim, sink, 32)
    saturated_heaps = 0
    for heap in heaps:
        count = int(np.count_nonzero(np.abs(heap.samples) >= FULL))
        assert heap.status == int(status_word(count))
        saturated_heaps += count > 0
        if heap.digitiser_id == 1:
            assert count == 0
    assert saturated_heaps == 32  # every heap of the clipped tone


async def test_the_samples_are_the_window_bit_for_bit_and_replayable(sink: Sink) -> None:
    spec = "multicw(3, 0.2, 0.05, 100e6, 50e6) + wgn(0.01); comb(0.5, 20e6) + 0.1;"
    async with meerkat(sink, dither_seed=1234) as sim:
        await sim.set_signals(spec)
        canonical = await sim.sensor("signals")
        assert await sim.sensor("signals-orig") == spec
        assert await sim.sensor("dither-seed") == "1234"
        heaps, first = await capture(sim, sink, 2 * PERIOD // SAMPLES)  # two periods
        # The canonical text, sent back, reproduces the same samples.
        await sim.set_signals(canonical)
        assert await sim.sensor("signals") == canonical
        again, second = await capture(sim, sink, PERIOD // SAMPLES)
    for pol in (0, 1):
        expected = window_samples(canonical, pol, seed=1234)
        for heap in heaps + again:
            if heap.digitiser_id == pol:
                start = heap.timestamp % PERIOD
                assert np.array_equal(heap.samples, expected[start : start + SAMPLES])
    assert second == first + 2 * PERIOD


async def test_a_switch_while_streaming_lands_at_the_replied_timestamp(sink: Sink) -> None:
    async with meerkat(sink, dither_seed=5) as sim:
        await sim.capture_start()
        await asyncio.sleep(0.1)
        switch = await sim.set_signals("cw(0.5, 200e6); wgn(0.1, 3);")
        assert await sim.sensor("steady-state-timestamp") == switch
        # And one scheduled exactly, a little later.
        later = switch + 2000 * SAMPLES  # about 0.4 s on
        assert await sim.set_signals("0; 0;", PERIOD, later) == later
        assert await sim.sensor("steady-state-timestamp") == later
        await asyncio.sleep(0.8)
        await sim.capture_stop()
        received = await sink.receiver.collect(idle_timeout=1.0)
    before = [h for h in received.heaps if h.timestamp < switch]
    between = [h for h in received.heaps if switch <= h.timestamp < later]
    after = [h for h in received.heaps if h.timestamp >= later]
    assert before and between and after
    check_counter(before, 10)
    canonical = parse("cw(0.5, 200e6); wgn(0.1, 3);").resolve(PERIOD, FS).canonical
    for heap in between:
        expected = window_samples(canonical, heap.digitiser_id or 0, seed=5)
        start = heap.timestamp % PERIOD
        assert np.array_equal(heap.samples, expected[start : start + SAMPLES])
    assert all((h.samples == 0).all() for h in after)
    # No gap and no repeat in the timestamps of either polarisation.
    for pol in (0, 1):
        timestamps = [h.timestamp for h in received.heaps if h.digitiser_id == pol]
        assert timestamps == list(range(timestamps[0], timestamps[-1] + 1, SAMPLES))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cws(1, 2);", "column 1: unknown function 'cws'"),
        ("cw(0.5, 1e6);", "1 output"),
        ("cw(0.5, 1e9); cw(0.5, 1e9);", "Nyquist"),
        ("wgn(-1); wgn(1);", "std"),
        ("a = 1; a = 2; a; a;", "a"),
        ("b; b;", "b"),
    ],
)
async def test_a_bad_spec_fails_and_changes_nothing(sink: Sink, spec: str, message: str) -> None:
    async with meerkat(sink) as sim:
        await sim.capture_start()
        with pytest.raises(aiokatcp.FailReply, match=message):
            await sim.set_signals(spec)
        assert await sim.sensor("signals") == "counter();counter();"
        assert sim.engine is not None and sim.engine.capturing
        await sim.capture_stop()
    received = await sink.receiver.collect(idle_timeout=0.5)
    check_counter(received.heaps, 10)


KATGPUCBF_SPECS = [
    "cw(0.99, 232101234.0);cw(0.99, 232101234.0);",
    "common=wgn(0.05, 1);nodither(common);nodither(delay(common, -8));",
    "common = nodither(wgn(0.05, 1)); common; common;",
    "multicw(30, 0.01, 0.0, 100e6, 1e6);multicw(30, 0.01, 0.0, 100e6, 1e6);",
    "comb(0.5, 1e6);comb(0.5, 1e6);",
    "nodither(delay(wgn(0.05, 1), -8));nodither(delay(wgn(0.05, 1), -8));",
    "0;0;",
]


@pytest.mark.parametrize("spec", KATGPUCBF_SPECS)
async def test_katgpucbf_style_specs_are_accepted_unchanged(sink: Sink, spec: str) -> None:
    async with meerkat(sink, dither_seed=3) as sim:
        first = await sim.set_signals(spec)
        assert first == await sim.sensor("steady-state-timestamp")
        heaps, start = await capture(sim, sink, 4)
    canonical = parse(spec).resolve(PERIOD, FS).canonical
    for pol in (0, 1):
        expected = window_samples(canonical, pol, seed=3)
        x = assemble(heaps, pol, start, 4 * SAMPLES)
        offset = start % PERIOD
        assert np.array_equal(x, expected[offset : offset + 4 * SAMPLES])


async def test_two_processes_send_identical_samples_at_equal_timestamps(
    dsim_processes: Callable[..., Any], sinks: Callable[..., Sink]
) -> None:
    sync = time.time() - 1.0
    rate = 1e7
    spec = "wgn(0.1, 11) + cw(0.3, 1e6); wgn(0.1, 12);"
    pair = [sinks(), sinks()]
    processes: list[DsimProcess] = []
    for sink in pair:
        processes.append(
            await dsim_processes(
                "--format",
                "meerkat",
                "--signals",
                spec,
                "--period",
                str(PERIOD),
                "--dither-seed",
                "77",
                "--adc-sample-rate",
                str(rate),
                "--sync-time",
                repr(sync),
                "--align-samples",
                str(PERIOD),
                sink.dest,
                sink.dest,
            )
        )
    start = int((time.time() + 1.0 - sync) * rate) // PERIOD * PERIOD + PERIOD
    for process in processes:
        out = await process.katcpcmd("capture-start", "16", str(start))
        assert f"ok {start}" in out
    got = [await s.receiver.collect(heaps=32, idle_timeout=5.0) for s in pair]
    for pol in (0, 1):
        a = assemble(got[0].heaps, pol, start, 16 * SAMPLES)
        b = assemble(got[1].heaps, pol, start, 16 * SAMPLES)
        assert np.array_equal(a, b)
    assert not np.array_equal(
        assemble(got[0].heaps, 0, start, 4096), assemble(got[0].heaps, 1, start, 4096)
    )


async def test_switching_back_and_forth_reuses_the_spare_window(sink: Sink) -> None:
    """The third window is rendered into the first one's memory and heaps: still exact."""
    specs = ["cw(0.5, 100e6); wgn(0.1, 1);", "wgn(0.2, 2); cw(0.3, 50e6);", "comb(0.9, 1e6); 0.25;"]
    async with meerkat(sink, dither_seed=8) as sim:
        assert sim.engine is not None
        await sim.capture_start()
        switches = []
        rings = []
        for spec in specs:
            await asyncio.sleep(0.1)
            switches.append(await sim.set_signals(spec))
            rings.append(sim.engine._plan.ring)
        await asyncio.sleep(0.1)
        await sim.capture_stop()
        received = await sink.receiver.collect(idle_timeout=1.0)
    assert rings[2] is rings[0]  # no heap was built for the third window
    bounds = [*switches, received.heaps[-1].timestamp + SAMPLES]
    for spec, start, end in zip(specs, bounds, bounds[1:], strict=False):
        canonical = parse(spec).resolve(PERIOD, FS).canonical
        expected = [window_samples(canonical, pol, seed=8) for pol in (0, 1)]
        heaps = [h for h in received.heaps if start <= h.timestamp < end]
        assert heaps
        for heap in heaps:
            offset = heap.timestamp % PERIOD
            window = expected[heap.digitiser_id or 0]
            assert np.array_equal(heap.samples, window[offset : offset + SAMPLES])


async def test_a_window_too_large_for_the_ring_fails_before_rendering(sink: Sink) -> None:
    async with meerkat(sink, max_period=1 << 31) as sim:
        started = time.monotonic()
        with pytest.raises(aiokatcp.FailReply, match="prebuilt heaps"):
            await sim.set_signals("wgn(0.1); wgn(0.1);", 1 << 31)
        assert time.monotonic() - started < 5  # refused up front, not after a long render
        assert await sim.sensor("signals") == "counter();counter();"
