"""Held-out validation of scaling-law fits (Choshen et al. 2024, "A Hitchhiker's Guide to
Scaling Law Estimation"): fit on the smaller budgets, predict the largest ones.

``--holdout`` specs (:func:`parse_holdout`):

* ``top-budget``  the points of the largest compute budget (its label: the ``sweep.budget``
  column when the caller passes it, else C rounded to 2 significant digits, as the IsoFLOP fit
  groups budgets; on a sizes x tokens grid that is usually the single largest-C point)
* ``top-k:K``     the K points with the largest C (IsoFLOP: the K largest budgets)
* ``flops>=X``    every point (IsoFLOP: every budget) with C >= X, e.g. ``flops>=1e21``

Chinchilla (Approach 3) and Kaplan's joint L(N, D) predict each held-out loss; the IsoFLOP fit
(Approach 2) predicts N_opt and L_opt at each held-out budget from power laws fitted on the other
budgets' optima and compares them with the held-out budget's own parabola minimum.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from analysis.errors import AnalysisInputError
from analysis.fits.isoflop import budget_groups, fit_isoflop, isoflop_optima
from analysis.fits.powerlaw import fit_loglog

__all__ = ["HoldoutSpec", "parse_holdout", "holdout_mask", "holdout_parametric", "holdout_kaplan",
           "holdout_isoflop"]

_USAGE = "use --holdout top-budget, top-k:K (K >= 1) or 'flops>=X' (e.g. flops>=1e21)"


@dataclass(frozen=True)
class HoldoutSpec:
    """A parsed ``--holdout`` value: ``kind`` in top-budget|top-k|flops>=, and its ``value``."""

    kind: str
    value: float
    text: str


def parse_holdout(text: str) -> HoldoutSpec:
    """Parse a ``--holdout`` string; :class:`AnalysisInputError` (one line) if it is malformed."""
    t = str(text).strip()
    if t == "top-budget":
        return HoldoutSpec("top-budget", 1, t)
    m = re.fullmatch(r"top-k:(\d+)", t)
    if m and int(m.group(1)) >= 1:
        return HoldoutSpec("top-k", int(m.group(1)), t)
    m = re.fullmatch(r"flops\s*>=\s*(\S+)", t)
    if m:
        try:
            x = float(m.group(1))
        except ValueError:
            x = float("nan")
        if np.isfinite(x) and x > 0:
            return HoldoutSpec("flops>=", x, t)
    raise AnalysisInputError(f"--holdout {text!r} is not understood; {_USAGE}")


def holdout_mask(spec: HoldoutSpec, C, budgets=None, *, by_budget: bool = False) -> np.ndarray:
    """Boolean mask of the held-out points. ``by_budget``: top-k counts budgets, not points.

    Raises :class:`AnalysisInputError` if the spec holds out nothing or everything.
    """
    C = np.asarray(C, float)
    labels = np.asarray(budgets, float) if budgets is not None else budget_groups(C)
    if spec.kind == "top-budget":
        mask = labels == labels.max()
    elif spec.kind == "top-k" and by_budget:
        mask = np.isin(labels, np.unique(labels)[::-1][: int(spec.value)])
    elif spec.kind == "top-k":
        mask = np.zeros(len(C), bool)
        mask[np.argsort(-C, kind="stable")[: int(spec.value)]] = True
    else:
        mask = (labels if by_budget else C) >= spec.value
    if not mask.any():
        raise AnalysisInputError(f"--holdout {spec.text} holds out no point (largest C is {C.max():.3g}); "
                                 "lower the threshold")
    if mask.all():
        raise AnalysisInputError(f"--holdout {spec.text} holds out all {len(C)} points, leaving none to fit; "
                                 "hold out fewer")
    return mask


def _fit_rest(fit_fn, spec: HoldoutSpec, *args, **kw) -> dict:
    """``fit_fn`` on the kept points; its input errors say that --holdout left too few."""
    try:
        return fit_fn(*args, **kw)
    except AnalysisInputError as exc:
        raise AnalysisInputError(f"after --holdout {spec.text}: {exc}") from exc


def _summary(spec, observed, predicted, extra: dict, n_fit: int) -> dict:
    observed, predicted = np.asarray(observed, float), np.asarray(predicted, float)
    err = np.abs(predicted - observed) / observed
    points = [{**{k: v[i] for k, v in extra.items()}, "observed": float(o), "predicted": float(p),
               "abs_rel_error": float(e)} for i, (o, p, e) in enumerate(zip(observed, predicted, err))]
    return {"spec": spec.text, "n_fit": int(n_fit), "n_heldout": len(points), "points": points,
            "median_abs_rel_error": float(np.median(err)), "max_abs_rel_error": float(np.max(err))}


def _point_holdout(fit_fn, predict, N, D, L, C, spec, budgets, trial_ids, **fit_kw):
    N, D, L, C = (np.asarray(v, float) for v in (N, D, L, C))
    m = holdout_mask(spec, C, budgets)
    fit = _fit_rest(fit_fn, spec, N[~m], D[~m], L[~m], **fit_kw)
    ids = list(np.asarray(trial_ids, dtype=object)[m]) if trial_ids is not None else [None] * int(m.sum())
    extra = {"trial_id": [None if i is None else str(i) for i in ids], "N": N[m].tolist(),
             "D": D[m].tolist(), "C": C[m].tolist()}
    res = _summary(spec, L[m], predict(fit, N[m], D[m]), extra, int((~m).sum()))
    res["in_sample"] = {"observed": L[~m].tolist(), "predicted": np.asarray(predict(fit, N[~m], D[~m])).tolist()}
    return fit, res


def holdout_parametric(N, D, L, C, spec: HoldoutSpec, *, budgets=None, trial_ids=None, **fit_kw):
    """Approach 3 on the kept points, predicting the held-out losses. Returns ``(fit, holdout)``:
    ``holdout`` has ``points`` (trial_id, N, D, C, observed, predicted, abs_rel_error),
    ``median_abs_rel_error``, ``n_fit``, ``n_heldout`` and the ``in_sample`` predictions."""
    from analysis.fits.chinchilla import fit_parametric, predict_loss

    return _point_holdout(fit_parametric, predict_loss, N, D, L, C, spec, budgets, trial_ids, **fit_kw)


def holdout_kaplan(N, D, L, C, spec: HoldoutSpec, *, budgets=None, trial_ids=None, **fit_kw):
    """Kaplan's fits on the kept points; the joint L(N, D) predicts the held-out losses.
    Returns ``(fit, holdout)`` as :func:`holdout_parametric`."""
    from analysis.fits.kaplan import fit_kaplan, kaplan_loss

    N, D, C = (np.asarray(v, float) for v in (N, D, C))
    m = holdout_mask(spec, C, budgets)

    def fit_fn(n, d, lo, **kw):  # the kept points' own C, not 6ND
        return fit_kaplan(n, d, lo, C=C[~m], **kw)
    return _point_holdout(fit_fn, lambda f, n, d: kaplan_loss(f["L_ND"], n, d), N, D, L, C, spec, budgets,
                          trial_ids, **fit_kw)


def _measured_optimum(N, L, c, D=None) -> dict:
    """The held-out budget's optimum: its parabola vertex, else (no minimum) its lowest point."""
    opt = isoflop_optima(N, np.full(len(N), c), L, D=D)
    if len(opt):
        r = opt.iloc[0]
        return {"N_opt": float(r["N_opt"]), "loss_opt": float(r["loss_opt"]), "interior": bool(r["interior"])}
    i = int(np.argmin(L))
    return {"N_opt": float(N[i]), "loss_opt": float(L[i]), "interior": False}


def _fit_lopt(C, L) -> dict:
    """The optimal loss per budget as ``L_opt = E + k_L C^l`` (l < 0) from >= 4 budgets, where a
    saturating law can be told from a line; from fewer, the pure power law ``k_L C^l`` (E = 0)."""
    C, L = np.asarray(C, float), np.asarray(L, float)
    l_exp, l_icpt = fit_loglog(C, L)
    law = {"E": 0.0, "k_L": float(np.exp(l_icpt)), "l": l_exp}
    if len(C) < 4:
        return law
    x = np.log(C / C.min())  # scaled so the prefactor stays O(L)

    def resid(p):
        return p[0] + np.exp(p[1] + p[2] * x) - L
    start = [0.5 * L.min(), np.log(0.5 * L.max()), min(l_exp * 2, -1e-3)]
    r = least_squares(resid, start, bounds=([0, -50, -5], [L.min(), 50, 0]))
    if r.success and np.sum(r.fun ** 2) < np.sum((_lopt(law, C) - L) ** 2):
        law = {"E": float(r.x[0]), "k_L": float(np.exp(r.x[1]) * C.min() ** -r.x[2]), "l": float(r.x[2])}
    return law


def _lopt(law: dict, C):
    return law["E"] + law["k_L"] * np.asarray(C, float) ** law["l"]


def holdout_isoflop(N, C, L, spec: HoldoutSpec, *, D=None, budgets=None, **fit_kw):
    """Approach 2 on the kept budgets: N_opt = k_N C^a and L_opt = E + k_L C^l from their optima
    predict each held-out budget's optimum, compared with that budget's own parabola minimum.

    Returns ``(fit, holdout)``: ``holdout["points"]`` has per held-out budget ``C``,
    ``observed``/``predicted``/``abs_rel_error`` of L_opt, the same for N_opt (``N_opt_*``) and
    ``interior`` (the measured optimum is a parabola vertex inside the sizes tried).
    """
    N, C, L = (np.asarray(v, float) for v in (N, C, L))
    labels = np.asarray(budgets, float) if budgets is not None else budget_groups(C)
    m = holdout_mask(spec, C, labels, by_budget=True)
    D_ = None if D is None else np.asarray(D, float)
    fit = _fit_rest(fit_isoflop, spec, N[~m], C[~m], L[~m], D=None if D_ is None else D_[~m], **fit_kw)
    opt = fit["optima"]
    fit["L_opt_law"] = law = _fit_lopt([o["C"] for o in opt], [o["loss_opt"] for o in opt])
    rows = {"C": [], "N_opt_observed": [], "N_opt_predicted": [], "interior": []}
    obs_l, pred_l = [], []
    for c in np.unique(labels[m]):
        b = labels == c
        c_eff = float(np.exp(np.mean(np.log(C[b]))))  # the budget's actual FLOPs (geometric mean)
        meas = _measured_optimum(N[b], L[b], c_eff, None if D_ is None else D_[b])
        rows["C"].append(c_eff)
        rows["N_opt_observed"].append(meas["N_opt"])
        rows["N_opt_predicted"].append(float(fit["k_N"] * c_eff ** fit["a"]))
        rows["interior"].append(meas["interior"])
        obs_l.append(meas["loss_opt"])
        pred_l.append(float(_lopt(law, c_eff)))
    res = _summary(spec, obs_l, pred_l, rows, int((~m).sum()))
    n_err = [abs(p["N_opt_predicted"] - p["N_opt_observed"]) / p["N_opt_observed"] for p in res["points"]]
    for p, e in zip(res["points"], n_err):
        p["N_opt_abs_rel_error"] = float(e)
    res["median_N_opt_abs_rel_error"] = float(np.median(n_err))
    res["in_sample"] = {"observed": [o["loss_opt"] for o in opt],
                        "predicted": [float(_lopt(law, o["C"])) for o in opt]}
    return fit, res
