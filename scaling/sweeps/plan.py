"""Planning a sweep: an experiment (+ overrides) -> its trials, each a resolved config with a
stable id. Nothing is written or trained here.

Trial id = `<readable name>-<hash>` where the hash is of the resolved config without the keys that
cannot change the result (`scaling.config.result_config`: no name, log.*, checkpoint.*, mesh.*,
distributed.*): the same experiment always yields the same ids, so a rerun skips finished trials,
a changed result-relevant field is a new trial, and turning on W&B or checkpoints is not. Grid
points that resolve to the same result config are one trial.

Ids before that rule hashed the whole resolved config: `Trial.legacy_id` keeps that id so a sweep
started by an older version is found again (`store.adopt_legacy`).

A point of `grid.wsd` (key `sweep.wsd_tokens`: token budgets) expands into a family
(`wsd_family`, docs/design.md "schedules and cooldown branches"): one trunk trial (schedule
constant, up to the largest budget's cooldown, checkpointing at every branch point) and per
budget D one branch trial (schedule wsd, train.tokens D) that starts from the trunk's checkpoint
at its cooldown start: `Trial.parent` and `Trial.branch_step`. A branch's config is that of a
standalone wsd run of D (the same result), and its id is `<trunk id>.tok<D>-<hash>`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Iterable

from scaling.config import (ConfigDict, apply_overrides, apply_user_overrides, call_get_config,
                            call_get_sweep, experiment_identity, load_experiment, parse_overrides,
                            default_config, flatten, group_key, is_result_key, resolve,
                            result_config)
from scaling.errors import UserError
from scaling.train.schedule import check_schedule, decay_start, warmup_steps

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
    parent: str = ""     # a wsd branch: its trunk's trial id ...
    branch_step: int = 0  # ... and the trunk checkpoint (step) it starts from


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


def _flat_json(d: dict) -> dict:
    """Flattened, with tuples as lists: how a config reads back from config.json."""
    return flatten(json.loads(json.dumps(d, default=str)))


@functools.lru_cache(maxsize=1)
def _flat_defaults() -> dict:
    """The default config, flattened once (same_result runs for every stray dir x trial)."""
    return _flat_json(default_config().to_dict())


def same_result(saved: dict, cfg: ConfigDict) -> bool:
    """Whether a trial dir's saved config.json describes the same run as `cfg`, across versions:
    every result key both know is equal, and every key the saved config lacks (a field added
    since) is at its default, i.e. the feature it controls was off. Lets an upgrade that adds
    config fields (and so changes every trial id) find finished trials again."""
    old, new = _flat_json(result_config(saved)), _flat_json(result_config(cfg))
    defaults = _flat_defaults()
    if any(is_result_key(k) and k not in new for k in old):  # a field since removed or renamed
        return False
    return all(old[k] == v if k in old else defaults.get(k, v) == v for k, v in new.items())


WSD_KEY = "sweep.wsd_tokens"  # a grid.wsd point: the token budgets of one trunk's branches


def _resolve_point(base: ConfigDict, point: dict, i: int, n_devices: list[int],
                   check_mesh) -> ConfigDict:
    """The resolved config of grid point `i`; any bad value is a UserError naming the point."""
    cfg = ConfigDict(base.to_dict())
    try:
        apply_overrides(cfg, {k: v for k, v in point.items() if not k.startswith("sweep.")})
        cfg = resolve(cfg)
        check_schedule(cfg.train)
        for n in n_devices:
            check_mesh(cfg, n)
    except UserError as e:
        raise UserError(f"sweep point {i} {point}: {e}") from e
    return cfg


def _shared_warmup(base: ConfigDict, common: dict, budgets: list[int], i: int) -> float:
    """The warmup (in steps) every member of a wsd family trains with: the shortest budget's,
    raised to the longest member's warmup floor, so trunk and branches agree step by step."""
    pts = [{**common, "train.tokens": d} for d in budgets]
    w = warmup_steps(_resolve_point(base, pts[0], i, [], None).train)
    return float(max(warmup_steps(_resolve_point(base, {**p, "train.warmup": float(w)}, i, [],
                                                 None).train) for p in pts))


def wsd_family(base: ConfigDict, point: dict, i: int, n_devices: list[int],
               check_mesh=None) -> list[Trial]:
    """A grid.wsd point -> [trunk, branch per budget] (see the module doc)."""
    budgets = sorted({int(d) for d in point[WSD_KEY]})
    if not budgets or any(k in point for k in ("train.tokens", "train.steps")):
        raise UserError(f"sweep point {i}: grid.wsd needs token budgets and sets train.tokens "
                        f"itself; drop train.tokens/train.steps from the point")
    common = {k: v for k, v in point.items() if k != WSD_KEY}
    common["train.warmup"] = _shared_warmup(base, common, budgets, i)
    branches = [_resolve_point(base, {**common, "train.tokens": d}, i, n_devices, check_mesh)
                for d in budgets]
    starts = [decay_start(c.train) for c in branches]
    trunk_point = {**common, "train.schedule": "constant", "train.tokens": 0,
                   "train.steps": max(starts),
                   "checkpoint.at": ",".join(str(s) for s in sorted(set(starts)))}
    trunk_cfg = _resolve_point(base, trunk_point, i, n_devices, check_mesh)
    w = {warmup_steps(c.train) for c in branches + [trunk_cfg]}
    if len(w) > 1:
        raise UserError(f"sweep point {i}: the wsd trunk and its branches would warm up for "
                        f"{sorted(w)} steps; set train.warmup to a number of steps >= 10")
    label = {k: v for k, v in common.items() if k not in ("train.schedule", "train.warmup")}
    trunk_over = {k: v for k, v in trunk_point.items() if k != "checkpoint.at"}
    trunk_id = _with_name({**label, "sweep.trunk": "", "train.steps": max(starts)},
                          _sha1(result_config(trunk_cfg))[:8])
    family = [Trial(trunk_id, trunk_over, trunk_cfg)]
    for d, cfg, start in zip(budgets, branches, starts):
        tid = f"{trunk_id}.tok{_fmt(d)}-{_sha1(result_config(cfg))[:8]}"
        family.append(Trial(tid, {**common, "train.tokens": d}, cfg, "", trunk_id, start))
    return family


def _family_key(t: Trial) -> str:
    return _sha1([result_config(t.cfg), t.parent])


def expand(spec: str | None, overrides: list[str],
           n_devices: Iterable[int] = ()) -> tuple[list[Trial], list[str]]:
    """Resolve every trial up front, so a bad grid point fails before anything is written.

    Each point is also checked against the device mesh for every device count in `n_devices`
    (the devices one trial will see), so a point the mesh cannot split is a one-line error here
    rather than a failure after earlier trials trained. A grid.wsd point becomes a trunk and its
    branches (`wsd_family`), the trunk first. Returns the trials and the sorted config keys the
    grid varies."""
    module, arg = load_experiment(spec)
    base = apply_user_overrides(call_get_config(module, arg), overrides)
    # `sweep.*` keys label grid points (e.g. an IsoFLOP budget) without being config fields.
    points = call_get_sweep(module, arg, overrides)
    n_devices = list(n_devices)
    check_mesh = None
    if n_devices:  # imports JAX: only when asked, so `status`/`collect` start fast
        from scaling.parallel.mesh import check_mesh
    explicit = set(parse_overrides(overrides))
    trials, seen = [], set()
    for i, point in enumerate(points):
        if WSD_KEY in point:
            clash = explicit & {"train.tokens", "train.steps", "train.schedule"}
            if clash:
                raise UserError(f"--config.{min(clash)} conflicts with the grid.wsd sweep, which "
                                f"sets it per trial; drop the override")
            family = wsd_family(base, point, i, n_devices, check_mesh)
        else:
            cfg = _resolve_point(base, point, i, n_devices, check_mesh)
            family = [Trial(trial_id(cfg, point), point, cfg, legacy_trial_id(cfg, point))]
        for t in family:
            key = _family_key(t)
            if key not in seen:  # points that resolve to the same config are one trial
                seen.add(key)
                trials.append(t)
    varied = sorted({k for t in trials for k in t.overrides})
    return trials, varied


def vector_groups(trials: list[Trial], size: int) -> list[list[Trial]]:
    """The trials that may train as vectorised groups (scaling/train/group.py): those with
    equal `config.group_key` (same shapes and loop, other seeds or optimizer numbers), in plan
    order, cut into groups of at most `size`; groups of one and wsd branches (which start from
    their trunk's checkpoint) are left out. `size` <= 1: none."""
    by_key: dict[str, list[Trial]] = {}
    for t in trials:
        key = None if size <= 1 or t.parent else group_key(t.cfg)
        if key is not None:
            by_key.setdefault(key, []).append(t)
    groups = []
    for members in by_key.values():
        n = -(-len(members) // size)  # as few groups as the size allows, evenly filled
        m = len(members)
        groups += [g for g in (members[m * k // n:m * (k + 1) // n] for k in range(n))
                   if len(g) > 1]
    return groups


def plan_record(spec: str | None, overrides: list[str], trials: list[Trial],
                varied: list[str]) -> dict:
    """What `sweep.json` holds (scaling/sweeps/store.py writes it). `experiment` is the file's
    realpath and ARG, so `./x.py` and `/abs/x.py` are recognised as one experiment."""
    path, arg = experiment_identity(spec)
    return {"config": spec, "experiment": {"path": path, "arg": arg}, "overrides": overrides,
            "varied": varied,
            "trials": [{"trial_id": t.trial_id, "overrides": t.overrides,
                        **({"parent": t.parent, "branch_step": t.branch_step} if t.parent
                           else {})} for t in trials]}
