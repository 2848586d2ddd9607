"""File I/O shared by every writer and reader (stdlib only): THE atomic writer and THE JSON-lines
reader with its one torn-line rule.

Atomic: content goes to a unique temp file in the target's folder (`tempfile.mkstemp`, so
concurrent writers of one path never share a temp file), is fsynced, then `os.replace`d over the
target. A reader sees the old file or the new one, never half of one; the last writer wins.

JSON lines: one object per line. `read_jsonl` skips every line it cannot use (undecodable bytes,
invalid JSON, a value that is not an object) and goes on with the next, so one damaged line never
hides the lines after it. A last line without its newline that does not parse is a write torn by
a kill, and is ignored the same way.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from typing import BinaryIO, Callable, Union

Content = Union[bytes, str, Callable[[BinaryIO], None]]


def _umask() -> int:
    mask = os.umask(0)  # read once at import (single-threaded): os.umask can only be read by setting
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write(path: str | os.PathLike, content: Content) -> None:
    """Replace `path` atomically with `content`: bytes, str (UTF-8), or a function that writes to
    a binary file object (e.g. `lambda f: np.save(f, a)`)."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise


def json_safe(obj):
    """`obj` as strict JSON values: non-finite floats (a NaN loss under nan_policy=skip) become
    None, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write `obj` as indented strict JSON (non-finite numbers as null), atomically."""
    atomic_write(path, json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The objects of a JSON-lines file, in order ([] if it does not exist). Lines that are not
    UTF-8, not JSON, or not a JSON object are skipped, wherever they are (see the module doc)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    rows = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _step_after(row: dict, step: int) -> bool:
    s = row.get("step")
    return isinstance(s, (int, float)) and not isinstance(s, bool) and s > step


class JsonlWriter:
    """Appends one JSON object per line; `truncate_after(step)` drops lines past a resume point."""

    def __init__(self, path: str):
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Keep every readable line whose step is <= `step` (or that has no step); drop the rest
        and any unreadable line. Atomic, so a kill here never loses the kept lines."""
        rows = [r for r in read_jsonl(self.path) if not _step_after(r, step)]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def _open(self):
        """Append, never through a symlink planted at the path (O_NOFOLLOW: ELOOP instead)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        return os.fdopen(fd, "a")

    def write(self, row: dict) -> None:
        with self._open() as f:
            f.write(json.dumps(row) + "\n")

    def sync(self) -> None:
        if os.path.exists(self.path):
            with self._open() as f:
                os.fsync(f.fileno())
