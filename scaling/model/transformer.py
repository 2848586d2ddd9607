"""A decoder-only Transformer LM in Flax NNX, readable top to bottom.

Tensor names carry their shapes: B batch, T sequence, D d_model, H query heads, G key/value heads,
K head dim, F d_ff, V vocab, L layers. Parameters are float32; `model.dtype` is the compute dtype.
Every parameter carries logical axis names (`sharding_names`); `scaling.mesh` maps them to mesh
axes in one table. Layers are stacked on a leading `layers` axis and applied with `nnx.scan`, so
compile time does not grow with depth.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# `model.remat`: what a block keeps for the backward pass. "full" saves nothing (recomputes the
# whole block, ~1/3 more FLOPs); "dots_saveable" saves matmul outputs and recomputes only the
# cheap elementwise ops (norms, GELU, softmax).
REMAT_POLICIES = {"none": "none", "full": None,
                  "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def _meta(*names):
    # Sharding is applied by the trainer from these names (see scaling/mesh.py), not eagerly here.
    return {"out_sharding": names, "eager_sharding": False}


def _normal(std):
    return jax.nn.initializers.normal(stddev=std)


def sinusoidal_positions(T: int, D: int) -> jax.Array:
    """The fixed sin/cos table of Vaswani et al. 2017, shape [T, D]."""
    pos_T1 = jnp.arange(T, dtype=jnp.float32)[:, None]
    inv_freq = jnp.exp(-math.log(10000.0) * jnp.arange(0, D, 2, dtype=jnp.float32) / D)
    ang_TD2 = pos_T1 * inv_freq[None, :]
    return jnp.concatenate([jnp.sin(ang_TD2), jnp.cos(ang_TD2)], axis=-1)[:, :D]


def apply_rope(x_BTNK: jax.Array, positions_T: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding (Su et al. 2021), rotating pairs (i, i + K/2).

    `positions_T` is [T] (shared by the batch) or [B, T] (per row, as in KV-cached decoding).
    """
    K = x_BTNK.shape[-1]
    inv_freq = theta ** (-jnp.arange(0, K, 2, dtype=jnp.float32) / K)
    ang_BTK2 = positions_T.astype(jnp.float32)[..., None] * inv_freq
    ang_BTK2 = ang_BTK2 if ang_BTK2.ndim == 3 else ang_BTK2[None]
    sin, cos = jnp.sin(ang_BTK2)[:, :, None, :], jnp.cos(ang_BTK2)[:, :, None, :]
    x1, x2 = jnp.split(x_BTNK.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNK.dtype)


def causal_attention_einsum(q_BTHK, k_BTGK, v_BTGK) -> jax.Array:
    """Causal softmax attention as two einsums: what `jax.nn.dot_product_attention` computes.

    Used on CPU, where XLA runs this plain form ~13% faster per training step of a small model
    than the library's general path (which builds a full-size boolean mask and, for GQA, 5-D
    einsums); docs/benchmarks.md, "attention on CPU". Logits and softmax in float32.
    """
    B, T, H, K = q_BTHK.shape
    if k_BTGK.shape[2] != H:  # GQA/MQA: share each key/value head among H/G query heads
        k_BTGK = jnp.repeat(k_BTGK, H // k_BTGK.shape[2], axis=2)
        v_BTGK = jnp.repeat(v_BTGK, H // v_BTGK.shape[2], axis=2)
    s_BHTS = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BTGK, preferred_element_type=jnp.float32)
    s_BHTS = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s_BHTS / math.sqrt(K),
                       jnp.finfo(jnp.float32).min)
    p_BHTS = jax.nn.softmax(s_BHTS, axis=-1).astype(v_BTGK.dtype)
    return jnp.einsum("bhts,bshk->bthk", p_BHTS, v_BTGK)


def make_norm(cfg, rngs: nnx.Rngs) -> nnx.Module:
    dtype = DTYPES[cfg.dtype]
    if cfg.norm == "rmsnorm":
        return nnx.RMSNorm(cfg.d_model, epsilon=cfg.norm_eps, dtype=dtype, rngs=rngs,
                           scale_metadata=_meta("embed"))
    return nnx.LayerNorm(cfg.d_model, epsilon=cfg.norm_eps, dtype=dtype, rngs=rngs,
                         scale_metadata=_meta("embed"), bias_metadata=_meta("embed"))


class Attention(nnx.Module):
    """Causal self-attention with H query heads sharing G key/value heads (MHA, GQA, MQA)."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        D, H, G = cfg.d_model, cfg.n_heads, cfg.n_kv_heads
        K = D // H
        dtype, std = DTYPES[cfg.dtype], cfg.init_std
        out_std = std / math.sqrt(2 * cfg.n_layers)  # GPT-2: residual branches scaled by depth
        proj = lambda eq, shape, names, s: nnx.Einsum(  # noqa: E731
            eq, shape, dtype=dtype, kernel_init=_normal(s), kernel_metadata=_meta(*names), rngs=rngs)
        self.wq = proj("BTD,DHK->BTHK", (D, H, K), ("embed", "heads", "head_dim"), std)
        self.wk = proj("BTD,DGK->BTGK", (D, G, K), ("embed", "kv_heads", "head_dim"), std)
        self.wv = proj("BTD,DGK->BTGK", (D, G, K), ("embed", "kv_heads", "head_dim"), std)
        self.wo = proj("BTHK,HKD->BTD", (H, K, D), ("heads", "head_dim", "embed"), out_std)
        self.rope_theta = cfg.rope_theta if cfg.pos == "rope" else None

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        q_BTHK, k_BTGK, v_BTGK = self.wq(x_BTD), self.wk(x_BTD), self.wv(x_BTD)
        if self.rope_theta is not None:
            pos_T = jnp.arange(x_BTD.shape[1])
            q_BTHK = apply_rope(q_BTHK, pos_T, self.rope_theta)
            k_BTGK = apply_rope(k_BTGK, pos_T, self.rope_theta)
        if jax.default_backend() == "cpu":
            o_BTHK = causal_attention_einsum(q_BTHK, k_BTGK, v_BTGK)
        else:  # the library kernel: GQA (G divides H) and the causal mask; fused on accelerators
            o_BTHK = jax.nn.dot_product_attention(q_BTHK, k_BTGK, v_BTGK, is_causal=True)
        return self.wo(o_BTHK)

    def decode(self, x_BTD, k_BSGK, v_BSGK, index, pos_BT, mask_BTS):
        """`__call__` for T new tokens with a key/value cache of S slots (scaling/decode.py).

        The new keys/values are written at cache slots [index, index + T); the queries attend
        to the cache under `mask_BTS` (causal, minus left padding), and rope rotates by the
        absolute positions `pos_BT`. Returns (out_BTD, k_BSGK, v_BSGK).
        """
        q_BTHK, k_BTGK, v_BTGK = self.wq(x_BTD), self.wk(x_BTD), self.wv(x_BTD)
        if self.rope_theta is not None:
            q_BTHK = apply_rope(q_BTHK, pos_BT, self.rope_theta)
            k_BTGK = apply_rope(k_BTGK, pos_BT, self.rope_theta)
        write = lambda c_BSGK, x_BTGK: jax.lax.dynamic_update_slice(  # noqa: E731
            c_BSGK, x_BTGK.astype(c_BSGK.dtype), (0, index, 0, 0))
        k_BSGK, v_BSGK = write(k_BSGK, k_BTGK), write(v_BSGK, v_BTGK)
        o_BTHK = jax.nn.dot_product_attention(q_BTHK, k_BSGK, v_BSGK, mask=mask_BTS[:, None])
        return self.wo(o_BTHK), k_BSGK, v_BSGK


class MLP(nnx.Module):
    """GELU MLP (D -> F -> D) or SwiGLU (Shazeer 2020: silu(x W0) * (x W1) -> D)."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        D, F = cfg.d_model, cfg.d_ff
        dtype, std = DTYPES[cfg.dtype], cfg.init_std
        out_std = std / math.sqrt(2 * cfg.n_layers)
        lin = lambda i, o, names, s: nnx.Linear(  # noqa: E731
            i, o, use_bias=False, dtype=dtype, kernel_init=_normal(s),
            kernel_metadata=_meta(*names), rngs=rngs)
        self.swiglu = cfg.mlp == "swiglu"
        self.wi = lin(D, F, ("embed", "mlp"), std)
        if self.swiglu:
            self.wg = lin(D, F, ("embed", "mlp"), std)
        self.wo = lin(F, D, ("mlp", "embed"), out_std)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        h_BTF = self.wi(x_BTD)
        h_BTF = jax.nn.silu(self.wg(x_BTD)) * h_BTF if self.swiglu else jax.nn.gelu(h_BTF)
        return self.wo(h_BTF)


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        self.norm1, self.attn = make_norm(cfg, rngs), Attention(cfg, rngs)
        self.norm2, self.mlp = make_norm(cfg, rngs), MLP(cfg, rngs)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        x_BTD = x_BTD + self.attn(self.norm1(x_BTD))
        return x_BTD + self.mlp(self.norm2(x_BTD))

    def decode(self, x_BTD, k_BSGK, v_BSGK, index, pos_BT, mask_BTS):
        """`__call__` with a key/value cache (see `Attention.decode`); returns (x, k, v)."""
        a_BTD, k_BSGK, v_BSGK = self.attn.decode(self.norm1(x_BTD), k_BSGK, v_BSGK, index,
                                                 pos_BT, mask_BTS)
        x_BTD = x_BTD + a_BTD
        return x_BTD + self.mlp(self.norm2(x_BTD)), k_BSGK, v_BSGK


class Transformer(nnx.Module):
    """Token ids [B, T] -> next-token logits [B, T, V] (float32)."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        self.cfg = cfg
        D, V = cfg.d_model, cfg.vocab_size
        dtype = DTYPES[cfg.dtype]
        self.embed = nnx.Embed(V, D, dtype=dtype, embedding_init=_normal(cfg.init_std),
                               embedding_metadata=_meta("vocab", "embed"), rngs=rngs)
        if cfg.pos == "learned":
            self.pos_embed = nnx.Param(_normal(cfg.init_std)(rngs.params(), (cfg.max_len, D)),
                                       **_meta(None, "embed"))

        @nnx.split_rngs(splits=cfg.n_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_blocks(rngs):
            return Block(cfg, rngs)

        self.blocks = make_blocks(rngs)
        self.final_norm = make_norm(cfg, rngs)
        if not cfg.tie_embeddings:
            self.head = nnx.Linear(D, V, use_bias=False, dtype=dtype,
                                   kernel_init=_normal(cfg.init_std),
                                   kernel_metadata=_meta("embed", "vocab"), rngs=rngs)

    def __call__(self, tokens_BT: jax.Array) -> jax.Array:
        x_BTD = self.embed_inputs(tokens_BT)

        policy = REMAT_POLICIES.get(getattr(self.cfg, "remat", "none"), "none")

        def apply(block, x_BTD):
            if policy == "none":
                return block(x_BTD)
            # Gradient checkpointing: keep only what `policy` saves of each block's forward pass
            # and recompute the rest in the backward pass (memory for compute).
            return nnx.remat(lambda b, x: b(x), policy=policy)(block, x_BTD)

        # `scan_unroll` layers per loop iteration. A rolled loop compiles in time flat in depth;
        # unrolled, XLA fuses across layers and nothing is stacked per layer, which on CPU is
        # worth 25-40% of the step. 0 = auto: unrolled, except with remat, whose memory saving
        # XLA only keeps inside a loop (docs/benchmarks.md, "scan vs unrolled", "remat").
        unroll = getattr(self.cfg, "scan_unroll", 0) or (
            self.cfg.n_layers if policy == "none" else 1)
        if unroll >= self.cfg.n_layers:
            # A Python loop over static slices of the stacked parameters: unlike
            # lax.scan(unroll=L), it does not stack every layer's residuals into [L, ...] buffers.
            graphdef, state = nnx.split(self.blocks)
            for i in range(self.cfg.n_layers):
                x_BTD = apply(nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state)), x_BTD)
            return self.logits(x_BTD)

        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry, unroll=unroll)
        def run_blocks(x_BTD, block):
            return apply(block, x_BTD)

        return self.logits(run_blocks(x_BTD, self.blocks))

    # The two ends of the network, also used by the pipeline-parallel path (scaling/pipeline.py),
    # which runs `self.blocks` itself in stages.
    def embed_inputs(self, tokens_BT: jax.Array) -> jax.Array:
        """Token ids [B, T] -> token (+ position) embeddings [B, T, D]."""
        cfg = self.cfg
        T = tokens_BT.shape[1]
        x_BTD = self.embed(tokens_BT)
        if cfg.pos == "learned":
            x_BTD = x_BTD + self.pos_embed[:T].astype(x_BTD.dtype)
        elif cfg.pos == "sinusoidal":
            x_BTD = x_BTD + sinusoidal_positions(T, cfg.d_model).astype(x_BTD.dtype)
        return x_BTD

    def logits(self, x_BTD: jax.Array) -> jax.Array:
        """Final norm and output projection: [B, T, D] -> float32 logits [B, T, V]."""
        x_BTD = self.final_norm(x_BTD)
        logits_BTV = self.embed.attend(x_BTD) if self.cfg.tie_embeddings else self.head(x_BTD)
        return logits_BTV.astype(jnp.float32)


def abstract_model(cfg_model) -> Transformer:
    """The Transformer for `cfg_model` with shape/dtype leaves only (no memory, no compute).

    The one way to get its graphdef, parameter shapes and logical partition specs: for
    shardings, optimizer-state shapes and checkpoint restore targets.
    """
    return nnx.eval_shape(lambda: Transformer(cfg_model, nnx.Rngs(params=0)))
