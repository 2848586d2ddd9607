"""Chinchilla Approach 2: IsoFLOP profiles.

For each compute budget, fit a parabola to loss vs log N near the minimum; its
vertex gives N_opt(C) (D_opt from the tokens column, or C / fpt(N) under the compute
convention of analysis/convention.py). Then N_opt = k_N C^a and
D_opt = k_D C^b by least squares in log-log space.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.convention import tokens_for
from analysis.fits.bootstrap import check_count, per_replicate, run_bootstrap
from analysis.fits.powerlaw import fit_loglog

__all__ = ["budget_groups", "isoflop_optima", "fit_isoflop"]


def budget_groups(C, sig: int = 2) -> np.ndarray:
    """Label each FLOP value by its budget: rounded to ``sig`` significant digits.

    Sweeps aim at a budget but land slightly off it (integer layer counts, our
    6N + attention FLOP convention), so exact equality would split budgets.
    """
    C = np.asarray(C, float)
    mag = 10 ** (np.floor(np.log10(C)) - sig + 1)
    return np.round(C / mag) * mag


def _vertex(logN, L, window):
    """Parabola L = c0 + c1 x + c2 x^2 through the points within ``window`` (in ln N) of the best one."""
    i = int(np.argmin(L))
    sel = np.abs(logN - logN[i]) <= window
    if sel.sum() < 3:  # widen to the 3 nearest points
        sel = np.zeros_like(sel)
        sel[np.argsort(np.abs(logN - logN[i]))[:3]] = True
    x, y = logN[sel], L[sel]
    if len(np.unique(x)) < 3:
        return None
    c2, c1, c0 = np.polyfit(x, y, 2)
    if c2 <= 0:  # no minimum: profile is concave or flat here
        return None
    xs = -c1 / (2 * c2)
    return xs, c0 - c1 * c1 / (4 * c2), (c0, c1, c2), bool(x.min() <= xs <= x.max())


def isoflop_optima(N, C, L, *, D=None, window: float = np.log(10) * 0.75, sig: int = 2,
                   min_points: int = 3, fpt: dict | None = None) -> pd.DataFrame:
    """Per-budget optimum from a parabola in ln N.

    ``window`` is the half-width in ln N around the empirical minimum that the
    parabola uses (default 0.75 decades; profiles are only parabolic near the
    minimum). Returns one row per budget: ``C, N_opt, D_opt, loss_opt, c0, c1, c2,
    n_points, interior`` (vertex inside the fitted points' range). ``D_opt`` is
    interpolated from ``D`` in log space when given, else ``C / fpt(N_opt)`` (default 6N).
    """
    N, C, L = (np.asarray(v, float) for v in (N, C, L))
    budgets = budget_groups(C, sig)
    rows = []
    for c in np.unique(budgets):
        m = budgets == c
        if m.sum() < min_points:
            continue
        logN = np.log(N[m])
        v = _vertex(logN, L[m], window)
        if v is None:
            continue
        xs, lopt, coefs, interior = v
        n_opt = float(np.exp(xs))
        if D is not None:
            o = np.argsort(logN)
            d_opt = float(np.exp(np.interp(xs, logN[o], np.log(np.asarray(D, float)[m][o]),
                                           left=np.nan, right=np.nan)))
            if not np.isfinite(d_opt):  # extrapolate with the budget constraint instead
                d_opt = float(tokens_for(fpt, n_opt, c))
        else:
            d_opt = float(tokens_for(fpt, n_opt, c))
        rows.append(dict(C=float(c), N_opt=n_opt, D_opt=d_opt, loss_opt=float(lopt), c0=coefs[0],
                         c1=coefs[1], c2=coefs[2], n_points=int(m.sum()), interior=interior))
    return pd.DataFrame(rows)


def _fit_from_optima(opt):
    a, ka = fit_loglog(opt["C"], opt["N_opt"])
    b, kb = fit_loglog(opt["C"], opt["D_opt"])
    return {"a": a, "b": b, "k_N": float(np.exp(ka)), "k_D": float(np.exp(kb))}


def fit_isoflop(N, C, L, *, D=None, bootstrap: int = 0, seed: int = 0, interior_only: bool = True,
                keep_samples: bool = False, **kw) -> dict:
    """Approach 2: exponents ``a`` (N_opt ∝ C^a) and ``b`` (D_opt ∝ C^b) from IsoFLOP profiles.

    ``interior_only`` drops budgets whose vertex lies outside the sampled sizes
    (an extrapolated optimum). Bootstrap (0 or >= 20) resamples points within each budget
    and refits parabolas and power laws. Returns ``a, b, k_N, k_D, n_budgets, n_points``,
    ``optima`` (list of per-budget dicts) and ``ci``/``bootstrap``/``bootstrap_kept`` when
    bootstrapped. ``fpt`` (in ``kw``) is the FLOPs-per-token law used when ``D`` is absent.
    """
    bootstrap = check_count(bootstrap)
    N, C, L = (np.asarray(v, float) for v in (N, C, L))
    for name, v in (("N", N), ("C", C), ("L", L)):
        if not np.all(np.isfinite(v) & (v > 0)):
            raise AnalysisInputError(f"{name} has NaN/inf/non-positive values; drop those points before fitting")
    opt = isoflop_optima(N, C, L, D=D, **kw)
    used = opt[opt["interior"]] if (interior_only and len(opt)) else opt
    if len(used) < 2:
        raise AnalysisInputError(
            f"only {len(used)} budget(s) with an interior IsoFLOP minimum (need >= 2, each with >= 3 sizes "
            "bracketing the optimum); add budgets or sizes"
        )
    out = {**_fit_from_optima(used), "n_budgets": int(len(used)), "n_points": int(len(N)),
           "optima": used.to_dict("records"), "warnings": []}
    if bootstrap:
        budgets = budget_groups(C, kw.get("sig", 2))
        groups = [np.flatnonzero(budgets == c) for c in np.unique(budgets)]

        def refit(idx):
            o = isoflop_optima(N[idx], C[idx], L[idx], D=None if D is None else np.asarray(D)[idx], **kw)
            o = o[o["interior"]] if (interior_only and len(o)) else o
            return _fit_from_optima(o) if len(o) >= 2 else None
        keys = ("a", "b", "k_N", "k_D")
        boot = run_bootstrap(per_replicate(refit, keys), len(N), bootstrap, seed=seed, groups=groups,
                             point={k: out[k] for k in keys}, keep_samples=keep_samples)
        out["warnings"] += boot.pop("warnings")
        out.update(boot)
    return out
