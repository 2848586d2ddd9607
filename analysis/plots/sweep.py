"""Sweep plots: loss vs compute (per model size) and loss vs parameters (per token budget).

Paper-size figures (3.5 x 2.6 in, 8 pt fonts) written as PNG (200 dpi) and PDF
with the Agg backend, so they work on headless machines.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot import
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.fits.chinchilla import predict_loss  # noqa: E402
from analysis.errors import AnalysisInputError  # noqa: E402
from analysis.load import completed, default_loss_col, require_columns  # noqa: E402

__all__ = ["plot_sweep", "paper_style", "save_figure", "si_label"]

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


def _colors(n):
    return plt.cm.viridis(np.linspace(0.0, 0.9, max(n, 1)))


def _round_sig(x, sig=3):
    # group token budgets that differ only by float noise / rounding in the sweep
    x = np.asarray(x, float)
    with np.errstate(divide="ignore"):
        mag = 10 ** (np.floor(np.log10(np.abs(x))) - sig + 1)
    return np.round(x / mag) * mag


def _loss_axis(ax) -> None:
    """Plain numbers on the (narrow) log loss axis; no crowded minor labels on the x axis."""
    ax.yaxis.set_major_locator(mticker.LogLocator(subs=(1.0, 1.25, 1.5, 2, 2.5, 3, 3.5, 4, 5,
                                                        6, 8)))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    ax.xaxis.set_major_locator(mticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: si_label(v)))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())


def frontier_in_table_flops(fit: dict, df: pd.DataFrame, C: np.ndarray,
                            n_col: str = "params_non_embedding") -> np.ndarray:
    """L*(C) = min over N of the fitted L(N, D) with D = C / (FLOPs per token of N).

    FLOPs per token come from the table itself (flops / tokens of each size, a power law in N
    fitted through them), so the frontier lives on the same compute axis as the points, which
    count attention and the output head too. With a single size it falls back to 6N.
    """
    per = (df["flops"] / df["tokens"]).groupby(df[n_col]).median()
    logN, logF = np.log(per.index.to_numpy(float)), np.log(per.to_numpy(float))
    slope, icpt = np.polyfit(logN, logF, 1) if len(per) >= 2 else (1.0, np.log(6.0))
    Ns = np.geomspace(per.index.min() / 30, per.index.max() * 30, 400)
    fpt = np.exp(icpt + slope * np.log(Ns))
    L = predict_loss(fit, Ns[None, :], np.asarray(C, float)[:, None] / fpt[None, :])
    return L.min(axis=1)


def plot_sweep(df: pd.DataFrame, outdir: str | os.PathLike, fit: dict | None = None,
               *, n_col: str = "params_non_embedding", loss_col: str | None = None) -> list[str]:
    """Draw the standard sweep figures into ``outdir``; returns the written file paths.

    * ``loss_vs_compute``: loss vs training FLOPs, one line per model size (distinct
      ``n_col``), log-log; with ``fit`` (an Approach-3 result) the compute-optimal
      frontier ``L*(C)`` (C = 6ND) is overlaid.
    * ``loss_vs_params``: loss vs ``n_col``, one line per token budget, with the fitted
      ``L(N, D)`` curves when ``fit`` is given.

    Uses ``val_loss`` when present, else ``loss``; only ``status == "done"`` rows.
    """
    df = completed(df)
    loss_col = loss_col or default_loss_col(df)
    require_columns(df, [n_col, "tokens", "flops", loss_col], what="results table")
    df = df[np.isfinite(df[loss_col].astype(float)) & (df[loss_col].astype(float) > 0)]
    if df.empty:
        raise AnalysisInputError(f"no finished trials with a finite {loss_col!r}; run the sweep first")
    ylabel = "validation loss (nats/token)" if loss_col == "val_loss" else "training loss (nats/token)"
    paths: list[str] = []

    with paper_style():
        # -- loss vs compute, one line per model size
        fig, ax = plt.subplots(figsize=(3.5, 2.6))
        sizes = np.sort(df[n_col].unique())
        for c, n in zip(_colors(len(sizes)), sizes):
            g = df[df[n_col] == n].sort_values("flops")
            ax.plot(g["flops"], g[loss_col], "o-", color=c, label=f"N={si_label(n)}")
        if fit is not None:
            C = np.geomspace(df["flops"].min() / 2, df["flops"].max() * 2, 200)
            ax.plot(C, frontier_in_table_flops(fit, df, C, n_col), "k--", lw=1,
                    label="fitted frontier $L^*(C)$")
        ax.set(xscale="log", yscale="log", xlabel="training compute C (FLOPs)", ylabel=ylabel,
               title="Loss vs compute")
        _loss_axis(ax)
        ax.legend(ncol=2 if len(sizes) > 6 else 1)
        paths += save_figure(fig, outdir, "loss_vs_compute")

        # -- loss vs N, one line per token budget
        fig, ax = plt.subplots(figsize=(3.5, 2.6))
        budget = _round_sig(df["tokens"].to_numpy(float))
        budgets = np.unique(budget)
        for c, d in zip(_colors(len(budgets)), budgets):
            g = df[budget == d].sort_values(n_col)
            ax.plot(g[n_col], g[loss_col], "o", color=c, label=f"D={si_label(d)} tokens")
            if fit is not None:
                Ns = np.geomspace(g[n_col].min() / 1.5, g[n_col].max() * 1.5, 100)
                ax.plot(Ns, predict_loss(fit, Ns, d), "-", color=c, lw=0.8)
            else:
                ax.plot(g[n_col], g[loss_col], "-", color=c, lw=0.8)
        n_name = "non-embedding parameters" if n_col == "params_non_embedding" else n_col
        ax.set(xscale="log", yscale="log", xlabel=f"model size N ({n_name})", ylabel=ylabel,
               title="Loss vs model size" + (" (lines: fitted $L(N,D)$)" if fit else ""))
        _loss_axis(ax)
        ax.legend(ncol=2 if len(budgets) > 6 else 1)
        paths += save_figure(fig, outdir, "loss_vs_params")
    return paths
