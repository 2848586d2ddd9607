"""μP from results files: the coordinate check and lr transfer across widths, SP vs μP.

    python -m analysis.mup coord FILE [--out DIR]        # FILE: `scaling mup-check` JSON
    python -m analysis.mup transfer SWEEP_DIR... [--out DIR]   # experiments/mup_transfer.py

Coordinate check (Yang et al. 2022): the RMS of each layer's activations vs width, per
parametrization; `coord_growth` says by how much each layer's RMS changes from the narrowest to
the widest model. lr transfer: loss vs lr per width with each width's optimum (the parabola
vertex of analysis/lr_rule.py), and the spread max/min of the optimal lr across widths per
parametrization. Reads only the files; never imports the trainer.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.load import completed, load_results, plot_dir
from analysis.lr_rule import optimum_per_size

PARAM_COL, WIDTH_COL, LR_COL = "model.parametrization", "model.d_model", "train.lr"
LABELS = {"sp": "SP", "mup": "μP"}


# ---------------------------------------------------------------------------- coordinate check

def load_coord_check(path) -> pd.DataFrame:
    """The rows (parametrization, width, step, layer, rms) of a `scaling mup-check` file."""
    try:
        with open(path) as f:
            rows = json.load(f)["rows"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AnalysisInputError(f"cannot read a coordinate check from {path} ({type(e).__name__});"
                                 f" run `scaling mup-check --out {path}`") from e
    df = pd.DataFrame(rows)
    if df.empty or not {"parametrization", "width", "step", "layer", "rms"} <= set(df.columns):
        raise AnalysisInputError(f"{path} holds no coordinate-check rows; rerun `scaling mup-check`")
    return df


def _layer_key(layer: str) -> tuple[int, int]:
    """embed, block0, block1, ..., logits: the order of the forward pass."""
    if layer.startswith("block") and layer[5:].isdigit():
        return 1, int(layer[5:])
    return (0, 0) if layer == "embed" else (2, 0)


def coord_growth(df: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """Per parametrization and layer at `step` (default: the last): RMS at the narrowest and
    widest width, their ratio, and the spread max/min over all widths."""
    step = int(df["step"].max()) if step is None else step
    rows = []
    at = df[df["step"] == step]
    for p, layer in sorted({(p, lay) for p, lay in zip(at["parametrization"], at["layer"])},
                           key=lambda k: (k[0] != "sp", _layer_key(k[1]))):
        g = at[(at["parametrization"] == p) & (at["layer"] == layer)]
        g = g.sort_values("width")
        r = g["rms"].to_numpy(float)
        rows.append({"parametrization": p, "layer": layer, "width_lo": int(g["width"].iloc[0]),
                     "width_hi": int(g["width"].iloc[-1]), "rms_lo": r[0], "rms_hi": r[-1],
                     "ratio": r[-1] / r[0], "spread": r.max() / r.min()})
    return pd.DataFrame(rows)


def plot_coord_check(df: pd.DataFrame, outdir) -> list[str]:
    """RMS vs width per layer, SP | μP side by side: after the last step (solid), init (dotted)."""
    from analysis.plots.style import paper_style, plt, save_figure
    paper_style()
    params = [p for p in ("sp", "mup") if p in set(df["parametrization"])]
    last = int(df["step"].max())
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.4), sharey=True,
                             squeeze=False)
    layers = sorted(set(df["layer"]), key=_layer_key)
    colors = plt.cm.viridis(np.linspace(0.05, 0.85, len(layers)))
    for ax, p in zip(axes[0], params):
        for color, layer in zip(colors, layers):
            for step, style in ((last, "o-"), (0, ":")):
                g = df[(df["parametrization"] == p) & (df["layer"] == layer)
                       & (df["step"] == step)].sort_values("width")
                ax.plot(g["width"], g["rms"], style, color=color, ms=3,
                        label=layer if step == last else None)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width (d_model)")
        ax.set_title(f"{LABELS.get(p, p)}: after {last} steps (dotted: init)")
    axes[0][0].set_ylabel("activation RMS")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, outdir, "mup_coord_check")


# ---------------------------------------------------------------------------- lr transfer

def transfer_optima(df: pd.DataFrame, loss_col: str = "val_loss") -> pd.DataFrame:
    """Per parametrization and width: the optimal lr (lr_rule's parabola vertex), its loss and
    whether it sits at the grid's edge; `spread` = max/min optimal lr of that parametrization."""
    for col in (PARAM_COL, WIDTH_COL, LR_COL):
        if col not in df.columns:
            raise AnalysisInputError(f"the results table has no {col!r} column; pass sweeps of "
                                     f"experiments/mup_transfer.py")
    out = []
    for p, g in df.groupby(PARAM_COL):
        opt = optimum_per_size(g, n_col=WIDTH_COL, lr_col=LR_COL, loss_col=loss_col)
        opt = opt.rename(columns={"N": "width"}).assign(parametrization=p)
        opt["spread"] = opt["lr_opt"].max() / opt["lr_opt"].min()
        out.append(opt)
    return pd.concat(out, ignore_index=True)


def plot_transfer(df: pd.DataFrame, opt: pd.DataFrame, outdir, loss_col: str = "val_loss"
                  ) -> list[str]:
    """Loss vs lr per width with each optimum starred; one panel per parametrization."""
    from analysis.plots.style import paper_style, plt, save_figure
    paper_style()
    params = [p for p in ("sp", "mup") if p in set(opt["parametrization"])]
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.4), sharey=True,
                             squeeze=False)
    for ax, p in zip(axes[0], params):
        o_p = opt[opt["parametrization"] == p]
        colors = plt.cm.viridis(np.linspace(0.1, 0.85, len(o_p)))
        for color, (_, o) in zip(colors, o_p.iterrows()):
            g = df[(df[PARAM_COL] == p) & (df[WIDTH_COL] == o["width"])].sort_values(LR_COL)
            ax.plot(g[LR_COL], g[loss_col], "o-", color=color, ms=3, label=f"d={o['width']:g}")
            ax.plot([o["lr_opt"]], [o["loss_opt"]], "*", ms=12, color=color, mec="k")
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate")
        ax.set_title(f"{LABELS.get(p, p)}: optimal lr spread {o_p['spread'].iloc[0]:.2g}x")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(loss_col)
    fig.tight_layout()
    return save_figure(fig, outdir, "mup_transfer")


# ---------------------------------------------------------------------------- command line

def _print(df: pd.DataFrame) -> None:
    print(df.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.mup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("coord", "transfer"))
    ap.add_argument("paths", nargs="+", help="coord: the mup-check JSON; transfer: sweep dirs")
    ap.add_argument("--loss-col", default="val_loss")
    ap.add_argument("--out", default=None, help="plot directory (default: beside the input)")
    args = ap.parse_args(argv)
    first = Path(args.paths[0])
    out = str(plot_dir(first, args.out))
    try:
        if args.what == "coord":
            df = load_coord_check(first)
            _print(coord_growth(df))
            paths = plot_coord_check(df, out)
        else:
            df = pd.concat([completed(load_results(p)) for p in args.paths], ignore_index=True)
            opt = transfer_optima(df, args.loss_col)
            _print(opt)
            paths = plot_transfer(df, opt, out, args.loss_col)
    except AnalysisInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"plot: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
