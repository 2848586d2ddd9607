"""Warmup-stable-decay branches against their cosine twin, from the two sweeps' results files.

    python -m analysis.wsd runs/wsd runs/cosine [--replicate runs/wsd_s1 runs/cosine_s1 ...]
                           [--tol 0.01] [--out DIR] [--json]

`compare` matches the final-loss rows of the two grids by (non-embedding N, tokens D): wsd
branches (trunks are not grid points; `analysis.load.completed` drops them) against cosine runs
trained from scratch. Tables may hold several replicates of a point (the same grid trained with
other seeds, tagged by a `replicate` column): `compare` averages them and gives each difference
its standard error from the seed-to-seed spread, and `summary` a 95% interval on the mean
difference with the replicate (a whole seed's grid) as the unit, since branches of one trunk are
not independent. `compute` sums what each sweep spent (`flops_spent`: a branch's own cooldown, a
trunk its whole run; a table without that column spent its `flops`). `plot_compare` draws loss vs
tokens per size, both schedules. Reads only results files.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pandas as pd
from scipy import stats

from analysis.errors import AnalysisInputError
from analysis.load import completed, load_results, plot_dir, require_columns
from analysis.plots.style import colors, paper_style, plt, save_figure

KEY = ["params_non_embedding", "tokens"]
REP = "replicate"


def _points(df: pd.DataFrame, loss_col: str, name: str) -> pd.DataFrame:
    """Per (N, D): mean loss, its seed SD and the number of replicates."""
    g = completed(df).groupby(KEY)[loss_col]
    return pd.DataFrame({name: g.mean(), f"{name}_sd": g.std(ddof=1), f"{name}_n": g.count()})


def compare(wsd: pd.DataFrame, cosine: pd.DataFrame, loss_col: str = "val_loss") -> pd.DataFrame:
    """One row per (N, D) in both grids: each schedule's mean loss over replicates, wsd / cosine
    - 1 (`rel_diff`) and, with replicates, its standard error from the seed spread."""
    for df, what in ((wsd, "wsd results"), (cosine, "cosine results")):
        require_columns(df, KEY + [loss_col], what=what)
    both = _points(wsd, loss_col, "wsd").join(_points(cosine, loss_col, "cosine"), how="inner")
    both = both.reset_index()
    if both.empty:
        raise AnalysisInputError("the two sweeps share no finished (N, D) point; pass the wsd "
                                 "and the cosine sweep of one experiment")
    both["rel_diff"] = both["wsd"] / both["cosine"] - 1.0
    var = both["wsd_sd"] ** 2 / both["wsd_n"] + both["cosine_sd"] ** 2 / both["cosine_n"]
    both["rel_diff_se"] = np.sqrt(var) / both["cosine"]  # NaN without replicates
    return both.sort_values(KEY).reset_index(drop=True)


def compute(df: pd.DataFrame) -> float:
    """FLOPs a sweep actually spent (trunk + cooldowns for wsd; every run for cosine)."""
    col = "flops_spent" if "flops_spent" in df.columns else "flops"
    require_columns(df, [col], what="results table")
    return float(pd.to_numeric(df[col], errors="coerce").sum())


def replicate_means(wsd: pd.DataFrame, cosine: pd.DataFrame,
                    loss_col: str = "val_loss") -> pd.Series:
    """Mean rel_diff over the shared points, one value per replicate found in both tables."""
    def pick(df: pd.DataFrame, r) -> pd.DataFrame:  # a table without the column is replicate 0
        return df[df[REP] == r] if REP in df.columns else df

    def reps(df: pd.DataFrame) -> set:
        return set(df[REP]) if REP in df.columns else {0}

    return pd.Series({r: compare(pick(wsd, r), pick(cosine, r), loss_col)["rel_diff"].mean()
                      for r in sorted(reps(wsd) & reps(cosine))}, name="mean_rel_diff")


def summary(wsd: pd.DataFrame, cosine: pd.DataFrame, loss_col: str = "val_loss",
            tol: float = 0.01) -> dict:
    """The acceptance numbers: compute ratio, per-point loss differences against `tol`, and
    with replicates the mean difference's 95% interval and the seed noise of one run."""
    both = compare(wsd, cosine, loss_col)
    out = {"compute_ratio": compute(wsd) / compute(cosine),
           "max_abs_rel_diff": float(both["rel_diff"].abs().max()),
           "mean_rel_diff": float(both["rel_diff"].mean()), "points": int(len(both)),
           "tol": tol, "points_within_tol": int((both["rel_diff"].abs() <= tol).sum())}
    reps = replicate_means(wsd, cosine, loss_col)
    out["replicates"] = int(len(reps))
    if len(reps) >= 2:
        half = stats.t.ppf(0.975, len(reps) - 1) * reps.std(ddof=1) / np.sqrt(len(reps))
        out["mean_rel_diff_ci"] = [float(reps.mean() - half), float(reps.mean() + half)]
        # one run's seed noise, relative: pooled over points and both schedules
        sd = pd.concat([both["wsd_sd"] / both["wsd"], both["cosine_sd"] / both["cosine"]])
        out["seed_rel_sd"] = float(np.sqrt((sd ** 2).mean()))
        # points whose difference is beyond tol by more than 2 standard errors: outside tol
        # whatever the seed; the rest cannot be told apart from within tol at this noise
        out["points_outside_tol_beyond_2se"] = int(
            (both["rel_diff"].abs() - 2 * both["rel_diff_se"] > tol).sum())
    return out


def plot_compare(both: pd.DataFrame, outdir, stem: str = "wsd_vs_cosine") -> list[str]:
    """Final loss vs tokens, one colour per size: cosine solid, wsd branches dashed; error bars
    of one seed SD where the tables hold replicates."""
    with paper_style():
        fig, ax = plt.subplots(figsize=(3.5, 2.6))
        sizes = sorted(both["params_non_embedding"].unique())
        for c, n in zip(colors(len(sizes)), sizes):
            g = both[both["params_non_embedding"] == n]
            ax.errorbar(g["tokens"], g["cosine"], yerr=g.get("cosine_sd"), fmt="o-", color=c,
                        capsize=2, label=f"N={n:,} cosine")
            ax.errorbar(g["tokens"], g["wsd"], yerr=g.get("wsd_sd"), fmt="s--", color=c,
                        mfc="none", capsize=2, label=f"N={n:,} wsd")
        ax.set_xscale("log")
        ax.set_xlabel("tokens D")
        ax.set_ylabel("final validation loss")
        ax.legend(ncol=2)
        return save_figure(fig, outdir, stem)


def load_pairs(pairs: list[tuple[str, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The wsd and cosine tables of several replicate pairs, each row tagged with its pair's
    index in a `replicate` column."""
    w = [load_results(a).assign(**{REP: k}) for k, (a, _) in enumerate(pairs)]
    c = [load_results(b).assign(**{REP: k}) for k, (_, b) in enumerate(pairs)]
    return pd.concat(w, ignore_index=True), pd.concat(c, ignore_index=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.wsd", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wsd_dir")
    ap.add_argument("cosine_dir")
    ap.add_argument("--replicate", nargs=2, action="append", default=[],
                    metavar=("WSD_DIR", "COSINE_DIR"),
                    help="the same two grids trained with another seed (repeatable)")
    ap.add_argument("--tol", type=float, default=0.01,
                    help="the relative loss difference called a match (default 0.01)")
    ap.add_argument("--loss-col", default="val_loss")
    ap.add_argument("--out", default=None, help="plot directory (default WSD_DIR/plots)")
    ap.add_argument("--json", action="store_true", help="print only the summary as JSON")
    args = ap.parse_args(argv)
    try:
        wsd, cosine = load_pairs([(args.wsd_dir, args.cosine_dir)] + args.replicate)
        both = compare(wsd, cosine, args.loss_col)
        numbers = summary(wsd, cosine, args.loss_col, args.tol)
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
