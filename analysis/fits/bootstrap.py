"""The one bootstrap used by every fit (Approaches 1-3, Kaplan): resample, refit, keep, summarise.

A fit supplies a ``refit_many(idx_BxM) -> (samples, kept)`` callable: ``idx_BxM`` holds ``B``
resamples of the ``M`` point indices; ``samples`` maps each constant to a ``(B,)`` array of
estimates and ``kept`` (``(B,)`` bool) says which replicates identified the form (enough
distinct N/D, converged, not at a search bound). The Chinchilla fit solves all replicates in
one batched L-BFGS; the others wrap a per-replicate function with :func:`per_replicate`.

The summary reports the requested AND the kept count, percentile intervals over the kept
replicates only, and a warning for each point estimate that falls outside its interval (a
percentile interval that excludes the estimate means the resampled fits land elsewhere: the
constant is not identified by these data).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from analysis.errors import AnalysisInputError

__all__ = ["MIN_REPLICATES", "min_replicates", "check_count", "resample_indices", "per_replicate",
           "run_bootstrap", "summarize"]

MIN_REPLICATES = 20  # for the default 95% level: 1 / (1 - 0.95)


def min_replicates(level: float = 0.95) -> int:
    """Fewest replicates whose percentiles can bound a ``level`` interval (20 for 95%)."""
    return int(math.ceil(1.0 / (1.0 - level) - 1e-9))


def check_count(n, level: float = 0.95, *, flag: str = "--bootstrap") -> int:
    """Validate a requested replicate count: 0 (no intervals) or at least :func:`min_replicates`."""
    n = int(n)
    lo = min_replicates(level)
    if n < 0:
        raise AnalysisInputError(f"{flag} {n} is negative; pass 0 (no intervals) or at least {lo}")
    if 0 < n < lo:
        raise AnalysisInputError(f"{flag} {n} is too few for a {level:.0%} interval; "
                                 f"pass 0 (no intervals) or at least {lo}")
    return n


def resample_indices(rng: np.random.Generator, n_points: int, n_boot: int, groups=None) -> np.ndarray:
    """``(n_boot, n_points)`` indices drawn with replacement (within each group when given)."""
    if groups is None:
        return rng.integers(0, n_points, size=(n_boot, n_points))
    cols = [np.asarray(g)[rng.integers(0, len(g), size=(n_boot, len(g)))] for g in groups]
    return np.concatenate(cols, axis=1)


def per_replicate(refit: Callable[[np.ndarray], dict | None], keys) -> Callable:
    """Turn ``refit(idx) -> dict | None`` (None: cannot identify) into a ``refit_many``."""
    def refit_many(idx_BxM):
        samples = {k: np.full(len(idx_BxM), np.nan) for k in keys}
        kept = np.zeros(len(idx_BxM), bool)
        for i, idx in enumerate(idx_BxM):
            try:
                est = refit(idx)
            except AnalysisInputError:  # a resample that lost a size or budget
                est = None
            if est is None:
                continue
            kept[i] = True
            for k in keys:
                samples[k][i] = est[k]
        return samples, kept
    return refit_many


def run_bootstrap(refit_many: Callable, n_points: int, n_boot: int, *, seed: int = 0, groups=None,
                  point: dict | None = None, level: float = 0.95, keep_samples: bool = False) -> dict:
    """Resample ``n_boot`` times, refit through ``refit_many`` and :func:`summarize`."""
    n_boot = check_count(n_boot, level)
    idx = resample_indices(np.random.default_rng(seed), n_points, n_boot, groups)
    samples, kept = refit_many(idx)
    return summarize(samples, kept, point=point, level=level, keep_samples=keep_samples)


def summarize(samples: dict, kept, *, point: dict | None = None, level: float = 0.95,
              keep_samples: bool = False) -> dict:
    """``ci`` (name -> [lo, hi] over kept replicates), ``bootstrap`` (requested), ``bootstrap_kept``,
    ``ci_level`` and ``warnings`` (too few kept; estimates outside their interval)."""
    kept = np.asarray(kept, bool)
    n_req, n_kept = len(kept), int(kept.sum())
    out = {"bootstrap": n_req, "bootstrap_kept": n_kept, "ci_level": float(level), "ci": {},
           "warnings": []}
    if n_kept < min_replicates(level):
        out["warnings"].append(f"only {n_kept} of {n_req} bootstrap replicates identified the form; "
                               f"no {level:.0%} intervals (the data cannot pin the constants down)")
    else:
        q = 100 * (1 - level) / 2
        for k, v in samples.items():
            v = np.asarray(v, float)[kept]
            v = v[np.isfinite(v)]
            out["ci"][k] = ([float(np.percentile(v, q)), float(np.percentile(v, 100 - q))]
                            if len(v) >= min_replicates(level) else [math.nan, math.nan])
        outside = [k for k, (lo, hi) in out["ci"].items() if point is not None and k in point
                   and np.isfinite(point[k]) and not (lo <= point[k] <= hi)]
        if outside:
            out["warnings"].append(f"{', '.join(outside)} lie(s) outside the bootstrap interval: "
                                   "resampled fits land elsewhere, the estimate is not identified")
    if keep_samples:  # raw estimates of kept replicates, e.g. for bands in plots
        out["samples"] = {k: np.asarray(v, float)[kept].tolist() for k, v in samples.items()}
    return out
