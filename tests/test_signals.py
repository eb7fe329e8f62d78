"""The signal language: parsing, checks, errors, canonical text and the API (dsim.signals).

The rendered samples themselves are checked in test_signals_synth.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from dsim.errors import ConfigError
from dsim.signals import Program, Resolved, SignalError, Window, parse, render

FS = 1712e6
PERIOD = 1 << 16


def resolve(spec: str, period: int = PERIOD) -> Resolved:
    return parse(spec).resolve(period, FS)


def hz(cycles: int, period: int = PERIOD) -> float:
    return cycles * FS / period


# Specs as correlator test suites send them to katgpucbf's dsim, and more.
CORPUS = [
    "cw(0.99, 232101234.0);cw(0.99, 232101234.0);",
    "common=wgn(0.05, 1);nodither(common);nodither(delay(common, -8));",
    "common = nodither(wgn(0.05, 1)); common; common;",
    "0;0;",
    "multicw(30, 0.01, 0.001, 100e6, 10e6); multicw(30, 0.01, 0.001, 110e6, 10e6);",
    "comb(0.5, 1e6); comb(0.25, 3.3e6);",
    "nodither(delay(wgn(0.05, 1), -8)); nodither(wgn(0.05, 1));",
    "base = cw(1.0, 1e8) + wgn(0.1);\n  base + wgn(0.05);\n  base + wgn(0.05);",
    "cw(1, 2) - cw(3, 4) * cw(5, 6); c = cw(1.5, +2.5e0); c + cw(1, 2);",
    "delay(cw(1, 2) - wgn(1.5, 12345), 42); delay(1, -123);",
    "x = nodither(1); x; x;",
    "cw(0.5, 1712e6/4, -1.25) + 0.1 * (wgn(0.2, 3) - 1 / 3); -(cw(0.1, 5e7) + 0.25);",
    "a = wgn(0.1, 340282366920938463463374607431768211457); delay(a, 2.5); delay(a, -0.25)",
    "counter(); counter();",
]


@pytest.mark.parametrize("spec", CORPUS)
def test_canonical_text_is_stable(spec: str) -> None:
    """canonical(canonical) == canonical, and parsing it again changes nothing."""
    canonical = resolve(spec).canonical
    again = resolve(canonical)
    assert again.canonical == canonical
    assert parse(canonical).text == canonical
    assert ";" in canonical and canonical.endswith(";") and "\n" not in canonical


def test_canonical_spells_seeds_and_rounded_frequencies() -> None:
    resolved = resolve("common = wgn(0.05); nodither(common); nodither(delay(common, -8));")
    match = re.fullmatch(
        r"common = wgn\(0\.05, (\d+)\);nodither\(common\);nodither\(delay\(common, -8\)\);",
        resolved.canonical,
    )
    assert match, resolved.canonical
    assert int(match.group(1)) > 0
    k = round(232101234.0 * PERIOD / FS)
    assert resolve("cw(0.99, 232101234.0);").canonical == f"cw(0.99, {hz(k)!r});"
    # The same Program resolves to the same seeds; a new parse draws new ones.
    program = parse("wgn(0.1);")
    assert program.resolve(PERIOD, FS).canonical == program.resolve(PERIOD, FS).canonical
    assert parse("wgn(0.1);").resolve(PERIOD, FS).canonical != program.resolve(PERIOD, FS).canonical


def test_canonical_multicw_prints_every_argument() -> None:
    """katgpucbf's sensor drops the frequency arguments of multicw; ours replays."""
    resolved = resolve("multicw(4, 0.1, 0.05, 100e6, 37e6);")
    k0, ks = round(100e6 * PERIOD / FS), round(37e6 * PERIOD / FS)
    assert resolved.canonical == f"multicw(4, 0.1, 0.05, {hz(k0)!r}, {hz(ks)!r});"


def test_canonical_keeps_tree_shape_and_folds_constants() -> None:
    assert resolve("cw(1, 0) + (cw(2, 0) + cw(3, 0));").canonical == (
        "cw(1.0, 0.0) + (cw(2.0, 0.0) + cw(3.0, 0.0));"
    )
    assert resolve("(cw(1, 0) + cw(2, 0)) * -cw(3, 0);").canonical == (
        "(cw(1.0, 0.0) + cw(2.0, 0.0)) * -cw(3.0, 0.0);"
    )
    assert resolve("2 * 3 - 1; cw(0.5, 0) / 4; --cw(1, 0); +cw(1, 0);").canonical == (
        "5.0;cw(0.5, 0.0) * 0.25;cw(1.0, 0.0);cw(1.0, 0.0);"
    )
    assert resolve("-1 * cw(1, 0) - -2;").canonical == "-1.0 * cw(1.0, 0.0) - -2.0;"
    assert resolve("delay(cw(1, 0), 3.0); delay(cw(1, 0), 2.5);").canonical == (
        "delay(cw(1.0, 0.0), 3);delay(cw(1.0, 0.0), 2.5);"
    )
    assert resolve("cw(1, 0, 0.5); cw(1, 0, 0);").canonical == "cw(1.0, 0.0, 0.5);cw(1.0, 0.0);"


def test_whitespace_and_final_semicolon_are_optional() -> None:
    a = resolve("c = wgn(0.1, 4); nodither(c); nodither(delay(c, -8));")
    b = resolve("\n  c =\n wgn(0.1,\n 4)\t;nodither( c )\n;\n\n nodither(delay(c,-8))\n")
    assert a.canonical == b.canonical


def test_program_api() -> None:
    program = parse("c = wgn(0.1, 7); nodither(c); nodither(c);")
    assert isinstance(program, Program)
    assert program.text == "c = wgn(0.1, 7); nodither(c); nodither(c);"
    assert program.n_outputs == 2 and not program.is_counter
    program.check_outputs(2)
    with pytest.raises(SignalError) as info:
        program.check_outputs(1)
    assert str(info.value) == "the spec has 2 outputs; this stream has 1 polarisation"
    with pytest.raises(
        SignalError, match=r"^the spec has 1 output; this stream has 2 polarisations$"
    ):
        parse("0;").check_outputs(2)
    counter = parse("counter(); counter();")
    assert counter.is_counter and counter.n_outputs == 2


def test_resolved_api() -> None:
    resolved = resolve("c = wgn(0.1, 7); nodither(c); c + cw(0.5, 1e8);")
    assert resolved.period == PERIOD and resolved.adc_sample_rate == FS
    assert resolved.n_outputs == 2
    assert resolved.dither == (False, True)
    assert not resolved.is_counter
    counter = resolve("counter(); counter();")
    assert counter.is_counter and counter.canonical == "counter();counter();"
    assert counter.dither == (True, True)


def test_variables_are_evaluated_once() -> None:
    program = parse("c = wgn(0.1); c; c; d = c; d;")
    outputs = program.resolve(PERIOD, FS).outputs
    seeds = {output.target.seed for output in outputs[:2]}  # type: ignore[attr-defined]
    assert len(seeds) == 1
    window = render(program.resolve(PERIOD, FS), 10, 1)
    assert window.n_outputs == 3


def test_nodither_placement() -> None:
    """nodither may wrap an output, or a definition used only as a whole output (or aliased)."""
    assert resolve("x = nodither(wgn(0.1, 1)); y = x; y; x;").dither == (False, False)
    assert resolve("nodither(cw(0.5, 1e8) + wgn(0.1, 1)); cw(0.5, 1e8);").dither == (False, True)


def test_tones_lists_added_cw_terms() -> None:
    resolved = resolve(
        "t = multicw(2, 0.1, 0.1, 2e8, 1e7); cw(0.5, 1e8) + 2 * t - cw(0.1, 3e8); "
        "nodither(cw(0.2, 1e8) * wgn(0.1, 1)); delay(-t, 3) + 0.5; wgn(0.1, 2);"
    )
    k1, k2, ks, k3 = (round(f * PERIOD / FS) for f in (1e8, 2e8, 1e7, 3e8))
    tones = resolved.tones()
    assert tones[0] == [(hz(k1), 0.5), (hz(k2), 0.2), (hz(k2 + ks), 0.4), (hz(k3), -0.1)]
    assert tones[1] == []
    assert tones[2] == [(hz(k2), -0.1), (hz(k2 + ks), -0.2)]
    assert tones[3] == []


def test_frequency_rounding() -> None:
    """k = round(f * P / fs) whole cycles per period; 0 Hz is DC (not one cycle as in katgpucbf)."""
    resolved = resolve("cw(1, 0); cw(1, 1); comb(1, 20000); multicw(1, 1, 0, 0, 0);")
    assert resolved.canonical == (
        "cw(1.0, 0.0);cw(1.0, 0.0);comb(1.0, 26123.046875);multicw(1, 1.0, 0.0, 0.0, 0.0);"
    )
    nyquist = resolve(f"cw(1, {FS / 2!r}); multicw(2, 1, 0, {FS / 4!r}, {FS / 4!r});")
    assert nyquist.canonical == f"cw(1.0, {FS / 2!r});multicw(2, 1.0, 0.0, {FS / 4!r}, {FS / 4!r});"


def place(spec: str, needle: str | int, occurrence: int = 1) -> str:
    """ "column C" of the given occurrence of `needle` (or 0-based offset) in a one-line spec."""
    if isinstance(needle, int):
        return f"column {needle + 1}"
    index = -1
    for _ in range(occurrence):
        index = spec.index(needle, index + 1)
    return f"column {index + 1}"


KNOWN = "(known: cw, multicw, comb, wgn, delay, nodither, counter)"

ERRORS = [
    ("cw(1, 2) + cws(1, 2);", "cws", f"unknown function 'cws' {KNOWN}"),
    ("é = 1; é + cws(1, 2);", "cws", f"unknown function 'cws' {KNOWN}"),
    ("cw(1, 2) +", 10, "incomplete expression"),
    ("cw(1, 2;", "(", "'(' was never closed"),
    ("cw(1,2) cw(1,2);", "cw", None, 2),
    ("x;", "x", "unknown variable 'x'"),
    ("x; x = 1;", "x", "unknown variable 'x'"),
    ("cw(1);", "cw", "cw takes 2 or 3 arguments, not 1: cw(amplitude, frequency[, phase])"),
    (
        "cw(1, 2, 3, 4);",
        "cw",
        "cw takes 2 or 3 arguments, not 4: cw(amplitude, frequency[, phase])",
    ),
    ("wgn(0.1, 1, 2);", "wgn", "wgn takes 1 or 2 arguments, not 3: wgn(std[, seed])"),
    ("counter(1);", "counter", "counter takes 0 arguments, not 1: counter()"),
    ("multicw(1, 2);", "multicw", None),
    ("delay(1);", "delay", "delay takes 2 arguments, not 1: delay(signal, samples)"),
    ("wgn(-0.1);", "-", "wgn std -0.1 is negative"),
    ("wgn(0.1, 1.5);", "1.5", "wgn seed (argument 2) must be a non-negative integer"),
    ("wgn(0.1, -1);", "-1", "wgn seed (argument 2) must be a non-negative integer"),
    ("wgn(0.1, cw(1, 2));", "cw", "wgn seed (argument 2) must be a non-negative integer"),
    ("cw(cw(1,2), 2);", "cw", "argument 1 of cw must be a number, not a signal", 2),
    ("delay(1, cw(1,2));", "cw", "argument 2 of delay must be a number, not a signal"),
    ("multicw(2.5, 1, 1, 1, 1);", "2.5", "multicw tone count must be a whole number"),
    ("multicw(-1, 1, 1, 1, 1);", "-", "multicw tone count must not be negative"),
    ("cw(1, -5);", "-", "cw frequency -5.0 Hz is negative"),
    ("multicw(2, 1, 1, -5, 1);", "-", "multicw frequency -5.0 Hz is negative"),
    ("comb(1, 0);", "0)", "comb frequency must be above 0 Hz"),
    ("1e999;", "1e999", "number is not finite"),
    ("cw(1, 1e308 * 10);", "1e308", "number is not finite"),
    ("cw(1, 2) / 0;", "0", "division by zero"),
    ("1 / cw(1, 2);", "cw", "can only divide by a constant"),
    ("a = 1; a = 2; a;", "a", "'a' is already defined", 2),
    ("cw = 1; cw;", "cw", "'cw' is a function; choose another name"),
    ("cw;", "cw", "'cw' is a function: call it, e.g. cw(...)"),
    ("a = 1; a(2);", "a", "'a' is a variable, not a function", 2),
    ("nodither(1) + 0;", "nodither", None),
    ("delay(nodither(1), 1);", "nodither", None),
    ("nodither(nodither(1));", "nodither", None, 2),
    ("-nodither(1);", "nodither", None),
    (
        "x = nodither(1); x + 0;",
        "x",
        "'x' is a nodither(...) signal: it can only be a whole output",
        2,
    ),
    ("x = nodither(1); nodither(x);", "x", None, 2),
    ("x = nodither(1); delay(x, 1);", "x", None, 2),
    ("counter() + 1;", "counter", "counter() can only be a whole output statement ('counter();')"),
    (
        "c = counter(); c;",
        "counter",
        "counter() can only be a whole output statement ('counter();')",
    ),
    ("counter(); 0;", "0", "either every output is counter() or none is"),
    ("0; counter();", "counter", "either every output is counter() or none is"),
    ("cw(1, 2) ** 2;", "cw", "operator '**' is not supported"),
    ("a.b;", "a", "an attribute is not allowed here"),
    ("f(1)(2);", "f", "only the functions of the language can be called"),
    ("cw(amplitude=1, frequency=2);", "1", "keyword arguments are not supported"),
    ("cw(1, 2, *x);", "*", "'*' unpacking is not allowed here"),
    ("lambda: 1;", ":", "unexpected character ':'"),
    ("1 < 2;", "<", "unexpected character '<'"),
    ("'s';", "'", 'unexpected character "\'"'),
    ("cw(1, 2) # note", "#", "unexpected character '#'"),
    ("1j;", "1j", "complex numbers are not supported"),
    ("True;", "True", "True is not a number"),
    ("not 1;", "not", "operator 'not' is not supported"),
    ("a += 1;", "a", "augmented assignment is not supported"),
    ("a = b = 1; a;", "b", "chained assignment is not supported"),
    ("(a, b) = 1;", "(", "only a plain name can be defined"),
    ("import os", "import", "expected an expression or 'name = expression'"),
    ("pass", "pass", "expected an expression or 'name = expression'"),
    ("cw(1,2);;cw(1,2);", ";", "empty statement (two ';' in a row, or a leading ';')", 2),
    (";cw(1,2);", ";", "empty statement (two ';' in a row, or a leading ';')"),
    ("cw(0.5, 1e9);", "cw", None),
    ("multicw(4, 0.1, 0, 1e8, 3e8);", "multicw", None),
    ("multicw(4, 0.1, 0, 1e8, -4e7);", "multicw", None),
    ("comb(1, 1);", "comb", None),
    ("multicw(10, 0.1, 0, 1e8, 10);", "multicw", None),
    ("multicw(1e9, 0.1, 0, 1e6, 1);", "multicw", None),
    ("comb(1, 2e9);", "comb", None),
]


@pytest.mark.parametrize("case", ERRORS, ids=[str(case[0]) for case in ERRORS])
def test_errors_name_the_column(case: tuple) -> None:
    spec, needle, message, *occurrence = case
    with pytest.raises(SignalError) as info:
        resolve(spec)
    text = str(info.value)
    assert isinstance(info.value, ConfigError)
    assert "\n" not in text
    prefix = place(spec, needle, *occurrence) + ": "
    assert text.startswith(prefix), (text, prefix)
    if message is not None:
        assert text == prefix + message


def test_error_messages_for_ranges() -> None:
    with pytest.raises(SignalError) as info:
        resolve("cw(0.5, 1e9);")
    assert str(info.value) == (
        "column 1: cw frequency 1000000000.0 Hz rounds to 999990234.375 Hz "
        "(for a 65536-sample period), above Nyquist (856000000.0 Hz)"
    )
    with pytest.raises(SignalError, match="multicw last tone .* below 0"):
        resolve("multicw(4, 0.1, 0, 1e8, -4e7);")
    with pytest.raises(SignalError, match="rounds to 0 impulses per 65536-sample period"):
        resolve("comb(1, 1);")
    with pytest.raises(SignalError, match="at most one impulse per sample"):
        resolve("comb(1, 2e9);")
    with pytest.raises(SignalError, match="must be a whole output"):
        parse("nodither(1) + 0;")
    with pytest.raises(
        SignalError, match=r"^column 1: multicw takes 5 arguments, not 2: multicw\(n, "
    ):
        parse("multicw(1, 2);")


def test_errors_on_several_lines_give_line_and_column() -> None:
    with pytest.raises(SignalError) as info:
        parse("cw(1, 2);\n  x = 1;\n\tx + cws(1, 2);")
    assert str(info.value).startswith(f"line 3, column 6: unknown function 'cws' {KNOWN}")
    with pytest.raises(SignalError, match=r"^line 2, column 3: '\(' was never closed$"):
        parse("0;\ncw(1,\n 2;")


def test_specs_without_outputs() -> None:
    for spec in ("", "  \n ", ";", " ; "):
        with pytest.raises(SignalError, match=r"^the signal spec is empty$"):
            parse(spec)
    with pytest.raises(SignalError, match=r"^the spec has no outputs \(only definitions\)$"):
        parse("x = 1; y = cw(1, 2);")
    with pytest.raises(SignalError, match="is text"):
        parse(b"0;")  # type: ignore[arg-type]


def test_deep_nesting_is_refused_cleanly() -> None:
    with pytest.raises(SignalError, match="nested too deeply"):
        parse("+".join(["1"] * 1000) + ";")
    with pytest.raises(SignalError):
        parse("(" * 300 + "1" + ")" * 300 + ";")
    parse("+".join(["cw(0.01, 1e6)"] * 150) + ";")


def test_resolve_and_render_settings_are_checked() -> None:
    program = parse("cw(0.5, 1e8); 0;")
    with pytest.raises(SignalError, match="period"):
        program.resolve(0, FS)
    with pytest.raises(SignalError, match="sample rate"):
        program.resolve(PERIOD, -1.0)
    resolved = program.resolve(4098, FS)
    with pytest.raises(SignalError, match=r"the period \(4098 samples\) must be a multiple of 4"):
        render(resolved, 10, 1)
    assert render(resolved, 12, 1).period == 4098  # 12-bit groups are 2 samples
    with pytest.raises(SignalError, match="tail samples"):
        render(resolve("0;"), 10, 1, tail_samples=6)
    with pytest.raises(SignalError, match="sample bits must be 2-16"):
        render(resolve("0;"), 17, 1)
    with pytest.raises(SignalError, match="dither seed"):
        render(resolve("0;"), 10, -1)
    with pytest.raises(ValueError, match="counter"):
        render(resolve("counter();"), 10, 1)


def test_window_shape() -> None:
    window = render(resolve("cw(0.5, 1e8); wgn(0.1, 1);", 8192), 10, 5, tail_samples=4096)
    assert isinstance(window, Window)
    assert (window.period, window.sample_bits, window.tail_samples) == (8192, 10, 4096)
    assert window.n_outputs == 2
    assert window.packed.dtype == np.uint8 and window.packed.shape == (2, (8192 + 4096) * 10 // 8)
    assert window.saturated.dtype == np.uint8 and window.saturated.shape == (2, (8192 + 4096) // 4)
    samples = window.samples(1)
    assert samples.dtype == np.int16 and samples.shape == (8192,)


def random_expression(rng: np.random.Generator, depth: int, names: list[str]) -> str:
    """A random expression of the language (for the canonical round trip)."""
    choice = rng.integers(0, 10 if depth > 0 else 5)
    number = f"{rng.choice([0.5, 0.25, 1, 3, 1e-3, 2.5e-1])}"
    if choice == 0:
        return number if rng.random() < 0.7 else f"-{number}"
    if choice == 1:
        return f"cw({number}, {rng.uniform(0, 8e8):.6g}, {rng.uniform(-3, 3):.3f})"
    if choice == 2:
        return f"wgn(0.1, {int(rng.integers(0, 2**62)) << 8})"
    if choice == 3 and names:
        return str(rng.choice(names))
    if choice == 4:
        return f"comb(0.5, {rng.uniform(1e6, 1e8):.6g})"
    if choice == 5:
        return f"-{random_expression(rng, depth - 1, names)}"
    if choice == 6:
        return f"delay({random_expression(rng, depth - 1, names)}, {rng.choice([-8, 2.5, 0.25])})"
    if choice == 7:
        return f"multicw(3, 0.1, 0.01, {rng.uniform(1e6, 5e8):.6g}, 1e6)"
    op = str(rng.choice(["+", "-", "*"]))
    left = random_expression(rng, depth - 1, names)
    right = random_expression(rng, depth - 1, names)
    return f"({left}) {op} ({right})" if rng.random() < 0.5 else f"{left} {op} {right}"


def test_random_specs_round_trip_through_canonical_text() -> None:
    rng = np.random.default_rng(2024)
    for _ in range(60):
        names: list[str] = []
        statements = []
        for i in range(rng.integers(0, 3)):
            statements.append(f"v{i} = {random_expression(rng, 3, names)}")
            names.append(f"v{i}")
        statements += [random_expression(rng, 4, names) for _ in range(2)]
        spec = "; ".join(statements)
        resolved = parse(spec).resolve(4096, FS)
        again = parse(resolved.canonical).resolve(4096, FS)
        assert again.canonical == resolved.canonical, spec
        a, b = render(resolved, 10, 7), render(again, 10, 7, threads=1)
        np.testing.assert_array_equal(a.packed, b.packed, err_msg=spec)
