"""Chinchilla N x D grid trained two ways: warmup-stable-decay with cooldown branches (default)
and its cosine twin (`:cosine`), to measure what the branches save (Hägele et al. 2024).

    scaling sweep --config experiments/chinchilla_wsd.py --workdir runs/wsd           (~6 min)
    scaling sweep --config experiments/chinchilla_wsd.py:cosine --workdir runs/cosine (~10 min)
    python -m analysis.wsd runs/wsd runs/cosine       # loss vs tokens per size, both schedules;
                                                      # compute spent, per-budget loss ratios
    scaling sweep --config experiments/chinchilla_wsd.py:lrscan --workdir runs/wsd_lr          (~3 min)
    scaling sweep --config experiments/chinchilla_wsd.py:lrscan_cosine --workdir runs/cosine_lr (~4 min)
        # each schedule's own lr optimum at d24, 2000 and 4000 steps: is the per-size lr rule
        # (tuned on 500-step cosine runs) fair to both schedules?
    scaling sweep --config experiments/chinchilla_wsd.py:linear --workdir runs/wsd_linear  (~5 min)
        # the same wsd grid with a linear cooldown (Hägele's 1-sqrt is the default)
    scaling sweep --config experiments/chinchilla_wsd.py --config.train.seed=1 --workdir runs/wsd_s1
    scaling sweep --config experiments/chinchilla_wsd.py:cosine --config.train.seed=1 --workdir runs/cosine_s1
    python -m analysis.wsd runs/wsd runs/cosine --replicate runs/wsd_s1 runs/cosine_s1
        # seed replicates (~8 min a pair side by side): seed-averaged differences with their
        # standard errors and a 95% interval on the mean difference (one seed's noise ~0.7%)
    scaling sweep --config experiments/chinchilla_wsd.py:wide --workdir runs/wsd_wide
    scaling sweep --config experiments/chinchilla_wsd.py:wide_cosine --workdir runs/cosine_wide
        # a grid wide enough to test the exponents: d16, d32, d48 (9x N) x 2000-16000 steps
        # (8x D, up to 4.2 epochs); doubling budgets, so wsd spends 63% of cosine's compute
        # (11 and 15 min side by side on 2 cores)

Design, for 2 CPU cores:
- 3 sizes (d16/L1, d24/L1, d32/L1: 3.2k-12k non-embedding parameters, around the IsoFLOP study's
  optimum) x 4 token budgets of 2000, 4000, 6000, 8000 optimizer steps of 8 x 128 tokens (2M to
  8M tokens, <= 2.1 epochs of KJV). A first design with 500-2000 steps put WSD 0.2-8.6% below
  cosine: at a few hundred steps these models are still leaving the unigram plateau, and cosine,
  whose lr falls from the start, leaves it later (docs/results.md). Per-size lr from the
  IsoFLOP study's rule (experiments/isoflop.py, `lr_for`); validation on the same 64 batches.
- wsd: decay_fraction 0.2 with the 1-sqrt cooldown (Hägele's best), to the same end lr as cosine
  (min_lr_ratio 0.1). Per size one trunk of 0.8 x 8000 = 6400 steps plus cooldowns of 0.2 x (2000
  + 4000 + 6000 + 8000) = 4000 steps: 10400 steps against cosine's 20000, 52% of its compute
  (`flops_spent` in the results table). Budgets are evenly spaced, not doubling: with budgets
  D, 2D, 4D the trunk alone would be 3.2D of cosine's 7D (66% in all).
- Warmup: cosine warms up for 5% of each run (100-400 steps); every member of a wsd family for
  the shortest budget's 100 steps (they must agree step by step with the trunk).
- Targets (issue 16): compute spent <= 55% of cosine's; each budget's final val loss within 1%
  of cosine's; Chinchilla alpha, beta of the two grids inside each other's bootstrap intervals.
"""
from scaling.config import default_config
from scaling.experiments.isoflop import lr_for, size_counts
from scaling.sweeps import grid

SIZES = [grid.size(16, 1, 2), grid.size(24, 1, 2), grid.size(32, 1, 2)]
BATCH, SEQ_LEN = 8, 128
STEPS = [2000, 4000, 6000, 8000]
TOKENS = [s * BATCH * SEQ_LEN for s in STEPS]
DECAY_FRACTION, DECAY_SHAPE = 0.2, "1-sqrt"
# lr scan: multiples of the rule's lr, at the middle size and the two shortest budgets.
LR_MULTIPLIERS = [0.5, 0.71, 1.0, 1.41, 2.0, 2.83]
# wide: 9x in N and 8x in D, so that alpha and beta are not left to a 4x range each
WIDE_SIZES = [grid.size(16, 1, 2), grid.size(32, 1, 2), grid.size(48, 1, 2)]
WIDE_TOKENS = [s * BATCH * SEQ_LEN for s in (2000, 4000, 8000, 16000)]
ARGS = (None, "cosine", "pilot", "lrscan", "lrscan_cosine", "linear", "wide", "wide_cosine")
COSINE_ARGS = ("cosine", "lrscan_cosine", "wide_cosine")


def get_config(arg=None):
    if arg not in ARGS:
        raise ValueError(f"unknown ARG {arg!r}; use nothing (wsd), cosine, pilot, lrscan, "
                         "lrscan_cosine, linear, wide or wide_cosine")
    c = default_config()
    c.name = "chinchilla_cosine" if arg in COSINE_ARGS else "chinchilla_wsd"
    c.train.update(dict(batch_size=BATCH, seq_len=SEQ_LEN, tokens=TOKENS[0], warmup=0.05,
                        min_lr_ratio=0.1))
    c.log.every = 25
    c.eval.batches = 64
    return c


def get_sweep(arg=None):
    """`:cosine`: every (size, budget) from scratch; default: grid.wsd trunks and branches;
    `:pilot`: the wsd grid for the smallest size and two budgets only; `:lrscan`,
    `:lrscan_cosine`: d24 at LR_MULTIPLIERS x the rule's lr, 2000 and 4000 steps; `:linear`: the
    wsd grid with a linear cooldown instead of 1-sqrt; `:wide`, `:wide_cosine`: WIDE_SIZES x
    WIDE_TOKENS both ways."""
    base = get_config(arg)
    sizes, tokens = {"pilot": (SIZES[:1], TOKENS[:2]), "wide": (WIDE_SIZES, WIDE_TOKENS),
                     "wide_cosine": (WIDE_SIZES, WIDE_TOKENS)}.get(arg, (SIZES, TOKENS))
    if arg in ("lrscan", "lrscan_cosine"):
        rule = lr_for(size_counts(base, SIZES[1])[0])
        sizes = [{**SIZES[1], "train.lr": round(m * rule, 6)} for m in LR_MULTIPLIERS]
        tokens = TOKENS[:2]
    if arg in COSINE_ARGS:
        points = grid.sizes_x_tokens(sizes, tokens)
    else:
        shape = "linear" if arg == "linear" else DECAY_SHAPE
        points = grid.wsd(sizes, tokens, decay_fraction=DECAY_FRACTION, decay_shape=shape)
    return grid.per_size(points, lambda p: {"train.lr": lr_for(size_counts(base, p)[0])})
