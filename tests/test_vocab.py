"""experiments/vocab.py (vocabulary as a sweep axis) and its plot: val_bpb vs vocabulary per
size, drawn by `scaling plot DIR` from a results table (synthetic here)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main as cli_main
from analysis.plots import vocab as vplot
from scaling.experiments import vocab
from scaling.config import apply_overrides, resolve

TOKENIZERS = ["byte", "bpe:512", "bpe:1024", "bpe:2048", "bpe:4096", "bpe:8192"]
BEST = {25_000: "bpe:512", 99_000: "bpe:1024", 394_000: "bpe:4096"}   # planted optima


def vocab_table(with_bpb: bool = True) -> pd.DataFrame:
    """3 sizes x 6 tokenizers (+ a failed trial): bpb a parabola in log2(V) whose minimum
    sits at BEST[N], so the largest model prefers the largest vocabulary."""
    rows = []
    for n, best in BEST.items():
        for spec in TOKENIZERS:
            v, v0 = vplot.vocab_of(spec), vplot.vocab_of(best)
            bpb = 2.5 - 0.2 * np.log10(n) + 0.02 * (np.log2(v) - np.log2(v0)) ** 2
            tokens = 1e6 * (1 if spec == "byte" else 0.3)
            rows.append({"trial_id": f"n{n}-{spec}", "status": "done", "data.tokenizer": spec,
                         "params_non_embedding": n, "tokens": tokens, "flops": 6 * n * tokens,
                         "steps": 500, "val_loss": bpb * np.log(2) * (1e6 / tokens),
                         "loss": bpb * np.log(2) * (1e6 / tokens), "val_bpb": bpb})
    rows.append({**rows[0], "trial_id": "failed", "status": "failed", "val_bpb": np.nan})
    df = pd.DataFrame(rows)
    return df if with_bpb else df.drop(columns="val_bpb")


def test_vocab_of_and_best_vocab():
    assert vplot.vocab_of("byte") == 257 and vplot.vocab_of("bpe:2048") == 2048
    assert np.isnan(vplot.vocab_of("hf:/x/tokenizer.json"))
    assert vplot.vocab_of("hf:/x/tokenizer.json", 50257) == 50257
    table = vplot.vocab_table(vocab_table())
    assert len(table) == 18                           # the failed trial dropped
    best = vplot.best_vocab(table)
    assert dict(zip(best["params_non_embedding"], best["data.tokenizer"])) == BEST


@pytest.mark.parametrize("with_bpb", [True, False])
def test_scaling_plot_draws_bpb_vs_vocab(tmp_path, with_bpb, capsys):
    d = tmp_path / "sweep"
    d.mkdir()
    vocab_table(with_bpb).to_csv(d / "results.csv", index=False)
    assert cli_main(["plot", str(d), "--out", str(tmp_path / "p"), "--no-fit"]) == 0
    png = tmp_path / "p" / "bpb_vs_vocab.png"
    assert png.exists() == with_bpb
    assert (tmp_path / "p" / "loss_vs_compute.png").exists()   # the usual plots still drawn
    if with_bpb:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(png) in capsys.readouterr().out


def test_vocab_sweep_trains_every_tokenizer_on_the_same_text(monkeypatch):
    bytes_per_token = {"byte": 1.0, "bpe:512": 2.0, "bpe:1024": 2.5, "bpe:2048": 3.0,
                       "bpe:4096": 3.5, "bpe:8192": 4.0}   # stands in for the real stores
    monkeypatch.setattr(vocab, "bytes_per_token", lambda base, t: bytes_per_token[t])
    points = vocab.get_sweep()
    assert len(points) == 18
    assert {p["data.tokenizer"] for p in points} == set(TOKENIZERS)
    for p in points:
        text = p["train.tokens"] * bytes_per_token[p["data.tokenizer"]]
        assert abs(text - vocab.TEXT_BYTES) <= bytes_per_token[p["data.tokenizer"]]
    lrs = {p["model.d_model"]: p["train.lr"] for p in points}
    assert len(set(lrs.values())) == 3                # per-size lr, shared across tokenizers
    pilot = vocab.get_sweep("pilot")
    assert [p["data.tokenizer"] for p in pilot] == ["byte", "bpe:512"]
    vocab_sizes = [resolve(apply_overrides(vocab.get_config(), p)).model.vocab_size for p in pilot]
    assert vocab_sizes == [257, 512]                  # the model follows the tokenizer
