"""Reliability: damaged checkpoints are skipped; SIGKILL at random moments resumes bitwise."""
import os
import random
import signal
import subprocess
import sys
import time

import jax
import pytest

from conftest import ROOT, tiny_config
from scaling.fileio import read_jsonl
from scaling.train.loop import train


def _train_lines(workdir):
    return [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]


class Crash(RuntimeError):
    pass


def _crash_at(n):
    def on_step(step, total):
        if step == n:
            raise Crash()
    return on_step


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_latest_checkpoint_falls_back(tmp_path, capfd, damage):
    cfg = tiny_config()
    cfg.train.steps, cfg.log.every, cfg.checkpoint.every = 12, 1, 4
    train(cfg, str(tmp_path / "a"), verbose=False)
    b = tmp_path / "b"
    with pytest.raises(Crash):
        train(cfg, str(b), on_step=_crash_at(10), verbose=False)
    ckpt8 = b / "checkpoints" / "8"
    assert ckpt8.is_dir()
    files = sorted(p for p in ckpt8.rglob("*") if p.is_file() and p.stat().st_size > 0)
    victims = [p for p in files if "state" in str(p.relative_to(ckpt8))]
    for p in victims:
        if damage == "truncate":
            with open(p, "r+b") as f:
                f.truncate(max(0, p.stat().st_size // 3))
        else:
            p.unlink()
    capfd.readouterr()
    train(cfg, str(b), verbose=False)
    err = capfd.readouterr().err
    assert "checkpoint 8" in err and "unreadable" in err      # the warning names it
    assert any(n.startswith("8.corrupt") for n in os.listdir(b / "checkpoints"))  # kept aside
    la = [r["loss"] for r in _train_lines(tmp_path / "a")]
    lb = [r["loss"] for r in _train_lines(b)]
    assert [r["step"] for r in _train_lines(b)] == list(range(1, 13))
    assert lb == la  # resumed from step 4 and still bitwise equal


KILL_EXPERIMENT = """
from scaling.config import default_config
def get_config(arg=None):
    c = default_config()
    c.model.update(dict(d_model=64, n_layers=2, n_heads=4))
    c.train.update(dict(batch_size=16, seq_len=64, steps=400, lr=3e-3))
    c.log.every = 1
    c.checkpoint.every = 5
    c.eval.batches = 2
    return c
"""


def _start(config, workdir):
    return subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", "train", "--config", config, "--workdir", workdir],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))


@pytest.mark.slow
def test_sigkill_at_random_moments_resumes_bitwise(tmp_path):
    """Kill `scaling train` with SIGKILL 10 times (some during checkpoint writes); the final
    per-step losses equal an uninterrupted run bitwise, with no duplicated or missing lines."""
    config = tmp_path / "kill_exp.py"
    config.write_text(KILL_EXPERIMENT)
    ref = str(tmp_path / "ref")
    p = _start(str(config), ref)
    assert p.wait(timeout=600) == 0, p.stderr.read()

    work = str(tmp_path / "killed")
    rng = random.Random(0)
    # Kill when training reaches random steps (not at random times: a faster machine would
    # finish first), plus a random 0-60 ms, so some kills land inside an async checkpoint write
    # (every 5 steps) and some between them.
    targets = sorted(rng.sample(range(5, 390), 10))
    kills, progress = 0, []
    for target in targets:
        p = _start(str(config), work)
        while p.poll() is None and max([r["step"] for r in _train_lines(work)], default=0) < target:
            time.sleep(0.01)
        assert p.poll() is None, f"the run ended before step {target}: {p.stderr.read()}"
        time.sleep(rng.uniform(0.0, 0.06))
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        progress.append(max(r["step"] for r in _train_lines(work)))
    p = _start(str(config), work)
    assert p.wait(timeout=600) == 0, p.stderr.read()
    assert kills == 10 and len(set(progress)) >= 5, progress
    ref_lines, got = _train_lines(ref), _train_lines(work)
    assert [r["step"] for r in got] == list(range(1, 401))
    assert [r["loss"] for r in got] == [r["loss"] for r in ref_lines]
    assert [r["grad_norm"] for r in got] == [r["grad_norm"] for r in ref_lines]


def _poison(monkeypatch, bad_steps, spike_steps=()):
    """Make the batches of `bad_steps` produce a NaN loss (an out-of-range token id embeds to
    NaN) and those of `spike_steps` a high but finite loss (random tokens)."""
    from scaling.data import TokenBatches
    orig = TokenBatches.batch

    def batch(self, step):
        b = orig(self, step).copy()
        if self.split == "train" and step + 1 in bad_steps:
            b[0, 3] = 100_000
        if self.split == "train" and step + 1 in spike_steps:
            b[:] = (np.arange(b.size).reshape(b.shape) * 7919) % 256
        return b
    monkeypatch.setattr(TokenBatches, "batch", batch)


import numpy as np  # noqa: E402


def test_nan_aborts_naming_step_and_checkpoint(tmp_path, monkeypatch):
    from scaling.train.loop import TrainingError
    cfg = tiny_config()
    cfg.train.steps, cfg.log.every, cfg.checkpoint.every = 12, 4, 2
    _poison(monkeypatch, bad_steps={7})
    with pytest.raises(TrainingError) as e:
        train(cfg, str(tmp_path), verbose=False)
    msg = str(e.value)
    assert "at step 7" in msg and "checkpoint: step 6" in msg, msg
    assert max(int(n) for n in os.listdir(tmp_path / "checkpoints") if n.isdigit()) == 6
    assert not (tmp_path / "summary.json").exists()


def test_nan_abort_via_cli_exit_code_1(tmp_path):
    """A failure while running is exit code 1 with one line (here: lr so large the loss explodes)."""
    from conftest import run_cli
    r = run_cli("train", "--config", "tests/tiny_experiment.py", "--workdir", str(tmp_path),
                "--config.train.lr=1e30", "--config.train.grad_clip=0.0",
                "--config.train.warmup=0.0", "--config.log.every=1")
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: non-finite loss or gradients")


def test_nan_skip_keeps_params_and_continues(tmp_path, monkeypatch):
    cfg = tiny_config()
    cfg.train.steps, cfg.log.every = 12, 1
    cfg.train.nan_policy = "skip"
    clean = train(cfg, str(tmp_path / "clean"), verbose=False)
    _poison(monkeypatch, bad_steps={5, 9})
    s = train(cfg, str(tmp_path / "nan"), verbose=False)
    assert s["status"] == "done" and s["skipped_steps"] == 2
    rows = _train_lines(tmp_path / "nan")
    assert [r["skipped"] for r in rows][4] == 1 and rows[-1]["skipped"] == 2
    assert not np.isfinite(rows[4]["loss"]) and np.isfinite(s["loss"]) and np.isfinite(s["val_loss"])
    assert s["val_loss"] != clean["val_loss"]  # two updates were really skipped
    clean_rows = _train_lines(tmp_path / "clean")
    assert [r["loss"] for r in rows[:4]] == [r["loss"] for r in clean_rows[:4]]


def test_spike_detection_skips_outliers(tmp_path, monkeypatch):
    cfg = tiny_config()
    cfg.train.steps, cfg.log.every = 30, 1
    cfg.train.nan_policy, cfg.train.spike_window, cfg.train.spike_sigmas = "skip", 8, 6.0
    _poison(monkeypatch, bad_steps=set(), spike_steps={25})
    s = train(cfg, str(tmp_path), verbose=False)
    rows = _train_lines(tmp_path)
    skipped = [r["step"] for prev, r in zip([{"skipped": 0}] + rows, rows)
               if r["skipped"] > prev["skipped"]]
    assert 25 in skipped, (skipped, [round(r["loss"], 3) for r in rows])
    assert s["skipped_steps"] == len(skipped)


SIGTERM_EXPERIMENT = """
from scaling.config import default_config
def get_config(arg=None):
    c = default_config()
    c.model.update(dict(d_model=64, n_layers=2, n_heads=4))
    c.train.update(dict(batch_size=16, seq_len=64, steps=300, lr=3e-3))
    c.log.every = 1
    c.eval.batches = 2
    return c
"""


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_a_rerun_resumes_bitwise(tmp_path):
    """SIGTERM to `scaling train` mid-run (no periodic checkpoints configured): it saves the step
    it is at, exits 143 with a message, and a rerun ends bitwise equal to a straight run."""
    from scaling.train.checkpoint import load_trained
    from flax import nnx
    config = tmp_path / "term_exp.py"
    config.write_text(SIGTERM_EXPERIMENT)
    ref = str(tmp_path / "ref")
    p = _start(str(config), ref)
    assert p.wait(timeout=600) == 0, p.stderr.read()

    work = str(tmp_path / "termed")
    p = _start(str(config), work)
    while p.poll() is None and max([r["step"] for r in _train_lines(work)], default=0) < 100:
        time.sleep(0.01)
    assert p.poll() is None, p.stderr.read()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 143
    err = p.stderr.read()
    assert "stopped: SIGTERM after step" in err and "Traceback" not in err, err
    saved = [int(n) for n in os.listdir(os.path.join(work, "checkpoints")) if n.isdigit()]
    assert saved and max(saved) >= 100, saved
    assert max(saved) == max(r["step"] for r in _train_lines(work))  # the step it was at
    p = _start(str(config), work)
    assert p.wait(timeout=600) == 0, p.stderr.read()
    got, want = _train_lines(work), _train_lines(ref)
    assert [r["step"] for r in got] == list(range(1, 301))
    assert [r["loss"] for r in got] == [r["loss"] for r in want]
    params = [nnx.to_pure_dict(nnx.state(load_trained(d)[1], nnx.Param)) for d in (work, ref)]
    jax.tree.map(np.testing.assert_array_equal, *params)
