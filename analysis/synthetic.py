"""Synthetic sweep directories in the trainer's output format (for tests, demos, notebooks).

The loss follows a known Chinchilla law so fits can be checked against the truth.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.sweeps import store  # the sweep's file layout, so fixtures match real sweeps

__all__ = ["make_synthetic_sweep", "TRUE_LAW", "make_synthetic_abilities_sweep", "ABILITIES_LAW", "ABILITIES_TASK"]

#: the law used by default (Hoffmann-like constants)
TRUE_LAW = {"E": 1.7, "A": 400.0, "B": 410.0, "alpha": 0.34, "beta": 0.28}


def _law(N, D, law):
    return law["E"] + law["A"] / N ** law["alpha"] + law["B"] / D ** law["beta"]


def make_synthetic_sweep(
    outdir: str | os.PathLike,
    *,
    d_models=(64, 128, 192, 256, 384, 512),
    n_layers=(2, 4, 4, 6, 6, 8),
    tokens=(2e7, 5e7, 1.25e8, 3e8, 8e8),
    law: dict | None = None,
    noise: float = 0.01,
    seq_len: int = 256,
    vocab: int = 8192,
    n_log: int = 30,
    seed: int = 0,
    n_failed: int = 1,
    flop_budgets=None,
) -> Path:
    """Write ``outdir/results.{parquet,csv}`` and ``outdir/trials/*/{metrics.jsonl,summary.json,config.json}``.

    One trial per (model size, token budget). Final loss = ``law(N_non_embedding, D)``
    times lognormal noise (sigma ``noise``); each trial's training curve follows
    ``law(N, tokens_seen)`` at ``n_log`` log-spaced steps with a validation line at
    the end. ``n_failed`` extra trials have ``status="failed"`` and NaN losses.
    """
    law = dict(TRUE_LAW if law is None else law)
    rng = np.random.default_rng(seed)
    out = Path(outdir)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    rows = []
    i = 0
    for d, L_ in zip(d_models, n_layers):
        n_ne = 12 * L_ * d * d
        n_tot = n_ne + 2 * vocab * d
        fpt = 6 * n_ne + 12 * L_ * seq_len * d  # our FLOP convention
        budgets = tokens if flop_budgets is None else [float(round(C / fpt)) for C in flop_budgets]
        for T in budgets:
            tid = f"t{i:03d}"
            i += 1
            eps = float(np.exp(rng.normal(0, noise)))
            loss = float(_law(n_ne, T, law) * eps)
            val_loss = float(loss * (1 + 0.002))
            tdir = out / "trials" / tid
            tdir.mkdir(exist_ok=True)
            steps = np.unique(np.geomspace(10, 1000, n_log).astype(int))
            with open(tdir / "metrics.jsonl", "w") as fh:
                for s in steps:
                    seen = T * s / steps[-1]
                    l_s = float(_law(n_ne, seen, law) * eps)
                    fh.write(json.dumps({"step": int(s), "tokens": float(seen), "loss": l_s, "ppl": float(np.exp(l_s)),
                                         "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 1e5, "mfu": 0.3}) + "\n")
                fh.write(json.dumps({"step": int(steps[-1]), "tokens": float(T), "split": "val",
                                     "val_loss": val_loss}) + "\n")
            cfg = {"model": {"d_model": d, "n_layers": L_}, "train": {"tokens": T}}
            (tdir / "config.json").write_text(json.dumps(cfg))
            row = {"trial_id": tid, "model.d_model": d, "model.n_layers": L_, "train.tokens": T,
                   "params_total": n_tot, "params_non_embedding": n_ne, "tokens": T, "flops": fpt * T,
                   "loss": loss, "val_loss": val_loss, "val_ppl": float(np.exp(val_loss)), "wall_s": 1.0,
                   "status": "done"}
            store.write_summary(str(tdir), row)
            rows.append(row)
    for _ in range(n_failed):
        tid = f"t{i:03d}"
        i += 1
        rows.append({"trial_id": tid, "model.d_model": d_models[0], "model.n_layers": n_layers[0],
                     "train.tokens": tokens[0], "params_total": np.nan, "params_non_embedding": np.nan,
                     "tokens": np.nan, "flops": np.nan, "loss": np.nan, "val_loss": np.nan, "val_ppl": np.nan,
                     "wall_s": 0.5, "status": "failed"})
    df = pd.DataFrame(rows)
    store.write_results(str(out), df)
    return out


#: a small-model law for the abilities fixture: losses ~2.4-3.7 over 25k-800k parameters
ABILITIES_LAW = {"E": 1.5, "A": 30.0, "B": 60.0, "alpha": 0.3, "beta": 0.3}
#: the true loss -> exact-match curve of the fixture's "addition" task (chance 0)
ABILITIES_TASK = {"lo": 0.0, "hi": 0.9, "k": 6.0, "L0": 2.9}


def _eval_rows(L: float, rng, noise: float) -> list[dict]:
    """eval.jsonl rows at loss L: addition emerges on ABILITIES_TASK; icl_mapping (chance 0.25)
    improves with shots; cot maj@j rises with j."""
    t = ABILITIES_TASK
    em = float(np.clip(t["lo"] + (t["hi"] - t["lo"]) / (1 + np.exp(-t["k"] * (t["L0"] - L)))
                       + rng.normal(0, noise), 0, 1))
    rows = [{"task": "addition", "mode": "direct", "metric": m, "shots": 4, "value": v, "chance": 0.0}
            for m, v in (("exact_match", em), ("edit_distance", 3 * (1 - em)), ("logprob", -L))]
    for j in (1, 3, 5):
        rows.append({"task": "addition", "mode": "cot", "metric": f"maj@{j}", "shots": 4,
                     "value": float(min(1.0, em * (1 + 0.05 * j))), "chance": 0.0})
    rows.append({"task": "addition", "mode": "cot", "metric": "exact_match", "shots": 4, "value": em,
                 "chance": 0.0})
    for k in (0, 2, 4):
        icl = float(np.clip(0.25 + 0.7 * (k / 4) / (1 + np.exp(-4 * (3.0 - L))) + rng.normal(0, noise), 0, 1))
        rows += [{"task": "icl_mapping", "mode": "direct", "metric": m, "shots": k, "value": v, "chance": 0.25}
                 for m, v in (("exact_match", icl), ("edit_distance", 1 - icl))]
    return rows


def make_synthetic_abilities_sweep(outdir: str | os.PathLike, *, d_models=(32, 48, 64, 96, 128),
                                   n_layers=(2, 2, 3, 3, 4), tokens=(2e6, 5e6, 1.25e7), noise: float = 0.01,
                                   seed: int = 0) -> Path:
    """An abilities sweep on disk: ``results.{parquet,csv}`` with ``eval/...`` columns and
    ``trials/*/{summary.json,eval.jsonl}``. Loss follows :data:`ABILITIES_LAW`; the addition
    task's exact match follows :data:`ABILITIES_TASK` of that loss (plus ``noise``)."""
    rng = np.random.default_rng(seed)
    out = Path(outdir)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    rows = []
    for d, nl in zip(d_models, n_layers):
        n_ne = 12 * nl * d * d
        for T in tokens:
            tid = f"d{d}L{nl}@{T:.3g}"
            loss = float(_law(n_ne, T, ABILITIES_LAW) * np.exp(rng.normal(0, noise / 4)))
            ev = _eval_rows(loss, rng, noise)
            tdir = out / "trials" / tid
            tdir.mkdir(exist_ok=True)
            (tdir / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ev))
            row = {"trial_id": tid, "params_non_embedding": n_ne, "params_total": n_ne + 2 * 256 * d,
                   "tokens": T, "flops": 6.0 * n_ne * T, "loss": loss, "val_loss": loss, "status": "done"}
            store.write_summary(str(tdir), row)
            row.update({f"eval/{r['task']}/{r['mode']}/{r['metric']}@k{r['shots']}": r["value"] for r in ev})
            rows.append(row)
    store.write_results(str(out), pd.DataFrame(rows))
    return out
