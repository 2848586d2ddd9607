"""Guardrails: one-line warnings, each with a stable code, wherever a scaling-law number is produced.

Checks run on the results table (per trial), on the plan of a sweep before it trains, on
IsoFLOP profiles and on fit results. Every threshold is a module constant below, documented in
docs/guardrails.md; ``format_warnings`` gives the ``warning: ...`` lines the CLI prints on
stderr, and ``Warning.to_dict`` the form stored under ``"warnings"`` in JSON output.

    kept, warns = screen_trials(df, loss_col)      # drops failed/diverged trials, says so
    warns += check_isoflop(N, C, L, trial_ids=...)  # minimum at a grid edge, too few sizes
    warns += check_fit(fit, "chinchilla", N=N, D=D) # constants at a bound, wide intervals, ...
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from analysis.fits.isoflop import budget_groups

__all__ = ["Warning", "screen_trials", "check_trials", "check_plan", "check_isoflop", "check_fit", "check_sweep",
           "check_points", "check_downstream", "format_warnings", "MIN_STEPS", "MAX_WARMUP_FRACTION", "MAX_EPOCHS",
           "MIN_DISTINCT", "MIN_SIZES_PER_BUDGET", "MIN_BUDGETS", "MAX_CI_WIDTH", "BOUND_TOL",
           "SEARCH_BOUNDS", "EXPONENTS", "MIN_DOWNSTREAM_POINTS", "MIN_METRIC_RANGE"]

# ---------------------------------------------------------------------------- thresholds

#: fewer optimizer steps than this: the loss reflects the schedule (warmup, lr) more than N and D
MIN_STEPS = 200
#: warmup longer than this fraction of the run: the run is mostly warming up, not annealed
MAX_WARMUP_FRACTION = 0.25
#: epochs over the train split above this: data repeated (Muennighoff et al. 2023: <= 4 is mild)
MAX_EPOCHS = 1.0
#: per fit form: (distinct N, distinct D, points) needed to identify it. Chinchilla has 5 free
#: constants and needs >= 3 values of each variable to see curvature; Kaplan's joint law has 4
#: and its single-variable lines need >= 3 points to be more than a two-point fit; Approach 1
#: drops the smallest and largest size, so it needs >= 4 sizes to keep >= 2.
MIN_DISTINCT = {"chinchilla": (3, 3, 6), "kaplan": (3, 3, 5), "envelope": (4, 1, 1), "isoflop": (3, 1, 1)}
#: sizes per IsoFLOP budget for a parabola that is more than an exact 3-parameter interpolation
MIN_SIZES_PER_BUDGET = 3
#: budgets for N_opt ~ C^a: two give a line through two points, with no check of the power law
MIN_BUDGETS = 3
#: an exponent's bootstrap interval wider than this (absolute) or than |value| is not identified
MAX_CI_WIDTH = 1.0
#: a constant within BOUND_TOL * max(|bound|, 1) of a search bound (or beyond it) is "at" it
BOUND_TOL = 0.01
#: search bounds per fit kind, name -> (lo, hi, log-scale). Chinchilla's L-BFGS is unconstrained,
#: so its bounds are the range of Hoffmann's start grid for the exponents (an exponent outside
#: [0, 2] makes its term flat or a step) and E > 0 (E -> 0: the irreducible loss was absorbed
#: by the power terms). Kaplan's joint fit uses scipy bounds (analysis/fits/kaplan.py). IsoFLOP
#: and envelope fits are closed-form least squares: nothing to hit. A fit dict with a
#: "bounds" entry (name -> [lo, hi]) overrides these.
SEARCH_BOUNDS = {
    "chinchilla": {"alpha": (0.0, 2.0, False), "beta": (0.0, 2.0, False), "E": (0.0, None, False)},
    "kaplan": {"L_ND.alpha_N": (1e-4, 5.0, False), "L_ND.alpha_D": (1e-4, 5.0, False),
               "L_ND.N_c": (math.exp(-50), math.exp(200), True),
               "L_ND.D_c": (math.exp(-50), math.exp(200), True)},
}
#: exponents whose interval is checked, per fit kind
EXPONENTS = {"chinchilla": ("alpha", "beta"), "isoflop": ("a", "b"), "envelope": ("a", "b"),
             "kaplan": ("alpha_N", "alpha_D", "alpha_C", "L_ND.alpha_N", "L_ND.alpha_D")}
#: loss -> metric fits (analysis/fits/downstream.py): trials needed per form (free constants + 1)
MIN_DOWNSTREAM_POINTS = {"sigmoid": 5, "exponential": 4}
#: a metric whose range across the trials is below this (absolute) carries no signal to fit
MIN_METRIC_RANGE = 0.02
_MAX_NAMED = 8  # trials spelled out in one message line; all of them stay in Warning.trials


@dataclass(frozen=True)
class Warning:  # noqa: A001 - the name the API promises; always used as guardrails.Warning
    """One problem: a stable ``code``, a one-line ``message`` and the ``trials`` it concerns."""

    code: str
    message: str
    trials: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return f"warning: [{self.code}] {self.message}"


def format_warnings(warnings) -> str:
    """The ``warning: [code] message`` lines, one per warning ('' for none)."""
    return "\n".join(w.line() for w in warnings)


def _named(items) -> str:
    """'a, b, c' with at most _MAX_NAMED items and '(+k more)'."""
    items = [str(i) for i in items]
    more = f" (+{len(items) - _MAX_NAMED} more)" if len(items) > _MAX_NAMED else ""
    return ", ".join(items[:_MAX_NAMED]) + more


def _ids(df: pd.DataFrame) -> list[str]:
    return [str(t) for t in (df["trial_id"] if "trial_id" in df.columns else df.index)]


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(df[col], errors="coerce").to_numpy(float)


# ---------------------------------------------------------------------------- per trial


def screen_trials(df: pd.DataFrame, loss_col: str | None = None) -> tuple[pd.DataFrame, list[Warning]]:
    """Drop trials that did not finish or diverged (status != done, non-finite loss) and warn.

    Only a sweep's results table (one with a ``status`` column) has trials: a plain CSV of
    points keeps its rows, so that a NaN there stays an input error of the fit.
    Then run :func:`check_trials` on the kept rows. Returns ``(kept, warnings)``.
    """
    if "status" not in df.columns:
        return df, check_trials(df)
    ids = _ids(df)
    reasons = {tid: s for tid, s in zip(ids, df["status"].astype(str)) if s != "done"}
    for col in dict.fromkeys(c for c in (loss_col, "loss") if c and c in df.columns):
        for tid, x in zip(ids, _num(df, col)):
            if not np.isfinite(x) and tid not in reasons:
                reasons[tid] = f"non-finite {col}"
    warns = []
    if reasons:
        warns.append(Warning("trial-excluded", f"{len(reasons)} trial(s) excluded from the fit "
                             f"(failed, diverged or unfinished): "
                             f"{_named(f'{t} ({r})' for t, r in reasons.items())}", list(reasons)))
    kept = df[[t not in reasons for t in ids]]
    return kept, warns + check_trials(kept)


def _flagged(code: str, bad, ids, values, fmt, message) -> list[Warning]:
    """One warning naming the trials where `bad` holds (`id: fmt(value)`), or none."""
    if not bad.any():
        return []
    named = _named(f"{t}: {fmt(v)}" for t, v in zip(ids[bad], values[bad]))
    return [Warning(code, message(int(bad.sum()), named), list(ids[bad]))]


def check_trials(df: pd.DataFrame, *, planned: bool = False) -> list[Warning]:
    """Per-trial checks on results-table rows: optimizer steps, warmup, repeated data, mixtures.

    Each check runs only if its columns exist (``steps``, ``warmup_steps``, ``epochs``,
    ``data.mixture``). ``planned`` words the messages for a sweep that has not run yet.
    """
    ids = np.array(_ids(df), dtype=object)
    verb = "will run" if planned else "ran"
    out = []
    if "steps" in df.columns:
        steps = _num(df, "steps")
        out += _flagged("too-few-steps", steps < MIN_STEPS, ids, steps, lambda s: f"{int(s)}",
                        lambda n, named: f"{n} trial(s) {verb} fewer than {MIN_STEPS} optimizer steps "
                                         f"({named}); lower train.batch_size or raise the budget")
        if "warmup_steps" in df.columns:
            frac = _num(df, "warmup_steps") / np.maximum(steps, 1)
            out += _flagged("warmup-long", frac > MAX_WARMUP_FRACTION, ids, frac, lambda f: f"{f:.0%}",
                            lambda n, named: f"{n} trial(s) warm up for more than "
                                             f"{MAX_WARMUP_FRACTION:.0%} of their steps ({named}); "
                                             f"shorten train.warmup")
    if "epochs" in df.columns:
        ep = _num(df, "epochs")
        out += _flagged("data-repeated", ep > MAX_EPOCHS, ids, ep, lambda e: f"{e:.2g} epochs",
                        lambda n, named: f"{n} trial(s) {'will repeat' if planned else 'repeated'}"
                                         f" the train split ({named}; max {np.nanmax(ep):.2g}); repeated "
                                         f"tokens are worth less than fresh ones")
    out += _check_mixture(df, ids)
    return out


def _mixture_names(text: str) -> list[str]:
    """Source names of a ``data.mixture`` string with a positive weight ("kjv:0.5,addition(k=2):0.5")."""
    names = []
    for item in re.split(r",(?![^()]*\))", text):  # commas outside parentheses
        name, _, w = item.strip().rpartition(":")
        try:
            if name and float(w) > 0:
                names.append(name.strip())
        except ValueError:
            names.append(name.strip() or item.strip())
    return names


def _check_mixture(df: pd.DataFrame, ids) -> list[Warning]:
    if "data.mixture" not in df.columns:
        return []
    corpus = df["data.name"].astype(str) if "data.name" in df.columns else pd.Series([None] * len(df))
    bad = []
    for tid, mix, name in zip(ids, df["data.mixture"], corpus):
        if isinstance(mix, str) and mix.strip():
            if any(n != name for n in _mixture_names(mix)):
                bad.append((tid, mix))
    if not bad:
        return []
    return [Warning("task-data-in-mixture", f"{len(bad)} trial(s) trained on a mixture with task data "
                    f"({_named(f'{t}: {m}' for t, m in bad)}); their tokens and losses are not the "
                    "corpus's, so fit a corpus-only sweep for the law", [t for t, _ in bad])]


def check_plan(rows) -> list[Warning]:
    """:func:`check_trials` on a sweep's plan, before training.

    ``rows``: dicts (or a DataFrame) with ``trial_id``, ``steps``, ``warmup_steps`` and, when
    known, ``epochs`` and ``data.mixture``, computed from the resolved trial configs.
    """
    return check_trials(pd.DataFrame(list(rows)) if not isinstance(rows, pd.DataFrame) else rows, planned=True)


# ---------------------------------------------------------------------------- per fit


def _distinct(x) -> int:
    """Distinct values, counting those within 1% of each other as one (sweeps land near a target)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x) & (x > 0)]
    return len(np.unique(np.round(np.log(x) / 0.01))) if len(x) else 0


def check_points(kind: str, N=None, D=None) -> list[Warning]:
    """Too few distinct N, distinct D or points for the form of ``kind`` (see MIN_DISTINCT)."""
    need_n, need_d, need_pts = MIN_DISTINCT.get(kind, (1, 1, 1))
    have = []
    if N is not None:
        n_pts = len(np.asarray(N))
        if _distinct(N) < need_n:
            have.append(f"{_distinct(N)} distinct N (need >= {need_n})")
        if n_pts < need_pts:
            have.append(f"{n_pts} points (need >= {need_pts})")
    if D is not None and _distinct(D) < need_d:
        have.append(f"{_distinct(D)} distinct D (need >= {need_d})")
    if not have:
        return []
    return [Warning("too-few-points", f"the {kind} fit has {', '.join(have)}: its constants are not "
                    "identified; add model sizes / token budgets")]


def check_isoflop(N, C, L, *, trial_ids=None, budgets=None) -> list[Warning]:
    """Per IsoFLOP budget: a minimum at the grid's edge (which way to extend), too few sizes.

    ``budgets`` labels each point's budget (e.g. the ``sweep.budget`` column); default: C
    rounded to 2 significant digits, as the IsoFLOP fit groups them.
    """
    N, C, L = (np.asarray(v, float) for v in (N, C, L))
    ids = np.array(trial_ids if trial_ids is not None else [f"#{i}" for i in range(len(N))], dtype=object)
    labels = np.asarray(budgets, float) if budgets is not None else budget_groups(C)
    out, thin, usable = [], [], 0
    for c in np.unique(labels):
        m = (labels == c) & np.isfinite(L)
        if _distinct(N[m]) < MIN_SIZES_PER_BUDGET:
            thin.append(f"{c:.2g} ({_distinct(N[m])})")
            continue
        usable += 1
        o = np.argsort(N[m], kind="stable")
        n_b, l_b, id_b = N[m][o], L[m][o], ids[m][o]
        i = int(np.argmin(l_b))
        if n_b[i] in (n_b[0], n_b[-1]):
            small = n_b[i] == n_b[0]
            out.append(Warning("isoflop-edge", f"budget C={c:.2g}: the lowest loss is at the "
                               f"{'smallest' if small else 'largest'} model (N={n_b[i]:.3g}, {id_b[i]}), so the "
                               f"optimum lies outside the grid; add {'smaller' if small else 'larger'} models",
                               list(id_b)))
    if thin:
        out.append(Warning("too-few-points", f"IsoFLOP budget(s) with fewer than {MIN_SIZES_PER_BUDGET} "
                           f"model sizes (sizes in parentheses): {_named(thin)}; add sizes around the optimum"))
    if usable < MIN_BUDGETS:
        out.append(Warning("too-few-points", f"{usable} IsoFLOP budget(s) with >= {MIN_SIZES_PER_BUDGET} sizes "
                           f"(need >= {MIN_BUDGETS} for N_opt ~ C^a to be more than a line through two points); "
                           "add budgets"))
    return out


def _get(fit: dict, name: str):
    """``fit[name]`` with dotted names looking into sub-dicts ("L_ND.alpha_N"); a {"value": x} leaf gives x."""
    node = fit
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict):
        node = node.get("value")
    try:
        return float(node)
    except (TypeError, ValueError):
        return None


def _interval(fit: dict, name: str):
    """(lo, hi) from ``fit["ci"][name]`` ([lo, hi] or {"lo", "hi"}); None if the fit has no interval."""
    ci = fit.get("ci") or {}
    iv = ci.get(name)
    if iv is None:
        leaf = fit.get(name) if "." not in name else None
        iv = leaf if isinstance(leaf, dict) and "lo" in leaf else None
    if iv is None:
        return None
    lo, hi = (iv.get("lo"), iv.get("hi")) if isinstance(iv, dict) else iv
    as_float = lambda v: float(v) if v is not None else math.nan  # noqa: E731 - JSON null -> NaN
    return as_float(lo), as_float(hi)


def _at_bound(v: float, lo, hi, log: bool):
    """'lower'/'upper' if ``v`` is within BOUND_TOL of (or beyond) a bound, else None."""
    f = math.log if log else (lambda x: x)
    if v <= 0 and log:
        return "lower"
    for side, b in (("lower", lo), ("upper", hi)):
        if b is None:
            continue
        tol = BOUND_TOL * max(abs(f(b)), 1.0)
        if (side == "lower" and f(v) <= f(b) + tol) or (side == "upper" and f(v) >= f(b) - tol):
            return side
    return None


def _check_bounds(fit: dict, kind: str) -> list[Warning]:
    bounds = {k: (lo, hi, False) for k, (lo, hi) in fit["bounds"].items()} if isinstance(fit.get("bounds"), dict) \
        else SEARCH_BOUNDS.get(kind, {})
    hits = []
    for name, (lo, hi, log) in bounds.items():
        v = _get(fit, name)
        if v is not None and math.isfinite(v):
            side = _at_bound(v, lo, hi, log)
            if side:
                hits.append(f"{name}={v:.4g} at its {side} bound {lo if side == 'lower' else hi:.4g}")
    if not hits:
        return []
    return [Warning("at-search-bound", f"{kind} fit: {'; '.join(hits)}; the optimum was not found inside the "
                    "search region, so the constants are not estimates (add points that constrain them)")]


def _check_intervals(fit: dict, kind: str) -> list[Warning]:
    out = []
    for name in EXPONENTS.get(kind, ()):
        v, iv = _get(fit, name), _interval(fit, name)
        if v is None or iv is None:
            continue
        lo, hi = iv
        if not (math.isfinite(lo) and math.isfinite(hi)):
            out.append(Warning("wide-interval", f"{kind} fit: {name}={v:.3g} has no bootstrap interval (no "
                               "replicate identified it); treat it as unidentified"))
            continue
        width = hi - lo
        if width > MAX_CI_WIDTH or width > abs(v):
            out.append(Warning("wide-interval", f"{kind} fit: {name}={v:.3g} with interval [{lo:.3g}, {hi:.3g}] "
                               f"(width {width:.3g} > {'its value' if width > abs(v) else MAX_CI_WIDTH}) is not "
                               "identified; widen the range of N/D or add points"))
    return out


def check_fit(fit: dict, kind: str, *, N=None, D=None) -> list[Warning]:
    """Fit-level checks for ``kind`` in chinchilla|kaplan|isoflop|envelope: constants at a search
    bound, exponents whose interval is too wide, and (given N, D) too few distinct N or D."""
    return check_points(kind, N, D) + _check_bounds(fit, kind) + _check_intervals(fit, kind)


def check_sweep(df: pd.DataFrame, fit: dict | None = None, *, n_col: str = "params_non_embedding",
                d_col: str = "tokens", loss_col: str = "val_loss") -> list[Warning]:
    """Every guardrail for a sweep's results table and its Chinchilla ``fit`` (None: not fitted):
    trial screening and checks, IsoFLOP edges when the table has ``sweep.budget``, fit checks.
    What ``scaling plot`` prints and what a sweep report stores in fit.json."""
    kept, warns = screen_trials(df, loss_col)
    cols = [n_col, d_col, loss_col]
    if len(kept) and all(c in kept.columns for c in cols):
        N, D, L = (_num(kept, c) for c in cols)
        if "sweep.budget" in kept.columns:
            C = _num(kept, "flops") if "flops" in kept.columns else 6 * N * D
            warns += check_isoflop(N, C, L, trial_ids=_ids(kept), budgets=_num(kept, "sweep.budget"))
        warns += check_points("chinchilla", N, D)
    return warns + (_check_bounds(fit, "chinchilla") + _check_intervals(fit, "chinchilla") if fit else [])


def check_downstream(fit: dict, L, y) -> list[Warning]:
    """Checks of a loss -> metric fit: too few trials, a flat metric (nothing emerged, or all
    saturated), constants at a search bound, an emergence threshold outside the observed losses."""
    L, y = np.asarray(L, float), np.asarray(y, float)
    form, out = fit["form"], []
    need = MIN_DOWNSTREAM_POINTS.get(form, 5) - (fit.get("chance") is not None)  # chance fixes lo
    if len(L) < need:
        out.append(Warning("too-few-points", f"the {form} loss -> metric fit has {len(L)} trials "
                           f"(need >= {need}): its constants are not identified; add model sizes"))
    if np.ptp(y) < MIN_METRIC_RANGE:
        out.append(Warning("metric-flat", f"the metric spans only {np.ptp(y):.3g} across {len(y)} trials "
                           f"(< {MIN_METRIC_RANGE}): nothing to fit (not emerged, or saturated); "
                           "train larger models / longer, or pick another metric"))
    if fit.get("at_bound"):
        out.append(Warning("at-search-bound", f"{form} loss -> metric fit: {', '.join(fit['at_bound'])} "
                           "at a search bound; the curve is not identified by these trials"))
    chance = fit.get("chance")
    if chance is not None and len(y) and np.mean(y < chance) > 0.5:
        out.append(Warning("below-chance", f"{int(np.sum(y < chance))} of {len(y)} trials score below "
                           f"the chance level {chance:.3g} fixed as the lower asymptote (answers "
                           "outside the label set): the curve is not meaningful; refit with --chance 0"))
    thr = fit.get("threshold")
    if thr is not None and np.isfinite(thr) and len(L) and not (L.min() <= thr <= L.max()):
        out.append(Warning("threshold-extrapolated", f"the emergence threshold L={thr:.3g} lies outside the "
                           f"observed losses [{L.min():.3g}, {L.max():.3g}]: it is an extrapolation"))
    return out

