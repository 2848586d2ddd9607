"""A plain, minimal JAX language-model training step: the yardstick for `scaling bench`.

Written independently of `scaling/` (no Flax, no NNX, no shardings, no scan): parameters are a
dict of arrays, the layers are a Python loop (unrolled into the jitted program), attention is an
einsum with a causal mask, and the optimizer is optax AdamW with global-norm clipping at a
constant learning rate. It has the same shapes and FLOPs as the trainer's default model: token +
learned position embedding, pre-LayerNorm blocks (attention, GELU MLP 4x), final LayerNorm, head
tied to the embedding, softmax cross-entropy on next tokens.

    python benchmarks/baseline_lm.py [--d 128] [--layers 4] [--heads 4] [--seq 128] [--batch 32]
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax


def init_params(key, *, d: int, layers: int, vocab: int, seq: int, ff: int | None = None):
    """GPT-2-style init: normal(0.02), residual output projections scaled by 1/sqrt(2L)."""
    ff = ff or 4 * d
    std, out_std = 0.02, 0.02 / np.sqrt(2 * layers)
    keys = iter(jax.random.split(key, 2 + 6 * layers))
    normal = lambda shape, s=std: s * jax.random.normal(next(keys), shape, jnp.float32)  # noqa: E731
    params = {"wte": normal((vocab, d)), "wpe": normal((seq, d)),
              "ln_f": {"g": jnp.ones(d), "b": jnp.zeros(d)}, "blocks": []}
    for _ in range(layers):
        params["blocks"].append({
            "ln1": {"g": jnp.ones(d), "b": jnp.zeros(d)},
            "wq": normal((d, d)), "wk": normal((d, d)), "wv": normal((d, d)),
            "wo": normal((d, d), out_std),
            "ln2": {"g": jnp.ones(d), "b": jnp.zeros(d)},
            "w1": normal((d, ff)), "w2": normal((ff, d), out_std),
        })
    return params


def layer_norm(x, p, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * p["g"] + p["b"]


def attention(x, blk, heads: int):
    B, T, D = x.shape
    split = lambda y: y.reshape(B, T, heads, D // heads)  # noqa: E731
    q, k, v = split(x @ blk["wq"]), split(x @ blk["wk"]), split(x @ blk["wv"])
    scores = jnp.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(D // heads)
    causal = jnp.tril(jnp.ones((T, T), bool))
    scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
    out = jnp.einsum("bhqs,bshk->bqhk", jax.nn.softmax(scores, axis=-1), v)
    return out.reshape(B, T, D) @ blk["wo"]


def forward(params, tokens, heads: int):
    """Token ids [B, T] -> logits [B, T, V]."""
    x = params["wte"][tokens] + params["wpe"][: tokens.shape[1]]
    for blk in params["blocks"]:
        x = x + attention(layer_norm(x, blk["ln1"]), blk, heads)
        h = jax.nn.gelu(layer_norm(x, blk["ln2"]) @ blk["w1"])
        x = x + h @ blk["w2"]
    return layer_norm(x, params["ln_f"]) @ params["wte"].T


def loss_fn(params, tokens_BT1, heads: int):
    logits = forward(params, tokens_BT1[:, :-1], heads)
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens_BT1[:, 1:]).mean()


def make_train_step(heads: int, lr: float = 3e-3):
    """(optimizer, jitted step(params, opt_state, tokens) -> (params, opt_state, loss))."""
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(lr, b1=0.9, b2=0.95, weight_decay=0.1))

    def step(params, opt_state, tokens_BT1):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens_BT1, heads)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return tx, jax.jit(step, donate_argnums=(0, 1))


def setup(*, d: int, layers: int, heads: int, seq: int, batch: int, vocab: int = 257, seed: int = 0):
    """Build params, optimizer state, the jitted step and a random batch for one shape."""
    params = init_params(jax.random.key(seed), d=d, layers=layers, vocab=vocab, seq=seq)
    tx, step = make_train_step(heads)
    tokens = jax.random.randint(jax.random.key(seed + 1), (batch, seq + 1), 0, vocab, jnp.int32)
    return params, tx.init(params), step, tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    params, opt_state, step, tokens = setup(d=a.d, layers=a.layers, heads=a.heads, seq=a.seq,
                                            batch=a.batch)
    params, opt_state, loss = step(params, opt_state, tokens)
    jax.block_until_ready(loss)
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, tokens)
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t0)
    t = float(np.median(times))
    print(f"loss {float(loss):.4f} step {t * 1e3:.1f} ms tokens/s {a.batch * a.seq / t:,.0f}")


if __name__ == "__main__":
    main()
