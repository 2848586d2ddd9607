"""Issue 14, the sweep's part: config guards in planning, trial ids and dedup by what changes the
result, the experiment identity, mesh checks in the plan, one failing trial never stops the
others, torn config.json, symlinks, read-only directories, exit codes, SIGTERM to --parallel."""
import builtins
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli
from scaling.cli import main
from scaling.sweeps.plan import expand

TINY = "tests/tiny_experiment.py"


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _experiment(tmp_path, points, name="exp.py", base="c.train.steps = 4"):
    return _write(tmp_path, name, (
        "from scaling.config import default_config\n"
        "def get_config(arg=None):\n    c = default_config()\n"
        "    c.model.update(dict(d_model=32, n_layers=1, n_heads=2))\n"
        "    c.train.update(dict(batch_size=8, seq_len=32, lr=3e-3))\n"
        f"    {base}\n    c.eval.batches = 1\n    return c\n"
        f"def get_sweep(arg=None):\n    return {points!r}\n"))


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A finished 2-trial sweep of the tiny experiment (trained once per module)."""
    w = tmp_path_factory.mktemp("finished") / "sweep"
    assert main(["sweep", "--config", TINY, "--workdir", str(w)]) == 0
    return w


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns(".lock"))
    return dst


def _trial_ids(spec=TINY, overrides=()):
    return [t.trial_id for t in expand(spec, list(overrides))[0]]


# ------------------------------------------------------------------ ids and dedup (items 2, 3)

def test_points_that_resolve_to_one_config_are_one_trial(tmp_path):
    # d_ff 0 resolves to 4*32 = 128 (gelu); seed 0 and lr 3e-3 are the defaults of the base.
    spec = _experiment(tmp_path, [{"model.d_ff": 0}, {"model.d_ff": 128}, {"train.seed": 0},
                                  {"train.lr": 0.003}, {"train.seed": 1}])
    trials, _ = expand(spec, [])
    assert len(trials) == 2, [t.trial_id for t in trials]
    assert trials[0].overrides == {"model.d_ff": 0} and trials[1].overrides == {"train.seed": 1}


def test_trial_ids_hash_only_what_changes_the_result():
    from scaling.config import NOT_RESULT_KEYS, default_config, result_config
    assert set(NOT_RESULT_KEYS) == {"name", "log", "checkpoint", "mesh", "distributed",
                                    "pipeline.microbatches",
                                    "data.workers", "data.shard_mb"}  # how the store is built
    r = result_config(default_config())
    assert "eval" in r and "batches" in r["eval"] and "log" not in r and "name" not in r
    assert "microbatches" not in r["pipeline"]
    base = _trial_ids()
    same = _trial_ids(overrides=["log.tensorboard=False", "log.wandb=proj", "log.every=1",
                                 "checkpoint.every=2", "checkpoint.keep=3", "name=renamed",
                                 "mesh.data=1", "distributed.process_id=0",
                                 "pipeline.microbatches=2"])
    assert same == base
    assert not set(_trial_ids(overrides=["eval.batches=3"])) & set(base)  # val_loss changes
    assert not set(_trial_ids(overrides=["train.seed=7"])) & set(base)


def _legacy_id(t):
    """The id of older versions, computed as they did: readable name + hash of everything."""
    digest = hashlib.sha1(json.dumps(t.cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return t.trial_id.rsplit("-", 1)[0] + "-" + digest


def test_rerun_with_logging_or_checkpoints_changed_skips_finished(finished_sweep, tmp_path,
                                                                  capsys):
    w = _copy(finished_sweep, tmp_path)
    for extra in ("--config.log.tensorboard=False", "--config.checkpoint.every=4"):
        capsys.readouterr()
        assert main(["sweep", "--config", TINY, "--workdir", str(w), extra]) == 0, extra
        out = capsys.readouterr().out
        assert out.count("done (skipped)") == 2, out
    assert sorted(os.listdir(w / "trials")) == sorted(_trial_ids())


def test_trial_dirs_of_older_ids_and_a_relative_plan_are_found(finished_sweep, tmp_path, capsys):
    """A sweep written by an older version (ids = hash of the whole config, --config relative)
    rerun with the absolute path: every finished trial is found and renamed, none retrained."""
    w = _copy(finished_sweep, tmp_path)
    trials, _ = expand(TINY, [])
    plan = json.loads((w / "sweep.json").read_text())
    for t in trials:
        os.rename(w / "trials" / t.trial_id, w / "trials" / _legacy_id(t))
    legacy = {"config": TINY, "overrides": [], "varied": plan["varied"],
              "trials": [{"trial_id": _legacy_id(t), "overrides": t.overrides} for t in trials]}
    (w / "sweep.json").write_text(json.dumps(legacy))
    capsys.readouterr()
    assert main(["sweep", "--config", os.path.join(ROOT, TINY), "--workdir", str(w)]) == 0
    out = capsys.readouterr().out
    assert out.count("done (skipped)") == 2, out
    assert sorted(os.listdir(w / "trials")) == sorted(t.trial_id for t in trials)


# ------------------------------------------------------------------ experiment identity (item 4)

def test_same_experiment_compares_realpath_arg_and_result_overrides(tmp_path):
    from scaling.sweeps.plan import plan_record
    from scaling.sweeps.runner import same_experiment

    def rec(spec, overrides=()):
        return plan_record(spec, list(overrides), [], [])
    absolute = os.path.join(ROOT, TINY)
    assert same_experiment(rec("./" + TINY), rec(absolute))
    assert same_experiment({"config": TINY, "overrides": []}, rec(absolute))  # legacy plan
    assert same_experiment(rec(TINY, ["train.lr=0.001", "log.every=5"]),
                           rec(absolute, ["checkpoint.every=3", "train.lr=1e-3"]))
    assert not same_experiment(rec(TINY), rec(TINY + ":4"))
    assert not same_experiment(rec(TINY), rec(TINY, ["train.lr=0.001"]))
    assert not same_experiment(rec(TINY), rec("tests/sweep_experiment.py"))


# ------------------------------------------------------------------ mesh in the plan (item 5)

def test_point_invalid_only_against_the_mesh_fails_before_training(tmp_path):
    spec = _experiment(tmp_path, [{"train.batch_size": 8}, {"train.batch_size": 6}])
    w = tmp_path / "w"
    r = run_cli("sweep", "--config", spec, "--workdir", str(w),
                env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: sweep point 1"), r.stderr
    assert "train.batch_size=6 is not divisible by mesh.data*mesh.fsdp=4" in lines[0]
    assert not w.exists()  # nothing trained, nothing written


# ------------------------------------------------------------------ one failure never stops the rest

def _place_other_run(w, trial_id):
    """A trial dir holding a run of another config: training it is a UserError."""
    d = w / "trials" / trial_id
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model": {"d_model": 999}}))


def test_user_error_in_one_trial_is_its_failure_and_the_sweep_goes_on(tmp_path, capsys):
    w = tmp_path / "w"
    ids = _trial_ids()
    _place_other_run(w, ids[0])
    assert main(["sweep", "--config", TINY, "--workdir", str(w)]) == 1
    err = capsys.readouterr().err
    s0 = json.loads((w / "trials" / ids[0] / "summary.json").read_text())
    assert s0["status"] == "failed" and "different config" in s0["error"]
    assert "UserError" in (w / "trials" / ids[0] / "error.txt").read_text()
    assert json.loads((w / "trials" / ids[1] / "summary.json").read_text())["status"] == "done"
    assert f"error: 1 of 2 trials failed: {ids[0]}" in err, err
    assert "Traceback" not in err


def test_parallel_workers_record_a_user_error_and_never_die_with_a_traceback(tmp_path):
    w = tmp_path / "w"
    ids = _trial_ids()
    _place_other_run(w, ids[1])
    r = run_cli("sweep", "--config", TINY, "--workdir", str(w), "--parallel", "2")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    status = {i: json.loads((w / "trials" / i / "summary.json").read_text())["status"]
              for i in ids}
    assert status == {ids[0]: "done", ids[1]: "failed"}


def test_all_trials_failed_is_exit_1_naming_error_txt(tmp_path, capsys):
    w = tmp_path / "w"
    ids = _trial_ids()
    for i in ids:
        _place_other_run(w, i)
    assert main(["sweep", "--config", TINY, "--workdir", str(w)]) == 1
    err = capsys.readouterr().err
    assert f"error: all 2 trials failed; see {w / 'trials' / ids[0] / 'error.txt'}" in err, err
    assert "run the sweep first" not in err


def test_trial_running_in_another_process_is_exit_0_with_a_note(tmp_path, capsys):
    from scaling.sweeps.store import trial_lock
    w = tmp_path / "w"
    ids = _trial_ids()
    with trial_lock(str(w / "trials" / ids[1])) as got:  # a separate open: conflicts in-process
        assert got
        assert main(["sweep", "--config", TINY, "--workdir", str(w)]) == 0
    out = capsys.readouterr().out
    assert "1 trial(s) still running in another process; rerun `scaling sweep`" in out, out


# ------------------------------------------------------------------ torn config.json (item 6)

@pytest.mark.parametrize("retry", [False, True])
def test_torn_config_json_is_rewritten_from_the_plan(tmp_path, capsys, retry):
    w = tmp_path / "w"
    ids = _trial_ids()
    d = w / "trials" / ids[0]
    d.mkdir(parents=True)
    (d / "config.json").write_text('{"model": {"d_mo')  # a write torn by a kill
    if retry:  # an older version already failed it on that file
        (d / "summary.json").write_text(json.dumps({"status": "failed", "error": "JSONDecodeError"}))
    argv = ["sweep", "--config", TINY, "--workdir", str(w)] + (["--retry-failed"] if retry else [])
    assert main(argv) == 0, capsys.readouterr()
    assert json.loads((d / "summary.json").read_text())["status"] == "done"
    assert json.loads((d / "config.json").read_text())["model"]["d_model"] == 32
    assert (d / "config.json.damaged").read_text() == '{"model": {"d_mo'


# ------------------------------------------------------------------ symlinks (item 7)

def test_planted_symlinks_are_replaced_never_followed(tmp_path):
    from scaling.sweeps.store import is_locked, record_failure, trial_lock
    tdir = tmp_path / "trials" / "t"
    tdir.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in ("error.txt", "summary.json"):
        os.symlink(victim, tdir / name)
    record_failure(str(tdir), "boom", "details")
    assert victim.read_text() == "precious"
    assert not os.path.islink(tdir / "error.txt") and (tdir / "error.txt").read_text() == "details"
    assert not os.path.islink(tdir / "summary.json")

    dangling = tmp_path / "created_through_link"
    os.symlink(dangling, tdir / ".lock")
    assert not is_locked(str(tdir))
    with trial_lock(str(tdir)) as got:
        assert got
    assert not dangling.exists()  # O_CREAT never followed the link
    assert not os.path.islink(tdir / ".lock")


# ------------------------------------------------------------------ read-only directory (item 8)

def _refuse_writes(monkeypatch, root, code=errno.EROFS):
    """Simulate a read-only mount (tests run as root, where chmod stops nothing): every call that
    would write under `root` raises OSError(code), as the kernel would."""
    root = os.path.realpath(root)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def under(p):
        if isinstance(p, int):
            return False
        p = os.path.realpath(os.fsdecode(os.fspath(p)))
        return p == root or p.startswith(root + os.sep)

    def deny(p):
        raise OSError(code, os.strerror(code), os.fsdecode(os.fspath(p)))

    real_os_open, real_open = os.open, builtins.open

    def os_open(p, flags, *a, **k):
        if flags & write_flags and under(p):
            deny(p)
        return real_os_open(p, flags, *a, **k)

    def b_open(file, mode="r", *a, **k):
        if not isinstance(file, int) and any(c in mode for c in "wax+") and under(file):
            deny(file)
        return real_open(file, mode, *a, **k)

    for name in ("mkdir", "replace", "rename", "remove", "unlink", "rmdir"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda p, *a, _real=real, **k:
                            deny(p) if under(p) else _real(p, *a, **k))
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", b_open)


def _one_error_line(capsys):
    """The one `error:` line on stderr, which is its last (warnings may come before it)."""
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("error")]
    assert len(lines) == 1 and err.strip().endswith(lines[0]) and "Traceback" not in err, err
    return lines[0]


def test_read_only_sweep_dir_is_one_line_never_a_traceback(finished_sweep, tmp_path, capsys,
                                                           monkeypatch):
    w = _copy(finished_sweep, tmp_path)
    for tid in os.listdir(w / "trials"):  # lock files as a finished sweep leaves them
        (w / "trials" / tid / ".lock").touch()
    before = {p: os.path.getmtime(p) for p in map(str, w.rglob("*"))}
    capsys.readouterr()
    _refuse_writes(monkeypatch, w)
    assert main(["status", str(w)]) == 0  # reading needs no write
    capsys.readouterr()
    for argv, hint in ((["collect", str(w)], "copy the sweep"),
                       (["plot", str(w)], "--out"),
                       (["sweep", "--config", TINY, "--workdir", str(w)], "copy the sweep")):
        assert main(argv) == 2, argv
        line = _one_error_line(capsys)
        assert f"cannot write to {w}" in line and "(Read-only file system)" in line, line
        assert "fix its permissions" in line and hint in line, line
    monkeypatch.undo()
    assert {p: os.path.getmtime(p) for p in map(str, w.rglob("*"))} == before


def test_full_disk_on_collect_is_exit_1_one_line(finished_sweep, tmp_path, capsys, monkeypatch):
    w = _copy(finished_sweep, tmp_path)
    _refuse_writes(monkeypatch, w, errno.ENOSPC)
    assert main(["collect", str(w)]) == 1
    assert f"no space left on {w}" in _one_error_line(capsys)


# ------------------------------------------------------------------ SIGTERM to --parallel (item 10)

def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def test_sigterm_to_parallel_sweep_stops_its_workers(tmp_path):
    w = tmp_path / "w"
    proc = subprocess.Popen([sys.executable, "-m", "scaling.cli", "sweep", "--config",
                             "tests/sweep_experiment.py:100000", "--workdir", str(w),
                             "--parallel", "2"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pids = []
    try:
        while len(pids) < 2:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            if line.startswith("worker "):
                pids.append(int(line.split("pid ")[1].split(",")[0]))
        deadline = time.time() + 120  # let a worker start training (its metrics appear)
        while time.time() < deadline and not list(w.glob("trials/*/metrics.jsonl")):
            time.sleep(0.5)
        assert all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    survivors = [p for p in pids if _alive(p)]
    for p in survivors:  # never leave them behind, even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not survivors, f"orphaned workers {survivors}"
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err, err


def test_metrics_writer_never_appends_through_a_link(tmp_path):
    from scaling.fileio import JsonlWriter
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, tmp_path / "metrics.jsonl")
    with pytest.raises(OSError) as e:
        JsonlWriter(str(tmp_path / "metrics.jsonl")).write({"step": 1})
    assert e.value.errno == errno.ELOOP and victim.read_text() == "precious"
    JsonlWriter(str(tmp_path / "metrics.jsonl")).truncate_after(0)  # replaces the link itself
    JsonlWriter(str(tmp_path / "metrics.jsonl")).write({"step": 1})
    assert victim.read_text() == "precious" and not os.path.islink(tmp_path / "metrics.jsonl")


def test_sweep_exit_code_does_not_depend_on_the_report(finished_sweep, tmp_path, capsys,
                                                       monkeypatch):
    import analysis.report
    from analysis.errors import AnalysisInputError
    w = _copy(finished_sweep, tmp_path)
    for exc in (AnalysisInputError("only 5 points"), TypeError("complex")):
        def broken(*a, _exc=exc, **k):
            raise _exc
        monkeypatch.setattr(analysis.report, "report_sweep", broken)
        assert main(["sweep", "--config", TINY, "--workdir", str(w)]) == 0
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err and str(exc) in captured.out + captured.err


def _old_version_dir(workdir, name, cfg, drop=(), change=None):
    """A trial dir as an older version left it: its config lacks the fields in `drop`."""
    import json as _json

    from scaling.config import to_json
    saved = _json.loads(to_json(cfg))
    for key in drop:
        *parents, leaf = key.split(".")
        node = saved
        for p in parents:
            node = node[p]
        node.pop(leaf)
    for key, value in (change or {}).items():
        section, leaf = key.split(".")
        saved[section][leaf] = value
    os.makedirs(os.path.join(workdir, "trials", name))
    with open(os.path.join(workdir, "trials", name, "config.json"), "w") as f:
        _json.dump(saved, f)


def test_upgrade_finds_trials_under_older_ids_by_content(tmp_path):
    """An upgrade that adds config fields changes every trial id; finished dirs whose saved config
    is the same run (the new fields at their defaults) take the new ids, others are left alone."""
    from scaling.sweeps import runner
    from scaling.sweeps.plan import expand

    trials, _ = expand("tests/tiny_experiment.py", [])
    wd = str(tmp_path)
    # same run, saved before train.schedule/data.files existed -> adopted
    _old_version_dir(wd, "old-a", trials[0].cfg, drop=("train.schedule", "data.files"))
    # a different lr -> not the same run, stays as it is
    _old_version_dir(wd, "old-b", trials[1].cfg, drop=("train.schedule",),
                     change={"train.lr": 1e-2})
    runner._adopt_legacy_dirs(wd, trials)
    names = set(os.listdir(os.path.join(wd, "trials")))
    assert names == {trials[0].trial_id, "old-b"}


def test_same_result_needs_missing_fields_at_their_defaults():
    from scaling.config import to_json
    from scaling.sweeps.plan import expand, same_result
    import json as _json

    cfg = expand("tests/tiny_experiment.py", ["train.schedule=constant"])[0][0].cfg
    saved = _json.loads(to_json(cfg))
    assert same_result(saved, cfg)
    del saved["train"]["schedule"]  # an older version ran it with the default (cosine)
    assert not same_result(saved, cfg)
