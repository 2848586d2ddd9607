"""Observational scaling (Ruan, Maddison, Hashimoto 2024) on the bundled ObsScaling data.

Standard benchmark scores of ~100 public base models are compressed by PCA into a few
"capability" components; within a model family PC1 is close to linear in log training FLOPs;
and a sigmoid of the components fitted on the smaller models predicts an "emergent" BIG-bench
task for the larger ones (Sec. 4.1 of the paper; its default split holds out every model above
8.4e22 FLOPs, Llama-2-7B's compute).

Choices, stated because the paper's code differs in details: PCA (numpy SVD of the centred,
unscaled score matrix) on the models that have all benchmarks by default; `impute=True` keeps
every model and fills its missing scores first by iterative low-rank (PCA) imputation, the
paper's preprocessing (its code's default: rank 1), so both model sets can be compared; component signs fixed so the loadings sum to a positive number
(deterministic output). The bundled files hold no published numbers
(analysis/data/reference/README.md); :data:`PUBLISHED` holds the one the paper states in its
text, with :data:`PUBLISHED_SOURCE` saying where; the others are figures only (None here).

    pca = capability_pca(obs_benchmarks())
    pca["explained"][:3], pc_vs_compute(pca["scores"])
    predict_emergent("word_unscrambling_2_exact_match", pca["scores"])
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.special import expit

from analysis.errors import AnalysisInputError
from analysis.reference import REFERENCE_DIR

__all__ = ["OBS_DIR", "BENCHMARKS", "EMERGENT_TASKS", "CUTOFF_FLOPS", "PUBLISHED", "PUBLISHED_SOURCE",
           "obs_benchmarks", "impute_low_rank",
           "capability_pca", "pc_vs_compute", "predict_emergent"]

OBS_DIR = REFERENCE_DIR / "ruan2024_observational_scaling"
#: the eight benchmarks the paper extracts its PCs from (its `metric_list`)
BENCHMARKS = ["MMLU", "ARC-C", "HellaSwag", "Winograd", "TruthfulQA", "GSM8K", "XWinograd", "HumanEval"]
EMERGENT_TASKS = ["word_unscrambling_2_exact_match", "arithmetic_2dm_2_acc", "arithmetic_3ds_2_acc",
                  "ipa_transliterate_2_exact_match", "parsinlu_qa_2_acc", "arithmetic_3da_2_acc",
                  "arithmetic_2da_2_acc"]
#: the paper's default train/test split: models above 84e21 FLOPs (Llama-2-7B) are held out
CUTOFF_FLOPS = 84e21
#: published values to compare with. Only the PC1-3 share is stated as a number in the paper's
#: text; PC1 alone and the held-out emergent predictions are shown as figures (None: not read
#: off a chart, so not compared).
PUBLISHED: dict[str, float | None] = {"pc1_explained": None, "pc1to3_explained": 0.97,
                                      "emergent_heldout_mae": None}
PUBLISHED_SOURCE = {
    "pc1to3_explained": "Ruan et al. 2024 (arXiv:2405.10938) Sec. 3.2: the top 3 PCs explain ~97% "
                        "of the variance of the benchmark matrix (Fig. 2a); quoted, not re-checked "
                        "against the PDF (no copy of the paper is shipped)",
    "pc1_explained": "Fig. 2a (bar chart; no number in the text)",
    "emergent_heldout_mae": "Fig. 4 (curves; no error table in the main text)",
}


def obs_benchmarks(*, sub_10b: bool = False, impute: bool = False,
                   impute_rank: int = 1) -> pd.DataFrame:
    """Base models: Model, family, params (B), flops, the :data:`BENCHMARKS` scores, and
    ``n_imputed`` (scores filled in). Default: only the models with every benchmark;
    ``impute=True``: every model, missing scores from :func:`impute_low_rank`."""
    name = "base_llm_benchmark_eval_sub_10b.csv" if sub_10b else "base_llm_benchmark_eval.csv"
    d = pd.read_csv(OBS_DIR / name)
    d["n_imputed"] = d[BENCHMARKS].isna().sum(axis=1)
    if impute:
        d[BENCHMARKS] = impute_low_rank(d[BENCHMARKS].to_numpy(float), impute_rank)
    d = d.dropna(subset=BENCHMARKS).reset_index(drop=True)
    d["flops"] = d["FLOPs (1E21)"] * 1e21
    return d.rename(columns={"Model Family": "family", "Model Size (B)": "params_B"})[
        ["Model", "family", "params_B", "flops"] + BENCHMARKS + ["n_imputed"]]


def impute_low_rank(X: np.ndarray, rank: int = 1, iters: int = 500, tol: float = 1e-10) -> np.ndarray:
    """``X`` (models x metrics, NaN = missing) with its missing entries filled by iterative
    low-rank PCA imputation: start from column means, then repeatedly refit a rank-``rank``
    SVD of the centred matrix and replace the missing entries by its reconstruction (observed
    entries are never changed). A column with no observed value cannot be imputed."""
    X = np.asarray(X, float)
    miss = ~np.isfinite(X)
    if miss.all(axis=0).any():
        raise AnalysisInputError("low-rank imputation needs at least one observed value per metric")
    if not 1 <= rank < X.shape[1]:
        raise AnalysisInputError(f"imputation rank must be in [1, {X.shape[1] - 1}], got {rank}")
    filled = np.where(miss, np.nanmean(X, axis=0), X)
    for _ in range(iters):
        mean = filled.mean(axis=0)
        u, s, vt = np.linalg.svd(filled - mean, full_matrices=False)
        recon = (u[:, :rank] * s[:rank]) @ vt[:rank] + mean
        change = np.abs(recon[miss] - filled[miss]).max() if miss.any() else 0.0
        filled[miss] = recon[miss]
        if change < tol:
            break
    return filled


def capability_pca(df: pd.DataFrame, metrics=BENCHMARKS, n_components: int = 3) -> dict:
    """PCA of the models x ``metrics`` score matrix.

    Returns ``explained`` (variance fraction of every component, descending), ``loadings``
    (DataFrame: component x metric), ``scores`` (``df`` with PC1..PC{n} columns added) and
    ``mean`` (the column means subtracted).
    """
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise AnalysisInputError(f"benchmark matrix lacks columns {missing}")
    X = df[list(metrics)].to_numpy(float)
    if not np.all(np.isfinite(X)) or len(X) < len(metrics):
        raise AnalysisInputError("PCA needs a complete matrix with at least as many models as metrics")
    mean = X.mean(axis=0)
    _u, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    signs = np.where(vt.sum(axis=1) < 0, -1.0, 1.0)  # SVD signs are arbitrary: fix them
    vt = vt * signs[:, None]
    explained = s ** 2 / np.sum(s ** 2)
    names = [f"PC{i + 1}" for i in range(len(s))]
    scores = df.copy()
    proj = (X - mean) @ vt[:n_components].T
    for i in range(n_components):
        scores[names[i]] = proj[:, i]
    return {"explained": explained, "loadings": pd.DataFrame(vt, index=names, columns=list(metrics)),
            "scores": scores, "mean": pd.Series(mean, index=list(metrics))}


def pc_vs_compute(scores: pd.DataFrame, pc: str = "PC1", min_models: int = 3) -> pd.DataFrame:
    """Per family with >= ``min_models`` known-FLOP models: ``pc = slope * log10(C) + intercept``.

    Columns: family, n, slope, intercept, r2.
    """
    rows = []
    d = scores[np.isfinite(scores["flops"]) & (scores["flops"] > 0)]
    for fam, g in d.groupby("family"):
        if len(g) < min_models or g["flops"].nunique() < 2:
            continue
        x, y = np.log10(g["flops"].to_numpy(float)), g[pc].to_numpy(float)
        slope, intercept = np.polyfit(x, y, 1)
        resid = y - (slope * x + intercept)
        r2 = 1 - resid.var() / y.var() if y.var() > 0 else np.nan
        rows.append({"family": fam, "n": len(g), "slope": slope, "intercept": intercept, "r2": r2})
    return pd.DataFrame(rows).sort_values("n", ascending=False).reset_index(drop=True)


def _sigmoid_fit(X, y):
    """``y = h * sigmoid(X w + b)`` (the paper's parametric sigmoid), least squares."""
    def model(p, X_):
        return p[0] * expit(X_ @ p[2:] + p[1])
    x0 = np.r_[max(y.max(), 1e-3), 0.0, np.zeros(X.shape[1])]
    lo = np.r_[0.0, -np.inf, np.full(X.shape[1], -np.inf)]
    hi = np.r_[1.0 if y.max() <= 1 else np.inf, np.inf, np.full(X.shape[1], np.inf)]
    r = least_squares(lambda p: model(p, X) - y, np.clip(x0, lo, np.minimum(hi, 1e9)),
                      bounds=(lo, hi))
    return lambda X_: model(r.x, X_)


def predict_emergent(task: str, scores: pd.DataFrame, *, n_pcs: int = 3,
                     cutoff: float = CUTOFF_FLOPS) -> dict:
    """Fit ``task`` on models with FLOPs <= ``cutoff`` from PC1..PC``n_pcs`` (and, as the baseline
    the paper compares with, from log10 FLOPs alone); predict the models above the cutoff.

    Returns n_train, n_test, ``mae_pcs``, ``mae_flops`` and ``frame`` (Model, flops, observed,
    pred_pcs, pred_flops, split).
    """
    e = pd.read_csv(OBS_DIR / "base_llm_emergent_capability_eval.csv")
    if task not in e.columns:
        raise AnalysisInputError(f"unknown emergent task {task!r}; use one of {', '.join(EMERGENT_TASKS)}")
    d = scores.merge(e[["Model", task]], on="Model").dropna(subset=[task, "flops"])
    d = d[d["flops"] > 0]
    train, test = d[d["flops"] <= cutoff], d[d["flops"] > cutoff]
    if len(train) < n_pcs + 3 or test.empty:
        raise AnalysisInputError(f"cutoff {cutoff:.3g} leaves {len(train)} train / {len(test)} test models")
    pcs = [f"PC{i + 1}" for i in range(n_pcs)]
    f_pc = _sigmoid_fit(train[pcs].to_numpy(float), train[task].to_numpy(float))
    logc = lambda g: np.log10(g[["flops"]].to_numpy(float))  # noqa: E731
    f_c = _sigmoid_fit(logc(train), train[task].to_numpy(float))
    out = d[["Model", "family", "flops"]].copy()
    out["observed"] = d[task].to_numpy(float)
    out["pred_pcs"] = f_pc(d[pcs].to_numpy(float))
    out["pred_flops"] = f_c(logc(d))
    out["split"] = np.where(d["flops"] > cutoff, "test", "train")
    t = out[out["split"] == "test"]
    return {"task": task, "n_train": len(train), "n_test": len(test), "cutoff": cutoff,
            "mae_pcs": float(np.mean(np.abs(t["pred_pcs"] - t["observed"]))),
            "mae_flops": float(np.mean(np.abs(t["pred_flops"] - t["observed"]))),
            "frame": out.reset_index(drop=True)}
