"""Retrieval vs parameters: closed-book vs retrieved accuracy by model size, and their gap.

Reads a sweep's results table only (results.parquet, columns written by scaling's eval
collector): `eval/<task>/direct/exact_match@k0` (closed-book), `eval/<task>/retrieved/
exact_match@k0` and `eval/<task>/retrieved/recall@1@k0`, with `params_non_embedding` as size.

    python -m analysis.retrieval SWEEP_DIR     # writes SWEEP_DIR/plots/retrieval.{png,pdf}
"""
from __future__ import annotations

import argparse
import re
import sys

import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.load import completed, load_results, plot_dir
from analysis.plots.retrieval import plot_retrieval
from analysis.plots.style import save_figure
from scaling.display import print_table

__all__ = ["retrieval_tasks", "retrieval_frame", "plot_retrieval", "plot_sweep_retrieval"]


def retrieval_tasks(df: pd.DataFrame, metric: str = "exact_match", shots: int = 0) -> list[str]:
    """Tasks evaluated both closed-book and retrieved in `df` (e.g. ["facts_cloze"])."""
    pat = re.compile(rf"^eval/(.+)/retrieved/{re.escape(metric)}@k{shots}$")
    return sorted(m.group(1) for c in df.columns if (m := pat.match(c))
                  and f"eval/{m.group(1)}/direct/{metric}@k{shots}" in df.columns)


def retrieval_frame(df: pd.DataFrame, task: str | None = None, metric: str = "exact_match",
                    shots: int = 0) -> pd.DataFrame:
    """Per trial, sorted by size: N, closed, retrieved, gap (= retrieved - closed), recall@1.

    `task` defaults to the one task with closed-book and retrieved scores."""
    if task is None:
        found = retrieval_tasks(df, metric, shots)
        if len(found) > 1:
            raise AnalysisInputError(f"several retrieval tasks ({', '.join(found)}): name one")
        task = found[0] if found else "facts"
    cols = {"closed": f"eval/{task}/direct/{metric}@k{shots}",
            "retrieved": f"eval/{task}/retrieved/{metric}@k{shots}",
            "recall@1": f"eval/{task}/retrieved/recall@1@k{shots}"}
    missing = [c for c in (*cols.values(), "params_non_embedding") if c not in df]
    if missing:
        raise AnalysisInputError(f"no column {missing[0]!r}: evaluate the sweep's trials on task "
                                 f"{task!r} (eval.tasks={task}, e.g. experiments/retrieval.py)")
    out = pd.DataFrame({"N": df["params_non_embedding"],
                        **{k: df[c] for k, c in cols.items()}}).dropna()
    if out.empty:
        raise AnalysisInputError(f"no finished trial has {task!r} closed-book and retrieved scores")
    out["gap"] = out["retrieved"] - out["closed"]
    return out.sort_values("N").reset_index(drop=True)


def plot_sweep_retrieval(sweep_dir, outdir=None, task: str | None = None,
                         df: pd.DataFrame | None = None, name: str = "retrieval"
                         ) -> tuple[list[str], pd.DataFrame]:
    """The retrieval chart of a sweep (a directory or its results table) into `outdir` (default
    SWEEP_DIR/plots, or plots/ beside a table): (paths, frame)."""
    df = completed(load_results(sweep_dir) if df is None else df)
    task = task or (retrieval_tasks(df) or ["facts"])[0]
    frame = retrieval_frame(df, task)
    fig = plot_retrieval(frame, title=f"{task}: closed-book vs BM25-retrieved")
    return save_figure(fig, str(plot_dir(sweep_dir, outdir)), name), frame


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.retrieval",
                                 description="closed-book vs retrieved accuracy per model size")
    ap.add_argument("sweep", help="a sweep directory, or its results table (.csv/.parquet)")
    ap.add_argument("--out", default=None, help="plot directory (default SWEEP/plots, or plots/ "
                                                "beside a table)")
    args = ap.parse_args(argv)
    try:
        paths, frame = plot_sweep_retrieval(args.sweep, args.out)
    except AnalysisInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"plot: {p}")
    print_table(frame, fmt=".3g")
    return 0


if __name__ == "__main__":
    sys.exit(main())
