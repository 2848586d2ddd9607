"""A tiny warmup-stable-decay sweep: one size, budgets of 20k and 40k steps of 128 tokens
(`:K`, default 1), so a trunk of 32k steps and two cooldown branches; checkpoints every 10 steps
and a metrics line every step (killable mid-trunk)."""
from scaling.config import default_config
from scaling.sweeps import grid


def get_config(arg=None):
    c = default_config()
    c.name = "wsd"
    c.model.update(dict(d_model=32, n_layers=1, n_heads=2))
    c.train.update(dict(batch_size=4, seq_len=32, lr=3e-3))
    c.log.every = 1
    c.eval.batches = 1
    c.checkpoint.every = 10
    return c


def get_sweep(arg=None):
    k = int(arg or 1)
    return grid.wsd([grid.size(32, 1, 2)], tokens=[20 * k * 128, 40 * k * 128])
