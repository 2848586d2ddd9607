"""Loss vs compute per attention type (issue 17): full, sliding window, strided sparse, linear.

    scaling sweep --config experiments/attention.py --workdir runs/attention   (~15 min, 2 cores)
    scaling sweep --config experiments/attention.py:smoke --workdir runs/attention_smoke (~2 min)
    python -m analysis.architecture attention runs/attention   # runs/attention/plots/

3 sizes (d32/L2, d64/L2, d96/L3) x 4 attention types at T = 256 on one token budget: full,
sliding:32 (a local band of 32 keys), strided:16 (Child et al. 2019: the last 16 keys and every
16th before them) and linear:64 (Katharopoulos et al. 2020, chunks of 64). Compute is each
type's own FLOPs term (scaling/counting.py), so a cheaper pattern sits to the left at equal N.
The sliding/strided training path is a dense masked T x T here: wall time does not shrink.
"""
from scaling.config import default_config
from scaling.experiments import isoflop
from scaling.sweeps import grid

SIZES = [grid.size(32, 2, 2), grid.size(64, 2, 4), grid.size(96, 3, 6)]
ATTENTION = ["full", "sliding:32", "strided:16", "linear:64"]
TOKENS = 500_000


def get_config(arg=None):
    c = default_config()
    c.name = "attention"
    c.model.pos = "rope"
    c.train.update(dict(batch_size=8, seq_len=256, tokens=TOKENS, lr=3e-3))
    c.log.every = 20
    c.eval.batches = 8
    if arg == "smoke":
        c.train.tokens = 8 * 256 * 20
    return c


def get_sweep(arg=None):
    base = get_config(arg)
    sizes = SIZES[:2] if arg == "smoke" else SIZES
    points = grid.product(sizes, {"model.attention": ATTENTION})
    return grid.per_size(points,
                         lambda p: {"train.lr": isoflop.lr_for(isoflop.size_counts(base, p)[0])})
