"""The CPU IsoFLOP study: 4 compute budgets spanning 30x, 7-11 model sizes each, around the optimum.

    scaling sweep --config experiments/isoflop.py --workdir runs/isoflop --parallel 2  (~50 min)
    scaling sweep --config experiments/isoflop.py:pilot --workdir runs/isoflop_pilot  (lowest budget)
    scaling fit isoflop runs/isoflop --json                  # Approach 2: N_opt ~ C^a, interval
    scaling fit chinchilla runs/isoflop --holdout top-budget # Approach 3 + held-out error

Design (docs/results.md has the measured outcome, and the earlier designs it replaced):
- Byte-level LMs on the built-in KJV corpus (~3.9M train tokens), budgets 1e11 ... 3e12 FLOPs
  counted by the trainer (scaling.counting: 6·(N_ne + d·V) + 12·L·T·d per token).
- One model shape, width the only size axis: one layer, two heads, d_model 8 ... 128
  (0.8k -> 197k non-embedding parameters). The previous ladder switched from one layer to two
  at d32, and that shape step (d32/L2 worse than d32/L1 by up to 0.37 nats) was the largest
  misfit of the Chinchilla form: a scaling law describes one family, not a mix of shapes.
- Per budget, the ladder sizes from a guessed optimum (N_GUESS, from the previous run's optima)
  / SPAN_DOWN to guess * SPAN_UP that also give >= MIN_STEPS optimizer steps and <= MAX_EPOCHS passes
  over the train split: no trial is too short to be annealed, and repetition stays within
  Muennighoff et al.'s ~4-epoch range.
- A small batch (8 x 128 tokens) and >= 500 optimizer steps per trial. Below a few hundred steps
  these models are still on the unigram plateau (an lr sweep at 245 steps gave d16 ~3.0 nats at
  every lr, against 2.34 at 489 steps), so the larger sizes of a budget would lose for want of
  steps and the optimum would sit at the grid's edge for that reason alone.
- Three seeds (data order and init) of every configuration, averaged before fitting; their
  spread is the noise floor fitted differences must exceed. Seed 0 of every budget runs first,
  so an interrupted sweep already holds a complete one-seed study.
- Learning rate per size from experiments/lr_sweep.py's fitted rule (LR_RULE below).
"""
from scaling import counting
from scaling.config import ConfigDict, apply_overrides, default_config, resolve
from scaling.sweeps import grid

BUDGETS = [1e11, 3e11, 1e12, 3e12]
LADDER = [grid.size(d, 1, 2) for d in (8, 12, 16, 20, 24, 28, 32, 36, 40, 48, 56, 64, 80, 96, 112, 128)]
BATCH, SEQ_LEN = 8, 128
MIN_STEPS = 500
MAX_EPOCHS = 4.0
TRAIN_TOKENS = 3_935_360   # KJV train split, byte tokens (the trainer reports epochs exactly)
# Guessed N_opt (non-embedding) = N_GUESS[0] * (C / 1e12) ** N_GUESS[1], from the previous run's
# one-layer optima (3.2k at 1e11, 7-12k at 3e11, 12.5k at 1e12).
N_GUESS = (13e3, 0.7)
# Sizes from guess / SPAN_DOWN to guess * SPAN_UP. The grid reaches further up than down:
# repetition (up to 4 epochs for the small sizes of the top budgets) moves the optimum to larger
# N than the guess. With 4.5 both ways, seed 0 put the 3e12 minimum at d80, the second-largest size.
SPAN_DOWN, SPAN_UP = 4.5, 8.0
SEEDS = [0, 1, 2]
# lr_opt(N_non_embedding) = LR_RULE[0] * (N / 1e5) ** LR_RULE[1], fitted by `python -m analysis.lr_rule`
# on experiments/lr_sweep.py (b = -0.39 +- 0.16; d8's optimum was at the grid's top lr, 0.032).
LR_RULE = (3.07e-3, -0.395)


def lr_for(n_non_embedding: int) -> float:
    """The per-size learning rate of the study (rounded to 3 significant digits)."""
    lr = LR_RULE[0] * (n_non_embedding / 1e5) ** LR_RULE[1]
    return float(f"{lr:.3g}")


def get_config(arg=None):
    c = default_config()
    c.name = "isoflop"
    c.train.update(dict(batch_size=BATCH, seq_len=SEQ_LEN, tokens=BATCH * SEQ_LEN * MIN_STEPS,
                        warmup=0.05))
    c.log.every = 25
    c.eval.batches = 64
    return c


def size_counts(base: ConfigDict, size: dict) -> tuple[int, float]:
    """(non-embedding parameters, FLOPs per token) of `base` with the grid point's model keys."""
    model_keys = {k: v for k, v in size.items() if k.startswith("model.")}
    cfg = resolve(apply_overrides(ConfigDict(base.to_dict()), model_keys))
    return (counting.describe(cfg)["params_non_embedding"],
            counting.flops_per_token(cfg.model, cfg.train.seq_len))


def sizes_for(base: ConfigDict, budget: float) -> list[dict]:
    """The ladder sizes for `budget`: from the guessed optimum / SPAN_DOWN to guess * SPAN_UP,
    with enough steps and few enough epochs."""
    guess = N_GUESS[0] * (budget / 1e12) ** N_GUESS[1]
    ok = []
    for s in LADDER:
        n, fpt = size_counts(base, s)
        tokens = budget / fpt
        if (MIN_STEPS * BATCH * SEQ_LEN <= tokens <= MAX_EPOCHS * TRAIN_TOKENS
                and guess / SPAN_DOWN <= n <= guess * SPAN_UP):
            ok.append(s)
    return ok


def get_sweep(arg=None):
    base = get_config(arg)
    budgets = BUDGETS[:1] if arg == "pilot" else BUDGETS
    seeds = SEEDS[:1] if arg == "pilot" else SEEDS
    points = []
    for seed in seeds:   # seed-major: every budget's seed 0 first
        for c in budgets:
            points += [{**p, "train.seed": seed} for p in grid.isoflop(base, [c], sizes_for(base, c))]
    return grid.per_size(points, lambda p: {"train.lr": lr_for(size_counts(base, p)[0])})
