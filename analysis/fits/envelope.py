"""Chinchilla Approach 1: the envelope (lower hull) of (FLOPs, loss) points.

Binning FLOPs log-uniformly and keeping the lowest-loss point per bin gives the envelope; the
model size and tokens of the winning point give N_opt(C) and D_opt(C), which are fitted as
power laws. The points are, by default, each trial's end of schedule (`final_points`: the
validation loss after the lr has annealed, seeds averaged). Mid-run points of a cosine run
(`curve_flops`) are not annealed and flatter the larger models' early steps; Hoffmann et al.
used them only because they trained 4 cosine lengths per size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.fits.bootstrap import check_count, per_replicate, run_bootstrap
from analysis.fits.powerlaw import fit_loglog
from analysis.load import require_columns

__all__ = ["POINTS", "curve_flops", "final_points", "envelope_points", "fit_envelope"]

#: What each kind of envelope point is (stored with the fit).
POINTS = {"final": "end-of-schedule validation loss per trial, seeds averaged",
          "curves": "every logged training step (train loss, not annealed)"}


def curve_flops(curves: pd.DataFrame, results: pd.DataFrame, *, n_col: str = "params_non_embedding") -> pd.DataFrame:
    """Add ``N`` and ``flops`` (FLOPs spent so far) to training-curve rows.

    FLOPs per token come from the results table (``flops / tokens`` per trial), so
    the curve uses the trainer's own FLOP convention.
    """
    require_columns(curves, ["trial_id", "tokens", "loss"], what="training curves")
    require_columns(results, ["trial_id", n_col, "flops", "tokens"], what="results table")
    per = results[["trial_id", n_col, "flops", "tokens"]].dropna()
    per = per.assign(fpt=per["flops"] / per["tokens"], N=per[n_col])[["trial_id", "N", "fpt"]]
    cur = curves.merge(per, on="trial_id", how="inner")
    if cur.empty:
        raise AnalysisInputError("no training-curve rows match finished trials in the results table; "
                                 "check that trial_id values agree")
    cur = cur.assign(flops=cur["fpt"] * cur["tokens"].astype(float))
    return _usable(cur)


def _usable(points: pd.DataFrame) -> pd.DataFrame:
    """Rows with a finite positive loss and positive FLOPs."""
    return points[np.isfinite(points["loss"]) & (points["loss"] > 0) & (points["flops"] > 0)]


def final_points(results: pd.DataFrame, *, n_col: str = "params_non_embedding") -> pd.DataFrame:
    """One point per configuration at the end of its schedule: ``trial_id, N, tokens, flops,
    loss`` with loss the validation loss (train loss where there is none), seeds averaged."""
    from analysis.load import aggregate_seeds, default_loss_col

    loss_col = default_loss_col(results)
    require_columns(results, ["trial_id", n_col, "flops", "tokens", loss_col], what="results table")
    agg = aggregate_seeds(results)
    out = _usable(pd.DataFrame({"trial_id": agg["trial_id"], "N": agg[n_col].astype(float),
                                "tokens": agg["tokens"].astype(float),
                                "flops": agg["flops"].astype(float),
                                "loss": agg[loss_col].astype(float)}))
    if out.empty:
        raise AnalysisInputError("no finished trial with a loss, tokens and flops to build the envelope from")
    return out.reset_index(drop=True)


def envelope_points(cur: pd.DataFrame, *, n_bins: int = 100) -> pd.DataFrame:
    """Lowest-loss point per log-spaced FLOP bin: columns ``C, N, D, loss, trial_id``."""
    require_columns(cur, ["flops", "loss", "N", "tokens", "trial_id"], what="curves")
    logc = np.log(cur["flops"].to_numpy(float))
    edges = np.linspace(logc.min(), logc.max() + 1e-9, n_bins + 1)
    b = np.digitize(logc, edges) - 1
    idx = cur.assign(_bin=b).groupby("_bin")["loss"].idxmin()
    env = cur.loc[idx, ["flops", "N", "tokens", "loss", "trial_id"]]
    return env.rename(columns={"flops": "C", "tokens": "D"}).sort_values("C").reset_index(drop=True)


def _fit(env):
    a, ka = fit_loglog(env["C"], env["N"])
    b, kb = fit_loglog(env["C"], env["D"])
    return {"a": a, "b": b, "k_N": float(np.exp(ka)), "k_D": float(np.exp(kb))}


def fit_envelope(cur: pd.DataFrame, *, n_bins: int = 100, drop_edge_sizes: bool = True,
                 bootstrap: int = 0, seed: int = 0, keep_samples: bool = False) -> dict:
    """Approach 1 exponents ``a`` (N_opt ∝ C^a) and ``b`` (D_opt ∝ C^b) from the curve envelope.

    ``cur`` is :func:`curve_flops` output. With ``drop_edge_sizes`` envelope bins won
    by the smallest or largest model are dropped: there the true optimum may lie
    outside the sweep, so the winner is censored and would bias the slope.
    Bootstrap (0 or >= 20) resamples the envelope points. Returns ``a, b, k_N, k_D, n_points``
    (envelope points used), ``envelope`` (records) and ``ci`` when bootstrapped.
    """
    bootstrap = check_count(bootstrap)
    env = envelope_points(cur, n_bins=n_bins)
    if drop_edge_sizes:
        sizes = np.unique(cur["N"])
        env = env[(env["N"] > sizes.min()) & (env["N"] < sizes.max())]
    if env["N"].nunique() < 2:
        raise AnalysisInputError(
            f"the envelope has {env['N'].nunique()} interior model size(s); need >= 2 "
            "(train more sizes so that middle sizes win some FLOP ranges)"
        )
    out = {**_fit(env), "n_points": int(len(env)), "envelope": env.to_dict("records"), "warnings": []}
    if bootstrap:
        def refit(idx):
            e = env.iloc[idx]
            return _fit(e) if e["N"].nunique() >= 2 else None
        keys = ("a", "b", "k_N", "k_D")
        boot = run_bootstrap(per_replicate(refit, keys), len(env), bootstrap, seed=seed,
                             point={k: out[k] for k in keys}, keep_samples=keep_samples)
        out["warnings"] += boot.pop("warnings")
        out.update(boot)
    return out
