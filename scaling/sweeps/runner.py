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
import sys
import time
from typing import Callable

import pandas as pd

from scaling.config import experiment_identity, is_result_key, load_experiment, parse_overrides
from scaling.display import print_table
from scaling.errors import UserError
from scaling.evals.columns import eval_columns
from scaling.sweeps import launchers, store
from scaling.sweeps.plan import Trial, expand, plan_record, same_result

RESULT_COLUMNS = ["trial_id", "params_total", "params_non_embedding", "tokens", "flops", "loss",
                  "val_loss", "val_ppl", "val_bpb", "wall_s", "status"]


def _spent(t: dict, s: dict, trunks: set) -> dict:
    """The wsd columns of a trial's row: its role (trunk / branch / ""), parent and branch step,
    and the compute it spent itself. `tokens`/`flops` of a branch are its true totals (the
    trunk's share up to its branch step included); `tokens_spent`/`flops_spent` are its own
    cooldown's, and a trunk's are its own: summing `flops_spent` over all rows is the sweep's
    true cost."""
    step0 = t.get("branch_step", 0) if t.get("parent") else 0
    steps = s.get("steps")
    share = (steps - step0) / steps if isinstance(steps, int) and steps > 0 else math.nan
    return {"role": "trunk" if t["trial_id"] in trunks else "branch" if t.get("parent") else "",
            "parent": t.get("parent", ""), "branch_step": step0,
            "tokens_spent": s.get("tokens", math.nan) * share,
            "flops_spent": s.get("flops", math.nan) * share}


def collect(workdir: str, plan: dict | None = None) -> pd.DataFrame:
    """One row per trial (done, failed, running or pending) -> results.parquet and results.csv."""
    plan = plan or store.read_plan(workdir)
    rows, trunks = [], {t.get("parent") for t in plan["trials"] if t.get("parent")}
    for t in plan["trials"]:
        tdir = store.trial_dir(workdir, t["trial_id"])
        s = store.read_summary(tdir) or {"status": "running" if store.is_locked(tdir) else "pending"}
        row = {"trial_id": t["trial_id"], **{k: t["overrides"].get(k) for k in plan["varied"]}}
        for col in RESULT_COLUMNS[1:]:
            row[col] = s.get(col, math.nan)
        row.update({k: s.get(k, math.nan) for k in (
            "steps", "warmup_steps", "tokens_per_param", "tokens_per_param_ne", "epochs",
            "params_active", "params_non_embedding_active", "moe_experts",
            "val_loss_se", "bpb", "tokens_per_s", "mfu")})
        row.update(_spent(t, s, trunks))
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


def same_experiment(old: dict, new: dict) -> bool:
    """Whether two plans (sweep.json records) are one experiment: the same file (by realpath,
    however it was typed; a legacy plan's relative path is taken from the cwd), the same ARG
    and the same overrides of keys that change results (log/checkpoint/mesh ones may differ)."""
    def identity(plan: dict):
        exp = plan.get("experiment")
        if isinstance(exp, dict) and "path" in exp:
            where = (exp["path"], exp.get("arg"))
        else:  # written by an older version: only the --config string was kept
            where = experiment_identity(plan.get("config"))
        items = plan.get("overrides")
        try:
            overrides = {k: v for k, v in parse_overrides(items).items() if is_result_key(k)}
        except (UserError, TypeError, AttributeError):  # not a list of KEY=VALUE strings
            overrides = items
        return where, overrides
    return identity(old) == identity(new)


def _write_plan(workdir: str, plan: dict) -> None:
    """Create the workdir and write its plan; refuse a workdir that holds another experiment."""
    try:
        os.makedirs(os.path.join(workdir, "trials"), exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create sweep workdir {workdir!r} ({e.strerror}); "
                        f"pass a writable --workdir") from e
    if store.has_plan(workdir):
        old = store.read_plan(workdir)
        if not same_experiment(old, plan):
            raise UserError(f"{workdir!r} holds a sweep of another experiment "
                            f"({old.get('config') or 'default'} {' '.join(old.get('overrides', []))}); "
                            f"use a new --workdir")
    store.write_plan(workdir, plan)


def _adopt_legacy_dirs(workdir: str, trials: list[Trial]) -> None:
    """Trial dirs named by an older version's ids take their current ids: by the legacy id
    rule, else by content (a dir outside the plan whose config.json is the same run as a planned
    trial without a dir, `plan.same_result`). Renames go through store.adopt_legacy (locked)."""
    for t in trials:
        if store.adopt_legacy(workdir, t.trial_id, t.legacy_id):
            print(f"{t.trial_id}: found as {t.legacy_id} (an older trial id); renamed", flush=True)
    planned = {t.trial_id for t in trials}
    root = os.path.join(workdir, "trials")
    strays = sorted(n for n in os.listdir(root) if n not in planned
                    and not os.path.islink(os.path.join(root, n)))
    missing = [t for t in trials if not os.path.lexists(store.trial_dir(workdir, t.trial_id))]
    for name in strays:
        saved = store.read_json(os.path.join(root, name, "config.json"))
        match = next((t for t in missing if isinstance(saved, dict) and same_result(saved, t.cfg)),
                     None)
        if match is not None and store.adopt_legacy(workdir, match.trial_id, name):
            missing.remove(match)
            print(f"{match.trial_id}: found as {name} (same run under an older id); renamed",
                  flush=True)


def devices_per_trial(launcher: str, parallel: int) -> list[int]:
    """How many devices one trial will see, for checking every grid point against the mesh
    before anything trains ([] when unknown here: SLURM jobs run on other machines)."""
    if launcher == "slurm":
        return []
    gpus = launchers.visible_gpus() if parallel > 1 else []
    if gpus:  # each worker gets its own GPUs; never start a GPU backend in this process
        return sorted({len(gpus[k::parallel]) for k in range(parallel)})
    import jax
    return [jax.device_count()]


def outcome(df: pd.DataFrame, workdir: str) -> tuple[int, list[str]]:
    """The sweep's exit code and closing lines from its results table.

    0: every trial done, or the rest still running in another process (a note says so);
    1: a trial failed or did not run. (2, bad input, is raised as a UserError before training.)
    """
    ids = {s: list(df.loc[df["status"] == s, "trial_id"]) for s in ("failed", "pending", "running")}
    n, lines = len(df), []
    failed, pending, running = ids["failed"], ids["pending"], ids["running"]
    see = os.path.join(workdir, "trials", failed[0] if failed else "<id>", "error.txt")
    if failed and len(failed) == n:
        lines.append(f"error: all {n} trials failed; see {see}")
    elif failed:
        lines.append(f"error: {len(failed)} of {n} trials failed: {_some(failed)}; see "
                     f"{os.path.join(workdir, 'trials', '<id>', 'error.txt')} "
                     f"(rerun with --retry-failed after fixing)")
    if pending:
        lines.append(f"error: {len(pending)} of {n} trials did not run: {_some(pending)}; rerun "
                     f"`scaling sweep` to train them")
    if running:
        lines.append(f"note: {len(running)} trial(s) still running in another process; rerun "
                     f"`scaling sweep` (or `scaling status {workdir}`) later")
    return (1 if failed or pending else 0), lines


def _some(ids: list[str], k: int = 5) -> str:
    return ", ".join(ids[:k]) + (f" and {len(ids) - k} more" if len(ids) > k else "")


def run_sweep(spec: str | None, overrides: list[str], workdir: str, *,
              retry_failed: bool = False, plan_only: bool = False, launcher: str = "local",
              parallel: int = 1, slurm: dict | None = None, wait: bool = True,
              group_size: int = 1,
              on_plan: Callable[[list[Trial]], None] | None = None,
              on_done: Callable[[pd.DataFrame], None] | None = None) -> int:
    """Run all unfinished trials with a launcher (scaling/sweeps/launchers.py), then collect the
    table (results.parquet/csv). Returns the exit code (see `outcome`; 0 for a dry run or
    `--no-wait`). `on_plan(trials)` runs before anything is written (warnings), `on_done(table)`
    after the table is collected (the report); neither changes the exit code. `group_size`:
    the most trials trained as one vectorised group (local launcher, one device; 1 = off;
    scaling/train/group.py); with --parallel N it is capped so that every worker gets a group."""
    if launcher not in ("local", "slurm"):
        raise UserError(f"unknown --launcher {launcher!r}; use local or slurm")
    if parallel < 1:
        raise UserError(f"--parallel must be >= 1, got {parallel}")
    if group_size < 1:
        raise UserError(f"--group-size must be >= 1, got {group_size}")
    trials, varied = expand(spec, overrides, devices_per_trial(launcher, parallel))
    if on_plan is not None:
        on_plan(trials)
    if plan_only:
        return _print_dry_run(trials)
    slurm_opts = {**_experiment_slurm(spec), **{k: v for k, v in (slurm or {}).items()
                                                if v is not None}}
    plan = plan_record(spec, overrides, trials, varied)
    _write_plan(workdir, plan)
    _adopt_legacy_dirs(workdir, trials)
    if retry_failed:
        for tid in store.reset_failed(workdir, [t.trial_id for t in trials]):
            print(f"{tid}: failed before, retrying", flush=True)

    print(f"sweep: {len(trials)} trials in {workdir}", flush=True)
    if launcher == "slurm":
        launchers.run_slurm(workdir, trials, slurm_opts, wait=wait)
        if not wait:
            return 0
    elif parallel > 1:
        launchers.run_parallel(workdir, parallel,
                               group_size=min(group_size, -(-len(trials) // parallel)))
    else:
        launchers.run_local(workdir, trials, group_size)
    df = collect(workdir, plan)
    if on_done is not None:
        on_done(df)
    code, lines = outcome(df, workdir)
    for line in lines:
        print(line, file=sys.stderr if line.startswith("error:") else sys.stdout, flush=True)
    return code


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
