"""Tests for the analysis core: loaders, Approach-3 fit, frontier, plots, CLI."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.fits.chinchilla import compute_optimal, fit_parametric, hoffmann_grid, predict_loss
from analysis.cli import main as cli_main
from analysis.errors import AnalysisInputError
from analysis.plots.sweep import plot_sweep
from analysis.load import load_curves, load_results
from analysis.synthetic import make_synthetic_sweep

REF = Path(analysis.__file__).parent / "data" / "reference"
EPOCH_CSV = REF / "epoch_chinchilla_replication" / "svg_extracted_data.csv"
PUBLISHED = json.loads((REF / "published_constants.json").read_text())
TRUE = dict(E=1.7, A=400.0, B=410.0, alpha=0.34, beta=0.28)


def _synthetic_points(seed=0, n=80, noise=0.01):
    rng = np.random.default_rng(seed)
    N = 10 ** rng.uniform(7, 10, n)
    D = 10 ** rng.uniform(9, 12, n)
    L = predict_loss(TRUE, N, D) * np.exp(rng.normal(0, noise, n))
    return N, D, L


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    return make_synthetic_sweep(tmp_path_factory.mktemp("sweep"))


# ------------------------------------------------------------------ Approach 3


def test_grid_is_hoffmanns_4500_starts():
    g = hoffmann_grid()
    assert g.shape == (4500, 5)
    assert sorted(set(g[:, 2])) == [-1, -0.5, 0, 0.5, 1]


def test_fit_exact_on_noiseless_data():
    # no noise: the optimiser itself must land on the truth
    N, D, L = _synthetic_points(noise=0.0)
    f = fit_parametric(N, D, L)
    for k, v in TRUE.items():
        assert f[k] == pytest.approx(v, rel=2e-3), k


def test_fit_recovers_parameters_from_noisy_data():
    N, D, L = _synthetic_points(seed=0, noise=0.01)
    f = fit_parametric(N, D, L, bootstrap=100, seed=1)
    # 1) optimiser check: the fit is at least as good as the truth on the objective
    truth_obj = fit_parametric(N, D, L, grid=np.array([[np.log(400), np.log(410), np.log(1.7), 0.34, 0.28]]))
    assert f["loss"] <= truth_obj["loss"] + 1e-12
    # 2) statistical check. Tolerances = ~2x the worst error over 8 noise seeds with 80 points
    # and 1% noise (E 0.054, alpha 0.013, beta 0.026, a 0.028, A 21%, B 66%): B/D^beta is
    # weakly identified because E and B trade off over 3 decades of D.
    assert abs(f["E"] - 1.7) < 0.1
    assert abs(f["alpha"] - 0.34) < 0.03
    assert abs(f["beta"] - 0.28) < 0.05
    assert abs(f["a"] - 0.28 / 0.62) < 0.05
    assert abs(np.log(f["A"] / 400)) < np.log(1.5)
    assert abs(np.log(f["B"] / 410)) < np.log(2.0)
    # CIs are reported and bracket the point estimate
    for k in ("E", "A", "B", "alpha", "beta", "a", "b", "G"):
        lo, hi = f["ci"][k]
        assert lo <= f[k] <= hi, k
    assert f["n_points"] == 80


def test_compute_optimal_from_hoffmann_unrounded_gives_40B_at_gopher_budget():
    c = PUBLISHED["hoffmann2022_chinchilla"]["approach3_parametric"]["unrounded_from_tex_source"]
    fit = {k: c[k] for k in ("E", "A", "B", "alpha", "beta")}
    N_opt, D_opt = compute_optimal(fit, 5.76e23)
    assert N_opt == pytest.approx(40.4e9, rel=0.01)  # paper: ~40B
    assert D_opt == pytest.approx(2.38e12, rel=0.01)
    assert 6 * N_opt * D_opt == pytest.approx(5.76e23, rel=1e-9)  # on the budget


@pytest.mark.slow
def test_epoch_refit_acceptance_via_cli(capsys):
    rc = cli_main(["fit", "chinchilla", str(EPOCH_CSV), "--n-col", "Model Size", "--c-col", "Training FLOP",
                   "--loss-col", "loss", "--drop-highest", "5", "--bootstrap", "300", "--json"])
    assert rc == 0
    out = capsys.readouterr().out
    res = json.loads(out)  # exactly one JSON object, nothing else
    assert res["n_points"] == 240
    assert abs(res["E"] - 1.8172) < 0.005
    assert abs(res["alpha"] - 0.3473) < 0.005
    assert abs(res["beta"] - 0.3672) < 0.005
    assert res["A"] == pytest.approx(477.8, rel=0.03)
    assert res["B"] == pytest.approx(2143, rel=0.06)
    assert res["loss"] == pytest.approx(0.001018274, rel=1e-5)  # scipy 4,500-start refit objective
    # bootstrap CIs overlap Epoch's published 95% bootstrap CIs
    epoch_ci = PUBLISHED["besiroglu2024_epoch_replication"]["notebook_bootstrap_95pct_ci"]
    for k, (lo, hi) in epoch_ci.items():
        mlo, mhi = res["ci"][k]
        assert mlo < hi and lo < mhi, k
        # and are close to them (same data, same resampling scheme). B's upper end is the 97.5th
        # percentile of a heavy right tail (B spans 1e3-6e3): with 300 replicates that percentile
        # itself moves by ~20% between resampling schemes (issue 13 restarts each replicate from
        # the start grid), so B gets 20%; every other bound keeps 15%.
        tol = 0.2 if k == "B" else 0.15
        assert mlo == pytest.approx(lo, rel=tol) and mhi == pytest.approx(hi, rel=tol), k


# ------------------------------------------------------------------ errors



def test_cli_maps_input_errors_to_exit_2(sweep_dir, capsys):
    assert cli_main(["fit", "chinchilla", str(sweep_dir), "--n-col", "nope", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "params_total" in err
    assert cli_main(["fit", "chinchilla", str(sweep_dir / "missing.csv")]) == 2


def test_nan_and_too_few_points_raise():
    N, D, L = _synthetic_points(n=20)
    L[3] = np.nan
    with pytest.raises(AnalysisInputError, match="NaN"):
        fit_parametric(N, D, L)
    with pytest.raises(AnalysisInputError, match="at least"):
        fit_parametric(N[:4], D[:4], np.ones(4))
    with pytest.raises(AnalysisInputError, match="non-positive"):
        fit_parametric(N, D, -np.abs(L))


def test_load_results_missing_and_fallback(tmp_path, sweep_dir):
    with pytest.raises(AnalysisInputError, match="results.parquet"):
        load_results(tmp_path)
    df = pd.read_csv(sweep_dir / "results.csv")
    df.to_csv(tmp_path / "results.csv", index=False)
    assert len(load_results(tmp_path)) == len(df)  # CSV fallback for a directory
    assert len(load_results(sweep_dir / "results.parquet")) == len(df)


# ------------------------------------------------------------------ loaders, CLI, plots


def test_load_curves(sweep_dir):
    cur = load_curves(sweep_dir)
    assert {"trial_id", "step", "tokens", "loss"} <= set(cur.columns)
    assert "val" not in set(cur.get("split", pd.Series(dtype=str)).dropna())
    val = load_curves(sweep_dir, split="val")
    assert val["val_loss"].notna().all() and len(val) == 30


@pytest.mark.slow
def test_cli_json_on_sweep_dir(sweep_dir, capsys):
    # failed trials (NaN, status="failed") are dropped before fitting
    assert cli_main(["fit", "chinchilla", str(sweep_dir), "--json", "--grid", "small"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_points"] == 30 and res["method"] == "chinchilla"
    assert cli_main(["fit", "chinchilla", str(sweep_dir), "--c-col", "flops", "--loss-col", "loss",
                     "--grid", "small"]) == 0
    assert "alpha" in capsys.readouterr().out


def test_plots_written(sweep_dir, tmp_path):
    df = load_results(sweep_dir)
    fit = fit_parametric(df.dropna()["params_non_embedding"], df.dropna()["tokens"], df.dropna()["val_loss"],
                         grid="small")
    paths = plot_sweep(df, tmp_path, fit=fit)
    pngs = [p for p in paths if p.endswith(".png")]
    assert len(pngs) == 2 and any(p.endswith(".pdf") for p in paths)
    for p in pngs:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Path(p).stat().st_size > 5000


def test_cli_plot(sweep_dir, capsys):
    assert cli_main(["plot", str(sweep_dir)]) == 0
    assert (sweep_dir / "plots" / "loss_vs_compute.png").stat().st_size > 0


def test_missing_column_error_lists_columns(sweep_dir):
    from analysis.load import fit_arrays

    with pytest.raises(AnalysisInputError, match="choose from: .*params_total") as ei:
        fit_arrays(load_results(sweep_dir), ["nope", "tokens"])
    assert "\n" not in str(ei.value)
