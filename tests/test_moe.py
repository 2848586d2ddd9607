"""Mixture of experts (scaling/model/moe.py): equals the dense model with one expert, shards over
an expert mesh axis without changing the loss, counts active/total parameters, routes and drops
as documented."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import ROOT, run_cli
from scaling import counting
from scaling.config import ConfigDict, default_config, resolve
from scaling.errors import UserError
from scaling.model.moe import capacity, load_balancing_loss, route
from scaling.model.transformer import abstract_model
from scaling.parallel.mesh import check_divisibility, make_mesh
from scaling.train.step import Trainer


def _cfg(mlp="gelu", **moe):
    c = default_config()
    c.model.update(dict(d_model=32, n_layers=2, n_heads=4, mlp=mlp, pos="rope"))
    c.train.update(dict(batch_size=4, seq_len=16, steps=3))
    c.model.moe.update(moe)
    return resolve(c)


def _tokens(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.train.seq_len + 1),
                        dtype=np.int32)


@pytest.mark.parametrize("mlp", [pytest.param("gelu", marks=pytest.mark.slow), "swiglu"])
def test_one_expert_top1_equals_dense(mlp):
    """experts=1, top_k=1 with the dense model's MLP weights as its expert: same loss and grads."""
    dense_cfg = _cfg(mlp)
    moe_cfg = _cfg(mlp, experts=1, top_k=1, aux_loss_weight=0.0, z_loss_weight=0.0)
    dense, moe = Trainer(dense_cfg, make_mesh(dense_cfg.mesh)), Trainer(moe_cfg, make_mesh(moe_cfg.mesh))
    p_dense = dense.init(0)["params"]
    p_moe = moe.init(0)["params"]
    mlp_d, mlp_m = p_dense["blocks"]["mlp"], dict(p_moe["blocks"]["mlp"])
    names = ["wi", "wo"] + (["wg"] if mlp == "swiglu" else [])
    for n in names:  # dense kernel [L, a, b] -> the one expert [L, 1, a, b]
        mlp_m[n] = mlp_d[n]["kernel"][:, None]
    p_moe = {**p_moe, "blocks": {**p_moe["blocks"], "mlp": mlp_m}}
    for k in p_dense:
        if k != "blocks":
            p_moe[k] = p_dense[k]
    for k in p_dense["blocks"]:
        if k != "mlp":
            p_moe["blocks"][k] = p_dense["blocks"][k]

    batch = jnp.asarray(_tokens(dense_cfg))
    (obj_d, (ce_d, stats_d)), g_d = jax.value_and_grad(dense._loss, has_aux=True)(p_dense, batch)
    (obj_m, (ce_m, stats_m)), g_m = jax.value_and_grad(moe._loss, has_aux=True)(p_moe, batch)
    assert stats_d == {} and float(stats_m["moe_dropped"]) == 0.0
    np.testing.assert_allclose(float(obj_m), float(obj_d), atol=1e-5, rtol=0)
    np.testing.assert_allclose(float(ce_m), float(ce_d), atol=1e-5, rtol=0)
    for n in names:
        np.testing.assert_allclose(g_m["blocks"]["mlp"][n][:, 0], g_d["blocks"]["mlp"][n]["kernel"],
                                   atol=1e-5, rtol=0, err_msg=n)
    flat_d = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(g_d)}
    flat_m = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(g_m)}
    shared = [k for k in flat_d if "'mlp'" not in k]
    assert len(shared) > 5
    for k in shared:
        np.testing.assert_allclose(flat_m[k], flat_d[k], atol=1e-5, rtol=0, err_msg=k)


def test_hand_count_8_experts_top2():
    """d=16, L=2, 2 heads, d_ff=32 (gelu), layernorm, tied 257-vocab, rope, E=8, k=2."""
    c = default_config()
    c.model.update(dict(d_model=16, n_layers=2, n_heads=2, d_ff=32, pos="rope"))
    c.model.moe.update(dict(experts=8, top_k=2))
    c.train.update(dict(seq_len=32))
    cfg = resolve(c)
    attn, mlp, norms, router = 4 * 16 * 16, 2 * 16 * 32, 2 * 2 * 16, 16 * 8
    final_norm, embed = 2 * 16, 257 * 16
    total = 2 * (attn + norms + router + 8 * mlp) + final_norm + embed
    active = 2 * (attn + norms + router + 2 * mlp) + final_norm + embed
    assert (total, active) == (22960, 10672)
    d = counting.describe(cfg)
    assert d["params_total"] == total and d["params_active"] == active
    # FLOPs per token follow the active parameters (router included), not the total
    assert d["flops_per_token"] == 6 * (active - embed + 16 * 257) + 12 * 2 * 32 * 16
    # and the model really has `total` parameters
    params = nnx.state(abstract_model(cfg.model), nnx.Param)
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == total


def test_describe_cli_reports_active_and_total():
    r = run_cli("describe", "--config", "tests/tiny_experiment.py", "--json",
                "--config.model.moe.experts=8", "--config.model.moe.top_k=2")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    cfg = resolve(ConfigDict(out["config"]))
    assert out["params_total"] == counting.param_counts(cfg.model)["total"]
    assert out["params_active"] < out["params_total"]
    dense = run_cli("describe", "--config", "tests/tiny_experiment.py", "--json")
    d = json.loads(dense.stdout)
    assert d["params_active"] == d["params_total"]
    # 8 experts top-2: 7 more MLPs in total, 1 more active, plus the router (1 layer, D=32)
    mlp = 2 * 32 * 128
    assert out["params_total"] - d["params_total"] == 7 * mlp + 32 * 8
    assert out["params_active"] - d["params_active"] == 1 * mlp + 32 * 8


def test_load_balancing_loss_minimal_for_uniform_routing():
    E, G, S = 4, 2, 8
    uniform = jnp.full((G, S, E), 1 / E)
    onehot = jax.nn.one_hot(jnp.arange(G * S).reshape(G, S) % E, E)  # balanced hard routing
    collapsed = jax.nn.one_hot(jnp.zeros((G, S), jnp.int32), E)
    random_p = jax.nn.softmax(jax.random.normal(jax.random.key(0), (G, S, E)) * 3)
    random_m = jax.nn.one_hot(random_p.argmax(-1), E)
    lb_uniform = float(load_balancing_loss(uniform, collapsed))
    assert lb_uniform == pytest.approx(1.0)
    assert float(load_balancing_loss(onehot, onehot)) == pytest.approx(1.0)
    assert float(load_balancing_loss(collapsed, collapsed)) == pytest.approx(E)
    assert float(load_balancing_loss(random_p, random_m)) > lb_uniform
    # through the router: zero logits are uniform probabilities
    _, _, stats = route(jnp.zeros((G, S, E)), 1, S)
    assert float(stats["moe_lb_loss"]) == pytest.approx(1.0)


def test_capacity_drops_are_counted_and_dropless_keeps_all():
    cfg = _cfg(experts=4, top_k=1, capacity_factor=1.0).model.moe
    G, S, E = 1, 8, 4
    assert capacity(cfg, S) == 2
    logits = jnp.zeros((G, S, E)).at[..., 0].set(5.0)  # every token wants expert 0
    dispatch, combine, stats = route(logits, 1, capacity(cfg, S))
    assert float(dispatch.sum()) == 2.0                   # only 2 slots: the first two tokens
    assert float(stats["moe_dropped"]) == pytest.approx(6 / 8)
    assert float(stats["moe_load_max"]) == pytest.approx(E)
    np.testing.assert_array_equal(np.asarray(dispatch[0, :2, 0]), np.eye(2))
    dropless = _cfg(experts=4, top_k=1, capacity_factor=0.0).model.moe
    _, _, stats = route(logits, 1, capacity(dropless, S))
    assert float(stats["moe_dropped"]) == 0.0
    # top-2: gates renormalised over the two choices; second choices come after first choices
    d2, c2, s2 = route(jax.random.normal(jax.random.key(1), (G, S, E)), 2, S)
    np.testing.assert_allclose(np.asarray(c2.sum(axis=(2, 3))), 1.0, rtol=1e-6)
    assert float(s2["moe_dropped"]) == 0.0 and float(d2.sum()) == 2 * S


def test_bad_moe_input():
    with pytest.raises(UserError, match="top_k=3 must be in"):
        _cfg(experts=2, top_k=3)
    with pytest.raises(UserError, match="every=3 must be >= 1 and divide"):
        _cfg(experts=2, every=3)
    with pytest.raises(UserError, match="experts=6 is not divisible by mesh.expert=4"):
        check_divisibility(_cfg(experts=6), {"data": 1, "fsdp": 1, "tensor": 1, "pipeline": 1,
                                             "expert": 4})
    r = run_cli("describe", "--config", "tests/tiny_experiment.py", "--config.model.moe.experts=2",
                "--config.model.moe.top_k=4")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "model.moe.top_k=4" in r.stderr


def test_dense_trial_ids_unchanged_by_moe_keys():
    from scaling.config import result_config
    assert "moe" not in result_config(_cfg())["model"]
    assert result_config(_cfg(experts=4))["model"]["moe"]["experts"] == 4


def test_expert_axis_matches_one_device(tmp_path):
    """8 experts top-2 on 8 forced CPU devices, expert=4 x data=2: the single-device losses."""
    moe = {"experts": 8, "top_k": 2}
    meshes = [{"name": "one", "devices": 1, "moe": moe},
              {"name": "expert4_data2", "expert": 4, "data": 2, "moe": moe}]
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "parallel_equivalence.py"), str(tmp_path),
         json.dumps(meshes), "5"], capture_output=True, text=True, cwd=ROOT, timeout=600,
        env=dict(os.environ, PYTHONPATH=ROOT,
                 XLA_FLAGS="--xla_force_host_platform_device_count=8"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "results.json") as f:
        res = json.load(f)
    assert res["expert4_data2"]["mesh"]["expert"] == 4
    ref, got = res["one"]["losses"], res["expert4_data2"]["losses"]
    assert len(got) == 5
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    wi = next(k for k in res["expert4_data2"]["specs"] if "'mlp'" in k and "'wi'" in k)
    assert res["expert4_data2"]["specs"][wi] == "P(None, 'expert', None, None)"


@pytest.mark.parametrize("over", [dict(), dict(scan_unroll=1)], ids=["unrolled", "scan"])
def test_dropless_moe_cached_decoding_equals_forward(over):
    """Dropless MoE (every=2: a dense and a MoE block per stack element), top-2 of 4 experts:
    the KV-cached decoder, one token at a time, gives the full forward's logits."""
    from scaling.model.transformer import Transformer, init_cache
    c = default_config()
    c.model.update(dict(d_model=32, n_layers=4, n_heads=4, pos="rope", init_std=0.3, **over))
    c.model.moe.update(dict(experts=4, top_k=2, every=2, capacity_factor=0.0))
    cfg = resolve(c)
    model = Transformer(cfg.model, nnx.Rngs(params=0))
    x_BT = jnp.asarray(np.random.default_rng(1).integers(0, 257, size=(2, 8)), jnp.int32)
    full_BTV, sown = nnx.capture(model, nnx.Intermediate)(x_BT)
    assert float(nnx.to_pure_dict(sown)["moe"][0]["moe_dropped"]) == 0.0
    cache = init_cache(cfg.model, 2, 8)
    step = nnx.jit(lambda m, x, c, i: m(x, cache=c, index=i))
    for t in range(8):
        logits_B1V, cache = step(model, x_BT[:, t:t + 1], cache, t)
        # 1e-4: init_std=0.3 makes logits O(3); float32 reorderings reach ~1e-5
        np.testing.assert_allclose(np.asarray(logits_B1V[:, 0]), np.asarray(full_BTV[:, t]),
                                   atol=1e-4, rtol=0)
