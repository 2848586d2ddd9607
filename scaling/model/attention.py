"""Causal self-attention (MHA, GQA, MQA; full, sliding, strided or linear) with an optional cache.

One module serves training and decoding (as in MaxText): without a cache it attends causally
over its own T tokens; given a layer's cache {"k", "v"} of S slots and an `index`, it writes the
T new keys/values at slots [index, index + T), attends over the whole cache under a mask, and
returns the updated cache (scaling/decode.py builds the mask and the positions).

`model.attention` (scaling.config.parse_attention) picks which keys a query at position t sees,
by the distance d = t - s to key s (`pattern_mask`; cache slots differ as positions do):
  full: d >= 0; sliding:W: 0 <= d < W (a local band of W keys, itself included);
  strided:S: d >= 0 and (d < S or d % S == 0) (Child et al. 2019: the last S keys plus every
  S-th before them, the union of their two heads in each head).
These are dense masks: compute is T^2 as for full (scaling/counting.py counts the keys a
sparse kernel would visit). `linear[:C]` (Katharopoulos et al. 2020) replaces softmax by the
feature map elu+1: out_t = phi(q_t) S_t / phi(q_t) z_t with S_t = sum_{s<=t} phi(k_s) v_s^T and
z_t = sum_{s<=t} phi(k_s); trained in chunks of C (quadratic inside a chunk, a running state
across chunks) and decoded from the recurrent state {"s", "z"} instead of a key/value cache.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.config import parse_attention, parse_rope_scaling
from scaling.model import mup
from scaling.model.positions import apply_rope

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def meta(*names):
    """Logical axis names of a parameter (sharding applied by the trainer, scaling/parallel/mesh.py)."""
    return {"out_sharding": names, "eager_sharding": False}


def normal(std):
    return jax.nn.initializers.normal(stddev=std)


def pattern_mask(kind: str, size: int, query_T1: jax.Array, key_1S: jax.Array) -> jax.Array:
    """Which keys each query sees under `model.attention` (see the module docstring), from
    query and key positions (or cache slots) that broadcast to [T, S]."""
    d_TS = query_T1 - key_1S
    if kind == "sliding":
        return (d_TS >= 0) & (d_TS < size)
    if kind == "strided":
        return (d_TS >= 0) & ((d_TS < size) | (d_TS % size == 0))
    return d_TS >= 0


def causal_attention_einsum(q_BTHK, k_BTGK, v_BTGK,
                            mask_TT: jax.Array | None = None,
                            divisor: float | None = None) -> jax.Array:
    """Causal (or `mask_TT`-masked) softmax attention as two einsums: what
    `jax.nn.dot_product_attention` computes.

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
    mask_TT = jnp.tril(jnp.ones((T, T), bool)) if mask_TT is None else mask_TT
    s_BHTS = jnp.where(mask_TT, s_BHTS / (divisor or math.sqrt(K)),
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


def linear_attention(q_BTHK, k_BTGK, v_BTGK, chunk: int, state: dict | None = None,
                     valid_BT: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Causal linear attention (elu+1 features) over T tokens after `state`; (out, new state).

    The T tokens are cut into N chunks of C = min(chunk, T): inside a chunk the masked C x C
    form, across chunks the running sums (exclusive cumsum over chunks), so the result is the
    recurrence of the module docstring for any C. `state` {"s": [B, H, K, K], "z": [B, H, K]}
    holds the sums of earlier tokens (None: none); tokens with `valid_BT` False (left padding)
    add nothing to it. Float32 throughout.
    """
    B, T, H, K = q_BTHK.shape
    rep = H // k_BTGK.shape[2]  # GQA/MQA: each key/value head serves `rep` query heads
    fk_BTHK = jnp.repeat(jax.nn.elu(k_BTGK.astype(jnp.float32)) + 1, rep, axis=2)
    v_BTHK = jnp.repeat(v_BTGK.astype(jnp.float32), rep, axis=2)
    fq_BTHK = jax.nn.elu(q_BTHK.astype(jnp.float32)) + 1
    if valid_BT is not None:
        fk_BTHK = fk_BTHK * valid_BT[:, :, None, None]
    C = min(chunk, T)
    N = -(-T // C)
    # Zero features at the end pad T to N*C: they add nothing, and their outputs are dropped.
    chunks = lambda x: jnp.pad(x, ((0, 0), (0, N * C - T), (0, 0), (0, 0))).reshape(  # noqa: E731
        B, N, C, H, K)
    fq, fk, v = chunks(fq_BTHK), chunks(fk_BTHK), chunks(v_BTHK)
    kv_BNHKK = jnp.einsum("bnchk,bnchj->bnhkj", fk, v)
    z_BNHK = fk.sum(axis=2)
    s0 = jnp.zeros((B, H, K, K), jnp.float32) if state is None else state["s"]
    z0 = jnp.zeros((B, H, K), jnp.float32) if state is None else state["z"]
    s_before = s0[:, None] + jnp.cumsum(kv_BNHKK, axis=1) - kv_BNHKK
    z_before = z0[:, None] + jnp.cumsum(z_BNHK, axis=1) - z_BNHK
    a_BNHCC = jnp.einsum("bnchk,bndhk->bnhcd", fq, fk) * jnp.tril(jnp.ones((C, C), jnp.float32))
    num = (jnp.einsum("bnhcd,bndhj->bnchj", a_BNHCC, v)
           + jnp.einsum("bnchk,bnhkj->bnchj", fq, s_before))
    den = a_BNHCC.sum(-1).transpose(0, 1, 3, 2) + jnp.einsum("bnchk,bnhk->bnch", fq, z_before)
    o_BTHK = (num / (den[..., None] + 1e-6)).reshape(B, N * C, H, K)[:, :T]
    return o_BTHK, {"s": s_before[:, -1] + kv_BNHKK[:, -1], "z": z_before[:, -1] + z_BNHK[:, -1]}


def layer_cache_shapes(cfg, batch: int, cache_len: int) -> dict[str, tuple[tuple, jnp.dtype]]:
    """{name: (shape, dtype)} of one layer's decoding cache: keys/values {"k", "v"} [B, S, G, K]
    in the compute dtype, or for linear attention the state {"s": [B, H, K, K], "z": [B, H, K]}
    in float32 (its size does not grow with S)."""
    H, G, K = cfg.n_heads, cfg.n_kv_heads, cfg.d_model // cfg.n_heads
    if parse_attention(getattr(cfg, "attention", "full"))[0] == "linear":
        return {"s": ((batch, H, K, K), jnp.float32), "z": ((batch, H, K), jnp.float32)}
    kv = ((batch, cache_len, G, K), DTYPES[cfg.dtype])
    return {"k": kv, "v": kv}


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
        self.rope_scaling = parse_rope_scaling(getattr(cfg, "rope_scaling", "none"))
        self.kind, self.size = parse_attention(getattr(cfg, "attention", "full"))
        self.divisor = mup.attention_divisor(cfg, K)  # None: sp's sqrt(K)
        self.scale = None if self.divisor is None else 1.0 / self.divisor

    def __call__(self, x_BTD: jax.Array, positions=None, cache: dict | None = None, index=0,
                 mask_BTS: jax.Array | None = None, start_B: jax.Array | None = None):
        """out [B, T, D]; with a cache, (out, updated cache).

        `positions` ([T] or [B, T]; default 0..T-1) only matter for rope. With `cache`
        ({"k", "v"}: [B, S, G, K] each), the new keys/values go to slots [index, index + T)
        and the queries attend to the S slots under `mask_BTS` (see `cache_mask`) and the
        attention pattern. Linear attention's cache is its state (`layer_cache_shapes`); rows'
        slots before `start_B` (left padding) stay out of it.
        """
        q_BTHK, k_BTGK, v_BTGK = self.wq(x_BTD), self.wk(x_BTD), self.wv(x_BTD)
        T = x_BTD.shape[1]
        if self.rope_theta is not None:
            pos = jnp.arange(T) if positions is None else positions
            q_BTHK = apply_rope(q_BTHK, pos, self.rope_theta, self.rope_scaling)
            k_BTGK = apply_rope(k_BTGK, pos, self.rope_theta, self.rope_scaling)
        if self.kind == "linear":
            valid_BT = None if cache is None or start_B is None else (
                (index + jnp.arange(T))[None, :] >= start_B[:, None])
            o_BTHK, state = linear_attention(q_BTHK, k_BTGK, v_BTGK, self.size, cache, valid_BT)
            return self.wo(o_BTHK.astype(x_BTD.dtype)) if cache is None else (
                self.wo(o_BTHK.astype(x_BTD.dtype)), state)
        if cache is not None:
            write = lambda c_BSGK, x_BTGK: jax.lax.dynamic_update_slice(  # noqa: E731
                c_BSGK, x_BTGK.astype(c_BSGK.dtype), (0, index, 0, 0))
            cache = {"k": write(cache["k"], k_BTGK), "v": write(cache["v"], v_BTGK)}
            S = cache["k"].shape[1]
            mask_BTS = mask_BTS & pattern_mask(self.kind, self.size,
                                               (index + jnp.arange(T))[:, None],
                                               jnp.arange(S)[None, :])[None]
            o_BTHK = jax.nn.dot_product_attention(q_BTHK, cache["k"], cache["v"],
                                                  mask=mask_BTS[:, None], scale=self.scale)
            return self.wo(o_BTHK), cache
        mask_TT = None if self.kind == "full" else pattern_mask(
            self.kind, self.size, jnp.arange(T)[:, None], jnp.arange(T)[None, :])
        if jax.default_backend() == "cpu":
            o_BTHK = causal_attention_einsum(q_BTHK, k_BTGK, v_BTGK, mask_TT, self.divisor)
        elif mask_TT is None:  # the library kernel: GQA and the causal mask; fused on accelerators
            o_BTHK = jax.nn.dot_product_attention(q_BTHK, k_BTGK, v_BTGK, is_causal=True,
                                                  scale=self.scale)
        else:
            o_BTHK = jax.nn.dot_product_attention(q_BTHK, k_BTGK, v_BTGK, mask=mask_TT[None, None],
                                                  scale=self.scale)
        return self.wo(o_BTHK)
