"""The CPU IsoFLOP study: 3 compute budgets spanning 10x, 5-6 model sizes each, around the optimum.

    scaling sweep --config experiments/isoflop.py --workdir runs/isoflop          (~1 h, 2 cores)
    scaling sweep --config experiments/isoflop.py:pilot --workdir runs/isoflop_pilot  (lowest budget)
    scaling fit isoflop runs/isoflop --json                  # Approach 2: N_opt ~ C^a, interval
    scaling fit chinchilla runs/isoflop --holdout top-budget # Approach 3 + held-out error

Design (docs/results.md has the measured outcome):
- Byte-level LMs on the built-in KJV corpus (~3.9M train tokens), budgets 1e11, 3e11, 1e12 FLOPs
  counted by the trainer (scaling.counting: 6·(N_ne + d·V) + 12·L·T·d per token). A pilot at
  3e11 put the optimum near d16/L1 (val loss 1.88 at d12, 1.84 at d16, 2.06 at d24/L2): at these
  budgets compute-optimal byte-level models are tiny, and larger budgets would need more than
  4 epochs of KJV for the small sizes (or hours of CPU for the large ones).
- Sizes come from one ladder (0.8k -> 99k non-embedding parameters); per budget we keep the sizes
  whose token budget gives >= MIN_STEPS optimizer steps and <= MAX_EPOCHS passes over the train
  split, so no trial is too short to be annealed and repetition stays within Muennighoff et al.'s
  ~4-epoch range.
- A small batch (8 x 128 tokens) and >= 500 optimizer steps per trial. Below a few hundred steps
  these models are still on the unigram plateau (an lr sweep at 245 steps gave d16 ~3.0 nats at
  every lr, against 2.34 at 489 steps), so the larger sizes of a budget would lose for want of
  steps and the optimum would sit at the grid's edge for that reason alone.
- Learning rate per size from experiments/lr_sweep.py's fitted rule (LR_RULE below).
"""
from scaling import counting
from scaling.config import ConfigDict, apply_overrides, default_config, resolve
from scaling.sweeps import grid

BUDGETS = [1e11, 3e11, 1e12]
# Non-embedding N: 0.8k, 1.8k, 3.2k, 7.1k, 12k, 25k, 56k, 99k (one layer up to d32, then two).
LADDER = [grid.size(8, 1, 2), grid.size(12, 1, 2), grid.size(16, 1, 2), grid.size(24, 1, 2),
          grid.size(32, 1, 2), grid.size(32, 2, 2), grid.size(48, 2, 4), grid.size(64, 2, 4)]
BATCH, SEQ_LEN = 8, 128
MIN_STEPS = 500
MAX_EPOCHS = 4.0
TRAIN_TOKENS = 3_900_000   # KJV train split, byte tokens (approximate; the trainer reports epochs)
SIZES_PER_BUDGET = 6
# A second seed (data order and init) at every budget: seeds are averaged before fitting (the
# 3e11 pair differed by up to 0.09 nats at d32/L1), and their spread is the noise floor that
# fitted differences must exceed.
EXTRA_SEEDS = {1e11: [1], 3e11: [1], 1e12: [1]}
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
    """The ladder sizes that fit `budget` (enough steps, few enough epochs); the middle
    SIZES_PER_BUDGET of them, so the grid is centred on the feasible range."""
    ok = []
    for s in LADDER:
        _, fpt = size_counts(base, s)
        tokens = budget / fpt
        if tokens >= MIN_STEPS * BATCH * SEQ_LEN and tokens <= MAX_EPOCHS * TRAIN_TOKENS:
            ok.append(s)
    if len(ok) > SIZES_PER_BUDGET:
        lo = (len(ok) - SIZES_PER_BUDGET) // 2
        ok = ok[lo:lo + SIZES_PER_BUDGET]
    return ok


def get_sweep(arg=None):
    base = get_config(arg)
    budgets = BUDGETS[:1] if arg == "pilot" else BUDGETS
    points = []
    for c in budgets:
        points += grid.isoflop(base, [c], sizes_for(base, c))
    if arg != "pilot":
        for c, seeds in EXTRA_SEEDS.items():
            points += [{**p, "train.seed": s} for s in seeds
                       for p in grid.isoflop(base, [c], sizes_for(base, c))]
    return grid.per_size(points, lambda p: {"train.lr": lr_for(size_counts(base, p)[0])})
