"""A tiny experiment for tests: 2 trials of a 1-layer d=32 model, seconds each."""
from scaling.config import default_config
from scaling.sweeps import grid


def get_config(arg=None):
    c = default_config()
    c.name = "tiny"
    c.model.update(dict(d_model=32, n_layers=1, n_heads=2))
    c.train.update(dict(batch_size=8, seq_len=32, steps=8, lr=3e-3))
    c.log.every = 2
    c.eval.batches = 2
    return c


def get_sweep(arg=None):
    n = int(arg) if arg else 2
    sizes = [grid.size(32, 1, 2), grid.size(48, 1, 3), grid.size(64, 1, 4)][:max(1, n // 2)]
    return grid.sizes_x_tokens(sizes, [8 * 8 * 32, 12 * 8 * 32][:min(2, n)])
