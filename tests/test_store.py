"""The sweep's files: one atomic writer, one JSONL reader, the store's damaged-file rules, and
collects that run concurrently (no training here: the sweep directories are written by hand)."""
import io
import json
import os
import stat
import threading

import pandas as pd
import pytest

from scaling import cli
from scaling.errors import UserError
from scaling.fileio import JsonlWriter, atomic_write, read_jsonl, write_json_atomic
from scaling.sweeps import runner, store


def fake_sweep(root, n=4, varied=("model.d_model",)):
    """A sweep dir with a plan and n trials: done ones with summaries, one without (pending)."""
    trials = [{"trial_id": f"t{i}", "overrides": {"model.d_model": 32 * (i + 1)}} for i in range(n)]
    store.write_plan(str(root), {"config": None, "overrides": [], "varied": list(varied),
                                 "trials": trials})
    for i, t in enumerate(trials[:-1]):
        tdir = store.trial_dir(str(root), t["trial_id"])
        os.makedirs(tdir)
        store.write_summary(tdir, {"status": "done", "loss": 3.0 - i, "val_loss": 3.1 - i,
                                   "params_non_embedding": 1e4 * (i + 1), "tokens": 1e5,
                                   "steps": 10})
    return [t["trial_id"] for t in trials]


# ------------------------------------------------------------------ atomic writer

def test_atomic_write_kinds_mode_and_no_leftovers(tmp_path):
    p = tmp_path / "f"
    atomic_write(p, b"bytes")
    assert p.read_bytes() == b"bytes"
    atomic_write(p, "text é")
    assert p.read_text(encoding="utf-8") == "text é"
    atomic_write(p, lambda f: f.write(b"via function"))
    assert p.read_bytes() == b"via function"
    write_json_atomic(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~umask  # as open() would, not mkstemp's 0600

    def boom(f):
        f.write(b"half")
        raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_bytes() == b'{\n  "a": 1\n}'  # the old file is intact
    assert os.listdir(tmp_path) == ["f"]       # and no temp file is left


# ------------------------------------------------------------------ JSON lines

def test_read_jsonl_skips_bad_lines_anywhere(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_bytes(b'{"step": 1, "loss": 5.0}\n'
                  b'{"step": 2, "lo\n'                   # corrupt middle line (torn, then appended)
                  b'\xff\xfe\x00garbage\n'               # not UTF-8
                  b'[1, 2]\n"text"\n\n'                  # JSON, but not objects; blank line
                  b'{"step": 3, "loss": 4.0}\n'
                  b'{"step": 4, "loss": 3.')              # torn last line (no newline)
    assert [r["step"] for r in read_jsonl(p)] == [1, 3]
    assert read_jsonl(tmp_path / "missing.jsonl") == []
    # a complete last object without its newline is not torn (an object cannot be a prefix of one)
    (tmp_path / "b.jsonl").write_text('{"step": 1}\n{"step": 2}')
    assert [r["step"] for r in read_jsonl(tmp_path / "b.jsonl")] == [1, 2]


def test_truncate_after_keeps_every_good_line_past_a_corrupt_one(tmp_path):
    p = tmp_path / "metrics.jsonl"
    good = [{"step": s, "loss": 10.0 - s} for s in range(1, 9)]
    lines = [json.dumps(r) for r in good]
    lines.insert(3, '{"step": 4, "loss": 6.0, "tokens_per')  # corrupt line in the middle
    p.write_text("\n".join(lines) + "\n" + '{"step": 9, "lo')  # and a torn last line
    assert read_jsonl(p) == good                                 # nothing after it is hidden
    w = JsonlWriter(str(p))
    w.truncate_after(6)
    assert read_jsonl(p) == good[:6]
    w.write({"step": 7, "loss": 1.0})
    assert [r["step"] for r in read_jsonl(p)] == [1, 2, 3, 4, 5, 6, 7]
    JsonlWriter(str(p)).truncate_after(100)  # nothing past: every good line stays
    assert len(read_jsonl(p)) == 7
    assert os.listdir(tmp_path) == ["metrics.jsonl"]


def test_eval_columns_skip_bad_lines(tmp_path):
    from scaling.evals.columns import eval_columns
    row = {"task": "addition", "mode": "direct", "metric": "exact_match", "shots": 0, "value": 0.5}
    (tmp_path / "eval.jsonl").write_text('{"task": "add\n' + json.dumps(row) + "\n{}\n")
    assert eval_columns(str(tmp_path)) == {"eval/addition/direct/exact_match@k0": 0.5}


# ------------------------------------------------------------------ store: damaged files

@pytest.mark.parametrize("content", [os.urandom(64) + b"\xff", b'{"status": "do', b"[1, 2]", b""])
def test_damaged_summary_reads_as_none(tmp_path, content):
    (tmp_path / "summary.json").write_bytes(content)
    assert store.read_summary(str(tmp_path)) is None
    assert not store.finished(str(tmp_path))


def test_random_bytes_summary_does_not_crash_status_or_collect(tmp_path, capsys):
    ids = fake_sweep(tmp_path)
    bad = store.trial_dir(str(tmp_path), ids[0])
    with open(os.path.join(bad, "summary.json"), "wb") as f:
        f.write(b"\x80\x81\xfe\xff" + os.urandom(200))  # invalid UTF-8 -> UnicodeDecodeError
    with open(os.path.join(bad, "metrics.jsonl"), "wb") as f:
        f.write(os.urandom(100) + b"\n" + json.dumps({"step": 2, "loss": 4.0, "tokens": 512,
                                                      "tokens_per_s": 100.0}).encode() + b"\n")
    with open(os.path.join(bad, "config.json"), "wb") as f:
        f.write(os.urandom(50))
    st = runner.status_table(str(tmp_path)).set_index("trial_id")
    assert st.loc[ids[0], "status"] == "interrupted" and st.loc[ids[0], "step"] == 2
    assert st.loc[ids[1], "status"] == "done" and st.loc[ids[-1], "status"] == "pending"
    df = runner.collect(str(tmp_path)).set_index("trial_id")
    assert df.loc[ids[0], "status"] == "pending" and df.loc[ids[1], "status"] == "done"
    assert cli.main(["status", str(tmp_path)]) == 0
    assert cli.main(["collect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "interrupted" in out and f"{len(ids)} trials" in out


def test_damaged_or_missing_plan_is_a_user_error(tmp_path, capsys):
    with pytest.raises(UserError, match="not a sweep directory"):
        store.read_plan(str(tmp_path))
    (tmp_path / "sweep.json").write_bytes(os.urandom(30) + b"\xff")
    with pytest.raises(UserError, match="damaged"):
        store.read_plan(str(tmp_path))
    assert cli.main(["status", str(tmp_path)]) == 2
    assert "damaged" in capsys.readouterr().err


def test_reset_failed_moves_only_failed_unlocked_summaries(tmp_path):
    ids = fake_sweep(tmp_path)
    failed = [store.trial_dir(str(tmp_path), t) for t in ids[:2]]
    for tdir in failed:
        store.record_failure(tdir, "ValueError: x", "Traceback ...")
    assert all(store.finished(t) for t in failed)
    # flock locks belong to an open file: a second open (is_locked) sees this one as another holder
    with store.trial_lock(failed[1]) as got:
        assert got and store.reset_failed(str(tmp_path), ids) == [ids[0]]  # running: left alone
    assert not store.finished(failed[0])
    assert os.path.exists(os.path.join(failed[0], "summary.failed.json"))
    assert open(os.path.join(failed[0], "error.txt")).read() == "Traceback ..."


# ------------------------------------------------------------------ concurrent collects

def test_concurrent_collects_never_fail_or_tear_the_table(tmp_path):
    """Three collects at once, 20 times each, while a reader parses the files: no exception, the
    CSV always parses with every trial, and no temp file is left behind."""
    ids = fake_sweep(tmp_path, n=30)
    errors, stop = [], threading.Event()

    def collector():
        try:
            for _ in range(20):
                runner.collect(str(tmp_path))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def reader():
        while not stop.is_set():
            try:
                with open(tmp_path / "results.csv", "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            try:
                assert len(pd.read_csv(io.BytesIO(data))) == len(ids)
                pd.read_parquet(tmp_path / "results.parquet")
            except Exception as e:  # noqa: BLE001
                errors.append(e)

    threads = [threading.Thread(target=collector) for _ in range(3)]
    watch = threading.Thread(target=reader)
    watch.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watch.join()
    assert not errors, errors[:3]
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(ids)
    assert sorted(f for f in os.listdir(tmp_path) if not os.path.isdir(tmp_path / f)) == \
        ["results.csv", "results.parquet", "sweep.json"]
