"""The end-of-sweep report: print the results table, fit Chinchilla's law when the grid allows,
draw the plots. Called by `scaling sweep` (scaling/cli.py) after the runner collected the table."""
from __future__ import annotations

import os
from typing import Callable

import pandas as pd

from scaling.display import print_table
from scaling.fileio import write_json_atomic

REPORT_COLUMNS = ["trial_id", "params_non_embedding", "tokens", "flops", "loss", "val_loss",
                  "wall_s", "status"]


def report_sweep(workdir: str, df: pd.DataFrame | None = None, *,
                 log: Callable[[str], None] = print) -> dict:
    """Report on the sweep in `workdir` (its results table, or `df`): prints through `log`, writes
    DIR/fit.json (when fitted) and DIR/plots/. Returns {"fit": dict | None, "plots": [paths],
    "results": path}."""
    from analysis.fits import chinchilla
    from analysis.load import load_results
    from analysis.plots import sweep as plots

    df = load_results(workdir) if df is None else df
    print_table(df, REPORT_COLUMNS, log=log)
    done = df[df["status"] == "done"]
    fit = None
    if len(done) >= 5 and done["params_non_embedding"].nunique() >= 2 \
            and done["tokens"].nunique() >= 2:
        fit = chinchilla.fit_parametric(done["params_non_embedding"].to_numpy(float),
                                        done["tokens"].to_numpy(float),
                                        done["val_loss"].to_numpy(float))
        write_json_atomic(os.path.join(workdir, "fit.json"), fit)
        log("Chinchilla fit L(N,D) = E + A/N^alpha + B/D^beta (N non-embedding, val loss): "
            + ", ".join(f"{k}={fit[k]:.4g}" for k in ("E", "A", "B", "alpha", "beta")))
    paths = plots.plot_sweep(df, os.path.join(workdir, "plots"), fit=fit)
    results = os.path.join(workdir, "results.parquet")
    log(f"results: {results}")
    for p in paths:
        log(f"plot: {p}")
    return {"fit": fit, "plots": [str(p) for p in paths], "results": results}
