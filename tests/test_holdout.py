"""Held-out validation (`scaling fit ... --holdout`): specs, known laws, Epoch's Chinchilla data."""

import json
from pathlib import Path

import numpy as np
import pytest

import analysis
from analysis.cli import main as cli_main
from analysis.errors import AnalysisInputError
from analysis.fits.kaplan import kaplan_loss
from analysis.holdout import holdout_isoflop, holdout_kaplan, holdout_mask, parse_holdout
from analysis.load import completed, load_results
from analysis.synthetic import make_synthetic_sweep

EPOCH_CSV = Path(analysis.__file__).parent / "data" / "reference" / "epoch_chinchilla_replication" / \
    "svg_extracted_data.csv"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def law_sweep(tmp_path_factory):
    """6 sizes x 5 token budgets from the known law, no noise, plus one failed trial."""
    return make_synthetic_sweep(tmp_path_factory.mktemp("law"), noise=0.0)


def test_parse_and_mask():
    C = np.array([1.0, 2.0, 3.0, 3.02, 5.0]) * 1e18
    assert holdout_mask(parse_holdout("top-budget"), C).tolist() == [False] * 4 + [True]
    assert holdout_mask(parse_holdout("top-k:2"), C).tolist() == [False, False, False, True, True]
    assert holdout_mask(parse_holdout("flops>=3e18"), C).tolist() == [False, False, True, True, True]
    # sweep.budget labels decide the top budget when given
    labels = np.array([1, 2, 3, 3, 3]) * 1e18
    assert holdout_mask(parse_holdout("top-budget"), C, labels).tolist() == [False, False, True, True, True]
    assert holdout_mask(parse_holdout("top-k:1"), C, labels, by_budget=True).sum() == 3
    for bad in ("top", "top-k:0", "top-k:x", "flops>=", "flops>=abc", "flops>=-1", "C>=1e20"):
        with pytest.raises(AnalysisInputError, match="not understood"):
            parse_holdout(bad)
    with pytest.raises(AnalysisInputError, match="holds out all 5 points"):
        holdout_mask(parse_holdout("top-k:5"), C)
    with pytest.raises(AnalysisInputError, match="holds out no point"):
        holdout_mask(parse_holdout("flops>=1e30"), C)


def test_chinchilla_holdout_on_a_known_law_via_cli(law_sweep, tmp_path, capsys):
    rc = cli_main(["fit", "chinchilla", str(law_sweep), "--holdout", "top-k:5", "--grid", "small", "--json",
                   "--plot-dir", str(tmp_path)])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    ho = res["holdout"]
    assert res["n_points"] == 25 and ho["n_fit"] == 25 and ho["n_heldout"] == 5 and len(ho["points"]) == 5
    df = completed(load_results(law_sweep))
    top5 = df.sort_values("flops").tail(5)
    assert {p["trial_id"] for p in ho["points"]} == set(top5["trial_id"])
    for p in ho["points"]:
        assert p["abs_rel_error"] == pytest.approx(abs(p["predicted"] - p["observed"]) / p["observed"])
        assert p["abs_rel_error"] < 1e-3
    assert ho["median_abs_rel_error"] == pytest.approx(np.median([p["abs_rel_error"] for p in ho["points"]]))
    assert ho["median_abs_rel_error"] < 1e-4
    assert res["alpha"] == pytest.approx(0.34, abs=0.01)
    assert Path(ho["plot"]) == tmp_path / "holdout_chinchilla.png" and Path(ho["plot"]).read_bytes()[:8] == PNG
    assert "trial-excluded" in [w["code"] for w in res["warnings"]]  # the failed trial
    # human-readable form: one line per held-out point and the median
    assert cli_main(["fit", "chinchilla", str(law_sweep), "--holdout", "flops>=2.1e16", "--grid", "small",
                     "--plot-dir", str(tmp_path)]) == 0  # the same 5 points (no new compile)
    out = capsys.readouterr().out
    assert "holding out 5 (flops>=2.1e16)" in out and "median |rel. err|" in out
    assert all(t in out for t in top5["trial_id"])


def test_bad_holdout_is_one_line_exit_2(law_sweep, capsys):
    for spec, msg in (("top-k:zz", "not understood"), ("flops>=1e30", "holds out no point"),
                      ("top-k:30", "holds out all 30 points"), ("top-k:27", "after --holdout top-k:27: only 3")):
        assert cli_main(["fit", "chinchilla", str(law_sweep), "--holdout", spec, "--grid", "small"]) == 2
        err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("warning: ")]
        assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], (spec, err)


def test_kaplan_holdout_on_its_own_law():
    truth = {"alpha_N": 0.076, "alpha_D": 0.103, "N_c": 6.4e13, "D_c": 1.8e13}
    N = np.repeat(np.geomspace(1e6, 1e9, 6), 5)
    D = np.tile(np.geomspace(1e8, 1e11, 5), 6)
    L = kaplan_loss(truth, N, D)
    fit, ho = holdout_kaplan(N, D, L, 6 * N * D, parse_holdout("top-k:4"))
    assert ho["n_heldout"] == 4 and ho["median_abs_rel_error"] < 1e-4
    assert fit["L_ND"]["alpha_N"] == pytest.approx(0.076, rel=1e-3)


def test_isoflop_holdout_predicts_the_top_budget_optimum(tmp_path):
    d = make_synthetic_sweep(tmp_path / "iso", d_models=(64, 96, 128, 192, 256, 320, 384, 512, 640, 768),
                             n_layers=(2, 3, 4, 4, 6, 6, 6, 8, 8, 8), flop_budgets=np.geomspace(1e15, 3e17, 5),
                             noise=0.0, n_failed=0)
    df = completed(load_results(d))
    fit, ho = holdout_isoflop(df["params_non_embedding"], df["flops"], df["val_loss"], parse_holdout("top-budget"))
    assert fit["n_budgets"] == 4 and ho["n_heldout"] == 1
    p = ho["points"][0]
    assert p["C"] == pytest.approx(3e17, rel=0.01) and p["interior"]
    assert p["abs_rel_error"] < 0.01 and p["N_opt_abs_rel_error"] < 0.1
    assert ho["median_N_opt_abs_rel_error"] == p["N_opt_abs_rel_error"]
    # via the CLI, with the plot's N_opt panel
    assert cli_main(["fit", "isoflop", str(d), "--holdout", "top-budget", "--json"]) == 0
    assert (d / "plots" / "holdout_isoflop.png").read_bytes()[:8] == PNG
    with pytest.raises(AnalysisInputError, match="after --holdout top-k:4"):  # one budget left
        holdout_isoflop(df["params_non_embedding"], df["flops"], df["val_loss"], parse_holdout("top-k:4"))


@pytest.mark.slow
def test_epoch_chinchilla_top_budgets_held_out_within_3_percent(tmp_path, capsys):
    # Choshen et al.'s check on Hoffmann's own points: fit below 1e21 FLOPs, predict the 23 above
    rc = cli_main(["fit", "chinchilla", str(EPOCH_CSV), "--n-col", "Model Size", "--c-col", "Training FLOP",
                   "--loss-col", "loss", "--drop-highest", "5", "--grid", "small", "--holdout", "flops>=1e21",
                   "--json", "--plot-dir", str(tmp_path)])
    assert rc == 0
    ho = json.loads(capsys.readouterr().out)["holdout"]
    assert ho["n_heldout"] == 23 and ho["n_fit"] == 217 and len(ho["points"]) == 23
    assert all(p["C"] >= 1e21 for p in ho["points"])
    assert ho["median_abs_rel_error"] < 0.03  # measured: 0.87%
