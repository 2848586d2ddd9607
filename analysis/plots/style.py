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

__all__ = ["plt", "paper_style", "save_figure", "si_label", "colors"]

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
