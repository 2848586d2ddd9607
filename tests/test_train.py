"""Trainer: checkpoint resume equals a straight run; sharded runs equal one device."""
import json
import os

import numpy as np
import pytest

from conftest import run_cli, tiny_config
from scaling.fileio import read_jsonl
from scaling.train.loop import train


class Crash(RuntimeError):
    pass


def _losses(workdir):
    rows = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]
    return [r["step"] for r in rows], [r["loss"] for r in rows]


def test_resume_equals_straight_run(tmp_path):
    cfg = tiny_config()
    cfg.train.steps, cfg.log.every, cfg.checkpoint.every = 12, 1, 4
    straight = train(cfg, str(tmp_path / "a"), verbose=False)

    def crash_at_10(step, total):
        if step == 10:
            raise Crash()

    with pytest.raises(Crash):
        train(cfg, str(tmp_path / "b"), on_step=crash_at_10, verbose=False)
    assert not (tmp_path / "b" / "summary.json").exists()
    assert max(_losses(tmp_path / "b")[0]) == 10  # lines 9-10 exist beyond the step-8 checkpoint
    resumed = train(cfg, str(tmp_path / "b"), verbose=False)

    steps_a, losses_a = _losses(tmp_path / "a")
    steps_b, losses_b = _losses(tmp_path / "b")
    assert steps_b == list(range(1, 13))          # no duplicated or missing lines
    assert losses_b == losses_a                   # bitwise: float32 on CPU, data keyed by step
    assert resumed["val_loss"] == straight["val_loss"]
    assert resumed["loss"] == straight["loss"]


def test_summary_and_metrics_contract(tmp_path):
    cfg = tiny_config()
    cfg.eval.every = 6
    s = train(cfg, str(tmp_path), verbose=False)
    for key in ("params_total", "params_non_embedding", "tokens", "flops", "loss", "val_loss",
                "val_ppl", "wall_s", "status", "mfu", "peak_source"):
        assert key in s
    assert s["status"] == "done" and s["tokens"] == 12 * 8 * 32
    assert s["flops"] == s["flops_per_token"] * s["tokens"]
    rows = read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if r.get("split") == "val"]
    assert [r["step"] for r in val_rows] == [6, 12]
    assert {"step", "tokens", "loss", "ppl", "lr", "grad_norm", "tokens_per_s", "mfu"} <= \
        set(train_rows[-1])
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]    # it learns
    assert 0 < train_rows[-1]["mfu"] < 1
    with open(tmp_path / "summary.json") as f:
        assert json.load(f) == s
    # A finished run is not retrained.
    mtime = os.path.getmtime(tmp_path / "metrics.jsonl")
    assert train(cfg, str(tmp_path), verbose=False) == s
    assert os.path.getmtime(tmp_path / "metrics.jsonl") == mtime


def test_sharded_run_matches_single_device(tmp_path):
    """data=2 x tensor=2 on 4 forced CPU devices trains the same model as one device."""
    common = ["train", "--config", "tests/tiny_experiment.py", "--config.train.steps=5",
              "--config.log.every=1", "--config.model.d_ff=64"]
    one = run_cli(*common, "--workdir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    four = run_cli(*common, "--workdir", str(tmp_path / "four"), "--config.mesh.data=2",
                   "--config.mesh.tensor=2",
                   env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert four.returncode == 0, four.stderr
    la, lb = _losses(tmp_path / "one")[1], _losses(tmp_path / "four")[1]
    np.testing.assert_allclose(lb, la, rtol=1e-5)
    with open(tmp_path / "four" / "summary.json") as f:
        assert json.load(f)["mesh"] == {"data": 2, "fsdp": 1, "pipeline": 1, "tensor": 2}
