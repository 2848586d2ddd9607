"""A decoder-only Transformer LM in Flax NNX, readable top to bottom.

Tensor names carry their shapes: B batch, T sequence, D d_model, H query heads, G key/value heads,
K head dim, F d_ff, V vocab, L layers, S key/value cache slots. Parameters are float32;
`model.dtype` is the compute dtype. Every parameter carries logical axis names (`sharding_names`);
scaling/parallel/mesh.py maps them to mesh axes in one table. Layers are stacked on a leading
`layers` axis; `__call__` runs them as an unrolled loop or an `nnx.scan` (`model.scan_unroll`).

Attention (with its optional key/value cache) is in scaling/model/attention.py, positions in
scaling/model/positions.py. The same `__call__` trains and decodes: given a cache it returns the
logits of the new tokens and the updated cache (scaling/decode.py).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.model import mup
from scaling.model.attention import (DTYPES, Attention, cache_mask, layer_cache_shapes, meta,
                                     normal)
from scaling.model.moe import STATS, MoE, moe_experts
from scaling.model.positions import position_embeddings

# `model.remat`: what a block keeps for the backward pass. "full" saves nothing (recomputes the
# whole block, ~1/3 more FLOPs); "dots_saveable" saves matmul outputs and recomputes only the
# cheap elementwise ops (norms, GELU, softmax).
REMAT_POLICIES = {"none": "none", "full": None,
                  "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def make_norm(cfg, rngs: nnx.Rngs) -> nnx.Module:
    dtype = DTYPES[cfg.dtype]
    if cfg.norm == "rmsnorm":
        return nnx.RMSNorm(cfg.d_model, epsilon=cfg.norm_eps, dtype=dtype, rngs=rngs,
                           scale_metadata=meta("embed"))
    return nnx.LayerNorm(cfg.d_model, epsilon=cfg.norm_eps, dtype=dtype, rngs=rngs,
                         scale_metadata=meta("embed"), bias_metadata=meta("embed"))


class MLP(nnx.Module):
    """GELU MLP (D -> F -> D) or SwiGLU (Shazeer 2020: silu(x W0) * (x W1) -> D)."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        D, F = cfg.d_model, cfg.d_ff
        dtype, std = DTYPES[cfg.dtype], cfg.init_std
        out_std = std / math.sqrt(2 * cfg.n_layers)
        lin = lambda i, o, names, s: nnx.Linear(  # noqa: E731
            i, o, use_bias=False, dtype=dtype, kernel_init=normal(s),
            kernel_metadata=meta(*names), rngs=rngs)
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
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)); the MLP is a
    mixture of experts (scaling/model/moe.py) when `moe`."""

    def __init__(self, cfg, rngs: nnx.Rngs, moe: bool = False):
        self.norm1, self.attn = make_norm(cfg, rngs), Attention(cfg, rngs)
        self.norm2, self.mlp = make_norm(cfg, rngs), (MoE if moe else MLP)(cfg, rngs)

    def __call__(self, x_BTD: jax.Array, cache: dict | None = None, **attn_kw):
        """x [B, T, D]; with a cache (see `Attention`), (x, updated cache)."""
        x_BTD, cache, _ = self.forward(x_BTD, cache, **attn_kw)
        return x_BTD if cache is None else (x_BTD, cache)

    def forward(self, x_BTD: jax.Array, cache: dict | None = None, **attn_kw):
        """(x, updated cache or None, MoE statistics: {} for a dense MLP)."""
        a_BTD = self.attn(self.norm1(x_BTD), cache=cache, **attn_kw)
        if cache is not None:
            a_BTD, cache = a_BTD
        x_BTD = x_BTD + a_BTD
        m_BTD, stats = _as_pair(self.mlp(self.norm2(x_BTD)))
        return x_BTD + m_BTD, cache, stats


def _as_pair(out) -> tuple[jax.Array, dict]:
    return out if isinstance(out, tuple) else (out, {})


def _no_cache(out):
    """(x, cache, stats) -> (x, stats)."""
    return out[0], out[2]


class BlockGroup(nnx.Module):
    """`model.moe.every` consecutive blocks, the last with a MoE MLP: the unit the layer stack
    repeats when MoE layers alternate with dense ones (stacked layers must be alike)."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        self.every = cfg.moe.every
        # Named attributes rather than an nnx.List: nnx.capture (scaling/train/step.py) fails to
        # sort a state mixing the List's int keys with its own string keys (flax 0.12.8).
        for j in range(self.every):
            setattr(self, f"layer{j}", Block(cfg, rngs, moe=j == self.every - 1))

    def __call__(self, x_BTD: jax.Array, cache: dict | None = None, **attn_kw):
        x_BTD, cache, _ = self.forward(x_BTD, cache, **attn_kw)
        return x_BTD if cache is None else (x_BTD, cache)

    def forward(self, x_BTD: jax.Array, cache: dict | None = None, **attn_kw):
        """As `Block.forward`, with cache leaves [every, ...]."""
        caches, stats = [], {}
        for j in range(self.every):
            layer = getattr(self, f"layer{j}")
            c = None if cache is None else jax.tree.map(lambda a: a[j], cache)  # noqa: B023
            x_BTD, c, s = layer.forward(x_BTD, c, **attn_kw)
            caches.append(c)
            stats = s or stats
        if cache is not None:
            cache = jax.tree.map(lambda *c: jnp.stack(c), *caches)
        return x_BTD, cache, stats


def layer_unit(cfg_model) -> int:
    """Layers per element of the stack `Transformer.blocks`: `moe.every` for alternating MoE
    layers, else 1."""
    return cfg_model.moe.every if moe_experts(cfg_model) and cfg_model.moe.every > 1 else 1


def init_cache(cfg_model, batch: int, cache_len: int) -> dict[str, jax.Array]:
    """A zeroed cache for `Transformer.__call__`: "k", "v" each [L, B, S, G, K] (linear
    attention: its state, `attention.layer_cache_shapes`, with a leading L)."""
    shapes = layer_cache_shapes(cfg_model, batch, cache_len)
    return {name: jnp.zeros((cfg_model.n_layers, *shape), dtype)
            for name, (shape, dtype) in shapes.items()}


class Transformer(nnx.Module):
    """Token ids [B, T] -> next-token logits [B, T, V] (float32); optionally KV-cached."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        self.cfg = cfg
        D, V = cfg.d_model, cfg.vocab_size
        dtype = DTYPES[cfg.dtype]
        self.embed = nnx.Embed(V, D, dtype=dtype, embedding_init=normal(cfg.init_std),
                               embedding_metadata=meta("vocab", "embed"), rngs=rngs)
        if cfg.pos == "learned":
            self.pos_embed = nnx.Param(normal(cfg.init_std)(rngs.params(), (cfg.max_len, D)),
                                       **meta(None, "embed"))

        unit = layer_unit(cfg)

        @nnx.split_rngs(splits=cfg.n_layers // unit)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_blocks(rngs):
            return BlockGroup(cfg, rngs) if unit > 1 else Block(cfg, rngs, moe_experts(cfg) > 0)

        self.blocks = make_blocks(rngs)
        self.final_norm = make_norm(cfg, rngs)
        if not cfg.tie_embeddings:
            self.head = nnx.Linear(D, V, use_bias=False, dtype=dtype,
                                   kernel_init=normal(cfg.init_std),
                                   kernel_metadata=meta("embed", "vocab"), rngs=rngs)
        if cfg.parametrization == "mup":
            self._scale_hidden_init(mup.hidden_init_scale(cfg))

    def _scale_hidden_init(self, factor: float) -> None:
        """μP init: the sp draws of the hidden matrices times `factor` (scaling/model/mup.py)."""
        params = nnx.state(self, nnx.Param)
        labels = mup.param_labels(nnx.get_partition_spec(params))
        nnx.update(self, jax.tree.map(
            lambda p, label: p * factor if label == mup.HIDDEN else p, params, labels))

    def __call__(self, tokens_BT: jax.Array, cache: dict | None = None, index=0,
                 start_B: jax.Array | None = None):
        """Logits [B, T, V]; with a cache (`init_cache`), (logits, updated cache).

        With a cache, `tokens_BT` sit at cache slots [index, index + T) and the earlier slots
        must hold the keys/values of the earlier tokens (prefill: index 0, the whole prompt).
        `start_B` is each row's first real slot (left-padded rows; default 0): row b's tokens
        get positions `slot - start_b`, and its slots before `start_b` are masked out. The
        logits equal those of the uncached pass over the unpadded sequence.
        """
        if cache is None:
            return self.logits(self.run_blocks(self.embed_inputs(tokens_BT)))
        B, T = tokens_BT.shape
        S = cache["k"].shape[2] if "k" in cache else 0  # linear attention: a state, no slots
        start_B = jnp.zeros((B,), jnp.int32) if start_B is None else start_B
        slot_T = index + jnp.arange(T)
        pos_BT = jnp.maximum(slot_T[None, :] - start_B[:, None], 0)  # pads (negative) get 0
        x_BTD, cache = self.run_blocks(self.embed_inputs(tokens_BT, pos_BT), cache,
                                       positions=pos_BT, index=index,
                                       mask_BTS=cache_mask(index, T, S, start_B), start_B=start_B)
        return self.logits(x_BTD), cache

    def run_blocks(self, x_BTD: jax.Array, cache: dict | None = None, **attn_kw):
        """The L blocks on x [B, T, D]; with a cache ([L, ...] leaves), (x, updated cache).

        With MoE layers and no cache, their statistics (`scaling.model.moe.STATS`, averaged over
        the MoE layers) are sown as the intermediate "moe" (read with `nnx.capture(model,
        nnx.Intermediate)`, as scaling/train/step.py does)."""
        policy = REMAT_POLICIES.get(getattr(self.cfg, "remat", "none"), "none")

        def apply(block, x_BTD, layer_cache):
            if policy == "none" or layer_cache is not None:
                return block.forward(x_BTD, layer_cache, **attn_kw)
            # Gradient checkpointing: keep only what `policy` saves of each block's forward pass
            # and recompute the rest in the backward pass (memory for compute).
            x_BTD, stats = nnx.remat(lambda b, x: _no_cache(b.forward(x)), policy=policy)(
                block, x_BTD)
            return x_BTD, None, stats

        # `scan_unroll` layers per loop iteration. A rolled loop compiles in time flat in depth;
        # unrolled, XLA fuses across layers and nothing is stacked per layer, which on CPU is
        # worth 25-40% of the step. 0 = auto: unrolled, except with remat, whose memory saving
        # XLA only keeps inside a loop (docs/benchmarks.md, "scan vs unrolled", "remat").
        unit = layer_unit(self.cfg)
        L = self.cfg.n_layers // unit  # elements of the stack (layers, or groups of `unit`)
        if cache is not None and unit > 1:
            cache = jax.tree.map(lambda a: a.reshape(L, unit, *a.shape[1:]), cache)
        unroll = getattr(self.cfg, "scan_unroll", 0) or (L if policy == "none" else 1)
        if unroll >= L:
            # A Python loop over static slices of the stacked parameters: unlike
            # lax.scan(unroll=L), it does not stack every layer's residuals into [L, ...] buffers.
            graphdef, state = nnx.split(self.blocks)
            layer = lambda tree, i: jax.tree.map(lambda a: a[i], tree)  # noqa: E731
            outs = []
            for i in range(L):
                x_BTD, new, stats = apply(nnx.merge(graphdef, layer(state, i)), x_BTD,
                                          None if cache is None else layer(cache, i))
                outs.append((new, stats))
            cache, stats_L = jax.tree.map(lambda *c: jnp.stack(c), *outs)
        elif cache is None:
            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0), unroll=unroll)
            def scan_blocks(x_BTD, block):
                x_BTD, _, stats = apply(block, x_BTD, None)
                return x_BTD, stats
            x_BTD, stats_L = scan_blocks(x_BTD, self.blocks)
        else:
            @nnx.scan(in_axes=(nnx.Carry, 0, 0), out_axes=(nnx.Carry, 0, 0), unroll=unroll)
            def scan_cached(x_BTD, block, layer_cache):
                return apply(block, x_BTD, layer_cache)
            x_BTD, cache, stats_L = scan_cached(x_BTD, self.blocks, cache)
        if cache is None:
            if stats_L:
                self.sow(nnx.Intermediate, "moe", {k: stats_L[k].mean() for k in STATS})
            return x_BTD
        if unit > 1:
            cache = jax.tree.map(lambda a: a.reshape(L * unit, *a.shape[2:]), cache)
        return x_BTD, cache

    # The two ends of the network, also used by the pipeline-parallel path
    # (scaling/parallel/gpipe.py), which runs `self.blocks` itself in stages.
    def embed_inputs(self, tokens_BT: jax.Array, positions_BT: jax.Array | None = None):
        """Token ids [B, T] -> token (+ position) embeddings [B, T, D].

        Positions are 0..T-1 unless `positions_BT` [B, T] gives them (KV-cached decoding).
        """
        cfg = self.cfg
        x_BTD = self.embed(tokens_BT)
        pos = tokens_BT.shape[1] if positions_BT is None else positions_BT
        table = self.pos_embed[...] if cfg.pos == "learned" else None
        p_TD = position_embeddings(cfg.pos, pos, cfg.d_model, table, cfg.init_std)
        return x_BTD if p_TD is None else x_BTD + p_TD.astype(x_BTD.dtype)

    def logits(self, x_BTD: jax.Array) -> jax.Array:
        """Final norm and output projection: [B, T, D] -> float32 logits [B, T, V]."""
        x_BTD = self.final_norm(x_BTD)
        logits_BTV = self.embed.attend(x_BTD) if self.cfg.tie_embeddings else self.head(x_BTD)
        logits_BTV = logits_BTV.astype(jnp.float32)
        if self.cfg.parametrization == "mup":  # μP readout multiplier 1/m (1.0 at base width)
            logits_BTV = logits_BTV * mup.readout_scale(self.cfg)
        return logits_BTV


def abstract_model(cfg_model) -> Transformer:
    """The Transformer for `cfg_model` with shape/dtype leaves only (no memory, no compute).

    The one way to get its graphdef, parameter shapes and logical partition specs: for
    shardings, optimizer-state shapes and checkpoint restore targets.
    """
    return nnx.eval_shape(lambda: Transformer(cfg_model, nnx.Rngs(params=0)))
