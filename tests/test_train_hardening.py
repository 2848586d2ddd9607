"""Training hardening (issue 14): damaged checkpoint data, stop signals, timed checkpoints,
the workdir lock, full disks, runs whose updates are all skipped, config changes on resume."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import ROOT, tiny_config
from scaling.cli import main
from scaling.errors import UserError
from scaling.fileio import read_jsonl
from scaling.train import checkpoint
from scaling.train.loop import TrainingError, train
from scaling.train.signals import TrainingStopped

TINY = os.path.join(ROOT, "tests", "tiny_experiment.py")


def _cfg():
    cfg = tiny_config()
    cfg.train.steps, cfg.log.every, cfg.checkpoint.every = 12, 1, 4
    return cfg


def _train_rows(workdir):
    return [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]


def _params(workdir):
    _, model = checkpoint.load_trained(str(workdir))
    return jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _steps(workdir):
    return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())


def _crash_at(n, action=None):
    def on_step(step, total):
        if step == n:
            if action is None:
                raise RuntimeError("crash")
            action()
    return on_step


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run of `_cfg()`: its summary, losses and final params."""
    w = tmp_path_factory.mktemp("straight")
    s = train(_cfg(), str(w), verbose=False)
    return s, [r["loss"] for r in _train_rows(w)], _params(w)


def _assert_same_run(workdir, straight):
    s, losses, params = straight
    assert [r["step"] for r in _train_rows(workdir)] == list(range(1, 13))
    assert [r["loss"] for r in _train_rows(workdir)] == losses
    jax.tree.map(np.testing.assert_array_equal, _params(workdir), params)


# ---------------------------------------------------------------- 1. bit flips in a checkpoint

def test_checkpoint_meta_holds_state_checksums(tmp_path):
    cfg = tiny_config()
    cfg.train.steps = 2
    train(cfg, str(tmp_path), verbose=False)
    with checkpoint.manager(str(tmp_path)) as mngr:
        from orbax import checkpoint as ocp
        meta = mngr.restore(2, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    assert set(meta["checksum"]) == {"step", "params", "opt_state", "guard"}


def test_bit_flips_in_latest_checkpoint_are_detected_and_skipped(tmp_path, capfd, straight):
    w = tmp_path / "b"
    with pytest.raises(RuntimeError, match="crash"):
        train(_cfg(), str(w), on_step=_crash_at(10), verbose=False)
    data = [p for p in (w / "checkpoints" / "8" / "state").rglob("*")
            if p.is_file() and "ocdbt.process" in str(p) and "/d/" in str(p)]
    victim = max(data, key=lambda p: p.stat().st_size)  # the array data
    raw = bytearray(victim.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 16):
        raw[i] ^= 0x10  # flipped bits, same length: orbax and tensorstore read it back fine
    victim.write_bytes(bytes(raw))
    capfd.readouterr()
    s = train(_cfg(), str(w), verbose=False)
    err = capfd.readouterr().err
    assert "checkpoint 8" in err and "ChecksumMismatch" in err, err
    assert any(n.startswith("8.corrupt") for n in os.listdir(w / "checkpoints"))
    assert s["resumed_from"] == 4
    _assert_same_run(w, straight)


# ---------------------------------------------------------------- 2. stop signals, timer

def test_sigterm_saves_the_current_step_and_a_rerun_resumes_bitwise(tmp_path, capfd, straight):
    w = tmp_path / "run"
    with pytest.raises(TrainingStopped) as e:
        train(_cfg(), str(w), on_step=_crash_at(6, lambda: os.kill(os.getpid(), signal.SIGTERM)),
              verbose=False)
    assert e.value.code == 143
    assert "SIGTERM after step 6" in str(e.value) and "rerun" in str(e.value)
    assert "stopped: " in capfd.readouterr().err
    assert 6 in _steps(w) and not (w / "summary.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again
    s = train(_cfg(), str(w), verbose=False)
    assert s["resumed_from"] == 6
    _assert_same_run(w, straight)


def test_a_launchers_preemption_handler_gets_the_signal_after_the_save(tmp_path):
    """submitit installs a Python handler for SIGUSR2 (requeue): it is called after the current
    step is saved; when it returns, training goes on."""
    w = tmp_path / "run"
    calls = []
    old = signal.signal(signal.SIGUSR2, lambda sig, frame: calls.append(_steps(w)))
    try:
        s = train(_cfg(), str(w), verbose=False,
                  on_step=_crash_at(5, lambda: os.kill(os.getpid(), signal.SIGUSR2)))
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert len(calls) == 1 and 5 in calls[0]  # saved before the handler ran
    assert s["status"] == "done"  # the handler returned: training went on to the end


def test_checkpoints_on_a_timer_and_every_n_saves_are_kept(tmp_path):
    cfg = tiny_config()
    cfg.train.steps = 11
    cfg.checkpoint.update(every=2, keep=1, every_minutes=1e-9)  # timer due after every step
    train(cfg, str(tmp_path), verbose=False)
    # every-N saves are kept for good; of the timed ones only the newest `keep` (the final one)
    assert _steps(tmp_path) == [2, 4, 6, 8, 10, 11]
    loaded_cfg, _ = checkpoint.load_trained(str(tmp_path))
    assert loaded_cfg.train.steps == 11
    assert checkpoint.load_trained(str(tmp_path), step=11)[1] is not None


# ---------------------------------------------------------------- 3. the workdir lock

def test_a_second_run_on_a_locked_workdir_fails_in_one_line(tmp_path, capsys):
    w = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from scaling.sweeps.store import trial_lock\n"
         "with trial_lock(sys.argv[1]) as got:\n    print(got, flush=True); time.sleep(60)",
         str(w)], stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert holder.stdout.readline().strip() == "True"
        with pytest.raises(TrainingError, match="another process is training in"):
            train(tiny_config(), str(w), verbose=False)
        capsys.readouterr()
        code = main(["train", "--config", TINY, "--workdir", str(w)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and err == [f"error: another process is training in {w}"], err
    finally:
        holder.kill()
        holder.wait()
    assert not (w / "metrics.jsonl").exists()


def test_the_lock_is_reentrant_for_a_sweep_that_holds_it(tmp_path):
    from scaling.sweeps.store import is_locked, trial_lock
    cfg = tiny_config()
    cfg.train.steps = 2
    with trial_lock(str(tmp_path)) as got:
        assert got
        assert train(cfg, str(tmp_path), verbose=False)["status"] == "done"
        assert is_locked(str(tmp_path))  # still held by the "sweep" after train() returned
    out = subprocess.run([sys.executable, "-c", "import sys; from scaling.sweeps.store import "
                          "trial_lock\nwith trial_lock(sys.argv[1]) as g: print(g)", str(tmp_path)],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.stdout.strip() == "True"  # released at the end


# ---------------------------------------------------------------- 4. a full disk

@pytest.mark.parametrize("where", ["checkpoint", "metrics"])
def test_a_full_disk_is_one_line_and_a_rerun_resumes(tmp_path, monkeypatch, capsys, where):
    from scaling.fileio import JsonlWriter
    w = tmp_path / "run"
    calls = {"n": 0}

    def full(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:  # the first write succeeds: earlier data must stay intact
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return orig(*args, **kwargs)
    target = (checkpoint, "save") if where == "checkpoint" else (JsonlWriter, "write")
    orig = getattr(*target)
    monkeypatch.setattr(*target, full)
    capsys.readouterr()
    code = main(["train", "--config", TINY, "--workdir", str(w), "--config.checkpoint.every=4",
                 "--config.log.every=1", "--config.train.steps=12"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, err
    assert err == [f"error: no space left on device while writing {w}; free space and rerun "
                   f"to resume"], err
    monkeypatch.undo()
    kept = _train_rows(w)
    assert kept and all(np.isfinite(r["loss"]) for r in kept)
    s = train(_with_cli_overrides(), str(w), verbose=False)
    assert s["status"] == "done" and [r["step"] for r in _train_rows(w)] == list(range(1, 13))


def _with_cli_overrides():
    from scaling.config import load_config
    return load_config(TINY, ["checkpoint.every=4", "log.every=1", "train.steps=12"])


# ---------------------------------------------------------------- 5. all updates skipped

def _blow_up(cfg, steps, log_every):
    cfg.train.update(steps=steps, lr=1e30, grad_clip=0.0, warmup=0.0, nan_policy="skip")
    cfg.log.every = log_every
    return cfg


def test_a_run_whose_updates_are_all_skipped_fails(tmp_path):
    with pytest.raises(TrainingError) as e:
        train(_blow_up(tiny_config(), 30, 5), str(tmp_path / "long"), verbose=False)
    msg = str(e.value)
    assert "the last 10 updates (steps 6-15) were all skipped" in msg, msg
    assert "lower train.lr" in msg
    assert not (tmp_path / "long" / "summary.json").exists()
    # Too short for the streak rule: the final validation loss is not finite.
    with pytest.raises(TrainingError, match="validation loss is not finite"):
        train(_blow_up(tiny_config(), 6, 1), str(tmp_path / "short"), verbose=False)


# ---------------------------------------------------------------- 6. config changes on resume

def test_the_abort_advice_works_and_config_changes_are_recorded(tmp_path, monkeypatch, straight):
    from scaling.data import TokenBatches
    orig = TokenBatches.batch

    def poisoned(self, step):
        b = orig(self, step).copy()
        if self.split == "train" and step + 1 == 7:
            b[0, 3] = 100_000  # an out-of-range token id embeds to NaN
        return b
    monkeypatch.setattr(TokenBatches, "batch", poisoned)
    w = tmp_path / "run"
    with pytest.raises(TrainingError) as e:
        train(_cfg(), str(w), verbose=False)
    assert "checkpoint: step 4" in str(e.value) and "--config.train.lr" in str(e.value)
    monkeypatch.undo()
    cfg = _cfg()
    cfg.train.lr, cfg.log.every = 1e-3, 2  # as advised (and a logging change)
    s = train(cfg, str(w), verbose=False)
    assert s["status"] == "done" and s["resumed_from"] == 4
    change = {"train.lr": [3e-3, 1e-3], "log.every": [1, 2]}
    events = [r for r in read_jsonl(w / "metrics.jsonl") if r.get("event") == "config_change"]
    assert events == [{"step": 4, "event": "config_change", "changes": change}]
    assert s["config_changes"] == [{"step": 4, "changes": change}]
    assert json.loads((w / "config.json").read_text())["train"]["lr"] == 1e-3


def test_other_config_changes_are_refused_naming_the_key(tmp_path):
    cfg = tiny_config()
    cfg.train.steps = 2
    train(cfg, str(tmp_path), verbose=False)
    cfg.model.n_layers, cfg.train.lr = 2, 1e-3
    with pytest.raises(UserError, match=r"different config \(model.n_layers: 1 -> 2; only "
                                        r"train.lr, .*log.\*"):
        train(cfg, str(tmp_path), verbose=False)


def test_a_damaged_config_json(tmp_path):
    cfg = tiny_config()
    cfg.train.steps, cfg.checkpoint.every = 2, 1
    fresh = tmp_path / "fresh"  # nothing trained yet: the damaged file is simply rewritten
    fresh.mkdir()
    (fresh / "config.json").write_text('{"model": {"d_mo')
    assert train(cfg, str(fresh), verbose=False)["status"] == "done"
    trained = tmp_path / "trained"
    with pytest.raises(RuntimeError, match="crash"):
        train(cfg, str(trained), on_step=_crash_at(2), verbose=False)
    (trained / "config.json").write_bytes(b"\xff\x00garbage")
    with pytest.raises(UserError, match="config.json is damaged .* holds checkpoints"):
        train(cfg, str(trained), verbose=False)
