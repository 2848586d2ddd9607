"""μP, the Maximal Update Parametrization (Yang et al. 2022, Tensor Programs V, Table 3, Adam).

`model.parametrization = mup` rescales the standard parametrization (`sp`, GPT-2 style: every
weight N(0, init_std²)) by the width multiplier m = d_model / model.base_width, so that at
d_model = base_width the two are the same model, bit for bit, and wider models keep every
layer's activations and their per-step updates Θ(1) (the lr tuned at base width transfers):

    hidden weights (both sides scale with width)   init std × m^-1/2   Adam lr × 1/m
    input weights (embeddings), norms               unchanged           unchanged
    output logits                                   × 1/m (readout multiplier; the head's or the
                                                    tied embedding's init and lr unchanged)
    attention logits                                q·k / (sqrt(d_head) · sqrt(m)), i.e. 1/d_head
                                                    scaled to equal 1/sqrt(d_head) at base width

The base model is this config at d_model = base_width with the same head count (so d_head
and d_ff grow with m). Which parameters are "hidden" is read from their logical axis names
(scaling/model/attention.py `meta`): two or more width-scaling groups (d_model, d_ff, heads).
docs/design.md, "μP", says why this variant.
"""
from __future__ import annotations

import math

import jax
from jax.sharding import PartitionSpec as P

# Logical axis name -> the width it scales with; heads × head_dim form one width (attention).
WIDTH_GROUPS = {"embed": "d_model", "mlp": "d_ff", "heads": "attn", "kv_heads": "attn",
                "head_dim": "attn"}
HIDDEN, OTHER = "hidden", "other"


def width_mult(cfg_model) -> float:
    """m = d_model / base_width under mup; 1.0 under sp."""
    if cfg_model.parametrization != "mup":
        return 1.0
    return cfg_model.d_model / cfg_model.base_width


def is_hidden(names) -> bool:
    """A matrix whose fan-in and fan-out both grow with width (logical axis names)."""
    return len({WIDTH_GROUPS[n] for n in names if n in WIDTH_GROUPS}) >= 2


def param_labels(logical) -> dict:
    """The params tree's logical PartitionSpecs -> the same tree of HIDDEN / OTHER labels."""
    return jax.tree.map(lambda names: HIDDEN if is_hidden(names) else OTHER, logical,
                        is_leaf=lambda x: isinstance(x, P))


def lr_multipliers(cfg_model) -> dict[str, float]:
    """Adam lr multiplier per label: hidden 1/m, everything else 1."""
    return {HIDDEN: 1.0 / width_mult(cfg_model), OTHER: 1.0}


def hidden_init_scale(cfg_model) -> float:
    """Factor on the sp init std of hidden weights: m^-1/2 (variance ∝ 1/fan_in)."""
    return 1.0 / math.sqrt(width_mult(cfg_model))


def attention_divisor(cfg_model, head_dim: int) -> float | None:
    """What q·k is divided by under mup: sqrt(d_head) · sqrt(m) (1/d_head scaling, exactly
    sqrt(d_head) at base width); None under sp (the kernels' own sqrt(d_head))."""
    if cfg_model.parametrization != "mup":
        return None
    return math.sqrt(head_dim) * math.sqrt(width_mult(cfg_model))


def readout_scale(cfg_model) -> float:
    """Multiplier on the output logits: 1/m (1.0 under sp)."""
    return 1.0 / width_mult(cfg_model)
