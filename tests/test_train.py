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


@pytest.mark.slow
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


# ---------------------------------------------------------------------------- measurements

def test_warmup_has_a_floor_and_no_lr_zero_step():
    from scaling.config import default_config
    from scaling.train.optim import WARMUP_FLOOR, lr_schedule, optimizer_hparams, warmup_steps
    t = default_config().train
    for steps, warmup, expected in [(1000, 0.001, WARMUP_FLOOR), (12, 0.05, 3), (3, 0.5, 2),
                                    (100, 0.0, 0), (100, 50, 50), (100, 200, 99),
                                    (1000, 0.05, 50), (1, 0.05, 0)]:
        t.steps, t.warmup = steps, warmup
        assert warmup_steps(t) == expected, (steps, warmup)
    t.steps, t.warmup, t.lr = 1000, 0.001, 1e-3   # 0.001 * 1000 would round to 1 step
    hp = optimizer_hparams(t)
    lrs = np.array([float(lr_schedule(s, hp)) for s in range(WARMUP_FLOOR + 2)])
    assert lrs[0] > 0 and np.isclose(lrs[0], t.lr / WARMUP_FLOOR)
    assert np.all(np.diff(lrs[:WARMUP_FLOOR]) > 0) and np.isclose(lrs[WARMUP_FLOOR - 1], t.lr)
    assert lrs[WARMUP_FLOOR + 1] < t.lr  # then the cosine decay


def _gathered_windows(monkeypatch, cfg):
    """Window ids of every row of the validation sample of `cfg` (all eval.batches batches)."""
    from scaling.data import TokenBatches
    data = TokenBatches(cfg, cfg.data.val_split)
    seen = []
    orig = TokenBatches._gather

    def gather(self, window_ids):
        seen.extend(int(w) for w in window_ids)
        return orig(self, window_ids)
    monkeypatch.setattr(TokenBatches, "_gather", gather)
    n = min(cfg.eval.batches, data.num_batches)
    batches = [data.spread_batch(i, n) for i in range(n)]
    monkeypatch.undo()
    return data.num_windows, seen, batches


def test_val_sample_spreads_over_the_whole_split_and_is_fixed(monkeypatch, tmp_path):
    from scaling.config import resolve
    from scaling.train.loop import _Run
    cfg = resolve(tiny_config())
    cfg.eval.batches = 4
    num_windows, ids, _ = _gathered_windows(monkeypatch, cfg)
    n = cfg.eval.batches * cfg.train.batch_size
    assert len(ids) == n == len(set(ids))                         # distinct windows
    gaps = np.diff(sorted(ids))
    assert min(ids) == 0 and max(ids) >= num_windows - 2 * num_windows / n
    assert gaps.max() <= num_windows / n + 1                      # evenly spread, not a prefix
    # Two trainers with other models and lr (same data, seq_len, batch) use the same sample.
    other = resolve(tiny_config(d_model=64, n_heads=4))
    other.eval.batches, other.train.lr = 4, 1e-2
    runs = [_Run(c, str(tmp_path / name), 0.0) for c, name in ((cfg, "a"), (other, "b"))]
    for r in runs:
        r.close()
    assert len(runs[0].val_batches) == 4
    for a, b in zip(*(r.val_batches for r in runs)):
        np.testing.assert_array_equal(a, b)


def test_window_mean_loss_val_se_and_summary_counts(tmp_path):
    from scaling.config import resolve
    from scaling.data import TokenBatches
    from scaling.train.optim import warmup_steps
    cfg = tiny_config()
    cfg.train.steps, cfg.log.every, cfg.train.warmup = 12, 1, 0.05
    every = train(cfg, str(tmp_path / "every"), verbose=False)
    cfg.log.every = 4
    windowed = train(cfg, str(tmp_path / "windowed"), verbose=False)

    rows1 = [r for r in read_jsonl(tmp_path / "every" / "metrics.jsonl") if "loss" in r]
    rows4 = [r for r in read_jsonl(tmp_path / "windowed" / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows4] == [4, 8, 12]
    per_step = [r["loss"] for r in rows1]
    for r in rows4:  # the mean over the window, not the window's last batch
        np.testing.assert_allclose(r["loss"], np.mean(per_step[r["step"] - 4:r["step"]]),
                                   rtol=1e-6)
    assert rows4[0]["loss"] != per_step[3]
    # Warmup: step 1 (optimizer step 0) trains at lr / warmup > 0; warmup has its floor.
    w = warmup_steps(resolve(cfg).train)
    assert every["warmup_steps"] == w == 3
    np.testing.assert_allclose(rows1[0]["lr"], cfg.train.lr / w, rtol=1e-6)
    np.testing.assert_allclose(rows1[w - 1]["lr"], cfg.train.lr, rtol=1e-6)

    for s in (every, windowed):
        assert s["val_loss_se"] > 0 and s["val_sequences"] == cfg.eval.batches * 8
        tokens = 12 * 8 * 32
        assert s["steps"] == 12 and s["tokens"] == tokens
        assert s["tokens_per_param"] == tokens / s["params_total"]
        assert s["tokens_per_param_ne"] == tokens / s["params_non_embedding"]
        split = TokenBatches(resolve(cfg), cfg.data.train_split)
        assert s["epochs"] == tokens / (split.num_windows * 32) and 0 < s["epochs"] < 1
    val = [r for r in read_jsonl(tmp_path / "every" / "metrics.jsonl") if r.get("split") == "val"]
    assert val[-1]["val_loss"] == every["val_loss"] and val[-1]["val_loss_se"] > 0
    assert windowed["val_loss"] == every["val_loss"]  # same training, same fixed sample


def test_summary_writes_non_finite_numbers_as_null(tmp_path):
    from scaling.sweeps.store import write_summary

    def strict(name):
        raise ValueError(f"bare {name} in summary.json")
    out = write_summary(str(tmp_path), {"loss": float("nan"), "mfu": float("inf"),
                                        "val_loss": np.float32(2.5), "mesh": {"x": [np.nan, 1]}})
    with open(tmp_path / "summary.json") as f:
        got = json.loads(f.read(), parse_constant=strict)
    assert got == out == {"loss": None, "mfu": None, "val_loss": 2.5, "mesh": {"x": [None, 1]}}


def test_results_table_carries_the_guardrail_columns(tmp_path):
    from scaling.sweeps.runner import collect
    tdir = tmp_path / "trials" / "t1"
    os.makedirs(tdir)
    (tmp_path / "sweep.json").write_text(json.dumps(
        {"varied": [], "trials": [{"trial_id": "t1", "overrides": {}}]}))
    s = {"status": "done", "loss": 1.0, "steps": 12, "warmup_steps": 3, "tokens_per_param": 2.0,
         "tokens_per_param_ne": 5.0, "epochs": 0.25, "val_loss_se": 0.01}
    (tdir / "summary.json").write_text(json.dumps(s))
    row = collect(str(tmp_path)).iloc[0]
    for k in ("steps", "warmup_steps", "tokens_per_param", "tokens_per_param_ne", "epochs",
              "val_loss_se"):
        assert row[k] == s[k], k
