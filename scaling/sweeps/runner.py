"""Expand an experiment into trials, run them with a launcher (launchers.py), collect the table.

Trial id = `<readable name>-<hash>` where the hash is of the resolved config: the same experiment
always yields the same ids, so a rerun skips finished trials and a changed config is a new trial.
Layout: DIR/sweep.json (the plan), DIR/trials/<trial_id>/{config,metrics,summary...},
DIR/results.parquet + results.csv, DIR/plots/, DIR/fit.json.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass

import pandas as pd

from scaling.config import ConfigDict, apply_overrides, load_experiment, parse_overrides, resolve
from scaling.errors import UserError
from scaling.evals.columns import eval_columns
from scaling.fileio import read_jsonl, write_json_atomic

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


def read_plan(workdir: str) -> dict:
    """The sweep's plan (`sweep.json`): trial ids, their grid points and the varied keys."""
    path = os.path.join(workdir, "sweep.json")
    if not os.path.exists(path):
        raise UserError(f"{workdir!r} is not a sweep directory (no sweep.json); "
                        f"run `scaling sweep --workdir {workdir}` first")
    with open(path) as f:
        return json.load(f)


def collect(workdir: str, plan: dict | None = None) -> pd.DataFrame:
    """One row per trial (done, failed, running or pending) -> results.parquet and results.csv."""
    plan = plan or read_plan(workdir)
    rows = []
    for t in plan["trials"]:
        tdir = os.path.join(workdir, "trials", t["trial_id"])
        s = _read_summary(tdir) or {"status": "running" if is_locked(tdir) else "pending"}
        row = {"trial_id": t["trial_id"], **{k: t["overrides"].get(k) for k in plan["varied"]}}
        for col in RESULT_COLUMNS[1:]:
            row[col] = s.get(col, math.nan)
        row.update({k: s.get(k, math.nan) for k in ("steps", "tokens_per_s", "mfu")})
        row["error"] = s.get("error", "")
        row.update(eval_columns(tdir))  # task metrics (scaling/evals), if the trial has eval.jsonl
        rows.append(row)
    df = pd.DataFrame(rows)
    tmp = os.path.join(workdir, "results.parquet.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, os.path.join(workdir, "results.parquet"))
    df.to_csv(tmp, index=False)
    os.replace(tmp, os.path.join(workdir, "results.csv"))
    return df


def dry_run(trials: list[Trial], probe_steps: int = 3) -> pd.DataFrame:
    """The plan with N, D, C and a time estimate from a short throughput probe per model shape."""
    import jax
    from scaling import counting
    from scaling.parallel import mesh as mesh_lib
    from scaling.data import TokenBatches
    from scaling.train.loop import Trainer

    rates: dict[str, float] = {}
    rows = []
    for t in trials:
        cfg = t.cfg
        shape = json.dumps([cfg.model.to_dict(), cfg.train.batch_size, cfg.train.seq_len,
                            cfg.mesh.to_dict()], sort_keys=True)
        if shape not in rates:  # compile + a few steps; seconds per model shape
            mesh = mesh_lib.make_mesh(cfg.mesh)
            mesh_lib.check_divisibility(cfg, mesh)
            trainer, data = Trainer(cfg, mesh), TokenBatches(cfg, cfg.data.train_split)
            state = trainer.init(cfg.train.seed)
            state, m = trainer.step(state, trainer.global_batch(data.batch(0)))
            jax.block_until_ready(m)
            t0 = time.perf_counter()
            for i in range(1, probe_steps + 1):
                state, m = trainer.step(state, trainer.global_batch(data.batch(i)))
            jax.block_until_ready(m)
            rates[shape] = (time.perf_counter() - t0) / probe_steps
        d = counting.describe(cfg)
        rows.append({"trial_id": t.trial_id, "params_non_embedding": d["params_non_embedding"],
                     "params_total": d["params_total"], "tokens": d["tokens"],
                     "flops": d["flops"], "steps": cfg.train.steps,
                     "est_s": rates[shape] * cfg.train.steps})
    return pd.DataFrame(rows)


def run_sweep(spec: str | None, overrides: list[str], workdir: str, *,
              retry_failed: bool = False, plan_only: bool = False, launcher: str = "local",
              parallel: int = 1, slurm: dict | None = None, wait: bool = True) -> int:
    """Run all unfinished trials with a launcher (scaling/sweeps/launchers.py); then collect and
    print the table, the fit and the plot paths. Returns the exit code."""
    from scaling.sweeps import launchers

    trials, varied = expand(spec, overrides)
    if plan_only:
        df = dry_run(trials)
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(df.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        print(f"{len(df)} trials, {df['flops'].sum():.3g} FLOPs, estimated "
              f"{df['est_s'].sum() / 60:.1f} min of training (excluding start-up)")
        return 0
    if launcher not in ("local", "slurm"):
        raise UserError(f"unknown --launcher {launcher!r}; use local or slurm")
    if parallel < 1:
        raise UserError(f"--parallel must be >= 1, got {parallel}")
    slurm_opts = {**_experiment_slurm(spec), **{k: v for k, v in (slurm or {}).items()
                                                if v is not None}}
    try:
        os.makedirs(os.path.join(workdir, "trials"), exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create sweep workdir {workdir!r} ({e.strerror})") from e
    plan = {"config": spec, "overrides": overrides, "varied": varied,
            "trials": [{"trial_id": t.trial_id, "overrides": t.overrides} for t in trials]}
    if os.path.exists(os.path.join(workdir, "sweep.json")):
        old = read_plan(workdir)
        if (old.get("config"), old.get("overrides")) != (spec, overrides):
            raise UserError(f"{workdir!r} holds a sweep of another experiment "
                            f"({old.get('config') or 'default'} {' '.join(old.get('overrides', []))}); "
                            f"use a new --workdir")
    write_json_atomic(os.path.join(workdir, "sweep.json"), plan)
    if retry_failed:
        for tid in launchers.reset_failed(workdir, [t.trial_id for t in trials]):
            print(f"{tid}: failed before, retrying", flush=True)

    n = len(trials)
    print(f"sweep: {n} trials in {workdir}", flush=True)
    if launcher == "slurm":
        launchers.run_slurm(workdir, trials, slurm_opts, wait=wait)
        if not wait:
            return 0
    elif parallel > 1:
        launchers.run_parallel(workdir, parallel)
    else:
        for k, t in enumerate(trials, 1):
            tdir = os.path.join(workdir, "trials", t.trial_id)
            what = launchers.claim_and_run(t.cfg, tdir, f"{k}/{n} {t.trial_id}", progress=True)
            if what == "finished":
                status = (_read_summary(tdir) or {}).get("status")
                print(f"[{k}/{n}] {t.trial_id}: {status} (skipped)", flush=True)
            elif what == "locked":
                print(f"[{k}/{n}] {t.trial_id}: running in another process (skipped)", flush=True)

    df = collect(workdir, plan)
    report(workdir, df)
    return 0 if (df["status"] == "done").all() else 1


def _experiment_slurm(spec: str | None) -> dict:
    """Optional `get_slurm(arg)` in the experiment file: SLURM options (partition, time, gpus,
    cpus, mem_gb, array_parallelism, account, qos, or raw submitit `slurm_*` keys)."""
    module, arg = load_experiment(spec)
    if not hasattr(module, "get_slurm"):
        return {}
    opts = module.get_slurm(arg)
    if not isinstance(opts, dict):
        raise UserError(f"get_slurm() in {spec!r} must return a dict")
    return opts


@contextlib.contextmanager
def trial_lock(tdir: str):
    """An exclusive, non-blocking flock on `<trial>/.lock`: yields False if another process
    holds it. The OS drops the lock when its holder dies, so a killed sweep never leaves a
    stale lock behind."""
    os.makedirs(tdir, exist_ok=True)
    fd = os.open(os.path.join(tdir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def is_locked(tdir: str) -> bool:
    if not os.path.exists(os.path.join(tdir, ".lock")):
        return False
    with trial_lock(tdir) as got:
        return not got


def status_table(workdir: str) -> pd.DataFrame:
    """Progress of every trial: status, step/steps, latest loss, tokens/s and ETA."""
    plan = read_plan(workdir)
    rows = []
    for t in plan["trials"]:
        tdir = os.path.join(workdir, "trials", t["trial_id"])
        s = _read_summary(tdir) or {}
        lines = [r for r in read_jsonl(os.path.join(tdir, "metrics.jsonl")) if "loss" in r]
        last = lines[-1] if lines else {}
        steps = _planned_steps(tdir, s)
        step = s.get("steps", last.get("step", 0)) if s.get("status") == "done" else last.get("step", 0)
        status = s.get("status") or ("running" if is_locked(tdir) else
                                     "interrupted" if lines else "pending")
        tps = last.get("tokens_per_s", math.nan)
        tokens_left = (steps - step) * (last.get("tokens", 0) / max(step, 1)) if steps else math.nan
        eta = tokens_left / tps if status in ("running", "interrupted") and tps > 0 else math.nan
        rows.append({"trial_id": t["trial_id"], "status": status, "step": step, "steps": steps,
                     "progress": step / steps if steps else math.nan,
                     "loss": last.get("loss", math.nan), "val_loss": s.get("val_loss", math.nan),
                     "tokens_per_s": tps, "eta_s": eta})
    return pd.DataFrame(rows)


def _planned_steps(tdir: str, summary: dict) -> int:
    if "steps" in summary:
        return summary["steps"]
    path = os.path.join(tdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)["train"]["steps"]
    return 0


def report(workdir: str, df: pd.DataFrame) -> None:
    """Print the table, fit Chinchilla's law when the grid allows, draw the plots."""
    from analysis.fits import chinchilla as chinchilla
    from analysis.guardrails import check_sweep, format_warnings
    from analysis.plots import sweep as plots

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
    warns = check_sweep(df, fit)  # one line each on stderr, and stored in fit.json
    if warns:
        print(format_warnings(warns), file=sys.stderr, flush=True)
    if fit is not None:
        fit["warnings"] = [w.to_dict() for w in warns]
        write_json_atomic(os.path.join(workdir, "fit.json"), fit)
        print("Chinchilla fit L(N,D) = E + A/N^alpha + B/D^beta (N non-embedding, val loss): "
              + ", ".join(f"{k}={fit[k]:.4g}" for k in ("E", "A", "B", "alpha", "beta")))
    paths = plots.plot_sweep(df, os.path.join(workdir, "plots"), fit=fit)
    print(f"results: {os.path.join(workdir, 'results.parquet')}")
    for p in paths:
        print(f"plot: {p}")
