"""Learning rate x model size on the CPU: the per-size lr rule the IsoFLOP study uses.

    scaling sweep --config experiments/lr_sweep.py --workdir runs/lr_sweep      (~10 min, 2 cores)
    python -m analysis.lr_rule runs/lr_sweep       # loss vs lr per size, optimum, fitted rule

Porian et al. 2024 and the OLMo ladder found lr (with warmup and beta2) per size decisive at
small scale. Here: 4 sizes spanning the IsoFLOP study's ladder (0.8k -> 99k non-embedding
parameters) x 5 learning rates (factor 2 apart), every trial on the same 0.5M tokens with the
study's batch (8 x 128) and schedule, so the optimum per size is the one the study trains at.
The fitted rule lr_opt(N) = a * (N / 1e5)^b goes into experiments/isoflop.py (LR_RULE).
"""
from scaling.config import default_config
from scaling.sweeps import grid

SIZES = [grid.size(8, 1, 2), grid.size(16, 1, 2), grid.size(32, 2, 2), grid.size(64, 2, 4)]
LRS = [2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2]
TOKENS = 500_000


def get_config(arg=None):
    c = default_config()
    c.name = "lr_sweep"
    c.train.update(dict(batch_size=8, seq_len=128, tokens=TOKENS, warmup=0.05))
    c.log.every = 25
    c.eval.batches = 64
    return c


def get_sweep(arg=None):
    sizes = SIZES[:2] if arg == "smoke" else SIZES
    lrs = LRS[1:4] if arg == "smoke" else LRS
    return grid.product(sizes, {"train.lr": lrs})
