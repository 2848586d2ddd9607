"""Warmup-stable-decay schedules and cooldown branches in sweeps (issue 16)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, run_cli
from scaling.config import apply_overrides, default_config, resolve
from scaling.errors import UserError
from scaling.sweeps.plan import expand
from scaling.sweeps.store import record_failure, trial_dir
from scaling.train.schedule import warmup_steps

EXP = "tests/wsd_experiment.py"


def test_wsd_and_constant_lr_shapes():
    from scaling.train.optim import lr_schedule, optimizer_hparams
    t = default_config().train
    t.update(dict(steps=100, lr=1e-3, warmup=10.0, min_lr_ratio=0.1, decay_fraction=0.2))

    def lrs(**kw):
        t.update(kw)
        hp = optimizer_hparams(t)
        return np.array([float(lr_schedule(s, hp)) for s in range(100)], np.float32)
    lin, sq = lrs(schedule="wsd", decay_shape="linear"), lrs(schedule="wsd", decay_shape="1-sqrt")
    const, cos = lrs(schedule="constant"), lrs(schedule="cosine")
    peak = np.float32(1e-3)
    assert lin[0] > 0 and (lin[:10] == const[:10]).all() and (lin[:10] == cos[:10]).all()
    assert (lin[9:80] == peak).all() and (sq[9:80] == peak).all() and (const[9:] == peak).all()
    np.testing.assert_allclose(lin[90], 1e-4 + 0.9e-3 * 0.5, rtol=1e-5)
    np.testing.assert_allclose(sq[90], 1e-4 + 0.9e-3 * (1 - np.sqrt(0.5)), rtol=1e-5)
    assert (sq[81:] < lin[81:]).all() and np.all(np.diff(lin[80:]) < 0) and lin[99] < 1.5e-4
    assert cos[50] < peak and cos[80] != lin[80]


@pytest.mark.parametrize("key,value,msg", [
    ("train.schedule", "linear", "train.schedule='linear' is not one of cosine, wsd, constant"),
    ("train.decay_shape", "cosine", "train.decay_shape='cosine' is not one of linear, 1-sqrt"),
    ("train.decay_fraction", 0.0, "train.decay_fraction must be in (0, 1]"),
    ("train.decay_fraction", 1.5, "train.decay_fraction must be in (0, 1]"),
    ("checkpoint.at", "10,x", "checkpoint.at='10,x' must be positive steps"),
])
def test_schedule_config_is_validated(key, value, msg):
    with pytest.raises(UserError) as e:
        resolve(apply_overrides(default_config(), {key: value}))
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_cooldown_inside_warmup_is_one_line_exit_2(tmp_path):
    r = run_cli("train", "--config", "tests/tiny_experiment.py", "--workdir", str(tmp_path / "r"),
                "--config.train.schedule=wsd", "--config.train.decay_fraction=0.95")
    assert r.returncode == 2 and "inside the 2-step warmup" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not os.path.exists(tmp_path / "r" / "metrics.jsonl")


def test_wsd_grid_expands_into_trunk_and_branches():
    trials, varied = expand(EXP, [])
    trunk, short, long_ = trials
    assert not trunk.parent and trunk.cfg.train.schedule == "constant"
    assert trunk.cfg.train.steps == 32 and trunk.cfg.checkpoint.at == "16,32"
    for b, steps in [(short, 20), (long_, 40)]:
        assert b.parent == trunk.trial_id and b.trial_id.startswith(trunk.trial_id + ".tok")
        assert b.cfg.train.schedule == "wsd" and b.cfg.train.steps == steps
        assert b.branch_step == steps - round(0.2 * steps)
        assert warmup_steps(b.cfg.train) == warmup_steps(trunk.cfg.train) == 10
    assert [t.trial_id for t in expand(EXP, [])[0]] == [t.trial_id for t in trials]
    other, _ = expand(EXP, ["train.decay_fraction=0.5"])
    assert other[0].cfg.train.steps == 20 and not {t.trial_id for t in other} & {
        t.trial_id for t in trials}
    with pytest.raises(UserError, match="conflicts with the grid.wsd sweep"):
        expand(EXP, ["train.tokens=4096"])


def test_failed_trunk_fails_its_branches_with_the_reason(tmp_path):
    from scaling.sweeps.runner import run_sweep
    trials, _ = expand(EXP, [])
    w = str(tmp_path / "sweep")
    record_failure(trial_dir(w, trials[0].trial_id), "TrainingError: boom", "trace")
    assert run_sweep(EXP, [], w) == 1
    df = pd.read_parquet(os.path.join(w, "results.parquet")).set_index("trial_id")
    for b in trials[1:]:
        assert df.loc[b.trial_id, "status"] == "failed"
        assert f"its trunk {trials[0].trial_id} failed (TrainingError: boom)" in \
            df.loc[b.trial_id, "error"]
        assert not os.path.exists(os.path.join(trial_dir(w, b.trial_id), "metrics.jsonl"))


def test_slurm_submits_branches_after_their_trunk(tmp_path, monkeypatch):
    import submitit
    from scaling.sweeps import launchers
    calls = []

    class Job:
        def __init__(self, i):
            self.job_id = f"77_{i}"

    class Executor:
        def __init__(self, folder, cluster):
            self.params = {}
            os.makedirs(os.path.dirname(folder), exist_ok=True)  # as submitit does

        def update_parameters(self, **kw):
            self.params.update(kw)

        def map_array(self, fn, cfgs, ids, parents, steps):
            calls.append((list(ids), list(parents), list(steps),
                          self.params.get("slurm_additional_parameters")))
            return [Job(len(calls) * 10 + i) for i in range(len(ids))]
    monkeypatch.setattr(submitit, "AutoExecutor", Executor)
    trials, _ = expand(EXP, [])
    launchers.run_slurm(str(tmp_path), trials, {"slurm_additional_parameters": {"x": "1"}},
                        wait=False)
    (ids1, _, _, extra1), (ids2, parents, steps, extra2) = calls
    assert ids1 == [trials[0].trial_id] and extra1 == {"x": "1"}
    assert ids2 == [t.trial_id for t in trials[1:]] and steps == [16, 32]
    assert parents == [trials[0].trial_id] * 2
    assert extra2 == {"x": "1", "dependency": "afterany:77_10"}


# ------------------------------------------------------------------ a sweep, trained

def _metrics(tdir):
    with open(os.path.join(tdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def wsd_sweep(tmp_path_factory):
    from scaling.sweeps.runner import run_sweep
    w = str(tmp_path_factory.mktemp("wsd") / "sweep")
    assert run_sweep(EXP, [], w) == 0
    return w


def test_branch_equals_a_standalone_wsd_run_bitwise(wsd_sweep, tmp_path):
    from scaling.train.checkpoint import load_trained
    from scaling.train.loop import train
    from flax import nnx
    trials, _ = expand(EXP, [])
    for b in trials[1:]:
        tdir = trial_dir(wsd_sweep, b.trial_id)
        got = json.load(open(os.path.join(tdir, "summary.json")))
        assert got["resumed_from"] == b.branch_step  # started from the trunk's checkpoint
        ref = train(b.cfg, str(tmp_path / b.trial_id), verbose=False)
        assert ref["resumed_from"] == 0
        assert (got["loss"], got["val_loss"]) == (ref["loss"], ref["val_loss"])
        p1 = nnx.to_pure_dict(nnx.state(load_trained(tdir)[1], nnx.Param))
        p2 = nnx.to_pure_dict(nnx.state(load_trained(str(tmp_path / b.trial_id))[1], nnx.Param))
        import jax
        assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)))
        # the logged lr: the peak until the branch step, then the cooldown
        lrs = [r["lr"] for r in _metrics(tdir) if "lr" in r]
        assert [r["step"] for r in _metrics(tdir) if "lr" in r][0] == b.branch_step + 1
        assert np.all(np.diff(lrs) < 0) and lrs[-1] < 0.25 * b.cfg.train.lr
    trunk_lrs = [r["lr"] for r in _metrics(trial_dir(wsd_sweep, trials[0].trial_id)) if "lr" in r]
    assert trunk_lrs[9:] == [pytest.approx(3e-3, rel=1e-6)] * (len(trunk_lrs) - 9)


def test_results_table_counts_true_and_spent_compute(wsd_sweep):
    df = pd.read_parquet(os.path.join(wsd_sweep, "results.parquet"))
    trunk = df[df["role"] == "trunk"].iloc[0]
    branches = df[df["role"] == "branch"].sort_values("tokens")
    assert (df["status"] == "done").all() and len(branches) == 2
    assert list(branches["tokens"]) == [20 * 128, 40 * 128]
    assert (branches["parent"] == trunk["trial_id"]).all()
    fpt = branches["flops"] / branches["tokens"]
    np.testing.assert_allclose(branches["flops_spent"], fpt * [4 * 128, 8 * 128])
    assert trunk["flops_spent"] == trunk["flops"] == fpt.iloc[0] * 32 * 128
    assert df["flops_spent"].sum() < branches["flops"].sum()  # 44 steps instead of 60
    from analysis.load import completed
    assert set(completed(df)["trial_id"]) == set(branches["trial_id"])  # fits skip the trunk


@pytest.mark.slow
def test_sigkill_trunk_mid_way_then_rerun(tmp_path, wsd_sweep):
    """kill -9 of the sweep while the trunk trains, rerun: each branch trains once, from its
    checkpoint, and every result equals the uninterrupted sweep's."""
    w = str(tmp_path / "sweep")
    trials, _ = expand(EXP + ":4", [])
    trunk = trial_dir(w, trials[0].trial_id)
    cmd = [sys.executable, "-m", "scaling.cli", "sweep", "--config", EXP + ":4", "--workdir", w]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        d = os.path.join(trunk, "checkpoints")
        if os.path.isdir(d) and any(n.isdigit() and 20 <= int(n) < 64 for n in os.listdir(d)):
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(trunk, "summary.json")), "killed too late"
    again = run_cli("sweep", "--config", EXP + ":4", "--workdir", w)
    assert again.returncode == 0, again.stdout + again.stderr
    ref = str(tmp_path / "ref")
    assert run_cli("sweep", "--config", EXP + ":4", "--workdir", ref).returncode == 0
    got = pd.read_parquet(os.path.join(w, "results.parquet")).set_index("trial_id")
    want = pd.read_parquet(os.path.join(ref, "results.parquet")).set_index("trial_id")
    assert json.load(open(os.path.join(trunk, "summary.json")))["resumed_from"] >= 20
    for t in trials:
        assert (got.loc[t.trial_id, ["loss", "val_loss", "flops_spent"]]
                == want.loc[t.trial_id, ["loss", "val_loss", "flops_spent"]]).all()
    for b in trials[1:]:
        rows = _metrics(trial_dir(w, b.trial_id))
        steps = [r["step"] for r in rows if "loss" in r]
        assert steps == list(range(b.branch_step + 1, b.cfg.train.steps + 1))  # once, no gap
        s = json.load(open(os.path.join(trial_dir(w, b.trial_id), "summary.json")))
        assert s["resumed_from"] == b.branch_step


@pytest.mark.slow
def test_parallel_2_trains_branches_beside_the_trunk(tmp_path, wsd_sweep):
    w = str(tmp_path / "par")
    r = run_cli("sweep", "--config", EXP, "--workdir", w, "--parallel", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    got = pd.read_parquet(os.path.join(w, "results.parquet")).set_index("trial_id")
    want = pd.read_parquet(os.path.join(wsd_sweep, "results.parquet")).set_index("trial_id")
    assert (got["val_loss"] == want.loc[got.index, "val_loss"]).all()


# ------------------------------------------------------------------ the experiment and its analysis

def test_chinchilla_wsd_experiment_design():
    """Same N x D grid both ways; the wsd sweep spends <= 55% of the cosine twin's compute."""
    from scaling import counting

    def spent(trials):
        return sum((t.cfg.train.steps - t.branch_step) * counting.describe(t.cfg)["flops"]
                   / t.cfg.train.steps for t in trials)
    wsd, _ = expand("experiments/chinchilla_wsd.py", [])
    cos, _ = expand("experiments/chinchilla_wsd.py:cosine", [])
    grid_of = lambda ts: sorted((t.cfg.model.d_model, t.cfg.train.tokens, t.cfg.train.lr)  # noqa
                                for t in ts if t.cfg.train.tokens)
    assert grid_of([t for t in wsd if t.parent]) == grid_of(cos) and len(cos) == 12
    trunks = [t for t in wsd if not t.parent]
    assert len(trunks) == 3 and all(t.cfg.train.steps == 0.8 * 8000 for t in trunks)
    assert spent(wsd) / spent(cos) <= 0.55


def test_chinchilla_wsd_wide_grid_spans_n_and_d():
    """:wide and :wide_cosine train the same grid, 9x in N and 8x in D, so the exponents are
    not fitted on a 4x range each."""
    from scaling import counting
    wsd, _ = expand("experiments/chinchilla_wsd.py:wide", [])
    cos, _ = expand("experiments/chinchilla_wsd.py:wide_cosine", [])
    grid_of = lambda ts: sorted((t.cfg.model.d_model, t.cfg.train.tokens, t.cfg.train.lr)  # noqa
                                for t in ts if t.cfg.train.tokens)
    assert grid_of([t for t in wsd if t.parent]) == grid_of(cos) and len(cos) == 12
    assert {t.cfg.train.schedule for t in cos} == {"cosine"}
    n = sorted({counting.describe(t.cfg)["params_non_embedding"] for t in cos})
    d = sorted({t.cfg.train.tokens for t in cos})
    assert n[-1] / n[0] >= 8 and d[-1] / d[0] == 8


def test_chinchilla_wsd_lr_scan_pairs_the_two_schedules():
    """:lrscan and :lrscan_cosine train the same (lr, budget) points, d24 only, at multiples of
    the rule's lr that bracket it, so each schedule's own optimum can be compared."""
    from scaling.experiments import chinchilla_wsd as exp
    wsd, _ = expand("experiments/chinchilla_wsd.py:lrscan", [])
    cos, _ = expand("experiments/chinchilla_wsd.py:lrscan_cosine", [])
    points = lambda ts: sorted((t.cfg.model.d_model, t.cfg.train.tokens, t.cfg.train.lr)  # noqa
                               for t in ts if t.cfg.train.tokens)
    assert points([t for t in wsd if t.parent]) == points(cos) and len(cos) == 12
    assert {t.cfg.train.schedule for t in cos} == {"cosine"} and {p[0] for p in points(cos)} == {24}
    lrs = sorted({p[2] for p in points(cos)})
    rule = exp.lr_for(exp.size_counts(exp.get_config(), exp.SIZES[1])[0])
    assert lrs[0] < rule < lrs[-1] and rule in lrs
    with pytest.raises(ValueError, match="lrscan_cosine"):
        exp.get_config("nope")


def _tables():
    rows_w, rows_c = [], []
    for n, fpt in [(1000, 10.0), (4000, 40.0)]:
        rows_w.append({"trial_id": f"t{n}", "role": "trunk", "params_non_embedding": n,
                       "tokens": 1600, "flops": fpt * 1600, "flops_spent": fpt * 1600,
                       "val_loss": 9.0, "status": "done"})
        for d in (500, 1000, 2000):
            rows_w.append({"trial_id": f"t{n}.{d}", "role": "branch", "params_non_embedding": n,
                           "tokens": d, "flops": fpt * d, "flops_spent": fpt * 0.2 * d,
                           "val_loss": 3.0 - n / 1e4 - d / 1e4, "status": "done"})
            rows_c.append({"trial_id": f"c{n}.{d}", "params_non_embedding": n, "tokens": d,
                           "flops": fpt * d, "val_loss": 3.0 - n / 1e4 - d / 1e4 + 0.01,
                           "status": "done"})
    return pd.DataFrame(rows_w), pd.DataFrame(rows_c)


def test_wsd_analysis_compares_losses_and_compute(tmp_path):
    from analysis import wsd
    w, c = _tables()
    both = wsd.compare(w, c)
    assert len(both) == 6 and (both["rel_diff"] < 0).all()  # trunks are not grid points
    s = wsd.summary(w, c)
    assert s["compute_ratio"] == pytest.approx((1600 + 0.2 * 3500) / 3500)
    assert s["points"] == 6 and s["max_abs_rel_diff"] < 0.01
    for i, df in enumerate((w, c)):
        os.makedirs(tmp_path / str(i))
        df.to_csv(tmp_path / str(i) / "results.csv", index=False)
    assert wsd.main([str(tmp_path / "0"), str(tmp_path / "1"), "--json"]) == 0
    assert os.path.getsize(tmp_path / "0" / "plots" / "wsd_vs_cosine.png") > 1000
    with pytest.raises(Exception, match="share no finished"):
        wsd.compare(w, c.assign(tokens=7))


def test_wsd_analysis_with_seed_replicates(tmp_path):
    """Two seeds of each grid: means, the seed SD, the difference's SE and the 95% interval of
    the mean difference over replicates (t with one degree of freedom)."""
    from analysis import wsd
    w0, c0 = _tables()
    # seed 1: wsd 0.02 higher at every point, cosine unchanged
    w1 = w0.assign(val_loss=w0["val_loss"] + 0.02)
    w, c = (pd.concat([a.assign(replicate=0), b.assign(replicate=1)], ignore_index=True)
            for a, b in ((w0, w1), (c0, c0)))
    both = wsd.compare(w, c)
    assert len(both) == 6 and (both["wsd_n"] == 2).all() and (both["cosine_sd"] == 0).all()
    assert both["wsd_sd"].to_numpy() == pytest.approx(0.02 / 2 ** 0.5)
    assert both["rel_diff_se"].to_numpy() == pytest.approx(0.01 / both["cosine"].to_numpy())
    assert both["rel_diff"].to_numpy() == pytest.approx(
        ((w0[w0.role == "branch"]["val_loss"].to_numpy() + 0.01) / both["cosine"].to_numpy()) - 1)
    reps = wsd.replicate_means(w, c)
    assert list(reps.index) == [0, 1] and reps[1] > reps[0]
    s = wsd.summary(w, c, tol=0.001)
    half = 12.706 * abs(reps[1] - reps[0]) / 2  # t(0.975, 1) * sd / sqrt(2)
    assert s["replicates"] == 2
    assert s["mean_rel_diff_ci"] == pytest.approx([reps.mean() - half, reps.mean() + half], rel=1e-3)
    assert 0 < s["seed_rel_sd"] < 0.01 and s["points_outside_tol_beyond_2se"] == 0
    dirs = []
    for k, df in enumerate((w0, c0, w1, c0)):
        dirs.append(str(tmp_path / str(k)))
        os.makedirs(dirs[-1])
        df.to_csv(os.path.join(dirs[-1], "results.csv"), index=False)
    assert wsd.main(dirs[:2] + ["--replicate"] + dirs[2:] + ["--json", "--tol", "0.001"]) == 0
    assert os.path.getsize(os.path.join(dirs[0], "plots", "wsd_vs_cosine.png")) > 1000
    assert wsd.main(dirs[:2] + ["--replicate", dirs[2], str(tmp_path / "nope"), "--json"]) == 2
