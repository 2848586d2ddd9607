"""Loss vs active and vs total parameters, one line per expert count, with the routed fit."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.fits.moe import predict
from analysis.plots.style import colors, paper_style, save_figure


def plot_moe(table: pd.DataFrame, fit: dict | None, outdir, stem: str = "moe") -> list[str]:
    """Two panels from `analysis.fits.moe.moe_table` rows; the fit (dashed) on the left."""
    with paper_style():
        fig, (ax_a, ax_t) = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
        experts = sorted(table["E"].unique())
        for color, e in zip(colors(len(experts)), experts):
            rows = table[table["E"] == e].sort_values("N")
            label = "dense" if e == 1 else f"{int(e)} experts"
            ax_a.plot(rows["N"], rows["loss"], "o-", color=color, label=label)
            ax_t.plot(rows["N_total"], rows["loss"], "o-", color=color, label=label)
            if fit:
                grid = np.geomspace(rows["N"].min(), rows["N"].max(), 30)
                ax_a.plot(grid, predict(fit, grid, e), "--", color=color, lw=0.8)
        for ax, what in ((ax_a, "active"), (ax_t, "total")):
            ax.set_xscale("log")
            ax.set_xlabel(f"{what} non-embedding parameters")
        ax_a.set_ylabel("validation loss (nats/byte)")
        ax_a.legend()
        if fit:
            ax_a.set_title(f"a={fit['a']:.3f} b={fit['b']:.3f} c={fit['c']:.3f}", fontsize=8)
        return save_figure(fig, outdir, stem)
