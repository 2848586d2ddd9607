"""Kaplan et al. (2020) scaling laws.

* ``L(N) = (N_c/N)^alpha_N``  – N non-embedding; fitted to the best loss per model size
* ``L(D) = (D_c/D)^alpha_D``  – best loss per token budget
* ``L(C_min) = (C_c/C_min)^alpha_C`` – the compute frontier (Pareto-optimal runs)
* ``L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D`` – joint fit to all runs

C is the caller's compute column (analysis/convention.py: the trainer's ``flops``), 6 N D only
when none is given (then ``c_convention`` says so). The single-variable laws are straight lines in log-log space
(``log L = alpha log X_c - alpha log X``); the joint law is fitted by least squares
on log loss from a few starting points.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from analysis.errors import AnalysisInputError
from analysis.convention import C_6ND
from analysis.fits.bootstrap import check_count, per_replicate, run_bootstrap
from analysis.fits.powerlaw import fit_loglog

__all__ = ["fit_kaplan", "fit_kaplan_joint", "kaplan_loss", "pareto_frontier"]


def _single(x, L):
    """(alpha, x_c) for L = (x_c/x)^alpha."""
    slope, icpt = fit_loglog(x, L)
    alpha = -slope
    with np.errstate(over="ignore", divide="ignore"):  # a flat/rising fit gives x_c = inf (JSON null)
        return alpha, float(np.exp(icpt / alpha)) if alpha != 0 else np.inf


def pareto_frontier(C, L) -> np.ndarray:
    """Indices of runs no other run beats with less compute (running minimum of loss over sorted C)."""
    o = np.argsort(C)
    best, keep = np.inf, []
    for i in o:
        if L[i] < best:
            best = L[i]
            keep.append(i)
    return np.array(keep, dtype=int)


def kaplan_loss(fit: dict, N, D):
    """Joint ``L(N, D)`` for a dict with ``alpha_N, alpha_D, N_c, D_c``."""
    N, D = np.asarray(N, float), np.asarray(D, float)
    return ((fit["N_c"] / N) ** (fit["alpha_N"] / fit["alpha_D"]) + fit["D_c"] / D) ** fit["alpha_D"]


def _joint_resid(p, lN, lD, lL):
    lNc, lDc, aN, aD = p
    t1 = (aN / aD) * (lNc - lN)
    t2 = lDc - lD
    return aD * np.logaddexp(t1, t2) - lL  # log of Kaplan's L(N, D)


def fit_kaplan_joint(N, D, L) -> dict:
    """Fit ``L(N,D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D`` (least squares on log L)."""
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    best = None
    for lNc in (np.log(1e13), np.log(1e10), np.log(1e15)):
        for lDc in (np.log(1e13), np.log(1e10)):
            for aN, aD in ((0.076, 0.103), (0.3, 0.3)):
                try:
                    r = least_squares(_joint_resid, [lNc, lDc, aN, aD], args=(lN, lD, lL),
                                      bounds=([-50, -50, 1e-4, 1e-4], [200, 200, 5, 5]), x_scale="jac")
                except ValueError:
                    continue
                if best is None or r.cost < best.cost:
                    best = r
    lNc, lDc, aN, aD = best.x
    return {"alpha_N": float(aN), "alpha_D": float(aD), "N_c": float(np.exp(lNc)), "D_c": float(np.exp(lDc)),
            "rmse_log": float(np.sqrt(2 * best.cost / len(lL)))}


def _all(N, D, L, C):
    out = {}
    sizes = np.unique(N)
    best_N = np.array([L[N == n].min() for n in sizes])  # best (longest-trained) loss per size
    out["alpha_N"], out["N_c"] = _single(sizes, best_N)
    budgets = np.unique(D)
    best_D = np.array([L[D == d].min() for d in budgets])  # best (largest-model) loss per budget
    out["alpha_D"], out["D_c"] = _single(budgets, best_D)
    f = pareto_frontier(C, L)
    out["alpha_C"], out["C_c"] = _single(C[f], L[f])
    out["L_ND"] = fit_kaplan_joint(N, D, L)
    return out


def _flat(r: dict) -> dict:
    return {**{k: r[k] for k in _KEYS}, **{f"L_ND.{k}": r["L_ND"][k] for k in _JOINT}}


_KEYS = ("alpha_N", "N_c", "alpha_D", "D_c", "alpha_C", "C_c")
_JOINT = ("alpha_N", "alpha_D", "N_c", "D_c")


def fit_kaplan(N, D, L, *, C=None, bootstrap: int = 0, seed: int = 0, c_convention: str | None = None) -> dict:
    """All four Kaplan fits. ``C`` is the compute column; without it ``6 N D`` (said in ``c_convention``).

    Returns ``alpha_N, N_c`` (from the best loss per size), ``alpha_D, D_c`` (best loss
    per token budget), ``alpha_C, C_c`` (Pareto frontier of loss vs compute; C_c in
    the units of ``C``, i.e. FLOPs – Kaplan quote PF-days), ``L_ND`` (joint fit:
    ``alpha_N, alpha_D, N_c, D_c``), ``n_points``, ``c_convention``; with ``bootstrap``
    (0 or >= 20) a ``ci`` dict (joint-fit keys prefixed ``L_ND.``), ``bootstrap`` and
    ``bootstrap_kept`` from resampling runs (analysis/fits/bootstrap.py).
    """
    bootstrap = check_count(bootstrap)
    N, D, L = (np.asarray(v, float) for v in (N, D, L))
    c_convention = c_convention or (C_6ND if C is None else "given C")
    C = 6 * N * D if C is None else np.asarray(C, float)
    for name, v in (("N", N), ("D", D), ("L", L), ("C", C)):
        if not np.all(np.isfinite(v) & (v > 0)):
            raise AnalysisInputError(f"{name} has NaN/inf/non-positive values; drop those points before fitting")
    if len(N) < 4 or len(np.unique(N)) < 2 or len(np.unique(D)) < 2:
        raise AnalysisInputError(
            f"{len(N)} runs with {len(np.unique(N))} sizes and {len(np.unique(D))} token budgets; "
            "Kaplan fits need >= 4 runs and >= 2 of each"
        )
    out = _all(N, D, L, C)
    out.update({"n_points": int(len(N)), "c_convention": c_convention, "warnings": []})
    if bootstrap:
        def refit(i):
            return _flat(_all(N[i], D[i], L[i], C[i]))
        keys = list(_flat(out))
        boot = run_bootstrap(per_replicate(refit, keys), len(N), bootstrap, seed=seed, point=_flat(out))
        out["warnings"] += boot.pop("warnings")
        out.update(boot)
    return out
