"""analysis/architecture.py charts from files, and the issue-17 experiment configs resolve."""
import json

import pandas as pd
import pytest

from analysis.architecture import main, plot_attention_sweep
from analysis.errors import AnalysisInputError
from scaling.config import apply_overrides, load_experiment, resolve


def _ppl(pos, losses, max_len=64):
    rows = [{"lo": 16 * i, "hi": 16 * i + 16, "beyond_train": i >= 4, "loss": x}
            for i, x in enumerate(losses)]
    return {"rows": rows, "train_seq_len": 64, "max_len": max_len, "pos": pos}


def test_context_chart_from_ppl_files(tmp_path, capsys):
    (tmp_path / "ppl").mkdir()
    (tmp_path / "ppl" / "rope.json").write_text(json.dumps(_ppl("rope", [3, 2.8, 2.7, 2.6, 3.5,
                                                                         4, 4.5, 5])))
    (tmp_path / "ppl" / "learned.json").write_text(json.dumps(_ppl("learned", [3, 2.8, 2.7, 2.6,
                                                                               None, None, None, None])))
    assert main(["context", str(tmp_path)]) == 0
    assert (tmp_path / "plots" / "ppl_by_position.png").stat().st_size > 0
    assert main(["context", str(tmp_path / "none")]) == 2
    assert "no ppl_by_position JSON" in capsys.readouterr().err


def test_context_chart_from_the_committed_table_equals_the_json_files(tmp_path):
    from analysis.architecture import load_position_files, load_position_table
    (tmp_path / "ppl").mkdir()
    runs = {"rope": [3, 2.8, 2.7, 2.6, 3.5, 4, 4.5, 5],
            "learned": [3, 2.8, 2.7, 2.6, None, None, None, None]}
    rows = []
    for name, losses in runs.items():
        (tmp_path / "ppl" / f"{name}.json").write_text(json.dumps(_ppl(name, losses)))
        rows += [{"scheme": name, "lo": 16 * i, "hi": 16 * i + 16, "loss": x, "train_seq_len": 64}
                 for i, x in enumerate(losses)]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    a, b = load_position_files(tmp_path / "ppl"), load_position_table(tmp_path / "t.csv")
    assert set(a) == set(b)
    for k in a:
        assert [r["loss"] for r in a[k]["rows"]] == [r["loss"] for r in b[k]["rows"]]
    assert main(["context", str(tmp_path / "t.csv"), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "ppl_by_position.png").stat().st_size > 0
    pd.DataFrame({"scheme": ["x"]}).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["context", str(tmp_path / "bad.csv")]) == 2


def test_attention_chart_needs_the_attention_column(tmp_path):
    df = pd.DataFrame({"status": ["done"] * 4, "model.attention": ["full", "full", "linear:64",
                                                                   "linear:64"],
                       "flops": [1e12, 4e12, 8e11, 3e12], "val_loss": [3.0, 2.7, 3.1, 2.8]})
    assert plot_attention_sweep(df) is not None
    with pytest.raises(AnalysisInputError):
        plot_attention_sweep(df.drop(columns="model.attention"))


@pytest.mark.parametrize("spec", ["experiments/attention.py", "experiments/attention.py:smoke",
                                  "experiments/context.py", "experiments/context.py:finetune"])
def test_issue17_experiments_resolve(spec):
    module, arg = load_experiment(spec)
    points = module.get_sweep(arg) if hasattr(module, "get_sweep") else [{}]
    for p in points:
        cfg = resolve(apply_overrides(module.get_config(arg), dict(p)))
        assert cfg.train.steps > 0
