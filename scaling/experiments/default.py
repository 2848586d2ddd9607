"""The default sweep: tiny byte-level LMs on the built-in KJV corpus, on a 2-core CPU in minutes.

    scaling sweep --workdir runs/default            # this file is the default --config
    scaling train --config experiments/default.py --workdir runs/one --config.train.steps=50

3 model sizes (N_non-embedding 25k -> 330k, 13x) x 3 token budgets (0.1M -> 1.1M, 11x) = 9 trials.
A demonstration of the pipeline, not a study: the short trials (25-270 optimizer steps) and the
3 x 3 grid trigger the guardrails, and the fit says where the grid cannot identify a constant.
experiments/isoflop.py is the study whose numbers are reported in docs/results.md.
"""
from scaling.config import default_config
from scaling.sweeps import grid

SIZES = [grid.size(32, 2, 2), grid.size(64, 2, 4), grid.size(96, 3, 6)]
TOKENS = [100_000, 330_000, 1_100_000]


def get_config(arg=None):
    c = default_config()
    c.name = "default"
    c.train.batch_size = 32
    c.train.seq_len = 128
    c.train.lr = 3e-3
    c.train.tokens = TOKENS[0]
    c.log.every = 10
    c.eval.batches = 8
    return c


def get_sweep(arg=None):
    return grid.sizes_x_tokens(SIZES, TOKENS)
