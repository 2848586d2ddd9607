"""CLI: describe --json, and one-line exit-2 errors that leave the disk untouched."""
import json
import os

import pytest

from conftest import run_cli


def test_describe_json():
    r = run_cli("describe", "--config", "experiments/default.py", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # stdout is one JSON object and nothing else
    assert out["params_total"] > out["params_non_embedding"] > 0
    assert out["flops_per_token"] > 6 * out["params_non_embedding"]
    assert out["config"]["model"]["n_kv_heads"] == out["config"]["model"]["n_heads"]


def test_describe_overrides():
    r = run_cli("describe", "--config", "experiments/default.py", "--json",
                "--config.model.d_model=128", "--config.model.n_layers", "4")
    out = json.loads(r.stdout)
    assert out["config"]["model"]["d_model"] == 128 and out["config"]["model"]["n_layers"] == 4
    assert out["params_non_embedding"] == 4 * 12 * 128 * 128 + 4 * 4 * 128 + 2 * 128


BAD = [
    (["--config.train.stpes=5"], "unknown config key 'train.stpes' (did you mean 'train.steps'?)"),
    (["--config.model.d_model=30", "--config.model.n_heads=4"], "not divisible by model.n_heads"),
    (["--config.model.n_heads=4", "--config.model.n_kv_heads=3"], "n_kv_heads"),
    (["--config.train.steps=abc"], "takes a int"),
    (["--config.model.mlp=relu"], "model.mlp='relu' is not one of gelu, swiglu"),
    (["--config.train.batch_size=0"], "train.batch_size must be > 0"),
    (["--config.mesh.data=3"], "needs 3 devices but 1 are available"),
    (["--config.train.seq_len=64", "--config.model.max_len=32"], "exceeds model.max_len"),
    (["--config.data.name=no_such_dataset"], "no_such_dataset"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_config_is_one_line_exit_2(tmp_path, extra, message):
    workdir = tmp_path / "w"
    r = run_cli("train", "--config", "tests/tiny_experiment.py", "--workdir", str(workdir), *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (workdir / "config.json").exists()  # nothing written


def test_missing_config_file(tmp_path):
    r = run_cli("describe", "--config", str(tmp_path / "nope.py"))
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: config file not found: '{tmp_path / 'nope.py'}' " \
                               "(pass --config experiments/NAME.py[:ARG])"


def test_bad_cli_flag():
    r = run_cli("sweep", "--wrokdir", "x")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_cli("frobnicate")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_existing_workdir_of_another_experiment_is_refused(tmp_path):
    w = str(tmp_path / "w")
    ok = run_cli("train", "--config", "tests/tiny_experiment.py", "--workdir", w,
                 "--config.train.steps=2")
    assert ok.returncode == 0, ok.stderr
    before = {f: os.path.getmtime(os.path.join(w, f)) for f in ("config.json", "summary.json")}
    r = run_cli("train", "--config", "tests/tiny_experiment.py", "--workdir", w,
                "--config.train.steps=3")
    assert r.returncode == 2 and "different config" in r.stderr
    assert before == {f: os.path.getmtime(os.path.join(w, f)) for f in before}


def test_train_json_prints_only_the_summary(tmp_path):
    r = run_cli("train", "--config", "tests/tiny_experiment.py", "--workdir", str(tmp_path / "w"),
                "--config.train.steps=2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # one JSON object, no progress lines on stdout
    assert out["status"] == "done" and out["steps"] == 2
