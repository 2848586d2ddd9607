"""Vectorised trials (scaling/train/group.py): a group of seeds or lrs trained in one step (vmapped,
or mapped over members: bitwise) equals the trials trained separately, each with its own complete trial dir; a stopped group
resumes; the sweep runner forms groups and can be told not to."""
import json
import os

import numpy as np
import pytest

from conftest import tiny_config
from scaling.config import ConfigDict, group_key
from scaling.fileio import read_jsonl
from scaling.train.group import GroupMismatch, step_mode, train_group
from scaling.train.loop import train


def _rows(workdir, key="loss"):
    return [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if key in r]


def _members(field, values, **train_kw):
    cfgs = []
    for v in values:
        c = tiny_config()
        c.train.update(dict(steps=8, **train_kw))
        c.log.every = 1
        c.train[field] = v
        cfgs.append(c)
    return cfgs


def _check_equal_to_separate(tmp_path, cfgs, mode="auto"):
    dirs = [str(tmp_path / f"g{k}") for k in range(len(cfgs))]
    out = train_group([ConfigDict(c.to_dict()) for c in cfgs], dirs, mode=mode)
    for k, c in enumerate(cfgs):
        alone = train(ConfigDict(c.to_dict()), str(tmp_path / f"s{k}"), verbose=False)
        g, s = _rows(dirs[k]), _rows(tmp_path / f"s{k}")
        assert [r["step"] for r in g] == list(range(1, 9))
        if step_mode(mode) == "map":  # each member's step is the single-run computation: bitwise
            assert [r["loss"] for r in g] == [r["loss"] for r in s]
        np.testing.assert_allclose([r["loss"] for r in g], [r["loss"] for r in s], atol=1e-5)
        np.testing.assert_allclose([r["lr"] for r in g], [r["lr"] for r in s], rtol=1e-6)
        assert abs(out[k]["val_loss"] - alone["val_loss"]) <= 1e-5
        assert out[k]["status"] == "done" and out[k]["group_size"] == len(cfgs)
        for name in ("summary.json", "config.json", "metrics.jsonl", "checkpoints/8"):
            assert os.path.exists(os.path.join(dirs[k], name)), name
    losses = [out[k]["loss"] for k in range(len(cfgs))]
    assert len(set(losses)) == len(cfgs)  # the members really differ


@pytest.mark.parametrize("mode", ["vmap", "map"])
def test_group_of_seeds_equals_separate_runs(tmp_path, mode):
    _check_equal_to_separate(tmp_path, _members("seed", [0, 1, 2, 3]), mode)


@pytest.mark.parametrize("mode", ["vmap", "map"])
def test_group_of_lrs_equals_separate_runs(tmp_path, mode):
    _check_equal_to_separate(tmp_path, _members("lr", [1e-3, 2e-3, 4e-3, 8e-3]), mode)


def test_group_mode_auto_is_map_on_cpu_and_bad_modes_are_refused():
    import jax
    assert step_mode("auto") == ("map" if jax.default_backend() == "cpu" else "vmap")
    assert step_mode("vmap") == "vmap" and step_mode("map") == "map"
    with pytest.raises(ValueError, match="unknown group mode"):
        step_mode("pmap")


class Crash(RuntimeError):
    pass


@pytest.mark.slow
def test_interrupted_group_resumes_from_its_checkpoints(tmp_path):
    cfgs = _members("seed", [0, 1], )
    for c in cfgs:
        c.checkpoint.every = 4
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]

    def crash_at_6(step, total):
        if step == 6:
            raise Crash()

    with pytest.raises(Crash):
        train_group(cfgs, dirs, on_step=crash_at_6)
    for d in dirs:
        assert os.path.isdir(os.path.join(d, "checkpoints", "4"))
        assert not os.path.exists(os.path.join(d, "summary.json"))
    out = train_group(cfgs, dirs)
    assert [s["resumed_from"] for s in out] == [4, 4]
    for k, c in enumerate(cfgs):
        straight = train(c, str(tmp_path / f"s{k}"), verbose=False)
        assert [r["step"] for r in _rows(dirs[k])] == list(range(1, 9))  # no line twice
        np.testing.assert_allclose([r["loss"] for r in _rows(dirs[k])],
                                   [r["loss"] for r in _rows(tmp_path / f"s{k}")], atol=1e-5)
        assert abs(out[k]["val_loss"] - straight["val_loss"]) <= 1e-5


def test_members_at_different_steps_are_refused_before_training(tmp_path):
    cfgs = _members("seed", [0, 1])
    for c in cfgs:
        c.checkpoint.every = 4
    a, b = str(tmp_path / "a"), str(tmp_path / "b")

    def crash_at_5(step, total):
        if step == 5:
            raise Crash()

    with pytest.raises(Crash):
        train(cfgs[0], a, on_step=crash_at_5, verbose=False)
    with pytest.raises(GroupMismatch, match="resume from steps"):
        train_group(cfgs, [a, b])
    assert not os.path.exists(os.path.join(b, "metrics.jsonl"))  # nothing written for b


def test_group_key_ignores_only_seed_and_optimizer_numbers():
    base = tiny_config()
    same = tiny_config()
    same.train.update(dict(seed=3, lr=1e-2, b2=0.99, weight_decay=0.0, warmup=5.0))
    assert group_key(base) == group_key(same)
    for key, value in (("model.d_model", 64), ("train.steps", 13), ("train.batch_size", 4),
                       ("train.grad_clip", 0.0), ("train.schedule", "wsd"), ("log.every", 3)):
        other = tiny_config()
        node, leaf = other, key.split(".")
        for p in leaf[:-1]:
            node = node[p]
        node[leaf[-1]] = value
        assert group_key(other) != group_key(base), key
    piped = tiny_config()
    piped.mesh.pipeline = 2
    assert group_key(piped) is None


# ------------------------------------------------------------------ the sweep runner

def _summaries(workdir):
    from scaling.sweeps import store
    plan = store.read_plan(workdir)
    return {t["trial_id"]: store.read_summary(store.trial_dir(workdir, t["trial_id"]))
            for t in plan["trials"]}


def test_sweep_groups_lr_trials_and_equals_an_unvectorised_sweep(tmp_path):
    from scaling.sweeps.runner import run_sweep
    spec = "tests/vector_experiment.py:lr"
    assert run_sweep(spec, [], str(tmp_path / "v"), group_size=8) == 0
    assert run_sweep(spec, [], str(tmp_path / "s"), group_size=1) == 0
    v, s = _summaries(str(tmp_path / "v")), _summaries(str(tmp_path / "s"))
    assert sorted(v) == sorted(s) and len(v) == 4
    for tid in v:
        assert v[tid]["status"] == "done" and v[tid].get("group_size") == 4
        assert "group_size" not in s[tid]
        assert abs(v[tid]["val_loss"] - s[tid]["val_loss"]) <= 1e-5
        assert abs(v[tid]["loss"] - s[tid]["loss"]) <= 1e-5


def test_groups_are_claimed_largest_first(tmp_path, monkeypatch):
    """Workers take the groups with the most training FLOPs first (ties in plan order), so a
    sweep of unequal groups does not end with one worker training the largest alone."""
    from scaling.sweeps import launchers
    from scaling.sweeps.plan import Trial
    trials = []
    for d in (16, 64, 32):  # plan order: small, large, middle
        for lr in (1e-3, 2e-3):
            c = tiny_config()
            c.model.d_model, c.train.lr = d, lr
            trials.append(Trial(f"d{d}-lr{lr}", {"model.d_model": d, "train.lr": lr}, c))
    claimed = []
    monkeypatch.setattr(launchers, "claim_group", lambda w, g, label, progress=False: (
        claimed.append(sorted({t.cfg.model.d_model for _, t in g})) or {t.trial_id for _, t in g}))
    launchers.run_claims(str(tmp_path), trials, lambda k, t: t.trial_id, group_size=8)
    assert claimed == [[64], [32], [16]]


@pytest.mark.slow
def test_parallel_workers_each_claim_a_group(tmp_path):
    from conftest import run_cli
    w = str(tmp_path / "p")
    r = run_cli("sweep", "--config", "tests/vector_experiment.py", "--workdir", w,
                "--parallel", "2", "--vectorize")
    assert r.returncode == 0, r.stderr
    summaries = _summaries(w)
    assert [x["status"] for x in summaries.values()] == ["done"] * 4
    assert [x["group_size"] for x in summaries.values()] == [2] * 4  # 4 trials / 2 workers


@pytest.mark.slow
def test_sigkilled_group_sweep_reruns_to_the_uninterrupted_result(tmp_path):
    """SIGKILL a sweep while its seeds train as one group (each past a checkpoint), rerun it:
    the group resumes from the common checkpoint, no line twice, losses as a straight run."""
    import signal
    import subprocess
    import sys

    from conftest import ROOT, run_cli
    w = str(tmp_path / "sweep")
    cmd = ["sweep", "--config", "tests/sweep_experiment.py:40", "--workdir", w, "--vectorize"]
    proc = subprocess.Popen([sys.executable, "-m", "scaling.cli", *cmd], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials = os.path.join(w, "trials")

    def ckpts(t):
        d = os.path.join(trials, t, "checkpoints")
        return [int(x) for x in os.listdir(d) if x.isdigit()] if os.path.isdir(d) else []
    try:
        import time
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            names = os.listdir(trials) if os.path.isdir(trials) else []
            # all at the same newest checkpoint (a kill between the members' commits would
            # leave them at different steps: then they resume one by one, GroupMismatch)
            if len(names) == 3 and all(ckpts(t) for t in names) \
                    and len({max(ckpts(t)) for t in names}) == 1:
                break
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    names = sorted(os.listdir(trials))
    assert len(names) == 3 and all(ckpts(t) for t in names)
    assert not any(os.path.exists(os.path.join(trials, t, "summary.json")) for t in names)
    again = run_cli(*cmd)
    assert again.returncode == 0, again.stdout + again.stderr
    for t in names:
        s = json.load(open(os.path.join(trials, t, "summary.json")))
        assert s["status"] == "done" and s["group_size"] == 3 and s["resumed_from"] >= 10
        assert [r["step"] for r in _rows(os.path.join(trials, t))] == list(range(1, 41))
    seed0 = next(t for t in names
                 if json.load(open(os.path.join(trials, t, "config.json")))["train"]["seed"] == 0)
    ref = run_cli("train", "--config", "tests/sweep_experiment.py:40", "--workdir",
                  str(tmp_path / "ref"), "--json")
    assert ref.returncode == 0, ref.stderr
    np.testing.assert_allclose([r["loss"] for r in _rows(os.path.join(trials, seed0))],
                               [r["loss"] for r in _rows(tmp_path / "ref")], atol=1e-5)


@pytest.mark.slow
def test_benchmark_reports_the_rounding_floor(tmp_path):
    """bench_vectorized --floor trains every trial a second time with a chunked loss (the same
    loss, another summation order) and reports how far those two separate runs differ, beside
    the group-vs-separate difference; on a short run before any plateau both are ~1e-7."""
    from scaling.bench.vectorized import main
    out = main(["--group", "2", "--steps", "20", "--d-model", "16", "--layers", "1", "--batch", "2",
                "--seq-len", "16", "--floor", "--out", str(tmp_path / "v.json")])
    assert json.loads((tmp_path / "v.json").read_text())["results"] == out["results"]
    for r in out["results"]:
        assert len(r["loss_diff_per_trial"]) == len(r["floor_loss_diff_per_trial"]) == 2
        assert r["max_loss_diff"] <= 1e-5 and r["floor_max_loss_diff"] <= 1e-5
        assert r["group_tokens_per_s"] > 0 and r["separate_tokens_per_s"] > 0
