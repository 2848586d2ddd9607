"""Three identical-shape trials (seeds 0, 1, 2) of a tiny model, long enough to be killed mid-run.

`:STEPS` sets the steps per trial (default 150); checkpoints every 10 steps, a metrics line
every step, so a resumed trial's metrics.jsonl can be checked line by line.
"""
from scaling.config import default_config
from scaling.sweeps import grid


def get_config(arg=None):
    c = default_config()
    c.name = "killable"
    c.model.update(dict(d_model=32, n_layers=1, n_heads=2))
    c.train.update(dict(batch_size=4, seq_len=32, steps=int(arg or 150), lr=3e-3))
    c.log.every = 1
    c.eval.batches = 1
    c.checkpoint.every = 10
    return c


def get_sweep(arg=None):
    return grid.product({"train.seed": [0, 1, 2]})
