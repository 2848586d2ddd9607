"""Trials that may train as one vectorised group: 4 seeds (default) or, with ARG lr, 4 lrs, of a
1-layer d=32 model (tests/test_vectorized.py)."""
from scaling.config import default_config


def get_config(arg=None):
    c = default_config()
    c.name = "vector"
    c.model.update(dict(d_model=32, n_layers=1, n_heads=2))
    c.train.update(dict(batch_size=8, seq_len=32, steps=8, lr=3e-3))
    c.log.every = 2
    c.eval.batches = 2
    return c


def get_sweep(arg=None):
    if arg == "lr":
        return [{"train.lr": lr} for lr in (1e-3, 2e-3, 4e-3, 8e-3)]
    return [{"train.seed": s} for s in range(4)]
