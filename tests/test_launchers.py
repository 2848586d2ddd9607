"""Sweeps at scale: SIGKILL + rerun resumes, --parallel 2 equals sequential, the SLURM launcher
through submitit's local executor, logging sinks, load_sweep and the inspect notebook."""
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import ROOT, run_cli
from scaling.train import sinks as sinks


def metrics(tdir):
    with open(os.path.join(tdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def read_tensorboard(logdir):
    """Decode our event files with Google's protobuf runtime (an implementation independent of
    scaling/sinks.py), checking every TFRecord CRC: [(step, {tag: value})] of scalar events."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    fd = descriptor_pb2.FileDescriptorProto(name="event_test.proto", package="tbtest")
    value = fd.message_type.add(name="Value")
    value.field.add(name="tag", number=1, type=9, label=1)
    value.field.add(name="simple_value", number=2, type=2, label=1)
    summary = fd.message_type.add(name="Summary")
    summary.field.add(name="value", number=1, type=11, label=3, type_name=".tbtest.Value")
    event = fd.message_type.add(name="Event")
    event.field.add(name="wall_time", number=1, type=1, label=1)
    event.field.add(name="step", number=2, type=3, label=1)
    event.field.add(name="file_version", number=3, type=9, label=1)
    event.field.add(name="summary", number=5, type=11, label=1, type_name=".tbtest.Summary")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    Event = message_factory.GetMessageClass(pool.FindMessageTypeByName("tbtest.Event"))
    files = [f for f in os.listdir(logdir) if f.startswith("events.out.tfevents.")]
    assert len(files) == 1, files
    data, out, i = open(os.path.join(logdir, files[0]), "rb").read(), [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        assert struct.unpack("<I", data[i + 8:i + 12])[0] == sinks._masked_crc(data[i:i + 8])
        rec = data[i + 12:i + 12 + n]
        assert struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] == sinks._masked_crc(rec)
        ev = Event.FromString(rec)
        if i == 0:
            assert ev.file_version == "brain.Event:2"
        elif ev.summary.value:
            out.append((ev.step, {v.tag: v.simple_value for v in ev.summary.value}))
        i += 16 + n
    return out


def test_crc32c_known_answer():
    assert sinks.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)


# ------------------------------------------------------------------ acceptance: SIGKILL, rerun

def _committed_checkpoints(tdir):
    d = os.path.join(tdir, "checkpoints")
    return [int(x) for x in os.listdir(d) if x.isdigit()] if os.path.isdir(d) else []


@pytest.mark.slow
def test_sigkill_mid_trial_then_rerun_resumes(tmp_path):
    w = str(tmp_path / "sweep")
    # trial by trial (its seeds would otherwise train as one vectorised group: test_vectorized)
    cmd = [sys.executable, "-m", "scaling.cli", "sweep", "--config", "tests/sweep_experiment.py",
           "--workdir", w]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    victim, deadline = None, time.time() + 240
    while victim is None and time.time() < deadline and proc.poll() is None:
        tdirs = [os.path.join(w, "trials", t) for t in sorted(os.listdir(os.path.join(w, "trials")))] \
            if os.path.isdir(os.path.join(w, "trials")) else []
        done = [t for t in tdirs if os.path.exists(os.path.join(t, "summary.json"))]
        for t in tdirs:  # a trial past its first checkpoint and not finished
            if done and t not in done and _committed_checkpoints(t):
                victim = t
        time.sleep(0.01)
    assert victim, f"never saw a finished trial plus a checkpointed running one:\n" \
                   f"{open(tmp_path / 'first.log').read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(r["step"] for r in metrics(victim) if "loss" in r)
    mtimes = {t: (os.stat(os.path.join(t, "summary.json")).st_mtime_ns,
                  os.stat(os.path.join(t, "metrics.jsonl")).st_mtime_ns) for t in done}

    # `scaling status` on the killed sweep: the victim is interrupted (no process holds its lock)
    st = run_cli("status", w, "--json")
    assert st.returncode == 0, st.stderr
    statuses = {r["trial_id"]: r["status"] for r in json.loads(st.stdout)}
    assert statuses[os.path.basename(victim)] == "interrupted"

    again = run_cli(*cmd[3:])
    assert again.returncode == 0, again.stdout + again.stderr
    df = pd.read_parquet(os.path.join(w, "results.parquet"))
    assert len(df) == 3 and df["trial_id"].is_unique and (df["status"] == "done").all()
    for t in done:  # finished trials were not retrained
        assert (os.stat(os.path.join(t, "summary.json")).st_mtime_ns,
                os.stat(os.path.join(t, "metrics.jsonl")).st_mtime_ns) == mtimes[t]
        assert f"{os.path.basename(t)}: done (skipped)" in again.stdout

    summary = json.load(open(os.path.join(victim, "summary.json")))
    assert 10 <= summary["resumed_from"] <= killed_at and summary["resumed_from"] % 10 == 0
    rows = metrics(victim)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 151))  # no dup, no gap
    assert [r["step"] for r in rows if r.get("split") == "val"] == [150]
    # TensorBoard mirrors the JSON lines exactly, also across the resume (rebuilt, no repeats)
    tb = read_tensorboard(os.path.join(victim, "tensorboard"))
    assert [s for s, v in tb if "train/loss" in v] == list(range(1, 151))
    train_rows = [r for r in rows if "loss" in r]
    assert all(abs(v["train/loss"] - r["loss"]) <= 1e-6 * abs(r["loss"])  # float32 in TB
               for (s, v), r in zip([x for x in tb if "train/loss" in x[1]], train_rows))

    # resuming is exact: the same trial trained without interruption ends with the same loss
    ref = tmp_path / "ref"
    r = run_cli("train", "--config", "tests/sweep_experiment.py", "--workdir", str(ref),
                f"--config.train.seed={summary_seed(victim)}", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["loss"] == summary["loss"]


def summary_seed(tdir):
    return json.load(open(os.path.join(tdir, "config.json")))["train"]["seed"]


# ------------------------------------------------------------------ --parallel 2 == sequential

@pytest.fixture(scope="module")
def sequential_sweep(tmp_path_factory):
    w = str(tmp_path_factory.mktemp("seq") / "sweep")
    r = run_cli("sweep", "--config", "tests/tiny_experiment.py:4", "--workdir", w)
    assert r.returncode == 0, r.stdout + r.stderr
    return w


def test_parallel_2_matches_sequential(tmp_path, sequential_sweep):
    w = str(tmp_path / "par")
    r = run_cli("sweep", "--config", "tests/tiny_experiment.py:4", "--workdir", w, "--parallel", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "worker 0:" in r.stdout and "worker 1:" in r.stdout
    par = pd.read_parquet(os.path.join(w, "results.parquet"))
    seq = pd.read_parquet(os.path.join(sequential_sweep, "results.parquet"))
    assert list(par["trial_id"]) == list(seq["trial_id"]) and (par["status"] == "done").all()
    # CPU float32 with the same XLA program is deterministic even with other thread counts
    # (our ops reduce in a fixed order), so the results match bitwise, not just to a tolerance.
    for col in ("loss", "val_loss", "tokens", "flops"):
        assert list(par[col]) == list(seq[col]), col
    ran = re.findall(r"\[w\d \d/4 (\S+)\]: loss", r.stdout)
    assert sorted(ran) == sorted(par["trial_id"])  # each trial trained by exactly one worker
    for tid in par["trial_id"]:
        steps = [x["step"] for x in metrics(os.path.join(w, "trials", tid)) if "loss" in x]
        assert steps == sorted(set(steps))


def test_split_cpus_disjoint():
    from scaling.sweeps.launchers import split_cpus
    assert split_cpus(2, [0, 1, 2, 3, 4]) == [[0, 1, 2], [3, 4]]
    assert split_cpus(3, [0, 1]) == [[0], [1], [0]]


# ------------------------------------------------------------------ SLURM path, local executor

@pytest.mark.slow
def test_slurm_launcher_with_local_executor(tmp_path):
    w = str(tmp_path / "sweep")
    r = run_cli("sweep", "--config", "tests/tiny_experiment.py", "--workdir", w,
                "--launcher", "slurm", "--slurm-local", "--slurm-time", "10")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "slurm: submitted 2 jobs" in r.stdout
    df = pd.read_parquet(os.path.join(w, "results.parquet"))
    assert len(df) == 2 and (df["status"] == "done").all() and df["trial_id"].is_unique
    jobs = json.load(open(os.path.join(w, "slurm", "jobs.json")))
    assert sorted(jobs) == sorted(df["trial_id"])
    again = run_cli("sweep", "--config", "tests/tiny_experiment.py", "--workdir", w,
                    "--launcher", "slurm", "--slurm-local")
    assert again.returncode == 0 and "nothing to submit" in again.stdout


def test_trial_job_checkpoint_requeues_same_trial(tmp_path):
    """submitit's requeue protocol: checkpoint() resubmits the same callable and arguments; the
    requeued call resumes from the checkpoint (train() is resumable, see the SIGKILL test)."""
    import submitit
    from scaling.sweeps.launchers import TrialJob, slurm_parameters
    job = TrialJob(str(tmp_path))
    delayed = job.checkpoint({"a": 1}, "t1")
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert isinstance(delayed.function, TrialJob) and delayed.function.workdir == job.workdir
    assert delayed.args == ({"a": 1}, "t1")
    assert slurm_parameters({"partition": "gpu", "time": 30, "gpus": 1, "cpus": 8,
                             "local": True, "slurm_constraint": "a100"}) == {
        "slurm_partition": "gpu", "timeout_min": 30, "gpus_per_node": 1, "cpus_per_task": 8,
        "slurm_constraint": "a100"}


# ------------------------------------------------------------------ sinks, load_sweep, notebook

def test_wandb_sink_with_fake_module(monkeypatch, tmp_path):
    """W&B is optional: with a stand-in `wandb` module, rows reach run.log with their step."""
    import types
    from scaling.config import default_config
    from scaling.fileio import JsonlWriter
    calls = []

    class Run:
        def log(self, data, step):
            calls.append((step, data))

        def finish(self):
            calls.append("finish")

    fake = types.SimpleNamespace(init=lambda **kw: calls.append(kw) or Run())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = default_config()
    cfg.log.tensorboard, cfg.log.wandb = False, "proj"
    w = sinks.attach(JsonlWriter(str(tmp_path / "metrics.jsonl")), cfg, str(tmp_path))
    w.write({"step": 3, "loss": 2.5})
    w.write({"step": 3, "split": "val", "val_loss": 2.7})
    assert calls[0]["project"] == "proj" and calls[0]["resume"] == "allow"
    assert calls[1:] == [(3, {"train/loss": 2.5}), (3, {"val/val_loss": 2.7})]
    assert len(open(tmp_path / "metrics.jsonl").readlines()) == 2  # JSON lines still written
    cfg.log.tensorboard = False
    cfg.log.wandb = ""
    plain = JsonlWriter(str(tmp_path / "m2.jsonl"))
    assert sinks.attach(plain, cfg, str(tmp_path)) is plain  # no sink: no wrapper


def test_load_sweep_and_notebook(sequential_sweep, tmp_path):
    import analysis
    s = analysis.load_sweep(sequential_sweep)
    assert len(s.trials) == 4 and (s.trials["status"] == "done").all()
    assert set(s.curves["trial_id"]) == set(s.trials["trial_id"])
    assert {"step", "loss", "val_loss"} <= set(s.curves.columns) and s.evals.empty

    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(os.path.join(ROOT, "notebooks", "inspect_sweep.ipynb"), as_version=4)
    os.environ["SWEEP_DIR"] = sequential_sweep  # the kernel inherits our environment
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        del os.environ["SWEEP_DIR"]
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "4 done" in text  # the status cell
    assert all(tid in text for tid in s.trials["trial_id"])  # the final table
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))  # the curves plot
