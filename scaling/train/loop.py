"""A training run in a workdir: open or resume it, step, log, validate, checkpoint, summarize.

`train(cfg, workdir)` = `_Run(...)` (open the workdir, build the `Trainer`, resume from the
newest readable checkpoint) -> `_Run.loop` (steps, `metrics.jsonl` lines, periodic validation
and checkpoints) -> `_Run.finish` (final validation and checkpoint) -> `summary.json`. Task
evaluations (`eval.tasks`) are the caller's: `scaling.evals.trained.evaluate_trained`.

metrics.jsonl lines:
  - train (every `log.every` steps and the last): `loss` is the MEAN of the finite per-step
    losses since the previous train line (its window), accumulated on device; `lr` and
    `grad_norm` are the window's last step's; `epochs` = tokens so far / train-split tokens.
  - val (`split: "val"`, every `eval.every` steps and at the end): `val_loss` over a fixed
    sample of `eval.batches` batches spread evenly over the whole validation split
    (`TokenBatches.spread_batch`), and `val_loss_se`, its standard error (sample std of the
    per-sequence losses / sqrt(number of sequences)).
The data order is a pure function of (seed, step), so a restored step is all the iterator needs.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scaling import counting
from scaling.config import ConfigDict, resolve, to_json
from scaling.data import TokenBatches
from scaling.errors import UserError
from scaling.fileio import JsonlWriter, json_safe, read_jsonl, write_json_atomic
from scaling.parallel import distributed
from scaling.sweeps.store import read_summary, write_summary
from scaling.parallel import gpipe as pipeline
from scaling.parallel import mesh as mesh_lib
from scaling.train import checkpoint, sinks
from scaling.train.mfu import peak_flops
from scaling.train.optim import warmup_steps
from scaling.train.step import Trainer


class TrainingError(RuntimeError):
    """Training failed while running (exit code 1), e.g. a non-finite loss."""


# ---------------------------------------------------------------------------- workdir and summary

def check_workdir(cfg: ConfigDict, workdir: str) -> None:
    """Read-only: refuse a workdir that holds a different experiment's run."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"workdir {workdir!r} is a file; pass a directory to --workdir")
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old != json.loads(to_json(cfg)):
            raise UserError(f"workdir {workdir!r} holds a run with a different config; "
                            f"use a new --workdir (or delete that one to start over)")


def create_workdir(workdir: str) -> None:
    """Create the workdir (after every input check has passed) and check it is writable."""
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_test.{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise UserError(f"cannot write to workdir {workdir!r} ({e.strerror}); "
                        f"pass a writable --workdir") from e


def summary_text(s: dict) -> str:
    """One human line for a finished run's summary (missing or null numbers as n/a)."""
    def num(key, fmt):
        v = s.get(key)
        return format(v, fmt) if isinstance(v, (int, float)) else "n/a"
    return (f"loss {num('loss', '.4f')} val_loss {num('val_loss', '.4f')} "
            f"({num('wall_s', '.1f')}s, {num('tokens_per_s', ',.0f')} tok/s)")


def _done_summary(workdir: str) -> dict | None:
    summary = read_summary(workdir)  # a damaged summary reads as none: the run resumes
    return summary if summary and summary.get("status") == "done" else None


# ---------------------------------------------------------------------------- the logging window

@jax.jit
def _accumulate(acc: dict, loss: jax.Array) -> dict:
    """Add one step's loss to the window's (sum, count) of finite losses, on device."""
    finite = jnp.isfinite(loss)
    return {"sum": acc["sum"] + jnp.where(finite, loss, 0.0),
            "n": acc["n"] + finite.astype(jnp.int32)}


class _Window:
    """The steps since the last train line: their loss sum (on device) and their timing.

    The first step of a process compiles, so the clock starts at its end; `timed` counts the
    steps after that (and after any validation pause) whose time is measured."""

    def __init__(self, zero: dict):
        self.zero, self.acc = zero, zero
        self.t0, self.timed = None, 0

    def add(self, metrics: dict) -> None:
        self.acc = _accumulate(self.acc, metrics["loss"])
        if self.t0 is None:
            jax.block_until_ready(metrics)
            self.restart_clock()
        else:
            self.timed += 1

    def restart_clock(self) -> None:
        self.t0, self.timed = time.perf_counter(), 0

    def close(self, metrics: dict) -> tuple[dict, float, float, int]:
        """(last metrics, mean finite loss, seconds, timed steps); starts the next window."""
        m, acc = jax.device_get((metrics, self.acc))  # the only host sync in the loop
        loss = float(acc["sum"]) / int(acc["n"]) if int(acc["n"]) else float("nan")
        secs, timed = time.perf_counter() - self.t0, self.timed
        self.acc = self.zero
        self.restart_clock()
        return m, loss, secs, timed


# ---------------------------------------------------------------------------- the run

class _Run:
    """One process's view of a run: its data, trainer, state, log and checkpoints."""

    def __init__(self, cfg: ConfigDict, workdir: str, t_start: float):
        """Open the run: mesh, data, workdir + config.json, trainer, resume or init."""
        self.cfg, self.workdir, self.t_start = cfg, workdir, t_start
        self.mesh = mesh_lib.make_mesh(cfg.mesh)
        mesh_lib.check_divisibility(cfg, self.mesh)
        n_proc, proc = jax.process_count(), jax.process_index()
        self.train_data = TokenBatches(cfg, cfg.data.train_split, process_index=proc,
                                       process_count=n_proc)
        val_data = TokenBatches(cfg, cfg.data.val_split, process_index=proc, process_count=n_proc)
        n_val = min(cfg.eval.batches, val_data.num_batches)
        self.val_batches = [val_data.spread_batch(i, n_val) for i in range(n_val)]  # fixed sample
        self.is_main = proc == 0
        create_workdir(workdir)
        if self.is_main:
            write_json_atomic(os.path.join(workdir, "config.json"), json.loads(to_json(cfg)))

        self.trainer = Trainer(cfg, self.mesh)
        self.tokens_per_step = cfg.train.batch_size * cfg.train.seq_len
        # One epoch = every training window once (TokenBatches cuts the split into windows).
        self.epoch_tokens = self.train_data.num_windows * self.train_data.seq_len
        self.desc = counting.describe(cfg)
        self.peak, self.peak_source = peak_flops(cfg.model.dtype)
        # JSON lines are the source of truth; scaling/train/sinks.py mirrors them (TB, W&B).
        self.log = sinks.attach(JsonlWriter(os.path.join(workdir, "metrics.jsonl")), cfg, workdir)
        self.mngr = checkpoint.manager(workdir, cfg)
        restored = checkpoint.restore_latest(self.mngr, self.trainer.abstract_state)
        if restored is not None:
            self.start, self.state, meta = restored
            self.prior_wall = meta["wall_s"]
        else:
            self.start, self.state, self.prior_wall = 0, self.trainer.init(cfg.train.seed), 0.0
        if self.is_main:
            self.log.truncate_after(self.start)  # lines past the checkpoint are redone, never twice
        self.last_row = self.val_row = None

    def wall_s(self) -> float:
        return self.prior_wall + time.perf_counter() - self.t_start

    def check_finite(self, bad_step: int) -> None:
        """nan_policy=abort: stop at the first non-finite step, before it can be checkpointed."""
        if bad_step >= 0 and self.cfg.train.nan_policy == "abort":
            self.mngr.wait_until_finished()
            last = self.mngr.latest_step()
            where = f"step {last} in {self.workdir}/checkpoints" if last is not None else "none"
            raise TrainingError(f"non-finite loss or gradients at step {bad_step}; last good "
                                f"checkpoint: {where}; lower train.lr or set "
                                f"train.nan_policy=skip")

    def save(self, step: int) -> None:
        self.check_finite(int(jax.device_get(self.state["guard"]["bad_step"])))
        meta = {"step": step, "seed": self.cfg.train.seed, "wall_s": self.wall_s()}
        checkpoint.save(self.mngr, step, self.state, meta)
        if self.is_main:
            self.log.sync()

    def evaluate(self, step: int) -> dict:
        """Validation loss (and its standard error) over the fixed spread sample; logged."""
        params, trainer = self.state["params"], self.trainer
        losses = [trainer.eval_losses(params, trainer.global_batch(b)) for b in self.val_batches]
        per_seq = np.concatenate(jax.device_get(losses)).astype(np.float64)
        n = per_seq.size
        val_loss = float(per_seq.mean())
        se = float(per_seq.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        row = {"step": step, "split": "val", "tokens": step * self.tokens_per_step,
               "val_loss": val_loss, "val_loss_se": se, "val_ppl": math.exp(min(val_loss, 50.0)),
               "val_sequences": n}
        if self.is_main:
            self.log.write(row)
        self.val_row = row
        return row

    def log_train(self, step: int, metrics: dict, window: _Window, verbose: bool) -> None:
        """Close the logging window into one train line."""
        m, loss, secs, timed = window.close(metrics)
        self.check_finite(int(m["bad_step"]))
        tokens = step * self.tokens_per_step
        tps = timed * self.tokens_per_step / secs if timed else float("nan")
        fpt = self.desc["flops_per_token"]
        row = {"step": step, "tokens": tokens, "epochs": tokens / self.epoch_tokens,
               "loss": loss, "ppl": math.exp(min(loss, 50.0)), "lr": float(m["lr"]),
               "grad_norm": float(m["grad_norm"]), "tokens_per_s": tps,
               "mfu": tps * fpt / self.peak if timed else float("nan")}
        if self.cfg.train.nan_policy == "skip" or self.cfg.train.spike_window > 0:
            row["skipped"] = int(m["skipped"])
        if self.is_main:
            self.log.write(row)
            if verbose:
                print(f"step {step}/{self.cfg.train.steps} loss {loss:.4f} tok/s {tps:,.0f} "
                      f"mfu {row['mfu']:.3f}", flush=True)
        self.last_row = row

    def loop(self, on_step: Callable[[int, int], None] | None, verbose: bool) -> None:
        """Steps start+1 .. steps: train lines, periodic validation and checkpoints."""
        cfg, steps = self.cfg, self.cfg.train.steps
        zero = jax.device_put({"sum": np.float32(0), "n": np.int32(0)}, self.trainer.replicated)
        window = _Window(zero)
        for step in range(self.start + 1, steps + 1):
            batch = self.trainer.global_batch(self.train_data.batch(step - 1))
            self.state, metrics = self.trainer.step(self.state, batch)
            window.add(metrics)
            if step % cfg.log.every == 0 or step == steps:
                self.log_train(step, metrics, window, verbose)
            if cfg.eval.every and step % cfg.eval.every == 0 and step != steps:
                self.evaluate(step)
                window.restart_clock()  # validation time is not training throughput
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step != steps:
                self.save(step)
            if on_step:
                on_step(step, steps)

    def finish(self) -> dict:
        """Final validation and checkpoint; the summary (not yet written)."""
        cfg, t, desc = self.cfg, self.cfg.train, self.desc
        self.evaluate(t.steps)
        if self.start < t.steps:
            self.save(t.steps)
        self.mngr.wait_until_finished()
        last, val = self.last_row, self.val_row
        if last is None:  # resumed at the very end: recover the last train line from the log
            last = next(r for r in reversed(read_jsonl(os.path.join(self.workdir, "metrics.jsonl")))
                        if "loss" in r)
        tokens = t.steps * self.tokens_per_step
        n_stages, n_micro = self.mesh.shape["pipeline"], pipeline.num_microbatches(cfg)
        return {
            "status": "done",
            "resumed_from": self.start,  # checkpoint step this process started from (0 = fresh)
            "skipped_steps": int(jax.device_get(self.state["guard"]["skipped"])),
            "params_total": desc["params_total"],
            "params_non_embedding": desc["params_non_embedding"],
            "flops_per_token": desc["flops_per_token"],
            "flops_convention": desc["flops_convention"],
            "tokens": tokens, "flops": desc["flops_per_token"] * tokens,
            "steps": t.steps, "warmup_steps": warmup_steps(t),
            "tokens_per_param": tokens / desc["params_total"],
            "tokens_per_param_ne": tokens / desc["params_non_embedding"],
            "epochs": tokens / self.epoch_tokens, "train_split_tokens": self.epoch_tokens,
            "loss": last["loss"], "ppl": last["ppl"],
            "val_loss": val["val_loss"], "val_loss_se": val["val_loss_se"],
            "val_ppl": val["val_ppl"], "val_sequences": val["val_sequences"],
            "tokens_per_s": last["tokens_per_s"], "mfu": last["mfu"],
            "peak_flops": self.peak, "peak_source": self.peak_source,
            "wall_s": self.wall_s(),
            "devices": jax.device_count(), "mesh": dict(self.mesh.shape),
            "pipeline_microbatches": n_micro if n_stages > 1 else 1,
            "pipeline_bubble": pipeline.bubble_fraction(n_stages, n_micro),
        }

    def close(self) -> None:
        self.mngr.wait_until_finished()  # let a started save finish; orbax commits atomically
        self.mngr.close()


def train(cfg: ConfigDict, workdir: str, *, on_step: Callable[[int, int], None] | None = None,
          verbose: bool = True) -> dict:
    """Train (or resume) the run in `workdir`; returns the summary as written to summary.json.

    A finished run is not retrained (its summary is returned). Task evaluations are not run
    here: see `scaling.evals.trained.evaluate_trained`.
    """
    cfg = resolve(cfg)
    distributed.initialize(cfg.distributed)  # before the backend starts; no-op for one process
    cfg.distributed.process_id = -1  # per process, so not part of the shared config.json
    t_start = time.perf_counter()
    check_workdir(cfg, workdir)
    done = _done_summary(workdir)
    if done is not None:
        return done
    run = _Run(cfg, workdir, t_start)
    try:
        run.loop(on_step, verbose)
        summary = run.finish()
    finally:
        run.close()
    return write_summary(workdir, summary) if run.is_main else json_safe(summary)
