"""Shared test set-up: private data/compile caches, a tiny config, a CLI runner."""
import os
import subprocess
import sys
import tempfile

import pytest

# One KJV build and one compilation cache per test session, never the user's ~/.cache.
_SESSION_DIR = tempfile.mkdtemp(prefix="scaling-tests-")
os.environ.setdefault("SCALING_DATA_DIR", os.path.join(_SESSION_DIR, "data"))
os.environ.setdefault("SCALING_CACHE_DIR", os.path.join(_SESSION_DIR, "jax_cache"))

from scaling.startup import setup_jax  # noqa: E402
from scaling.config import default_config  # noqa: E402

setup_jax()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**model):
    """A model that trains a step in milliseconds: d=32, 1 layer, B=8, T=32."""
    c = default_config()
    c.model.update({**dict(d_model=32, n_layers=1, n_heads=2), **model})
    c.train.update(dict(batch_size=8, seq_len=32, steps=12, lr=3e-3))
    c.log.every = 2
    c.eval.batches = 2
    return c


@pytest.fixture
def tiny_cfg():
    return tiny_config()


def run_cli(*args, env=None, cwd=None, timeout=600):
    """Run `python -m scaling.cli ARGS` in a subprocess; returns CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "scaling.cli", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd or ROOT, timeout=timeout)
