"""The default sweep: tiny byte-level LMs on the built-in KJV corpus, on a 2-core CPU in minutes.

    scaling sweep --workdir runs/default            # this file is the default --config
    scaling train --config experiments/default.py --workdir runs/one --config.train.steps=50

3 model sizes (N_non-embedding 6.3k -> 99k, 16x) x 3 token budgets (60k -> 660k, 11x) = 9 trials,
lr per size from the study's rule. Sized so that `make demo` (install included) takes < 4 min on
2 cores. A demonstration of the pipeline, not a study: the short trials (30-320 steps) and the
3 x 3 grid trigger the guardrails, and the fit says where the grid cannot identify a constant.
experiments/isoflop.py is the study whose numbers are reported in docs/results.md.
"""
from scaling.config import default_config
from scaling.experiments import isoflop
from scaling.sweeps import grid

SIZES = [grid.size(16, 2, 2), grid.size(32, 2, 2), grid.size(64, 2, 4)]
TOKENS = [60_000, 200_000, 660_000]


def get_config(arg=None):
    c = default_config()
    c.name = "default"
    c.train.batch_size = 16
    c.train.seq_len = 128
    c.train.lr = 3e-3
    c.train.tokens = TOKENS[0]
    c.log.every = 10
    c.eval.batches = 8
    return c


def get_sweep(arg=None):
    base = get_config(arg)
    # Per-size lr from the rule fitted by experiments/lr_sweep.py (one lr for a 16x size range
    # puts the smallest model far from its optimum).
    return grid.per_size(grid.sizes_x_tokens(SIZES, TOKENS),
                         lambda p: {"train.lr": isoflop.lr_for(isoflop.size_counts(base, p)[0])})
