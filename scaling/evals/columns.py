"""eval.jsonl -> flat result columns (no JAX: the sweep runner's `collect()` uses it)."""
from __future__ import annotations

import json
import os


def eval_columns(trial_dir: str) -> dict[str, float]:
    """{"eval/<task>/<mode>/<metric>@k<shots>": value} from `<trial_dir>/eval.jsonl` ({} if none)."""
    path = os.path.join(trial_dir, "eval.jsonl")
    if not os.path.exists(path):
        return {}
    cols = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                cols[f"eval/{r['task']}/{r['mode']}/{r['metric']}@k{r['shots']}"] = r["value"]
    return cols
