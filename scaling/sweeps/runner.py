"""Run an experiment's sweep: plan it (plan.py), write the plan, run the unfinished trials with a
launcher (launchers.py), collect the results table. Fitting and plotting are not done here: the
CLI calls `analysis.report.report_sweep` afterwards.

Layout (store.py): DIR/sweep.json (the plan), DIR/trials/<trial_id>/{config,metrics,summary...},
DIR/results.parquet + results.csv; the report adds DIR/plots/ and DIR/fit.json.
"""
from __future__ import annotations

import json
import math
import os
import time

import pandas as pd

from scaling.config import load_experiment
from scaling.display import print_table
from scaling.errors import UserError
from scaling.evals.columns import eval_columns
from scaling.sweeps import launchers, store
from scaling.sweeps.plan import Trial, expand, plan_record

RESULT_COLUMNS = ["trial_id", "params_total", "params_non_embedding", "tokens", "flops", "loss",
                  "val_loss", "val_ppl", "wall_s", "status"]


def collect(workdir: str, plan: dict | None = None) -> pd.DataFrame:
    """One row per trial (done, failed, running or pending) -> results.parquet and results.csv."""
    plan = plan or store.read_plan(workdir)
    rows = []
    for t in plan["trials"]:
        tdir = store.trial_dir(workdir, t["trial_id"])
        s = store.read_summary(tdir) or {"status": "running" if store.is_locked(tdir) else "pending"}
        row = {"trial_id": t["trial_id"], **{k: t["overrides"].get(k) for k in plan["varied"]}}
        for col in RESULT_COLUMNS[1:]:
            row[col] = s.get(col, math.nan)
        row.update({k: s.get(k, math.nan) for k in (
            "steps", "warmup_steps", "tokens_per_param", "tokens_per_param_ne", "epochs",
            "val_loss_se", "tokens_per_s", "mfu")})
        row["error"] = s.get("error", "")
        row.update(eval_columns(tdir))  # task metrics (scaling/evals), if the trial has eval.jsonl
        rows.append(row)
    df = pd.DataFrame(rows)
    store.write_results(workdir, df)
    return df


def dry_run(trials: list[Trial], probe_steps: int = 3) -> pd.DataFrame:
    """The plan with N, D, C and a time estimate from a short throughput probe per model shape."""
    import jax
    from scaling import counting
    from scaling.parallel import mesh as mesh_lib
    from scaling.data import TokenBatches
    from scaling.train.step import Trainer

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


def _print_dry_run(trials: list[Trial]) -> int:
    df = dry_run(trials)
    print_table(df)
    print(f"{len(df)} trials, {df['flops'].sum():.3g} FLOPs, estimated "
          f"{df['est_s'].sum() / 60:.1f} min of training (excluding start-up)")
    return 0


def _write_plan(workdir: str, plan: dict) -> None:
    """Create the workdir and write its plan; refuse a workdir that holds another experiment."""
    try:
        os.makedirs(os.path.join(workdir, "trials"), exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create sweep workdir {workdir!r} ({e.strerror})") from e
    if store.has_plan(workdir):
        old = store.read_plan(workdir)
        if (old.get("config"), old.get("overrides")) != (plan["config"], plan["overrides"]):
            raise UserError(f"{workdir!r} holds a sweep of another experiment "
                            f"({old.get('config') or 'default'} {' '.join(old.get('overrides', []))}); "
                            f"use a new --workdir")
    store.write_plan(workdir, plan)


def run_sweep(spec: str | None, overrides: list[str], workdir: str, *,
              retry_failed: bool = False, plan_only: bool = False, launcher: str = "local",
              parallel: int = 1, slurm: dict | None = None, wait: bool = True) -> int:
    """Run all unfinished trials with a launcher (scaling/sweeps/launchers.py), then collect the
    table (results.parquet/csv). Returns the exit code: 0 when every trial is done (or nothing
    was to wait for: a dry run, `--no-wait`), else 1."""
    trials, varied = expand(spec, overrides)
    if plan_only:
        return _print_dry_run(trials)
    if launcher not in ("local", "slurm"):
        raise UserError(f"unknown --launcher {launcher!r}; use local or slurm")
    if parallel < 1:
        raise UserError(f"--parallel must be >= 1, got {parallel}")
    slurm_opts = {**_experiment_slurm(spec), **{k: v for k, v in (slurm or {}).items()
                                                if v is not None}}
    plan = plan_record(spec, overrides, trials, varied)
    _write_plan(workdir, plan)
    if retry_failed:
        for tid in store.reset_failed(workdir, [t.trial_id for t in trials]):
            print(f"{tid}: failed before, retrying", flush=True)

    print(f"sweep: {len(trials)} trials in {workdir}", flush=True)
    if launcher == "slurm":
        launchers.run_slurm(workdir, trials, slurm_opts, wait=wait)
        if not wait:
            return 0
    elif parallel > 1:
        launchers.run_parallel(workdir, parallel)
    else:
        launchers.run_local(workdir, trials)
    df = collect(workdir, plan)
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


def status_table(workdir: str) -> pd.DataFrame:
    """Progress of every trial: status, step/steps, latest loss, tokens/s and ETA."""
    plan = store.read_plan(workdir)
    rows = []
    for t in plan["trials"]:
        tdir = store.trial_dir(workdir, t["trial_id"])
        s = store.read_summary(tdir) or {}
        lines = store.read_metrics(tdir)
        last = lines[-1] if lines else {}
        steps = store.planned_steps(tdir, s)
        step = s.get("steps", last.get("step", 0)) if s.get("status") == "done" else last.get("step", 0)
        status = s.get("status") or ("running" if store.is_locked(tdir) else
                                     "interrupted" if lines else "pending")
        tps = last.get("tokens_per_s", math.nan)
        tokens_left = (steps - step) * (last.get("tokens", 0) / max(step, 1)) if steps else math.nan
        eta = tokens_left / tps if status in ("running", "interrupted") and tps > 0 else math.nan
        rows.append({"trial_id": t["trial_id"], "status": status, "step": step, "steps": steps,
                     "progress": step / steps if steps else math.nan,
                     "loss": last.get("loss", math.nan), "val_loss": s.get("val_loss", math.nan),
                     "tokens_per_s": tps, "eta_s": eta})
    return pd.DataFrame(rows)
