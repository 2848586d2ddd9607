"""Ability charts: emergence, in-context learning and self-consistency, ours and published.

Reads files only (a sweep's results.parquet and trials/*/eval.jsonl, or the bundled reference
CSVs); never imports the trainer. This module loads and shapes the data; the three chart
functions (drawn in analysis/plots/abilities.py, re-exported here) take tidy frames, so the
same code draws our sweep and the published data:

- `plot_emergence(df, x, metric, continuous, group)`: Wei et al. 2022 / Schaeffer et al. 2023 —
  a discontinuous metric (exact match) beside a continuous one, vs training FLOPs or
  parameters, one line per task, dotted chance lines.
- `plot_icl(df, shots, value, group)`: Brown et al. 2020 — accuracy vs number of shots, one
  line per model size.
- `plot_sc(df, samples, value, group, greedy)`: Wang et al. 2022 — majority-vote accuracy vs
  number of sampled paths, one line per size, greedy decoding dashed.

    python -m analysis.abilities SWEEP_DIR    # writes SWEEP_DIR/plots/{emergence,icl,sc}.png
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.plots.abilities import plot_emergence, plot_icl, plot_sc  # re-exported: one import for notebooks
from analysis.plots.style import save_figure
from analysis.reference import REFERENCE_DIR
from scaling.display import print_table
from scaling.errors import UserError
from scaling.fileio import read_jsonl
from scaling.sweeps import store

__all__ = ["read_eval_jsonl", "load_evals", "emergence_frame", "icl_frame", "sc_frame",
           "plot_emergence", "plot_icl", "plot_sc", "obsscaling_sc", "pythia_icl",
           "lu_emergence", "plot_sweep_abilities", "summary_table"]


# ---------------------------------------------------------------------------- our sweeps

def read_eval_jsonl(path: str | os.PathLike) -> pd.DataFrame:
    """One row per (task, shots, mode, metric) from an eval.jsonl."""
    rows = read_jsonl(path)  # unreadable lines are skipped (the one JSONL rule)
    if not rows:
        raise AnalysisInputError(f"{path}: no evaluation rows")
    return pd.DataFrame(rows)


def load_evals(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """Long table of a sweep's task metrics joined with each trial's size and compute.

    Columns: trial_id, params_non_embedding, flops, task, shots, mode, metric, value, chance.
    Sizes come from trials/<id>/summary.json (done trials only). Only the trials of the sweep's
    current plan (`sweep.json`) count, so directories left by an earlier, different plan of the
    same experiment do not appear twice.
    """
    root = Path(sweep_dir) / "trials"
    if not root.is_dir():
        raise AnalysisInputError(f"{sweep_dir}: no trials/ directory (not a sweep)")
    try:
        planned = ({t["trial_id"] for t in store.read_plan(str(sweep_dir))["trials"]}
                   if store.has_plan(str(sweep_dir)) else None)
    except UserError as e:  # a damaged sweep.json
        raise AnalysisInputError(str(e)) from e
    frames = []
    for tdir in sorted(root.iterdir()):
        if planned is not None and tdir.name not in planned:
            continue
        ev, s = tdir / "eval.jsonl", store.read_summary(str(tdir))
        if not (ev.exists() and s):
            continue
        if s.get("status") != "done":
            continue
        df = read_eval_jsonl(ev)
        df["trial_id"] = tdir.name
        for k in ("params_non_embedding", "flops", "val_loss"):
            df[k] = s.get(k, np.nan)
        frames.append(df)
    if not frames:
        raise AnalysisInputError(f"{sweep_dir}: no finished trial has an eval.jsonl")
    return pd.concat(frames, ignore_index=True)


def _pick(long: pd.DataFrame, **eq) -> pd.DataFrame:
    out = long
    for k, v in eq.items():
        out = out[out[k] == v]
    return out


def emergence_frame(long: pd.DataFrame, *, metric="exact_match", continuous="edit_distance",
                    shots: int | None = None, mode="direct") -> pd.DataFrame:
    """Per (trial, task): x columns, `metric`, `continuous`, chance; at `shots` (None: largest k
    the task was run at)."""
    sub = long[long["mode"] == mode]
    if shots is None:
        best = sub.groupby("task")["shots"].max()
        sub = sub[sub["shots"] == sub["task"].map(best)]
    else:
        sub = sub[(sub["shots"] == shots) | (sub["task"].isin(
            sub.groupby("task")["shots"].max()[lambda s: s == 0].index))]
    wide = sub.pivot_table(index=["trial_id", "params_non_embedding", "flops", "task", "chance"],
                           columns="metric", values="value").reset_index()
    return wide.sort_values(["task", "flops"])


def icl_frame(long, task: str, *, metric="exact_match", mode="direct") -> pd.DataFrame:
    """accuracy vs shots per size: columns params_non_embedding, shots, value."""
    sub = _pick(long, task=task, metric=metric, mode=mode)
    return sub[["params_non_embedding", "shots", "value"]].sort_values(
        ["params_non_embedding", "shots"])


def sc_frame(long, task: str, *, mode="direct", shots: int | None = None):
    """(maj@j frame: params_non_embedding, samples, value; greedy exact match per size)."""
    sub = _pick(long, task=task, mode=mode)
    maj = sub[sub["metric"].str.startswith("maj@")]
    if maj.empty:
        raise AnalysisInputError(f"no self-consistency rows for task {task!r} mode {mode!r}")
    k = maj["shots"].max() if shots is None else shots
    maj = maj[maj["shots"] == k].copy()
    maj["samples"] = maj["metric"].str[4:].astype(int)
    # several trials of one size (token budgets, seeds): their mean, one line per size
    greedy = _pick(sub, shots=k, metric="exact_match").groupby("params_non_embedding")["value"].mean()
    maj = maj.groupby(["params_non_embedding", "samples"], as_index=False)["value"].mean()
    return maj, greedy


def summary_table(long: pd.DataFrame) -> pd.DataFrame:
    """Per size and task: exact match / edit distance / logprob at the largest k (direct),
    ICL gain (exact match at the largest k minus k=0), greedy and maj@max at the SC shot."""
    rows = []
    for (n, task), sub in long.groupby(["params_non_embedding", "task"]):
        d = sub[sub["mode"] == "direct"]
        kmax = d["shots"].max()
        get = lambda m, k, frame=d: frame[(frame.metric == m) & (frame.shots == k)]["value"].mean()  # noqa: E731
        row = {"N": n, "task": task, "k": kmax, "exact_match": get("exact_match", kmax),
               "edit_distance": get("edit_distance", kmax), "logprob": get("logprob", kmax),
               "icl_gain": get("exact_match", kmax) - get("exact_match", 0)}
        for mode in ("direct", "cot"):
            m = sub[(sub["mode"] == mode) & sub["metric"].str.startswith("maj@")]
            if len(m):
                k = m["shots"].max()
                last = m[m.shots == k]["metric"].map(lambda s: int(s[4:])).max()
                row[f"{mode}_greedy@k{k}"] = get("exact_match", k, sub[sub["mode"] == mode])
                row[f"{mode}_maj@{last}"] = m[(m.shots == k) & (m.metric == f"maj@{last}")]["value"].mean()
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- charts (drawing: analysis/plots/abilities.py)

def _sc_choice(long, task, mode):
    """(task, mode) with maj@ rows: the requested pair, else the first such pair, else None."""
    maj = long[long["metric"].astype(str).str.startswith("maj@")]
    if maj.empty:
        return None
    if ((maj["task"] == task) & (maj["mode"] == mode)).any():
        return task, mode
    return maj["task"].iloc[0], maj["mode"].iloc[0]


def plot_sweep_abilities(sweep_dir, outdir=None, *, emergence_task_metric="exact_match",
                         icl_task="icl_mapping", sc_task="addition", sc_mode="cot") -> list[str]:
    """The three charts of a sweep into `outdir` (default SWEEP_DIR/plots); returns paths."""
    long = load_evals(sweep_dir)
    outdir = outdir or os.path.join(sweep_dir, "plots")
    em = emergence_frame(long, metric=emergence_task_metric)
    chance = em.groupby("task")["chance"].first().to_dict()
    paths = save_figure(plot_emergence(em, chance=chance, title="our sweep: largest k, greedy"),
                        outdir, "emergence")
    if icl_task not in set(long["task"]):  # e.g. an arithmetic-only sweep: any k-shot task
        multi = long.groupby("task")["shots"].nunique()
        icl_task = multi[multi > 1].index[0] if (multi > 1).any() else None
    if icl_task is not None:  # a sweep evaluated at one k has no ICL curve
        paths += save_figure(plot_icl(icl_frame(long, icl_task), title=icl_task), outdir, "icl")
    sc = _sc_choice(long, sc_task, sc_mode)
    if sc is not None:  # self-consistency was run
        maj, greedy = sc_frame(long, sc[0], mode=sc[1])
        paths += save_figure(plot_sc(maj, greedy=greedy, title=f"{sc[0]} ({sc[1]})"), outdir, "sc")
    return paths


# ---------------------------------------------------------------------------- published data

OBS = REFERENCE_DIR / "ruan2024_observational_scaling"
SC_FIRST = "gsm8k_cot_self_consistency_8_exact_match,score-first"
SC_MAJ5 = "gsm8k_cot_self_consistency_8_exact_match,maj@5"
GREEDY_COT = "gsm8k_cot_8_exact_match,strict-match"


def obsscaling_sc(models: list[str] | None = None, n_models: int = 6):
    """ObsScaling GSM8K 8-shot CoT: first sample (j=1) vs maj@5, greedy 8-shot CoT as `greedy`.

    Returns (frame: Model, samples, value, flops; greedy: Series by Model). Default models: the
    `n_models` with FLOPs spread evenly in log space among those with all three scores.
    """
    post = pd.read_csv(OBS / "base_llm_post_training_eval.csv")
    bench = pd.read_csv(OBS / "base_llm_benchmark_eval.csv")[["Model", "FLOPs (1E21)"]]
    d = post[["Model", SC_FIRST, SC_MAJ5, GREEDY_COT]].merge(bench, on="Model").dropna()
    d = d[d["FLOPs (1E21)"] > 0].sort_values("FLOPs (1E21)")
    if models is None:
        idx = np.unique(np.linspace(0, len(d) - 1, n_models).round().astype(int))
        d = d.iloc[idx]
    else:
        d = d[d["Model"].isin(models)]
    d = d.assign(flops=d["FLOPs (1E21)"] * 1e21)
    frame = pd.concat([d.assign(samples=1, value=d[SC_FIRST]),
                       d.assign(samples=5, value=d[SC_MAJ5])])[["Model", "samples", "value", "flops"]]
    frame["Model"] = frame["Model"].str.split("/").str[-1]
    greedy = pd.Series(d[GREEDY_COT].to_numpy(), index=d["Model"].str.split("/").str[-1])
    return frame.reset_index(drop=True), greedy


def pythia_icl(task: str = "lambada_openai", step: int = 143000, deduped: int = 0) -> pd.DataFrame:
    """Pythia 0- vs 5-shot accuracy at `step`: columns size, params_nonembedding, shots, value."""
    d = pd.read_csv(REFERENCE_DIR / "pythia_evals" / "pythia_v1_evals.csv")
    d = d[(d["task"] == task) & (d["step"] == step) & (d["deduped"] == deduped)]
    if d.empty:
        raise AnalysisInputError(f"no Pythia rows for task {task!r} at step {step}")
    d = d.sort_values(["params_nonembedding", "num_fewshot"])
    return d.rename(columns={"num_fewshot": "shots", "acc": "value"})[
        ["size", "params_nonembedding", "shots", "value"]].reset_index(drop=True)


# Parameter counts (approximate, from the model cards) for Lu et al.'s base decoder models.
LU_PARAMS = {"gpt2": 124e6, "gpt2-xl": 1.5e9, "EleutherAI/gpt-j-6b": 6e9, "tiiuae/falcon-7b": 7e9,
             "models--llama/7B": 6.7e9, "models--llama/13B": 13e9, "models--llama/30B": 32.5e9,
             "tiiuae/falcon-40b": 40e9, "davinci": 175e9}


def lu_emergence(tasks=("modified_arithmetic", "gsm8k", "tracking_shuffled_objects"),
                 shots: int = 0, prompt_type: str = "closed") -> pd.DataFrame:
    """Lu et al. 2024: exact match and edit distance vs parameters for base models (seed mean).

    Columns: task, model, params, exact_match, edit_distance.
    """
    d = pd.read_csv(REFERENCE_DIR / "lu2024_on_emergence" / "evaluation_scores.csv")
    d["task"] = d["filename"].str.split("/").str[0]
    d = d[d["task"].isin(tasks) & d["model"].isin(LU_PARAMS) & (d["number_of_shots"] == shots)
          & (d["prompt_type"] == prompt_type) & (d["edit_distance"] != -100)
          & (d["exact_match_accuracy"] != -100)]
    if d.empty:
        raise AnalysisInputError(f"no Lu et al. rows for tasks {tasks} at {shots} shots")
    g = d.groupby(["task", "model"])[["exact_match_accuracy", "edit_distance"]].mean().reset_index()
    g["params"] = g["model"].map(LU_PARAMS)
    return g.rename(columns={"exact_match_accuracy": "exact_match"}).sort_values(
        ["task", "params"]).reset_index(drop=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m analysis.abilities SWEEP_DIR", file=sys.stderr)
        return 2
    try:
        for p in plot_sweep_abilities(argv[0]):
            print(f"plot: {p}")
        print_table(summary_table(load_evals(argv[0])), fmt=".3g")
    except AnalysisInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
