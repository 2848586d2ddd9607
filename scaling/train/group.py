"""Vectorised trials: G runs that share every shape and differ only in seed or optimizer numbers
train together, all G steps in one jitted call (small models leave an accelerator mostly idle;
G of them in one step use it G-fold better).

How the G steps are computed (`mode`): "vmap", one `jax.vmap` of `Trainer._step` (batched
matmuls), or "map", `jax.lax.map` over the members (each member's step is the single-run
computation, inside one program). "auto" = "map" on CPU, "vmap" elsewhere. On XLA:CPU (2 cores,
d32/L2, docs/benchmarks.md) the vmapped step measured 0.6-0.9x the throughput of separate runs
and drifts from them by float32 rounding (a different summation order), while "map" computed as
fast as separate runs (80 vs 81 ms for 8 steps), trained 1.1-1.5x faster in the loop (shared host
work) and was bitwise equal to them. A whole sweep gains less: groups are coarse units, and with
`--parallel 2` an lr sweep's largest group set the wall time (112 vs 106 s ungrouped, mean of two).

The group's train state is the single-run state with a leading trial axis [G, ...]: initialised
by a vmapped `Trainer._init` over the seeds (bitwise the separate inits), stepped by `Trainer._step`
over (state, batch [G, B, T+1], optimizer numbers [G]) as above — each trial keeps its
own data order (its own `TokenBatches`, seeded by its train.seed) and its own lr schedule (the
numbers of `optimizer_hparams` are traced arguments). Everything per trial reuses a single-run
`_Run` (scaling/train/loop.py) sharing one `Trainer`: its workdir, metrics.jsonl, validation
(on the trial's slice of the state), checkpoints (the slice; a resume stacks the restored ones),
its summary. What is shared: the wall clock (each trial's `wall_s` and `tokens_per_s` are the
group's time; its summary says `group_size`) and the stop signal.

Limits: one device (a one-device mesh; a group on several devices or pipeline stages would need
the trial axis in the mesh) and no `train.init_from`; the members must agree on every other
config key (`scaling.sweeps.plan.group_key`). A group whose members would resume from different
steps is refused with `GroupMismatch`: the caller trains them separately.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scaling.config import ConfigDict, group_key, resolve
from scaling.sweeps.store import write_summary
from scaling.train.loop import (_Run, TrainingError, _accumulate, _done_summary, _Window,
                                _workdir_lock)
from scaling.train.optim import optimizer_hparams
from scaling.train.signals import StopRequest, TrainingStopped
from scaling.train.step import Trainer
from scaling.train.workdir import check_workdir, create_workdir, disk_errors


class GroupMismatch(RuntimeError):
    """These runs cannot train as one group (train them separately); nothing was trained."""


MODES = ("auto", "vmap", "map")


def step_mode(mode: str = "auto") -> str:
    """"vmap" or "map" for `mode` on this backend ("auto": map on CPU, where vmap measured slower
    than separate runs; vmap on accelerators)."""
    if mode not in MODES:
        raise ValueError(f"unknown group mode {mode!r}; pick from {MODES}")
    if mode == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    return mode


def _group_step(step: Callable, mode: str) -> Callable:
    """(stacked state, batches [G, ...], hparams [G]) -> (stacked state, metrics [G]), jitted."""
    if mode == "vmap":
        return jax.jit(jax.vmap(step), donate_argnums=0)
    return jax.jit(lambda state, batch, hp: jax.lax.map(lambda x: step(*x), (state, batch, hp)),
                   donate_argnums=0)


def _slice(tree, k: int):
    return jax.tree.map(lambda a: a[k], tree)


def _stack(trees: list):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


class _Group:
    """G `_Run`s stepping one stacked state; a member that fails (non-finite loss under
    nan_policy=abort, a skip streak) is dropped from logging and saving, the others go on."""

    def __init__(self, runs: list[_Run], mode: str = "auto"):
        self.runs, self.failed = runs, {}  # failed: member index -> its exception
        self.cfg = runs[0].cfg
        self.mode = step_mode(mode)

    def live(self):
        return [(k, r) for k, r in enumerate(self.runs) if k not in self.failed]

    def _guarded(self, k: int, fn: Callable) -> None:
        """Run `fn()` for member k; its `TrainingError` fails that member only."""
        try:
            fn()
        except TrainingError as e:
            self.failed[k] = e
            print(f"{self.runs[k].workdir}: {e}", file=sys.stderr, flush=True)

    def open(self, changes: list[dict]) -> None:
        trainer = Trainer(self.cfg, self.runs[0].mesh)
        for r in self.runs:
            r.prepare(trainer)
        restored = [r.restore() for r in self.runs]
        starts = sorted({r.start for r in self.runs})
        if len(starts) > 1:
            raise GroupMismatch(f"the trials would resume from steps {starts}")
        self.start = starts[0]
        if restored[0]:
            self.state = _stack([r.state for r in self.runs])
        else:
            seeds = np.array([r.cfg.train.seed for r in self.runs], np.int32)
            self.state = jax.jit(jax.vmap(trainer._init))(seeds)
        for r, c in zip(self.runs, changes):
            r.open_log(c)
        self.hparams = _stack([optimizer_hparams(r.cfg.train) for r in self.runs])
        self.step_fn = _group_step(trainer._step, self.mode)
        acc = jax.jit(lambda acc, loss, tok, bytes_V: jax.vmap(
            _accumulate, in_axes=(0, 0, 0, None))(acc, loss, tok, bytes_V))
        self.accumulate = functools.partial(acc, bytes_V=self.runs[0].bytes_V)

    def sync(self) -> None:
        """Give each live member its slice of the group state (before it validates or saves)."""
        for k, r in self.live():
            r.state = _slice(self.state, k)

    def save(self, step: int) -> None:
        self.sync()
        for k, r in self.live():
            self._guarded(k, lambda: r.save(step))

    def log_train(self, step: int, metrics: dict, window: _Window, verbose: bool) -> None:
        m, acc, secs, timed = window.close(metrics)
        for k, r in self.live():
            self._guarded(k, lambda: r.write_train(step, _slice(m, k), _slice(acc, k), secs,
                                                   timed, verbose and k == 0))

    def loop(self, on_step: Callable[[int, int], None] | None, verbose: bool,
             stop: StopRequest) -> None:
        """`_Run.loop` for the group: the same lines, validations and checkpoints per member."""
        cfg, steps, G = self.cfg, self.cfg.train.steps, len(self.runs)
        zero = {"sum": np.zeros(G, np.float32), "n": np.zeros(G, np.int32),
                "bpt": np.zeros(G, np.float32)}
        window = _Window(jax.device_put(zero), self.accumulate)
        for step in range(self.start + 1, steps + 1):
            batch = np.stack([r.train_data.batch(step - 1) for r in self.runs])
            self.state, metrics = self.step_fn(self.state, batch, self.hparams)
            window.add(metrics, batch)
            if step % cfg.log.every == 0 or step == steps:
                self.log_train(step, metrics, window, verbose)
            if not self.live():
                return
            if cfg.eval.every and step % cfg.eval.every == 0 and step != steps:
                self.sync()
                for _, r in self.live():
                    r.evaluate(step)
                window.restart_clock()
            if (cfg.checkpoint.every and step % cfg.checkpoint.every == 0
                    or step in self.runs[0].save_at) and step != steps:
                self.save(step)
            if on_step:
                on_step(step, steps)
            if step == steps:
                break
            # one process: the first live member's checkpoint timer serves all
            stopping, due = self.live()[0][1].poll(step, stop)
            if stopping or due:
                self.save(step)
                window.restart_clock()
            if stopping:
                for r in self.runs:
                    r.mngr.wait_until_finished()
                if not stop.forward():
                    raise TrainingStopped(f"{stop.last} after step {step}: checkpoints saved "
                                          f"for the {G} trials of the group; rerun to resume")

    def finish(self) -> list:
        """Each live member's final validation, checkpoint and summary (written)."""
        self.sync()
        out = [None] * len(self.runs)
        for k, r in self.live():
            def one(k=k, r=r):
                s = dict(r.finish(), group_size=len(self.runs))
                out[k] = write_summary(r.workdir, s)
            self._guarded(k, one)
        for k, e in self.failed.items():
            out[k] = e
        return out

    def close(self) -> None:
        for r in self.runs:
            with contextlib.suppress(Exception):
                r.close()


def check_group(cfgs: list[ConfigDict]) -> None:
    """`GroupMismatch` unless the resolved `cfgs` can train as one group in this process."""
    keys = {group_key(c) for c in cfgs}
    if len(cfgs) < 2 or None in keys or len(keys) > 1:
        raise GroupMismatch("the trials differ in more than seed and optimizer numbers")
    if jax.process_count() > 1 or jax.device_count() > 1:
        raise GroupMismatch(f"vectorised trials run on one device, this process sees "
                            f"{jax.device_count()}")


def train_group(cfgs: list[ConfigDict], workdirs: list[str], *,
                on_step: Callable[[int, int], None] | None = None,
                verbose: bool = False, mode: str = "auto") -> list:
    """Train (or resume) the runs in `workdirs` as one vectorised group (see the module doc;
    `mode`: how the G steps are computed, "auto" | "vmap" | "map").

    Returns, per run, its summary as written to summary.json, or the `TrainingError` that failed
    it (the others went on). `GroupMismatch` before anything is trained when they cannot be one
    group (different shapes, several devices, a finished run, different resume steps): train
    them separately. `TrainingStopped` after a stop signal's checkpoints, as `train`.
    """
    t_start = time.perf_counter()
    cfgs = [resolve(c) for c in cfgs]
    check_group(cfgs)
    changes = [check_workdir(c, w) for c, w in zip(cfgs, workdirs)]
    runs = [_Run(c, w, t_start) for c, w in zip(cfgs, workdirs)]
    with contextlib.ExitStack() as stack:
        for w in workdirs:
            create_workdir(w)
            stack.enter_context(_workdir_lock(w, True))
            stack.enter_context(disk_errors(w, TrainingError))
        if any(_done_summary(w) is not None for w in workdirs):
            raise GroupMismatch("a trial of the group is finished already")
        stop = stack.enter_context(StopRequest())
        group = _Group(runs, mode)
        try:
            group.open(changes)
            group.loop(on_step, verbose, stop)
            out = group.finish()
        except BaseException as e:
            group.close()
            if isinstance(e, TrainingStopped):
                print(f"stopped: {e}", file=sys.stderr, flush=True)
            raise
        group.close()
        return out
