"""Sweep plots: loss vs compute (per model size) and loss vs parameters (per token budget).

Style, saving and colours: analysis/plots/style.py. Compute: analysis/convention.py.
"""

from __future__ import annotations

import os

import matplotlib.ticker as mticker
import numpy as np
import pandas as pd

from analysis.convention import fpt_law
from analysis.errors import AnalysisInputError
from analysis.fits.chinchilla import optimal_loss, predict_loss
from analysis.load import completed, default_loss_col, require_columns
from analysis.plots.style import colors as _colors
from analysis.plots.style import paper_style, plt, save_figure, si_label

LOSS_LABELS = {"val_loss": "validation loss (nats/token)", "loss": "training loss (nats/token)",
               "val_bpb": "validation bits per byte", "bpb": "training bits per byte"}

__all__ = ["plot_sweep", "paper_style", "save_figure", "si_label", "frontier_in_table_flops"]

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
    """L*(C) on the table's own compute axis (the trainer's flops, analysis/convention.py).

    Uses the fit's FLOPs-per-token law when it carries one, else fits it through the table's
    ``flops / tokens`` per size, so the frontier and the points share one C.
    """
    fpt = fit.get("fpt")
    if not fpt or fpt.get("source") == "6N":
        fpt = fpt_law(df[n_col], df["flops"], df["tokens"])
    return optimal_loss({**fit, "fpt": fpt}, np.asarray(C, float))


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
    ylabel = LOSS_LABELS.get(loss_col, loss_col)
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
