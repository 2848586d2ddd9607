"""Bits per byte: train/val rows, summary, results table and `scaling fit --loss-col val_bpb`."""
import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from analysis.cli import main as cli_main
from analysis.synthetic import make_synthetic_sweep
from conftest import tiny_config
from scaling.data.tokenizer import ByteTokenizer
from scaling.fileio import read_jsonl
from scaling.train.loop import _accumulate, bits_per_byte, train


def test_byte_tokenizer_counts_one_byte_per_id_eos_included():
    table = ByteTokenizer().token_byte_lengths()
    assert table.shape == (257,) and (table == 1).all()


def test_bpb_is_nats_over_bytes_of_the_targets():
    """A window of two steps whose targets stand for 3 bytes each: bpb = loss / 3 / ln 2."""
    bytes_V = jnp.asarray(np.arange(10, dtype=np.int32))
    tokens_BT1 = jnp.full((2, 5), 3, jnp.int32).at[:, 0].set(9)  # the inputs' first id: unused
    acc = {"sum": jnp.float32(0), "n": jnp.int32(0), "bpt": jnp.float32(0)}
    for loss in (2.0, 4.0, float("nan")):  # a non-finite step counts neither nats nor bytes
        acc = _accumulate(acc, jnp.float32(loss), tokens_BT1, bytes_V)
    assert int(acc["n"]) == 2 and float(acc["bpt"]) == 6.0
    loss = float(acc["sum"]) / 2
    assert bits_per_byte(loss, float(acc["bpt"]) / 2) == pytest.approx(3.0 / 3 / math.log(2))


def test_byte_tokenizer_bpb_is_loss_over_ln2(tmp_path):
    cfg = tiny_config()
    cfg.train.steps, cfg.eval.every = 6, 4
    s = train(cfg, str(tmp_path), verbose=False)
    rows = read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if r.get("split") == "val"]
    assert len(train_rows) == 3 and len(val_rows) == 2
    for r in train_rows:
        assert r["bpb"] == r["loss"] / math.log(2)
    for r in val_rows:
        assert r["val_bpb"] == r["val_loss"] / math.log(2)
    assert s["bpb"] == s["loss"] / math.log(2) and s["val_bpb"] == s["val_loss"] / math.log(2)
    assert s["corpus_share"] == 1.0 and s["epochs"] == s["tokens"] / s["train_split_tokens"]


def test_fit_on_val_bpb_column(tmp_path, capsys):
    """--loss-col val_bpb fits that column (a loss in bits: E scales by 1/ln 2, exponents stay)."""
    df = pd.read_csv(make_synthetic_sweep(tmp_path / "sweep") / "results.csv")
    df["val_bpb"] = df["val_loss"] / math.log(2)
    path = tmp_path / "results_bpb.csv"
    df.to_csv(path, index=False)
    fits = {}
    for col in ("val_loss", "val_bpb"):
        assert cli_main(["fit", "chinchilla", str(path), "--loss-col", col, "--grid", "small",
                         "--n-col", "params_non_embedding", "--bootstrap", "0", "--json"]) == 0
        fits[col] = json.loads(capsys.readouterr().out)
    assert fits["val_bpb"]["loss_col"] == "val_bpb"
    assert fits["val_bpb"]["E"] == pytest.approx(fits["val_loss"]["E"] / math.log(2), rel=1e-3)
    assert fits["val_bpb"]["alpha"] == pytest.approx(fits["val_loss"]["alpha"], rel=1e-3)
    assert cli_main(["fit", "chinchilla", str(path), "--loss-col", "val_bpc", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "val_bpb" in err
