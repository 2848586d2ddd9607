"""Charts for the architecture axes of issue 17, from files only (never the trainer):

    python -m analysis.architecture attention SWEEP_DIR   # loss vs compute per model.attention
    python -m analysis.architecture context DIR           # DIR/ppl/*.json -> loss by position

`attention`: the sweep's results.parquet (or .csv), one line per `model.attention`, val_loss
against training FLOPs (scaling/counting.py: each attention type's own term).
`context`: every `ppl_by_position` JSON (scaling/evals/positions.py) in DIR/ppl, one line per
file (its name is the label), loss per position bucket, the training length marked. Rows with a
null loss (learned positions past their table) are left out and said so in the legend.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.load import completed, default_loss_col, load_results, require_columns
from analysis.plots.style import colors, paper_style, plt, save_figure, si_label


def load_position_files(folder: str | Path) -> dict[str, dict]:
    """{label (file stem): ppl_by_position result} for every *.json in `folder`, sorted."""
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise AnalysisInputError(
            f"no ppl_by_position JSON files in {folder}; run `scaling eval --workdir RUN "
            f"--positions LEN --out {folder}/NAME.json`")
    out = {}
    for f in files:
        data = json.loads(f.read_text())
        if "rows" not in data:
            raise AnalysisInputError(f"{f} is not a ppl_by_position result (no 'rows')")
        out[f.stem] = data
    return out


def plot_ppl_by_position(results: dict[str, dict]):
    """Loss per position bucket (bucket midpoints), one line per result; returns the figure."""
    with paper_style():
        fig, ax = plt.subplots(figsize=(6, 4))
        for (label, r), c in zip(results.items(), colors(len(results))):
            rows = [x for x in r["rows"] if x["loss"] is not None]
            mid = [(x["lo"] + x["hi"]) / 2 for x in rows]
            cut = len(rows) < len(r["rows"])
            ax.plot(mid, [x["loss"] for x in rows], "o-", color=c,
                    label=label + (f" (stops at {r['max_len']})" if cut else ""))
        T = next(iter(results.values()))["train_seq_len"]
        ax.axvline(T, color="0.4", ls="--", lw=1)
        ax.text(T, ax.get_ylim()[1], " train length", va="top", fontsize=8, color="0.3")
        ax.set(xlabel="position in the sequence (bucket midpoint)",
               ylabel="validation loss (nats/token)", title="loss by position")
        ax.legend(fontsize=8)
    return fig


def plot_attention_sweep(df: pd.DataFrame, loss_col: str | None = None):
    """Loss against training FLOPs, one line per `model.attention`; returns the figure."""
    df = completed(df)
    require_columns(df, ["model.attention", "flops"], what="attention sweep results")
    loss_col = loss_col or default_loss_col(df)
    kinds = sorted(df["model.attention"].unique())
    with paper_style():
        fig, ax = plt.subplots(figsize=(6, 4))
        for kind, c in zip(kinds, colors(len(kinds))):
            d = df[df["model.attention"] == kind].sort_values("flops")
            ax.plot(d["flops"], d[loss_col], "o-", color=c, label=kind)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: si_label(v)))
        ax.set(xlabel="training FLOPs (scaling/counting.py)", ylabel=loss_col,
               title="loss vs compute by attention type")
        ax.legend(fontsize=8)
    return fig


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("attention", "context"):
        print("usage: python -m analysis.architecture attention|context DIR", file=sys.stderr)
        return 2
    what, folder = argv
    try:
        if what == "attention":
            fig, stem = plot_attention_sweep(load_results(folder)), "attention_loss_vs_compute"
        else:
            fig, stem = plot_ppl_by_position(load_position_files(Path(folder) / "ppl")), \
                "ppl_by_position"
    except AnalysisInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in save_figure(fig, Path(folder) / "plots", stem):
        print(f"plot: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
