"""The learning-rate schedule's lengths in optimizer steps (pure Python: no JAX).

Three schedules (`train.schedule`), all with the same linear warmup (`warmup_steps`):
  - cosine: from the end of warmup, a cosine from the peak lr to `lr * min_lr_ratio` at the end.
  - wsd (warmup-stable-decay, Hägele et al. 2024): the peak lr until `decay_start`, then a
    cooldown over the last `train.decay_fraction` of the steps to `lr * min_lr_ratio`, shaped
    `linear` or `1-sqrt` (`train.decay_shape`).
  - constant: the peak lr after warmup, never decayed (a wsd trunk: scaling/sweeps/plan.py).
The lr itself is computed in `scaling.train.optim.lr_schedule`; the sweep planner needs only
these lengths (where a wsd run's cooldown starts), without importing JAX.
"""
from __future__ import annotations

import math

from scaling.config import ConfigDict
from scaling.errors import UserError

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


def decay_steps(t: ConfigDict) -> int:
    """Length of a wsd cooldown in steps: `decay_fraction` of the run, rounded, at least 1."""
    return max(1, round(t.decay_fraction * t.steps))


def decay_start(t: ConfigDict) -> int:
    """The first step (0-based) whose lr is below the peak because of the decay: the end of
    warmup for cosine, steps - decay_steps for wsd, `steps` (never) for constant. A wsd run
    and its cooldown branch agree on every step before it (scaling/sweeps/plan.py)."""
    if t.schedule == "cosine":
        return warmup_steps(t)
    if t.schedule == "wsd":
        return t.steps - decay_steps(t)
    return t.steps


def check_schedule(t: ConfigDict) -> None:
    """A wsd cooldown must start after warmup has ended (a one-line `UserError` otherwise)."""
    if t.schedule == "wsd" and decay_start(t) < warmup_steps(t):
        raise UserError(f"train.decay_fraction={t.decay_fraction} starts the cooldown at step "
                        f"{decay_start(t)} of {t.steps}, inside the {warmup_steps(t)}-step "
                        f"warmup; lower train.decay_fraction or train.warmup")
