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
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize

from analysis.fits.lbfgs import batch_minimize
from analysis.errors import AnalysisInputError

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
    return arrs


def _to_dict(theta, value, n):
    a_, b_, e_, alpha, beta = (float(v) for v in theta)
    A, B, E = float(np.exp(a_)), float(np.exp(b_)), float(np.exp(e_))
    out = {"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta}
    out.update({k: float(v) for k, v in _allocation(A, B, alpha, beta).items()})
    out.update({"loss": float(value), "n_points": int(n)})
    return out


def _allocation(A, B, alpha, beta):
    """Frontier exponents a, b and prefactor G (Hoffmann eq. 4)."""
    s = alpha + beta
    with np.errstate(all="ignore"):
        G = (alpha * A / (beta * B)) ** (1.0 / s)
    return {"a": beta / s, "b": alpha / s, "G": G}


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
) -> dict:
    """Fit ``L = E + A/N^alpha + B/D^beta`` (Hoffmann's Approach 3, Epoch's summed Huber).

    Parameters
    ----------
    N, D, L : array-like
        Parameters, tokens and final loss per run (all > 0, finite).
    delta : float
        Huber threshold on log-loss residuals (Hoffmann: 1e-3).
    grid : ``"hoffmann"`` (4,500 starts), ``"small"`` (243) or an array of rows
        ``(a, b, e, alpha, beta)`` with ``A = e^a`` etc.
    bootstrap : int
        Number of bootstrap refits (resampling points with replacement). Each refit
        starts from the full-data optimum plus a few perturbed starts. Adds ``ci``
        (name -> [lo, hi], percentile interval at ``ci_level``) and ``bootstrap``
        (the count) to the result.
    seed : int
        RNG seed for the bootstrap.
    n_polish : int
        How many of the best grid optima are polished with scipy L-BFGS-B.
    keep_samples : bool
        Also return the bootstrap estimates as ``samples`` (name -> list), e.g. for CI bands.

    Returns
    -------
    dict with ``E, A, B, alpha, beta``, allocation exponents ``a = beta/(alpha+beta)``,
    ``b = alpha/(alpha+beta)``, ``G = (alpha A/(beta B))^(1/(alpha+beta))``, the
    objective ``loss`` (summed Huber), ``n_points`` and ``delta``.
    """
    N, D, L = _check_inputs(N, D, L)
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    if isinstance(grid, str):
        if grid not in ("hoffmann", "small"):
            raise AnalysisInputError(f"grid={grid!r}; use 'hoffmann', 'small' or an (n, 5) array")
        starts = hoffmann_grid() if grid == "hoffmann" else _small_grid()
    else:
        starts = np.atleast_2d(np.asarray(grid, dtype=float))
        if starts.shape[1] != 5:
            raise AnalysisInputError(f"grid has shape {starts.shape}; pass rows (a, b, e, alpha, beta)")

    data = (logN, logD, logL, np.asarray(delta))
    w = np.ones(len(N))  # broadcast over starts
    thetas, vals = batch_minimize(_value_and_grad_jax, starts, w, data, n_iter=_N_ITER)

    # polish the best few distinct optima in float64 scipy with the exact gradient
    order = np.argsort(vals)
    best_theta, best_val = None, np.inf
    for i in order[: max(1, n_polish)]:
        th, v = _polish(thetas[i], logN, logD, logL, delta)
        if v < best_val:
            best_theta, best_val = th, v
    out = _to_dict(best_theta, best_val, len(N))
    out["delta"] = float(delta)

    if bootstrap and bootstrap > 0:
        samples = _bootstrap(best_theta, logN, logD, logL, delta, int(bootstrap), seed)
        lo_q, hi_q = 100 * (1 - ci_level) / 2, 100 * (1 + ci_level) / 2
        out["ci"] = {
            k: [float(np.nanpercentile(samples[k], lo_q)), float(np.nanpercentile(samples[k], hi_q))]
            for k in PARAM_NAMES
        }
        out["bootstrap"] = int(bootstrap)
        out["ci_level"] = float(ci_level)
        if keep_samples:
            out["samples"] = {k: np.asarray(v, float).tolist() for k, v in samples.items()}
    return out


def _bootstrap(theta_hat, logN, logD, logL, delta, n_boot, seed, n_starts=4, chunk=1024):
    """Refit on ``n_boot`` resamples; returns dict name -> array of estimates.

    Resamples are expressed as multinomial count weights so every replicate has
    the same shape and all (replicate, start) pairs run in one vmapped solve.
    Starts: the full-data optimum and ``n_starts - 1`` jittered copies of it
    (a full grid per replicate is unnecessary: resampling moves the optimum only
    a little, and the jitter guards against a replicate's basin moving).
    """
    rng = np.random.default_rng(seed)
    n = len(logN)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    jitter = np.array([0.5, 0.5, 0.1, 0.03, 0.03])
    starts = np.empty((n_boot, n_starts, 5))
    starts[:, 0] = theta_hat
    starts[:, 1:] = theta_hat + rng.normal(size=(n_boot, n_starts - 1, 5)) * jitter
    flat_starts = starts.reshape(-1, 5)
    flat_w = np.repeat(counts, n_starts, axis=0)
    data = (logN, logD, logL, np.asarray(delta))
    th_all = np.empty_like(flat_starts)
    v_all = np.empty(len(flat_starts))
    # fixed chunk size -> one compilation regardless of n_boot
    for s in range(0, len(flat_starts), chunk):
        th_c, w_c = flat_starts[s : s + chunk], flat_w[s : s + chunk]
        m = len(th_c)
        if m < chunk:  # pad the last chunk
            th_c = np.concatenate([th_c, np.repeat(th_c[-1:], chunk - m, axis=0)])
            w_c = np.concatenate([w_c, np.repeat(w_c[-1:], chunk - m, axis=0)])
        th, v = batch_minimize(_value_and_grad_jax, th_c, w_c, data, n_iter=_N_ITER)
        th_all[s : s + m], v_all[s : s + m] = th[:m], v[:m]
    th_all = th_all.reshape(n_boot, n_starts, 5)
    v_all = v_all.reshape(n_boot, n_starts)
    best = th_all[np.arange(n_boot), np.argmin(v_all, axis=1)]
    a_, b_, e_, alpha, beta = best.T
    A, B, E = np.exp(a_), np.exp(b_), np.exp(e_)
    alloc = _allocation(A, B, alpha, beta)
    return {"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta, **alloc}


def predict_loss(fit: dict, N, D):
    """``E + A/N^alpha + B/D^beta`` for the constants in ``fit``."""
    N, D = np.asarray(N, float), np.asarray(D, float)
    return fit["E"] + fit["A"] / N ** fit["alpha"] + fit["B"] / D ** fit["beta"]


def compute_optimal(fit: dict, C):
    """Compute-optimal ``(N_opt, D_opt)`` for FLOP budget(s) ``C`` under C = 6ND.

    ``N_opt = G (C/6)^a``, ``D_opt = G^-1 (C/6)^b`` (Hoffmann eq. 4). ``a``, ``b`` and
    ``G`` are derived from ``A, B, alpha, beta`` when absent from ``fit``.
    """
    alloc = {k: fit[k] for k in ("a", "b", "G") if k in fit}
    if len(alloc) < 3:
        alloc = _allocation(fit["A"], fit["B"], fit["alpha"], fit["beta"])
    C = np.asarray(C, dtype=float)
    x = C / 6.0
    N_opt = alloc["G"] * x ** alloc["a"]
    D_opt = x ** alloc["b"] / alloc["G"]
    if N_opt.ndim == 0:
        return float(N_opt), float(D_opt)
    return N_opt, D_opt


def optimal_loss(fit: dict, C):
    """Loss on the compute-optimal frontier, ``L*(C) = L(N_opt(C), D_opt(C))``."""
    N_opt, D_opt = compute_optimal(fit, C)
    return predict_loss(fit, N_opt, D_opt)
