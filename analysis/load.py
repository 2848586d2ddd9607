"""Readers for sweep result files written by the trainer.

Layout of a sweep directory (contract with the trainer)::

    DIR/results.parquet        one row per trial (DIR/results.csv is a fallback copy)
    DIR/trials/<trial_id>/metrics.jsonl   one JSON object per logged step
    DIR/trials/<trial_id>/summary.json, config.json

Nothing here imports the trainer: we only read files, through the readers that define their
format (``scaling.fileio.read_jsonl``, ``scaling.sweeps.store``; stdlib only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from scaling.fileio import read_jsonl
from scaling.sweeps.store import read_summary

__all__ = [
    "load_results",
    "load_curves",
    "completed",
    "require_columns",
    "fit_arrays",
    "default_loss_col",
    "load_sweep",
    "Sweep",
    "usable",
    "aggregate_seeds",
    "seed_noise",
    "SEED_COL",
    "plot_dir",
]

SEED_COL = "train.seed"
#: columns that identify a trained configuration when the table has no config keys
_SHAPE_COLS = ("params_total", "params_non_embedding", "tokens", "flops")


def plot_dir(path: str | os.PathLike, override: str | os.PathLike | None = None) -> Path:
    """Where a command's plots go: `override`, else PATH/plots for a sweep directory, else a
    plots/ folder beside a results file."""
    if override:
        return Path(override)
    p = Path(path)
    return (p if p.is_dir() else p.parent) / "plots"


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """Load a results table from a sweep directory, a ``.parquet`` or a ``.csv`` file.

    For a directory, ``results.parquet`` is read, falling back to ``results.csv``.
    Raises :class:`AnalysisInputError` if nothing readable is found.
    """
    p = Path(path)
    if p.is_dir():
        for name in ("results.parquet", "results.csv"):
            if (p / name).is_file():
                return _read_table(p / name)
        raise AnalysisInputError(
            f"{p} has no results.parquet or results.csv; pass a finished sweep directory "
            "or a .parquet/.csv file"
        )
    if not p.exists():
        raise AnalysisInputError(f"{p} does not exist; pass a sweep directory or a .parquet/.csv file")
    return _read_table(p)


def _read_table(p: Path) -> pd.DataFrame:
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(p)
        if suffix in (".csv", ".txt"):
            return pd.read_csv(p)
    except (OSError, ValueError) as exc:  # pyarrow/pandas parse errors are ValueErrors or OSErrors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AnalysisInputError(f"cannot read {p} ({first}); regenerate the file") from exc
    raise AnalysisInputError(f"{p}: unsupported file type {suffix!r}; use .parquet or .csv")


def load_curves(sweep_dir: str | os.PathLike, *, split: str = "train") -> pd.DataFrame:
    """Per-step training-curve lines from ``sweep_dir/trials/*/metrics.jsonl``.

    Returns one row per logged line with a ``trial_id`` column added (the trial's
    directory name). ``split="train"`` keeps training lines (lines without
    ``"split": "val"``), ``split="val"`` keeps validation lines, ``split="all"``
    keeps both. Unreadable lines (a torn last line of a killed run, a damaged line) are
    skipped, as everywhere (:func:`scaling.fileio.read_jsonl`).
    """
    if split not in ("train", "val", "all"):
        raise AnalysisInputError(f"split={split!r}; use 'train', 'val' or 'all'")
    root = Path(sweep_dir) / "trials"
    files = sorted(root.glob("*/metrics.jsonl"))
    if not files:
        raise AnalysisInputError(
            f"no {root}/*/metrics.jsonl files; pass a sweep directory whose trials logged metrics"
        )
    rows = []
    for f in files:
        rows += [dict(rec, trial_id=f.parent.name) for rec in read_jsonl(f)]
    df = pd.DataFrame(rows)
    is_val = df["split"].eq("val") if "split" in df else pd.Series(False, index=df.index)
    if split == "train":
        df = df[~is_val]
    elif split == "val":
        df = df[is_val]
    return df.reset_index(drop=True)


class Sweep(NamedTuple):
    """Tidy tables of one sweep directory (see :func:`load_sweep`)."""

    trials: pd.DataFrame   # one row per trial: results.parquet, or the trial summaries
    curves: pd.DataFrame   # one row per metrics.jsonl line (train and val), with trial_id
    evals: pd.DataFrame    # one row per eval.jsonl line, with trial_id (empty if none)


def load_sweep(sweep_dir: str | os.PathLike) -> Sweep:
    """Everything a notebook needs from a sweep directory, finished or not.

    ``trials`` is ``results.parquet`` (written by ``scaling collect``) or, before any collect,
    one row per ``trials/*/summary.json`` (status ``pending`` where there is none yet);
    ``curves`` is :func:`load_curves` with ``split="all"`` (empty if nothing is logged yet);
    ``evals`` holds the ``eval.jsonl`` lines of every trial.
    """
    root = Path(sweep_dir)
    if not (root / "trials").is_dir():
        raise AnalysisInputError(f"{root} has no trials/ directory; pass a sweep directory")
    try:
        trials = load_results(root)
    except AnalysisInputError:
        rows = []
        for tdir in sorted(p for p in (root / "trials").iterdir() if p.is_dir()):
            s = read_summary(str(tdir)) or {"status": "pending"}  # damaged = none yet
            rows.append({"trial_id": tdir.name, **s})
        trials = pd.DataFrame(rows)
    try:
        curves = load_curves(root, split="all")
    except AnalysisInputError:
        curves = pd.DataFrame(columns=["trial_id", "step"])
    evals = [dict(rec, trial_id=f.parent.name)
             for f in sorted((root / "trials").glob("*/eval.jsonl")) for rec in read_jsonl(f)]
    return Sweep(trials, curves, pd.DataFrame(evals, columns=None if evals else ["trial_id"]))


def require_columns(df: pd.DataFrame, cols, *, what: str = "data") -> None:
    """Raise :class:`AnalysisInputError` listing the available columns if any of ``cols`` is missing."""
    missing = [c for c in cols if c is not None and c not in df.columns]
    if missing:
        raise AnalysisInputError(
            f"{what} has no column(s) {', '.join(map(repr, missing))}; "
            f"choose from: {', '.join(map(str, df.columns))}"
        )


def completed(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of finished trials (``status == "done"`` when a status column exists), without wsd
    trunks (``role == "trunk"``): a trunk is a constant-lr run never decayed, not a point of the
    grid; its branches are (see docs/design.md, "schedules and cooldown branches")."""
    if "status" in df.columns:
        df = df[df["status"].astype(str) == "done"]
    if "role" in df.columns:
        df = df[df["role"].astype(str) != "trunk"]
    return df



def default_loss_col(df: pd.DataFrame) -> str:
    """``val_loss`` when the table has any, else ``loss``."""
    if "val_loss" in df.columns and df["val_loss"].notna().any():
        return "val_loss"
    return "loss"


def fit_arrays(df: pd.DataFrame, cols, *, what: str = "fit data") -> list[np.ndarray]:
    """Float arrays for ``cols``; raises if a column is missing, or any value is NaN/inf/<= 0."""
    require_columns(df, cols, what=what)
    out = []
    for c in cols:
        x = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(x) | (x <= 0)
        if bad.any():
            raise AnalysisInputError(
                f"column {c!r} has {int(bad.sum())} NaN/inf/non-positive value(s) "
                f"(first at row {int(np.flatnonzero(bad)[0])}); drop or fix those rows "
                "(failed trials are dropped with status != 'done')"
            )
        out.append(x)
    return out


def usable(df: pd.DataFrame, cols) -> tuple[pd.DataFrame, list[str]]:
    """Finished rows whose ``cols`` are finite and > 0, and one warning line naming the rest.

    A failed trial or a NaN loss (e.g. ``nan_policy=skip`` runs that diverged) must not stop a
    report or a fit: it is skipped, and the warning says which trials were.
    """
    require_columns(df, cols, what="results table")
    done = completed(df)
    ok = np.ones(len(done), bool)
    for c in cols:
        x = pd.to_numeric(done[c], errors="coerce").to_numpy(dtype=float)
        ok &= np.isfinite(x) & (x > 0)
    warnings = []
    n_failed = int((df["status"].astype(str) != "done").sum()) if "status" in df.columns else 0
    if n_failed:
        warnings.append(f"skipped {n_failed} trial(s) that did not finish (status != 'done')")
    if (~ok).any():
        ids = done["trial_id"].astype(str).tolist() if "trial_id" in done else [str(i) for i in done.index]
        bad = [i for i, k in zip(ids, ok) if not k]
        warnings.append(f"skipped {len(bad)} finished trial(s) with NaN/inf/non-positive "
                        f"{'/'.join(cols)}: {', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}")
    return done[ok], warnings


def aggregate_seeds(df: pd.DataFrame, seed_col: str = SEED_COL, value_cols=("loss", "val_loss")) -> pd.DataFrame:
    """One row per configuration: trials that differ only by ``seed_col`` averaged.

    Configuration = every other dotted config column (``model.d_model`` ...), else the size /
    tokens / FLOP columns. Numeric columns become means; each of ``value_cols`` present gets a
    ``<col>_std`` (sample std, NaN for one seed) and the table an ``n_seeds`` column. A table
    without ``seed_col`` is returned unchanged.
    """
    if seed_col not in df.columns or df.empty:
        return df
    keys = [c for c in df.columns if "." in c and c != seed_col] or [c for c in _SHAPE_COLS if c in df]
    if not keys:
        raise AnalysisInputError(f"cannot tell configurations apart: no config or size columns beside {seed_col!r}")
    values = [c for c in value_cols if c in df.columns]
    numeric = [c for c in df.columns if c not in keys and c != seed_col
               and pd.api.types.is_numeric_dtype(df[c])]
    g = df.groupby(keys, dropna=False, sort=False)
    out = g[numeric].mean()
    for c in values:
        out[f"{c}_std"] = g[c].std(ddof=1)
    # A grid point that does not set the seed (NaN) trains with the experiment's base seed: it
    # counts as one seed of its own beside the points that set another.
    out["n_seeds"] = g[seed_col].nunique(dropna=False)
    first = [c for c in df.columns if c not in keys and c not in numeric and c != seed_col]
    if first:
        out = out.join(g[first].first())
    return out.reset_index()


def seed_noise(df: pd.DataFrame, loss_col: str) -> dict | None:
    """The noise floor from seeds: median std of ``loss_col`` over configurations with >= 2 seeds."""
    std_col = f"{loss_col}_std"
    if std_col not in df.columns or "n_seeds" not in df.columns:
        return None
    multi = df[df["n_seeds"] >= 2]
    if multi.empty:
        return None
    rel = (multi[std_col] / multi[loss_col]).to_numpy(float)
    return {"loss_col": loss_col, "median_std": float(np.median(multi[std_col])),
            "median_rel_std": float(np.median(rel)), "n_configs": int(len(multi)),
            "max_seeds": int(multi["n_seeds"].max())}
