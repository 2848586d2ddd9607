"""Tokenizers (byte, bpe:V, hf:PATH, spm:PATH), the `files` source, the sharded token store
(resume after kill -9, lock), `scaling data prepare` and its bad inputs. Small corpora in tmp dirs."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_cli, tiny_config
from scaling import cli
from scaling.config import default_config, model_vocab_size, resolve
from scaling.data import sources, store
from scaling.data.tokenizer import get_tokenizer

WORDS = ("the quick brown fox jumps over lazy dog héllo wörld — naïve café 日本語 🙂 "
         "alpha beta gamma delta\ttab  two  spaces").split(" ")


def _doc(rng: random.Random, n: int | None = None) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(n or rng.randint(3, 60)))
    return text + ("\n" + text[:20] if rng.random() < 0.3 else "")


def write_jsonl(folder, files: int, docs: int, seed: int = 0, key: str = "text") -> list[str]:
    rng, out = random.Random(seed), []
    os.makedirs(folder, exist_ok=True)
    for f in range(files):
        path = os.path.join(folder, f"part{seed}-{f:03d}.jsonl")
        with open(path, "w") as fh:
            for _ in range(docs):
                fh.write(json.dumps({key: _doc(rng)}) + "\n")
        out.append(path)
    return out


def files_cfg(tmp_path, pattern: str, **data):
    cfg = resolve(default_config())
    cfg.data.update(dict(name="files", files=pattern, data_dir=str(tmp_path / "data"),
                         val_fraction=0.1, workers=1))
    cfg.data.update(data)
    return cfg


def all_docs(cfg) -> dict[str, list[str]]:
    return {s: list(sources.documents(cfg.data, s)) for s in ("train", "validation")}


# ---------------------------------------------------------------------------- tokenizers

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    write_jsonl(d, files=3, docs=100)
    return d


def _check_tokenizer(tok, docs):
    lengths_V = tok.token_byte_lengths()
    assert lengths_V.shape == (tok.vocab_size,) and lengths_V[tok.eos_id] == 1
    batch = tok.encode_batch(docs)
    for text, ids in zip(docs, batch):
        assert ids.dtype == np.int32 and ids.max(initial=0) < tok.vocab_size
        np.testing.assert_array_equal(ids, tok.encode(text))
        assert tok.decode(ids) == text                       # every document round-trips
        assert tok.decode(np.append(ids, tok.eos_id)) == text  # EOS is dropped
        assert lengths_V[ids].sum() == len(text.encode("utf-8"))
    assert len(tok.fingerprint) == 64


def test_tokenizers_round_trip_and_byte_lengths(corpus, tmp_path):
    cfg = files_cfg(tmp_path, str(corpus / "*.jsonl"), tokenizer="bpe:300")
    docs = all_docs(cfg)["validation"] + ["", " leading and trailing ", "a\n\nb\r\n"]
    byte = get_tokenizer("byte")
    _check_tokenizer(byte, docs)
    assert (byte.token_byte_lengths() == 1).all()           # so bpb == loss / ln 2 for byte
    bpe = store.tokenizer_for(cfg.data)
    assert bpe.name == "bpe:300" and 257 <= bpe.vocab_size <= 300
    assert sum(map(len, bpe.encode_batch(docs))) < sum(map(len, byte.encode_batch(docs)))
    _check_tokenizer(bpe, docs)
    hf = get_tokenizer(f"hf:{bpe.path}")                    # any local tokenizer.json
    _check_tokenizer(hf, docs)
    assert hf.fingerprint == bpe.fingerprint

    import sentencepiece as spm
    model = tmp_path / "m.model"
    with open(model, "wb") as f:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(all_docs(cfg)["train"]), model_writer=f, vocab_size=340,
            byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=False,
            remove_extra_whitespaces=False, split_by_whitespace=True, minloglevel=2)
    sp = get_tokenizer(f"spm:{model}")
    _check_tokenizer(sp, docs)
    assert model_vocab_size(f"spm:{model}") % 128 == 0
    assert model_vocab_size(f"spm:{model}") >= sp.vocab_size


def test_bpe_cache_is_reused(corpus, tmp_path):
    cfg = files_cfg(tmp_path, str(corpus / "*.jsonl"), tokenizer="bpe:400")
    first = store.tokenizer_for(cfg.data)
    mtime = os.path.getmtime(first.path)
    again = store.tokenizer_for(cfg.data)
    assert again.path == first.path and os.path.getmtime(first.path) == mtime
    assert os.path.dirname(first.path) == str(tmp_path / "data" / "tokenizers")
    cfg.data.tokenizer = "bpe:512"
    assert store.tokenizer_for(cfg.data).path != first.path  # keyed by (corpus, V)


def test_vocab_size_follows_tokenizer():
    cfg = default_config()
    assert resolve(cfg).model.vocab_size == 257
    cfg.data.tokenizer = "bpe:1000"
    assert resolve(cfg).model.vocab_size == 1024
    cfg.model.vocab_size = 2000                             # explicit: kept
    assert resolve(cfg).model.vocab_size == 2000


# ---------------------------------------------------------------------------- files source

def test_files_source_every_format(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = random.Random(1)
    texts = [_doc(rng) for _ in range(40)]
    d = tmp_path / "in"
    d.mkdir()
    for i, t in enumerate(texts[:5]):
        (d / f"doc{i}.txt").write_text(t)
    (d / "paras.txt").write_text("\n\n".join(t.replace("\n", " ") for t in texts[5:10]) + "\n")
    with open(d / "a.jsonl", "w") as f:
        f.writelines(json.dumps({"body": t}) + "\n" for t in texts[10:20])
    with gzip.open(d / "b.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"body": t}) + "\n" for t in texts[20:30])
    pq.write_table(pa.table({"body": texts[30:40]}), d / "c.parquet", row_group_size=3)
    cfg = files_cfg(tmp_path, f"{d}/doc*.txt,{d}/*.jsonl,{d}/*.gz,{d}/*.parquet",
                    text_key="body", shard_mb=1e-4)                # tiny units: many shards
    got = all_docs(cfg)
    assert sorted(got["train"] + got["validation"]) == sorted(texts[:5] + texts[10:40])
    assert all(sources.is_validation(t, 0.1) for t in got["validation"])
    assert len(sources.plan(cfg.data, sources.ROLES)) > 5
    cfg.data.files, cfg.data.split_docs = str(d / "paras.txt"), True
    got = all_docs(cfg)
    assert sorted(got["train"] + got["validation"]) == sorted(t.replace("\n", " ")
                                                              for t in texts[5:10])


def test_hash_split_is_stable_when_files_are_added(tmp_path):
    write_jsonl(tmp_path / "c", files=2, docs=200, seed=0)
    cfg = files_cfg(tmp_path, str(tmp_path / "c" / "*.jsonl"))
    before = all_docs(cfg)
    assert 0 < len(before["validation"]) < len(before["train"])
    write_jsonl(tmp_path / "c", files=1, docs=200, seed=7)          # a new file
    after = all_docs(cfg)
    assert set(before["validation"]) <= set(after["validation"])
    assert set(before["train"]) <= set(after["train"])
    assert not set(after["train"]) & set(after["validation"])


# ---------------------------------------------------------------------------- token store

def _shard_hashes(path: str) -> dict[str, str]:
    out = {}
    for name in sorted(os.listdir(path)):
        if name.endswith((".tok", ".doc")):
            with open(os.path.join(path, name), "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_store_reads_windows_across_shards(tmp_path):
    write_jsonl(tmp_path / "c", files=4, docs=50)
    cfg = tiny_config()
    cfg.data.update(dict(name="files", files=str(tmp_path / "c" / "*.jsonl"), workers=1,
                         data_dir=str(tmp_path / "data"), shard_mb=0.002, val_fraction=0.1))
    cfg = resolve(cfg)
    from scaling.data import TokenBatches
    tb = TokenBatches(cfg)
    assert isinstance(tb.tokens, store.ShardedTokens) and len(tb.tokens._parts) > 3
    flat = np.asarray(tb.tokens)
    docs = all_docs(cfg)["train"]
    np.testing.assert_array_equal(flat, get_tokenizer("byte").encode_documents(docs))
    for step in (0, 1, 5):
        x = tb.batch(step)
        for row in x:   # each row is a window of the flat stream, wherever the shards split it
            starts = np.flatnonzero(flat[: tb.num_windows * 32 : 32] == row[0]) * 32
            assert any(np.array_equal(flat[s:s + 33], row) for s in starts)
    assert tb.token_bytes_V.shape == (257,)
    index = store.read_index(store.prepare(cfg.data))
    assert index["splits"]["train"]["tokens"] == len(flat)
    assert index["splits"]["train"]["text_bytes"] == sum(len(t.encode()) for t in docs)


def test_largest_units_first_and_split_size_from_the_index(tmp_path, monkeypatch):
    for seed, docs in enumerate((10, 80, 30)):   # units 0, 1, 2: small, large, middle
        write_jsonl(tmp_path / "c", files=1, docs=docs, seed=seed)
    cfg = files_cfg(tmp_path, str(tmp_path / "c" / "*.jsonl"))
    order, write_unit = [], store._write_unit
    monkeypatch.setattr(store, "_write_unit", lambda c, u, i, *a: order.append(i) or
                        write_unit(c, u, i, *a))
    n = len(store.load_tokens(cfg.data, "train"))
    assert order == [1, 2, 0]
    index = store.read_index(store.prepare(cfg.data))
    assert [s["file"] for s in index["splits"]["train"]["shards"]] == [
        f"train-0000{i}.tok" for i in range(3)]        # shard numbers follow the plan
    monkeypatch.setattr(store, "open_split", lambda *a: pytest.fail("shards were opened"))
    assert store.split_tokens(cfg.data, "train") == n


def _prepare_cmd(cfg_dir: str, pattern: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "scaling.cli", "data", "prepare", "--config.data.name=files",
            f"--config.data.files={pattern}", f"--config.data.data_dir={cfg_dir}",
            "--config.data.shard_mb=0.004", f"--config.data.workers={workers}"]


def test_kill_9_mid_prepare_then_rerun_gives_identical_shards(tmp_path):
    write_jsonl(tmp_path / "c", files=6, docs=400)
    pattern = str(tmp_path / "c" / "*.jsonl")
    env = dict(os.environ, PYTHONPATH=ROOT)
    killed_dir = str(tmp_path / "killed")
    p = subprocess.Popen(_prepare_cmd(killed_dir, pattern, 2), cwd=ROOT, env=env,
                         start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    root = os.path.join(killed_dir, "token_store")
    deadline = time.time() + 120
    while time.time() < deadline:
        dirs = [os.path.join(root, d) for d in (os.listdir(root) if os.path.isdir(root) else [])
                if os.path.isdir(os.path.join(root, d))]
        units = [n for d in dirs for n in os.listdir(d) if n.startswith("unit-")]
        if len(units) >= 3:
            break
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)                       # the command and its workers
    p.wait()
    (store_dir,) = [os.path.join(root, d) for d in os.listdir(root)
                    if os.path.isdir(os.path.join(root, d))]
    assert not os.path.exists(os.path.join(store_dir, "index.json")), "killed too late"
    assert subprocess.run(_prepare_cmd(killed_dir, pattern, 2), cwd=ROOT, env=env,
                          capture_output=True).returncode == 0
    cfg = files_cfg(tmp_path, pattern, data_dir=str(tmp_path / "fresh"), shard_mb=0.004)
    cfg.data.val_fraction = default_config().data.val_fraction   # as the command's
    fresh = store.prepare(cfg.data, progress=False)                # uninterrupted, 1 worker
    assert os.path.basename(fresh) == os.path.basename(store_dir)
    assert _shard_hashes(store_dir) == _shard_hashes(fresh) and len(_shard_hashes(fresh)) > 10
    a, b = store.read_index(store_dir), store.read_index(fresh)
    assert a["splits"] == b["splits"]
    assert not [n for n in os.listdir(store_dir) if n.endswith(".tmp")]


def test_store_lock_builds_once(tmp_path):
    """Two concurrent prepares of one store: one builds, the other waits and reuses it."""
    write_jsonl(tmp_path / "c", files=2, docs=100)
    env = dict(os.environ, PYTHONPATH=ROOT)
    cmd = _prepare_cmd(str(tmp_path / "d"), str(tmp_path / "c" / "*.jsonl"), 1)
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    built = [err for _, err in outs if "token store:" in err]
    assert len(built) == 1                                  # exactly one process built it


# ---------------------------------------------------------------------------- end to end

def test_train_on_files_with_bpe(tmp_path):
    write_jsonl(tmp_path / "c", files=2, docs=150)
    r = run_cli("train", "--config", "tests/tiny_experiment.py", "--workdir",
                str(tmp_path / "run"), "--config.data.name=files",
                f"--config.data.files={tmp_path}/c/*.jsonl", "--config.data.tokenizer=bpe:1024",
                "--config.train.steps=5", f"--config.data.data_dir={tmp_path}/data")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f)["model"]["vocab_size"] == 1024
    with open(tmp_path / "run" / "summary.json") as f:
        summary = json.load(f)
    assert summary["status"] == "done" and 0 < summary["epochs"] < 1


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("case", ["no-match", "not-utf8", "no-key", "unreadable",
                                  "no-tokenizer-file", "vocab-too-small"])
def test_bad_input_is_one_line_exit_2(case, tmp_path, capsys):
    d = tmp_path / "c"
    write_jsonl(d, files=1, docs=5)
    pattern, extra = str(d / "*.jsonl"), []
    if case == "no-match":
        pattern = str(d / "*.nothing.jsonl")
    elif case == "not-utf8":
        (d / "bad.txt").write_bytes(b"caf\xe9 latin-1")
        pattern = str(d / "*.txt")
    elif case == "no-key":
        write_jsonl(d, files=1, docs=5, seed=3, key="content")
    elif case == "unreadable":
        os.symlink(d / "missing-target.jsonl", d / "dangling.jsonl")
    elif case == "no-tokenizer-file":
        extra = [f"--config.data.tokenizer=hf:{tmp_path}/nope/tokenizer.json"]
    else:
        extra = ["--config.data.tokenizer=bpe:100"]
    code = cli.main(["data", "prepare", "--config.data.name=files", f"--config.data.files={pattern}",
                     f"--config.data.data_dir={tmp_path}/data", "--config.data.workers=1", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    expected = {"no-match": "matches no file", "not-utf8": "not UTF-8", "no-key": "no field 'text'",
                "unreadable": "cannot read", "no-tokenizer-file": "no such file",
                "vocab-too-small": "vocabulary too small"}[case]
    assert expected in err[0]
    index = [f for _, _, fs in os.walk(tmp_path / "data") for f in fs if f == "index.json"]
    assert not index                                        # nothing half-built reads as complete
