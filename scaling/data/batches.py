"""The pretraining stream: documents -> one flat token array (cached .npy) -> batches by step.

Every document is tokenized, followed by EOS, and concatenated. Sequence i is the window
`tokens[i*T : i*T + T + 1]` (T = train.seq_len): inputs are its first T tokens, targets the last
T. A training batch is a pure function of (seed, step): grain shuffles window indices with a
Feistel permutation that supports random access and reshuffles each epoch, so resuming needs
nothing but the step number.

Datasets: `kjv` is built here, offline (see `scaling.data.kjv`). Any other `data.name` must be a
TFDS dataset already prepared in array_record format under `data_dir(cfg.data)`; it is opened
from its files with `builder_from_files`, so neither its builder code nor the network is used.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import sys
from typing import Iterator, Sequence

import grain
import numpy as np

from scaling.data.tokenizer import get_tokenizer
from scaling.errors import UserError
from scaling.fileio import atomic_write

CACHE_FORMAT = 1   # bump when the token-cache layout or the document->token rule changes


def data_dir(cfg_data) -> str:
    """`data.data_dir`, else $SCALING_DATA_DIR, else ~/.cache/scaling/tfds (user-expanded)."""
    d = cfg_data.data_dir or os.environ.get("SCALING_DATA_DIR") or "~/.cache/scaling/tfds"
    return os.path.abspath(os.path.expanduser(d))


# ---------------------------------------------------------------------------- documents

def _builder(cfg_data):
    """A prepared TFDS builder for `cfg_data.name` (kjv: built on first use)."""
    import tensorflow_datasets as tfds  # lazy: a cached run never needs TFDS

    root = data_dir(cfg_data)
    if cfg_data.name == "kjv":
        from scaling.data.kjv import Kjv
        absl_log = logging.getLogger("absl")
        level = absl_log.level
        absl_log.setLevel(logging.ERROR)  # TFDS warns about the not-yet-built folder
        try:
            builder = Kjv(data_dir=root, file_format="array_record")
            prepared = builder.is_prepared()
        finally:
            absl_log.setLevel(level)
        if not prepared:
            os.makedirs(root, exist_ok=True)
            print(f"building the built-in KJV corpus (offline, ~1 s) in {root}", file=sys.stderr,
                  flush=True)
            # TFDS prints "Downloading..." banners and progress bars even for a local build.
            tfds.disable_progress_bar()
            with contextlib.redirect_stdout(io.StringIO()):
                builder.download_and_prepare()
        return builder
    try:
        # From files only: reads dataset_info.json/features.json under root; never downloads
        # and never imports the dataset's generation code.
        builder = tfds.core.read_only_builder.builder_from_files(cfg_data.name, data_dir=root)
    except Exception as e:  # DatasetNotFoundError, or a malformed name/config/version
        known = cfg_data.name.split("/")[0].split(":")[0] in tfds.list_builders(
            with_community_datasets=False)
        what = "is not prepared" if known else "is not built in (kjv) and not prepared"
        raise UserError(f"dataset {cfg_data.name!r} {what} under {root}: prepare it there in "
                        f"array_record format or set data.data_dir ({type(e).__name__})") from e
    fmt = builder.info.file_format
    if fmt is not None and str(getattr(fmt, "value", fmt)) != "array_record":
        raise UserError(f"dataset {cfg_data.name!r} under {root} is stored as {fmt.value}, which "
                        f"needs TensorFlow: prepare it again with file_format='array_record'")
    return builder


def _empty(builder, split: str) -> UserError:
    return UserError(f"split {split!r} of dataset {builder.name!r} is empty: pick another "
                     f"split or slice (data.train_split/data.val_split)")


def _source(builder, split: str):
    """`builder.as_data_source(split)`; `split` may be sliced TFDS-style ("train[:90%]")."""
    splits = sorted(builder.info.splits.keys())
    base = split.split("[", 1)[0]
    if base not in splits:
        raise UserError(f"dataset {builder.name!r} has no split {base!r}: set data.train_split/"
                        f"data.val_split to one of {', '.join(splits)}")
    if builder.info.splits[base].num_examples == 0:
        raise _empty(builder, split)
    try:
        source = builder.as_data_source(split=split)
    except ValueError as e:  # array_record: "Paths sequence can not be of 0 length"
        if "0 length" in str(e):
            raise _empty(builder, split) from e
        raise UserError(f"bad split {split!r} for dataset {builder.name!r}: {e}") from e
    if len(source) == 0:
        raise _empty(builder, split)
    return source


class _TextColumn(Sequence[str]):
    """The `text_key` field of a TFDS data source as a lazy sequence of `str`."""

    def __init__(self, source, text_key: str, name: str):
        self._source, self._key, self._name = source, text_key, name

    def __len__(self) -> int:
        return len(self._source)

    def _text(self, value, index) -> str:
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        if isinstance(value, str):
            return value
        if isinstance(value, (bytes, np.bytes_)):
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"record {index} of {self._name!r} field {self._key!r} is not "
                                f"UTF-8 text: re-encode the dataset as UTF-8") from e
        raise UserError(f"field {self._key!r} of {self._name!r} holds {type(value).__name__}, not "
                        f"text: set data.text_key to a Text feature")

    def __getitem__(self, i):
        if isinstance(i, slice):
            idx = list(range(*i.indices(len(self))))
            return [self._text(r[self._key], j) for j, r in zip(idx, self._records(idx))]
        return self._text(self._source[i][self._key], i)

    def _records(self, idx):
        getitems = getattr(self._source, "__getitems__", None)  # one batched read
        return getitems(idx) if getitems else [self._source[j] for j in idx]

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), 1024):
            yield from self[start:start + 1024]


def _open(cfg_data, split: str):
    """(builder, text column) for a split, with every user-facing check done."""
    builder = _builder(cfg_data)
    features = builder.info.features
    keys = sorted(features.keys()) if hasattr(features, "keys") else []
    if cfg_data.text_key not in keys:
        raise UserError(f"dataset {builder.name!r} has no feature {cfg_data.text_key!r}: set "
                        f"data.text_key to one of {', '.join(keys) or '(none)'}")
    source = _source(builder, split)
    return builder, _TextColumn(source, cfg_data.text_key, builder.name)


def load_documents(cfg_data, split: str) -> Sequence[str]:
    """The documents (field `data.text_key`) of `split` of dataset `data.name`, as `str`s.

    `kjv` is built under `data_dir(cfg_data)` on first use; any other name must already be
    prepared there (array_record). Bad names, splits, fields or encodings raise `UserError`.
    """
    return _open(cfg_data, split)[1]


# ---------------------------------------------------------------------------- token cache

def _cache_path(cfg_data, split: str, identity: dict) -> str:
    key = dict(identity, format=CACHE_FORMAT, name=cfg_data.name, split=split,
               text_key=cfg_data.text_key, tokenizer=cfg_data.tokenizer)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{cfg_data.name}-{split}-{cfg_data.tokenizer}")
    return os.path.join(data_dir(cfg_data), "token_cache", f"{safe}-{digest}.npy")


def _identity(builder) -> dict:
    """What makes the stored data itself: version and split sizes in the prepared files."""
    return {"version": str(builder.version), "builder_dir": str(builder.data_dir),
            "splits": {k: [v.num_examples, v.num_bytes] for k, v in builder.info.splits.items()}}


def _write_atomic(path: str, array: np.ndarray) -> None:
    """Write to a temp file in the same folder, then rename: a kill never leaves half a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: np.save(f, array))


def load_tokens(cfg_data, split: str) -> np.ndarray:
    """The split as one flat token array (docs + EOS each), memory-mapped from the cache."""
    tokenizer = get_tokenizer(cfg_data.tokenizer)
    if cfg_data.name == "kjv":
        # The corpus is fixed by version + checksum, so the key needs no TFDS call: a cached
        # run skips TFDS entirely (and the builder's own checks run whenever it is built).
        from scaling.data.kjv import KJV_SHA256, Kjv, VALIDATION_EVERY
        identity = {"version": str(Kjv.VERSION), "sha256": KJV_SHA256,
                    "validation_every": VALIDATION_EVERY}
        builder = column = None
    else:
        builder, column = _open(cfg_data, split)
        identity = _identity(builder)
    path = _cache_path(cfg_data, split, identity)
    if not os.path.exists(path):
        if column is None:
            builder, column = _open(cfg_data, split)
        docs = list(column)
        if not docs:
            raise UserError(f"split {split!r} of {cfg_data.name!r} is empty: pick another split")
        _write_atomic(path, tokenizer.encode_documents(docs))
    return np.load(path, mmap_mode="r")


# ---------------------------------------------------------------------------- batches

class TokenBatches:
    """Batches `[batch_size // process_count, seq_len + 1]` int32, random access by step.

    Train split (default): windows shuffled with `train.seed`, a new permutation each epoch,
    batches cut across epoch boundaries; `batch(step)` is a pure function of (seed, step).
    Validation (`split == data.val_split` or "validation"): windows in order, no shuffle;
    `batch(i)` for i in range(num_batches) covers each full batch once (later i wrap around).
    Process p of P gets rows [p*B/P, (p+1)*B/P) of the global batch.
    """

    def __init__(self, cfg, split: str = "train", *, process_index: int = 0,
                 process_count: int = 1):
        d, t = cfg.data, cfg.train
        tokenizer = get_tokenizer(d.tokenizer)
        if cfg.model.vocab_size < tokenizer.vocab_size:
            raise UserError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the "
                            f"tokenizer's vocabulary ({tokenizer.vocab_size}); raise it")
        if t.batch_size % process_count:
            raise UserError(f"train.batch_size={t.batch_size} is not divisible by the "
                            f"{process_count} processes; pick a multiple of {process_count}")
        if not 0 <= process_index < process_count:
            raise UserError(f"process_index={process_index} is outside [0, {process_count})")
        # "train"/"validation" are roles; the config names the dataset's actual splits.
        role_split = {"train": d.train_split, "validation": d.val_split}
        self.split = role_split.get(split, split)
        self.shuffle = self.split == d.train_split and split != "validation"
        self.seq_len, self.batch_size, self.seed = t.seq_len, t.batch_size, t.seed
        self.vocab_size = tokenizer.vocab_size
        # bytes of text per token id: a batch's bytes = token_bytes_V[targets].sum() (bits per byte)
        self.token_bytes_V = tokenizer.token_byte_lengths()
        self.local_batch_size = t.batch_size // process_count
        self._rows = slice(process_index * self.local_batch_size,
                           (process_index + 1) * self.local_batch_size)

        self.tokens = load_tokens(d, self.split)
        self.num_tokens = int(self.tokens.shape[0])
        self.num_windows = (self.num_tokens - 1) // self.seq_len
        if self.num_windows < 1:
            raise UserError(f"split {self.split!r} of {d.name!r} has {self.num_tokens} tokens, "
                            f"fewer than one sequence of train.seq_len+1={self.seq_len + 1}; "
                            f"lower train.seq_len")
        self.num_batches = max(1, self.num_windows // self.batch_size)  # full batches per epoch
        self._offsets = np.arange(self.seq_len + 1)

        ds = grain.MapDataset.range(self.num_windows)
        if self.shuffle:
            ds = ds.shuffle(seed=self.seed)
        # repeat(): infinite; grain reseeds the shuffle per epoch (deterministically).
        ds = ds.repeat().batch(self.batch_size, drop_remainder=True)
        self._batches = ds.map(self._gather)
        if self.shuffle and getattr(d, "mixture", ""):  # task streams mixed in by row
            from scaling.data.mixture import mix
            self._batches = mix(self._batches, cfg, self._rows)

    def _gather(self, window_ids: np.ndarray) -> np.ndarray:
        starts = np.asarray(window_ids[self._rows], dtype=np.int64) * self.seq_len
        return self.tokens[starts[:, None] + self._offsets].astype(np.int32)

    def batch(self, step: int) -> np.ndarray:
        """This process's rows of global batch `step` (int32, [B/P, seq_len + 1])."""
        if step < 0:
            raise UserError(f"batch step must be >= 0, got {step}")
        return self._batches[int(step)]

    __getitem__ = batch

    def spread_batch(self, i: int, num_batches: int) -> np.ndarray:
        """This process's rows of batch `i` of a fixed sample of `num_batches` batches whose
        windows are evenly spread over the whole split (for validation: every part of the split
        counts, not its first documents). Batch i holds every num_batches-th of the
        num_batches * batch_size evenly spaced windows, so each batch spans the split too. The
        sample depends only on the data, seq_len, batch_size and num_batches (paired across
        runs); with fewer windows than that, windows repeat."""
        n = num_batches * self.batch_size
        ids_N = np.arange(n, dtype=np.int64) * self.num_windows // n
        return self._gather(ids_N[i::num_batches])

    def iterate(self, start_step: int = 0) -> Iterator[np.ndarray]:
        """Batches from `start_step` on, forever (resume = pass the restored step)."""
        step = start_step
        while True:
            yield self.batch(step)
            step += 1

    def state(self, step: int) -> dict:
        """The iterator state to checkpoint: the next step plus what must match on resume."""
        return {"step": int(step), "seed": self.seed, "split": self.split,
                "num_windows": self.num_windows, "seq_len": self.seq_len,
                "batch_size": self.batch_size}

    def restore(self, state: dict) -> int:
        """Check a `state()` against this stream and return its step (mismatch: `UserError`)."""
        mine = self.state(state.get("step", 0))
        diff = [f"{k}={state[k]!r} (now {mine[k]!r})" for k in mine
                if k in state and state[k] != mine[k]]
        if diff:
            raise UserError(f"checkpointed data state differs: {', '.join(diff)}; "
                            f"resume with the config the run was started with")
        return int(state["step"])
