"""KV-cached generation: cached == full forward, greedy, sampling filters, stops, beams, loading."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from conftest import tiny_config
from scaling import decode
from scaling.parallel import mesh as mesh_lib
from scaling.config import resolve
from scaling.model.transformer import Transformer
from scaling.train import checkpoint
from scaling.train.loop import train
from scaling.train.step import Trainer

# Tiny models (d=32, 2 layers). A large init_std makes the next-token distribution far from
# uniform, so argmax is never a near-tie that float rounding could flip.
LEARNED_MHA = dict(pos="learned")
ROPE_GQA = dict(pos="rope", n_heads=4, n_kv_heads=2, norm="rmsnorm", mlp="swiglu")
ROPE_MQA = dict(pos="rope", n_heads=4, n_kv_heads=1)
LEARNED_MQA = dict(pos="learned", n_heads=4, n_kv_heads=1, tie_embeddings=False)
SINUSOIDAL_GQA = dict(pos="sinusoidal", n_heads=4, n_kv_heads=2)


def _model(seed=0, **over):
    cfg = resolve(tiny_config(**{**dict(n_layers=2, init_std=0.3), **over}))
    return Transformer(cfg.model, nnx.Rngs(params=seed))


def _prompts(B=2, P=5, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, size=(B, P)), jnp.int32)


def _split(model):
    graphdef, state = nnx.split(model, nnx.Param)
    return graphdef, nnx.to_pure_dict(state)


def _full_forward(model):
    """The model's ordinary (uncached) forward pass, jitted: tokens [B, T] -> logits [B, T, V]."""
    graphdef, params = _split(model)
    fwd = jax.jit(lambda params, x_BT: nnx.merge(graphdef, params)(x_BT))
    return lambda x_BT: fwd(params, jnp.asarray(x_BT, jnp.int32))


def _greedy_by_full_forward(model, prompt_BP, n):
    """Reference: recompute the whole sequence each step and take the argmax (no cache).

    The sequence lives in a fixed [B, P + n] buffer (one compilation); the model is causal, so
    the not-yet-written tail does not change the logits read at position P + i - 1.
    """
    fwd, (B, P) = _full_forward(model), prompt_BP.shape
    seq_BT, lps = np.zeros((B, P + n), np.int32), []
    seq_BT[:, :P] = prompt_BP
    for i in range(n):
        logp_BV = np.asarray(jax.nn.log_softmax(fwd(seq_BT)[:, P + i - 1]))
        tok_B = logp_BV.argmax(axis=-1)
        lps.append(logp_BV[np.arange(B), tok_B])
        seq_BT[:, P + i] = tok_B
    return seq_BT[:, P:], np.stack(lps, axis=1)


@pytest.mark.parametrize("over", [LEARNED_MHA, ROPE_GQA, ROPE_MQA, LEARNED_MQA, SINUSOIDAL_GQA],
                         ids=["learned-mha", "rope-gqa", "rope-mqa", "learned-mqa", "sin-gqa"])
def test_cached_logits_equal_full_forward(over):
    """Prefill 4 tokens, then decode one at a time: logits equal the full pass at every step."""
    model = _model(**over)
    graphdef, params = _split(model)
    x_BT = _prompts(B=2, P=12, seed=1)
    full_BTV = np.asarray(model(x_BT))
    step = jax.jit(decode.forward_with_cache)
    cache, start_B = decode.init_cache(model.cfg, 2, 16), jnp.zeros(2, jnp.int32)
    logits_BTV, cache = step(graphdef, params, x_BT[:, :4], cache, 0, start_B)
    np.testing.assert_allclose(logits_BTV, full_BTV[:, :4], atol=1e-5, rtol=0)
    for t in range(4, 12):
        logits_BTV, cache = step(graphdef, params, x_BT[:, t:t + 1], cache, t, start_B)
        np.testing.assert_allclose(logits_BTV[:, 0], full_BTV[:, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("over", [LEARNED_MHA, ROPE_GQA], ids=["learned-mha", "rope-gqa"])
def test_left_padded_prompts_equal_unpadded(over):
    """Rows of lengths 7 and 3 in one left-padded batch match each row's full forward alone."""
    model = _model(**over)
    graphdef, params = _split(model)
    rows = [[5, 17, 99, 3, 250, 8, 61], [42, 7, 130]]
    prompt_BP, lengths_B = decode.left_pad(rows, pad_id=0)
    assert prompt_BP.tolist() == [rows[0], [0, 0, 0, 0, 42, 7, 130]]
    cache = decode.init_cache(model.cfg, 2, 9)
    start_B = jnp.asarray(7 - lengths_B)
    logits_BPV, cache = decode.forward_with_cache(graphdef, params, jnp.asarray(prompt_BP), cache,
                                                  0, start_B)
    nxt_B1 = jnp.asarray([[11], [12]])
    logits_B1V, _ = decode.forward_with_cache(graphdef, params, nxt_B1, cache, 7, start_B)
    for b, row in enumerate(rows):
        full_TV = np.asarray(model(jnp.asarray([row + [11 + b]]))[0])
        n = len(row)
        np.testing.assert_allclose(logits_BPV[b, 7 - n:], full_TV[:n], atol=1e-5, rtol=0)
        np.testing.assert_allclose(logits_B1V[b, 0], full_TV[n], atol=1e-5, rtol=0)

    # And end to end: generating for the padded batch equals generating for each row alone.
    both = decode.generate(model, prompt_BP, prompt_lengths=lengths_B, max_new_tokens=6)
    for b, row in enumerate(rows):
        ref_tokens, ref_lps = _greedy_by_full_forward(model, jnp.asarray([row]), 6)
        np.testing.assert_array_equal(both.tokens[b], ref_tokens[0])
        np.testing.assert_allclose(both.logprobs[b], ref_lps[0], atol=1e-5)


@pytest.mark.parametrize("over", [LEARNED_MHA, ROPE_MQA], ids=["learned-mha", "rope-mqa"])
def test_greedy_equals_iterated_argmax_of_full_forward(over):
    model = _model(**over)
    prompt_BP = _prompts(B=3, P=5)
    out = decode.generate(model, prompt_BP, max_new_tokens=10)
    ref_tokens, ref_lps = _greedy_by_full_forward(model, prompt_BP, 10)
    np.testing.assert_array_equal(out.tokens, ref_tokens)
    np.testing.assert_allclose(out.logprobs, ref_lps, atol=1e-5)
    assert out.lengths.tolist() == [10, 10, 10]
    assert len(set(ref_tokens.ravel().tolist())) > 3  # a non-degenerate continuation


def test_tiny_temperature_and_top_k_1_equal_greedy():
    model = _model(**ROPE_GQA)
    prompt_BP = _prompts(B=3, P=5)
    greedy = decode.generate(model, prompt_BP, max_new_tokens=8)
    cold = decode.generate(model, prompt_BP, max_new_tokens=8, temperature=1e-6,
                           rng=jax.random.key(1))
    top1 = decode.generate(model, prompt_BP, max_new_tokens=8, temperature=1.0, top_k=1,
                           rng=jax.random.key(2))
    np.testing.assert_array_equal(cold.tokens, greedy.tokens)
    np.testing.assert_array_equal(top1.tokens, greedy.tokens)
    # Sampling at temperature 1 is actually random: another key gives another continuation.
    hot = [decode.generate(model, prompt_BP, max_new_tokens=8, temperature=1.0,
                           rng=jax.random.key(k)).tokens for k in (3, 4)]
    assert not np.array_equal(hot[0], hot[1])


# A crafted distribution: p = 0.3, 0.25, 0.2, 0.15, 0.05, then 0.05 spread over the rest.
_V = 64
_P = np.array([0.3, 0.25, 0.2, 0.15, 0.05] + [0.05 / (_V - 5)] * (_V - 5))
_ORDER = np.random.default_rng(0).permutation(_V)  # not sorted by id: ranks != token ids
_LOGITS_V = np.log(_P)[np.argsort(_ORDER)]          # token _ORDER[r] has rank r


def _draw(n, **kw):
    logits_NV = jnp.broadcast_to(jnp.asarray(_LOGITS_V, jnp.float32), (n, _V))
    return np.asarray(decode.sample_logits(jax.random.key(0), logits_NV, temperature=1.0, **kw))


def test_top_k_never_samples_outside_top_k():
    seen = set(_draw(4000, top_k=3).tolist())
    assert seen == set(_ORDER[:3].tolist())  # inside the set, and the whole set is reachable
    assert len(set(_draw(4000).tolist())) > 5  # unfiltered draws do go beyond it


def test_top_p_never_samples_outside_nucleus():
    # Mass before rank 2 is 0.55 < 0.6 (kept); before rank 3 it is 0.75 (cut): nucleus = 3 tokens.
    assert set(_draw(4000, top_p=0.6).tolist()) == set(_ORDER[:3].tolist())
    assert set(_draw(4000, top_p=0.25).tolist()) == {int(_ORDER[0])}
    assert set(_draw(4000, top_p=0.76).tolist()) == set(_ORDER[:4].tolist())
    # top-k then top-p: renormalised over the top 2 (0.3/0.55 = 0.545), p=0.5 keeps only rank 0.
    assert set(_draw(4000, top_k=2, top_p=0.5).tolist()) == {int(_ORDER[0])}


def test_stop_tokens_stop_and_pad():
    model = _model(**LEARNED_MHA)
    prompt_BP = _prompts(B=3, P=5, seed=2)
    free = decode.generate(model, prompt_BP, max_new_tokens=10)
    stop = int(free.tokens[0, 2])  # row 0 surely stops at step 2; other rows wherever it occurs
    out = decode.generate(model, prompt_BP, max_new_tokens=10, stop_tokens=(stop,), pad_id=-1)
    for b in range(3):
        row = np.asarray(free.tokens[b])
        n = int(np.argmax(row == stop)) + 1 if (row == stop).any() else 10
        assert out.lengths[b] == n
        np.testing.assert_array_equal(out.tokens[b, :n], row[:n])
        np.testing.assert_array_equal(out.tokens[b, n:], -1)
        np.testing.assert_allclose(out.logprobs[b, :n], free.logprobs[b, :n], atol=1e-6)
        np.testing.assert_array_equal(out.logprobs[b, n:], 0.0)
    assert out.lengths[0] <= 3


def _rescore(fwd, prompt_P, tokens_N, n):
    """Summed log-prob of the first n tokens after the prompt, by a full forward pass."""
    P, tokens_N = len(prompt_P), np.maximum(np.asarray(tokens_N), 0)  # pads -> any valid id
    logp_TV = np.asarray(jax.nn.log_softmax(fwd(np.concatenate([prompt_P, tokens_N])[None])[0]))
    return float(sum(logp_TV[P - 1 + t, tokens_N[t]] for t in range(n)))


def _reference_beam_search(fwd, prompt_P, W, N):
    """Textbook beam search (no stops, no penalty): expand every beam, keep the W best."""
    P, beams = len(prompt_P), [([], 0.0)]
    for i in range(N):
        buf_WT = np.zeros((W, P + N), np.int32)  # fixed shape: one compilation
        buf_WT[:, :P] = prompt_P
        for j, (seq, _) in enumerate(beams):
            buf_WT[j, P:P + i] = seq
        logp_WV = np.asarray(jax.nn.log_softmax(fwd(buf_WT)[:, P + i - 1]), np.float64)
        cand_WV = np.array([lp for _, lp in beams])[:, None] + logp_WV[:len(beams)]
        best = np.argsort(-cand_WV, axis=None)[:W]
        V = cand_WV.shape[1]
        beams = [(beams[c // V][0] + [c % V], cand_WV.flat[c]) for c in best]
    return beams


@pytest.mark.slow
def test_beam_search():
    model = _model(**ROPE_GQA)
    prompt_BP = _prompts(B=2, P=5, seed=3)
    greedy = decode.generate(model, prompt_BP, max_new_tokens=8)
    greedy_lp_B = np.asarray(greedy.logprobs.sum(axis=1))

    one = decode.beam_search(model, prompt_BP, beam_size=1, max_new_tokens=8)
    np.testing.assert_array_equal(one.tokens[:, 0], greedy.tokens)
    np.testing.assert_allclose(one.logprobs[:, 0], greedy_lp_B, atol=1e-5)

    # With a stop token and no length penalty, beam 1 still follows (and stops like) greedy.
    stop = int(greedy.tokens[0, 3])
    g_stop = decode.generate(model, prompt_BP, max_new_tokens=8, stop_tokens=(stop,))
    one_stop = decode.beam_search(model, prompt_BP, beam_size=1, max_new_tokens=8,
                                  stop_tokens=(stop,))
    np.testing.assert_array_equal(one_stop.tokens[:, 0], g_stop.tokens)
    np.testing.assert_array_equal(one_stop.lengths[:, 0], g_stop.lengths)

    # Wider beams equal a plain reference beam search over full forward passes (tokens and
    # log-probs, best first).
    eight = decode.beam_search(model, prompt_BP, beam_size=8, max_new_tokens=8)
    fwd = _full_forward(model)
    for b in range(2):
        ref = _reference_beam_search(fwd, np.asarray(prompt_BP[b]), 8, 8)
        np.testing.assert_array_equal(eight.tokens[b], [seq for seq, _ in ref])
        np.testing.assert_allclose(eight.logprobs[b], [lp for _, lp in ref], atol=1e-4)
    assert np.all(np.diff(np.asarray(eight.scores), axis=1) <= 0)
    # Best beam >= greedy. Not a theorem: beam search may prune the greedy prefix (with beam 4
    # it does for row 0 here: -16.44 < greedy's -15.13, and the reference search agrees).
    assert np.all(np.asarray(eight.scores[:, 0]) >= greedy_lp_B - 1e-5)

    # Length penalty: score = log p / ((5 + len) / 6) ** alpha, with stops giving mixed lengths.
    alpha = 0.8
    lp = decode.beam_search(model, prompt_BP, beam_size=4, max_new_tokens=8,
                            length_penalty=alpha, stop_tokens=(stop,), pad_id=-1)
    np.testing.assert_allclose(
        lp.scores, lp.logprobs / decode.length_penalty_factor(lp.lengths, alpha), rtol=1e-6)
    assert np.all(np.diff(np.asarray(lp.scores), axis=1) <= 0)
    for b in range(2):
        for w in range(4):
            n = int(lp.lengths[b, w])
            toks = np.asarray(lp.tokens[b, w])
            assert np.all(toks[n:] == -1) and (n == 8 or toks[n - 1] == stop)
            assert stop not in toks[:n - 1]
            np.testing.assert_allclose(_rescore(fwd, prompt_BP[b], toks, n), lp.logprobs[b, w],
                                       atol=1e-4)
    assert len(set(np.asarray(lp.lengths).ravel().tolist())) > 1  # stops gave mixed lengths


def test_load_trained_restores_final_params(tmp_path):
    cfg = tiny_config()
    cfg.train.steps = 4
    workdir = str(tmp_path / "run")
    train(cfg, workdir, verbose=False)
    loaded_cfg, model = checkpoint.load_trained(workdir)
    assert loaded_cfg.model.to_dict() == resolve(cfg).model.to_dict()

    # Reference: the full train state, restored the way the trainer resumes.
    trainer = Trainer(loaded_cfg, mesh_lib.make_mesh(loaded_cfg.mesh))
    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mngr:
        assert mngr.latest_step() == 4
        state = mngr.restore(4, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(trainer.abstract_state))).state
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, params, state["params"])
    init = trainer.init(loaded_cfg.train.seed)["params"]
    assert not np.array_equal(params["embed"]["embedding"], init["embed"]["embedding"])

    out = decode.generate(model, [[72, 101]], max_new_tokens=4)  # "He"
    assert out.tokens.shape == (1, 4)
