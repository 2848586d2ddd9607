"""Sparse mixture-of-experts MLP: top-k token-choice routing (Switch / GShard), einsum dispatch.

`model.moe.experts` = E >= 1 replaces the MLP of every `model.moe.every`-th layer by E expert MLPs
(each shaped like the dense MLP) and a router [D, E]. Each token picks its `top_k` experts by
router probability; its output is the gate-weighted sum of their outputs. Gates are the router
probabilities of the chosen experts, renormalised over the k choices when k > 1 (GShard); with
k = 1 the raw probability (Switch), so the router learns from the language-model loss.

Capacity (docs/design.md, "mixture of experts"): tokens are routed in groups of one sequence
(S = T tokens). Each expert takes at most C = min(S, ceil(capacity_factor * k * S / E)) tokens of a
group; assignments past C are dropped (the token keeps only its residual for that choice) and
counted in `moe_dropped`. First choices of all tokens are placed before second choices (GShard).
`capacity_factor = 0` is dropless: C = S (exact, but the experts then compute E/k times the work).

Expert parallelism is expressed through shardings only: dispatch is an einsum to [E, G, C, D],
constrained to experts over the `expert` mesh axis (tokens arrive sharded over it as batch), so
XLA inserts the all-to-all; the combine einsum and constraint bring the tokens back.

Per-layer statistics (averaged over the MoE layers by `Transformer.run_blocks`):
  moe_lb_loss   load-balancing loss E * sum_e f_e * P_e (f: fraction of assignments to e, P: mean
                router probability of e); 1 when balanced, E when all tokens pick one expert
  moe_z_loss    router z-loss mean(logsumexp(logits)^2) (ST-MoE, Zoph et al. 2022)
  moe_load_max  max_e f_e / mean_e f_e, before capacity (1 = perfectly balanced)
  moe_dropped   fraction of the token->expert assignments dropped by the capacity
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.model.attention import DTYPES, meta, normal
from scaling.parallel.mesh import constrain

STATS = ("moe_lb_loss", "moe_z_loss", "moe_load_max", "moe_dropped")


def moe_experts(cfg_model) -> int:
    """Number of experts (0 = dense MLPs); configs from before `model.moe` are dense."""
    return int(cfg_model.moe.experts) if "moe" in cfg_model else 0


def is_moe_layer(cfg_model, layer: int) -> bool:
    """Whether layer `layer` (0-based) has a MoE MLP: the last of every `every` layers."""
    return moe_experts(cfg_model) > 0 and (layer + 1) % cfg_model.moe.every == 0


def capacity(cfg_moe, group_size: int) -> int:
    """Slots per expert per group of `group_size` tokens (see the module docstring)."""
    if cfg_moe.capacity_factor <= 0:
        return group_size
    c = math.ceil(cfg_moe.capacity_factor * cfg_moe.top_k * group_size / cfg_moe.experts)
    return max(1, min(group_size, c))


def load_balancing_loss(probs_GSE: jax.Array, mask_GSE: jax.Array) -> jax.Array:
    """E * sum_e f_e P_e: f = mean assignment mask (each token's row sums to 1), P = mean prob."""
    E = probs_GSE.shape[-1]
    f_E = mask_GSE.mean(axis=(0, 1))
    p_E = probs_GSE.mean(axis=(0, 1))
    return E * jnp.sum(f_E * p_E)


def route(logits_GSE: jax.Array, top_k: int, C: int):
    """Router logits (float32) -> (dispatch [G,S,E,C] 0/1, combine [G,S,E,C] gates, stats)."""
    G, S, E = logits_GSE.shape
    probs_GSE = jax.nn.softmax(logits_GSE, axis=-1)
    p_GSk, idx_GSk = jax.lax.top_k(probs_GSE, top_k)
    gate_GSk = p_GSk / p_GSk.sum(-1, keepdims=True) if top_k > 1 else p_GSk
    mask_GSkE = jax.nn.one_hot(idx_GSk, E, dtype=jnp.float32)
    # Slot of each assignment in its expert's buffer: a running count over the group, all
    # first choices before all second choices.
    mask_GkSE = mask_GSkE.transpose(0, 2, 1, 3).reshape(G, top_k * S, E)
    pos_GkSE = (jnp.cumsum(mask_GkSE, axis=1) - 1.0).reshape(G, top_k, S, E)
    pos_GSk = jnp.sum(pos_GkSE.transpose(0, 2, 1, 3) * mask_GSkE, axis=-1).astype(jnp.int32)
    slot_GSkC = jax.nn.one_hot(pos_GSk, C, dtype=jnp.float32)   # all zero past capacity: dropped
    dispatch_GSEC = jnp.einsum("GSkE,GSkC->GSEC", mask_GSkE, slot_GSkC)
    combine_GSEC = jnp.einsum("GSkE,GSkC->GSEC", mask_GSkE * gate_GSk[..., None], slot_GSkC)
    f_E = mask_GSkE.sum(2).mean(axis=(0, 1)) / top_k
    stats = {
        "moe_lb_loss": load_balancing_loss(probs_GSE, mask_GSkE.sum(2) / top_k),
        "moe_z_loss": jnp.mean(jax.nn.logsumexp(logits_GSE, axis=-1) ** 2),
        "moe_load_max": jnp.max(f_E) * E,
        "moe_dropped": 1.0 - slot_GSkC.sum() / (G * S * top_k),
    }
    return dispatch_GSEC, combine_GSEC, stats


def aux_objective(stats: dict, cfg_moe) -> jax.Array:
    """What the router losses add to the training objective."""
    return cfg_moe.aux_loss_weight * stats["moe_lb_loss"] + \
        cfg_moe.z_loss_weight * stats["moe_z_loss"]


class MoE(nnx.Module):
    """E expert MLPs (GELU or SwiGLU, as `model.mlp`) behind a top-k router; x [B,T,D] ->
    (y [B,T,D], stats)."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        E, D, F = cfg.moe.experts, cfg.d_model, cfg.d_ff
        std, out_std = cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.n_layers)  # as the MLP
        self.cfg, self.dtype = cfg, DTYPES[cfg.dtype]
        param = lambda s, shape, names: nnx.Param(  # noqa: E731
            normal(s)(rngs.params(), shape), **meta(*names))
        self.router = param(std, (D, E), ("embed", None))
        self.wi = param(std, (E, D, F), ("expert", "embed", "mlp"))
        if cfg.mlp == "swiglu":
            self.wg = param(std, (E, D, F), ("expert", "embed", "mlp"))
        self.wo = param(out_std, (E, F, D), ("expert", "mlp", "embed"))

    def __call__(self, x_BTD: jax.Array) -> tuple[jax.Array, dict]:
        cfg, dt = self.cfg, self.dtype
        B, T, D = x_BTD.shape
        logits_BTE = jnp.einsum("BTD,DE->BTE", x_BTD.astype(jnp.float32), self.router[...])
        dispatch_BTEC, combine_BTEC, stats = route(logits_BTE, cfg.moe.top_k,
                                                   capacity(cfg.moe, T))
        # Tokens (sharded over the batch axes, `expert` included) -> expert buffers (experts
        # sharded over `expert`): the all-to-all, placed by XLA from the two shardings.
        x_EBCD = jnp.einsum("BTEC,BTD->EBCD", dispatch_BTEC.astype(dt), x_BTD.astype(dt))
        x_EBCD = constrain(x_EBCD, ("expert", "expert_batch", None, None))
        h_EBCF = jnp.einsum("EBCD,EDF->EBCF", x_EBCD, self.wi[...].astype(dt))
        if cfg.mlp == "swiglu":
            g_EBCF = jnp.einsum("EBCD,EDF->EBCF", x_EBCD, self.wg[...].astype(dt))
            h_EBCF = jax.nn.silu(g_EBCF) * h_EBCF
        else:
            h_EBCF = jax.nn.gelu(h_EBCF)
        y_EBCD = jnp.einsum("EBCF,EFD->EBCD", h_EBCF, self.wo[...].astype(dt))
        y_EBCD = constrain(y_EBCD, ("expert", "expert_batch", None, None))
        y_BTD = jnp.einsum("BTEC,EBCD->BTD", combine_BTEC.astype(dt), y_EBCD)
        return constrain(y_BTD, ("batch", None, None)), stats
