"""Vocabulary sweeps: validation bits per byte vs vocabulary size, one line per model size.

In the spirit of Tao et al. 2024 ("Scaling Laws with Vocabulary"): losses of different
tokenizers are compared in bits per UTF-8 byte of text (``val_bpb``), never in nats per token,
and the best vocabulary is read off per model size. Drawn by ``scaling plot DIR`` (through
analysis/report.py) when the results table has a ``data.tokenizer`` axis and a ``val_bpb``
column; reads the table only.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.load import completed, require_columns
from analysis.plots.style import colors, paper_style, plt, save_figure, si_label

TOKENIZER_COL, BPB_COL = "data.tokenizer", "val_bpb"
BYTE_VOCAB = 257   # 256 bytes + end of document, as the trainer's byte tokenizer


def vocab_of(spec: str, vocab_size: float | None = None) -> float:
    """The vocabulary size a `data.tokenizer` value stands for: byte 257, bpe:V V; hf:/spm:
    files have no size in their name, so the table's `vocab_size` (if any) or NaN."""
    if spec == "byte":
        return float(BYTE_VOCAB)
    m = re.fullmatch(r"bpe:(\d+)", str(spec))
    if m:
        return float(m.group(1))
    return float(vocab_size) if vocab_size is not None and np.isfinite(vocab_size) else np.nan


def has_vocab_axis(df: pd.DataFrame) -> bool:
    """Whether a table is a vocabulary sweep: a tokenizer axis with > 1 value and val_bpb."""
    return (TOKENIZER_COL in df.columns and BPB_COL in df.columns
            and df[TOKENIZER_COL].nunique() > 1 and df[BPB_COL].notna().any())


def vocab_table(df: pd.DataFrame, n_col: str = "params_non_embedding") -> pd.DataFrame:
    """Finished rows with a finite val_bpb: n_col, data.tokenizer, vocab, val_bpb (seeds
    averaged), sorted by size then vocabulary."""
    df = completed(df)
    require_columns(df, [n_col, TOKENIZER_COL, BPB_COL], what="results table")
    sizes = df["vocab_size"] if "vocab_size" in df.columns else pd.Series(np.nan, df.index)
    out = df.assign(vocab=[vocab_of(s, v) for s, v in zip(df[TOKENIZER_COL], sizes)])
    out = out[np.isfinite(out["vocab"]) & np.isfinite(out[BPB_COL].astype(float))]
    if out.empty:
        raise AnalysisInputError(f"no finished trials with a finite {BPB_COL!r} and a known "
                                 f"vocabulary size; run the sweep first")
    out = (out.groupby([n_col, TOKENIZER_COL, "vocab"], as_index=False)[BPB_COL].mean()
           .sort_values([n_col, "vocab"]))
    return out.reset_index(drop=True)


def best_vocab(table: pd.DataFrame, n_col: str = "params_non_embedding") -> pd.DataFrame:
    """Per model size, the tokenizer with the lowest val_bpb (a row of `vocab_table` each)."""
    return table.loc[table.groupby(n_col)[BPB_COL].idxmin()].reset_index(drop=True)


def plot_vocab(df: pd.DataFrame, outdir: str | os.PathLike,
               n_col: str = "params_non_embedding") -> list[str]:
    """``bpb_vs_vocab``: val_bpb vs vocabulary size (log2 axis, labelled by tokenizer), one line
    per model size, the best vocabulary of each size starred. Returns the written paths."""
    table = vocab_table(df, n_col)
    best = best_vocab(table, n_col)
    sizes = np.sort(table[n_col].unique())
    with paper_style():
        fig, ax = plt.subplots(figsize=(3.5, 2.6))
        for c, n in zip(colors(len(sizes)), sizes):
            g = table[table[n_col] == n]
            b = best[best[n_col] == n].iloc[0]
            ax.plot(g["vocab"], g[BPB_COL], "o-", color=c,
                    label=f"N={si_label(n)} (best {b[TOKENIZER_COL]})")
            ax.plot([b["vocab"]], [b[BPB_COL]], "*", color=c, ms=10, mec="k", mew=0.5)
        ticks = table.drop_duplicates("vocab")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks["vocab"], ticks[TOKENIZER_COL], rotation=30, ha="right")
        ax.minorticks_off()
        ax.set(xlabel="tokenizer (vocabulary size, log scale)",
               ylabel="validation bits per byte", title="Bits per byte vs vocabulary")
        ax.legend(fontsize="small")
        return save_figure(fig, outdir, "bpb_vs_vocab")
