"""``--plot FILE.png``: the power spectrum of each polarisation, expected tones marked.

matplotlib is an optional extra (``pip install 'dsim[plot]'``): :func:`require`
says so in one line, before any receiving starts, if it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigError
from .analysis import Spectrum
from .report import Measurement


def require() -> None:
    """Raise :exc:`ConfigError` unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--plot needs matplotlib, which is not installed (pip install 'dsim[plot]')"
        ) from None


def plot_spectra(
    path: str,
    spectra: Sequence[Spectrum],
    measurements: Sequence[Measurement] = (),
    adc_sample_rate: float | None = None,
    expected_tones: Sequence[Sequence[float]] = (),
    title: str = "",
) -> None:
    """Write one panel per polarisation: level (dBFS per bin) against frequency.

    `expected_tones[i]` are the frequencies (Hz, or cycles per sample without
    a rate) that polarisation `i` should carry; they are marked with dashed
    lines, the measured tones with dots.
    """
    require()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not spectra:
        raise ConfigError("nothing to plot: no polarisation had enough contiguous samples")
    scale = adc_sample_rate / 1e6 if adc_sample_rate else 1.0
    unit = "MHz" if adc_sample_rate else "cycles/sample"
    tones = {m.stream: m.tones for m in measurements}
    fig, axes = plt.subplots(len(spectra), 1, figsize=(10, 3.2 * len(spectra)), squeeze=False)
    for i, (ax, spectrum) in enumerate(zip(axes[:, 0], spectra, strict=True)):
        ax.plot(spectrum.cycles_per_sample * scale, spectrum.level_dbfs, lw=0.6)
        expected = expected_tones[i] if i < len(expected_tones) else ()
        for j, frequency in enumerate(expected):
            ax.axvline(
                frequency / 1e6 if adc_sample_rate else frequency,
                color="tab:red",
                ls="--",
                lw=0.8,
                label="expected tone" if j == 0 else None,
            )
        measured = tones.get(spectrum.stream, [])
        if measured:
            ax.plot(
                [t.cycles_per_sample * scale for t in measured],
                [t.level_dbfs for t in measured],
                "o",
                color="tab:orange",
                ms=4,
                label="measured tone (lobe power)",
            )
        name = "samples" if spectrum.stream is None else f"digitiser id {spectrum.stream}"
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("dBFS per bin")
        ax.grid(alpha=0.3)
        if expected or measured:
            ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel(f"frequency ({unit})")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise ConfigError(f"cannot write the plot to {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
