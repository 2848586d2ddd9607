"""Tests for Kaplan fits, Approach 1 (envelope), Approach 2 (IsoFLOP), reference data and fit plots."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main as cli_main
from analysis.fits.envelope import curve_flops, fit_envelope
from analysis.errors import AnalysisInputError
from analysis.fits.isoflop import fit_isoflop
from analysis.fits.kaplan import fit_kaplan, kaplan_loss
from analysis.reference import porian_isoflop_points, porian_power_law_fits, published_table
from analysis.load import completed, load_curves, load_results
from analysis.synthetic import make_synthetic_sweep

TRUE_A = 0.28 / (0.34 + 0.28)  # N_opt exponent of the synthetic law


@pytest.fixture(scope="module")
def iso_dir(tmp_path_factory):
    # IsoFLOP sweep: 10 sizes x 5 budgets, 1% noise
    return make_synthetic_sweep(
        tmp_path_factory.mktemp("iso"), d_models=(64, 96, 128, 192, 256, 320, 384, 512, 640, 768),
        n_layers=(2, 3, 4, 4, 6, 6, 6, 8, 8, 8), flop_budgets=np.geomspace(1e15, 3e17, 5), seed=1)


def test_kaplan_recovers_joint_law():
    truth = {"alpha_N": 0.076, "alpha_D": 0.103, "N_c": 6.4e13, "D_c": 1.8e13}
    N = np.repeat(np.geomspace(1e6, 1e9, 8), 6)
    D = np.tile(np.geomspace(1e8, 1e11, 6), 8)
    L = kaplan_loss(truth, N, D)
    f = fit_kaplan(N, D, L, bootstrap=20)
    j = f["L_ND"]
    assert j["alpha_N"] == pytest.approx(0.076, rel=1e-3)
    assert j["alpha_D"] == pytest.approx(0.103, rel=1e-3)
    assert j["N_c"] == pytest.approx(6.4e13, rel=0.02) and j["D_c"] == pytest.approx(1.8e13, rel=0.02)
    # single-variable laws are approximations of the joint law's limits: same order
    assert 0.05 < f["alpha_N"] < 0.1 and 0.05 < f["alpha_D"] < 0.12
    assert "L_ND.alpha_N" in f["ci"] and f["n_points"] == 48


def test_kaplan_pure_power_law_exact():
    N = np.geomspace(1e6, 1e9, 10)
    L = (8.8e13 / N) ** 0.076
    D = np.full(10, 1e12)
    D[0] = 2e12  # need >= 2 budgets
    f = fit_kaplan(N, D, L)
    assert f["alpha_N"] == pytest.approx(0.076, rel=1e-6) and f["N_c"] == pytest.approx(8.8e13, rel=1e-4)


def test_isoflop_matches_porian_table1():
    # our parabola-per-budget vs Porian et al.'s own (smoothed, bootstrap-median, weighted) fits
    fits = porian_power_law_fits().query("fit == 'weighted'")
    for _, r in fits.iterrows():
        if r["dataset"] != "rw":
            continue
        cfg = {k: r[k] for k in ("dataset", "hparams", "warmup", "decay", "param_count", "val")}
        p = porian_isoflop_points(**cfg)
        f = fit_isoflop(p["N"], p["flops"], p["loss"], D=p["D_tokens"])
        assert abs(f["a"] - r["n_exponent"]) < 0.04, cfg
        assert abs(f["a"] + f["b"] - 1) < 0.02  # C = 6ND holds exactly in these data


def test_isoflop_and_envelope_on_synthetic_sweep(iso_dir):
    df = completed(load_results(iso_dir))
    f = fit_isoflop(df["params_non_embedding"], df["flops"], df["val_loss"], D=df["tokens"], bootstrap=50)
    assert abs(f["a"] - TRUE_A) < 0.06 and f["n_budgets"] == 5
    assert f["ci"]["a"][0] < f["a"] < f["ci"]["a"][1]
    cur = curve_flops(load_curves(iso_dir), df)
    e = fit_envelope(cur, bootstrap=50)
    assert abs(e["a"] - TRUE_A) < 0.03
    assert e["ci"]["a"][0] < TRUE_A < e["ci"]["a"][1]


def test_envelope_of_end_of_schedule_points(iso_dir, capsys):
    """Approach 1 by default takes one annealed point per configuration (its final val loss,
    seeds averaged), never a mid-run step of a cosine schedule."""
    from analysis.fits.envelope import final_points
    df = completed(load_results(iso_dir))
    pts = final_points(df)
    assert len(pts) == len(df) and (pts["loss"].to_numpy() == df["val_loss"].to_numpy()).all()
    e = fit_envelope(pts, n_bins=20)
    # each budget's winner is its lowest final val loss
    best = df.loc[df.groupby(np.log10(df["flops"]).round(1))["val_loss"].idxmin()]
    interior = best[(best["params_non_embedding"] > df["params_non_embedding"].min())
                    & (best["params_non_embedding"] < df["params_non_embedding"].max())]
    assert sorted(r["N"] for r in e["envelope"]) == sorted(interior["params_non_embedding"])
    env = pd.DataFrame(e["envelope"])
    assert e["a"] == pytest.approx(np.polyfit(np.log(env["C"]), np.log(env["N"]), 1)[0])
    assert 0 < e["a"] < 1   # coarse: each budget's winner is one of the ladder's sizes
    assert cli_main(["fit", "envelope", str(iso_dir), "--bootstrap", "0", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["points"].startswith("end-of-schedule") and res["n_points"] == len(e["envelope"])
    # the same fit from the results table alone (e.g. a committed CSV); curves need the dir
    table = iso_dir / "table.csv"
    load_results(iso_dir).to_csv(table, index=False)
    assert cli_main(["fit", "envelope", str(table), "--bootstrap", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["a"] == pytest.approx(res["a"])
    assert cli_main(["fit", "envelope", str(table), "--points", "curves"]) == 2
    assert "--points curves needs a sweep dir" in capsys.readouterr().err
    twin = df.assign(**{"train.seed": 1, "val_loss": df["val_loss"] + 0.02})
    both = pd.concat([df.assign(**{"train.seed": 0}), twin], ignore_index=True)
    avg = final_points(both)
    assert len(avg) == len(df) and np.allclose(np.sort(avg["loss"]), np.sort(df["val_loss"] + 0.01))


def test_isoflop_needs_interior_minima(tmp_path):
    d = make_synthetic_sweep(tmp_path)  # a grid sweep, no IsoFLOP structure
    df = completed(load_results(d))
    with pytest.raises(AnalysisInputError, match="interior"):
        fit_isoflop(df["params_non_embedding"], df["flops"], df["val_loss"])


@pytest.mark.parametrize("kind", ["kaplan", "isoflop", "envelope"])
def test_cli_fit_kinds_json(iso_dir, capsys, kind):
    assert cli_main(["fit", kind, str(iso_dir), "--bootstrap", "20", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["method"] == kind and "ci" in res


def test_published_table():
    t = published_table()
    row = t[(t.paper == "besiroglu2024") & (t.name == "E")].iloc[0]
    assert row.value == pytest.approx(1.8172) and row.ci_lo == pytest.approx(1.769)
    assert t[(t.paper == "kaplan2020") & (t.law == "L_N") & (t.name == "alpha_N")].value.item() == 0.076


def test_fit_plots_written(iso_dir, tmp_path):
    from analysis.fits.chinchilla import fit_parametric
    from analysis.plots.fits import plot_allocation, plot_contours, plot_isoflop, plot_residuals

    df = completed(load_results(iso_dir))
    N, C, D, L = (df[c].to_numpy(float) for c in ("params_non_embedding", "flops", "tokens", "val_loss"))
    iso = fit_isoflop(N, C, L, D=D, bootstrap=20, keep_samples=True)
    f3 = fit_parametric(N, D, L, grid="small", bootstrap=20, keep_samples=True)
    paths = (plot_isoflop(iso, N, C, L, tmp_path) + plot_allocation({"A2": iso, "A3": f3}, (1e15, 1e20), tmp_path)
             + plot_contours(f3, tmp_path, N=N, C=C) + plot_residuals(f3, N, D, L, tmp_path))
    pngs = [p for p in paths if p.endswith(".png")]
    assert len(pngs) == 4
    for p in pngs:
        with open(p, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
