"""eval.jsonl -> flat result columns (no JAX: the sweep runner's `collect()` uses it)."""
from __future__ import annotations

import os

from scaling.fileio import read_jsonl

KEYS = ("task", "mode", "metric", "shots", "value")


def eval_columns(trial_dir: str) -> dict[str, float]:
    """{"eval/<task>/<mode>/<metric>@k<shots>": value} from `<trial_dir>/eval.jsonl` ({} if none).
    Lines that are unreadable or lack a key are skipped (scaling.fileio.read_jsonl's rule)."""
    cols = {}
    for r in read_jsonl(os.path.join(trial_dir, "eval.jsonl")):
        if all(k in r for k in KEYS):
            cols[f"eval/{r['task']}/{r['mode']}/{r['metric']}@k{r['shots']}"] = r["value"]
    return cols
