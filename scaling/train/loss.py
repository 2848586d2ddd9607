"""The LM loss: next-token cross-entropy from the final hidden states, optionally in chunks.

With a large vocabulary the float32 logits [B, T, V] dominate a step's memory (B*T = 8k tokens at
V = 50,257: 1.6 GB, plus as much again for their gradient). `token_cross_entropy` with a chunk of
C positions projects and reduces C positions of every row at a time inside a `lax.map`; each
chunk is a `jax.checkpoint`, so the backward pass recomputes that chunk's logits instead of
keeping them, and at most one chunk's [B, C, V] logits (and their gradient) are live. Per-token
losses are the same numbers as the unchunked path (up to float rounding; tests/test_loss.py).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

# `train.loss_chunk = -1` (auto): chunk only when the vocabulary is at least this large; below
# it the logits are small and the chunk loop's recomputation (one more head matmul) is waste.
AUTO_MIN_VOCAB = 8192
AUTO_CHUNK = 128


def loss_chunk(cfg) -> int:
    """Positions per loss chunk for `cfg` (0 = unchunked), resolving `train.loss_chunk = -1`."""
    chunk = cfg.train.loss_chunk
    if chunk < 0:
        chunk = AUTO_CHUNK if cfg.model.vocab_size >= AUTO_MIN_VOCAB else 0
    return 0 if chunk >= cfg.train.seq_len else chunk


def token_cross_entropy(logits_fn: Callable[[jax.Array], jax.Array], x_BTD: jax.Array,
                        labels_BT: jax.Array, chunk: int = 0) -> jax.Array:
    """Cross-entropy [B, T] float32 of `logits_fn(x)` (hidden [.., D] -> logits [.., V]).

    `chunk` > 0: C = `chunk` positions at a time (T padded up to a multiple of C; the padding's
    losses are dropped), so the [B, T, V] logits are never materialised.
    """
    def ce(x_BCD, labels_BC):
        return optax.softmax_cross_entropy_with_integer_labels(logits_fn(x_BCD), labels_BC)

    B, T, D = x_BTD.shape
    if not chunk or chunk >= T:
        return ce(x_BTD, labels_BT)
    n = -(-T // chunk)
    pad = n * chunk - T
    x_BTD = jnp.pad(x_BTD, ((0, 0), (0, pad), (0, 0)))
    labels_BT = jnp.pad(labels_BT, ((0, 0), (0, pad)))
    # Chunks on a leading axis: [n, B, C, ...]; the batch axis (and its sharding) is untouched.
    x_NBCD = x_BTD.reshape(B, n, chunk, D).swapaxes(0, 1)
    labels_NBC = labels_BT.reshape(B, n, chunk).swapaxes(0, 1)
    losses_NBC = jax.lax.map(lambda a: jax.checkpoint(ce)(*a), (x_NBCD, labels_NBC))
    return losses_NBC.swapaxes(0, 1).reshape(B, n * chunk)[:, :T]
