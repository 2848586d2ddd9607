"""Planning a sweep: an experiment (+ overrides) -> its trials, each a resolved config with a
stable id. Nothing is written or trained here.

Trial id = `<readable name>-<hash>` where the hash is of the resolved config without the keys that
cannot change the result (`scaling.config.result_config`: no name, log.*, checkpoint.*, mesh.*,
distributed.*): the same experiment always yields the same ids, so a rerun skips finished trials,
a changed result-relevant field is a new trial, and turning on W&B or checkpoints is not. Grid
points that resolve to the same result config are one trial.

Ids before that rule hashed the whole resolved config: `Trial.legacy_id` keeps that id so a sweep
started by an older version is found again (`store.adopt_legacy`).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Iterable

from scaling.config import (ConfigDict, apply_overrides, apply_user_overrides, call_get_config,
                            call_get_sweep, experiment_identity, load_experiment, resolve,
                            result_config)
from scaling.errors import UserError

# Short names of config fields in readable trial ids (`d64-L2-tok1e6-<hash>`).
SHORT = {"d_model": "d", "n_layers": "L", "n_heads": "h", "n_kv_heads": "kv", "tokens": "tok",
         "steps": "s", "batch_size": "b", "seq_len": "T", "lr": "lr", "budget": "C",
         "parametrization": ""}  # d64-L2-h4-mup-lr0.004


@dataclass
class Trial:
    trial_id: str
    overrides: dict      # the grid point (dotted keys)
    cfg: ConfigDict      # resolved
    legacy_id: str = ""  # the id older versions gave it (hash of the whole resolved config)


def _fmt(v) -> str:
    if isinstance(v, float) or (isinstance(v, int) and abs(v) >= 10_000):
        return f"{v:.3g}".replace("+", "")
    return str(v)


def _sha1(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _with_name(point: dict, digest: str) -> str:
    parts = [SHORT.get(k.split(".")[-1], k.split(".")[-1]) + _fmt(v) for k, v in point.items()]
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(parts))[:80]  # never a path separator
    return f"{name}-{digest}" if name else digest


def trial_id(cfg: ConfigDict, point: dict) -> str:
    """Readable name from the grid point plus a hash of what the result depends on."""
    return _with_name(point, _sha1(result_config(cfg))[:8])


def legacy_trial_id(cfg: ConfigDict, point: dict) -> str:
    """The id of older versions: readable name plus a hash of the whole resolved config."""
    return _with_name(point, _sha1(cfg.to_dict())[:8])


def expand(spec: str | None, overrides: list[str],
           n_devices: Iterable[int] = ()) -> tuple[list[Trial], list[str]]:
    """Resolve every trial up front, so a bad grid point fails before anything is written.

    Each point is also checked against the device mesh for every device count in `n_devices`
    (the devices one trial will see), so a point the mesh cannot split is a one-line error here
    rather than a failure after earlier trials trained. Returns the trials and the sorted
    config keys the grid varies."""
    module, arg = load_experiment(spec)
    base = apply_user_overrides(call_get_config(module, arg), overrides)
    # `sweep.*` keys label grid points (e.g. an IsoFLOP budget) without being config fields.
    points = call_get_sweep(module, arg, overrides)
    n_devices = list(n_devices)
    if n_devices:  # imports JAX: only when asked, so `status`/`collect` start fast
        from scaling.parallel.mesh import check_mesh
    trials, seen = [], set()
    for i, point in enumerate(points):
        cfg = ConfigDict(base.to_dict())
        try:
            apply_overrides(cfg, {k: v for k, v in point.items() if not k.startswith("sweep.")})
            cfg = resolve(cfg)
            for n in n_devices:
                check_mesh(cfg, n)
        except UserError as e:
            raise UserError(f"sweep point {i} {point}: {e}") from e
        key = _sha1(result_config(cfg))
        if key not in seen:  # points that resolve to the same config are one trial
            seen.add(key)
            trials.append(Trial(trial_id(cfg, point), point, cfg, legacy_trial_id(cfg, point)))
    varied = sorted({k for t in trials for k in t.overrides})
    return trials, varied


def plan_record(spec: str | None, overrides: list[str], trials: list[Trial],
                varied: list[str]) -> dict:
    """What `sweep.json` holds (scaling/sweeps/store.py writes it). `experiment` is the file's
    realpath and ARG, so `./x.py` and `/abs/x.py` are recognised as one experiment."""
    path, arg = experiment_identity(spec)
    return {"config": spec, "experiment": {"path": path, "arg": arg}, "overrides": overrides,
            "varied": varied,
            "trials": [{"trial_id": t.trial_id, "overrides": t.overrides} for t in trials]}
