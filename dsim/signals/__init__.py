"""The signal language of katgpucbf's dsim, done better: parse, resolve, render.

::

    program = parse("common = nodither(wgn(0.05, 1)); common; common;")
    program.check_outputs(2)
    resolved = program.resolve(period=2**24, adc_sample_rate=1712e6)
    window = render(resolved, sample_bits=10, dither_seed=1234, tail_samples=4096)

Modules: :mod:`.parser` (text -> checked program tree, canonical text in
:mod:`.tree`), :mod:`.resolve` (frequencies rounded to the period),
:mod:`.synth` (program -> float32 waveforms, chunk by chunk), :mod:`.quantise`
(waveforms -> dithered, packed samples and saturation counts) and
:mod:`.window` (the threads and the window: :func:`render`).
"""

from .errors import SignalError
from .parser import FUNCTIONS, Program, parse
from .resolve import DEFAULT_NOMINAL_SAMPLE_RATE, Resolved
from .window import Window, default_threads, render
from .workers import RenderCancelled

__all__ = [
    "DEFAULT_NOMINAL_SAMPLE_RATE",
    "FUNCTIONS",
    "Program",
    "RenderCancelled",
    "Resolved",
    "SignalError",
    "Window",
    "default_threads",
    "parse",
    "render",
]
