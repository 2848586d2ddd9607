"""Context extension: `--init-from` (params in, fresh optimizer; shape mismatch is exit 2) and
the `ppl_by_position` eval (buckets past the training length; learned positions stop)."""
import json

import jax
import numpy as np
from flax import nnx

from conftest import tiny_config
from scaling.cli import main
from scaling.config import resolve
from scaling.evals.positions import ppl_by_position, run_and_write
from scaling.model.transformer import Transformer
from scaling.train.checkpoint import load_trained
from scaling.train.loop import train


def _params(workdir):
    _, model = load_trained(workdir)
    return jax.tree.leaves(nnx.state(model, nnx.Param))


def test_init_from_starts_at_the_source_params_and_refuses_other_shapes(tmp_path, capsys):
    src = tiny_config(pos="rope")
    src.train.steps = 4
    train(src, str(tmp_path / "src"), verbose=False)
    # Twice the context under position interpolation, one step at a negligible lr: the run's
    # final params are the source's (a fresh init or a restored optimizer would move them).
    ft = tiny_config(pos="rope", rope_scaling="linear:2")
    ft.train.update(dict(seq_len=64, steps=1, lr=1e-9, weight_decay=0.0, warmup=0.0,
                         init_from=str(tmp_path / "src" / "checkpoints" / "4")))
    s = train(ft, str(tmp_path / "ft"), verbose=False)
    assert s["status"] == "done" and s["resumed_from"] == 0
    for a, b in zip(_params(tmp_path / "src"), _params(tmp_path / "ft")):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)
    cfg_json = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert cfg_json["train"]["init_from"].endswith("checkpoints/4")

    capsys.readouterr()
    rc = main(["train", "--config", "tests/tiny_experiment.py", "--workdir", str(tmp_path / "bad"),
               "--init-from", str(tmp_path / "src"), "--config.model.d_model=64",
               "--config.model.pos=rope"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "differ in shape" in err and "\n" not in err, err
    assert not (tmp_path / "bad").exists()  # refused before anything was created
    rc = main(["train", "--config", "tests/tiny_experiment.py", "--workdir", str(tmp_path / "x"),
               "--init-from", str(tmp_path / "nowhere")])
    assert rc == 2 and "not a trained run" in capsys.readouterr().err


def test_ppl_by_position_reaches_past_the_training_length_except_learned(tmp_path):
    for pos in ("rope", "learned"):
        cfg = resolve(tiny_config(pos=pos))  # train.seq_len 32 (learned table: 32 rows)
        model = Transformer(cfg.model, nnx.Rngs(params=0))
        r = ppl_by_position(cfg, model, 64, buckets=4)
        assert [(x["lo"], x["hi"], x["beyond_train"]) for x in r["rows"]] == [
            (0, 16, False), (16, 32, False), (32, 48, True), (48, 64, True)]
        losses = [x["loss"] for x in r["rows"]]
        if pos == "rope":
            assert all(np.isfinite(losses)) and len(r["per_position"]) == 64
            assert abs(np.mean(r["per_position"][:16]) - losses[0]) < 1e-9
        else:
            assert np.isfinite(losses[:2]).all() and losses[2:] == [None, None]
            assert "max_len=32" in r["rows"][3]["note"]
    # Same params under position interpolation: a different model beyond position 0.
    out = tmp_path / "pi.json"
    cfg = resolve(tiny_config(pos="rope"))
    model = Transformer(cfg.model, nnx.Rngs(params=0))
    pi = run_and_write(cfg, model, 64, 4, str(out), rope_scaling="linear:2")
    assert json.loads(out.read_text())["rope_scaling"] == "linear:2"
    plain = ppl_by_position(cfg, model, 64, 4)
    assert pi["per_position"][0] == plain["per_position"][0]
    assert pi["per_position"][40] != plain["per_position"][40]
