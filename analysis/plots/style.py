"""One figure style for every analysis plot: rcParams, saving, labels and colours.

Paper-size figures (3.5 x 2.6 in, 8 pt fonts) written as PNG (200 dpi) and PDF with the Agg
backend, so they work on headless machines.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plt", "paper_style", "save_figure", "si_label", "colors", "label_log_axis"]

_RC = {
    "font.size": 8,
    "axes.labelsize": 8,
    "axes.titlesize": 8,
    "legend.fontsize": 6,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.2,
    "lines.markersize": 3,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "savefig.bbox": "tight",
}


def paper_style():
    """Context manager with the rcParams used for all analysis figures."""
    return matplotlib.rc_context(_RC)


def save_figure(fig, outdir, stem, formats=("png", "pdf")) -> list[str]:
    """Save ``fig`` as ``outdir/stem.{png,pdf}``, close it and return the paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = outdir / f"{stem}.{fmt}"
        fig.savefig(p, dpi=200 if fmt == "png" else None, bbox_inches="tight")
        paths.append(str(p))
    plt.close(fig)
    return paths


def si_label(x: float) -> str:
    """12_300_000 -> '12.3M' (legend labels for parameter and token counts)."""
    for div, suf in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.3g}"


def colors(n: int):
    """``n`` viridis colours (one per line of a family)."""
    return plt.cm.viridis(np.linspace(0.0, 0.9, max(n, 1)))


def label_log_axis(ax, which: str = "x") -> None:
    """Tick labels on a log axis whatever its span: below ~1.3 decades a plain LogLocator leaves
    one major tick or none (and minor labels collide), so ticks go at 1, 2, 5 x 10^k (every
    mantissa below half a decade), all labelled. Call after the data are drawn."""
    import matplotlib.ticker as mticker

    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    if lo <= 0 or axis.get_scale() != "log":
        return
    span = np.log10(hi / lo)
    if span >= 1.3:
        axis.set_minor_formatter(mticker.NullFormatter())
        return
    subs = (1.0, 2.0, 5.0) if span >= 0.5 else tuple(range(1, 10))
    axis.set_major_locator(mticker.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(mticker.FuncFormatter(  # FLOPs beyond 1e13 read better as 2e+15
        lambda v, _pos: si_label(v) if 1e-3 <= v < 1e13 else f"{v:.2g}"))
    axis.set_minor_locator(mticker.NullLocator())
