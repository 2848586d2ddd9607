"""Guardrails: every warning fires on a crafted sweep and stays silent on a good one."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import guardrails as g
from analysis.cli import main as cli_main
from analysis.synthetic import make_synthetic_sweep
from scaling import counting
from scaling.config import ConfigDict, apply_overrides, default_config, resolve
from scaling.sweeps import grid


def _codes(warns):
    return [w.code for w in warns]


def _good_rows(n=4):
    return pd.DataFrame({"trial_id": [f"t{i}" for i in range(n)], "status": "done", "steps": 500,
                         "warmup_steps": 25, "epochs": 0.5, "tokens_per_param": 20.0,
                         "val_loss": np.linspace(3.0, 2.5, n), "loss": np.linspace(3.1, 2.6, n),
                         "data.mixture": "", "data.name": "kjv"})


def test_good_trials_are_silent():
    kept, warns = g.screen_trials(_good_rows(), "val_loss")
    assert warns == [] and len(kept) == 4
    assert g.check_plan(_good_rows().to_dict("records")) == []


@pytest.mark.parametrize("col,value,code,named", [
    ("steps", 120, "too-few-steps", "t1: 120"),
    ("warmup_steps", 200, "warmup-long", "t1: 40%"),
    ("epochs", 2.5, "data-repeated", "t1: 2.5 epochs"),
    ("data.mixture", "kjv:0.5,icl_mapping(symbols=6,k=2):0.5", "task-data-in-mixture", "t1: kjv:0.5"),
])
def test_each_trial_check_fires_and_names_the_trial(col, value, code, named):
    df = _good_rows()
    df[col] = df[col].astype(object)
    df.loc[1, col] = value
    warns = g.check_trials(df)
    assert _codes(warns) == [code]
    w = warns[0]
    assert w.trials == ["t1"] and named in w.message and "\n" not in w.message
    assert w.line().startswith(f"warning: [{code}] ")


def test_corpus_only_mixture_and_zero_weights_are_silent():
    df = _good_rows()
    df["data.mixture"] = ["kjv:1.0", "kjv:1,addition:0", "", np.nan]
    assert g.check_trials(df) == []


def test_failed_and_diverged_trials_are_excluded_with_a_warning():
    df = _good_rows(5)
    df.loc[1, "status"] = "failed"
    df.loc[2, "val_loss"] = np.inf
    df.loc[3, "loss"] = np.nan
    kept, warns = g.screen_trials(df, "val_loss")
    assert list(kept["trial_id"]) == ["t0", "t4"]
    assert _codes(warns) == ["trial-excluded"] and warns[0].trials == ["t1", "t2", "t3"]
    assert "t1 (failed)" in warns[0].message and "t2 (non-finite val_loss)" in warns[0].message


def test_missing_columns_skip_their_checks():
    df = _good_rows().drop(columns=["steps", "warmup_steps", "epochs", "data.mixture"])
    df["steps_unused"] = 1
    assert g.check_trials(df) == []


def _profile(N, minimum_at):
    x = np.log(N / N[minimum_at])
    return 3.0 + 0.05 * x ** 2


def test_isoflop_edge_says_which_way_to_extend():
    N = np.geomspace(1e5, 1e7, 5)
    C = np.repeat([1e15, 1e16, 1e17], 5)
    NN = np.tile(N, 3)
    L = np.concatenate([_profile(N, 2), 2.0 + 0.1 * np.log(N / N[0]), 2.0 - 0.1 * np.log(N / N[0])])
    ids = [f"t{i:02d}" for i in range(15)]
    warns = g.check_isoflop(NN, C, L, trial_ids=ids)
    assert _codes(warns) == ["isoflop-edge", "isoflop-edge"]
    small, large = warns
    assert "C=1e+16" in small.message and "add smaller models" in small.message and "t05" in small.message
    assert "C=1e+17" in large.message and "add larger models" in large.message
    good = np.concatenate([_profile(N, 2), _profile(N, 1), _profile(N, 3)])
    assert g.check_isoflop(NN, C, good, trial_ids=ids) == []


def test_isoflop_too_few_sizes_and_budgets():
    N = np.geomspace(1e5, 1e7, 5)
    C = np.array([1e15] * 5 + [1e16] * 2)
    NN = np.concatenate([N, N[:2]])
    L = np.concatenate([_profile(N, 2), [3.0, 3.1]])
    warns = g.check_isoflop(NN, C, L)
    assert _codes(warns) == ["too-few-points", "too-few-points"]
    assert "1e+16 (2)" in warns[0].message and "1 IsoFLOP budget(s)" in warns[1].message


def test_too_few_distinct_n_or_d_for_the_form():
    N = np.repeat([1e6, 2e6, 4e6], 3)
    D = np.tile([1e8, 3e8, 1e9], 3)
    assert g.check_points("chinchilla", N, D) == []
    warns = g.check_points("chinchilla", N, np.where(D > 5e8, 3e8, D))
    assert _codes(warns) == ["too-few-points"] and "2 distinct D (need >= 3)" in warns[0].message
    assert "5 points" in g.check_points("chinchilla", N[:5], D[:5])[0].message
    assert _codes(g.check_points("envelope", N)) == ["too-few-points"]  # 3 sizes, Approach 1 drops 2


def test_search_bounds():
    good = {"E": 1.7, "A": 400, "B": 410, "alpha": 0.34, "beta": 0.28}
    assert g.check_fit(good, "chinchilla") == []
    warns = g.check_fit({**good, "alpha": 2.4, "E": 1e-5}, "chinchilla")
    assert _codes(warns) == ["at-search-bound"]
    assert "alpha=2.4 at its upper bound 2" in warns[0].message and "E=1e-05 at its lower bound" in warns[0].message
    kap = {"alpha_N": 0.07, "alpha_D": 0.1, "alpha_C": 0.05,
           "L_ND": {"alpha_N": 1e-4, "alpha_D": 0.1, "N_c": 1e13, "D_c": 1e13}}
    assert "L_ND.alpha_N=0.0001 at its lower bound" in g.check_fit(kap, "kaplan")[0].message
    kap["L_ND"]["alpha_N"] = 0.07
    assert g.check_fit(kap, "kaplan") == []
    # a fit that reports its own bounds is checked against those
    assert _codes(g.check_fit({"a": 0.5, "bounds": {"a": [0.0, 0.5]}}, "isoflop")) == ["at-search-bound"]


def test_wide_interval():
    fit = {"alpha": 0.34, "beta": 0.28, "E": 1.7, "ci": {"alpha": [0.30, 0.38], "beta": [0.25, 0.31]}}
    assert g.check_fit(fit, "chinchilla") == []
    fit["ci"]["alpha"] = [0.05, 0.9]  # wider than alpha itself
    fit["ci"]["beta"] = [None, None]  # JSON null: no replicate identified it
    warns = g.check_fit(fit, "chinchilla")
    assert _codes(warns) == ["wide-interval", "wide-interval"]
    assert "alpha=0.34 with interval [0.05, 0.9]" in warns[0].message and "no bootstrap interval" in warns[1].message
    iso = {"a": 1.5, "b": -0.5, "ci": {"a": [0.9, 2.1], "b": [-0.6, -0.4]}}  # width 1.2 > 1.0
    assert _codes(g.check_fit(iso, "isoflop")) == ["wide-interval"]
    assert g.check_fit({"a": 0.5, "ci": {"a": {"lo": 0.45, "hi": 0.55}}}, "envelope") == []


def _issue_grid_rows():
    """The IsoFLOP grid of issue 13: d32L2 ... d128L4, budgets 3e11/1e12/3e12, batch 32x128,
    lr 3e-3, with the loss falling monotonically toward the smallest model at every budget."""
    base = default_config()
    base.train.update(dict(batch_size=32, seq_len=128, lr=3e-3))
    sizes = [grid.size(32, 2), grid.size(48, 2), grid.size(64, 3), grid.size(96, 3), grid.size(128, 4)]
    rows = []
    for i, p in enumerate(grid.isoflop(base, [3e11, 1e12, 3e12], sizes)):
        cfg = resolve(apply_overrides(ConfigDict(base.to_dict()),
                                      {k: v for k, v in p.items() if not k.startswith("sweep.")}))
        d = counting.describe(cfg)
        n = d["params_non_embedding"]
        rows.append({"trial_id": f"d{p['model.d_model']}L{p['model.n_layers']}@{p['sweep.budget']:.0e}",
                     "status": "done", "sweep.budget": p["sweep.budget"], "params_non_embedding": n,
                     "tokens": d["tokens"], "flops": d["flops"], "steps": cfg.train.steps,
                     # a Chinchilla law whose data term dominates here: smaller is better
                     "val_loss": 1.0 + 50.0 / n ** 0.3 + 2000.0 / d["tokens"] ** 0.3})
    return pd.DataFrame(rows)


def test_issue_isoflop_grid_triggers_edge_and_too_few_steps():
    df = _issue_grid_rows()
    big = df[(df["sweep.budget"] == 3e11) & (df["trial_id"].str.startswith("d128L4"))]
    assert int(big["steps"].iloc[0]) == 13  # the issue's "largest model trained 13 optimizer steps"
    warns = g.check_trials(df)
    steps = [w for w in warns if w.code == "too-few-steps"]
    assert steps and big["trial_id"].iloc[0] in steps[0].trials and f"{big['trial_id'].iloc[0]}: 13" in steps[0].message
    edges = g.check_isoflop(df["params_non_embedding"], df["flops"], df["val_loss"],
                            trial_ids=df["trial_id"], budgets=df["sweep.budget"])
    at_3e11 = [w for w in edges if w.code == "isoflop-edge" and "C=3e+11" in w.message]
    assert at_3e11 and "add smaller models" in at_3e11[0].message


@pytest.mark.slow
def test_cli_fit_warns_on_stderr_and_in_json(tmp_path, capsys):
    d = tmp_path / "sweep"
    df = _issue_grid_rows()
    d.mkdir()
    df.to_csv(d / "results.csv", index=False)
    # no budget has an interior minimum: the fit fails, and the warnings say which way to extend
    assert cli_main(["fit", "isoflop", str(d), "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "interior" in err[-1]
    assert sum("[isoflop-edge] budget C=" in ln and "add smaller models" in ln for ln in err) == 3
    assert cli_main(["fit", "kaplan", str(d), "--json"]) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    codes = {w["code"] for w in res["warnings"]}
    assert {"too-few-steps", "isoflop-edge"} <= codes
    assert all(line.startswith("warning: [") for line in cap.err.strip().splitlines())
    assert "add smaller models" in cap.err


def test_cli_plot_and_envelope_warn(tmp_path, capsys):
    d = make_synthetic_sweep(tmp_path / "s", n_failed=1)
    assert cli_main(["plot", str(d), "--out", str(tmp_path / "p"), "--no-fit"]) == 0
    assert "warning: [trial-excluded] 1 trial(s)" in capsys.readouterr().err
    assert cli_main(["fit", "envelope", str(d), "--json"]) == 0
    cap = capsys.readouterr()
    assert "trial-excluded" in [w["code"] for w in json.loads(cap.out)["warnings"]]


def test_sweep_plan_warns_before_training(tmp_path, capsys):
    from scaling.cli import _warn_plan
    from scaling.sweeps.plan import expand

    exp = tmp_path / "exp.py"
    exp.write_text("from scaling.config import default_config\n"
                   "def get_config(arg=None):\n    c = default_config()\n"
                   "    c.model.update(dict(d_model=32, n_layers=1, n_heads=2))\n"
                   "    c.train.update(dict(batch_size=64, seq_len=64, warmup=40.0))\n    return c\n"
                   "def get_sweep(arg=None):\n    return [{'train.steps': 100}, {'train.steps': 2000}]\n")
    _warn_plan(expand(str(exp), [])[0])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("warning: ")]  # (+ a data-build note)
    assert [ln.split("]")[0] for ln in lines] == ["warning: [too-few-steps", "warning: [warmup-long",
                                                  "warning: [data-repeated"], err
    assert "will run fewer than 200" in lines[0] and ": 100)" in lines[0]
    assert "40%" in lines[1] and "epochs" in lines[2]


def test_check_sweep_collects_table_and_fit_warnings():
    df = _issue_grid_rows()
    df.loc[0, "status"] = "failed"
    fit = {"E": 1.0, "A": 50.0, "B": 2000.0, "alpha": 0.3, "beta": 0.3, "ci": {"alpha": [0.01, 1.5]}}
    codes = _codes(g.check_sweep(df, fit))
    assert codes[0] == "trial-excluded" and {"too-few-steps", "isoflop-edge", "wide-interval"} <= set(codes)
    good = _good_rows().assign(params_non_embedding=[1e6, 2e6, 4e6, 8e6], tokens=[1e8, 3e8, 1e9, 3e9])
    assert _codes(g.check_sweep(good, None)) == ["too-few-points"]  # 4 points, fine per trial


def test_sweep_report_stores_warnings_in_fit_json(tmp_path, monkeypatch, capsys):
    from analysis.fits import chinchilla
    from analysis.report import report_sweep

    # the fit itself is tested elsewhere; a fixed one keeps this test free of the JAX compile
    monkeypatch.setattr(chinchilla, "fit_parametric",
                        lambda N, D, L, **kw: {"E": 1.0, "A": 50.0, "B": 2000.0, "alpha": 0.3, "beta": 0.3,
                                               "n_points": len(N), "warnings": []})
    df = _issue_grid_rows().assign(loss=lambda d: d["val_loss"], wall_s=1.0)
    report_sweep(str(tmp_path), df, bootstrap=0)
    fit = json.loads((tmp_path / "fit.json").read_text())
    codes = {w.split("]")[0].lstrip("[") for w in fit["warnings"] if w.startswith("[")}
    assert {"too-few-steps", "isoflop-edge"} <= codes
    assert "warning: [isoflop-edge] budget C=3e+11" in capsys.readouterr().err


def test_isoflop_study_design_meets_the_issue():
    """experiments/isoflop.py: >= 3 budgets over >= 10x, >= 5 sizes each, one model shape,
    >= MIN_STEPS steps and <= 4 epochs per trial, every configuration in every seed; the sweep
    plan raises no guardrail but repetition."""
    from scaling.cli import _warn_plan
    from scaling.experiments import isoflop as exp
    from scaling.sweeps.plan import expand

    trials, _ = expand("experiments/isoflop.py", [])
    budgets = sorted({round(t.overrides["sweep.budget"]) for t in trials})
    assert len(budgets) >= 3 and budgets[-1] / budgets[0] >= 10
    train_tokens = exp.TRAIN_TOKENS
    for c in budgets:
        mine = [t for t in trials if round(t.overrides["sweep.budget"]) == c]
        assert len({t.cfg.model.d_model for t in mine}) >= 5
        assert {t.cfg.train.seed for t in mine} == set(exp.SEEDS)
        for t in mine:
            m = t.cfg.model
            assert (m.n_layers, m.n_heads) == (1, 2)
            steps = t.cfg.train.tokens // (t.cfg.train.batch_size * t.cfg.train.seq_len)
            assert steps >= exp.MIN_STEPS and t.cfg.train.tokens <= exp.MAX_EPOCHS * train_tokens
            assert abs(counting.describe(t.cfg)["flops"] / c - 1) < 0.01
    pilot, _ = expand("experiments/isoflop.py:pilot", [])
    assert {round(t.overrides["sweep.budget"]) for t in pilot} == {budgets[0]}
    assert {t.cfg.train.seed for t in pilot} == {exp.SEEDS[0]}
