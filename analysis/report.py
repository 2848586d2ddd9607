"""THE end-of-sweep report: results table, Approach-3 fit with intervals, fit.json, plots.

`scaling sweep` (through the CLI, after collecting) and `scaling plot DIR` both call
:func:`report_sweep`; there is one guard for "enough points" — the fit's own identifiability
rule (analysis/fits/chinchilla.py: >= 6 points, >= 3 distinct N and D). A sweep that cannot be
fitted still gets its table and plots, with a warning line instead of a fit, and unusable
trials (failed, NaN loss) are skipped with a warning: the report never fails on its data.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Callable

import numpy as np
import pandas as pd

from analysis.convention import fit_inputs
from analysis.errors import AnalysisInputError
from analysis.load import aggregate_seeds, default_loss_col, load_results, seed_noise, usable
from analysis.load import plot_dir as default_plot_dir

__all__ = ["report_sweep", "format_constants", "fit_sweep_table", "DEFAULT_BOOTSTRAP", "jsonable"]

#: replicates for `scaling fit` and the sweep report (~seconds on a 9-30 point sweep, 2 CPU cores)
DEFAULT_BOOTSTRAP = 200
_TABLE_COLS = ["trial_id", "params_non_embedding", "tokens", "flops", "loss", "val_loss", "wall_s", "status"]
CONSTANTS = ("E", "A", "B", "alpha", "beta", "a", "b", "G")


def jsonable(obj):
    """Floats/np scalars -> JSON-safe values (NaN/inf become null, so the output stays strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def _value_with_ci(fit: dict, k: str) -> str:
    v = fit.get(k)
    if v is None:
        return "-"
    lo_hi = fit.get("ci", {}).get(k)
    if lo_hi and all(np.isfinite(lo_hi)):
        return f"{v:.4g} [{lo_hi[0]:.4g}, {lo_hi[1]:.4g}]"
    return f"{v:.4g}"


def format_constants(fits: dict, keys=CONSTANTS) -> list[str]:
    """Lines ``name  value [lo, hi]  ...`` with one column per fit (label -> fit dict)."""
    labels = list(fits)
    width = max(28, *(len(lb) + 2 for lb in labels))
    lines = [f"{'':>8}  " + "".join(f"{lb:<{width}}" for lb in labels)]
    for k in keys:
        if any(k in f for f in fits.values()):
            lines.append(f"{k:>8}  " + "".join(f"{_value_with_ci(f, k):<{width}}" for f in fits.values()))
    for lb, f in fits.items():
        if f.get("bootstrap"):
            lines.append(f"{lb}: {f.get('ci_level', 0.95):.0%} bootstrap intervals, {f['bootstrap']} "
                         f"replicates requested, {f.get('bootstrap_kept', f['bootstrap'])} kept")
    return lines


def fit_sweep_table(df: pd.DataFrame, *, n_col: str = "params_non_embedding", loss_col: str,
                    bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, **kw) -> dict:
    """Approach-3 fit of an (already usable) results table under the one C convention."""
    from analysis.fits.chinchilla import fit_parametric  # JAX: imported only when fitting

    x = fit_inputs(df, n_col=n_col, loss_col=loss_col, d_col=kw.pop("d_col", "tokens"),
                   c_col=kw.pop("c_col", None))
    fit = fit_parametric(x["N"], x["D"], x["L"], bootstrap=bootstrap, seed=seed, fpt=x["fpt"], **kw)
    fit.update({k: x[k] for k in ("n_convention", "c_convention", "d_convention")})
    fit["notes"] = x["notes"]
    return fit


def _print_table(df: pd.DataFrame, log) -> None:
    cols = [c for c in _TABLE_COLS if c in df.columns]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        log(df[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))


def _fit_or_warn(good: pd.DataFrame, loss_col: str, bootstrap: int, log) -> tuple[dict | None, list[str]]:
    try:
        fit = fit_sweep_table(good, loss_col=loss_col, bootstrap=bootstrap)
    except AnalysisInputError as exc:  # not enough / not identifiable points: report without a fit
        return None, [f"[fit] no Approach-3 fit: {exc}"]
    log(f"Chinchilla fit L(N,D) = E + A/N^alpha + B/D^beta on {fit['n_points']} points "
        f"(N: {fit['n_convention']}; C: {fit['c_convention']}; loss: {loss_col})")
    for line in format_constants({"value [95% interval]": fit}) + fit["notes"]:
        log(line)
    return fit, [f"[fit] {w}" for w in fit["warnings"]]  # coded like `scaling fit` prints them


def _ability_plots(workdir: str, outdir: str, bootstrap: int) -> tuple[list[str], list[str]]:
    """Emergence, ICL, self-consistency and loss -> metric charts, when the sweep's trials have
    task evals (eval.jsonl); none otherwise. Returns (paths, warning lines)."""
    trials = os.path.join(workdir, "trials")
    if not (os.path.isdir(trials) and any(os.path.exists(os.path.join(trials, t, "eval.jsonl"))
                                          for t in os.listdir(trials))):
        return [], []
    from analysis.abilities import plot_sweep_abilities
    from analysis.downstream import plot_sweep_downstream

    paths, warnings = [], []
    try:
        paths += plot_sweep_abilities(workdir, outdir)
    except AnalysisInputError as exc:
        warnings.append(f"no ability charts: {exc}")
    more, w = plot_sweep_downstream(workdir, outdir, bootstrap=min(bootstrap, 50))  # a chart's band
    return paths + more, warnings + w


def _retrieval_plots(workdir: str, df: pd.DataFrame, outdir: str, warnings: list[str]) -> list[str]:
    """Closed-book vs retrieved accuracy by size, per task evaluated both ways (none otherwise)."""
    from analysis.retrieval import plot_sweep_retrieval, retrieval_tasks
    tasks, paths = retrieval_tasks(df), []
    for task in tasks:
        name = "retrieval" if len(tasks) == 1 else f"retrieval_{task}"
        try:
            paths += plot_sweep_retrieval(workdir, outdir, task, df=df, name=name)[0]
        except AnalysisInputError as exc:
            warnings.append(f"no retrieval chart for {task}: {exc}")
    return paths


def _vocab_plot(df: pd.DataFrame, outdir: str, warnings: list[str]) -> list[str]:
    """bpb vs vocabulary per size, for tables with a data.tokenizer axis and val_bpb."""
    from analysis.plots.vocab import has_vocab_axis, plot_vocab
    if not has_vocab_axis(df):
        return []
    try:
        return plot_vocab(df, outdir)
    except AnalysisInputError as exc:
        warnings.append(f"no vocabulary plot: {exc}")
        return []


def report_sweep(workdir: str, df: pd.DataFrame | None = None, *, log: Callable[[str], None] = print,
                 bootstrap: int = DEFAULT_BOOTSTRAP, plot_dir: str | None = None,
                 fit: bool = True) -> dict:
    """Print the table, fit with intervals when the data allow, write ``fit.json``, draw plots.

    ``workdir`` is a sweep directory (fit.json in it, plots in its plots/) or a results table
    (.csv/.parquet: plots and fit.json in a plots/ folder beside it, or in ``plot_dir``).

    Returns ``{"fit": dict | None, "warnings": [...], "plots": [...], "fit_json": path | None}``.
    Raises :class:`AnalysisInputError` only when there is no results table at all.
    """
    from analysis.plots.sweep import plot_sweep  # matplotlib: imported only when drawing
    from scaling.fileio import write_json_atomic

    df = load_results(workdir) if df is None else df
    _print_table(df, log)
    loss_col = default_loss_col(df)
    need = [c for c in ("params_non_embedding", "tokens", "flops", loss_col) if c in df.columns]
    good, warnings = usable(df, need)
    good = aggregate_seeds(good)
    noise = seed_noise(good, loss_col)
    result, fit_json = None, None
    outdir = str(default_plot_dir(workdir, plot_dir))
    json_dir = workdir if os.path.isdir(workdir) else outdir  # never write into a file's path
    if fit:
        result, w = _fit_or_warn(good, loss_col, bootstrap, log)
        warnings += w
        if result is not None and noise:
            result["seed_noise"] = noise
        os.makedirs(json_dir, exist_ok=True)
        fit_json = os.path.join(json_dir, "fit.json")
        write_json_atomic(fit_json, jsonable({"chinchilla": result, "warnings": warnings, "seed_noise": noise}))
    from analysis.guardrails import check_sweep  # steps, warmup, epochs, edges, bounds, intervals
    warnings += [f"[{w.code}] {w.message}" for w in check_sweep(df, result, loss_col=loss_col)]
    if fit_json:
        write_json_atomic(fit_json, jsonable({"chinchilla": result, "warnings": warnings,
                                              "seed_noise": noise}))
    paths: list[str] = []
    try:
        paths = plot_sweep(good, outdir, fit=result)
    except AnalysisInputError as exc:
        warnings.append(f"no plots: {exc}")
    more, w = _ability_plots(workdir, outdir, bootstrap)
    paths, warnings = paths + more, warnings + w
    paths += _vocab_plot(df, outdir, warnings)
    paths += _retrieval_plots(workdir, df, outdir, warnings)
    for wline in warnings:  # on stderr, like every other warning of the tool
        print(f"warning: {wline}", file=sys.stderr, flush=True)
    if noise:
        log(f"seed noise floor: median std of {loss_col} {noise['median_std']:.3g} "
            f"({noise['median_rel_std']:.2%}) over {noise['n_configs']} configurations")
    for label, p in [("results", os.path.join(workdir, "results.parquet")), ("fit", fit_json)] + \
            [("plot", p) for p in paths]:
        if p and os.path.exists(p):
            log(f"{label}: {p}")
    return {"fit": result, "warnings": warnings, "plots": paths, "fit_json": fit_json}
