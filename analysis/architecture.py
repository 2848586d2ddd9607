"""Charts for the architecture axes of issue 17, from files only (never the trainer):

    python -m analysis.architecture attention SWEEP_DIR   # loss vs compute per model.attention
    python -m analysis.architecture context DIR           # DIR/ppl/*.json -> loss by position
    python -m analysis.architecture context TABLE.csv     # the same from a committed table

`attention`: the sweep's results.parquet (or .csv), one line per `model.attention`, val_loss
against training FLOPs (scaling/counting.py: each attention type's own term).
`context`: every `ppl_by_position` JSON (scaling/evals/positions.py) in DIR/ppl, one line per
file (its name is the label), loss per position bucket, the training length marked; or a CSV
with one row per (scheme, bucket) (analysis/data/cpu_study/context_ppl_by_position.csv). Rows with a
null loss (learned positions past their table) are left out and said so in the legend.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.load import completed, default_loss_col, load_results, plot_dir, require_columns
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


POSITION_CSV_COLS = ["scheme", "lo", "hi", "loss", "train_seq_len"]


def load_position_table(path: str | Path) -> dict[str, dict]:
    """The same {label: result} as :func:`load_position_files`, from a CSV table (one row per
    scheme and bucket; an empty loss is a bucket past a learned table)."""
    df = pd.read_csv(path)
    missing = [c for c in POSITION_CSV_COLS if c not in df]
    if missing:
        raise AnalysisInputError(f"{path} lacks column(s) {', '.join(missing)}; pass a table with "
                                 f"{', '.join(POSITION_CSV_COLS)} or a context study directory")
    out = {}
    for scheme, g in df.groupby("scheme", sort=False):
        rows = [{"lo": int(r.lo), "hi": int(r.hi), "loss": None if pd.isna(r.loss) else float(r.loss)}
                for r in g.itertuples()]
        out[str(scheme)] = {"rows": rows, "train_seq_len": int(g["train_seq_len"].iloc[0]),
                            "max_len": int(g["train_seq_len"].iloc[0])}
    return out


def load_positions(path: str | Path) -> dict[str, dict]:
    """A context study directory (its ppl/*.json) or a CSV table of the same numbers."""
    p = Path(path)
    return load_position_table(p) if p.suffix.lower() == ".csv" else load_position_files(p / "ppl")


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
    ap = argparse.ArgumentParser(prog="python -m analysis.architecture",
                                 description="attention: loss vs compute per attention type; "
                                             "context: loss by position")
    ap.add_argument("what", choices=("attention", "context"))
    ap.add_argument("path", help="sweep/study directory, or its results table (.csv/.parquet)")
    ap.add_argument("--out", help="plot directory (default: PATH/plots, or beside a table)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.what == "attention":
            fig, stem = plot_attention_sweep(load_results(args.path)), "attention_loss_vs_compute"
        else:
            fig, stem = plot_ppl_by_position(load_positions(args.path)), "ppl_by_position"
    except AnalysisInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f in save_figure(fig, plot_dir(args.path, args.out), stem):
        print(f"plot: {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
