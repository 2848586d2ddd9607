"""Loss -> metric fits, hold-out and two-step prediction, observational scaling, the new charts."""

import json

import numpy as np
import pytest

from analysis.cli import main as cli_main
from analysis.fits.downstream import (fit_downstream, holdout_downstream, metric_at_flops,
                                      predict_metric, two_step_holdout)
from analysis.guardrails import check_downstream
from analysis.synthetic import ABILITIES_LAW, ABILITIES_TASK, make_synthetic_abilities_sweep

METRIC = "eval/addition/direct/exact_match@k4"


@pytest.fixture(scope="module")
def abil(tmp_path_factory):
    return make_synthetic_abilities_sweep(tmp_path_factory.mktemp("abil") / "sweep")


def _sigmoid(L, lo, hi, k, L0):
    return lo + (hi - lo) / (1 + np.exp(-k * (L0 - L)))


def test_sigmoid_recovers_known_constants_and_threshold():
    rng = np.random.default_rng(1)
    L = np.linspace(2.0, 5.0, 16)
    y = _sigmoid(L, 0.25, 0.85, 4.0, 3.4) + rng.normal(0, 0.005, L.size)
    fit = fit_downstream(L, y, chance=0.25, bootstrap=40)
    assert fit["lo"] == 0.25
    for k, true in (("hi", 0.85), ("k", 4.0), ("L0", 3.4)):
        assert fit[k] == pytest.approx(true, rel=0.05)
        lo, hi = fit["ci"][k]
        assert lo <= true <= hi, k
    # emergence: 10% of the rise, L0 + ln 9 / k
    assert fit["threshold"] == pytest.approx(3.4 + np.log(9) / 4.0, abs=0.03)
    assert fit["identified"] and check_downstream(fit, L, y) == []


def test_exponential_recovers_known_constants():
    L = np.linspace(1.3, 5.0, 12)
    y = 0.02 + 1.2 * np.exp(-0.4 * L)
    fit = fit_downstream(L, y, form="exponential")
    assert fit["lo"] == pytest.approx(0.02, abs=0.01)
    assert fit["a"] == pytest.approx(1.2, rel=0.05)
    assert fit["g"] == pytest.approx(0.4, rel=0.05)
    assert np.allclose(predict_metric(fit, L), y, atol=1e-3)


def test_guardrails_flag_flat_metric_and_too_few_trials():
    L = np.array([3.0, 3.2, 3.4])  # the sigmoid with a known chance level needs >= 4
    fit = fit_downstream(L, np.full(3, 0.001), chance=0.0)
    codes = {w.code for w in check_downstream(fit, L, np.full(3, 0.001))}
    assert {"metric-flat", "too-few-points"} <= codes


def test_holdout_largest_reports_absolute_error(abil):
    import pandas as pd
    df = pd.read_parquet(abil / "results.parquet")
    N = df["params_non_embedding"].to_numpy(float)
    mask = N == N.max()
    fit, res = holdout_downstream(df["val_loss"], df[METRIC], mask, N=N, trial_ids=df["trial_id"],
                                  chance=0.0, bootstrap=20)
    assert res["n_heldout"] == int(mask.sum()) == 3 and res["n_fit"] == 12
    errs = [p["abs_error"] for p in res["points"]]
    assert res["mean_abs_error"] == pytest.approx(np.mean(errs)) and res["mean_abs_error"] < 0.05
    assert all(len(p["band"]) == 2 for p in res["points"])
    assert fit["k"] == pytest.approx(ABILITIES_TASK["k"], rel=0.2)
    # the naive forecast beside it: the lowest-loss fitted trial's observed metric
    fitted = df[~mask]
    persist = float(fitted[METRIC].to_numpy()[np.argmin(fitted["val_loss"].to_numpy())])
    assert res["baseline"]["value"] == pytest.approx(persist)
    assert res["baseline"]["mean_abs_error"] == pytest.approx(
        np.mean(np.abs(persist - df[METRIC].to_numpy()[mask])))


def test_below_chance_metric_is_warned():
    from analysis.guardrails import check_downstream
    L = np.array([2.6, 2.5, 2.4, 2.3, 2.2])
    y = np.array([0.10, 0.20, 0.25, 0.30, 0.35])  # answers outside the label set: under 0.5
    fit = fit_downstream(L, y, chance=0.5)
    assert "below-chance" in {w.code for w in check_downstream(fit, L, y)}
    fit0 = fit_downstream(L, y, chance=0.0)
    assert "below-chance" not in {w.code for w in check_downstream(fit0, L, y)}


def test_two_step_chain_recovers_the_true_chain(abil):
    import pandas as pd
    df = pd.read_parquet(abil / "results.parquet")
    N, D = df["params_non_embedding"].to_numpy(float), df["tokens"].to_numpy(float)
    mask = N == N.max()
    res = two_step_holdout(N, D, df["val_loss"], df[METRIC], mask, chance=0.0)
    assert res["mean_abs_error"] < 0.06
    # through the true law and the true curve, the chain gives the true metric
    true_fit = {"form": "sigmoid", **ABILITIES_TASK}
    r = metric_at_flops(ABILITIES_LAW, true_fit, 1e14)
    L_true = (ABILITIES_LAW["E"] + ABILITIES_LAW["A"] / r["N"] ** ABILITIES_LAW["alpha"]
              + ABILITIES_LAW["B"] / r["D"] ** ABILITIES_LAW["beta"])
    assert r["loss"] == pytest.approx(L_true)
    assert r["metric"] == pytest.approx(_sigmoid(L_true, **ABILITIES_TASK))


def test_cli_downstream_json(abil, tmp_path, capsys):
    rc = cli_main(["fit", "downstream", str(abil), "--metric", METRIC, "--holdout", "largest",
                   "--at", "1e6,2e7", "--at-flops", "1e14", "--bootstrap", "20", "--json",
                   "--plot-dir", str(tmp_path)])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["fit"]["chance"] == 0.0  # read from the trials' eval.jsonl
    assert res["holdout"]["n_heldout"] == 3 and res["holdout"]["mean_abs_error"] < 0.05
    assert "two_step_mean_abs_error" in res["holdout"]
    assert 0 <= res["at"]["metric"] <= 1 and res["at_flops"]["C"] == 1e14
    assert (tmp_path / "downstream.png").exists()


def test_cli_downstream_bad_metric_is_one_line(abil, capsys):
    assert cli_main(["fit", "downstream", str(abil), "--metric", "eval/nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no column 'eval/nope'") and "\n" not in err


def test_pythia_holdout_12b_lambada():
    from analysis.downstream import pythia_loss_acc
    d = pythia_loss_acc()
    big = d["N"] == d["N"].max()
    keep = ~big | (d["step"] == d["step"].max())  # the 12b final checkpoint is the one held out
    d = d[keep]
    mask = (d["N"] == d["N"].max()).to_numpy()
    _fit, res = holdout_downstream(d["loss"], d["acc"], mask, form="exponential", chance=0.0)
    assert res["n_heldout"] == 1 and res["mean_abs_error"] < 0.05


def test_obs_scaling_pca_is_deterministic_and_low_rank():
    from analysis.obs_scaling import capability_pca, obs_benchmarks, pc_vs_compute, predict_emergent
    a, b = capability_pca(obs_benchmarks()), capability_pca(obs_benchmarks())
    assert np.array_equal(a["explained"], b["explained"])
    assert np.array_equal(a["scores"]["PC1"], b["scores"]["PC1"])
    ev = a["explained"]
    assert ev[0] > 0.7 and ev[:3].sum() > 0.9 and np.all(np.diff(ev) <= 0)
    assert (a["loadings"].loc["PC1"] > 0).all()  # PC1: a general capability axis
    fam = pc_vs_compute(a["scores"]).set_index("family")
    assert fam.loc["Pythia", "slope"] > 0 and fam.loc["Pythia", "r2"] > 0.9
    r = predict_emergent("word_unscrambling_2_exact_match", a["scores"])
    test = r["frame"][r["frame"]["split"] == "test"]
    assert len(test) == r["n_test"] > 0 and (test["flops"] > r["cutoff"]).all()
    assert np.isfinite([r["mae_pcs"], r["mae_flops"]]).all()


def test_obs_scaling_reproduces_the_published_top3_share():
    from analysis.obs_scaling import PUBLISHED, PUBLISHED_SOURCE, capability_pca, obs_benchmarks
    # the paper: "the top 3 PCs explain ~97%" (Sec. 3.2), to that precision, on the complete
    # rows and with the paper's low-rank imputation of the rest
    complete, imputed = obs_benchmarks(), obs_benchmarks(impute=True)
    assert len(imputed) > len(complete) and (complete["n_imputed"] == 0).all()
    for df in (complete, imputed):
        ev = capability_pca(df)["explained"]
        assert abs(ev[:3].sum() - PUBLISHED["pc1to3_explained"]) < 0.01
    assert set(PUBLISHED) == set(PUBLISHED_SOURCE)


def test_low_rank_imputation_recovers_masked_entries_and_keeps_observed_ones():
    from analysis.errors import AnalysisInputError
    from analysis.obs_scaling import impute_low_rank
    rng = np.random.default_rng(0)
    X = np.outer(rng.normal(size=40), rng.normal(size=6)) + rng.normal(size=6)  # rank 1 + means
    masked = X.copy()
    holes = rng.random(X.shape) < 0.15
    masked[holes] = np.nan
    filled = impute_low_rank(masked, rank=1)
    assert np.array_equal(filled[~holes], X[~holes])
    assert np.abs(filled[holes] - X[holes]).max() < 1e-4          # exact low-rank data: recovered
    mean_fill = np.where(holes, np.nanmean(masked, axis=0), masked)
    assert np.abs(mean_fill[holes] - X[holes]).max() > 0.1          # column means would not be
    masked[:, 2] = np.nan
    with pytest.raises(AnalysisInputError, match="at least one observed"):
        impute_low_rank(masked)


def _visible_labels(ax):
    ax.figure.canvas.draw()
    lo, hi = sorted(ax.get_xlim())
    return [t.get_text() for t, loc in zip(ax.get_xticklabels(), ax.get_xticks())
            if t.get_text() and lo <= loc <= hi]


def test_plot_cli_draws_ability_charts_with_tick_labels(tmp_path):
    from analysis.abilities import emergence_frame, load_evals, plot_emergence
    # sizes spanning well under a decade of N and of FLOPs
    sweep = make_synthetic_abilities_sweep(tmp_path / "s", d_models=(64, 72, 80, 88, 96),
                                           n_layers=(3, 3, 3, 3, 3), tokens=(5e6,))
    assert cli_main(["plot", str(sweep), "--no-fit"]) == 0
    for stem in ("emergence", "icl", "sc", "downstream"):
        assert (sweep / "plots" / f"{stem}.png").exists(), stem
    fig = plot_emergence(emergence_frame(load_evals(sweep)))
    for ax in fig.axes:
        assert len(_visible_labels(ax)) >= 2
