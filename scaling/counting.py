"""Parameter counts and training FLOPs per token: the only place these formulas live.

Conventions (used by MFU, sweeps and fits alike):

* `params_total`: every parameter, including the input embedding, an untied output head and a
  learned position table (Hoffmann et al. 2022 count this N).
* `params_non_embedding`: `params_total` minus the input embedding, the output head and the
  position table (Kaplan et al. 2020 count this N): attention, MLP and norm weights.
* `flops_per_token` (training, forward + backward = 3 x forward, 2 FLOPs per multiply-add):
      6 * (params_non_embedding + d_model * vocab_size) + 12 * n_layers * seq_len * d_attn
  The first term is every matmul weight used once per token; the output projection (tied or not)
  is a real d_model x vocab matmul, so it is counted, while the embedding lookup is a gather and is
  not. The second term is attention scores and their weighted sum (QK^T and AV) over the FULL
  T x T square, i.e. causal masking is NOT discounted: this is the PaLM / nanoGPT / llm-foundry
  "6N + 12 L H Q T" convention, so our MFU is comparable with theirs. Pass
  `causal_attention=True` to halve the attention term (MaxText's newer convention).
  Norm weights are in N (their 6 FLOPs per token are a rounding error); elementwise ops
  (softmax, activations, norms) are not counted.
* Other attention patterns (`model.attention`) replace seq_len in the attention term by the
  keys a query visits (`attention_context`), as a kernel that skips masked blocks would:
  sliding:W -> min(W, T); strided:S -> min(S, T) + (T - 1) // S (the local band plus the
  strided keys of the last query); linear[:C] -> min(C, T) + K (the C x C form inside a chunk,
  plus reading and updating the K x K state, K = head dim). Our own sliding/strided training
  path is a dense masked T x T, so its wall time does not shrink with these counts.

Mixture of experts (`model.moe.experts` = E > 0, scaling/model/moe.py): a MoE layer holds a router
(d_model x E) and E expert MLPs, of which each token uses top_k. `params_total` counts all E;
`params_active` (and `params_non_embedding_active`) count the router and top_k experts, the
parameters a token actually multiplies. FLOPs per token use the ACTIVE non-embedding count, router
included (Clark et al. 2022, Fedus et al. 2022). Dispatch/combine einsums and capacity slack are
implementation overhead, not counted. For a dense model active = total.
"""
from __future__ import annotations

from typing import Mapping

from scaling.config import parse_attention


def _norm_params(cfg) -> int:
    return cfg.d_model * (1 if cfg.norm == "rmsnorm" else 2)  # scale (+ bias for layernorm)


def _mlp_params(cfg) -> int:
    return (3 if cfg.mlp == "swiglu" else 2) * cfg.d_model * cfg.d_ff


def layer_params(cfg) -> int:
    """Parameters of one dense Transformer block."""
    D, H, G = cfg.d_model, cfg.n_heads, cfg.n_kv_heads or cfg.n_heads
    K = D // H
    attn = D * H * K + 2 * D * G * K + H * K * D
    return attn + _mlp_params(cfg) + 2 * _norm_params(cfg)


def moe_layer_extra(cfg, active: bool) -> int:
    """What one MoE layer adds to a dense block: router + (E or top_k) - 1 expert MLPs."""
    e = cfg.moe
    used = e.top_k if active else e.experts
    return cfg.d_model * e.experts + (used - 1) * _mlp_params(cfg)


def param_counts(cfg) -> dict[str, int]:
    """{'total', 'non_embedding', 'embedding', 'active', 'non_embedding_active'} for a resolved
    model config (`cfg.model`); active = total for a dense model."""
    dense = cfg.n_layers * layer_params(cfg) + _norm_params(cfg)
    experts = cfg.moe.experts if "moe" in cfg else 0
    n_moe = cfg.n_layers // cfg.moe.every if experts else 0
    non_emb = dense + n_moe * moe_layer_extra(cfg, active=False) if experts else dense
    non_emb_active = dense + n_moe * moe_layer_extra(cfg, active=True) if experts else dense
    emb = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    if cfg.pos == "learned":
        emb += cfg.max_len * cfg.d_model
    return {"total": non_emb + emb, "non_embedding": non_emb, "embedding": emb,
            "active": non_emb_active + emb, "non_embedding_active": non_emb_active}


def attention_context(cfg, seq_len: int) -> tuple[int, int]:
    """(keys per query that the causal discount may halve, keys per query it may not) for
    `cfg.attention` at sequence length `seq_len` (see the module docstring)."""
    kind, size = parse_attention(getattr(cfg, "attention", "full"))
    T = seq_len
    if kind == "sliding":
        return min(size, T), 0
    if kind == "strided":
        return min(size, T) + (T - 1) // size, 0
    if kind == "linear":
        return min(size, T), cfg.d_model // cfg.n_heads
    return T, 0


def flops_per_token(cfg, seq_len: int, *, causal_attention: bool = False) -> float:
    """Training FLOPs per token under the convention in the module docstring."""
    n = param_counts(cfg)["non_embedding_active"] + cfg.d_model * cfg.vocab_size
    d_attn = cfg.n_heads * (cfg.d_model // cfg.n_heads)
    square, state = attention_context(cfg, seq_len)
    per_key = 12 * cfg.n_layers * d_attn
    return 6.0 * n + per_key * ((square / 2 if causal_attention else square) + state)


def describe(cfg) -> Mapping[str, float]:
    """The numbers `scaling describe` prints for a resolved full config."""
    counts = param_counts(cfg.model)
    fpt = flops_per_token(cfg.model, cfg.train.seq_len)
    tokens = cfg.train.steps * cfg.train.batch_size * cfg.train.seq_len
    moe = counts["active"] != counts["total"]
    return {
        "params_total": counts["total"],
        "params_non_embedding": counts["non_embedding"],
        "params_embedding": counts["embedding"],
        "params_active": counts["active"],
        "params_non_embedding_active": counts["non_embedding_active"],
        "flops_per_token": fpt,
        "tokens": tokens,
        "flops": fpt * tokens,
        "flops_convention": f"6*(N_non_embedding{'_active' if moe else ''} + d_model*vocab) "
                            "+ 12*L*T*d_attn (attention not causally discounted)"
        + ("" if getattr(cfg.model, "attention", "full") == "full"
           else f"; T -> keys per query of attention={cfg.model.attention}"),
    }
