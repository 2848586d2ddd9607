"""Loss -> task metric on a results table: inputs, chance level, hold-out, the sweep report's chart.

The fits are in analysis/fits/downstream.py; this module turns a sweep directory or a results
table (any metric column, e.g. ``eval/addition/direct/exact_match@k4``) into their inputs and
draws ``plots/downstream.png`` for ``scaling plot``. Also reads the Pythia reference evals as a
loss -> accuracy data set (LAMBADA accuracy vs LAMBADA log-perplexity across sizes and checkpoints).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.load import default_loss_col, load_results
from analysis.reference import REFERENCE_DIR

__all__ = ["EVAL_COL", "downstream_table", "chance_of", "heldout_mask", "pick_metric", "pythia_loss_acc",
           "load_loss_fit", "plot_sweep_downstream"]

#: results-table columns written from eval.jsonl (scaling/evals/columns.py)
EVAL_COL = re.compile(r"eval/(?P<task>[^/]+)/(?P<mode>[^/]+)/(?P<metric>[^@]+)@k(?P<shots>\d+)")


def downstream_table(data, metric: str, *, loss_col: str | None = None) -> tuple[pd.DataFrame, str, list[str]]:
    """Finished trials with a finite ``metric`` and loss: ``(rows, loss_col, excluded notes)``."""
    df = data if isinstance(data, pd.DataFrame) else load_results(data)
    if metric not in df.columns:
        evals = [c for c in df.columns if str(c).startswith("eval/")]
        hint = f"; eval columns: {', '.join(evals[:6])}{' ...' if len(evals) > 6 else ''}" if evals else \
            "; this table has no eval/ columns (run the sweep with eval.tasks)"
        raise AnalysisInputError(f"no column {metric!r} in the results table{hint}")
    loss_col = loss_col or default_loss_col(df)
    if loss_col not in df.columns:
        raise AnalysisInputError(f"no loss column {loss_col!r}; pass --loss-col")
    notes = []
    if "status" in df.columns:
        bad = df["status"].astype(str) != "done"
        if bad.any():
            notes.append(f"{int(bad.sum())} unfinished trial(s) left out")
        df = df[~bad]
    y, L = (pd.to_numeric(df[c], errors="coerce") for c in (metric, loss_col))
    ok = np.isfinite(y) & np.isfinite(L)
    if (~ok).any():
        notes.append(f"{int((~ok).sum())} trial(s) without a finite {metric} or {loss_col} left out")
    return df[ok].reset_index(drop=True), loss_col, notes


def chance_of(data, metric: str) -> float | None:
    """The task's chance level for an ``eval/...`` exact-match column, read from the trials'
    eval.jsonl (None when unknown: a file, another metric, or no chance recorded)."""
    m = EVAL_COL.fullmatch(metric)
    if not (m and isinstance(data, (str, os.PathLike)) and Path(data).is_dir()
            and m["metric"] == "exact_match"):
        return None
    from analysis.abilities import load_evals

    try:
        long = load_evals(data)
    except AnalysisInputError:
        return None
    rows = long[(long["task"] == m["task"]) & (long["mode"] == m["mode"])]
    c = pd.to_numeric(rows.get("chance", pd.Series(dtype=float)), errors="coerce").dropna()
    return float(c.iloc[0]) if len(c) else None


def heldout_mask(df: pd.DataFrame, spec: str, *, n_col: str = "params_non_embedding") -> np.ndarray:
    """``largest`` (every trial of the largest model), or a loss-fit SPEC (analysis/holdout.py)."""
    if spec == "largest":
        if n_col not in df.columns:
            raise AnalysisInputError(f"--holdout largest needs the column {n_col!r}; pass --n-col")
        N = pd.to_numeric(df[n_col], errors="coerce").to_numpy(float)
        mask = N == np.nanmax(N)
        if mask.all():
            raise AnalysisInputError("--holdout largest holds out every trial (one model size); "
                                     "the sweep needs several sizes")
        return mask
    from analysis.holdout import holdout_mask, parse_holdout

    if "flops" not in df.columns:
        raise AnalysisInputError(f"--holdout {spec} needs a flops column; use --holdout largest")
    return holdout_mask(parse_holdout(spec), df["flops"].to_numpy(float))


def pick_metric(df: pd.DataFrame) -> str | None:
    """The exact-match eval column that varies most across the trials (None without one)."""
    cols = [c for c in df.columns if (m := EVAL_COL.fullmatch(str(c))) and m["metric"] == "exact_match"]
    spans = {c: float(np.nanmax(v) - np.nanmin(v)) for c in cols
             if np.isfinite(v := pd.to_numeric(df[c], errors="coerce").to_numpy(float)).sum() >= 3}
    return max(spans, key=spans.get) if spans else None


def pythia_loss_acc(task: str = "lambada_openai", *, deduped: int = 0, shots: int = 0,
                    min_step: int = 1) -> pd.DataFrame:
    """Pythia checkpoints as loss -> accuracy points: size, N (total params), D (tokens seen),
    step, loss (= ln perplexity of the task), acc. Only tasks with a perplexity (LAMBADA)."""
    d = pd.read_csv(REFERENCE_DIR / "pythia_evals" / "pythia_v1_evals.csv")
    d = d[(d["task"] == task) & (d["deduped"] == deduped) & (d["num_fewshot"] == shots)
          & (d["step"] >= min_step)].dropna(subset=["ppl", "acc"])
    if d.empty:
        raise AnalysisInputError(f"no Pythia rows with a perplexity for task {task!r}")
    out = pd.DataFrame({"size": d["size"], "N": d["params_total"].astype(float),
                        "D": d["tokens_seen"].astype(float), "step": d["step"],
                        "loss": np.log(d["ppl"].astype(float)), "acc": d["acc"].astype(float)})
    return out.sort_values(["N", "step"]).reset_index(drop=True)


def load_loss_fit(path) -> dict:
    """Chinchilla constants from a JSON file: `scaling fit chinchilla --json` output or a sweep's
    fit.json (constants under "chinchilla")."""
    import json

    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise AnalysisInputError(f"cannot read the loss fit {path}: {exc}") from exc
    obj = obj.get("chinchilla", obj) if isinstance(obj, dict) else None
    keys = ("E", "A", "B", "alpha", "beta")
    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), (int, float)) for k in keys):
        raise AnalysisInputError(f"{path} holds no Chinchilla constants E, A, B, alpha, beta; "
                                 "pass the JSON of `scaling fit chinchilla --json`")
    return obj


def plot_sweep_downstream(workdir, outdir, *, bootstrap: int = 0, n_col: str = "params_non_embedding"):
    """``outdir/downstream.png``: the most varied exact-match column vs loss, the largest model
    held out when >= 2 sizes remain. Returns (paths, warning lines)."""
    from analysis.fits.downstream import fit_downstream, holdout_downstream
    from analysis.guardrails import check_downstream
    from analysis.plots.downstream import plot_downstream
    from analysis.plots.style import save_figure

    raw = load_results(workdir)
    metric = pick_metric(raw)
    if metric is None:
        return [], []
    df, loss_col, notes = downstream_table(raw, metric)
    L, y = df[loss_col].to_numpy(float), df[metric].to_numpy(float)
    kw = {"chance": chance_of(workdir, metric), "bootstrap": bootstrap}
    held = None
    try:
        sizes = df[n_col].nunique() if n_col in df.columns else 0
        if sizes >= 4:
            mask = heldout_mask(df, "largest", n_col=n_col)
            fit, held = holdout_downstream(L, y, mask, trial_ids=df.get("trial_id"), N=df[n_col], **kw)
            L, y = L[~mask], y[~mask]
        else:
            fit = fit_downstream(L, y, keep_samples=True, **kw)
    except AnalysisInputError as exc:
        return [], [f"no downstream chart: {exc}"]
    warns = [w.line().removeprefix("warning: ") for w in check_downstream(fit, L, y)]
    fig = plot_downstream(L, y, fit, holdout=held, metric=metric, loss_label=loss_col,
                          title=f"{metric}" + (" (largest model held out)" if held else ""))
    return save_figure(fig, outdir, "downstream"), notes + warns
