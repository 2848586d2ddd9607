"""Task metric as a function of loss: sigmoid and exponential fits, emergence threshold, held-out
prediction and the two-step (N, D) -> loss -> metric chain.

Forms (``L`` the validation or task loss, ``y`` the metric, e.g. exact match):

- ``sigmoid``: ``y = lo + (hi - lo) * sigmoid(k (L0 - L))`` (Bhagia et al. 2024's second step;
  ``lo`` is fixed to the task's chance level when it is known).
- ``exponential``: ``y = lo + a exp(-g L)`` (Gadre et al. 2024: top-1 error ``eps - k exp(-gamma L)``).

The emergence threshold (Du et al. 2024, "abilities emerge below a loss threshold") is read off
the sigmoid: the loss where the fit has risen ``EMERGE_FRACTION`` of the way from ``lo`` to ``hi``,
``L0 + ln((1 - f) / f) / k``. Intervals come from the one bootstrap (analysis/fits/bootstrap.py);
identifiability checks that need the data live in analysis/guardrails.py (``check_downstream``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit

from analysis.errors import AnalysisInputError
from analysis.fits.bootstrap import check_count, per_replicate, run_bootstrap

__all__ = ["FORMS", "EMERGE_FRACTION", "fit_downstream", "predict_metric", "holdout_downstream",
           "two_step_predict", "two_step_holdout", "metric_at_flops", "prediction_band"]

FORMS = {"sigmoid": ("lo", "hi", "k", "L0"), "exponential": ("lo", "a", "g")}
#: the fraction of the lo -> hi rise that counts as "emerged" (Du et al. read it off by eye)
EMERGE_FRACTION = 0.1


def _curve(form: str, L, p: dict):
    L = np.asarray(L, float)
    if form == "sigmoid":
        return p["lo"] + (p["hi"] - p["lo"]) * expit(p["k"] * (p["L0"] - L))
    return p["lo"] + p["a"] * np.exp(-p["g"] * L)


def predict_metric(fit: dict, L):
    """The fitted metric at loss(es) ``L``."""
    return _curve(fit["form"], L, fit)


def _check(L, y):
    L, y = np.asarray(L, float).ravel(), np.asarray(y, float).ravel()
    if L.shape != y.shape:
        raise AnalysisInputError(f"loss and metric differ in length ({len(L)} vs {len(y)})")
    if not (np.all(np.isfinite(L)) and np.all(np.isfinite(y))):
        raise AnalysisInputError("loss and metric must be finite; drop NaN trials first")
    if len(L) < 3 or len(np.unique(L)) < 3:
        raise AnalysisInputError(f"a loss -> metric fit needs >= 3 distinct losses, got {len(np.unique(L))}")
    return L, y


def _box(form, L, y, chance):
    """Bounds and starting points for the free parameters (lo is fixed when chance is known)."""
    span_y = max(float(np.ptp(y)), 1e-3)
    unit = bool(np.all((y >= 0) & (y <= 1)))  # a rate: keep the asymptotes in [0, 1]
    ylo, yhi = (0.0, 1.0) if unit else (float(y.min()) - span_y, float(y.max()) + span_y)
    span_L = max(float(np.ptp(L)), 1e-3)
    names = [n for n in FORMS[form] if not (n == "lo" and chance is not None)]
    bounds = {"lo": (ylo, yhi), "hi": (ylo, yhi), "k": (1e-2 / span_L, 1e3 / span_L),
              "L0": (float(L.min()) - 2 * span_L, float(L.max()) + 2 * span_L),
              "a": (-1e6, 1e6), "g": (1e-4 / span_L, 50.0 / span_L)}
    lo0 = float(y[np.argmax(L)]) if chance is None else chance
    hi0 = float(y[np.argmin(L)])
    starts = []
    if form == "sigmoid":
        for q in (0.2, 0.5, 0.8):
            for kk in (2.0, 8.0, 32.0):
                starts.append({"lo": lo0, "hi": hi0, "k": kk / span_L, "L0": float(np.quantile(L, q))})
    else:
        for gg in (0.5, 2.0, 8.0):
            g = gg / span_L
            starts.append({"lo": lo0, "g": g, "a": (hi0 - lo0) / max(math.exp(-g * float(L.min())), 1e-300)})
    lo_b = np.array([bounds[n][0] for n in names])
    hi_b = np.array([bounds[n][1] for n in names])
    x0s = [np.clip([s[n] for n in names], lo_b + 1e-9 * (hi_b - lo_b), hi_b - 1e-9 * (hi_b - lo_b))
           for s in starts]
    return names, (lo_b, hi_b), x0s


def _point(form, L, y, chance):
    """Least squares from every start; the best as a parameter dict, or None if none converged."""
    names, bounds, x0s = _box(form, L, y, chance)
    fixed = {} if chance is None else {"lo": float(chance)}
    best = None
    for x0 in x0s:
        def resid(x):
            return _curve(form, L, {**fixed, **dict(zip(names, x))}) - y
        try:
            r = least_squares(resid, x0, bounds=bounds, method="trf")
        except (ValueError, FloatingPointError):
            continue
        if np.isfinite(r.cost) and (best is None or r.cost < best.cost):
            best = r
    if best is None:
        return None
    p = {**fixed, **{n: float(v) for n, v in zip(names, best.x)}}
    p["rmse"] = float(np.sqrt(2 * best.cost / len(L)))
    natural = ("lo", "hi") if bool(np.all((y >= 0) & (y <= 1))) else ()  # a rate's 0 and 1 are real
    p["at_bound"] = [n for n, v, lo, hi in zip(names, best.x, *bounds) if n not in natural
                     and (v <= lo + 1e-6 * (hi - lo) or v >= hi - 1e-6 * (hi - lo))]
    if form == "sigmoid":
        f = EMERGE_FRACTION
        p["threshold"] = p["L0"] + math.log((1 - f) / f) / p["k"]
    return p


def fit_downstream(L, y, *, form: str = "sigmoid", chance: float | None = None, bootstrap: int = 0,
                   seed: int = 0, ci_level: float = 0.95, keep_samples: bool = False) -> dict:
    """Fit ``y(L)`` in ``form`` ("sigmoid" | "exponential") across trials.

    ``chance`` fixes ``lo`` (the metric at infinite loss). ``bootstrap`` (0 or >= 20) adds
    percentile intervals ``ci`` over resampled trials. Returns the constants, ``threshold``
    (sigmoid: the emergence loss), ``rmse``, ``n_points``, ``at_bound`` (free constants on a
    search bound) and ``warnings``.
    """
    if form not in FORMS:
        raise AnalysisInputError(f"unknown form {form!r}; use one of {', '.join(FORMS)}")
    L, y = _check(L, y)
    bootstrap = check_count(bootstrap, ci_level)
    chance = None if chance is None or not np.isfinite(chance) else float(chance)
    p = _point(form, L, y, chance)
    if p is None:
        raise AnalysisInputError(f"the {form} fit did not converge from any start")
    # constants at a search bound are reported by analysis.guardrails.check_downstream
    out = {"form": form, **p, "chance": chance, "n_points": int(len(L)), "warnings": []}
    if bootstrap:
        keys = [k for k in FORMS[form] if not (k == "lo" and chance is not None)]
        keys += ["threshold"] if form == "sigmoid" else []

        def refit(idx):
            if len(np.unique(L[idx])) < 3:
                return None
            return _point(form, L[idx], y[idx], chance)
        boot = run_bootstrap(per_replicate(refit, keys), len(L), bootstrap, seed=seed, point=out,
                             level=ci_level, keep_samples=keep_samples)
        out["warnings"] += boot.pop("warnings")
        out.update(boot)
    out["identified"] = not (out["warnings"] or out["at_bound"])
    return out


def prediction_band(fit: dict, L, level: float = 0.95):
    """Percentile band of the bootstrap curves at ``L`` (None without kept samples)."""
    s = fit.get("samples")
    if not s:
        return None
    n = len(next(iter(s.values())))
    curves = np.array([_curve(fit["form"], L, {"lo": fit["lo"], **{k: v[i] for k, v in s.items()}})
                       for i in range(n)])
    q = 100 * (1 - level) / 2
    return np.nanpercentile(curves, q, axis=0), np.nanpercentile(curves, 100 - q, axis=0)


def holdout_downstream(L, y, mask, *, trial_ids=None, N=None, **fit_kw) -> tuple[dict, dict]:
    """Fit on ``~mask``, predict the held-out trials ``mask`` from their observed loss.

    Returns ``(fit, holdout)``; ``holdout['points']`` has trial_id, N, loss, observed, predicted,
    abs_error (and the bootstrap band lo/hi when the fit has intervals), plus ``mean_abs_error``
    and ``max_abs_error``.
    """
    L, y, mask = np.asarray(L, float), np.asarray(y, float), np.asarray(mask, bool)
    if not mask.any() or mask.all():
        raise AnalysisInputError("the hold-out must keep some trials and hold out at least one")
    try:
        fit = fit_downstream(L[~mask], y[~mask], keep_samples=True, **fit_kw)
    except AnalysisInputError as exc:
        raise AnalysisInputError(f"after holding out {int(mask.sum())} trial(s): {exc}") from exc
    pred = predict_metric(fit, L[mask])
    band = prediction_band(fit, L[mask])
    ids = np.asarray(trial_ids if trial_ids is not None else [None] * len(L), dtype=object)[mask]
    Ns = np.asarray(N, float)[mask] if N is not None else [math.nan] * int(mask.sum())
    points = []
    for i, (tid, n, l_, o, p_) in enumerate(zip(ids, Ns, L[mask], y[mask], pred)):
        pt = {"trial_id": None if tid is None else str(tid), "N": float(n), "loss": float(l_),
              "observed": float(o), "predicted": float(p_), "abs_error": float(abs(p_ - o))}
        if band is not None:
            pt["band"] = [float(band[0][i]), float(band[1][i])]
        points.append(pt)
    err = np.array([p["abs_error"] for p in points])
    # The naive forecast a fit must beat: "the held-out model scores what the lowest-loss fitted
    # trial scored". Near a plateau or on noisy metrics it is often as good as the fit.
    persist = float(y[~mask][np.argmin(L[~mask])])
    res = {"n_fit": int((~mask).sum()), "n_heldout": len(points), "points": points,
           "mean_abs_error": float(err.mean()), "max_abs_error": float(err.max()),
           "baseline": {"rule": "observed metric of the lowest-loss fitted trial",
                        "value": persist,
                        "mean_abs_error": float(np.mean(np.abs(persist - y[mask])))},
           "in_sample": {"loss": L[~mask].tolist(), "observed": y[~mask].tolist()}}
    return fit, res


def two_step_predict(loss_fit: dict, task_fit: dict, N, D) -> tuple[np.ndarray, np.ndarray]:
    """Bhagia et al. 2024: ``(N, D) -> loss`` (Chinchilla law) ``-> metric`` (this fit)."""
    from analysis.fits.chinchilla import predict_loss

    L_hat = np.asarray(predict_loss(loss_fit, np.asarray(N, float), np.asarray(D, float)), float)
    return L_hat, np.asarray(predict_metric(task_fit, L_hat), float)


def metric_at_flops(loss_fit: dict, task_fit: dict, C) -> dict:
    """The metric at the compute-optimal ``(N, D)`` of FLOP budget(s) ``C``."""
    from analysis.fits.chinchilla import compute_optimal

    N, D = compute_optimal(loss_fit, np.asarray(C, float), loss_fit.get("fpt"))
    L_hat, y_hat = two_step_predict(loss_fit, task_fit, N, D)
    return {"C": np.asarray(C, float), "N": np.asarray(N, float), "D": np.asarray(D, float),
            "loss": L_hat, "metric": y_hat}


def two_step_holdout(N, D, L, y, mask, *, loss_fit_kw=None, **fit_kw) -> dict:
    """Both steps fitted on ``~mask``; the held-out metric predicted from ``(N, D)`` alone.

    Returns ``loss_fit``, ``task_fit`` and ``points`` (N, D, observed/predicted loss and metric,
    abs_error) with ``mean_abs_error``.
    """
    from analysis.fits.chinchilla import fit_parametric

    N, D, L, y, mask = (np.asarray(v, float) for v in (N, D, L, y, mask))
    mask = mask.astype(bool)
    loss_fit = fit_parametric(N[~mask], D[~mask], L[~mask], **(loss_fit_kw or {"grid": "small"}))
    task_fit = fit_downstream(L[~mask], y[~mask], **fit_kw)
    L_hat, y_hat = two_step_predict(loss_fit, task_fit, N[mask], D[mask])
    points = [{"N": float(n), "D": float(d), "loss": float(lo), "loss_predicted": float(lh),
               "observed": float(o), "predicted": float(p), "abs_error": float(abs(p - o))}
              for n, d, lo, lh, o, p in zip(N[mask], D[mask], L[mask], L_hat, y[mask], y_hat)]
    return {"loss_fit": loss_fit, "task_fit": task_fit, "points": points,
            "mean_abs_error": float(np.mean([p["abs_error"] for p in points]))}
