"""The optimizer: AdamW, global-norm clipping, the lr schedule (warmup + cosine, wsd or constant;
lengths in scaling/train/schedule.py), weight-decay mask, optional per-parameter lr multipliers (μP).

The schedule's numbers (peak lr, warmup and decay lengths, betas, decay, clip) and even which
schedule it is are traced arguments of the jitted step, not constants, so one compiled step
serves every trial of a sweep that shares shapes (see `optimizer_hparams`), and a wsd trunk
(constant) and its cooldown branch run the very same executable (bitwise-equal steps).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scaling.config import ConfigDict
from scaling.train.schedule import WARMUP_FLOOR, decay_start, warmup_steps  # noqa: F401

# Decay shapes, as the traced number `shape` of `optimizer_hparams`.
SHAPES = {"cosine": 0.0, "linear": 1.0, "1-sqrt": 2.0}


def optimizer_hparams(t: ConfigDict) -> dict[str, np.ndarray]:
    """The optimizer's numbers (peak lr, schedule lengths, Adam betas, decay, clip) as float32.

    The jitted step takes these as ARGUMENTS rather than closing over them: a Python number in
    the traced function becomes a constant in the HLO, hence part of the persistent compilation
    cache key, so every trial of a sweep with a different token budget (schedule length) or lr
    would recompile an otherwise identical step. As arguments, all trials of one shape share one
    compiled executable (docs/benchmarks.md, "compilation cache").
    """
    shape = SHAPES["cosine" if t.schedule == "cosine" else t.decay_shape]
    hp = {"lr": t.lr, "warmup": warmup_steps(t), "decay_start": decay_start(t),
          "decay_steps": max(t.steps, 1), "shape": shape, "end_lr": t.lr * t.min_lr_ratio,
          "b1": t.b1, "b2": t.b2, "weight_decay": t.weight_decay, "grad_clip": t.grad_clip}
    return {k: np.float32(v) for k, v in hp.items()}


def lr_schedule(count, hp) -> jax.Array:
    """The lr of optimizer step `count` (0-based): warmup, the peak, then the decay to `end_lr`.

    Warmup is linear and never 0: step s < W trains at lr * (s + 1) / W (step W - 1 reaches the
    peak). Steps before `decay_start` (cosine: W; wsd: steps - its cooldown; constant: never)
    train at exactly the peak; from there the lr falls with progress p = (s - decay_start) /
    (decay_steps - decay_start) as a cosine, linearly, or as 1 - sqrt(p) (Hägele et al. 2024),
    reaching `end_lr` at `decay_steps`. Array arithmetic throughout, so that the lengths and
    the shape can be traced values (see `optimizer_hparams`).
    """
    step = jnp.asarray(count, jnp.float32)
    warm_lr = hp["lr"] * (step + 1.0) / jnp.maximum(hp["warmup"], 1.0)
    frac = jnp.clip((step - hp["decay_start"])
                    / jnp.maximum(hp["decay_steps"] - hp["decay_start"], 1.0), 0.0, 1.0)
    span = hp["lr"] - hp["end_lr"]
    decayed = jnp.select([hp["shape"] == SHAPES["cosine"], hp["shape"] == SHAPES["linear"]],
                         [hp["end_lr"] + span * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)),
                          hp["lr"] - span * frac],
                         hp["end_lr"] + span * (1.0 - jnp.sqrt(frac)))
    # Before the decay the lr is the peak itself, not a formula that may round off it: a wsd
    # branch must see exactly the lr its constant-lr trunk saw.
    stable_lr = jnp.where(step < hp["decay_start"], hp["lr"], decayed)
    return jnp.where(step < hp["warmup"], warm_lr, stable_lr)


def make_optimizer(t: ConfigDict, hp=None, lr_mults: tuple[dict, dict] | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with the lr schedule of `lr_schedule` (`train.schedule`); global-norm clip.

    `hp` (from `optimizer_hparams`, possibly traced) supplies the numbers; only the structure
    (whether clipping is on) is read from `t`. `lr_mults` = (a params-shaped tree of labels,
    {label: multiplier}) gives each parameter its own lr multiplier (μP: scaling/model/mup.py);
    it scales the whole AdamW update, weight decay included (lr-coupled decay, as torch's AdamW
    param groups). None: one lr for all, and an optimizer state without the extra node.
    """
    hp = optimizer_hparams(t) if hp is None else hp
    schedule = lambda count: lr_schedule(count, hp)  # noqa: E731
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
