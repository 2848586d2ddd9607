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
