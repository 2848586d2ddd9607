"""File I/O shared by every writer and reader: atomic JSON writes and JSON-lines files."""
from __future__ import annotations

import json
import os


def write_json_atomic(path: str, obj) -> None:
    """Write JSON via a temp file and rename, so readers never see half a file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict]:
    """Parse a JSON-lines file, ignoring a torn last line left by a killed writer."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


class JsonlWriter:
    """Appends one JSON object per line; `truncate_after(step)` drops lines past a resume point."""

    def __init__(self, path: str):
        self.path = path

    def truncate_after(self, step: int) -> None:
        rows = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        os.replace(tmp, self.path)

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def sync(self) -> None:
        if os.path.exists(self.path):
            with open(self.path, "a") as f:
                os.fsync(f.fileno())
