"""Attention variants (sliding, strided, linear) and RoPE scaling: training path, decoding
path, masks, FLOPs terms, bad specs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_config
from scaling import counting, decode
from scaling.config import parse_attention, parse_rope_scaling, resolve
from scaling.errors import UserError
from scaling.model.attention import linear_attention, pattern_mask
from scaling.model.positions import apply_rope
from scaling.model.transformer import Transformer


def _model(seed=0, **over):
    cfg = resolve(tiny_config(**{**dict(n_layers=2, init_std=0.3), **over}))
    return Transformer(cfg.model, nnx.Rngs(params=seed))


def _tokens(B=2, T=12, seed=1):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, size=(B, T)), jnp.int32)


def _same_params(model, **over):
    """`model`'s parameters under another config (the variants add no parameters)."""
    other = _model(**over)
    nnx.update(other, nnx.state(model, nnx.Param))
    return other


@pytest.mark.parametrize("window", [12, 40])
def test_sliding_window_at_least_T_equals_full(window):
    full = _model(pos="rope", n_heads=4, n_kv_heads=2)
    sliding = _same_params(full, pos="rope", n_heads=4, n_kv_heads=2,
                           attention=f"sliding:{window}")
    x = _tokens(T=12)
    np.testing.assert_allclose(sliding(x), full(x), atol=1e-6, rtol=0)
    # ...and a shorter window changes the later positions only.
    short = _same_params(full, pos="rope", n_heads=4, n_kv_heads=2, attention="sliding:4")
    np.testing.assert_allclose(short(x)[:, :4], full(x)[:, :4], atol=1e-6, rtol=0)
    assert not np.allclose(short(x)[:, 4:], full(x)[:, 4:], atol=1e-3)


def test_strided_mask_small_case():
    """strided:3 over 8 positions: the last 3 keys plus every 3rd key before them."""
    m = np.asarray(pattern_mask("strided", 3, jnp.arange(8)[:, None], jnp.arange(8)[None, :]))
    expected = {7: [1, 4, 5, 6, 7], 6: [0, 3, 4, 5, 6], 4: [1, 2, 3, 4], 2: [0, 1, 2], 0: [0]}
    for q, keys in expected.items():
        assert np.flatnonzero(m[q]).tolist() == keys, q
    assert not np.triu(m, 1).any()  # causal
    band = np.asarray(pattern_mask("sliding", 2, jnp.arange(5)[:, None], jnp.arange(5)[None, :]))
    assert np.flatnonzero(band[4]).tolist() == [3, 4] and np.flatnonzero(band[0]).tolist() == [0]


def test_linear_recurrent_decoding_equals_parallel_forward():
    """One token at a time through the state == the chunked parallel form (chunks 4, T 10)."""
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 10, 4, 8)), jnp.float32) for _ in range(3))
    k, v = k[:, :, :2], v[:, :, :2]  # GQA: 2 key/value heads for 4 query heads
    par_BTHK, final = linear_attention(q, k, v, chunk=4)
    state, outs = None, []
    for t in range(10):
        o, state = linear_attention(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], 4, state)
        outs.append(o)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), par_BTHK, atol=1e-4, rtol=0)
    np.testing.assert_allclose(state["s"], final["s"], atol=1e-4, rtol=1e-5)
    # The definition: out_t = sum_{s<=t} phi(q_t).phi(k_s) v_s / sum_{s<=t} phi(q_t).phi(k_s).
    phi = lambda x: jax.nn.elu(x) + 1  # noqa: E731
    a = jnp.einsum("bthk,bshk->bhts", phi(q), jnp.repeat(phi(k), 2, axis=2))
    a = a * jnp.tril(jnp.ones((10, 10)))
    ref = jnp.einsum("bhts,bshk->bthk", a / a.sum(-1, keepdims=True), jnp.repeat(v, 2, axis=2))
    np.testing.assert_allclose(par_BTHK, ref, atol=1e-4, rtol=0)


VARIANTS = {"full": dict(attention="full"),
            "sliding": dict(attention="sliding:3", pos="rope", n_heads=4, n_kv_heads=2),
            "strided": dict(attention="strided:3", pos="sinusoidal"),
            "linear": dict(attention="linear:4", pos="rope", n_heads=4, n_kv_heads=1),
            "linear-learned": dict(attention="linear", pos="learned")}


@pytest.mark.parametrize("over", VARIANTS.values(), ids=VARIANTS.keys())
def test_cached_decoding_equals_full_forward(over):
    """Prefill 5 tokens, then decode one at a time: logits equal the full pass at every step."""
    model = _model(**over)
    graphdef, state = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(state)
    x_BT = _tokens(T=12)
    full_BTV = np.asarray(model(x_BT))
    step = jax.jit(decode.forward_with_cache)
    cache, start_B = decode.init_cache(model.cfg, 2, 12), jnp.zeros(2, jnp.int32)
    logits_BTV, cache = step(graphdef, params, x_BT[:, :5], cache, 0, start_B)
    np.testing.assert_allclose(logits_BTV, full_BTV[:, :5], atol=1e-4, rtol=0)
    for t in range(5, 12):
        logits_BTV, cache = step(graphdef, params, x_BT[:, t:t + 1], cache, t, start_B)
        np.testing.assert_allclose(logits_BTV[:, 0], full_BTV[:, t], atol=1e-4, rtol=0)


@pytest.mark.parametrize("attention", ["linear", "sliding:2", "strided:2"])
def test_left_padded_decoding_equals_unpadded(attention):
    """A row padded on the left decodes as it would alone (padding stays out of the state)."""
    model = _model(attention=attention, pos="rope")
    rows = [[5, 17, 99, 3, 250, 8, 61], [42, 7, 130]]
    prompt_BP, lengths_B = decode.left_pad(rows, pad_id=0)
    out = decode.generate(model, prompt_BP, prompt_lengths=lengths_B, max_new_tokens=4)
    for b, row in enumerate(rows):
        alone = decode.generate(model, np.asarray([row]), max_new_tokens=4)
        np.testing.assert_array_equal(out.tokens[b], alone.tokens[0])
        np.testing.assert_allclose(out.logprobs[b], alone.logprobs[0], atol=1e-4)


def test_rope_linear_scaling_interpolates_positions():
    """linear:s at positions s*p equals unscaled RoPE at p; ntk keeps the highest frequency."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, 2, 8)), jnp.float32)
    p = jnp.arange(6)
    np.testing.assert_allclose(apply_rope(x, 4 * p, 1e4, ("linear", 4.0)), apply_rope(x, p, 1e4),
                               atol=1e-5, rtol=0)
    ntk, plain = apply_rope(x, 3 * p, 1e4, ("ntk", 4.0)), apply_rope(x, 3 * p, 1e4)
    np.testing.assert_allclose(ntk[..., [0, 4]], plain[..., [0, 4]], atol=1e-5, rtol=0)
    assert not np.allclose(ntk, plain)


def test_flops_terms_per_attention_type():
    m = resolve(tiny_config(n_heads=2)).model  # d 32, L 1, K 16
    base = counting.flops_per_token(m, 32) - 12 * 1 * 32 * 32
    for spec, keys in [("full", 32), ("sliding:8", 8), ("sliding:64", 32),
                       ("strided:4", 4 + 31 // 4), ("linear:8", 8 + 16), ("linear", 32 + 16)]:
        m.attention = spec
        assert counting.flops_per_token(m, 32) == base + 12 * 32 * keys, spec
    m.attention = "sliding:8"
    assert counting.flops_per_token(m, 32, causal_attention=True) == base + 12 * 32 * 4


@pytest.mark.parametrize("field,spec,msg", [
    ("attention", "sliding:0", "must be >= 1"), ("attention", "sliding", "integer"),
    ("attention", "strided:-2", "must be >= 1"), ("attention", "sparse", "not recognised"),
    ("attention", "full:3", "not recognised"), ("rope_scaling", "linear:0.5", "factor must be >= 1"),
    ("rope_scaling", "ntk", "number"), ("rope_scaling", "yarn:2", "not recognised")])
def test_bad_specs_are_one_line_errors(field, spec, msg):
    over = {field: spec, "pos": "rope"}
    with pytest.raises(UserError, match=msg) as e:
        resolve(tiny_config(**over))
    assert "\n" not in str(e.value)


def test_specs_parse_and_rope_scaling_needs_rope():
    assert parse_attention("linear") == ("linear", 64)
    assert parse_attention("strided:16") == ("strided", 16)
    assert parse_rope_scaling("ntk:2") == ("ntk", 2.0)
    with pytest.raises(UserError, match="needs model.pos=rope"):
        resolve(tiny_config(rope_scaling="linear:2", pos="learned"))
