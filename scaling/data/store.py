"""The token store: a source tokenized once into memory-mapped shards (docs/design.md, "token store").

    <data_dir>/token_store/<name>-<tokenizer>-<key>/
        index.json                   written last: the store is complete iff it exists
        unit-00000.json              one unit of work done (its shards' sizes and checksums)
        train-00000.tok              tokens, raw uint16 (uint32 if vocab > 65536): docs + EOS each
        train-00000.doc              uint64 end offset of each document in the shard
        validation-00000.tok/.doc    the same unit's validation documents
    <data_dir>/token_store/<...>.lock  flock: one process builds, the others wait and reuse
    <data_dir>/tokenizers/bpe-<V>-<corpus key>.json   trained bpe:V tokenizers (same lock rule)

The key hashes the source's fingerprint (scaling.data.sources.fingerprint), the tokenizer's and
STORE_FORMAT. Unit i of the source plan (sources.plan) becomes shard i of each split, written by
one worker process (`multiprocessing`, one per core) through `atomic_write`; its unit-i.json
comes after its shards. A shard is a pure function of its unit, so a build killed at any moment
and run again redoes only the units without a unit json and ends with byte-identical shards.
Memory per worker is one batch of documents plus one shard's document offsets, whatever the
corpus size. Readers open shards with `np.memmap`; a split is their concatenation.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import multiprocessing
import os
import re
import sys
import time
from types import SimpleNamespace
from typing import Iterator

import numpy as np

from scaling.data import sources
from scaling.data.sources import Unit, data_dir
from scaling.data.tokenizer import Tokenizer, get_tokenizer, train_bpe
from scaling.config import tokenizer_spec
from scaling.errors import UserError
from scaling.fileio import atomic_write, write_json_atomic
from scaling.data.sources import split_name, store_splits

STORE_FORMAT = 1       # bump when the shard layout or the document -> token rule changes
INDEX = "index.json"
BATCH_CHARS = 1 << 20  # documents are encoded in batches of about this much text


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60]


@contextlib.contextmanager
def _locked(path: str, what: str) -> Iterator[None]:
    """An exclusive flock on `path`.lock (the OS drops it if the holder dies); says so if it waits."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process building {what} ({path})", file=sys.stderr,
                  flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------- tokenizer

def _bpe_texts(cfg_data, limit_bytes: float) -> Iterator[str]:
    seen = 0
    for text in sources.documents(cfg_data, cfg_data.train_split):
        yield text
        seen += len(text.encode("utf-8"))
        if seen >= limit_bytes:
            return


def bpe_path(cfg_data, vocab: int) -> str:
    """Where bpe:V trained on this source's train split is cached (key: corpus, V, sample)."""
    train = sources.split_name(cfg_data, cfg_data.train_split)
    key = _sha({"source": sources.fingerprint(cfg_data, (train,)), "vocab": vocab,
                "train_mb": cfg_data.bpe_train_mb, "format": STORE_FORMAT})[:16]
    return os.path.join(data_dir(cfg_data), "tokenizers",
                        f"bpe-{vocab}-{_safe(cfg_data.name)}-{key}.json")


def tokenizer_for(cfg_data) -> Tokenizer:
    """`data.tokenizer` for this source; bpe:V is trained on the train split on first use."""
    kind, arg = tokenizer_spec(cfg_data.tokenizer)
    if kind != "bpe":
        return get_tokenizer(cfg_data.tokenizer)
    path = bpe_path(cfg_data, arg)
    if not os.path.exists(path):
        with _locked(path, f"tokenizer {cfg_data.tokenizer}"):
            if not os.path.exists(path):
                t0 = time.perf_counter()
                train_bpe(arg, _bpe_texts(cfg_data, cfg_data.bpe_train_mb * 1e6), path)
                print(f"trained {cfg_data.tokenizer} on {cfg_data.name} in "
                      f"{time.perf_counter() - t0:.1f}s -> {path}", file=sys.stderr, flush=True)
    return get_tokenizer(cfg_data.tokenizer, bpe_path=path)


# ---------------------------------------------------------------------------- writing

def store_path(cfg_data, splits: tuple[str, ...], tokenizer: Tokenizer) -> str:
    key = _sha({"format": STORE_FORMAT, "source": sources.fingerprint(cfg_data, splits),
                "tokenizer": tokenizer.fingerprint})[:16]
    name = f"{_safe(cfg_data.name)}-{_safe(cfg_data.tokenizer.split('/')[-1])}-{key}"
    return os.path.join(data_dir(cfg_data), "token_store", name)


def _dtype(tokenizer) -> np.dtype:
    return np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)


def _doc_batches(docs: Iterator[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    batch, chars = [], 0
    for role, text in docs:
        batch.append((role, text))
        chars += len(text)
        if chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


class _Shard:
    """One split's shard of a unit while it is written: checksum, counts, document ends."""

    def __init__(self):
        self.sha, self.tokens, self.text_bytes, self.ends = hashlib.sha256(), 0, 0, []
        self.file = None

    def add(self, ids: list[np.ndarray], texts: list[str], eos: int, dtype) -> None:
        eos_1 = np.array([eos], dtype)
        flat = np.concatenate([p for a in ids for p in (a.astype(dtype), eos_1)])
        self.file.write(flat.tobytes())
        self.sha.update(flat.tobytes())
        self.ends.append(self.tokens + np.cumsum([len(a) + 1 for a in ids], dtype=np.uint64))
        self.tokens += len(flat)
        self.text_bytes += sum(len(t.encode("utf-8")) for t in texts)


def _encode_unit(cfg_data, unit: Unit, tokenizer, dtype, shards: dict) -> None:
    for batch in _doc_batches(sources.unit_documents(cfg_data, unit)):
        for split, shard in shards.items():
            texts = [t for s, t in batch if s == split]
            if texts:
                shard.add(tokenizer.encode_batch(texts), texts, tokenizer.eos_id, dtype)


def _shard_name(split: str, i: int) -> str:
    return f"{_safe(split)}-{i:05d}"


def _write_nested(paths: list[tuple[str, str]], body, files: dict) -> None:
    """`atomic_write` of every path at once: `body(files)` writes them all in one pass."""
    if not paths:
        body(files)
        return
    (split, path), rest = paths[0], paths[1:]
    atomic_write(path, lambda f: _write_nested(rest, body, {**files, split: f}))


def _write_unit(cfg_data, unit: Unit, i: int, out: str, splits: tuple[str, ...], tokenizer,
                dtype) -> dict:
    """Tokenize unit `i` into one shard per split, then its unit json (the unit's done mark)."""
    shards = {split: _Shard() for split in splits}

    def body(files):
        for split, f in files.items():
            shards[split].file = f
        _encode_unit(cfg_data, unit, tokenizer, dtype, shards)
    _write_nested([(s, os.path.join(out, _shard_name(s, i) + ".tok")) for s in splits], body, {})
    meta = {"unit": i, "nbytes": unit.nbytes, "shards": {}}
    for split, s in shards.items():
        ends = (np.concatenate(s.ends) if s.ends else np.zeros(0, np.uint64)).tobytes()
        name = _shard_name(split, i)
        atomic_write(os.path.join(out, name + ".doc"), ends)
        meta["shards"][split] = {"file": name + ".tok", "tokens": s.tokens, "docs": len(ends) // 8,
                                 "text_bytes": s.text_bytes, "sha256": s.sha.hexdigest(),
                                 "doc_file": name + ".doc",
                                 "doc_sha256": hashlib.sha256(ends).hexdigest()}
    write_json_atomic(os.path.join(out, f"unit-{i:05d}.json"), meta)
    return meta


_WORKER: dict = {}


def _worker_init(cfg_dict: dict, tokenizer_args: tuple) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _WORKER["cfg"] = SimpleNamespace(**cfg_dict)
    _WORKER["tok"] = get_tokenizer(*tokenizer_args)


def _worker_task(job: tuple) -> dict:
    return _write_unit(_WORKER["cfg"], *job[:4], _WORKER["tok"], job[4])


def _workers(cfg_data) -> int:
    return cfg_data.workers or len(os.sched_getaffinity(0))


def _run_units(cfg_data, units: list[Unit], out: str, splits: tuple[str, ...], tokenizer,
               progress: bool) -> None:
    """Write every unit without a unit json: in this process, or one worker per core."""
    from tqdm import tqdm  # lazy: only a build shows a bar
    todo = [i for i in range(len(units))
            if not os.path.exists(os.path.join(out, f"unit-{i:05d}.json"))]
    done = sum(u.nbytes for u in units) - sum(units[i].nbytes for i in todo)
    # Largest units first: the pool then ends with small ones, so no worker finishes long
    # after the others (a unit's shard number is fixed by i, whatever order it runs in).
    todo.sort(key=lambda i: -units[i].nbytes)
    jobs = [(units[i], i, out, splits, _dtype(tokenizer)) for i in todo]
    bar = tqdm(total=sum(u.nbytes for u in units), initial=done, unit="B", unit_scale=True,
               unit_divisor=1000, desc=f"prepare {cfg_data.name} {cfg_data.tokenizer}",
               disable=None if progress else True, file=sys.stderr, dynamic_ncols=True)
    workers = min(_workers(cfg_data), len(jobs))
    with bar:
        if workers <= 1:
            for job in jobs:
                bar.update(_write_unit(cfg_data, *job[:4], tokenizer, job[4])["nbytes"])
            return
        # spawn: the parent may hold JAX threads, which a fork would copy half-locked
        ctx = multiprocessing.get_context("spawn")
        args = (dict(vars(cfg_data)) if isinstance(cfg_data, SimpleNamespace) else cfg_data.to_dict(),
                (cfg_data.tokenizer, getattr(tokenizer, "path", None)))
        with ctx.Pool(workers, initializer=_worker_init, initargs=args) as pool:
            for meta in pool.imap_unordered(_worker_task, jobs):
                bar.update(meta["nbytes"])


def _assemble(cfg_data, n_units: int, out: str, splits: tuple[str, ...], tokenizer) -> dict:
    """The index from the unit jsons, in unit order; an empty split is a `UserError`."""
    totals = {s: {"tokens": 0, "docs": 0, "text_bytes": 0, "shards": []} for s in splits}
    for i in range(n_units):
        with open(os.path.join(out, f"unit-{i:05d}.json")) as f:
            meta = json.load(f)
        for split, total in totals.items():
            shard = meta["shards"][split]
            total["shards"].append(shard)
            for k in ("tokens", "docs", "text_bytes"):
                total[k] += shard[k]
    for split, total in totals.items():
        if total["docs"] == 0:
            hint = ("raise data.val_fraction or add documents" if cfg_data.name == "files"
                    else "pick another split (data.train_split/data.val_split)")
            raise UserError(f"the {split} split of {cfg_data.name!r} has no documents: {hint}")
    source = sources.fingerprint(cfg_data, splits)
    return {"format": STORE_FORMAT, "tokenizer": cfg_data.tokenizer,
            "tokenizer_fingerprint": tokenizer.fingerprint, "vocab_size": tokenizer.vocab_size,
            "eos_id": tokenizer.eos_id, "dtype": _dtype(tokenizer).name, "source": source,
            "source_fingerprint": _sha(source), "splits": totals}


def prepare(cfg_data, split: str | None = None, *, progress: bool = True) -> str:
    """Build the token store holding `split` (default data.train_split) unless it is complete;
    returns its folder. Under the store's lock, so concurrent callers build it once; a killed
    build resumes."""
    tokenizer = tokenizer_for(cfg_data)
    splits = store_splits(cfg_data, split_name(cfg_data, split or cfg_data.train_split))
    out = store_path(cfg_data, splits, tokenizer)
    if os.path.exists(os.path.join(out, INDEX)):
        return out
    with _locked(out, "the token store"):
        if os.path.exists(os.path.join(out, INDEX)):
            return out
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(out):  # temp files of a killed build
            if name.endswith(".tmp"):
                os.remove(os.path.join(out, name))
        units = sources.plan(cfg_data, splits)
        if not units:
            raise UserError(f"{cfg_data.name!r} has no documents: check data.files")
        t0 = time.perf_counter()
        _run_units(cfg_data, units, out, splits, tokenizer, progress)
        index = _assemble(cfg_data, len(units), out, splits, tokenizer)
        write_json_atomic(os.path.join(out, INDEX), index)
        if progress:
            n = {k: v["tokens"] for k, v in index["splits"].items()}
            print(f"token store: {n} tokens in {time.perf_counter() - t0:.1f}s -> {out}",
                  file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------------------- reading

class ShardedTokens:
    """A split's shards as one flat read-only token array: len, shape, dtype, indexing by int,
    slice or integer array (windows may cross shard boundaries), np.asarray."""

    def __init__(self, parts: list[np.ndarray]):
        self._parts = parts
        self._starts = np.cumsum([0] + [len(p) for p in parts])
        self.shape, self.dtype = (int(self._starts[-1]),), parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def _take(self, idx: np.ndarray) -> np.ndarray:
        flat = idx.reshape(-1)
        part = np.searchsorted(self._starts, flat, side="right") - 1
        out = np.empty(flat.shape, self.dtype)
        for p in np.unique(part):
            m = part == p
            out[m] = self._parts[p][flat[m] - self._starts[p]]
        return out.reshape(idx.shape)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._take(np.arange(*key.indices(len(self))))
        if isinstance(key, (int, np.integer)):
            return self._take(np.array([key % len(self)]))[0]
        idx = np.asarray(key, dtype=np.int64)
        return self._take(np.where(idx < 0, idx + len(self), idx))

    def __array__(self, dtype=None, copy=None):
        a = np.concatenate(self._parts)
        return a if dtype is None else a.astype(dtype)


def read_index(path: str) -> dict:
    with open(os.path.join(path, INDEX)) as f:
        return json.load(f)


def open_split(path: str, split: str):
    """The split's tokens of the store at `path`: a memmap (one shard) or `ShardedTokens`."""
    index = read_index(path)
    parts = []
    for shard in index["splits"][split]["shards"]:
        if shard["tokens"] == 0:
            continue  # np.memmap cannot map an empty file
        file = os.path.join(path, shard["file"])
        size = os.path.getsize(file) if os.path.exists(file) else -1
        if size != shard["tokens"] * np.dtype(index["dtype"]).itemsize:
            raise UserError(f"token store {path} is damaged ({shard['file']}): delete the folder "
                            f"and run `scaling data prepare` again")
        parts.append(np.memmap(file, dtype=index["dtype"], mode="r"))
    return parts[0] if len(parts) == 1 else ShardedTokens(parts)


def split_tokens(cfg_data, split: str) -> int:
    """Tokens in a split, from the store's index (prepared on first use); no shard is opened."""
    path = prepare(cfg_data, split, progress=False)
    return int(read_index(path)["splits"][split_name(cfg_data, split)]["tokens"])


def load_tokens(cfg_data, split: str):
    """A split as one flat token array (documents + EOS each), memory-mapped from the store
    (prepared on first use)."""
    return open_split(prepare(cfg_data, split), split_name(cfg_data, split))
