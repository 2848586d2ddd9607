"""Retrieval chart (drawing only): accuracy vs size closed-book and retrieved, and the gap.

The frame comes from analysis/retrieval.py (`retrieval_frame`): columns N, closed, retrieved,
gap and recall@1.
"""
from __future__ import annotations

import matplotlib.ticker as mticker
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.plots.style import colors, paper_style, plt, si_label

__all__ = ["plot_retrieval"]


def plot_retrieval(frame: pd.DataFrame, *, chance: float | None = None, title: str = "", axes=None):
    """Two panels vs non-embedding parameters: closed-book and retrieved accuracy; their gap."""
    for col in ("N", "closed", "retrieved", "gap"):
        if col not in frame:
            raise AnalysisInputError(f"retrieval data has no column {col!r}")
    with paper_style():
        if axes is None:
            fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.6))
        fig = axes[0].figure
        c_closed, c_retr = colors(2)
        axes[0].plot(frame["N"], frame["closed"], "o-", color=c_closed, label="closed-book")
        recall = frame["recall@1"].mean() if "recall@1" in frame else float("nan")
        axes[0].plot(frame["N"], frame["retrieved"], "s-", color=c_retr,
                     label=f"retrieved (BM25 recall@1 {recall:.2f})")
        if chance:
            axes[0].axhline(chance, color="grey", ls=":", lw=0.8, label="chance")
        axes[0].set_ylabel("exact match")
        axes[0].set_ylim(-0.02, 1.02)
        axes[0].legend(loc="best")
        axes[1].plot(frame["N"], frame["gap"], "o-", color="k")
        axes[1].axhline(0.0, color="grey", lw=0.6)
        axes[1].set_ylabel("retrieved - closed-book")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xlabel("non-embedding parameters")
            # sizes often span under a decade: label the sizes themselves, not just powers of 10
            ax.set_xticks(list(frame["N"]), [si_label(n) for n in frame["N"]])
            ax.xaxis.set_minor_formatter(mticker.NullFormatter())
        if title:
            fig.suptitle(title, fontsize=8)
        fig.tight_layout()  # keeps the gap panel's y label off the accuracy panel
    return fig
