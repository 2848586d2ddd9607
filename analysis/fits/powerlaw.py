"""Small shared helpers: log-log power-law fits with bootstrap CIs."""

from __future__ import annotations

import numpy as np

from analysis.errors import AnalysisInputError

__all__ = ["fit_loglog", "percentile_ci"]


def fit_loglog(x, y, w=None):
    """Least squares ``log y = slope log x + intercept`` (optionally weighted); returns (slope, intercept)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(lx) < 2 or np.ptp(lx) == 0:
        raise AnalysisInputError(f"power-law fit needs >= 2 distinct x values, got {len(np.unique(lx))}; "
                                 "add more model sizes / budgets")
    W = np.ones_like(lx) if w is None else np.asarray(w, float)
    X = np.stack([lx, np.ones_like(lx)], axis=1) * np.sqrt(W)[:, None]
    coef, *_ = np.linalg.lstsq(X, ly * np.sqrt(W), rcond=None)
    return float(coef[0]), float(coef[1])


def bootstrap_fits(refit, n: int, seed: int, keys=("a", "b", "k_N", "k_D"),
                   keep_samples: bool = False) -> dict:
    """Call `refit(rng)` `n` times (it returns a dict of estimates, or None to skip a degenerate
    resample) and summarise: {"ci": name -> [lo, hi], "bootstrap": n[, "samples"]}."""
    rng = np.random.default_rng(seed)
    samples = {k: [] for k in keys}
    for _ in range(int(n)):
        est = refit(rng)
        if est is not None:
            for k in keys:
                samples[k].append(est[k])
    out = {"ci": percentile_ci(samples), "bootstrap": int(n)}
    if keep_samples:  # raw bootstrap estimates, e.g. for CI bands in plots
        out["samples"] = samples
    return out


def percentile_ci(samples: dict, level: float = 0.95) -> dict:
    """name -> [lo, hi] percentile interval of bootstrap samples (NaNs ignored)."""
    q = 100 * (1 - level) / 2
    out = {}
    for k, v in samples.items():
        v = np.asarray(v, float)
        v = v[np.isfinite(v)]
        out[k] = [float(np.percentile(v, q)), float(np.percentile(v, 100 - q))] if len(v) else [np.nan, np.nan]
    return out
