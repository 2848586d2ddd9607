"""Access to the bundled reference data (``analysis/data/reference``; see its README.md)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["REFERENCE_DIR", "published_constants", "published_table", "epoch_chinchilla_data",
           "porian_isoflop_points", "porian_power_law_fits", "PF_DAY", "hoffmann_fit", "epoch_fit"]

REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "reference"
PF_DAY = 8.64e19  # FLOPs in one petaflop/s-day (Kaplan's compute unit)


@lru_cache(maxsize=1)
def _constants():
    return json.loads((REFERENCE_DIR / "published_constants.json").read_text())


def published_constants() -> dict:
    """The parsed ``published_constants.json`` (Kaplan 2020, Hoffmann 2022, Epoch 2024, refits)."""
    return json.loads(json.dumps(_constants()))  # deep copy, callers may mutate


def published_table() -> pd.DataFrame:
    """One row per published constant: ``paper, law, name, value, ci_lo, ci_hi``.

    Kaplan's compute constants are converted from PF-days to FLOPs (``C_c``), so they
    can be compared with fits on FLOP columns.
    """
    c = _constants()
    rows = []
    k = c["kaplan2020"]
    for law in ("L_N", "L_D", "L_ND"):
        for name, v in k[law].items():
            if isinstance(v, (int, float)) and name != "table":
                rows.append(("kaplan2020", law, name, float(v), np.nan, np.nan))
    rows.append(("kaplan2020", "L_Cmin", "alpha_C", k["L_Cmin"]["alpha_C_min"], np.nan, np.nan))
    rows.append(("kaplan2020", "L_Cmin", "C_c", k["L_Cmin"]["C_c_min_PF_days"] * PF_DAY, np.nan, np.nan))
    rows.append(("kaplan2020", "allocation", "a", 0.73, np.nan, np.nan))
    rows.append(("kaplan2020", "allocation", "b", 0.27, np.nan, np.nan))
    h = c["hoffmann2022_chinchilla"]["approach3_parametric"]
    for name in ("E", "A", "B", "alpha", "beta"):
        rows.append(("hoffmann2022", "approach3", name, h["unrounded_from_tex_source"][name], np.nan, np.nan))
    for appr, v in c["hoffmann2022_chinchilla"]["table2_exponents_with_10th_90th_percentiles"].items():
        if appr.startswith("approach"):
            for name in ("a", "b"):
                rows.append(("hoffmann2022", appr, name, v[name][0], v[name][1], v[name][2]))
    e = c["besiroglu2024_epoch_replication"]
    for name, (val, _se) in e["published_estimates_se"].items():
        lo, hi = e["notebook_bootstrap_95pct_ci"][name]
        rows.append(("besiroglu2024", "approach3", name, val, lo, hi))
    return pd.DataFrame(rows, columns=["paper", "law", "name", "value", "ci_lo", "ci_hi"])


def hoffmann_fit() -> dict:
    """Hoffmann et al.'s unrounded Approach-3 constants as a fit dict."""
    u = _constants()["hoffmann2022_chinchilla"]["approach3_parametric"]["unrounded_from_tex_source"]
    return {k: float(u[k]) for k in ("E", "A", "B", "alpha", "beta")}


def epoch_fit() -> dict:
    """Epoch's published Approach-3 estimates as a fit dict."""
    e = _constants()["besiroglu2024_epoch_replication"]["published_estimates_se"]
    return {k: float(v[0]) for k, v in e.items()}


def epoch_chinchilla_data(drop_highest: int = 5) -> pd.DataFrame:
    """Epoch's digitised Chinchilla points with columns ``N, C, D, loss`` (D = C/(6N)).

    ``drop_highest=5`` reproduces Epoch's default filter ``loss < sorted(loss)[-5]`` (240 rows).
    """
    df = pd.read_csv(REFERENCE_DIR / "epoch_chinchilla_replication" / "svg_extracted_data.csv")
    if drop_highest:
        df = df[df["loss"] < np.sort(df["loss"].to_numpy())[-drop_highest]]
    out = pd.DataFrame({"N": df["Model Size"].to_numpy(float), "C": df["Training FLOP"].to_numpy(float),
                        "loss": df["loss"].to_numpy(float)})
    out["D"] = out["C"] / (6 * out["N"])
    return out.reset_index(drop=True)


_PORIAN_KEYS = ["dataset", "hparams", "warmup", "decay", "param_count", "val"]


def porian_isoflop_points(**config) -> pd.DataFrame:
    """Porian et al. (2024) IsoFLOP points, filtered by config keys (e.g. ``dataset="rw"``)."""
    df = pd.read_csv(REFERENCE_DIR / "porian2024_resolving_discrepancies" / "isoflop_points.csv")
    for k, v in config.items():
        df = df[df[k] == v]
    return df.reset_index(drop=True)


def porian_power_law_fits() -> pd.DataFrame:
    """Porian et al.'s fitted exponents per config (``n_exponent`` = a, ``t_exponent`` = b)."""
    return pd.read_csv(REFERENCE_DIR / "porian2024_resolving_discrepancies" / "power_law_fits.csv")
