"""Planning a sweep: an experiment (+ overrides) -> its trials, each a resolved config with a
stable id. Nothing is written or trained here.

Trial id = `<readable name>-<hash>` where the hash is of the resolved config: the same experiment
always yields the same ids, so a rerun skips finished trials and a changed config is a new trial.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from scaling.config import ConfigDict, apply_overrides, load_experiment, parse_overrides, resolve
from scaling.errors import UserError

# Short names of config fields in readable trial ids (`d64-L2-tok1e6-<hash>`).
SHORT = {"d_model": "d", "n_layers": "L", "n_heads": "h", "n_kv_heads": "kv", "tokens": "tok",
         "steps": "s", "batch_size": "b", "seq_len": "T", "lr": "lr", "budget": "C"}


@dataclass
class Trial:
    trial_id: str
    overrides: dict      # the grid point (dotted keys)
    cfg: ConfigDict      # resolved


def _fmt(v) -> str:
    if isinstance(v, float) or (isinstance(v, int) and abs(v) >= 10_000):
        return f"{v:.3g}".replace("+", "")
    return str(v)


def trial_id(cfg: ConfigDict, point: dict) -> str:
    """Readable name from the grid point plus a hash of the whole resolved config."""
    digest = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    parts = [SHORT.get(k.split(".")[-1], k.split(".")[-1]) + _fmt(v) for k, v in point.items()]
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(parts))[:80]  # never a path separator
    return f"{name}-{digest}" if name else digest


def expand(spec: str | None, overrides: list[str]) -> tuple[list[Trial], list[str]]:
    """Resolve every trial up front, so a bad grid point fails before anything is written.
    Returns the trials and the sorted config keys the grid varies."""
    module, arg = load_experiment(spec)
    base = module.get_config(arg)
    apply_overrides(base, parse_overrides(overrides))
    # `sweep.*` keys label grid points (e.g. an IsoFLOP budget) without being config fields.
    points = module.get_sweep(arg) if hasattr(module, "get_sweep") else [{}]
    if not points:
        raise UserError(f"get_sweep() in {spec!r} returned no trials")
    trials, seen = [], set()
    for point in points:
        cfg = ConfigDict(base.to_dict())
        try:
            apply_overrides(cfg, {k: v for k, v in point.items() if not k.startswith("sweep.")})
            cfg = resolve(cfg)
        except UserError as e:
            raise UserError(f"sweep point {point}: {e}") from e
        tid = trial_id(cfg, point)
        if tid not in seen:  # identical configs are one trial
            seen.add(tid)
            trials.append(Trial(tid, point, cfg))
    varied = sorted({k for t in trials for k in t.overrides})
    return trials, varied


def plan_record(spec: str | None, overrides: list[str], trials: list[Trial],
                varied: list[str]) -> dict:
    """What `sweep.json` holds (scaling/sweeps/store.py writes it)."""
    return {"config": spec, "overrides": overrides, "varied": varied,
            "trials": [{"trial_id": t.trial_id, "overrides": t.overrides} for t in trials]}
