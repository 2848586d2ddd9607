"""Sweep grammar for experiment files: each function returns a list of override dicts.

An override dict maps dotted config keys to values, e.g. {"model.d_model": 64, "train.tokens":
1_000_000}. Experiment files return such a list from `get_sweep(arg)`; the runner turns each into
a resolved config and a trial.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Mapping

from scaling import counting
from scaling.errors import UserError
from scaling.config import ConfigDict, apply_overrides, resolve

Point = dict[str, Any]


def size(d_model: int, n_layers: int, n_heads: int | None = None, **extra: Any) -> Point:
    """A model size as overrides; n_heads defaults to d_model // 16 (head dim 16), at least 1."""
    point = {"model.d_model": d_model, "model.n_layers": n_layers,
             "model.n_heads": n_heads or max(1, d_model // 16)}
    point.update({k if "." in k else f"model.{k}": v for k, v in extra.items()})
    return point


def _axis_lists(axes) -> list[list[Point]]:
    """Each axis as a list of override dicts; {key: [values]} becomes one axis per key."""
    lists = []
    for axis in axes:
        if isinstance(axis, Mapping):
            lists += [[{key: v} for v in values] for key, values in axis.items()]
        else:
            lists.append(list(axis))
    return lists


def _merge(combo) -> Point:
    return dict(kv for d in combo for kv in d.items())


def product(*axes: Iterable[Point] | Mapping[str, Iterable[Any]]) -> list[Point]:
    """Cartesian product. Each axis is a list of override dicts or {key: [values]}."""
    return [_merge(combo) for combo in itertools.product(*_axis_lists(axes))]


def sizes_x_tokens(sizes: Iterable[Point], tokens: Iterable[int]) -> list[Point]:
    """Every model size trained on every token budget (`train.tokens`)."""
    return product(list(sizes), {"train.tokens": list(tokens)})


def isoflop(base: ConfigDict, budgets: Iterable[float], sizes: Iterable[Point]) -> list[Point]:
    """IsoFLOP grid: for each compute budget C and size, D = C / flops_per_token(size).

    With our FLOPs convention (scaling.counting) this is Chinchilla's D = C / (6N) plus the
    attention and output-projection terms, so the `flops` column of every trial equals its C
    (up to rounding the tokens to whole steps).
    Sizes whose D would be under one batch are skipped.
    """
    points = []
    for c in budgets:
        for s in sizes:
            cfg = resolve(apply_overrides(ConfigDict(base.to_dict()), s))
            fpt = counting.flops_per_token(cfg.model, cfg.train.seq_len)
            tokens = int(c / fpt)
            if tokens >= cfg.train.batch_size * cfg.train.seq_len:
                points.append({**s, "train.tokens": tokens, "sweep.budget": float(c)})
    return points


def zip_axes(*axes: Iterable[Point] | Mapping[str, Iterable[Any]]) -> list[Point]:
    """Element-wise combination (Python's zip) of equally long axes; the i-th trial takes the
    i-th entry of every axis, e.g. sizes with their own learning rates."""
    lists = _axis_lists(axes)
    lengths = {len(x) for x in lists}
    if len(lengths) > 1:
        raise UserError(f"zip_axes needs axes of equal length, got lengths {sorted(lengths)}")
    return [_merge(combo) for combo in zip(*lists)]


def _params(base: ConfigDict, point: Point, which: str) -> int:
    cfg = resolve(apply_overrides(ConfigDict(base.to_dict()), point))
    d = counting.describe(cfg)
    return d["params_non_embedding" if which == "non_embedding" else "params_total"]


def chinchilla(base: ConfigDict, sizes: Iterable[Point], tokens_per_param: float = 20.0,
               params: str = "non_embedding") -> list[Point]:
    """The Chinchilla line: each size trained on D = tokens_per_param * N tokens (D = 20N).

    N is the non-embedding parameter count by default (Kaplan's convention and the N of this
    repo's fits; at small sizes the embedding is a large share of the total and would distort
    the ratio); `params="total"` uses all parameters, as Hoffmann et al. count them.
    """
    if params not in ("non_embedding", "total"):
        raise ValueError(f"params={params!r}; use 'non_embedding' or 'total'")
    return [{**s, "train.tokens": int(tokens_per_param * _params(base, s, params))}
            for s in sizes]


def data_scaling(size_point: Point, tokens: Iterable[int]) -> list[Point]:
    """Fixed-N data scaling: one model size trained on each token budget."""
    return [{**size_point, "train.tokens": int(d)} for d in tokens]


def per_size(points: Iterable[Point], hparams) -> list[Point]:
    """Per-size hyperparameters: add `hparams(point)` (a function returning overrides) or
    `hparams[d_model]` (a dict keyed by model.d_model) to every point, e.g.
    `per_size(grid, lambda p: {"train.lr": 3e-3 * (64 / p["model.d_model"]) ** 0.5})`.
    The point's own keys win, so an explicit grid value is never silently replaced."""
    out = []
    for p in points:
        extra = hparams(p) if callable(hparams) else hparams[p["model.d_model"]]
        out.append({**extra, **p})
    return out


def wsd(sizes: Iterable[Point], tokens: Iterable[int], *, decay_fraction: float | None = None,
        decay_shape: str | None = None) -> list[Point]:
    """Warmup-stable-decay with cooldown branches: per size, one constant-lr trunk up to the
    start of the largest budget's cooldown and one cooldown branch per token budget D, which
    starts from the trunk's checkpoint at step (1 - f) * D and decays over f * D
    (f = train.decay_fraction). Each returned point is one size; the sweep planner expands it
    into its trunk and branches (scaling/sweeps/plan.py, `wsd_family`). A branch gives the
    result of a standalone `train.schedule=wsd` run of D at a fraction of the compute."""
    budgets = sorted({int(d) for d in tokens})
    if not budgets or budgets[0] <= 0:
        raise UserError(f"grid.wsd needs positive token budgets, got {list(tokens)!r}")
    extra: Point = {"train.schedule": "wsd"}
    if decay_fraction is not None:
        extra["train.decay_fraction"] = float(decay_fraction)
    if decay_shape is not None:
        extra["train.decay_shape"] = decay_shape
    return [{**s, **extra, "sweep.wsd_tokens": budgets} for s in sizes]
