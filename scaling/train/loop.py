"""Train state, the jitted sharded step, the loop, checkpoint/resume and metrics lines.

Read top to bottom: `Trainer` builds the optimizer, the shardings and the jitted functions for one
resolved config on one mesh; `train()` runs a workdir: resume from the latest orbax checkpoint,
step, log `metrics.jsonl`, evaluate, checkpoint, and write `summary.json`.

The train state is a plain pytree {"step", "params", "opt_state"} (params as a pure dict, merged
into the NNX model inside the step), so optax, orbax and shardings see ordinary nested dicts.
The data order is a pure function of (seed, step), so a restored step is all the iterator needs.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import PartitionSpec as P

from scaling import counting
from scaling.parallel import distributed as distributed
from scaling.parallel import mesh as mesh_lib
from scaling.parallel import gpipe as pipeline
from scaling.train import sinks as sinks
from scaling.config import ConfigDict, resolve, to_json
from scaling.data import TokenBatches
from scaling.errors import UserError
from scaling.fileio import JsonlWriter, read_jsonl, write_json_atomic
from scaling.sweeps.store import read_summary, write_summary
from scaling.train.mfu import peak_flops
from scaling.model.transformer import Transformer


class TrainingError(RuntimeError):
    """Training failed while running (exit code 1), e.g. a non-finite loss."""


def optimizer_hparams(t: ConfigDict) -> dict[str, np.ndarray]:
    """The optimizer's numbers (peak lr, schedule lengths, Adam betas, decay, clip) as float32.

    The jitted step takes these as ARGUMENTS rather than closing over them: a Python number in
    the traced function becomes a constant in the HLO, hence part of the persistent compilation
    cache key, so every trial of a sweep with a different token budget (schedule length) or lr
    would recompile an otherwise identical step. As arguments, all trials of one shape share one
    compiled executable (docs/benchmarks.md, "compilation cache").
    """
    warmup = int(t.warmup * t.steps) if t.warmup < 1 else int(t.warmup)
    warmup = min(warmup, t.steps - 1) if t.steps > 1 else 0
    hp = {"lr": t.lr, "warmup": warmup, "decay_steps": max(t.steps, 1),
          "end_lr": t.lr * t.min_lr_ratio, "b1": t.b1, "b2": t.b2,
          "weight_decay": t.weight_decay, "grad_clip": t.grad_clip}
    return {k: np.float32(v) for k, v in hp.items()}


def warmup_cosine(count, hp) -> jax.Array:
    """Linear warmup 0 -> lr over `warmup` steps, then cosine decay to `end_lr` at `decay_steps`.

    The same curve as `optax.warmup_cosine_decay_schedule`, written with array arithmetic so that
    its lengths can be traced values (see `optimizer_hparams`).
    """
    step = jnp.asarray(count, jnp.float32)
    warm_lr = hp["lr"] * step / jnp.maximum(hp["warmup"], 1.0)
    frac = jnp.clip((step - hp["warmup"]) / jnp.maximum(hp["decay_steps"] - hp["warmup"], 1.0),
                    0.0, 1.0)
    cos_lr = hp["end_lr"] + (hp["lr"] - hp["end_lr"]) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    return jnp.where(step < hp["warmup"], warm_lr, cos_lr)


def make_optimizer(t: ConfigDict, hp=None) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warmup and cosine decay to `min_lr_ratio` of the peak; global-norm clip.

    `hp` (from `optimizer_hparams`, possibly traced) supplies the numbers; only the structure
    (whether clipping is on) is read from `t`.
    """
    hp = optimizer_hparams(t) if hp is None else hp
    schedule = lambda count: warmup_cosine(count, hp)  # noqa: E731
    tx = optax.chain(
        optax.clip_by_global_norm(hp["grad_clip"]) if t.grad_clip > 0 else optax.identity(),
        optax.adamw(schedule, b1=hp["b1"], b2=hp["b2"], weight_decay=hp["weight_decay"],
                    mask=_decay_mask))
    return tx, schedule


def _decay_mask(params):
    """Weight-decay matrices and embeddings, not norm scales/biases (GPT-2 / nanoGPT practice).

    Decided by name, since stacked layers give a norm scale the shape [L, D] of a matrix.
    """
    decayed = ("kernel", "embedding", "pos_embed")
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(getattr(k, "key", None) in decayed for k in path), params)


class Trainer:
    """Optimizer, shardings and jitted init/step/eval for one resolved config on one mesh."""

    def __init__(self, cfg: ConfigDict, mesh: jax.sharding.Mesh):
        self.cfg, self.mesh = cfg, mesh
        self.tx, self.schedule = make_optimizer(cfg.train)
        abstract_model = nnx.eval_shape(lambda: Transformer(cfg.model, nnx.Rngs(params=0)))
        self.graphdef, abstract_params = nnx.split(abstract_model, nnx.Param)
        logical = nnx.to_pure_dict(nnx.get_partition_spec(abstract_params))
        abstract = nnx.to_pure_dict(abstract_params)
        param_sh = jax.tree.map(lambda names, a: mesh_lib.logical_sharding(names, a.shape, mesh),
                                logical, abstract, is_leaf=lambda x: isinstance(x, P))
        repl = mesh_lib.replicated(mesh)
        abstract_opt = jax.eval_shape(self.tx.init, abstract)
        opt_sh = optax.tree_map_params(self.tx, lambda _, s: s, abstract_opt, param_sh,
                                       transform_non_params=lambda _: repl)
        abstract_guard = jax.eval_shape(self._guard_init)
        self.state_sharding = {"step": repl, "params": param_sh, "opt_state": opt_sh,
                               "guard": jax.tree.map(lambda _: repl, abstract_guard)}
        self.batch_sharding = mesh_lib.batch_sharding(mesh)
        self.abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": abstract,
             "opt_state": abstract_opt, "guard": abstract_guard}, self.state_sharding)
        self.init = jax.jit(self._init, out_shardings=self.state_sharding)
        # Optimizer numbers travel as (replicated, device-resident) arguments, so the compiled
        # step depends only on shapes and structure and is reused across a sweep's trials.
        self.hparams = jax.device_put(optimizer_hparams(cfg.train), repl)
        self.jit_step = jax.jit(self._step,
                                in_shardings=(self.state_sharding, self.batch_sharding, repl),
                                out_shardings=(self.state_sharding, repl), donate_argnums=0)
        self.eval_loss = jax.jit(self._loss,
                                 in_shardings=(param_sh, self.batch_sharding), out_shardings=repl)

    # -- pure functions (traced once) --
    def _init(self, seed):
        model = Transformer(self.cfg.model, nnx.Rngs(params=jax.random.key(seed)))
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        return {"step": jnp.zeros((), jnp.int32), "params": params,
                "opt_state": self.tx.init(params), "guard": self._guard_init()}

    def _guard_init(self):
        i32 = lambda v: jnp.full((), v, jnp.int32)  # noqa: E731
        return {"bad_step": i32(-1), "skipped": i32(0), "count": i32(0),
                "hist": jnp.zeros((max(self.cfg.train.spike_window, 1),), jnp.float32)}

    def _loss(self, params, tokens_BT1):
        model = nnx.merge(self.graphdef, params)
        n_stages = self.mesh.shape["pipeline"]
        if n_stages == 1:
            logits_BTV = model(tokens_BT1[:, :-1])
        else:  # embed -> GPipe over the stacked blocks -> final norm/head
            x_BTD = pipeline.run_blocks(model.blocks, model.embed_inputs(tokens_BT1[:, :-1]),
                                        n_stages, pipeline.num_microbatches(self.cfg), self.mesh)
            logits_BTV = model.logits(x_BTD)
        return optax.softmax_cross_entropy_with_integer_labels(logits_BTV, tokens_BT1[:, 1:]).mean()

    def step(self, state, tokens_BT1):
        """One jitted optimizer step (donates `state`): returns (new state, metrics)."""
        return self.jit_step(state, tokens_BT1, self.hparams)

    def _step(self, state, tokens_BT1, hp):
        tx, schedule = make_optimizer(self.cfg.train, hp)  # same structure as self.tx
        loss, grads = jax.value_and_grad(self._loss)(state["params"], tokens_BT1)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        grad_norm = optax.tree.norm(grads)
        guard, ok = self._guard(state, loss, grad_norm)
        if self.cfg.train.nan_policy == "skip":  # keep the old params and moments
            keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
            params = jax.tree.map(keep, params, state["params"])
            opt_state = jax.tree.map(keep, opt_state, state["opt_state"])
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state["step"]),
                   "skipped": guard["skipped"], "bad_step": guard["bad_step"]}
        return {"step": state["step"] + 1, "params": params, "opt_state": opt_state,
                "guard": guard}, metrics

    def _guard(self, state, loss, grad_norm):
        """Track non-finite steps and loss spikes; returns (new guard state, update ok?).

        A spike is a loss above mean + `spike_sigmas` * std of the last `spike_window` accepted
        losses (OLMo / MaxText style). The window lives in the train state, so skipping is
        deterministic and survives resume.
        """
        t, g = self.cfg.train, state["guard"]
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        ok = finite
        if t.spike_window:
            hist = g["hist"]
            full = g["count"] >= hist.shape[0]
            spike = full & (loss > hist.mean() + t.spike_sigmas * hist.std())
            ok = finite & ~spike
        write = ok & finite
        hist = jnp.where(write, g["hist"].at[g["count"] % g["hist"].shape[0]].set(loss),
                         g["hist"])
        step1 = state["step"] + 1
        return {"bad_step": jnp.where((g["bad_step"] < 0) & ~finite, step1, g["bad_step"]),
                "skipped": g["skipped"] + (~ok).astype(jnp.int32),
                "count": g["count"] + write.astype(jnp.int32), "hist": hist}, ok

    # -- host helpers --
    def global_batch(self, local_BT1: np.ndarray) -> jax.Array:
        """Assemble the global batch from this process's rows (multi-host ready)."""
        return jax.make_array_from_process_local_data(self.batch_sharding, local_BT1)


def _checkpoint_manager(workdir: str, cfg: ConfigDict) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=cfg.checkpoint.keep, create=True,
                                           enable_async_checkpointing=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 options=options)


def restore_latest(mngr: ocp.CheckpointManager, abstract_state):
    """(step, state, wall_s) from the newest checkpoint that restores, else None.

    orbax only lists committed (atomically finalised) checkpoints; one that is committed but
    damaged (a truncated or deleted file) is skipped with a warning for the one before it, and
    moved aside to `<step>.corrupt` (kept for inspection) so that the step can be saved again.
    """
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 - any failure to read means: try an older one
            print(f"warning: checkpoint {step} in {mngr.directory} is unreadable "
                  f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); trying an older one",
                  file=sys.stderr, flush=True)
            bad = os.path.join(str(mngr.directory), str(step))
            os.replace(bad, f"{bad}.corrupt.{int(time.time())}")
            mngr.reload()
            continue
        return step, restored.state, restored.meta["wall_s"]
    return None


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


def train(cfg: ConfigDict, workdir: str, *, on_step: Callable[[int, int], None] | None = None,
          verbose: bool = True) -> dict:
    """Train (or resume) the run in `workdir`; returns the summary dict (also `summary.json`)."""
    cfg = resolve(cfg)
    distributed.initialize(cfg.distributed)  # before the backend starts; no-op for one process
    cfg.distributed.process_id = -1  # per process, so not part of the shared config.json
    t_start = time.perf_counter()
    check_workdir(cfg, workdir)
    summary = read_summary(workdir)  # a damaged summary reads as none: the run resumes
    if summary and summary.get("status") == "done":
        return summary

    mesh = mesh_lib.make_mesh(cfg.mesh)
    mesh_lib.check_divisibility(cfg, mesh)
    n_proc, proc = jax.process_count(), jax.process_index()
    train_data = TokenBatches(cfg, cfg.data.train_split, process_index=proc, process_count=n_proc)
    val_data = TokenBatches(cfg, cfg.data.val_split, process_index=proc, process_count=n_proc)
    is_main = proc == 0
    create_workdir(workdir)
    if is_main:
        write_json_atomic(os.path.join(workdir, "config.json"), json.loads(to_json(cfg)))

    trainer = Trainer(cfg, mesh)
    t, steps = cfg.train, cfg.train.steps
    tokens_per_step = t.batch_size * t.seq_len
    desc = counting.describe(cfg)
    fpt = desc["flops_per_token"]
    peak, peak_source = peak_flops(cfg.model.dtype)

    # JSON lines are the source of truth; scaling/sinks.py mirrors them (TensorBoard, W&B).
    log = sinks.attach(JsonlWriter(os.path.join(workdir, "metrics.jsonl")), cfg, workdir)
    mngr = _checkpoint_manager(workdir, cfg)
    start, prior_wall = 0, 0.0
    restored = restore_latest(mngr, trainer.abstract_state)
    if restored is not None:
        start, state, prior_wall = restored
    else:
        state = trainer.init(t.seed)
    if is_main:
        log.truncate_after(start)  # lines past the checkpoint are redone, never duplicated

    def save(step: int):
        check_finite(int(jax.device_get(state["guard"]["bad_step"])))
        meta = {"step": step, "seed": t.seed, "wall_s": prior_wall + time.perf_counter() - t_start}
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)))
        if is_main:
            log.sync()

    def evaluate(step: int) -> dict:
        losses = [trainer.eval_loss(state["params"], trainer.global_batch(val_data.batch(i)))
                  for i in range(min(cfg.eval.batches, val_data.num_batches))]
        val_loss = float(np.mean(jax.device_get(losses)))
        row = {"step": step, "split": "val", "tokens": step * tokens_per_step,
               "val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0))}
        if is_main:
            log.write(row)
        return row

    guarded = t.nan_policy == "skip" or t.spike_window > 0

    def check_finite(bad_step: int) -> None:
        """nan_policy=abort: stop at the first non-finite step, before it can be checkpointed."""
        if bad_step >= 0 and t.nan_policy == "abort":
            mngr.wait_until_finished()
            last = mngr.latest_step()
            where = f"step {last} in {workdir}/checkpoints" if last is not None else "none"
            raise TrainingError(f"non-finite loss or gradients at step {bad_step}; last good "
                                f"checkpoint: {where}; lower train.lr or set "
                                f"train.nan_policy=skip")

    last_row, val_row = None, None
    t_window, steps_window = None, 0
    try:
        for step in range(start + 1, steps + 1):
            state, metrics = trainer.step(state, trainer.global_batch(train_data.batch(step - 1)))
            if t_window is None:  # the first step compiles: time from its end
                jax.block_until_ready(metrics)
                t_window, steps_window = time.perf_counter(), 0
            else:
                steps_window += 1
            if step % cfg.log.every == 0 or step == steps:
                m = jax.device_get(metrics)  # the only host sync in the loop
                check_finite(int(m["bad_step"]))
                loss = float(m["loss"])
                now = time.perf_counter()
                tps = steps_window * tokens_per_step / (now - t_window) if steps_window else float("nan")
                last_row = {"step": step, "tokens": step * tokens_per_step, "loss": loss,
                            "ppl": math.exp(min(loss, 50.0)), "lr": float(m["lr"]),
                            "grad_norm": float(m["grad_norm"]), "tokens_per_s": tps,
                            "mfu": tps * fpt / peak if steps_window else float("nan")}
                if guarded:
                    last_row["skipped"] = int(m["skipped"])
                if is_main:
                    log.write(last_row)
                if verbose and is_main:
                    print(f"step {step}/{steps} loss {loss:.4f} tok/s {tps:,.0f} "
                          f"mfu {last_row['mfu']:.3f}", flush=True)
                t_window, steps_window = time.perf_counter(), 0
            if cfg.eval.every and step % cfg.eval.every == 0 and step != steps:
                val_row = evaluate(step)
                t_window, steps_window = time.perf_counter(), 0
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step != steps:
                save(step)
            if on_step:
                on_step(step, steps)
    except BaseException:
        mngr.wait_until_finished()  # let a started save finish; orbax commits atomically
        mngr.close()
        raise

    if start < steps or val_row is None:
        val_row = evaluate(steps)
    save(steps)
    mngr.wait_until_finished()
    mngr.close()
    if last_row is None:  # resumed at the very end: recover the last train line from the log
        last_row = next(r for r in reversed(read_jsonl(os.path.join(workdir, "metrics.jsonl")))
                        if "loss" in r)
    summary = {
        "status": "done",
        "resumed_from": start,
        "skipped_steps": int(jax.device_get(state["guard"]["skipped"])),  # checkpoint step this process started from (0 = fresh)
        "params_total": desc["params_total"],
        "params_non_embedding": desc["params_non_embedding"],
        "flops_per_token": fpt,
        "flops_convention": desc["flops_convention"],
        "tokens": steps * tokens_per_step,
        "flops": fpt * steps * tokens_per_step,
        "steps": steps,
        "loss": last_row["loss"], "ppl": last_row["ppl"],
        "val_loss": val_row["val_loss"], "val_ppl": val_row["val_ppl"],
        "tokens_per_s": last_row["tokens_per_s"], "mfu": last_row["mfu"],
        "peak_flops": peak, "peak_source": peak_source,
        "wall_s": prior_wall + time.perf_counter() - t_start,
        "devices": jax.device_count(), "mesh": dict(mesh.shape),
        "pipeline_microbatches": pipeline.num_microbatches(cfg) if mesh.shape["pipeline"] > 1 else 1,
        "pipeline_bubble": pipeline.bubble_fraction(mesh.shape["pipeline"],
                                                    pipeline.num_microbatches(cfg)),
    }
    if cfg.eval.tasks:  # task evaluations (scaling/evals) -> eval.jsonl; not part of wall_s
        from scaling.evals.run import run_and_write
        summary["eval_s"] = run_and_write(cfg, nnx.merge(trainer.graphdef, state["params"]),
                                          workdir, is_main, log=print if verbose else None)
    if is_main:
        write_summary(workdir, summary)
    return summary

