"""Expand an experiment into trials, run them one after another, collect the results table.

Trial id = `<readable name>-<hash>` where the hash is of the resolved config: the same experiment
always yields the same ids, so a rerun skips finished trials and a changed config is a new trial.
Layout: DIR/sweep.json (the plan), DIR/trials/<trial_id>/{config,metrics,summary...},
DIR/results.parquet + results.csv, DIR/plots/, DIR/fit.json.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import traceback
from dataclasses import dataclass

import pandas as pd
from tqdm.auto import tqdm

from scaling.config import ConfigDict, apply_overrides, load_experiment, parse_overrides, resolve
from scaling.errors import UserError
from scaling.metrics import write_json_atomic

SHORT = {"d_model": "d", "n_layers": "L", "n_heads": "h", "n_kv_heads": "kv", "tokens": "tok",
         "steps": "s", "batch_size": "b", "seq_len": "T", "lr": "lr", "budget": "C"}
RESULT_COLUMNS = ["trial_id", "params_total", "params_non_embedding", "tokens", "flops", "loss",
                  "val_loss", "val_ppl", "wall_s", "status"]


@dataclass
class Trial:
    trial_id: str
    overrides: dict      # the grid point (dotted keys)
    cfg: ConfigDict      # resolved


def _fmt(v) -> str:
    if isinstance(v, float) or (isinstance(v, int) and abs(v) >= 10_000):
        return f"{v:.3g}".replace("+", "")
    return str(v)


def trial_id(cfg: ConfigDict, point: dict) -> str:
    """Readable name from the grid point plus a hash of the whole resolved config."""
    digest = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    parts = [SHORT.get(k.split(".")[-1], k.split(".")[-1]) + _fmt(v) for k, v in point.items()]
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(parts))[:80]  # never a path separator
    return f"{name}-{digest}" if name else digest


def expand(spec: str | None, overrides: list[str]) -> tuple[list[Trial], list[str]]:
    """Resolve every trial up front, so a bad grid point fails before anything is written."""
    module, arg = load_experiment(spec)
    base = module.get_config(arg)
    apply_overrides(base, parse_overrides(overrides))
    # `sweep.*` keys label grid points (e.g. an IsoFLOP budget) without being config fields.
    points = module.get_sweep(arg) if hasattr(module, "get_sweep") else [{}]
    if not points:
        raise UserError(f"get_sweep() in {spec!r} returned no trials")
    trials, seen = [], set()
    for point in points:
        cfg = ConfigDict(base.to_dict())
        try:
            apply_overrides(cfg, {k: v for k, v in point.items() if not k.startswith("sweep.")})
            cfg = resolve(cfg)
        except UserError as e:
            raise UserError(f"sweep point {point}: {e}") from e
        tid = trial_id(cfg, point)
        if tid not in seen:  # identical configs are one trial
            seen.add(tid)
            trials.append(Trial(tid, point, cfg))
    varied = sorted({k for t in trials for k in t.overrides})
    return trials, varied


def _read_summary(tdir: str) -> dict | None:
    path = os.path.join(tdir, "summary.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError:
        return None


def collect(workdir: str, trials: list[Trial], varied: list[str]) -> pd.DataFrame:
    """One row per trial (done, failed or pending) -> results.parquet and results.csv."""
    rows = []
    for t in trials:
        s = _read_summary(os.path.join(workdir, "trials", t.trial_id)) or {"status": "pending"}
        row = {"trial_id": t.trial_id, **{k: t.overrides.get(k) for k in varied}}
        for col in RESULT_COLUMNS[1:]:
            row[col] = s.get(col, math.nan)
        row.update({k: s.get(k, math.nan) for k in ("steps", "tokens_per_s", "mfu")})
        row["error"] = s.get("error", "")
        rows.append(row)
    df = pd.DataFrame(rows)
    tmp = os.path.join(workdir, "results.parquet.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, os.path.join(workdir, "results.parquet"))
    df.to_csv(tmp, index=False)
    os.replace(tmp, os.path.join(workdir, "results.csv"))
    return df


def run_sweep(spec: str | None, overrides: list[str], workdir: str, *,
              retry_failed: bool = False) -> int:
    """Run all unfinished trials; print the table, the fit and the plot paths. Returns exit code."""
    from scaling.train import train  # heavy imports only once the plan is valid

    trials, varied = expand(spec, overrides)
    try:
        os.makedirs(os.path.join(workdir, "trials"), exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create sweep workdir {workdir!r} ({e.strerror})") from e
    plan = {"config": spec, "overrides": overrides, "varied": varied,
            "trials": [{"trial_id": t.trial_id, "overrides": t.overrides} for t in trials]}
    write_json_atomic(os.path.join(workdir, "sweep.json"), plan)

    n = len(trials)
    print(f"sweep: {n} trials in {workdir}", flush=True)
    for k, t in enumerate(trials, 1):
        tdir = os.path.join(workdir, "trials", t.trial_id)
        done = _read_summary(tdir)
        if done and (done.get("status") == "done" or (done.get("status") == "failed"
                                                       and not retry_failed)):
            print(f"[{k}/{n}] {t.trial_id}: {done['status']} (skipped)", flush=True)
            continue
        bar = tqdm(total=t.cfg.train.steps, desc=f"trial {k}/{n} {t.trial_id}", unit="step",
                   leave=False, mininterval=0.5)
        try:
            s = train(t.cfg, tdir, on_step=lambda step, total: bar.update(step - bar.n),
                      verbose=False)
            print(f"[{k}/{n}] {t.trial_id}: loss {s['loss']:.4f} val_loss {s['val_loss']:.4f} "
                  f"({s['wall_s']:.1f}s, {s['tokens_per_s']:,.0f} tok/s)", flush=True)
        except UserError:
            raise
        except Exception as e:  # record the failure and go on with the next trial
            os.makedirs(tdir, exist_ok=True)
            write_json_atomic(os.path.join(tdir, "summary.json"), {
                "status": "failed", "error": f"{type(e).__name__}: {e}"})
            with open(os.path.join(tdir, "error.txt"), "w") as f:
                f.write(traceback.format_exc())
            print(f"[{k}/{n}] {t.trial_id}: FAILED {type(e).__name__}: {e}", flush=True)
        finally:
            bar.close()

    df = collect(workdir, trials, varied)
    report(workdir, df)
    return 0 if (df["status"] == "done").all() else 1


def report(workdir: str, df: pd.DataFrame) -> None:
    """Print the table, fit Chinchilla's law when the grid allows, draw the plots."""
    from analysis import chinchilla, plots

    cols = ["trial_id", "params_non_embedding", "tokens", "flops", "loss", "val_loss", "wall_s",
            "status"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    done = df[df["status"] == "done"]
    fit = None
    if len(done) >= 5 and done["params_non_embedding"].nunique() >= 2 \
            and done["tokens"].nunique() >= 2:
        fit = chinchilla.fit_parametric(done["params_non_embedding"].to_numpy(float),
                                        done["tokens"].to_numpy(float),
                                        done["val_loss"].to_numpy(float))
        write_json_atomic(os.path.join(workdir, "fit.json"), fit)
        print("Chinchilla fit L(N,D) = E + A/N^alpha + B/D^beta (N non-embedding, val loss): "
              + ", ".join(f"{k}={fit[k]:.4g}" for k in ("E", "A", "B", "alpha", "beta")))
    paths = plots.plot_sweep(df, os.path.join(workdir, "plots"), fit=fit)
    print(f"results: {os.path.join(workdir, 'results.parquet')}")
    for p in paths:
        print(f"plot: {p}")
