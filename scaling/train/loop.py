"""A training run in a workdir: open or resume it, step, log, validate, checkpoint, summarize.

`train(cfg, workdir)` = `_Run(...)` (open the workdir, build the `Trainer`, resume from the
newest readable checkpoint) -> `_Run.loop` (steps, `metrics.jsonl` lines, periodic validation
and checkpoints) -> `_Run.finish` (final validation and checkpoint) -> `summary.json`. Task
evaluations (`eval.tasks`) are the caller's: `scaling.evals.trained.evaluate_trained`.

metrics.jsonl lines:
  - train (every `log.every` steps and the last): `loss` is the MEAN of the finite per-step
    losses since the previous train line (its window), accumulated on device; `bpb` its bits
    per UTF-8 byte (the window's nats / its targets' bytes / ln 2; bytes per token id from
    `TokenBatches.token_bytes_V`; a mixture's task rows count like corpus rows); `lr` and
    `grad_norm` are the window's last step's; `epochs` = corpus tokens so far / train-split tokens.
  - val (`split: "val"`, every `eval.every` steps and at the end): `val_loss` over a fixed
    sample of `eval.batches` batches spread evenly over the whole validation split
    (`TokenBatches.spread_batch`), and `val_loss_se`, its standard error (sample std of the
    per-sequence losses / sqrt(number of sequences)); `val_bpb`, bits per byte of that sample.
  - config_change (`event: "config_change"`, at the resume step): resume-compatible config
    fields changed on resume (`scaling.train.workdir.RESUMABLE`), as {key: [old, new]}.
The data order is a pure function of (seed, step), so a restored step is all the iterator needs.

Around the run: an exclusive lock on the workdir (`store.trial_lock`; not taken again when this
process holds it: a sweep launcher), SIGTERM -> checkpoint of the current step and exit 143 (`signals`), periodic
checkpoints every `checkpoint.every` steps and `checkpoint.every_minutes` minutes, and a full or
read-only disk as one line (`workdir.disk_errors`).
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scaling import counting
from scaling.config import ConfigDict, checkpoint_steps, resolve, to_json
from scaling.data import TokenBatches
from scaling.data.mixture import corpus_share
from scaling.fileio import JsonlWriter, json_safe, read_jsonl, write_json_atomic
from scaling.parallel import distributed
from scaling.sweeps.store import held_here, read_summary, trial_lock, write_summary
from scaling.parallel import gpipe as pipeline
from scaling.parallel import mesh as mesh_lib
from scaling.train import checkpoint, sinks
from scaling.train.mfu import peak_flops
from scaling.train.schedule import check_schedule, decay_start, warmup_steps
from scaling.train.signals import StopRequest, TrainingStopped
from scaling.train.step import Trainer
from scaling.train.workdir import check_workdir, create_workdir, disk_errors

__all__ = ["train", "TrainingError", "TrainingStopped", "summary_text", "check_workdir",
           "create_workdir", "SKIP_LIMIT"]


class TrainingError(RuntimeError):
    """Training failed while running (exit code 1), e.g. a non-finite loss."""


# nan_policy=skip (or spike skipping): a run fails once this many consecutive updates, counted in
# whole logging windows that were skipped entirely, were skipped: its parameters are most likely
# no longer finite (an lr that blew them up) and every later update would be skipped as well.
SKIP_LIMIT = 10


# ---------------------------------------------------------------------------- workdir and summary

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


@contextlib.contextmanager
def _workdir_lock(workdir: str, is_main: bool):
    """The workdir's exclusive lock for the whole run (process 0 of a multi-process run takes
    it, unless its caller holds it already: a sweep launcher); another process training there
    is a one-line `TrainingError`."""
    if not is_main or held_here(workdir):
        yield
        return
    with trial_lock(workdir) as got:
        if not got:
            raise TrainingError(f"another process is training in {workdir}")
        yield


# ---------------------------------------------------------------------------- the logging window

LN2 = math.log(2)


def bits_per_byte(loss: float, bytes_per_token: float) -> float:
    """Nats per token -> bits per UTF-8 byte of text (loss * tokens / bytes / ln 2)."""
    return loss / bytes_per_token / LN2


def _batch_bytes(tokens_BT1: jax.Array, bytes_V: jax.Array) -> jax.Array:
    """Bytes of text the batch's targets stand for (`TokenBatches.token_bytes_V`), int32."""
    return bytes_V[tokens_BT1[:, 1:]].sum()


def _accumulate(acc: dict, loss: jax.Array, tokens_BT1: jax.Array, bytes_V: jax.Array) -> dict:
    """Add one step's loss and target bytes per token to the window's sums over its finite
    steps, and count them, on device."""
    finite = jnp.isfinite(loss)
    bpt = _batch_bytes(tokens_BT1, bytes_V).astype(jnp.float32) / tokens_BT1[:, 1:].size
    return {"sum": acc["sum"] + jnp.where(finite, loss, 0.0),
            "n": acc["n"] + finite.astype(jnp.int32),
            "bpt": acc["bpt"] + jnp.where(finite, bpt, 0.0)}


class _Window:
    """The steps since the last train line: their loss and bytes-per-token sums (on device,
    `accumulate` = a jitted `_accumulate` with the byte table bound) and their timing.

    The first step of a process compiles, so the clock starts at its end; `timed` counts the
    steps after that (and after any validation pause) whose time is measured."""

    def __init__(self, zero: dict, accumulate: Callable):
        self.zero, self.acc, self.accumulate = zero, zero, accumulate
        self.t0, self.timed = None, 0

    def add(self, metrics: dict, tokens_BT1: jax.Array) -> None:
        self.acc = self.accumulate(self.acc, metrics["loss"], tokens_BT1)
        if self.t0 is None:
            jax.block_until_ready(metrics)
            self.restart_clock()
        else:
            self.timed += 1

    def restart_clock(self) -> None:
        self.t0, self.timed = time.perf_counter(), 0

    def close(self, metrics: dict) -> tuple[dict, dict, float, int]:
        """(last metrics, the window's sums (host), seconds, timed steps); starts the next
        window. `window_means` turns the sums into the line's loss and bits per byte."""
        m, acc = jax.device_get((metrics, self.acc))  # the only host sync in the loop
        secs, timed = time.perf_counter() - self.t0, self.timed
        self.acc = self.zero
        self.restart_clock()
        return m, acc, secs, timed


def window_means(acc: dict) -> tuple[float, float]:
    """(mean finite loss, its bits per byte) of a closed window's sums."""
    n = int(acc["n"])
    loss = float(acc["sum"]) / n if n else float("nan")
    # mean loss / mean bytes per token = the window's nats / its bytes (equal-sized steps)
    bpb = bits_per_byte(loss, float(acc["bpt"]) / n) if n else float("nan")
    return loss, bpb


# ---------------------------------------------------------------------------- the run

class _Run:
    """One process's view of a run: its data, trainer, state, log and checkpoints."""

    def __init__(self, cfg: ConfigDict, workdir: str, t_start: float):
        """Read-only set-up (mesh and data: their input errors come before any write)."""
        self.cfg, self.workdir, self.t_start = cfg, workdir, t_start
        check_schedule(cfg.train)
        self.save_at = set(checkpoint_steps(cfg))  # e.g. a wsd trunk's branch points
        self.mesh = mesh_lib.make_mesh(cfg.mesh)
        mesh_lib.check_divisibility(cfg, self.mesh)
        n_proc, proc = jax.process_count(), jax.process_index()
        self.train_data = TokenBatches(cfg, cfg.data.train_split, process_index=proc,
                                       process_count=n_proc)
        val_data = TokenBatches(cfg, cfg.data.val_split, process_index=proc, process_count=n_proc)
        n_val = min(cfg.eval.batches, val_data.num_batches)
        self.val_batches = [val_data.spread_batch(i, n_val) for i in range(n_val)]  # fixed sample
        self.is_main = proc == 0
        self.mngr = None

    def open(self, changes: dict) -> None:
        """Open the run in its (created, locked) workdir: trainer, resume or init, config.json
        (after a `config_change` line records `changes`, the resume-compatible edits)."""
        self.prepare(Trainer(self.cfg, self.mesh))
        if not self.restore():
            self.state = self.trainer.init(self.cfg.train.seed)
            if self.cfg.train.init_from:  # its parameters; fresh optimizer state and schedule
                self.state["params"] = checkpoint.init_params(
                    self.cfg.train.init_from, self.trainer.state_sharding["params"])
        self.open_log(changes)

    def prepare(self, trainer: Trainer) -> None:
        """Everything but the state: the trainer (shared by a vectorised group,
        scaling/train/group.py), sizes, the byte table, the log and the checkpoint manager."""
        cfg, workdir = self.cfg, self.workdir
        self.trainer = trainer
        self.tokens_per_step = cfg.train.batch_size * cfg.train.seq_len
        # One epoch = every training window once (TokenBatches cuts the split into windows),
        # counted in corpus tokens: a mixture's task rows never repeat.
        self.epoch_tokens = self.train_data.num_windows * self.train_data.seq_len
        self.corpus_share = corpus_share(cfg.data)
        self.desc = counting.describe(cfg)
        self._bytes_setup()
        self.peak, self.peak_source = peak_flops(cfg.model.dtype)
        # JSON lines are the source of truth; scaling/train/sinks.py mirrors them (TB, W&B).
        self.log = sinks.attach(JsonlWriter(os.path.join(workdir, "metrics.jsonl")), cfg, workdir)
        self.mngr = checkpoint.manager(workdir, cfg)

    def restore(self) -> bool:
        """Resume from the newest readable checkpoint (start, state, prior wall time); False
        (start 0, no state yet) when there is none."""
        restored = checkpoint.restore_latest(self.mngr, self.trainer.abstract_state)
        if restored is None:
            self.start, self.state, self.prior_wall, self.restored = 0, None, 0.0, False
        else:
            self.start, self.state, meta = restored
            self.prior_wall, self.restored = meta["wall_s"], True
        return self.restored

    def open_log(self, changes: dict) -> None:
        """After the state is there: drop log lines past the start, record `changes`, write
        config.json, and start the save and skip bookkeeping."""
        if self.is_main:
            self.log.truncate_after(self.start)  # lines past the checkpoint are redone, never twice
            if changes:
                self.log.write({"step": self.start, "event": "config_change", "changes": changes})
            write_json_atomic(os.path.join(self.workdir, "config.json"),
                              json.loads(to_json(self.cfg)))
        self.last_row = self.val_row = None
        self.saved_step, self.saved_at = (self.start if self.restored else None), time.monotonic()
        # nan_policy=skip bookkeeping: (step, skipped total) at the last train line, streak.
        skipped = int(jax.device_get(self.state["guard"]["skipped"])) if self.restored else 0
        self.skips = (self.start, skipped, 0)

    def _bytes_setup(self) -> None:
        """The byte table on device, the jitted window accumulator, and the bytes per token of
        the fixed validation sample (for bits per byte; global over processes)."""
        repl = self.trainer.replicated
        self.bytes_V = jax.device_put(self.train_data.token_bytes_V.astype(np.int32), repl)
        self.accumulate = functools.partial(jax.jit(_accumulate, out_shardings=repl),
                                            bytes_V=self.bytes_V)
        count = jax.jit(_batch_bytes, out_shardings=repl)
        val_bytes = sum(int(count(self.trainer.global_batch(b), self.bytes_V))
                        for b in self.val_batches)
        val_tokens = len(self.val_batches) * self.cfg.train.batch_size * self.cfg.train.seq_len
        self.val_bytes_per_token = val_bytes / val_tokens

    def wall_s(self) -> float:
        return self.prior_wall + time.perf_counter() - self.t_start

    def check_finite(self, bad_step: int) -> None:
        """nan_policy=abort: stop at the first non-finite step, before it can be checkpointed."""
        if bad_step >= 0 and self.cfg.train.nan_policy == "abort":
            self.mngr.wait_until_finished()
            last = self.mngr.latest_step()
            where = (f"step {last} in {self.workdir}/checkpoints; rerun with a lower "
                     f"--config.train.lr (or --config.train.nan_policy=skip) to resume from it"
                     if last is not None else
                     "none; rerun with a lower --config.train.lr (or "
                     "--config.train.nan_policy=skip)")
            raise TrainingError(f"non-finite loss or gradients at step {bad_step}; last good "
                                f"checkpoint: {where}")

    def check_skips(self, step: int, skipped: int) -> None:
        """Fail once the updates of the last >= SKIP_LIMIT steps (whole logging windows) were
        all skipped: the run would otherwise report `done` with parameters that stopped
        training (e.g. an lr that blew them to inf under nan_policy=skip)."""
        prev_step, prev_skipped, streak = self.skips
        window = step - prev_step
        streak = streak + window if window > 0 and skipped - prev_skipped == window else 0
        self.skips = (step, skipped, streak)
        if streak >= SKIP_LIMIT:
            raise TrainingError(
                f"the last {streak} updates (steps {step - streak + 1}-{step}) were all skipped "
                f"({skipped} skipped in total): the loss or gradients stay non-finite, so the "
                f"parameters are likely no longer finite; start over in a new --workdir with a "
                f"lower train.lr")

    def save(self, step: int) -> None:
        if self.saved_step == step:
            return
        self.check_finite(int(jax.device_get(self.state["guard"]["bad_step"])))
        meta = {"step": step, "seed": self.cfg.train.seed, "wall_s": self.wall_s()}
        checkpoint.save(self.mngr, step, self.state, meta)
        self.saved_step, self.saved_at = step, time.monotonic()
        if self.is_main:
            self.log.sync()

    def poll(self, step: int, stop: StopRequest) -> tuple[bool, bool]:
        """(a stop signal arrived, the checkpoint timer is due) after `step`. A save is
        collective, so with several processes they decide together, at train-line steps only
        (an all-gather there; single-process runs check every step at no cost)."""
        minutes = self.cfg.checkpoint.every_minutes
        flags = np.array([stop.signum is not None,
                          bool(minutes) and time.monotonic() - self.saved_at >= 60 * minutes],
                         dtype=np.int32)
        if jax.process_count() > 1:
            if step % self.cfg.log.every:
                return False, False
            from jax.experimental import multihost_utils
            flags = np.asarray(multihost_utils.process_allgather(flags)).reshape(-1, 2).any(0)
        return bool(flags[0]), bool(flags[1])

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
               "val_bpb": bits_per_byte(val_loss, self.val_bytes_per_token), "val_sequences": n}
        if self.is_main:
            self.log.write(row)
        self.val_row = row
        return row

    def log_train(self, step: int, metrics: dict, window: _Window, verbose: bool) -> None:
        """Close the logging window into one train line."""
        self.write_train(step, *window.close(metrics), verbose)

    def write_train(self, step: int, m: dict, acc: dict, secs: float, timed: int,
                    verbose: bool) -> None:
        """One train line from a closed window: last metrics `m`, sums `acc`, its timing."""
        loss, bpb = window_means(acc)
        self.check_finite(int(m["bad_step"]))
        tokens = step * self.tokens_per_step
        tps = timed * self.tokens_per_step / secs if timed else float("nan")
        fpt = self.desc["flops_per_token"]
        row = {"step": step, "tokens": tokens, "epochs": tokens * self.corpus_share / self.epoch_tokens,
               "loss": loss, "ppl": math.exp(min(loss, 50.0)), "bpb": bpb, "lr": float(m["lr"]),
               "grad_norm": float(m["grad_norm"]), "tokens_per_s": tps,
               "mfu": tps * fpt / self.peak if timed else float("nan")}
        if self.cfg.train.nan_policy == "skip" or self.cfg.train.spike_window > 0:
            row["skipped"] = int(m["skipped"])
        row.update({k: float(v) for k, v in m.items() if k.startswith("moe_")})  # last step's
        if self.is_main:
            self.log.write(row)
            if verbose:
                print(f"step {step}/{self.cfg.train.steps} loss {loss:.4f} tok/s {tps:,.0f} "
                      f"mfu {row['mfu']:.3f}", flush=True)
        self.last_row = row
        self.check_skips(step, int(m["skipped"]))

    def loop(self, on_step: Callable[[int, int], None] | None, verbose: bool,
             stop: StopRequest) -> None:
        """Steps start+1 .. steps: train lines, periodic validation and checkpoints; a stop
        signal saves the step just finished and ends the run (`TrainingStopped`)."""
        cfg, steps = self.cfg, self.cfg.train.steps
        zero = jax.device_put({"sum": np.float32(0), "n": np.int32(0), "bpt": np.float32(0)},
                              self.trainer.replicated)
        window = _Window(zero, self.accumulate)
        for step in range(self.start + 1, steps + 1):
            batch = self.trainer.global_batch(self.train_data.batch(step - 1))
            self.state, metrics = self.trainer.step(self.state, batch)
            window.add(metrics, batch)
            if step % cfg.log.every == 0 or step == steps:
                self.log_train(step, metrics, window, verbose)
            if cfg.eval.every and step % cfg.eval.every == 0 and step != steps:
                self.evaluate(step)
                window.restart_clock()  # validation time is not training throughput
            if (cfg.checkpoint.every and step % cfg.checkpoint.every == 0
                    or step in self.save_at) and step != steps:
                self.save(step)
            if on_step:
                on_step(step, steps)
            if step == steps:
                break  # finish() validates and saves the last step (a stop signal waits for it)
            stopping, due = self.poll(step, stop)
            if stopping or due:
                self.save(step)
                window.restart_clock()  # the save's host copy is not training throughput
            if stopping:
                self.mngr.wait_until_finished()
                if not stop.forward():  # no launcher took the signal: stop here
                    raise TrainingStopped(
                        f"{stop.last} after step {step}: checkpoint saved in "
                        f"{checkpoint.checkpoint_dir(self.workdir)}/{step}; rerun the same "
                        f"command to resume")

    def finish(self) -> dict:
        """Final validation and checkpoint; the summary (not yet written)."""
        cfg, t, desc = self.cfg, self.cfg.train, self.desc
        self.evaluate(t.steps)
        if not math.isfinite(self.val_row["val_loss"]) and self.start < t.steps:
            skipped = int(jax.device_get(self.state["guard"]["skipped"]))
            raise TrainingError(f"validation loss is not finite at the end (step {t.steps}, "
                                f"{skipped} updates skipped): the parameters are no longer "
                                f"finite; start over in a new --workdir with a lower train.lr")
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
            "config_changes": [{"step": r["step"], "changes": r["changes"]} for r in
                               read_jsonl(os.path.join(self.workdir, "metrics.jsonl"))
                               if r.get("event") == "config_change"],
            "skipped_steps": int(jax.device_get(self.state["guard"]["skipped"])),
            "params_total": desc["params_total"],
            "params_non_embedding": desc["params_non_embedding"],
            "params_active": desc["params_active"],
            "params_non_embedding_active": desc["params_non_embedding_active"],
            "moe_experts": self.cfg.model.moe.experts,
            "flops_per_token": desc["flops_per_token"],
            "flops_convention": desc["flops_convention"],
            "tokens": tokens, "flops": desc["flops_per_token"] * tokens,
            "steps": t.steps, "warmup_steps": warmup_steps(t), "schedule": t.schedule,
            "decay_start": decay_start(t),
            "tokens_per_param": tokens / desc["params_total"],
            "tokens_per_param_ne": tokens / desc["params_non_embedding"],
            "epochs": tokens * self.corpus_share / self.epoch_tokens,
            "train_split_tokens": self.epoch_tokens, "corpus_share": self.corpus_share,
            "loss": last["loss"], "ppl": last["ppl"], "bpb": last.get("bpb", math.nan),
            "val_loss": val["val_loss"], "val_loss_se": val["val_loss_se"],
            "val_ppl": val["val_ppl"], "val_bpb": val["val_bpb"],
            "val_sequences": val["val_sequences"],
            "tokens_per_s": last["tokens_per_s"], "mfu": last["mfu"],
            "peak_flops": self.peak, "peak_source": self.peak_source,
            "wall_s": self.wall_s(),
            "devices": jax.device_count(), "mesh": mesh_lib.summary_axes(self.mesh),
            "pipeline_microbatches": n_micro if n_stages > 1 else 1,
            "pipeline_bubble": pipeline.bubble_fraction(n_stages, n_micro),
        }

    def close(self) -> None:
        """Let a started save finish (orbax commits atomically) and release the manager."""
        mngr, self.mngr = self.mngr, None
        if mngr is not None:
            try:
                mngr.wait_until_finished()
            finally:
                mngr.close()


def train(cfg: ConfigDict, workdir: str, *, on_step: Callable[[int, int], None] | None = None,
          verbose: bool = True) -> dict:
    """Train (or resume) the run in `workdir`; returns the summary as written to summary.json.

    A finished run is not retrained (its summary is returned). Task evaluations are not run
    here: see `scaling.evals.trained.evaluate_trained`. Raises `TrainingError` (exit 1) for a
    failure while running, `TrainingStopped` (SystemExit 143) after a stop signal's checkpoint.
    """
    cfg = resolve(cfg)
    distributed.initialize(cfg.distributed)  # before the backend starts; no-op for one process
    cfg.distributed.process_id = -1  # per process, so not part of the shared config.json
    t_start = time.perf_counter()
    changes = check_workdir(cfg, workdir)
    if cfg.train.init_from:
        checkpoint.check_init_from(cfg)  # bad input: before the workdir is created
    done = _done_summary(workdir)
    if done is not None:
        return done
    run = _Run(cfg, workdir, t_start)
    create_workdir(workdir)
    with _workdir_lock(workdir, run.is_main), disk_errors(workdir, TrainingError), \
            StopRequest() as stop:
        done = _done_summary(workdir)  # finished by another process before we took the lock
        if done is not None:
            return done
        try:
            run.open(changes)
            run.loop(on_step, verbose, stop)
            summary = run.finish()
        except BaseException as e:
            with contextlib.suppress(Exception):  # never mask the error with a close failure
                run.close()
            if isinstance(e, TrainingStopped):
                print(f"stopped: {e}", file=sys.stderr, flush=True)
            raise
        run.close()
        return write_summary(workdir, summary) if run.is_main else json_safe(summary)
