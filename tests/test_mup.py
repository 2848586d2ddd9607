"""μP (model.parametrization=mup): equals SP at base width, the per-layer rules, resume, the
coordinate check, and the analysis of the coordinate check and the lr-transfer sweep."""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from flax import nnx

from conftest import run_cli, tiny_config
from scaling.config import resolve
from scaling.errors import UserError
from scaling.model import mup
from scaling.model.transformer import Transformer
from scaling.parallel.mesh import make_mesh
from scaling.train.optim import make_optimizer
from scaling.train.step import Trainer

HIDDEN = {"['blocks']['attn']['wq']['kernel']", "['blocks']['attn']['wk']['kernel']",
          "['blocks']['attn']['wv']['kernel']", "['blocks']['attn']['wo']['kernel']",
          "['blocks']['mlp']['wi']['kernel']", "['blocks']['mlp']['wo']['kernel']"}


def _cfg(parametrization="sp", width=32, base_width=32, **model):
    c = tiny_config(d_model=width, parametrization=parametrization, base_width=base_width,
                    **model)
    c.mesh.data = 1
    return resolve(c)


def _flat(tree) -> dict:
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def _train(cfg, steps=4):
    """Losses and final params of `steps` steps on random tokens (keyed by step)."""
    trainer = Trainer(cfg, make_mesh(cfg.mesh, jax.devices()[:1]))
    state, losses = trainer.init(0), []
    for step in range(steps):
        tokens = np.random.default_rng(step).integers(
            0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.train.seq_len + 1), np.int32)
        state, metrics = trainer.step(state, trainer.global_batch(tokens))
        losses.append(float(metrics["loss"]))
    return losses, _flat(state["params"])


def test_mup_at_base_width_is_sp_bit_for_bit():
    sp_losses, sp_params = _train(_cfg("sp"))
    mup_losses, mup_params = _train(_cfg("mup", base_width=32))
    assert mup_losses == sp_losses
    for key, value in sp_params.items():
        np.testing.assert_array_equal(mup_params[key], value, err_msg=key)
    # ... and away from the base width it is another model.
    assert _train(_cfg("mup", base_width=16), steps=1)[0] != sp_losses[:1]


def test_hidden_labels_and_init_scale():
    """Hidden = both sides grow with width; their init std is the sp draw times m^-1/2."""
    sp = nnx.state(Transformer(_cfg("sp", width=64).model, nnx.Rngs(params=0)), nnx.Param)
    cfg = _cfg("mup", width=64, base_width=16)  # m = 4
    state = nnx.state(Transformer(cfg.model, nnx.Rngs(params=0)), nnx.Param)
    labels = _flat(mup.param_labels(nnx.to_pure_dict(nnx.get_partition_spec(state))))
    assert {k for k, v in labels.items() if v == mup.HIDDEN} == HIDDEN
    sp, got = _flat(nnx.to_pure_dict(sp)), _flat(nnx.to_pure_dict(state))
    for key in sp:
        np.testing.assert_allclose(got[key], sp[key] * (0.5 if key in HIDDEN else 1.0),
                                   rtol=1e-6, err_msg=key)
    assert mup.lr_multipliers(cfg.model) == {mup.HIDDEN: 0.25, mup.OTHER: 1.0}


def test_hidden_adam_lr_is_divided_by_the_width_multiplier():
    cfg = _cfg("mup", width=64, base_width=16)
    params = {"hidden": jnp.ones((3, 3)), "other": jnp.ones((3,))}
    labels = {"hidden": mup.HIDDEN, "other": mup.OTHER}
    grads = jax.tree.map(lambda p: 0.5 * p, params)
    plain, _ = make_optimizer(cfg.train)
    scaled, _ = make_optimizer(cfg.train, lr_mults=(labels, mup.lr_multipliers(cfg.model)))
    u_plain = plain.update(grads, plain.init(params), params)[0]
    u_mup = scaled.update(grads, scaled.init(params), params)[0]
    np.testing.assert_allclose(u_mup["hidden"], u_plain["hidden"] / 4, rtol=1e-6)
    np.testing.assert_allclose(u_mup["other"], u_plain["other"], rtol=0)


@pytest.mark.parametrize("tie", [True, False])
def test_readout_and_attention_scale(tie):
    """μP logits = (sp logits with q scaled by m^-1/2, i.e. attention 1/(sqrt(K) sqrt(m)))/m."""
    m = 4
    mup_cfg = _cfg("mup", width=64, base_width=16, tie_embeddings=tie)
    sp_cfg = _cfg("sp", width=64, tie_embeddings=tie)
    model = Transformer(mup_cfg.model, nnx.Rngs(params=0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    sp_model = Transformer(sp_cfg.model, nnx.Rngs(params=1))
    sp_params = jax.tree.map(lambda a: a, params)
    sp_params["blocks"]["attn"]["wq"]["kernel"] = params["blocks"]["attn"]["wq"]["kernel"] / 2
    nnx.update(sp_model, sp_params)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 257, (2, 16)), jnp.int32)
    np.testing.assert_allclose(model(tokens), sp_model(tokens) / m, rtol=1e-4, atol=1e-6)


def test_mup_resume_equals_straight_run(tmp_path):
    from scaling.fileio import read_jsonl
    from scaling.train.loop import train
    cfg = tiny_config(parametrization="mup", base_width=16)
    cfg.train.steps, cfg.log.every, cfg.checkpoint.every = 8, 1, 4
    straight = train(cfg, str(tmp_path / "a"), verbose=False)

    class Crash(RuntimeError):
        pass

    def crash(step, total):
        if step == 6:
            raise Crash()

    with pytest.raises(Crash):
        train(cfg, str(tmp_path / "b"), on_step=crash, verbose=False)
    resumed = train(cfg, str(tmp_path / "b"), verbose=False)
    losses = lambda d: [r["loss"] for r in read_jsonl(d / "metrics.jsonl") if "loss" in r]  # noqa
    assert losses(tmp_path / "b") == losses(tmp_path / "a")
    assert resumed["val_loss"] == straight["val_loss"]


def test_config_rejects_bad_parametrization():
    c = tiny_config(parametrization="ntk")
    with pytest.raises(UserError, match="model.parametrization='ntk' is not one of sp, mup"):
        resolve(c)
    with pytest.raises(UserError, match="model.base_width must be > 0"):
        resolve(tiny_config(base_width=0))


# ---------------------------------------------------------------------------- coordinate check

def _growth(widths, **shape):
    from analysis.mup import coord_growth
    from scaling.bench import mup_check
    rows = mup_check.run(widths, verbose=False, **shape)["rows"]
    g = coord_growth(pd.DataFrame(rows))
    return {(r.parametrization, r.layer): r for r in g.itertuples()}


def test_coordinate_check_64_to_256():
    """Fast version (4x width): μP keeps every layer within 1.5x; SP's logits grow."""
    g = _growth((64, 256), seq_len=32, batch_size=4)
    for layer in ("embed", "block0", "block1", "logits"):
        assert g["mup", layer].spread <= 1.5, (layer, g["mup", layer])
    assert g["sp", "logits"].ratio >= 1.7
    assert g["sp", "block1"].ratio >= 3


@pytest.mark.slow
def test_coordinate_check_64_to_1024():
    """Issue 16's acceptance: 64 -> 1024, after 5 steps: μP <= 1.5x per layer, SP logits >= 3x."""
    g = _growth((64, 1024))
    for layer in ("embed", "block0", "block1", "logits"):
        assert g["mup", layer].spread <= 1.5, (layer, g["mup", layer])
    assert g["sp", "logits"].ratio >= 3


@pytest.mark.slow
def test_mup_check_cli_writes_numbers_and_plot(tmp_path):
    out = tmp_path / "check.json"
    proc = run_cli("mup-check", "--widths", "16,32", "--steps", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert {(r["parametrization"], r["width"]) for r in data["rows"]} == \
        {(p, w) for p in ("sp", "mup") for w in (16, 32)}
    assert (tmp_path / "mup_coord_check.png").is_file()
    bad = run_cli("mup-check", "--widths", "64")
    assert bad.returncode == 2 and "give two or more multiples of 4" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- analysis

def test_coord_growth_and_plot(tmp_path):
    from analysis.mup import coord_growth, load_coord_check, main, plot_coord_check
    rows = [{"parametrization": p, "width": w, "step": s, "layer": layer,
             "rms": (w / 64) ** (0.5 if p == "sp" else 0) * (1 + s)}
            for p in ("sp", "mup") for w in (64, 256, 1024) for s in (0, 5)
            for layer in ("embed", "logits")]
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"rows": rows}))
    df = load_coord_check(path)
    g = coord_growth(df).set_index(["parametrization", "layer"])
    assert g.loc[("sp", "logits"), "ratio"] == pytest.approx(4.0)
    assert g.loc[("mup", "logits"), "spread"] == pytest.approx(1.0)
    assert plot_coord_check(df, tmp_path)[0].endswith("mup_coord_check.png")
    assert main(["coord", str(tmp_path / "missing.json")]) == 2


def _transfer_table(shift: float) -> pd.DataFrame:
    """Parabolas in log lr with optimum 8e-3 * (width/64)^-shift."""
    rows = []
    for p, s in (("sp", shift), ("mup", 0.0)):
        for w in (64, 128, 256):
            best = 8e-3 * (w / 64) ** -s
            for lr in (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2):
                rows.append({"model.parametrization": p, "model.d_model": w, "train.lr": lr,
                             "val_loss": 3 + 0.1 * math.log(lr / best) ** 2 - 0.01 * w ** 0.5,
                             "status": "done"})
    return pd.DataFrame(rows)


def test_transfer_optima_spread_and_plot(tmp_path):
    from analysis.mup import main, plot_transfer, transfer_optima
    df = _transfer_table(shift=1.0)
    opt = transfer_optima(df).set_index(["parametrization", "width"])
    assert opt.loc[("mup", 64), "lr_opt"] == pytest.approx(8e-3, rel=1e-6)
    assert opt.loc[("sp", 256), "lr_opt"] == pytest.approx(2e-3, rel=1e-6)
    assert opt.loc[("sp", 64), "spread"] == pytest.approx(4.0, rel=1e-6)
    assert opt.loc[("mup", 64), "spread"] == pytest.approx(1.0, rel=1e-6)
    assert plot_transfer(df, transfer_optima(df), tmp_path)[0].endswith("mup_transfer.png")
    for p in ("sp", "mup"):
        os.makedirs(tmp_path / p)
        df[df["model.parametrization"] == p].to_csv(tmp_path / p / "results.csv", index=False)
    assert main(["transfer", str(tmp_path / "sp"), str(tmp_path / "mup")]) == 0
    assert main(["transfer", str(tmp_path / "nowhere")]) == 2


def test_mup_transfer_experiment_grid():
    from scaling.sweeps.plan import expand
    trials, varied = expand("experiments/mup_transfer.py:mup", [])
    assert len(trials) == 21 and "model.parametrization" in varied
    assert {t.cfg.model.parametrization for t in trials} == {"mup"}
    assert {t.cfg.model.d_model for t in trials} == {64, 128, 256}
    assert trials[0].trial_id.startswith("d64-L2-h4-mup-lr0.001-")
    assert len(expand("experiments/mup_transfer.py", [])[0]) == 42  # both
    with pytest.raises(UserError, match="pick one of sp, mup, pilot"):
        expand("experiments/mup_transfer.py:ntk", [])
