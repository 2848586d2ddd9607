"""KV-cached batched generation: prefill + decode, sampling, beam search.

(A trained run's model: `scaling.train.checkpoint.load_trained`.)

One jitted function runs a whole generation: the prompt is prefilled into a fixed-size key/value
cache ([L, B, S, G, K] per keys and values, S = prompt length + new tokens unless `cache_len` is
given), then a `jax.lax.while_loop` decodes one token per step, writing its keys/values at slot
`P + i` (`jax.lax.dynamic_update_slice`), and stops early once every row has hit a stop token.

Prompts of different lengths are LEFT-PADDED (right-aligned) into one [B, P] array, with their
lengths `prompt_lengths_B` (see `left_pad`). Row b's real tokens start at cache slot
`start_b = P - length_b`; its tokens get positions `slot - start_b` (so a padded row sees exactly
the positions it would see alone), and the attention mask hides the slots before `start_b`. All
rows then decode in lockstep at the same cache slot, which keeps every step one dense batch.

Returned log-probs are the model's own: log softmax of the raw logits (temperature 1, no top-k/p
filtering) at the chosen token, so they are comparable between greedy, sampling and beam search.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.config import ConfigDict
from scaling.model.transformer import Transformer, init_cache


class Generation(NamedTuple):
    tokens: jax.Array    # [B, N] int32 new tokens; `pad_id` after a row's stop token
    logprobs: jax.Array  # [B, N] float32 log p(token | prefix) under the model; 0 at pads
    lengths: jax.Array   # [B] int32 tokens generated per row, its stop token included


class Beams(NamedTuple):
    tokens: jax.Array    # [B, W, N] int32, best hypothesis first; `pad_id` after a stop token
    scores: jax.Array    # [B, W] length-normalised log-prob (GNMT), -inf for an empty slot
    logprobs: jax.Array  # [B, W] summed log-prob of the hypothesis
    lengths: jax.Array   # [B, W] int32 hypothesis lengths, stop token included


# ---------------------------------------------------------------------------- the cached forward

def forward_with_cache(graphdef, params, tokens_BT: jax.Array, cache: dict, index,
                       start_B: jax.Array) -> tuple[jax.Array, dict]:
    """The model's own `__call__` with a cache, as a pure function of (graphdef, params).

    Logits [B, T, V] for `tokens_BT` at cache slots [index, index + T), and the updated cache;
    see `Transformer.__call__`.
    """
    return nnx.merge(graphdef, params)(tokens_BT, cache=cache, index=index, start_B=start_B)


# ---------------------------------------------------------------------------- sampling

def filter_logits(logits_BV: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Set logits outside the top-k set and outside the top-p nucleus to -inf.

    The nucleus is the smallest set of most likely tokens whose probability reaches `top_p`
    (Holtzman et al. 2020): a token is kept if the mass strictly before it is < top_p, so the
    most likely token is always kept. Ties at the threshold are kept together.
    """
    if top_k > 0:
        kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
    if top_p < 1.0:
        sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
        p_BV = jax.nn.softmax(sorted_BV, axis=-1)
        mass_before_BV = jnp.cumsum(p_BV, axis=-1) - p_BV
        threshold_B1 = jnp.min(jnp.where(mass_before_BV < top_p, sorted_BV, jnp.inf), axis=-1,
                               keepdims=True)
        logits_BV = jnp.where(logits_BV < threshold_B1, -jnp.inf, logits_BV)
    return logits_BV


def sample_logits(rng, logits_BV: jax.Array, temperature: float = 0.0, top_k: int = 0,
                  top_p: float = 1.0) -> jax.Array:
    """Token ids [B]: argmax if temperature == 0, else a draw from the filtered softmax."""
    if temperature == 0:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    logits_BV = filter_logits(logits_BV / temperature, top_k, top_p)
    return jax.random.categorical(rng, logits_BV, axis=-1).astype(jnp.int32)


# ---------------------------------------------------------------------------- generate

class _Static:
    """A graphdef made hashable by its config (GraphDef holds a ConfigDict), for jit statics."""

    def __init__(self, graphdef, cfg_model: ConfigDict):
        self.graphdef, self.key = graphdef, cfg_model.to_json(sort_keys=True)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Static) and self.key == other.key


def split_for_jit(model: Transformer):
    """(hashable graphdef, params dict): the model as arguments of a jitted function."""
    graphdef, state = nnx.split(model, nnx.Param)
    return _Static(graphdef, model.cfg), nnx.to_pure_dict(state)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token lists of any lengths -> (prompt_BP right-aligned with `pad_id`, lengths_B)."""
    lengths_B = np.array([len(s) for s in sequences], dtype=np.int32)
    prompt_BP = np.full((len(sequences), int(lengths_B.max())), pad_id, dtype=np.int32)
    for b, s in enumerate(sequences):
        if len(s):
            prompt_BP[b, -len(s):] = s
    return prompt_BP, lengths_B


def _prepare(model, prompt_BP, prompt_lengths, max_new_tokens, cache_len):
    prompt_BP = jnp.asarray(prompt_BP, jnp.int32)
    B, P = prompt_BP.shape
    lengths_B = (jnp.full((B,), P, jnp.int32) if prompt_lengths is None
                 else jnp.asarray(prompt_lengths, jnp.int32))
    cache_len = cache_len or P + max_new_tokens
    if cache_len < P + max_new_tokens:
        raise ValueError(f"cache_len={cache_len} < prompt length {P} + max_new_tokens "
                         f"{max_new_tokens}")
    cfg = model.cfg
    if cfg.pos == "learned" and cache_len > cfg.max_len:
        raise ValueError(f"learned positions stop at model.max_len={cfg.max_len}; prompt length "
                         f"{P} + max_new_tokens {max_new_tokens} exceeds it")
    return prompt_BP, lengths_B, cache_len


def generate(model: Transformer, prompt_BP, *, max_new_tokens: int, prompt_lengths=None,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             stop_tokens: Sequence[int] = (), pad_id: int = 0, rng=None,
             cache_len: int | None = None) -> Generation:
    """Generate up to `max_new_tokens` per row after a left-padded prompt [B, P] (jitted).

    temperature 0 is greedy; otherwise sampling from softmax(logits / temperature), restricted
    to the top-k tokens and then to the top-p nucleus. A row stops at its first stop token
    (which is kept); its later tokens are `pad_id` with log-prob 0.
    """
    prompt_BP, lengths_B, cache_len = _prepare(model, prompt_BP, prompt_lengths, max_new_tokens,
                                               cache_len)
    rng = jax.random.key(0) if rng is None else rng
    static, params = split_for_jit(model)
    return _generate(static, params, prompt_BP, lengths_B, rng, max_new_tokens=max_new_tokens,
                     cache_len=cache_len, temperature=float(temperature), top_k=int(top_k),
                     top_p=float(top_p), stop_tokens=tuple(int(t) for t in stop_tokens),
                     pad_id=int(pad_id))


@functools.partial(jax.jit, static_argnames=("static", "max_new_tokens", "cache_len",
                                             "temperature", "top_k", "top_p", "stop_tokens",
                                             "pad_id"))
def _generate(static, params, prompt_BP, lengths_B, rng, *, max_new_tokens, cache_len,
              temperature, top_k, top_p, stop_tokens, pad_id) -> Generation:
    graphdef, N = static.graphdef, max_new_tokens
    B, P = prompt_BP.shape
    start_B = P - lengths_B
    cache = init_cache(nnx.merge(graphdef, params).cfg, B, cache_len)
    logits_BPV, cache = forward_with_cache(graphdef, params, prompt_BP, cache, 0, start_B)
    stop_S = jnp.asarray(stop_tokens, jnp.int32)

    def cond(s):
        return (s["i"] < N) & ~jnp.all(s["done_B"])

    def body(s):
        rng, key = jax.random.split(s["rng"])
        logits_BV, i, done_B = s["logits_BV"], s["i"], s["done_B"]
        tok_B = sample_logits(key, logits_BV, temperature, top_k, top_p)
        lp_B = jnp.take_along_axis(jax.nn.log_softmax(logits_BV), tok_B[:, None], axis=-1)[:, 0]
        # A finished row still runs (the batch is dense) on its sampled token, a valid id;
        # only its outputs are replaced by padding.
        logits_B1V, cache = forward_with_cache(graphdef, params, tok_B[:, None], s["cache"],
                                               P + i, start_B)
        tok_B = jnp.where(done_B, pad_id, tok_B)
        lp_B = jnp.where(done_B, 0.0, lp_B)
        return {"i": i + 1, "rng": rng, "cache": cache, "logits_BV": logits_B1V[:, 0],
                "tokens_BN": s["tokens_BN"].at[:, i].set(tok_B),
                "logprobs_BN": s["logprobs_BN"].at[:, i].set(lp_B),
                "lengths_B": s["lengths_B"] + (~done_B).astype(jnp.int32),
                "done_B": done_B | jnp.isin(tok_B, stop_S)}

    s = {"i": jnp.zeros((), jnp.int32), "rng": rng, "cache": cache,
         "logits_BV": logits_BPV[:, -1], "tokens_BN": jnp.full((B, N), pad_id, jnp.int32),
         "logprobs_BN": jnp.zeros((B, N), jnp.float32), "lengths_B": jnp.zeros((B,), jnp.int32),
         "done_B": jnp.zeros((B,), bool)}
    s = jax.lax.while_loop(cond, body, s)
    return Generation(s["tokens_BN"], s["logprobs_BN"], s["lengths_B"])


# ---------------------------------------------------------------------------- beam search

def length_penalty_factor(length, alpha: float):
    """GNMT (Wu et al. 2016): ((5 + |Y|) / 6) ** alpha; a hypothesis scores log p / this."""
    return ((5.0 + length) / 6.0) ** alpha


def beam_search(model: Transformer, prompt_BP, *, beam_size: int, max_new_tokens: int,
                length_penalty: float = 0.0, prompt_lengths=None, stop_tokens: Sequence[int] = (),
                pad_id: int = 0, cache_len: int | None = None) -> Beams:
    """Beam search with a GNMT length penalty (jitted); hypotheses ranked best first.

    Keeps `beam_size` alive and `beam_size` finished hypotheses per row (as in T5X): each step
    expands the alive beams into their 2W best continuations; those ending in a stop token join
    the finished set with score log p / lp(length), the others refill the alive set by raw
    log p. Alive beams that reach `max_new_tokens` count as finished. For length_penalty >= 0 the
    search stops early once no alive beam can beat the W-th finished one.
    """
    prompt_BP, lengths_B, cache_len = _prepare(model, prompt_BP, prompt_lengths, max_new_tokens,
                                               cache_len)
    static, params = split_for_jit(model)
    return _beam_search(static, params, prompt_BP, lengths_B, beam_size=int(beam_size),
                        max_new_tokens=max_new_tokens, cache_len=cache_len,
                        alpha=float(length_penalty),
                        stop_tokens=tuple(int(t) for t in stop_tokens), pad_id=int(pad_id))


@functools.partial(jax.jit, static_argnames=("static", "beam_size", "max_new_tokens", "cache_len",
                                             "alpha", "stop_tokens", "pad_id"))
def _beam_search(static, params, prompt_BP, lengths_B, *, beam_size, max_new_tokens, cache_len,
                 alpha, stop_tokens, pad_id) -> Beams:
    graphdef, W, N = static.graphdef, beam_size, max_new_tokens
    B, P = prompt_BP.shape
    start_B = P - lengths_B
    cache = init_cache(nnx.merge(graphdef, params).cfg, B, cache_len)
    logits_BPV, cache = forward_with_cache(graphdef, params, prompt_BP, cache, 0, start_B)
    V = logits_BPV.shape[-1]
    # Prefill once per row, then copy the cache to the row's W beams (flattened to B*W rows).
    cache = jax.tree.map(lambda c: jnp.repeat(c, W, axis=1), cache)
    start_R = jnp.repeat(start_B, W)  # R = B * W
    stop_S = jnp.asarray(stop_tokens, jnp.int32)
    gather = lambda x, idx: jnp.take_along_axis(  # noqa: E731  x [B, C, ...] by idx [B, C']
        x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)

    def cond(s):
        if alpha < 0:  # lp shrinks with length: no safe bound, run all steps
            return s["i"] < N
        best_alive_B = s["alive_lp_BW"][:, 0] / length_penalty_factor(N, alpha)
        settled = jnp.all(s["fin_score_BW"][:, -1] >= best_alive_B)
        return (s["i"] < N) & ~settled

    def body(s):
        i = s["i"]
        logp_BWV = jax.nn.log_softmax(s["logits_BWV"])
        cand_BWV = s["alive_lp_BW"][:, :, None] + logp_BWV
        cand_lp_BC, flat_BC = jax.lax.top_k(cand_BWV.reshape(B, W * V), 2 * W)
        parent_BC, tok_BC = flat_BC // V, (flat_BC % V).astype(jnp.int32)
        seq_BCN = gather(s["alive_seq_BWN"], parent_BC).at[:, :, i].set(tok_BC)
        stopped_BC = jnp.isin(tok_BC, stop_S)

        # Finished: the old W and the candidates that just stopped; keep the W best scores.
        new_score_BC = jnp.where(stopped_BC, cand_lp_BC / length_penalty_factor(i + 1, alpha),
                                 -jnp.inf)
        all_score = jnp.concatenate([s["fin_score_BW"], new_score_BC], axis=1)
        fin_score_BW, pick_BW = jax.lax.top_k(all_score, W)
        fin = {k: gather(jnp.concatenate([s[k], new], axis=1), pick_BW) for k, new in (
            ("fin_seq_BWN", seq_BCN), ("fin_lp_BW", cand_lp_BC),
            ("fin_len_BW", jnp.full((B, 2 * W), i + 1, jnp.int32)))}

        # Alive: the W best continuations that did not stop; their caches follow their parents.
        alive_lp_BW, pick_BW = jax.lax.top_k(jnp.where(stopped_BC, -jnp.inf, cand_lp_BC), W)
        parent_R = (jnp.arange(B)[:, None] * W + gather(parent_BC, pick_BW)).reshape(-1)
        cache = jax.tree.map(lambda c: c[:, parent_R], s["cache"])
        tok_R = gather(tok_BC, pick_BW).reshape(-1)
        logits_R1V, cache = forward_with_cache(graphdef, params, tok_R[:, None], cache, P + i,
                                               start_R)
        return {"i": i + 1, "cache": cache, "logits_BWV": logits_R1V.reshape(B, W, V),
                "alive_seq_BWN": gather(seq_BCN, pick_BW), "alive_lp_BW": alive_lp_BW,
                "fin_score_BW": fin_score_BW, **fin}

    s = {"i": jnp.zeros((), jnp.int32), "cache": cache,
         "logits_BWV": jnp.repeat(logits_BPV[:, -1:], W, axis=1),
         "alive_seq_BWN": jnp.full((B, W, N), pad_id, jnp.int32),
         # Only beam 0 is live at first, so the first step does not pick W copies of one token.
         "alive_lp_BW": jnp.where(jnp.arange(W) == 0, 0.0, -jnp.inf)[None].repeat(B, 0),
         "fin_seq_BWN": jnp.full((B, W, N), pad_id, jnp.int32),
         "fin_score_BW": jnp.full((B, W), -jnp.inf), "fin_lp_BW": jnp.zeros((B, W)),
         "fin_len_BW": jnp.zeros((B, W), jnp.int32)}
    s = jax.lax.while_loop(cond, body, s)

    # Alive beams that reached max_new_tokens are complete hypotheses too.
    at_end = s["i"] == N
    alive_score_BW = jnp.where(at_end, s["alive_lp_BW"] / length_penalty_factor(N, alpha),
                               -jnp.inf)
    score = jnp.concatenate([s["fin_score_BW"], alive_score_BW], axis=1)
    score_BW, pick_BW = jax.lax.top_k(score, W)
    cat = lambda a, b: gather(jnp.concatenate([a, b], axis=1), pick_BW)  # noqa: E731
    return Beams(tokens=cat(s["fin_seq_BWN"], s["alive_seq_BWN"]), scores=score_BW,
                 logprobs=cat(s["fin_lp_BW"], s["alive_lp_BW"]),
                 lengths=cat(s["fin_len_BW"], jnp.full((B, W), N, jnp.int32)))
