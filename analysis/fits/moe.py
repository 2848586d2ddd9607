"""Clark et al. (2022) "Unified Scaling Laws for Routed Language Models", their eq. (1):

    log L = a log N + b log E + c log N log E + d

N the dense-equivalent (ACTIVE) parameter count, E the number of experts (a dense model is E = 1,
log E = 0). Ordinary least squares in log space (4 coefficients; 3 sizes x 3 expert counts leave
5 residual degrees of freedom), each coefficient with its 95% interval from the OLS covariance
and Student's t (the form is linear in its coefficients, so no bootstrap is needed). b < 0 means
experts help at every size; c > 0 means the benefit shrinks as N grows (Clark et al. found
both). A coefficient whose interval contains 0 gets a warning: its sign is not identified.
Reads results tables only (experiments/moe.py writes them).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.errors import AnalysisInputError

N_COLS = ("params_non_embedding_active", "params_non_embedding")  # first present wins


def moe_table(df: pd.DataFrame, loss_col: str = "val_loss") -> pd.DataFrame:
    """Finished rows -> columns N (active non-embedding), N_total, E (dense = 1), loss."""
    if "status" in df:
        df = df[df["status"] == "done"]
    n_col = next((c for c in N_COLS if c in df and df[c].notna().all()), None)
    missing = [c for c in (loss_col, "params_non_embedding") if c not in df] + \
        ([] if n_col else ["params_non_embedding_active"])
    if missing:
        raise AnalysisInputError(f"results lack column(s) {', '.join(missing)}; pass the sweep "
                                 f"directory of experiments/moe.py (scaling sweep ...)")
    e_col = next((c for c in ("moe_experts", "model.moe.experts") if c in df), None)
    experts = df[e_col].fillna(0).to_numpy(float) if e_col else np.zeros(len(df))
    out = pd.DataFrame({"N": df[n_col].to_numpy(float),
                        "N_total": df["params_non_embedding"].to_numpy(float),
                        "E": np.maximum(experts, 1.0), "loss": df[loss_col].to_numpy(float)})
    out = out[np.isfinite(out["loss"])]
    return out.groupby(["N", "E"], as_index=False).mean()  # seeds averaged


def fit_routed(N, E, L) -> dict:
    """Least-squares fit of log L = a log N + b log E + c log N log E + d."""
    N, E, L = (np.asarray(v, float) for v in (N, E, L))
    if len(L) < 5 or len(np.unique(N)) < 2 or len(np.unique(E)) < 2:
        raise AnalysisInputError(f"the routed fit needs >= 5 points with >= 2 sizes and >= 2 "
                                 f"expert counts, got {len(L)} points, {len(np.unique(N))} sizes, "
                                 f"{len(np.unique(E))} expert counts; run more of the sweep")
    lN, lE = np.log(N), np.log(E)
    X = np.column_stack([lN, lE, lN * lE, np.ones_like(lN)])
    coef, *_ = np.linalg.lstsq(X, np.log(L), rcond=None)
    resid = np.log(L) - X @ coef
    dof = len(L) - X.shape[1]
    out = {k: float(v) for k, v in zip("abcd", coef)}
    warnings = []
    if dof > 0:
        # OLS covariance s^2 (X'X)^-1 and a two-sided 95% t interval per coefficient
        cov = (resid @ resid / dof) * np.linalg.pinv(X.T @ X)
        half = stats.t.ppf(0.975, dof) * np.sqrt(np.clip(np.diag(cov), 0, None))
        for k, v, h in zip("abcd", coef, half):
            out[f"{k}_ci"] = [float(v - h), float(v + h)]
            if k != "d" and v - h < 0 < v + h:
                warnings.append(f"[wide-interval] moe coefficient {k} = {v:.3g} has 95% interval "
                                f"[{v - h:.3g}, {v + h:.3g}] containing 0: its sign is not "
                                f"identified by these {len(L)} points")
    else:
        warnings.append(f"[too-few-points] moe fit: {len(L)} points for 4 coefficients leave no "
                        f"residual degrees of freedom, so no intervals; add sizes or expert counts")
    return {**out, "rmse_log": float(np.sqrt(np.mean(resid ** 2))), "n_points": int(len(L)),
            "dof": int(dof), "warnings": warnings,
            "form": "log L = a log N + b log E + c log N log E + d (N active, dense E=1)"}


def experts_vs_dense(table: pd.DataFrame) -> pd.DataFrame:
    """Each routed row beside the dense row of nearest active size (the router adds ~1%, so
    active counts never match exactly): its loss and its difference from dense."""
    dense = table[table["E"] == 1]
    if dense.empty:
        return pd.DataFrame()
    rows = []
    for _, r in table[table["E"] > 1].iterrows():
        d = dense.iloc[int(np.argmin(np.abs(np.log(dense["N"].to_numpy() / r["N"]))))]
        rows.append({"N_active": r["N"], "experts": int(r["E"]), "loss": r["loss"],
                     "dense_N": d["N"], "dense_loss": d["loss"],
                     "minus_dense": r["loss"] - d["loss"]})
    return pd.DataFrame(rows)


def predict(fit: dict, N, E) -> np.ndarray:
    lN, lE = np.log(np.asarray(N, float)), np.log(np.asarray(E, float))
    return np.exp(fit["a"] * lN + fit["b"] * lE + fit["c"] * lN * lE + fit["d"])
