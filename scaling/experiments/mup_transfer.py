"""lr × width under SP and μP: does the optimal learning rate transfer across widths?

    scaling sweep --config experiments/mup_transfer.py:mup --workdir runs/mup_transfer_mup
    scaling sweep --config experiments/mup_transfer.py:sp  --workdir runs/mup_transfer_sp
    python -m analysis.mup transfer runs/mup_transfer_sp runs/mup_transfer_mup

ARG: `sp` or `mup` (one parametrization, ~15-20 min each on 2 cores), none for both in one
sweep, `pilot` for a ~1 min μP smoke run (2 widths x 3 lrs, 40k tokens). Widths 64, 128, 256 at
fixed depth (2 layers) and head count (4 heads: d_head 16 -> 64, as μP's base model assumes),
7 learning rates a factor 2 apart, every trial on the same 0.3M tokens with a constant-length
schedule. μP's base width is 64, where SP and μP are the same model. The analysis marks each
width's optimal lr (analysis/lr_rule.py's parabola vertex) and reports the spread max/min of
the optimal lr across widths per parametrization (Tensor Programs V: μP's stays put, SP's
drifts to smaller lr as width grows).
"""
from scaling.config import default_config
from scaling.errors import UserError
from scaling.sweeps import grid

WIDTHS = [64, 128, 256]
LRS = [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2]
TOKENS = 300_000
BASE_WIDTH = 64
ARGS = ("sp", "mup", "pilot")


def get_config(arg=None):
    c = default_config()
    c.name = "mup_transfer"
    c.model.base_width = BASE_WIDTH
    c.train.update(dict(batch_size=8, seq_len=128, tokens=TOKENS, warmup=0.05))
    c.log.every = 25
    c.eval.batches = 32
    if arg == "pilot":
        c.train.tokens = 40_000
        c.eval.batches = 8
    return c


def get_sweep(arg=None):
    if arg not in (None,) + ARGS:
        raise UserError(f"experiments/mup_transfer.py:{arg}: pick one of {', '.join(ARGS)} "
                        f"(or no :ARG for both parametrizations)")
    params = {None: ["sp", "mup"], "pilot": ["mup"]}.get(arg, [arg])
    widths, lrs = (WIDTHS[:2], LRS[2:5]) if arg == "pilot" else (WIDTHS, LRS)
    sizes = [grid.size(w, 2, 4, parametrization=p) for p in params for w in widths]
    return grid.product(sizes, {"train.lr": lrs})
