"""The compute convention, stated once: what N, D and C mean in every fit, plot and CLI path.

* **C** is the results table's ``flops`` column wherever it exists: the trainer's own count
  (scaling/counting.py), ``6 (N_non_embedding + d_model V) + 12 L T d`` FLOPs per token times
  tokens. Only a table without FLOPs falls back to ``C = 6 N D``, and then the fit says so
  (``c_convention``). At small sizes the two differ in slope, not only in constant
  (flops / (6 N_ne D) runs from ~2 at d32 to ~1.3 at d96), so they must never be mixed.
* **D** is the ``tokens`` column; a published table with FLOPs but no tokens (Epoch's
  Chinchilla data) gives ``D = C / (6 N)``, its authors' own convention.
* **N** is whichever parameter column the fit uses (``n_convention``): ``params_non_embedding``
  (Kaplan) or ``params_total`` (Hoffmann); `scaling fit chinchilla` reports both side by side.
* Turning a budget C into (N, D) needs FLOPs per token as a function of N. A fit carries it as
  ``fpt = {"coef": k, "exp": s}``, i.e. ``C = k N^s D``: fitted through the table's
  ``flops / tokens`` per size (``max_rel_err`` says how closely), or ``6 N`` (k=6, s=1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.load import fit_arrays, require_columns

__all__ = ["FLOPS_COL", "C_FLOPS", "C_6ND", "SIX_N", "N_CONVENTIONS", "n_convention", "fit_inputs",
           "fpt_law", "flops_per_token", "tokens_for"]

FLOPS_COL = "flops"
C_FLOPS = "flops column (trainer count: 6(N_ne + d*V) + 12*L*T*d per token)"
C_6ND = "6*N*D (the table has no flops column)"
SIX_N = {"coef": 6.0, "exp": 1.0, "max_rel_err": 0.0, "source": "6N"}
N_CONVENTIONS = {"params_non_embedding": "non-embedding parameters (Kaplan)",
                 "params_total": "all parameters incl. embeddings (Hoffmann)"}


def n_convention(n_col: str) -> str:
    """Human-readable name of the N column a fit used."""
    return f"{n_col}: {N_CONVENTIONS[n_col]}" if n_col in N_CONVENTIONS else n_col


def flops_per_token(fpt: dict | None, N):
    """FLOPs per token at size N under ``fpt`` (default 6N)."""
    fpt = fpt or SIX_N
    return fpt["coef"] * np.asarray(N, float) ** fpt["exp"]


def tokens_for(fpt: dict | None, N, C):
    """Tokens a budget C buys at size N: ``D = C / fpt(N)``."""
    return np.asarray(C, float) / flops_per_token(fpt, N)


def fpt_law(N, C, D) -> dict:
    """Power law ``C / D = k N^s`` through the median FLOPs per token of each distinct N."""
    N, C, D = (np.asarray(v, float) for v in (N, C, D))
    per = pd.Series(C / D).groupby(N).median()
    n, f = per.index.to_numpy(float), per.to_numpy(float)
    if len(n) >= 2:
        s, logk = np.polyfit(np.log(n), np.log(f), 1)
    else:  # one size: a 6N-like line through it
        s, logk = 1.0, float(np.log(f[0] / n[0]))
    k = float(np.exp(logk))
    err = float(np.max(np.abs(k * N ** s * D / C - 1)))
    return {"coef": k, "exp": float(s), "max_rel_err": err, "source": "flops/tokens per size"}


def fit_inputs(df: pd.DataFrame, *, n_col: str, loss_col: str, d_col: str | None = "tokens",
               c_col: str | None = None) -> dict:
    """N, D, C, L arrays of a results table under the one convention, with its description.

    ``c_col`` names the FLOP column (default ``flops`` when present). When the table lacks
    ``d_col`` but has FLOPs, D = C / (6N); when it lacks FLOPs, C = 6ND. Returns ``N, D, C, L``,
    ``n_convention``, ``c_convention``, ``d_convention``, ``fpt`` and ``notes`` (printed lines).
    """
    require_columns(df, [n_col, loss_col], what="results table")
    c_col = c_col or (FLOPS_COL if FLOPS_COL in df.columns else None)
    has_d = d_col is not None and d_col in df.columns
    if c_col is None and not has_d:
        raise AnalysisInputError(f"the table has neither {d_col!r} nor a FLOP column; "
                                 "pass --d-col or --c-col")
    cols = [n_col, loss_col] + ([d_col] if has_d else []) + ([c_col] if c_col else [])
    arrs = dict(zip(cols, fit_arrays(df, cols)))
    N, L = arrs[n_col], arrs[loss_col]
    notes = []
    if c_col:
        C = arrs[c_col]
        c_conv = C_FLOPS if c_col == FLOPS_COL else f"column {c_col!r}"
    else:
        C = 6.0 * N * arrs[d_col]
        c_conv = C_6ND
        notes.append("note: no FLOP column; C = 6*N*D (the trainer's flops are preferred)")
    if has_d:
        D, d_conv = arrs[d_col], f"column {d_col!r}"
        fpt = fpt_law(N, C, D) if c_col else dict(SIX_N)
    else:
        D, d_conv, fpt = C / (6.0 * N), "D = C/(6N) (no token column)", dict(SIX_N)
        notes.append(f"note: no {d_col!r} column; D = C/(6N)")
    return {"N": N, "D": D, "C": C, "L": L, "n_convention": n_convention(n_col),
            "c_convention": c_conv, "d_convention": d_conv, "fpt": fpt, "notes": notes}
