"""Metric vs loss (drawing only): the trials, the fitted curve with its bootstrap band, the
held-out point(s) with their prediction, the chance line and the emergence threshold.

Fits live in analysis/fits/downstream.py; style in analysis/plots/style.py.
"""
from __future__ import annotations

import numpy as np

from analysis.fits.downstream import prediction_band, predict_metric
from analysis.plots.style import paper_style, plt

__all__ = ["plot_downstream"]


def plot_downstream(L, y, fit: dict, *, holdout: dict | None = None, metric: str = "metric",
                    loss_label: str = "validation loss", title: str = "", ax=None):
    """``y`` vs ``L`` for the fitted trials, the curve of ``fit`` and ``holdout['points']``
    (observed as a star, predicted as an open circle with the bootstrap band)."""
    L, y = np.asarray(L, float), np.asarray(y, float)
    held = (holdout or {}).get("points", [])
    allL = np.r_[L, [p["loss"] for p in held]]
    grid = np.linspace(allL.min() - 0.05 * np.ptp(allL), allL.max() + 0.05 * np.ptp(allL), 200)
    with paper_style():
        if ax is None:
            _fig, ax = plt.subplots(figsize=(3.5, 2.6))
        ax.plot(L, y, "o", color="C0", label=f"fitted trials ({len(L)})")
        ax.plot(grid, predict_metric(fit, grid), "-", color="C1", label=f"{fit['form']} fit")
        band = prediction_band(fit, grid)
        if band is not None:
            ax.fill_between(grid, band[0], band[1], color="C1", alpha=0.2, lw=0, label="95% bootstrap")
        for i, p in enumerate(held):
            ax.plot(p["loss"], p["observed"], "*", color="C3", ms=9,
                    label="held out: observed" if i == 0 else None)
            err = None
            if "band" in p:
                err = [[p["predicted"] - p["band"][0]], [p["band"][1] - p["predicted"]]]
            ax.errorbar(p["loss"], p["predicted"], yerr=err, fmt="o", mfc="none", color="C3",
                        label=f"predicted (|err| {p['abs_error']:.3f})" if i == 0 else None)
        if fit.get("chance") is not None:
            ax.axhline(fit["chance"], color="gray", ls=":", lw=0.8, label="chance")
        thr = fit.get("threshold")
        if thr is not None and np.isfinite(thr) and grid.min() <= thr <= grid.max():
            ax.axvline(thr, color="gray", ls="--", lw=0.8, label=f"emergence L={thr:.3g}")
        ax.invert_xaxis()  # lower loss (bigger / longer-trained models) to the right
        ax.set_xlabel(f"{loss_label} (decreasing)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.legend(loc="best")
        ax.set_title(title)
    return ax.figure
