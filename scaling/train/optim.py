"""The optimizer: AdamW, global-norm clipping, linear warmup + cosine decay, weight-decay mask,
optional per-parameter lr multipliers (μP).

The schedule's numbers (peak lr, warmup and decay lengths, betas, decay, clip) are traced
arguments of the jitted step, not constants, so one compiled step serves every trial of a sweep
that shares shapes (see `optimizer_hparams`).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scaling.config import ConfigDict

# A positive warmup lasts at least this many steps, when the run is long enough (see
# `warmup_steps`): a fraction like 0.05 of a short run would otherwise round to 1-2 steps.
WARMUP_FLOOR = 10


def warmup_steps(t: ConfigDict) -> int:
    """Warmup length in optimizer steps for `train` config `t`.

    `train.warmup` < 1 is a fraction of `train.steps`, rounded UP; >= 1 is a number of steps.
    A positive warmup is raised to the floor min(WARMUP_FLOOR, steps // 4), so it is at least a
    few steps when the run allows and still ends well inside it; it never exceeds steps - 1.
    `train.warmup = 0` means no warmup (step 0 trains at the peak lr).
    """
    if t.warmup <= 0 or t.steps <= 1:
        return 0
    w = math.ceil(t.warmup * t.steps) if t.warmup < 1 else int(t.warmup)
    w = max(w, min(WARMUP_FLOOR, t.steps // 4))
    return min(w, t.steps - 1)


def optimizer_hparams(t: ConfigDict) -> dict[str, np.ndarray]:
    """The optimizer's numbers (peak lr, schedule lengths, Adam betas, decay, clip) as float32.

    The jitted step takes these as ARGUMENTS rather than closing over them: a Python number in
    the traced function becomes a constant in the HLO, hence part of the persistent compilation
    cache key, so every trial of a sweep with a different token budget (schedule length) or lr
    would recompile an otherwise identical step. As arguments, all trials of one shape share one
    compiled executable (docs/benchmarks.md, "compilation cache").
    """
    hp = {"lr": t.lr, "warmup": warmup_steps(t), "decay_steps": max(t.steps, 1),
          "end_lr": t.lr * t.min_lr_ratio, "b1": t.b1, "b2": t.b2,
          "weight_decay": t.weight_decay, "grad_clip": t.grad_clip}
    return {k: np.float32(v) for k, v in hp.items()}


def warmup_cosine(count, hp) -> jax.Array:
    """The lr of optimizer step `count` (0-based): warmup, then cosine decay to `end_lr`.

    Warmup is linear and never 0: step s < W trains at lr * (s + 1) / W (step W - 1 reaches the
    peak); from step W the lr follows a cosine from the peak to `end_lr` at `decay_steps`.
    Written with array arithmetic so that the lengths can be traced values (see
    `optimizer_hparams`).
    """
    step = jnp.asarray(count, jnp.float32)
    warm_lr = hp["lr"] * (step + 1.0) / jnp.maximum(hp["warmup"], 1.0)
    frac = jnp.clip((step - hp["warmup"]) / jnp.maximum(hp["decay_steps"] - hp["warmup"], 1.0),
                    0.0, 1.0)
    cos_lr = hp["end_lr"] + (hp["lr"] - hp["end_lr"]) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    return jnp.where(step < hp["warmup"], warm_lr, cos_lr)


def make_optimizer(t: ConfigDict, hp=None, lr_mults: tuple[dict, dict] | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warmup and cosine decay to `min_lr_ratio` of the peak; global-norm clip.

    `hp` (from `optimizer_hparams`, possibly traced) supplies the numbers; only the structure
    (whether clipping is on) is read from `t`. `lr_mults` = (a params-shaped tree of labels,
    {label: multiplier}) gives each parameter its own lr multiplier (μP: scaling/model/mup.py);
    it scales the whole AdamW update, weight decay included (lr-coupled decay, as torch's AdamW
    param groups). None: one lr for all, and an optimizer state without the extra node.
    """
    hp = optimizer_hparams(t) if hp is None else hp
    schedule = lambda count: warmup_cosine(count, hp)  # noqa: E731
    parts = [optax.clip_by_global_norm(hp["grad_clip"]) if t.grad_clip > 0 else optax.identity(),
             optax.adamw(schedule, b1=hp["b1"], b2=hp["b2"], weight_decay=hp["weight_decay"],
                         mask=decay_mask)]
    if lr_mults is not None:
        labels, mults = lr_mults
        parts.append(optax.transforms.partition(
            {label: optax.scale(m) for label, m in mults.items()}, labels))
    return optax.chain(*parts), schedule


def decay_mask(params):
    """Weight-decay matrices and embeddings, not norm scales/biases (GPT-2 / nanoGPT practice).

    Decided by name, since stacked layers give a norm scale the shape [L, D] of a matrix.
    """
    decayed = ("kernel", "embedding", "pos_embed")
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(getattr(k, "key", None) in decayed for k in path), params)
