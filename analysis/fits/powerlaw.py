"""Least-squares power laws in log-log space (bootstraps live in analysis/fits/bootstrap.py)."""

from __future__ import annotations

import numpy as np

from analysis.errors import AnalysisInputError

__all__ = ["fit_loglog"]


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
