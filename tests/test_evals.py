"""Evaluations: metrics, majority vote, teacher forcing, the train hook, `scaling eval`, collect."""
import json
import os

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from conftest import run_cli, tiny_config
from scaling.config import resolve
from scaling.evals import run as ev
from scaling.tasks import get_task
from scaling.model.transformer import Transformer


def test_edit_distance_and_majority():
    assert ev.edit_distance(b"kitten", b"sitting") == 3
    assert ev.edit_distance(b"", b"abc") == 3 and ev.edit_distance(b"12", b"12") == 0
    assert ev.majority(["3", "4", "4", "3"]) == "3"               # tie: first seen wins
    assert ev.majority(["1", "2", "2"]) == "2"
    samples = [["1", "2", "2"], ["5", "5", "6"], ["7", "8", "9"]]
    assert ev.maj_at(samples, ["2", "5", "9"]) == pytest.approx([1 / 3, 1 / 3, 2 / 3])


def _model(**over):
    cfg = resolve(tiny_config(**{**dict(n_layers=2, init_std=0.3), **over}))
    cfg.train.seq_len = 32
    return cfg, Transformer(cfg.model, nnx.Rngs(params=0))


def test_teacher_forced_matches_full_forward():
    cfg, model = _model()
    prompts, targets = [[1, 2, 3], [4, 5]], [[6, 7], [8, 9, 10]]
    got = ev.teacher_forced(model, prompts, targets)
    lps, correct, brier, n = [], 0, 0.0, 0
    for p, t in zip(prompts, targets):
        seq = np.array([p + t])
        logp = np.asarray(jax.nn.log_softmax(model(seq[:, :-1])))[0]
        lp = 0.0
        for i in range(len(p), len(seq[0])):
            row, y = logp[i - 1], seq[0, i]
            lp += row[y]
            correct += row.argmax() == y
            onehot = np.eye(len(row))[y]
            brier += ((np.exp(row) - onehot) ** 2).sum()
            n += 1
        lps.append(lp)
    assert got["logprob"] == pytest.approx(np.mean(lps), rel=1e-4)
    assert got["token_acc"] == pytest.approx(correct / n)
    assert got["brier"] == pytest.approx(brier / n, rel=1e-4)


@pytest.mark.parametrize("mode", ["direct", "cot"])
def test_setting_scores_an_oracle_and_a_wrong_model(monkeypatch, mode):
    """exact match / edit distance / maj@j read the parsed completions (generation mocked)."""
    cfg, model = _model(max_len=256)
    cfg.eval.update(examples=6, sc_samples=3)
    task = get_task("addition")
    targets = {}
    for i in range(6):
        prompt, target, ex = task.episode(cfg.eval.seed, i, 1, mode == "cot")
        targets[tuple(ev._encode(prompt))] = target
    right = lambda m, prompts, n, **kw: [targets[tuple(p)] for p in prompts]  # noqa: E731
    monkeypatch.setattr(ev, "_complete", right)
    rows = {r["metric"]: r["value"] for r in ev.evaluate_setting(model, task, cfg.eval, 1, mode, True)}
    assert rows["exact_match"] == 1.0 and rows["edit_distance"] == 0.0
    assert [rows[f"maj@{j}"] for j in (1, 2, 3)] == [1.0, 1.0, 1.0]
    assert rows["shots_used"] == 1.0
    wrong = lambda m, prompts, n, **kw: ["1+1=2 so 9999\n"] * len(prompts)  # noqa: E731
    monkeypatch.setattr(ev, "_complete", wrong)
    rows = {r["metric"]: r["value"] for r in ev.evaluate_setting(model, task, cfg.eval, 1, mode, True)}
    assert rows["exact_match"] == 0.0 and rows["edit_distance"] > 0 and rows["maj@3"] == 0.0


def test_long_prompts_drop_demos_to_fit():
    cfg, model = _model(max_len=48)                               # room for the query only
    cfg.eval.update(examples=2, sc_samples=0)
    rows = ev.evaluate_setting(model, get_task("copy"), cfg.eval, 8, "direct", False)
    assert {r["metric"]: r["value"] for r in rows}["shots_used"] == 0.0


@pytest.mark.slow
def test_train_writes_eval_jsonl_and_cli_eval(tmp_path):
    c = tiny_config()
    c.train.update(steps=4, seq_len=96)
    c.data.mixture = "kjv:0.5,addition:0.25,icl_mapping:0.25"
    c.eval.update(tasks="addition,icl_mapping,text", examples=3, shots="0,2", sc_samples=2)
    from scaling.evals.trained import evaluate_trained
    from scaling.train.loop import train
    summary = evaluate_trained(str(tmp_path), train(c, str(tmp_path), verbose=False))
    assert summary["eval_s"] > 0
    # epochs count corpus tokens: half the rows here are generated task text
    assert summary["corpus_share"] == 0.5
    assert summary["epochs"] == pytest.approx(summary["tokens"] * 0.5 / summary["train_split_tokens"])
    rows = [json.loads(line) for line in open(tmp_path / "eval.jsonl")]
    keys = {(r["task"], r["shots"], r["mode"]) for r in rows}
    assert keys == {("addition", 0, "direct"), ("addition", 0, "cot"), ("addition", 2, "direct"),
                    ("addition", 2, "cot"), ("icl_mapping", 0, "direct"),
                    ("icl_mapping", 2, "direct"), ("text", 0, "direct")}
    metrics = {r["metric"] for r in rows if r["task"] == "addition" and r["shots"] == 2}
    assert {"exact_match", "edit_distance", "logprob", "token_acc", "brier", "maj@1",
            "maj@2"} <= metrics
    assert all(np.isfinite(r["value"]) for r in rows)

    # The CLI re-evaluates the checkpoint with other eval settings (overwrites eval.jsonl).
    r = run_cli("eval", "--workdir", str(tmp_path), "--config.eval.tasks=copy",
                "--config.eval.shots=0,1", "--config.eval.examples=2", "--config.eval.sc_samples=0")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in open(tmp_path / "eval.jsonl")]
    assert {(x["task"], x["shots"]) for x in rows} == {("copy", 0), ("copy", 1)}
    bad = run_cli("eval", "--workdir", str(tmp_path), "--config.train.steps=3")
    assert bad.returncode == 2 and "eval.*" in bad.stderr and len(bad.stderr.splitlines()) == 1
    bad = run_cli("eval", "--workdir", str(tmp_path / "nope"))
    assert bad.returncode == 2 and "no trained run" in bad.stderr


@pytest.mark.slow
def test_cli_eval_without_flags_runs_the_default_suite(tmp_path):
    """A run trained with no eval.tasks: `scaling eval --workdir RUN` runs DEFAULT_SUITE."""
    from scaling.tasks import DEFAULT_SUITE, parse_shots, split_specs
    from scaling.train.loop import train
    c = tiny_config()
    c.train.update(steps=2, seq_len=96)
    train(c, str(tmp_path), verbose=False)
    assert not (tmp_path / "eval.jsonl").exists()
    r = run_cli("eval", "--workdir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "default suite" in r.stdout
    rows = [json.loads(line) for line in open(tmp_path / "eval.jsonl")]
    tasks = split_specs(DEFAULT_SUITE["tasks"])
    assert {x["task"] for x in rows} == set(tasks) and len(tasks) >= 3
    assert {x["shots"] for x in rows if x["task"] == "addition"} == set(
        parse_shots(DEFAULT_SUITE["shots"]))
    assert {x["n"] for x in rows} == {DEFAULT_SUITE["examples"]}
    assert all(np.isfinite(x["value"]) for x in rows)
    # A flag replaces its part of the suite; the rest stays.
    r = run_cli("eval", "--workdir", str(tmp_path), "--config.eval.examples=2",
                "--config.eval.shots=0")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in open(tmp_path / "eval.jsonl")]
    assert {x["task"] for x in rows} == set(tasks) and {x["shots"] for x in rows} == {0}
    assert {x["n"] for x in rows} == {2}


def test_collect_adds_eval_columns(tmp_path):
    from scaling.sweeps.runner import collect
    tdir = tmp_path / "trials" / "t1"
    os.makedirs(tdir)
    (tmp_path / "sweep.json").write_text(json.dumps(
        {"varied": [], "trials": [{"trial_id": "t1", "overrides": {}}]}))
    (tdir / "summary.json").write_text(json.dumps({"status": "done", "loss": 1.0}))
    (tdir / "eval.jsonl").write_text(json.dumps(
        {"task": "addition", "shots": 4, "mode": "cot", "metric": "exact_match", "value": 0.5}) + "\n")
    df = collect(str(tmp_path))
    assert df.loc[0, "eval/addition/cot/exact_match@k4"] == 0.5
    assert "eval/addition/cot/exact_match@k4" in pd.read_parquet(tmp_path / "results.parquet")
