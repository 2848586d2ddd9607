"""analysis/fits/moe.py: Clark et al.'s routed form recovers known coefficients; `scaling fit moe`
reads a results file and draws the plot."""
import json

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisInputError
from analysis.fits.moe import fit_routed, moe_table, predict
from conftest import run_cli

TRUE = {"a": -0.08, "b": -0.03, "c": 0.002, "d": 1.6}


def _results(noise=0.0):
    rows = []
    rng = np.random.default_rng(0)
    for n in (3e3, 1.2e4, 2.5e4):
        for e in (0, 4, 8):
            loss = float(predict(TRUE, n, max(e, 1))) * np.exp(noise * rng.normal())
            rows.append({"trial_id": f"n{n}-e{e}", "status": "done", "val_loss": loss,
                         "params_non_embedding_active": n + 16 * e,
                         "params_non_embedding": n * (1 + 0.6 * max(e - 1, 0)),
                         "moe_experts": e})
    return pd.DataFrame(rows)


def test_fit_recovers_coefficients():
    t = moe_table(_results())
    assert sorted(t["E"].unique()) == [1, 4, 8]
    # exact data from the form (N shifted by the router) : the fit is close to the truth
    fit = fit_routed(t["N"], t["E"], t["loss"])
    for k, v in TRUE.items():
        assert fit[k] == pytest.approx(v, abs=0.01), k
    with pytest.raises(AnalysisInputError, match="needs >= 5 points"):
        fit_routed([1e3, 2e3], [1, 4], [2.0, 1.9])


def test_intervals_cover_the_truth_at_the_nominal_rate():
    # 300 noisy replicates of the 9-point design: each coefficient's 95% t interval should
    # contain the true value ~95% of the time (OLS with Gaussian noise is exact)
    rng = np.random.default_rng(1)
    t = moe_table(_results())
    hits = {k: 0 for k in "abc"}
    for _ in range(300):
        loss = t["loss"].to_numpy() * np.exp(0.01 * rng.normal(size=len(t)))
        fit = fit_routed(t["N"], t["E"], loss)
        for k in hits:
            lo, hi = fit[f"{k}_ci"]
            hits[k] += lo <= TRUE[k] <= hi
    for k, h in hits.items():
        assert 0.9 <= h / 300 <= 0.99, (k, h)


def test_sign_not_identified_is_warned():
    t = moe_table(_results(noise=0.05))  # noise far larger than c's effect
    fit = fit_routed(t["N"], t["E"], t["loss"])
    assert fit["dof"] == 5
    assert any("coefficient c" in w and "containing 0" in w for w in fit["warnings"])


def test_experts_vs_dense_pairs_nearest_dense_size():
    from analysis.fits.moe import experts_vs_dense
    v = experts_vs_dense(moe_table(_results()))
    assert len(v) == 6 and v["dense_N"].nunique() == 3
    # b < 0 in TRUE: every routed row beats its dense twin
    assert (v["minus_dense"] < 0).all()


def test_cli_fit_moe_writes_plot(tmp_path):
    path = tmp_path / "results.csv"
    _results(noise=0.001).to_csv(path, index=False)
    r = run_cli("fit", "moe", str(path), "--json", "--plot", str(tmp_path / "plots"))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["b"] < 0 and len(res["points"]) == 9
    assert (tmp_path / "plots" / "moe.png").stat().st_size > 1000
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"val_loss": [1.0]}).to_csv(bad, index=False)
    r = run_cli("fit", "moe", str(bad))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
