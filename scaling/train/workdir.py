"""A run's workdir before and around training: config compatibility, creation, disk errors.

Resuming a workdir with a changed config: only fields that do not change what the saved state
means may change (`RESUMABLE`): the peak lr, the non-finite/spike policy, the loss chunk, logging, checkpointing,
validation frequency, the name, the mesh and the process layout. `check_workdir` returns those
changes (the trainer records them in metrics.jsonl and summary.json); any other change is refused,
naming the first differing key.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from typing import Any, Iterator

from scaling.config import ConfigDict, default_config, flatten as _flat, to_json
from scaling.errors import UserError

# Keys (exact, or a prefix ending in ".") that may change when a run resumes. Not
# train.spike_window: it sizes the loss history held in the train state.
RESUMABLE = ("train.lr", "train.nan_policy", "train.spike_sigmas", "train.loss_chunk", "log.",
             "checkpoint.", "eval.every", "name", "mesh.", "distributed.")

# Write errors that mean "the disk cannot take it", not a bug: one line, exit 1.
DISK_ERRORS = {errno.ENOSPC: "free space", errno.EDQUOT: "free space (disk quota exceeded)",
               errno.EROFS: "make it writable"}


def resumable(key: str) -> bool:
    return any(key == r or (r.endswith(".") and key.startswith(r)) for r in RESUMABLE)


def has_checkpoint(workdir: str) -> bool:
    """Whether `workdir/checkpoints` holds a (committed or not) step folder."""
    try:
        return any(n.isdigit() for n in os.listdir(os.path.join(workdir, "checkpoints")))
    except OSError:
        return False


def _saved_config(workdir: str) -> dict | None:
    """The workdir's config.json as a flat dict (keys it lacks at their defaults), or None if
    there is none. A damaged one counts as none when nothing was trained yet; else it is an
    error, since the checkpoints cannot be matched to a config."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            saved = json.loads(f.read().decode("utf-8"))
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        if not has_checkpoint(workdir):
            return None
        raise UserError(f"{path} is damaged ({type(e).__name__}) and {workdir!r} holds "
                        f"checkpoints; restore config.json or delete the workdir to start over")
    return {**_flat(default_config().to_dict()), **_flat(saved)}


def check_workdir(cfg: ConfigDict, workdir: str) -> dict[str, list]:
    """Read-only: refuse a workdir that holds a different experiment's run. Returns the
    resume-compatible changes {key: [old, new]} ({} for a new run or the same config)."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"workdir {workdir!r} is a file; pass a directory to --workdir")
    old = _saved_config(workdir)
    if old is None:
        return {}
    new = _flat(json.loads(to_json(cfg)))
    changes = {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k)}
    refused = [k for k in changes if not resumable(k)]
    if refused:
        k, allowed = refused[0], ", ".join(r + "*" if r.endswith(".") else r for r in RESUMABLE)
        raise UserError(f"workdir {workdir!r} holds a run with a different config ({k}: "
                        f"{changes[k][0]!r} -> {changes[k][1]!r}; only {allowed} "
                        f"may change on resume); use a new --workdir (or delete that one to "
                        f"start over)")
    return changes


def create_workdir(workdir: str) -> None:
    """Create the workdir (after every input check has passed) and check it is writable."""
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_test.{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise UserError(f"cannot write to workdir {workdir!r} ({e.strerror}); "
                        f"pass a writable --workdir") from e


def disk_error(e: BaseException) -> int | None:
    """The errno of a full / over-quota / read-only disk behind `e` (its cause chain included;
    orbax and tensorstore wrap OS errors in their own types), else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_ERRORS:
            return e.errno
        text = str(e)
        for code in DISK_ERRORS:
            if os.strerror(code) in text:
                return code
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def disk_errors(workdir: str, error: type[Exception]) -> Iterator[None]:
    """Turn a full / over-quota / read-only disk while writing the run into one line: `error`
    ("no space left on device while writing DIR; free space and rerun to resume"). What was
    written before stays intact: every file is written atomically or appended line by line."""
    try:
        yield
    except Exception as e:
        code = disk_error(e)
        if code is None:
            raise
        raise error(f"{os.strerror(code).lower()} while writing {workdir}; "
                    f"{DISK_ERRORS[code]} and rerun to resume") from e
