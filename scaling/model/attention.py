"""Causal self-attention (MHA, GQA, MQA) with an optional key/value cache.

One module serves training and decoding (as in MaxText): without a cache it attends causally
over its own T tokens; given a layer's cache {"k", "v"} of S slots and an `index`, it writes the
T new keys/values at slots [index, index + T), attends over the whole cache under a mask, and
returns the updated cache (scaling/decode.py builds the mask and the positions).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.model import mup
from scaling.model.positions import apply_rope

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def meta(*names):
    """Logical axis names of a parameter (sharding applied by the trainer, scaling/parallel/mesh.py)."""
    return {"out_sharding": names, "eager_sharding": False}


def normal(std):
    return jax.nn.initializers.normal(stddev=std)


def causal_attention_einsum(q_BTHK, k_BTGK, v_BTGK, divisor: float | None = None) -> jax.Array:
    """Causal softmax attention as two einsums: what `jax.nn.dot_product_attention` computes.

    Used on CPU, where XLA runs this plain form ~13% faster per training step of a small model
    than the library's general path (which builds a full-size boolean mask and, for GQA, 5-D
    einsums); docs/benchmarks.md, "attention on CPU". Logits and softmax in float32. q·k is
    divided by `divisor` (default sqrt(K); μP passes its own, scaling/model/mup.py).
    """
    B, T, H, K = q_BTHK.shape
    if k_BTGK.shape[2] != H:  # GQA/MQA: share each key/value head among H/G query heads
        k_BTGK = jnp.repeat(k_BTGK, H // k_BTGK.shape[2], axis=2)
        v_BTGK = jnp.repeat(v_BTGK, H // v_BTGK.shape[2], axis=2)
    s_BHTS = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BTGK, preferred_element_type=jnp.float32)
    s_BHTS = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s_BHTS / (divisor or math.sqrt(K)),
                       jnp.finfo(jnp.float32).min)
    p_BHTS = jax.nn.softmax(s_BHTS, axis=-1).astype(v_BTGK.dtype)
    return jnp.einsum("bhts,bshk->bthk", p_BHTS, v_BTGK)


def cache_mask(index, T: int, S: int, start_B: jax.Array) -> jax.Array:
    """[B, T, S] mask for T queries at cache slots [index, index + T) over S cache slots.

    Causal over slots, hiding each row's left padding (slots before `start_B`). A padding query
    sees itself only, so no row of the mask is empty (its output is never used).
    """
    key_1S, query_T1 = jnp.arange(S)[None, :], (index + jnp.arange(T))[:, None]
    return (key_1S <= query_T1)[None] & (
        (key_1S[None] >= start_B[:, None, None]) | (key_1S == query_T1)[None])


class Attention(nnx.Module):
    """Causal self-attention with H query heads sharing G key/value heads (MHA, GQA, MQA)."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        D, H, G = cfg.d_model, cfg.n_heads, cfg.n_kv_heads
        K = D // H
        dtype, std = DTYPES[cfg.dtype], cfg.init_std
        out_std = std / math.sqrt(2 * cfg.n_layers)  # GPT-2: residual branches scaled by depth
        proj = lambda eq, shape, names, s: nnx.Einsum(  # noqa: E731
            eq, shape, dtype=dtype, kernel_init=normal(s), kernel_metadata=meta(*names), rngs=rngs)
        self.wq = proj("BTD,DHK->BTHK", (D, H, K), ("embed", "heads", "head_dim"), std)
        self.wk = proj("BTD,DGK->BTGK", (D, G, K), ("embed", "kv_heads", "head_dim"), std)
        self.wv = proj("BTD,DGK->BTGK", (D, G, K), ("embed", "kv_heads", "head_dim"), std)
        self.wo = proj("BTHK,HKD->BTD", (H, K, D), ("heads", "head_dim", "embed"), out_std)
        self.rope_theta = cfg.rope_theta if cfg.pos == "rope" else None
        self.divisor = mup.attention_divisor(cfg, K)  # None: sp's sqrt(K)
        self.scale = None if self.divisor is None else 1.0 / self.divisor

    def __call__(self, x_BTD: jax.Array, positions=None, cache: dict | None = None, index=0,
                 mask_BTS: jax.Array | None = None):
        """out [B, T, D]; with a cache, (out, updated cache).

        `positions` ([T] or [B, T]; default 0..T-1) only matter for rope. With `cache`
        ({"k", "v"}: [B, S, G, K] each), the new keys/values go to slots [index, index + T)
        and the queries attend to all S slots under `mask_BTS` (see `cache_mask`).
        """
        q_BTHK, k_BTGK, v_BTGK = self.wq(x_BTD), self.wk(x_BTD), self.wv(x_BTD)
        if self.rope_theta is not None:
            pos = jnp.arange(x_BTD.shape[1]) if positions is None else positions
            q_BTHK = apply_rope(q_BTHK, pos, self.rope_theta)
            k_BTGK = apply_rope(k_BTGK, pos, self.rope_theta)
        if cache is not None:
            write = lambda c_BSGK, x_BTGK: jax.lax.dynamic_update_slice(  # noqa: E731
                c_BSGK, x_BTGK.astype(c_BSGK.dtype), (0, index, 0, 0))
            cache = {"k": write(cache["k"], k_BTGK), "v": write(cache["v"], v_BTGK)}
            o_BTHK = jax.nn.dot_product_attention(q_BTHK, cache["k"], cache["v"],
                                                  mask=mask_BTS[:, None], scale=self.scale)
            return self.wo(o_BTHK), cache
        if jax.default_backend() == "cpu":
            o_BTHK = causal_attention_einsum(q_BTHK, k_BTGK, v_BTGK, self.divisor)
        else:  # the library kernel: GQA (G divides H) and the causal mask; fused on accelerators
            o_BTHK = jax.nn.dot_product_attention(q_BTHK, k_BTGK, v_BTGK, is_causal=True,
                                                  scale=self.scale)
        return self.wo(o_BTHK)
