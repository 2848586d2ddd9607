"""Warmup-stable-decay branches against their cosine twin, from the two sweeps' results files.

    python -m analysis.wsd runs/wsd runs/cosine [--out DIR] [--json]

`compare` matches the final-loss rows of the two grids by (non-embedding N, tokens D): wsd
branches (trunks are not grid points; `analysis.load.completed` drops them) against cosine runs
trained from scratch. `compute` sums what each sweep spent (`flops_spent`: a branch's own
cooldown, a trunk its whole run; a table without that column spent its `flops`).
`plot_compare` draws loss vs tokens per size, both schedules. Reads only results files.
"""
from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.load import completed, load_results, plot_dir, require_columns
from analysis.plots.style import colors, paper_style, plt, save_figure

KEY = ["params_non_embedding", "tokens"]


def compare(wsd: pd.DataFrame, cosine: pd.DataFrame, loss_col: str = "val_loss") -> pd.DataFrame:
    """One row per (N, D) in both grids: each schedule's loss and wsd / cosine - 1."""
    for df, what in ((wsd, "wsd results"), (cosine, "cosine results")):
        require_columns(df, KEY + [loss_col], what=what)
    a = completed(wsd)[KEY + [loss_col]].rename(columns={loss_col: "wsd"})
    b = completed(cosine)[KEY + [loss_col]].rename(columns={loss_col: "cosine"})
    both = a.groupby(KEY).mean().join(b.groupby(KEY).mean(), how="inner").reset_index()
    if both.empty:
        raise AnalysisInputError("the two sweeps share no finished (N, D) point; pass the wsd "
                                 "and the cosine sweep of one experiment")
    both["rel_diff"] = both["wsd"] / both["cosine"] - 1.0
    return both.sort_values(KEY).reset_index(drop=True)


def compute(df: pd.DataFrame) -> float:
    """FLOPs a sweep actually spent (trunk + cooldowns for wsd; every run for cosine)."""
    col = "flops_spent" if "flops_spent" in df.columns else "flops"
    require_columns(df, [col], what="results table")
    return float(pd.to_numeric(df[col], errors="coerce").sum())


def summary(wsd: pd.DataFrame, cosine: pd.DataFrame, loss_col: str = "val_loss") -> dict:
    """The acceptance numbers: compute ratio, the worst per-budget loss difference."""
    both = compare(wsd, cosine, loss_col)
    return {"compute_ratio": compute(wsd) / compute(cosine),
            "max_abs_rel_diff": float(both["rel_diff"].abs().max()),
            "mean_rel_diff": float(both["rel_diff"].mean()), "points": int(len(both))}


def plot_compare(both: pd.DataFrame, outdir, stem: str = "wsd_vs_cosine") -> list[str]:
    """Final loss vs tokens, one colour per size: cosine solid, wsd branches dashed."""
    with paper_style():
        fig, ax = plt.subplots(figsize=(3.5, 2.6))
        sizes = sorted(both["params_non_embedding"].unique())
        for c, n in zip(colors(len(sizes)), sizes):
            g = both[both["params_non_embedding"] == n]
            ax.plot(g["tokens"], g["cosine"], "o-", color=c, label=f"N={n:,} cosine")
            ax.plot(g["tokens"], g["wsd"], "s--", color=c, mfc="none", label=f"N={n:,} wsd")
        ax.set_xscale("log")
        ax.set_xlabel("tokens D")
        ax.set_ylabel("final validation loss")
        ax.legend(ncol=2)
        return save_figure(fig, outdir, stem)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.wsd", description=__doc__)
    ap.add_argument("wsd_dir")
    ap.add_argument("cosine_dir")
    ap.add_argument("--loss-col", default="val_loss")
    ap.add_argument("--out", default=None, help="plot directory (default WSD_DIR/plots)")
    ap.add_argument("--json", action="store_true", help="print only the summary as JSON")
    args = ap.parse_args(argv)
    try:
        wsd, cosine = load_results(args.wsd_dir), load_results(args.cosine_dir)
        both, numbers = compare(wsd, cosine, args.loss_col), summary(wsd, cosine, args.loss_col)
    except AnalysisInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = plot_compare(both, str(plot_dir(args.wsd_dir, args.out)))
    if args.json:
        print(json.dumps(numbers))
        return 0
    print(both.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(json.dumps(numbers))
    for p in paths:
        print(f"plot: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
