"""Chunked cross-entropy: the same loss and gradients as the unchunked path, far less memory."""
import jax
import numpy as np
import pytest

from conftest import tiny_config
from scaling.bench.ce_memory import loss_memory
from scaling.config import resolve
from scaling.errors import UserError
from scaling.parallel.mesh import make_mesh
from scaling.train.loss import loss_chunk
from scaling.train.step import Trainer


@pytest.mark.parametrize("tie", [True, False])
def test_chunked_loss_and_grads_equal_unchunked(tie):
    cfg = resolve(tiny_config(tie_embeddings=tie, vocab_size=300))
    trainer = Trainer(cfg, make_mesh(cfg.mesh, jax.devices()[:1]))
    params = trainer.init(0)["params"]
    tokens = np.random.default_rng(0).integers(0, 300, (8, 33), dtype=np.int32)

    def loss_and_grads(chunk):
        trainer.loss_chunk = chunk  # read when `_loss` is traced
        objective = lambda p, t: trainer._loss(p, t)[0]  # noqa: E731  (_loss: objective, aux)
        return jax.jit(jax.value_and_grad(objective))(params, tokens)

    loss0, g0 = loss_and_grads(0)
    for chunk in (8, 12):  # 12 does not divide T = 32: the padded path
        loss1, g1 = loss_and_grads(chunk)
        np.testing.assert_allclose(float(loss1), float(loss0), rtol=1e-5)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g0), jax.tree.leaves(g1)):
            a, b = np.asarray(a), np.asarray(b)
            # relative to the leaf's scale: elementwise rtol is meaningless for entries near 0
            err = np.abs(b - a).max() / max(np.abs(a).max(), 1e-30)
            assert err <= 1e-5, (chunk, jax.tree_util.keystr(path), err)


def test_auto_chunk_only_for_large_vocabularies():
    cfg = tiny_config()
    assert cfg.train.loss_chunk == -1 and loss_chunk(cfg) == 0       # byte vocab: unchunked
    cfg.model.vocab_size, cfg.train.seq_len = 50257, 1024
    assert loss_chunk(cfg) == 128
    cfg.train.loss_chunk = 0
    assert loss_chunk(cfg) == 0
    cfg.train.loss_chunk = 4096                                      # >= seq_len: one chunk
    assert loss_chunk(cfg) == 0
    cfg.train.loss_chunk = -2
    with pytest.raises(UserError, match="train.loss_chunk must be >= 0"):
        resolve(cfg)


def test_chunked_loss_temp_memory_at_gpt2_vocab():
    """V = 50,257, B x T = 8 x 1024: XLA's temp buffers >= 4x smaller with the default chunk."""
    cfg = tiny_config(vocab_size=50257)
    cfg.train.seq_len = 1024
    chunk = loss_chunk(cfg)
    full = loss_memory(50257, 8, 1024, 32, 0)["temp_bytes"]
    chunked = loss_memory(50257, 8, 1024, 32, chunk)["temp_bytes"]
    assert full >= 2 * 8 * 1024 * 50257 * 4 * 0.9   # the logits and their gradient
    assert full >= 4 * chunked, (full, chunked)
