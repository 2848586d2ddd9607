"""Position information: rotary (applied to queries/keys), sinusoidal and learned (added to x).

`positions` are token positions within their sequence: [T] shared by the batch (training), or
[B, T] per row (KV-cached decoding of left-padded prompts, scaling/decode.py).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def sinusoidal_positions(positions: int | jax.Array, D: int) -> jax.Array:
    """The fixed sin/cos embedding of Vaswani et al. 2017: [T, D] for positions 0..T-1 given an
    int T, or [..., D] for an int array of positions."""
    pos = (jnp.arange(positions, dtype=jnp.float32) if isinstance(positions, int)
           else positions.astype(jnp.float32))
    inv_freq = jnp.exp(-math.log(10000.0) * jnp.arange(0, D, 2, dtype=jnp.float32) / D)
    ang_XD2 = pos[..., None] * inv_freq
    return jnp.concatenate([jnp.sin(ang_XD2), jnp.cos(ang_XD2)], axis=-1)[..., :D]


def apply_rope(x_BTNK: jax.Array, positions_T: jax.Array, theta: float,
               scaling: tuple[str, float] = ("none", 1.0)) -> jax.Array:
    """Rotary position embedding (Su et al. 2021), rotating pairs (i, i + K/2).

    `positions_T` is [T] (shared by the batch) or [B, T] (per row, as in KV-cached decoding).
    `scaling` (kind, s) extends the context s-fold (config.parse_rope_scaling): "linear"
    interpolates positions p -> p / s (Chen et al. 2023), "ntk" raises the base to
    theta * s^(K/(K-2)) so the lowest frequency is interpolated s-fold and the highest kept.
    """
    K = x_BTNK.shape[-1]
    kind, s = scaling
    if kind == "ntk":
        theta = theta * s ** (K / max(K - 2, 1))
    inv_freq = theta ** (-jnp.arange(0, K, 2, dtype=jnp.float32) / K)
    pos = positions_T.astype(jnp.float32)
    pos = pos / s if kind == "linear" else pos
    ang_BTK2 = pos[..., None] * inv_freq
    ang_BTK2 = ang_BTK2 if ang_BTK2.ndim == 3 else ang_BTK2[None]
    sin, cos = jnp.sin(ang_BTK2)[:, :, None, :], jnp.cos(ang_BTK2)[:, :, None, :]
    x1, x2 = jnp.split(x_BTNK.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNK.dtype)


def position_embeddings(kind: str, positions: int | jax.Array, D: int,
                        table_XD: jax.Array | None = None, init_std: float = 1.0
                        ) -> jax.Array | None:
    """What position scheme `kind` adds to the token embeddings, or None (rope adds nothing).

    `positions` is an int T (positions 0..T-1: [T, D], a static slice of the learned table on
    the training path) or an int array [B, T] (-> [B, T, D]). `table_XD` is the learned
    [max_len, D] table (kind "learned"). The sinusoid is scaled to per-coordinate RMS
    `init_std`, the token embeddings' own scale: Vaswani et al. scale tokens up by sqrt(D)
    instead, and a unit sinusoid added to GPT-2-style 0.02 embeddings swamps them ~35-fold
    (measured: 0.8 nats worse than RoPE at d64 on KJV, docs/results.md "Context extension").
    """
    if kind == "learned":
        return table_XD[:positions] if isinstance(positions, int) else table_XD[positions]
    if kind == "sinusoidal":
        return math.sqrt(2.0) * init_std * sinusoidal_positions(positions, D)
    return None
