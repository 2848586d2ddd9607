"""The sweep's on-disk contract, in one place (stdlib only; no JAX, no pandas).

    DIR/sweep.json                    the plan: config, overrides, varied keys, trial ids + points
    DIR/trials/<trial_id>/            one trial (a training workdir):
        summary.json                  written when it ends: status done or failed (+ metrics)
        summary.failed.json           a failed summary moved aside by --retry-failed
        error.txt                     the traceback of a failed trial
        metrics.jsonl, config.json    written by the trainer while it runs
        .lock                         flock held by whoever trains it
        config.json.damaged           an unreadable config.json moved aside (`repair_config`)
        checkpoints/<step>/           orbax checkpoints (scaling/train/checkpoint.py); a wsd
                                      branch starts from its trunk's `checkpoints/<branch step>`
                                      (`branch_source`, `seed_branch`)
    DIR/results.parquet, results.csv  the table (`runner.collect`)

A trial is finished when it has a readable summary with status done or failed. A summary that
cannot be read (missing, torn, not JSON, not UTF-8, not an object) counts as no summary, so a
damaged file never crashes `status`/`collect` and the trial is simply trained (resumed) again.

Trial files are never written through a symlink: whole-file writes go through
`fileio.atomic_write`, whose `os.replace` replaces a link planted at the name (not its target),
and the lock file is opened with O_NOFOLLOW (a planted link is removed, never followed).
Reading a sweep (`status`, `collect`) writes nothing, so it works on a read-only directory.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from typing import Iterator

from scaling.errors import UserError
from scaling.fileio import json_safe, atomic_write, read_jsonl, write_json_atomic

PLAN = "sweep.json"
SUMMARY = "summary.json"
RESULTS = ("results.parquet", "results.csv")


def trial_dir(workdir: str, trial_id: str) -> str:
    return os.path.join(workdir, "trials", trial_id)


def read_json(path: str):
    """The JSON value in `path`, or None if it is missing or unreadable in any way."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):  # ValueError: JSONDecodeError and UnicodeDecodeError
        return None


# ------------------------------------------------------------------ summary

def read_summary(tdir: str) -> dict | None:
    """The trial's summary, or None when it has none or it is damaged (see the module doc)."""
    s = read_json(os.path.join(tdir, SUMMARY))
    return s if isinstance(s, dict) else None


def write_summary(tdir: str, summary: dict) -> dict:
    """Write the trial's summary atomically as strict JSON; returns what was written."""
    safe = json_safe(summary)
    write_json_atomic(os.path.join(tdir, SUMMARY), safe)
    return safe


def record_failure(tdir: str, error: str, details: str) -> dict:
    """Mark a trial failed: summary.json {status: failed, error} and the details in error.txt."""
    os.makedirs(tdir, exist_ok=True)
    atomic_write(os.path.join(tdir, "error.txt"), details)
    s = {"status": "failed", "error": error}
    write_summary(tdir, s)  # last: the summary is what marks the trial finished
    return s


def finished(tdir: str) -> bool:
    """A trial with a summary (done, or failed and not being retried) is not run again."""
    s = read_summary(tdir)
    return bool(s) and s.get("status") in ("done", "failed")


def reset_failed(workdir: str, trial_ids: list[str]) -> list[str]:
    """For --retry-failed: move failed trials' summary.json aside (to summary.failed.json) so
    every launcher sees them as unfinished. Done once by the submitting process, so a trial that
    fails again is not retried over and over by each worker."""
    reset = []
    for tid in trial_ids:
        tdir = trial_dir(workdir, tid)
        s = read_summary(tdir)
        if s and s.get("status") == "failed" and not is_locked(tdir):
            os.replace(os.path.join(tdir, SUMMARY), os.path.join(tdir, "summary.failed.json"))
            reset.append(tid)
    return reset


# ------------------------------------------------------------------ wsd branches

def branch_source(workdir: str, parent: str, step: int) -> tuple[str, str]:
    """Where a wsd branch stands: ("ready", the trunk's checkpoint dir at `step`), ("wait",
    why) while the trunk has not reached it, or ("failed", why) when it never will.

    orbax renames a checkpoint to its step's name only once it is committed, so a directory
    named `step` is complete; the trunk keeps it for good (`checkpoint.at`)."""
    tdir = trial_dir(workdir, parent)
    ckpt = os.path.join(tdir, "checkpoints", str(step))
    if os.path.isdir(ckpt):
        return "ready", ckpt
    s = read_summary(tdir) or {}
    if s.get("status") == "failed":
        return "failed", (f"its trunk {parent} failed ({s.get('error', '?')}); fix that and "
                          f"rerun with --retry-failed")
    if s.get("status") == "done":
        return "failed", (f"its trunk {parent} finished without a checkpoint at step {step}; "
                          f"delete {tdir} to train the trunk again")
    return "wait", f"waiting for trunk {parent} to reach step {step}"


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # orbax never rewrites a committed file: sharing it is safe
    except OSError:
        shutil.copy2(src, dst)


def seed_branch(tdir: str, ckpt: str) -> bool:
    """Give a branch with no checkpoint of its own the trunk's checkpoint `ckpt` (hard links,
    else copies; moved into place with one rename, so a kill leaves none or all of it). The
    trainer then resumes the branch from it. Call under the branch's lock. Returns whether it
    seeded."""
    own = os.path.join(tdir, "checkpoints")
    if os.path.isdir(own) and any(n.isdigit() for n in os.listdir(own)):
        return False  # the branch trained (or was seeded) before: resume from its own
    tmp = os.path.join(tdir, ".seed-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ckpt, tmp, copy_function=_link_or_copy)
    os.makedirs(own, exist_ok=True)
    os.rename(tmp, os.path.join(own, os.path.basename(ckpt)))
    return True


# ------------------------------------------------------------------ plan

def has_plan(workdir: str) -> bool:
    return os.path.exists(os.path.join(workdir, PLAN))


def read_plan(workdir: str) -> dict:
    """The sweep's plan (`sweep.json`): trial ids, their grid points and the varied keys."""
    path = os.path.join(workdir, PLAN)
    if not os.path.exists(path):
        raise UserError(f"{workdir!r} is not a sweep directory (no {PLAN}); "
                        f"run `scaling sweep --workdir {workdir}` first")
    plan = read_json(path)
    if not (isinstance(plan, dict) and isinstance(plan.get("trials"), list)):
        raise UserError(f"{path} is damaged (not a sweep plan); delete it and rerun "
                        f"`scaling sweep --workdir {workdir}` with the same experiment")
    plan.setdefault("varied", [])
    return plan


def write_plan(workdir: str, plan: dict) -> None:
    write_json_atomic(os.path.join(workdir, PLAN), plan)


# ------------------------------------------------------------------ lock

def _open_lock(tdir: str) -> int:
    """Open (create) `<trial>/.lock` for the flock, never through a symlink: a link planted
    there (which O_CREAT would follow, creating or touching its target) is removed first."""
    path = os.path.join(tdir, ".lock")
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
    try:
        return os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
    with contextlib.suppress(FileNotFoundError):  # another process removed it first
        os.unlink(path)
    return os.open(path, flags, 0o644)


_HELD: set[tuple[int, str]] = set()  # (pid, lock path) of the trial locks this process holds


def _lock_key(tdir: str) -> tuple[int, str]:
    return os.getpid(), os.path.realpath(os.path.join(tdir, ".lock"))


@contextlib.contextmanager
def trial_lock(tdir: str, *, create: bool = True) -> Iterator[bool]:
    """An exclusive, non-blocking flock on `<trial>/.lock`: yields False if another process
    holds it. The OS drops the lock when its holder dies, so a killed sweep never leaves a
    stale lock behind. `create=False`: a trial dir that does not exist yields False.
    (flock locks belong to an open file: a second `trial_lock` in the same process is refused
    too; code that may run under its caller's lock asks `held_here`.)"""
    if create:
        os.makedirs(tdir, exist_ok=True)
    elif not os.path.isdir(tdir):
        yield False
        return
    fd = _open_lock(tdir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        _HELD.add(_lock_key(tdir))
        try:
            yield True
        finally:
            _HELD.discard(_lock_key(tdir))
    finally:
        os.close(fd)


def held_here(tdir: str) -> bool:
    """Whether this process holds the trial's lock (a sweep launcher around `train()`, which
    then does not take it again)."""
    return _lock_key(tdir) in _HELD


def is_locked(tdir: str) -> bool:
    """Whether another process is training this trial now. Read-only (a shared flock test on a
    read-only descriptor), so `status` works on a sweep directory it cannot write."""
    try:
        fd = os.open(os.path.join(tdir, ".lock"), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # no lock file (never claimed), or a planted symlink: nobody holds it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def adopt_legacy(workdir: str, trial_id: str, legacy_id: str) -> bool:
    """Give a trial dir made by an older version (named by the legacy id) its current id, so an
    upgrade never orphans finished trials. Only when the legacy dir exists and the new one does
    not; under the legacy trial's lock (a dir being trained is left alone); atomic (a rename).
    Returns whether it renamed."""
    new, old = trial_dir(workdir, trial_id), trial_dir(workdir, legacy_id)
    if legacy_id in ("", trial_id) or os.path.lexists(new) or os.path.islink(old) \
            or not os.path.isdir(old):
        return False
    with trial_lock(old, create=False) as got:
        if not got or os.path.lexists(new):
            return False
        try:
            os.rename(old, new)
        except OSError as e:  # new appeared meanwhile (not empty): keep both as they are
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            return False
    return True


def repair_config(tdir: str) -> bool:
    """Move an unreadable `config.json` (torn by a kill, damaged) aside to config.json.damaged so
    the trainer writes it afresh from the plan's resolved config instead of failing the trial
    forever. Call under the trial's lock. Returns whether it moved one."""
    path = os.path.join(tdir, "config.json")
    if not os.path.lexists(path) or isinstance(read_json(path), dict):
        return False
    os.replace(path, path + ".damaged")
    return True


# ------------------------------------------------------------------ progress (status inputs)

def read_metrics(tdir: str) -> list[dict]:
    """The trial's logged training lines (those with a loss) so far."""
    return [r for r in read_jsonl(os.path.join(tdir, "metrics.jsonl")) if "loss" in r]


def planned_steps(tdir: str, summary: dict | None = None) -> int:
    """Steps the trial trains for: from its summary, else its config.json, else 0 (unknown)."""
    if summary and isinstance(summary.get("steps"), int):
        return summary["steps"]
    cfg = read_json(os.path.join(tdir, "config.json"))
    try:
        return int(cfg["train"]["steps"])
    except (TypeError, KeyError, ValueError):
        return 0


# ------------------------------------------------------------------ results table

def write_results(workdir: str, df) -> list[str]:
    """Write the table (a pandas DataFrame) to results.parquet and results.csv, each atomically
    through its own unique temp file, so concurrent collects never tear or mix them."""
    parquet, csv = (os.path.join(workdir, name) for name in RESULTS)
    atomic_write(parquet, lambda f: df.to_parquet(f, index=False))
    atomic_write(csv, df.to_csv(index=False))
    return [parquet, csv]
