"""The per-size learning-rate rule from an lr x size sweep (experiments/lr_sweep.py).

    python -m analysis.lr_rule SWEEP_DIR [--loss-col val_loss] [--out DIR]

For each model size: validation loss vs lr, and the optimum as the vertex of a parabola in
log(lr) through the best point and its two neighbours (the grid point itself when the best lr is
at the grid's edge; that is flagged). Then lr_opt(N) = a * (N / 1e5)^b by least squares in log
space, with the exponent's standard error. Reads only the results table.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.load import completed, load_results, plot_dir

N_REF = 1e5


def optimum_per_size(df: pd.DataFrame, *, n_col: str = "params_non_embedding",
                     lr_col: str = "train.lr", loss_col: str = "val_loss") -> pd.DataFrame:
    """One row per size: N, the best grid lr, the interpolated lr_opt, its loss, edge flag."""
    for col in (n_col, lr_col, loss_col):
        if col not in df.columns:
            raise AnalysisInputError(f"the results table has no {col!r} column; run an lr sweep "
                                     f"(experiments/lr_sweep.py) or pass the column name")
    rows = []
    for n, g in df.groupby(n_col):
        g = g[np.isfinite(g[loss_col])].sort_values(lr_col)
        if len(g) < 3:
            continue
        x, y = np.log(g[lr_col].to_numpy(float)), g[loss_col].to_numpy(float)
        i = int(np.argmin(y))
        edge = i in (0, len(y) - 1)
        x_opt = x[i]
        if not edge:  # vertex of the parabola through the best point and its neighbours
            c2, c1, _ = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
            if c2 > 0:
                x_opt = float(np.clip(-c1 / (2 * c2), x[i - 1], x[i + 1]))
        rows.append({"N": float(n), "lr_best_grid": float(np.exp(x[i])),
                     "lr_opt": float(np.exp(x_opt)), "loss_opt": float(y[i]), "at_edge": edge})
    if len(rows) < 2:
        raise AnalysisInputError("need >= 2 model sizes with >= 3 finished learning rates each")
    return pd.DataFrame(rows)


def fit_rule(opt: pd.DataFrame) -> dict:
    """lr_opt = a * (N / N_REF)^b by least squares in log space; b's standard error."""
    x = np.log(opt["N"].to_numpy(float) / N_REF)
    y = np.log(opt["lr_opt"].to_numpy(float))
    A = np.stack([np.ones_like(x), x], 1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    dof = max(len(x) - 2, 1)
    cov = np.linalg.pinv(A.T @ A) * float(resid @ resid) / dof
    se_b = float(np.sqrt(max(cov[1, 1], 0.0))) if len(x) > 2 else float("nan")
    return {"a": float(np.exp(coef[0])), "b": float(coef[1]), "b_se": se_b, "n_ref": N_REF,
            "sizes": int(len(x)), "edge_sizes": int(opt["at_edge"].sum()),
            "form": "lr_opt(N) = a * (N / n_ref)^b, N = params_non_embedding"}


def plot_lr_sweep(df: pd.DataFrame, opt: pd.DataFrame, rule: dict, outdir, *,
                  n_col="params_non_embedding", lr_col="train.lr", loss_col="val_loss") -> list[str]:
    """Loss vs lr per size with each size's optimum marked, and the fitted rule."""
    from analysis.plots.sweep import paper_style, plt, save_figure, si_label
    paper_style()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    colors = plt.cm.viridis(np.linspace(0.1, 0.85, len(opt)))
    for color, (_, o) in zip(colors, opt.iterrows()):
        g = df[df[n_col] == o["N"]].sort_values(lr_col)
        ax.plot(g[lr_col], g[loss_col], "o-", color=color, label=f"N={si_label(o['N'])}")
        ax.plot([o["lr_opt"]], [o["loss_opt"]], "*", ms=12, color=color, mec="k")
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel(loss_col)
    ax.legend(fontsize=7)
    ax2.loglog(opt["N"], opt["lr_opt"], "o", color="k")
    n = np.geomspace(opt["N"].min() / 1.5, opt["N"].max() * 1.5, 50)
    ax2.loglog(n, rule["a"] * (n / N_REF) ** rule["b"], "-", color="C3",
               label=f"lr = {rule['a']:.2g}·(N/1e5)^{rule['b']:.2f}")
    ax2.set_xlabel("N (non-embedding parameters)")
    ax2.set_ylabel("optimal lr")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, outdir, "lr_sweep")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.lr_rule", description=__doc__)
    ap.add_argument("sweep_dir")
    ap.add_argument("--loss-col", default="val_loss")
    ap.add_argument("--lr-col", default="train.lr")
    ap.add_argument("--out", default=None, help="plot directory (default SWEEP_DIR/plots)")
    args = ap.parse_args(argv)
    try:
        df = completed(load_results(args.sweep_dir))
        opt = optimum_per_size(df, lr_col=args.lr_col, loss_col=args.loss_col)
        rule = fit_rule(opt)
    except AnalysisInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(opt.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(json.dumps(rule))
    for p in plot_lr_sweep(df, opt, rule, str(plot_dir(args.sweep_dir, args.out)),
                           lr_col=args.lr_col, loss_col=args.loss_col):
        print(f"plot: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
