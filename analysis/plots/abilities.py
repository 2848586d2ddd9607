"""Ability charts (drawing only): emergence, in-context learning, self-consistency.

Data loading and the frames these take live in analysis/abilities.py; style in
analysis/plots/style.py. The same functions draw our sweep and the published data.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.plots.style import colors, label_log_axis, paper_style, plt, si_label

__all__ = ["plot_emergence", "plot_icl", "plot_sc"]


def _lines(ax, df, x, y, group, palette=None, label_fmt=str, **kw):
    groups = list(dict.fromkeys(df[group]))
    cmap = palette or colors(len(groups))
    for c, g in zip(cmap, groups):
        d = df[df[group] == g].sort_values(x)
        ax.plot(d[x], d[y], "o-", color=c, label=label_fmt(g), **kw)
    return dict(zip(groups, cmap))


def plot_emergence(df: pd.DataFrame, *, x="flops", metric="exact_match",
                   continuous="edit_distance", group="task", chance: dict | None = None,
                   xlabel="training FLOPs", title="", logx=True, axes=None):
    """Two panels: `metric` (with chance lines) and `continuous` vs `x`, one line per `group`."""
    for col in (x, metric, continuous, group):
        if col not in df:
            raise AnalysisInputError(f"emergence data has no column {col!r}")
    with paper_style():
        if axes is None:
            fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.6))
        fig = axes[0].figure
        colors = _lines(axes[0], df, x, metric, group)
        _lines(axes[1], df, x, continuous, group)
        for g, c in (chance or {}).items():
            if g in colors and c is not None and np.isfinite(c) and c > 0:
                axes[0].axhline(c, color=colors[g], ls=":", lw=0.8)
        for ax, ylab in zip(axes, (metric, continuous)):
            ax.set_xscale("log" if logx else "linear")
            if logx:  # labelled ticks even when the sizes span less than a decade
                label_log_axis(ax, "x")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylab.replace("_", " "))
        axes[0].legend(title=f"{group} (dotted: chance)", loc="best")
        if title:
            fig.suptitle(title, fontsize=8)
    return fig


def plot_icl(df: pd.DataFrame, *, shots="shots", value="value", group="params_non_embedding",
             ylabel="exact match", title="", label_fmt=None, ax=None):
    """Accuracy vs number of in-context examples, one line per model size."""
    with paper_style():
        if ax is None:
            fig, ax = plt.subplots(figsize=(3.5, 2.6))
        _lines(ax, df, shots, value, group,
               label_fmt=label_fmt or (lambda g: si_label(g) if isinstance(g, (int, float)) else g))
        ax.set_xlabel("number of shots k")
        ax.set_ylabel(ylabel)
        ax.legend(title="model size", loc="best")
        ax.set_title(title)
    return ax.figure


def plot_sc(df: pd.DataFrame, *, samples="samples", value="value", group="params_non_embedding",
            greedy=None, ylabel="majority-vote accuracy", title="", label_fmt=None, ax=None):
    """maj@j accuracy vs sampled paths j, one line per size; greedy as a dashed line per size."""
    fmt = label_fmt or (lambda g: si_label(g) if isinstance(g, (int, float)) else g)
    with paper_style():
        if ax is None:
            fig, ax = plt.subplots(figsize=(3.5, 2.6))
        colors = _lines(ax, df, samples, value, group, label_fmt=fmt)
        for g, v in (dict(greedy) if greedy is not None else {}).items():
            if g in colors and np.isfinite(v):
                ax.axhline(v, color=colors[g], ls="--", lw=0.9)
        ax.set_xlabel("sampled reasoning paths")
        ax.set_ylabel(ylabel)
        ax.legend(title="model size (dashed: greedy)", loc="best")
        ax.set_title(title)
    return ax.figure
