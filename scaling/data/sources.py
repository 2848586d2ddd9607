"""Document sources (`data.name`): the built-in `kjv`, any prepared TFDS dataset, and `files`.

A source is planned into work `Unit`s (each becomes one shard of the token store, tokenized by
one worker) and every unit streams `(role, text)` pairs, role "train" or "validation", so no
step ever holds the corpus in memory.

- `kjv` / TFDS: the dataset's own splits `data.train_split` / `data.val_split` (TFDS slices
  allowed); a unit is a range of records. Opened from prepared array_record files only (never
  the network, never a builder's generation code); `kjv` is built offline on first use.
- `files`: `data.files = GLOB[,GLOB...]` of `.txt` (one document per file, or per blank-line
  paragraph with `data.split_docs`), `.jsonl`, `.jsonl.gz` and `.parquet` (field `data.text_key`).
  A unit is a group of small .txt files, a ~`data.shard_mb` byte range of a .jsonl (line
  aligned), a whole .jsonl.gz, or a run of parquet row groups. Validation = the documents whose
  content hash falls below `data.val_fraction` (`is_validation`): a document keeps its split when
  files are added or renamed, and duplicates never straddle the splits.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import gzip
import hashlib
import io
import json
import logging
import os
import sys
from typing import Iterator, Sequence

import numpy as np

from scaling.errors import UserError

ROLES = ("train", "validation")
FORMATS = (".jsonl.gz", ".jsonl", ".parquet", ".txt")
DEFAULT_RECORD_BYTES = 1000   # TFDS splits that do not state their size


def data_dir(cfg_data) -> str:
    """`data.data_dir`, else $SCALING_DATA_DIR, else ~/.cache/scaling/tfds (user-expanded)."""
    d = cfg_data.data_dir or os.environ.get("SCALING_DATA_DIR") or "~/.cache/scaling/tfds"
    return os.path.abspath(os.path.expanduser(d))


@dataclasses.dataclass(frozen=True)
class Unit:
    """One unit of work = one shard per role. `kind`: tfds | txt | jsonl | gz | parquet."""
    kind: str
    paths: tuple[str, ...]      # files, or (split,) for tfds
    start: int = 0              # record / byte / row-group range [start, end)
    end: int = 0
    nbytes: int = 0             # input size estimate (progress bar)
    role: str = ""              # tfds: every document's role; files: by hash


def is_validation(text: str, fraction: float) -> bool:
    """The hash split rule: blake2b-64 of the document's UTF-8 text below fraction * 2**64."""
    h = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") < fraction * 2.0 ** 64


# ---------------------------------------------------------------------------- TFDS / kjv

def _builder(cfg_data):
    """A prepared TFDS builder for `cfg_data.name` (kjv: built on first use)."""
    import tensorflow_datasets as tfds  # lazy: a prepared store never needs TFDS

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
        what = "is not prepared" if known else "is not built in (kjv, files) and not prepared"
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
    """The documents (field `data.text_key`) of `split` of TFDS dataset `data.name` (or kjv),
    as a lazy sequence of `str`. Bad names, splits, fields or encodings raise `UserError`."""
    return _open(cfg_data, split)[1]


def _tfds_identity(cfg_data) -> dict:
    """What makes a TFDS split's documents: the prepared files' version and split sizes."""
    if cfg_data.name == "kjv":
        # Fixed by version + checksum: no TFDS call, so a prepared store skips TFDS entirely.
        from scaling.data.kjv import KJV_SHA256, Kjv, VALIDATION_EVERY
        return {"version": str(Kjv.VERSION), "sha256": KJV_SHA256,
                "validation_every": VALIDATION_EVERY}
    builder = _builder(cfg_data)
    return {"version": str(builder.version), "builder_dir": str(builder.data_dir),
            "splits": {k: [v.num_examples, v.num_bytes] for k, v in builder.info.splits.items()}}


def _tfds_units(cfg_data, split: str) -> list[Unit]:
    builder, column = _open(cfg_data, split)
    info = builder.info.splits[split.split("[", 1)[0]]
    per_record = (info.num_bytes / info.num_examples if info.num_bytes and info.num_examples
                  else DEFAULT_RECORD_BYTES)
    step = max(1, int(cfg_data.shard_mb * 1e6 / per_record))
    return [Unit("tfds", (split,), s, min(s + step, len(column)),
                 int((min(s + step, len(column)) - s) * per_record), split)
            for s in range(0, len(column), step)]


def _tfds_documents(cfg_data, unit: Unit) -> Iterator[tuple[str, str]]:
    column = _open(cfg_data, unit.paths[0])[1]
    for start in range(unit.start, unit.end, 1024):
        for text in column[start:min(start + 1024, unit.end)]:
            yield unit.role, text


# ---------------------------------------------------------------------------- files

def _format(path: str) -> str:
    for ext in FORMATS:
        if path.endswith(ext):
            return ext
    raise UserError(f"{path}: unsupported file type; data.files takes "
                    f"{', '.join(FORMATS)} files")


def list_files(cfg_data) -> list[str]:
    """The files `data.files` matches (sorted, absolute), each checked to be readable."""
    patterns = [p.strip() for p in cfg_data.files.split(",") if p.strip()]
    if not patterns:
        raise UserError("data.name=files needs data.files=GLOB[,GLOB...] (e.g. 'corpus/*.jsonl')")
    found = set()
    for pattern in patterns:
        matches = [m for m in glob.glob(os.path.expanduser(pattern), recursive=True)
                   if not os.path.isdir(m)]
        if not matches:
            raise UserError(f"data.files pattern {pattern!r} matches no file: fix the glob "
                            f"(relative to {os.getcwd()})")
        found.update(os.path.abspath(m) for m in matches)
    paths = sorted(found)
    for path in paths:
        _format(path)
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise UserError(f"cannot read {path} ({e.strerror}): fix its permissions or drop "
                            f"it from data.files") from e
    return paths


def _parquet_groups(path: str, text_key: str, target: int) -> list[tuple[int, int, int]]:
    """Runs of row groups (start, end, bytes) of about `target` bytes each."""
    import pyarrow.parquet as pq
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    if text_key not in names:
        raise UserError(f"{path} has no column {text_key!r}: set data.text_key to one of "
                        f"{', '.join(names)}")
    runs, start, size = [], 0, 0
    for g in range(meta.num_row_groups):
        size += meta.row_group(g).total_byte_size
        if size >= target or g == meta.num_row_groups - 1:
            runs.append((start, g + 1, size))
            start, size = g + 1, 0
    return runs


def _file_units(cfg_data, paths: list[str]) -> list[Unit]:
    target = max(1, int(cfg_data.shard_mb * 1e6))
    units, txt, txt_bytes = [], [], 0
    for path in paths:
        fmt, size = _format(path), os.path.getsize(path)
        if fmt == ".txt":   # small files grouped; a group closes at the target size
            txt.append(path)
            txt_bytes += size
            if txt_bytes >= target:
                units.append(Unit("txt", tuple(txt), nbytes=txt_bytes))
                txt, txt_bytes = [], 0
        elif fmt == ".jsonl":
            units += [Unit("jsonl", (path,), s, min(s + target, size), min(target, size - s))
                      for s in range(0, max(size, 1), target)]
        elif fmt == ".jsonl.gz":
            units.append(Unit("gz", (path,), nbytes=size))
        else:
            units += [Unit("parquet", (path,), s, e, n)
                      for s, e, n in _parquet_groups(path, cfg_data.text_key, target)]
    if txt:
        units.append(Unit("txt", tuple(txt), nbytes=txt_bytes))
    return units


def _utf8(raw: bytes, path: str, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}{where} is not UTF-8 text ({e.reason} at byte {e.start}): "
                        f"re-encode it as UTF-8 or drop it from data.files") from e


def _json_text(line: bytes, path: str, where: str, key: str) -> str:
    try:
        record = json.loads(_utf8(line, path, where))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}{where} is not valid JSON ({e.msg}): fix or drop the file") from e
    if not isinstance(record, dict) or key not in record:
        raise UserError(f"{path}{where} has no field {key!r}: set data.text_key to the field "
                        f"holding the text")
    if not isinstance(record[key], str):
        raise UserError(f"{path}{where}: field {key!r} is {type(record[key]).__name__}, not text")
    return record[key]


def _txt_texts(path: str, split_docs: bool) -> Iterator[str]:
    with open(path, "rb") as f:
        if not split_docs:
            yield _utf8(f.read(), path, "")
            return
        para: list[str] = []
        for n, raw in enumerate(f, 1):
            line = _utf8(raw, path, f" line {n}")
            if line.strip():
                para.append(line)
            elif para:
                yield "".join(para).rstrip("\n")
                para = []
        if para:
            yield "".join(para).rstrip("\n")


def _jsonl_texts(unit: Unit, key: str) -> Iterator[str]:
    """The lines starting in [start, end): a line straddling `start` belongs to the unit before."""
    path = unit.paths[0]
    with open(path, "rb") as f:
        if unit.start > 0:
            f.seek(unit.start - 1)
            f.readline()
        pos = f.tell()
        while pos < unit.end:
            line = f.readline()
            if not line:
                break
            if line.strip():
                yield _json_text(line, path, f" (line at byte {pos})", key)
            pos += len(line)


def _gz_texts(path: str, key: str) -> Iterator[str]:
    with gzip.open(path, "rb") as f:
        try:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield _json_text(line, path, f" line {n}", key)
        except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
            raise UserError(f"{path} is not a readable gzip file ({e}): fix or drop it") from e


def _parquet_texts(unit: Unit, key: str) -> Iterator[str]:
    import pyarrow.parquet as pq
    f = pq.ParquetFile(unit.paths[0])
    for g in range(unit.start, unit.end):
        for text in f.read_row_group(g, columns=[key]).column(0).to_pylist():
            if not isinstance(text, str):
                raise UserError(f"{unit.paths[0]} row group {g}: column {key!r} holds "
                                f"{type(text).__name__}, not text")
            yield text


def _file_documents(cfg_data, unit: Unit) -> Iterator[tuple[str, str]]:
    if unit.kind == "txt":
        texts = (t for p in unit.paths for t in _txt_texts(p, cfg_data.split_docs))
    elif unit.kind == "jsonl":
        texts = _jsonl_texts(unit, cfg_data.text_key)
    elif unit.kind == "gz":
        texts = _gz_texts(unit.paths[0], cfg_data.text_key)
    else:
        texts = _parquet_texts(unit, cfg_data.text_key)
    for text in texts:
        yield ("validation" if is_validation(text, cfg_data.val_fraction) else "train"), text


# ---------------------------------------------------------------------------- any source

def store_splits(cfg_data, split: str) -> tuple[str, ...]:
    """The splits one token store holds: `files` both roles at once (one pass over the files
    assigns each document by its hash); a TFDS dataset the one split asked for."""
    if cfg_data.name == "files":
        return ROLES
    return (split,)


def split_name(cfg_data, split: str) -> str:
    """The store split holding `split`: `files` maps data.train_split/"train" to "train" and
    data.val_split/"validation" to "validation"; TFDS splits are themselves."""
    if cfg_data.name != "files":
        return split
    if split in (cfg_data.train_split, "train"):
        return "train"
    if split in (cfg_data.val_split, "validation"):
        return "validation"
    raise UserError(f"split {split!r} is neither data.train_split={cfg_data.train_split!r} nor "
                    f"data.val_split={cfg_data.val_split!r}")


def plan(cfg_data, splits: tuple[str, ...]) -> list[Unit]:
    """The units of work of a store holding `splits`, in corpus order."""
    if cfg_data.name == "files":
        return _file_units(cfg_data, list_files(cfg_data))
    return [u for split in splits for u in _tfds_units(cfg_data, split)]


def fingerprint(cfg_data, splits: tuple[str, ...]) -> dict:
    """What the documents of `splits` depend on (a store key). `files`: every matched file's
    path, size and mtime, so an edited or added file makes a new store."""
    if cfg_data.name == "files":
        files = [[p, os.path.getsize(p), os.stat(p).st_mtime_ns] for p in list_files(cfg_data)]
        return {"name": "files", "files": files, "text_key": cfg_data.text_key,
                "split_docs": bool(cfg_data.split_docs), "val_fraction": cfg_data.val_fraction}
    return {"name": cfg_data.name, "text_key": cfg_data.text_key, "split_names": list(splits),
            "dataset": _tfds_identity(cfg_data)}


def unit_documents(cfg_data, unit: Unit) -> Iterator[tuple[str, str]]:
    """(split, text) for every document of `unit`, streamed in corpus order."""
    if unit.kind == "tfds":
        return _tfds_documents(cfg_data, unit)
    return _file_documents(cfg_data, unit)


def documents(cfg_data, split: str) -> Iterator[str]:
    """The texts of one split (data.train_split, data.val_split or a role), streamed."""
    name = split_name(cfg_data, split)
    for unit in plan(cfg_data, store_splits(cfg_data, name)):
        yield from (text for s, text in unit_documents(cfg_data, unit) if s == name)
