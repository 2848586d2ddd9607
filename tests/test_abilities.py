"""Ability charts: on a small synthetic sweep (eval.jsonl files), on the reference CSVs, notebook."""
import json
import os

import matplotlib.pyplot as plt
import numpy as np
import pytest

from analysis import abilities as ab
from analysis.errors import AnalysisInputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = [1e4, 1e5, 1e6]


def make_sweep(root, sizes=SIZES):
    """Three trials whose scores grow with size: exact match jumps, logprob rises smoothly."""
    for i, n in enumerate(sizes):
        tdir = root / "trials" / f"t{i}"
        os.makedirs(tdir)
        (tdir / "summary.json").write_text(json.dumps(
            {"status": "done", "params_non_embedding": n, "flops": 6 * n * 1e6, "val_loss": 3 - i}))
        rows = []
        for task, chance in (("addition", 0.003), ("icl_mapping", 0.5), ("text", 0.0)):
            for k in ([0] if task == "text" else [0, 2, 4]):
                for mode in (("direct", "cot") if task == "addition" else ("direct",)):
                    em = [0.0, 0.02, 0.6][i] * (1 + k) / 5
                    vals = {"exact_match": em, "edit_distance": 3.0 - i, "logprob": -9.0 + 3 * i,
                            "token_acc": 0.2 * (i + 1), "brier": 1 - 0.2 * i}
                    if k == 4:
                        vals.update({f"maj@{j}": em + 0.01 * j * i for j in (1, 2, 3)})
                    rows += [{"task": task, "shots": k, "mode": mode, "metric": m, "value": v,
                              "n": 8, "chance": chance} for m, v in vals.items()]
        (tdir / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_load_and_frames(tmp_path):
    long = ab.load_evals(make_sweep(tmp_path))
    assert set(long["trial_id"]) == {"t0", "t1", "t2"}
    em = ab.emergence_frame(long)
    add = em[em.task == "addition"].sort_values("flops")
    assert list(add["exact_match"]) == pytest.approx([0.0, 0.02, 0.6])     # at k=4
    assert list(em[em.task == "text"]["logprob"]) == [-9.0, -6.0, -3.0]     # 0-shot-only task kept
    icl = ab.icl_frame(long, "icl_mapping")
    assert list(icl[icl.params_non_embedding == 1e6]["shots"]) == [0, 2, 4]
    maj, greedy = ab.sc_frame(long, "addition", mode="cot")
    assert sorted(maj["samples"].unique()) == [1, 2, 3] and greedy[1e6] == pytest.approx(0.6)
    table = ab.summary_table(long)
    row = table[(table.N == 1e6) & (table.task == "addition")].iloc[0]
    assert row["icl_gain"] == pytest.approx(0.6 - 0.12) and row["cot_maj@3"] == pytest.approx(0.66)


def test_charts_draw_lines_per_group(tmp_path):
    long = ab.load_evals(make_sweep(tmp_path))
    em = ab.emergence_frame(long)
    fig = ab.plot_emergence(em, chance=em.groupby("task")["chance"].first().to_dict())
    left, right = fig.axes[:2]
    assert len(right.get_lines()) == 3                                      # one per task
    assert len(left.get_lines()) == 3 + 2                                   # + 2 nonzero chance lines
    fig = ab.plot_icl(ab.icl_frame(long, "icl_mapping"))
    assert len(fig.axes[0].get_lines()) == 3
    maj, greedy = ab.sc_frame(long, "addition", mode="cot")
    fig = ab.plot_sc(maj, greedy=greedy)
    styles = [ln.get_linestyle() for ln in fig.axes[0].get_lines()]
    assert styles.count("--") == 3 and styles.count("-") == 3                # greedy dashed
    plt.close("all")
    paths = ab.plot_sweep_abilities(str(tmp_path))
    assert all(os.path.getsize(p) > 0 for p in paths) and len(paths) == 6
    with pytest.raises(AnalysisInputError, match="no trials"):
        ab.load_evals(str(tmp_path / "nope"))


def test_reference_obsscaling_sc():
    frame, greedy = ab.obsscaling_sc()
    assert set(frame["samples"]) == {1, 5} and frame["Model"].nunique() >= 5
    assert frame["flops"].min() > 1e20 and frame["value"].between(0, 1).all()
    # Self-consistency helps: maj@5 >= first sample for most of these models (Wang et al.).
    wide = frame.pivot(index="Model", columns="samples", values="value")
    assert (wide[5] >= wide[1]).mean() >= 0.8
    fig = ab.plot_sc(frame, group="Model", greedy=greedy)
    assert len(fig.axes[0].get_lines()) == 2 * frame["Model"].nunique()
    plt.close("all")


def test_reference_pythia_icl():
    py = ab.pythia_icl("lambada_openai")
    assert set(py["shots"]) == {0, 5} and py["size"].nunique() == 7      # 1b is absent upstream
    big = py[py["size"] == "12b"].set_index("shots")["value"]
    small = py[py["size"] == "70m"].set_index("shots")["value"]
    assert big[0] > small[0]                                             # larger scores higher
    fig = ab.plot_icl(py, group="size")
    assert len(fig.axes[0].get_lines()) == 7
    plt.close("all")


def test_reference_lu_emergence():
    lu = ab.lu_emergence()
    assert {"exact_match", "edit_distance", "params"} <= set(lu.columns)
    assert lu["params"].min() == 124e6 and lu["task"].nunique() >= 2
    fig = ab.plot_emergence(lu, x="params")
    assert len(fig.axes[1].get_lines()) == lu["task"].nunique()
    plt.close("all")


def test_notebook_executes_on_small_data(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    monkeypatch.setenv("ABILITIES_SWEEP", str(make_sweep(tmp_path)))
    nb = nbformat.read(os.path.join(ROOT, "notebooks", "emergence_icl_sc.ipynb"), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 8
