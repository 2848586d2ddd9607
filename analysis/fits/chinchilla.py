"""Chinchilla Approach 3: parametric fit L(N, D) = E + A/N^alpha + B/D^beta.

Follows Hoffmann et al. (2022) as re-examined by Besiroglu et al. (Epoch, 2024):

* the model is written as ``log L = LSE(a - alpha log N, b - beta log D, e)``
  with ``A = e^a, B = e^b, E = e^e`` so that all five parameters are unconstrained;
* the objective is the Huber loss (delta = 1e-3) of the log-loss residuals,
  **summed** over points (Epoch found that averaging makes L-BFGS stop early,
  which is one reason Hoffmann's published constants do not fit their own data);
* L-BFGS is started from Hoffmann's grid (4,500 starts) and the best optimum kept.

All starts are solved together in a vmapped JAX L-BFGS (float64), then the best
few are polished with scipy's L-BFGS-B using the exact numpy gradient.

Identification: the form needs >= 3 distinct N and >= 3 distinct D (fewer cannot separate
E, A, alpha or E, B, beta: an AnalysisInputError), and an optimum inside the search box
``BOUNDS`` (else the result carries ``identified: False`` and a warning). Bootstrap
replicates restart from the start grid and are discarded when they fail either test or do
not converge; the output reports requested and kept counts (analysis/fits/bootstrap.py).
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize

from analysis.convention import SIX_N
from analysis.errors import AnalysisInputError
from analysis.fits.bootstrap import check_count, run_bootstrap
from analysis.fits.lbfgs import batch_minimize

__all__ = [
    "fit_parametric",
    "compute_optimal",
    "predict_loss",
    "hoffmann_grid",
    "optimal_loss",
    "PARAM_NAMES",
]

PARAM_NAMES = ("E", "A", "B", "alpha", "beta", "a", "b", "G")
MIN_POINTS = 6  # five free parameters; fewer points than that fit exactly or not at all
MIN_LEVELS = 3  # distinct N and distinct D values: A, alpha (B, beta) need two differences
#: the search box in (a, b, e, alpha, beta) = (log A, log B, log E, alpha, beta): an optimum at or
#: beyond it (exponent <= 0.01 or >= 3, E < 0.0025, |log A| huge) means the data do not pin it
BOUNDS = {"a": (-20.0, 100.0), "b": (-20.0, 100.0), "e": (-6.0, 6.0), "alpha": (0.01, 3.0),
          "beta": (0.01, 3.0)}
_GTOL = 1e-5  # max |gradient| per unit point weight for a bootstrap replicate to count as converged
_N_ITER = 200  # batched L-BFGS iterations per start (100 already reach the optimum on Epoch data)


def hoffmann_grid() -> np.ndarray:
    """Hoffmann's 4,500 starting points as rows ``(a, b, e, alpha, beta)``.

    alpha, beta in {0, 0.5, ..., 2}; e in {-1, -0.5, ..., 1}; a, b in {0, 5, ..., 25}
    (Epoch's notebook: ``np.arange(-1, 1.5, .5)`` etc., i.e. end points exclusive,
    5 x 5 x 5 x 6 x 6 = 4,500).
    """
    ab = np.arange(0, 30, 5.0)
    e = np.arange(-1, 1.5, 0.5)
    ex = np.arange(0, 2.5, 0.5)
    return np.array(list(itertools.product(ab, ab, e, ex, ex)), dtype=float)


def _small_grid() -> np.ndarray:
    """A 3^5 = 243-point grid around typical LM values (for quick fits)."""
    return np.array(
        list(itertools.product([0, 5, 10], [0, 5, 10], [-1, 0, 1], [0.2, 0.5, 1.0], [0.2, 0.5, 1.0])),
        dtype=float,
    )


def _boot_grid() -> np.ndarray:
    """2^5 = 32 starts spanning the usual basins: every bootstrap replicate restarts from all of
    them (not from the full-data optimum, which would measure the optimiser's inertia)."""
    return np.array(
        list(itertools.product([2.0, 10.0], [2.0, 10.0], [-0.5, 0.5], [0.3, 1.0], [0.3, 1.0])), dtype=float
    )


# --- objective -----------------------------------------------------------------------------


def _value_and_grad_jax(theta, w, logN, logD, logL, delta):
    """Batched summed Huber loss and exact gradient: theta (S, 5), w (S, M) or (M,).

    Hand-written rather than ``jax.grad``: it shares the softmax between value and
    gradient and is ~30% cheaper, which matters at 4,500 x 240 residuals per call.
    """
    a, b, e, al, be = (theta[:, i : i + 1] for i in range(5))
    t1 = a - al * logN
    t2 = b - be * logD
    m = jnp.maximum(jnp.maximum(t1, t2), e)  # stable log-sum-exp
    e1, e2, e3 = jnp.exp(t1 - m), jnp.exp(t2 - m), jnp.exp(e - m)
    s = e1 + e2 + e3
    r = m + jnp.log(s) - logL
    ar = jnp.abs(r)
    # scipy.special.huber convention (Epoch): r^2/2 inside, delta(|r| - delta/2) outside
    f = jnp.sum(w * jnp.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta)), axis=1)
    dr = w * jnp.clip(r, -delta, delta) / s
    q1, q2 = dr * e1, dr * e2
    g = jnp.stack(
        [q1.sum(1), q2.sum(1), (dr * e3).sum(1), -(q1 * logN).sum(1), -(q2 * logD).sum(1)], axis=1
    )
    return f, g


def _objective_np(theta, logN, logD, logL, delta):
    """Summed Huber loss and its exact gradient (numpy, for the scipy polish)."""
    a, b, e, alpha, beta = theta
    t = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])
    m = t.max(axis=0)
    ex = np.exp(t - m)
    s = ex.sum(axis=0)
    pred = m + np.log(s)
    p = ex / s  # softmax weights = d pred / d term
    r = pred - logL
    ar = np.abs(r)
    f = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta)).sum()
    dr = np.clip(r, -delta, delta)  # Huber derivative
    g = np.array(
        [
            (dr * p[0]).sum(),
            (dr * p[1]).sum(),
            (dr * p[2]).sum(),
            -(dr * p[0] * logN).sum(),
            -(dr * p[1] * logD).sum(),
        ]
    )
    return f, g


def _polish(theta0, logN, logD, logL, delta):
    res = minimize(
        _objective_np,
        theta0,
        args=(logN, logD, logL, delta),
        jac=True,
        method="L-BFGS-B",
        # tight tolerances: the summed Huber objective is ~1e-3, so the scipy
        # defaults (ftol 2.2e-9 relative) would stop while B is still drifting
        options={"maxiter": 20000, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 20},
    )
    return res.x, float(res.fun)


# --- public API ----------------------------------------------------------------------------


def _check_inputs(N, D, L):
    arrs = []
    for name, x in (("N", N), ("D", D), ("L", L)):
        x = np.asarray(x, dtype=float).ravel()
        bad = ~np.isfinite(x) | (x <= 0)
        if bad.any():
            raise AnalysisInputError(
                f"{name} has {int(bad.sum())} NaN/inf/non-positive value(s); drop those points before fitting"
            )
        arrs.append(x)
    if not (len(arrs[0]) == len(arrs[1]) == len(arrs[2])):
        raise AnalysisInputError(f"N, D, L have lengths {[len(a) for a in arrs]}; pass equal-length arrays")
    if len(arrs[0]) < MIN_POINTS:
        raise AnalysisInputError(
            f"only {len(arrs[0])} points; the 5-parameter fit needs at least {MIN_POINTS} (run more trials)"
        )
    n_N, n_D = len(np.unique(arrs[0])), len(np.unique(arrs[1]))
    if n_N < MIN_LEVELS or n_D < MIN_LEVELS:
        raise AnalysisInputError(
            f"{n_N} distinct N and {n_D} distinct D; L = E + A/N^alpha + B/D^beta needs at least "
            f"{MIN_LEVELS} of each to be identified (add model sizes / token budgets)"
        )
    return arrs


def _at_bound(theta_Sx5) -> np.ndarray:
    """Which rows of (a, b, e, alpha, beta) lie outside the open search box (``BOUNDS``)."""
    th = np.atleast_2d(theta_Sx5)
    lo = np.array([BOUNDS[k][0] for k in ("a", "b", "e", "alpha", "beta")])
    hi = np.array([BOUNDS[k][1] for k in ("a", "b", "e", "alpha", "beta")])
    return ~np.all(np.isfinite(th) & (th > lo) & (th < hi), axis=1)


def _allocation(A, B, alpha, beta, fpt=None):
    """Frontier exponents a, b and prefactor G for ``C = k N^s D`` (Hoffmann eq. 4 when k=6, s=1).

    ``N_opt = G (C/k)^a``, ``D_opt = G^-s (C/k)^b`` with ``a = beta/(alpha + s beta)``,
    ``b = alpha/(alpha + s beta)``, ``G = (alpha A / (s beta B))^(1/(alpha + s beta))``.
    NaN where the constants have no finite optimum (non-positive exponents).
    """
    s = (fpt or SIX_N)["exp"]
    A, B, alpha, beta = (np.asarray(v, float) for v in (A, B, alpha, beta))
    t = alpha + s * beta
    with np.errstate(all="ignore"):  # negative exponents: no optimum -> NaN, never complex
        ratio = alpha * A / (s * beta * B)
        G = np.where((ratio > 0) & (t > 0), np.abs(ratio) ** (1.0 / t), np.nan)
        return {"a": beta / t, "b": alpha / t, "G": G}


def _constants(theta_Sx5, fpt=None) -> dict:
    a_, b_, e_, alpha, beta = np.atleast_2d(theta_Sx5).T
    with np.errstate(over="ignore"):  # a runaway replicate: inf, then discarded as at a bound
        A, B, E = np.exp(a_), np.exp(b_), np.exp(e_)
    return {"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta, **_allocation(A, B, alpha, beta, fpt)}


def _starts(grid) -> np.ndarray:
    if isinstance(grid, str):
        grids = {"hoffmann": hoffmann_grid, "small": _small_grid, "boot": _boot_grid}
        if grid not in grids:
            raise AnalysisInputError(f"grid={grid!r}; use 'hoffmann', 'small', 'boot' or an (n, 5) array")
        return grids[grid]()
    starts = np.atleast_2d(np.asarray(grid, dtype=float))
    if starts.shape[1] != 5:
        raise AnalysisInputError(f"grid has shape {starts.shape}; pass rows (a, b, e, alpha, beta)")
    return starts


def _point_fit(logN, logD, logL, delta, starts, n_polish):
    """Best optimum over ``starts`` (batched L-BFGS), the best few polished by scipy."""
    data = (logN, logD, logL, np.asarray(delta))
    thetas, vals = batch_minimize(_value_and_grad_jax, starts, np.ones(len(logN)), data, n_iter=_N_ITER)
    best_theta, best_val = None, np.inf
    for i in np.argsort(vals)[: max(1, n_polish)]:
        th, v = _polish(thetas[i], logN, logD, logL, delta)
        if v < best_val:
            best_theta, best_val = th, v
    return best_theta, best_val


def fit_parametric(
    N,
    D,
    L,
    *,
    delta: float = 1e-3,
    grid="hoffmann",
    bootstrap: int = 0,
    seed: int = 0,
    n_polish: int = 5,
    ci_level: float = 0.95,
    keep_samples: bool = False,
    boot_grid="boot",
    fpt: dict | None = None,
) -> dict:
    """Fit ``L = E + A/N^alpha + B/D^beta`` (Hoffmann's Approach 3, Epoch's summed Huber).

    N, D, L: parameters, tokens and final loss per run (all > 0, finite; >= 3 distinct N and D).
    ``delta``: Huber threshold on log-loss residuals (Hoffmann: 1e-3). ``grid``: ``"hoffmann"``
    (4,500 starts), ``"small"`` (243) or rows ``(a, b, e, alpha, beta)`` with ``A = e^a`` etc.
    ``bootstrap``: refits on resampled points (0, or >= 20 for a 95% interval); each restarts
    from ``boot_grid`` (32 starts); replicates that do not identify the form are discarded. Adds ``ci``
    (name -> [lo, hi] at ``ci_level``), ``bootstrap`` (requested), ``bootstrap_kept``, and with
    ``keep_samples`` the kept estimates as ``samples``. ``fpt`` is the FLOPs-per-token law of
    the C convention (analysis/convention.py; default 6N) used for ``a, b, G``.

    Returns ``E, A, B, alpha, beta``, allocation ``a, b, G`` (``N_opt = G (C/k)^a``), the
    objective ``loss`` (summed Huber), ``n_points``, ``delta``, ``fpt``, ``identified`` and
    ``warnings`` (one line each).
    """
    N, D, L = _check_inputs(N, D, L)
    bootstrap = check_count(bootstrap, ci_level)
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    theta, value = _point_fit(logN, logD, logL, delta, _starts(grid), n_polish)
    out = {k: float(v[0]) for k, v in _constants(theta, fpt).items()}
    out.update({"loss": float(value), "n_points": int(len(N)), "delta": float(delta),
                "fpt": dict(fpt or SIX_N), "warnings": []})
    if _at_bound(theta)[0]:
        out["warnings"].append(
            "Approach 3 optimum at a search bound (alpha={alpha:.3g}, beta={beta:.3g}, E={E:.3g}): "
            "the constants are not identified by these data".format(**out))
    if bootstrap:
        starts = _starts(boot_grid)

        def refit_many(idx_BxM):
            return _refit_resamples(logN, logD, logL, delta, idx_BxM, starts, fpt)
        boot = run_bootstrap(refit_many, len(N), bootstrap, seed=seed, point=out, level=ci_level,
                             keep_samples=keep_samples)
        out["warnings"] += boot.pop("warnings")
        out.update(boot)
    out["identified"] = not out["warnings"]
    return out


def _batched(starts, weights, data, n_iter, chunk=4096):
    """batch_minimize over many (start, weights) rows in fixed-size chunks (one compilation per
    power-of-two chunk size, so a few hundred rows are not padded to thousands)."""
    chunk = min(chunk, 1 << max(int(np.ceil(np.log2(max(len(starts), 1)))), 6))
    th_all, v_all, g_all = np.empty_like(starts), np.empty(len(starts)), np.empty(len(starts))
    for s in range(0, len(starts), chunk):
        sl = slice(s, min(s + chunk, len(starts)))
        th_c, w_c = starts[sl], weights[sl]
        m = len(th_c)
        if m < chunk:  # pad the last chunk
            th_c = np.concatenate([th_c, np.repeat(th_c[-1:], chunk - m, axis=0)])
            w_c = np.concatenate([w_c, np.repeat(w_c[-1:], chunk - m, axis=0)])
        th, v, g = batch_minimize(_value_and_grad_jax, th_c, w_c, data, n_iter=n_iter, with_grad=True)
        th_all[sl], v_all[sl], g_all[sl] = th[:m], v[:m], g[:m]
    return th_all, v_all, g_all


def _refit_resamples(logN, logD, logL, delta, idx, starts, fpt=None, n_keep=2):
    """Refit the resamples ``idx`` (B, M), each from every row of ``starts``; returns (samples, kept).

    Resamples are multinomial count weights so every (replicate, start) pair shares one
    compiled batched solve. Stage 1 runs every start briefly; stage 2 runs the ``n_keep`` best
    starts per replicate to convergence (the E-B valley is slow). A replicate is kept when its
    resample still has >= 3 distinct N and D, its optimum converged (small gradient) and lies
    inside the search box.
    """
    n, S, n_boot = len(logN), len(starts), len(idx)
    counts = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(float)
    data = (logN, logD, logL, np.asarray(delta))
    th1, v1, _ = _batched(np.tile(starts, (n_boot, 1)), np.repeat(counts, S, axis=0), data, _N_ITER // 2)
    top = np.argsort(v1.reshape(n_boot, S), axis=1)[:, :n_keep] + np.arange(n_boot)[:, None] * S
    th2, v2, g2 = _batched(th1[top.ravel()], np.repeat(counts, n_keep, axis=0), data, 5 * _N_ITER)
    best = np.argmin(v2.reshape(n_boot, n_keep), axis=1) + np.arange(n_boot) * n_keep
    theta = th2[best]
    levels_ok = np.array([len(np.unique(logN[i])) >= MIN_LEVELS and len(np.unique(logD[i])) >= MIN_LEVELS
                          for i in idx])
    kept = levels_ok & (g2[best] <= _GTOL * n) & ~_at_bound(theta)
    return _constants(theta, fpt), kept


def predict_loss(fit: dict, N, D):
    """``E + A/N^alpha + B/D^beta`` for the constants in ``fit``."""
    N, D = np.asarray(N, float), np.asarray(D, float)
    return fit["E"] + fit["A"] / N ** fit["alpha"] + fit["B"] / D ** fit["beta"]


def compute_optimal(fit: dict, C, fpt: dict | None = None):
    """Compute-optimal ``(N_opt, D_opt)`` for FLOP budget(s) ``C``.

    C follows the fit's convention (``fpt``, analysis/convention.py): ``C = k N^s D``; published
    fits and fits without ``fpt`` use C = 6ND, where ``N_opt = G (C/6)^a`` and
    ``D_opt = G^-1 (C/6)^b`` (Hoffmann eq. 4). ``D_opt`` is always ``C / (k N_opt^s)``.
    """
    fpt = fpt or fit.get("fpt") or SIX_N
    alloc = _allocation(fit["A"], fit["B"], fit["alpha"], fit["beta"], fpt)
    C = np.asarray(C, dtype=float)
    x = C / fpt["coef"]
    N_opt = alloc["G"] * x ** alloc["a"]
    D_opt = x / N_opt ** fpt["exp"]
    if N_opt.ndim == 0:
        return float(N_opt), float(D_opt)
    return N_opt, D_opt


def optimal_loss(fit: dict, C):
    """Loss on the compute-optimal frontier, ``L*(C) = L(N_opt(C), D_opt(C))``."""
    N_opt, D_opt = compute_optimal(fit, C)
    return predict_loss(fit, N_opt, D_opt)
