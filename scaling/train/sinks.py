"""Extra logging sinks behind the JSON lines: TensorBoard event files and Weights & Biases.

`metrics.jsonl` stays the source of truth: the sinks are mirrors. `attach(writer, cfg, workdir)`
wraps the trainer's `JsonlWriter` so every row it writes (train and val lines) also goes to the
enabled sinks, and a resume (`truncate_after(step)`) rebuilds the TensorBoard file from the kept
lines, so TensorBoard never shows the redone steps twice.

TensorBoard files are written by a ~40-line encoder below instead of a dependency: an event file
is TFRecord framing (length, CRC32C) around `Event` protobufs, and scalars need only 5 fields.
That costs microseconds per log step and no package, so `log.tensorboard` is on by default.
W&B (`log.wandb=PROJECT`) is used only when the `wandb` package is installed.
"""
from __future__ import annotations

import glob
import os
import socket
import struct
import sys
import time

from scaling.fileio import read_jsonl

# ------------------------------------------------------------------ TensorBoard event files


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord uses; pure Python is fast enough for
    records of a few hundred bytes."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_bytes(num: int, payload: bytes) -> bytes:  # wire type 2: length-delimited
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, *, scalars: dict[str, float] | None = None,
                 file_version: str | None = None) -> bytes:
    """tensorflow/core/util/event.proto: Event{wall_time=1 double, step=2 int64,
    file_version=3 string, summary=5 Summary{value=1 Value{tag=1 string, simple_value=2 float}}}."""
    msg = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step)
    if file_version is not None:
        msg += _field_bytes(3, file_version.encode())
    if scalars:
        values = b"".join(
            _field_bytes(1, _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5)
                         + struct.pack("<f", value))
            for tag, value in scalars.items())
        msg += _field_bytes(5, values)
    return msg


def tfrecord(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


class TensorBoardWriter:
    """One `events.out.tfevents.*` file in `logdir`, with scalar rows appended and flushed."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        for old in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
            os.remove(old)  # rebuilt from metrics.jsonl: one file, never stale duplicates
        self.path = os.path.join(logdir, f"events.out.tfevents.{int(time.time())}."
                                         f"{socket.gethostname()}.{os.getpid()}")
        self._f = open(self.path, "ab")
        self._f.write(tfrecord(encode_event(time.time(), 0, file_version="brain.Event:2")))
        self._f.flush()

    def write_row(self, row: dict) -> None:
        scalars = {_tag(row, k): float(v) for k, v in row.items()
                   if k not in ("step", "split", "time") and isinstance(v, (int, float))}
        if scalars:
            self._f.write(tfrecord(encode_event(time.time(), int(row.get("step", 0)),
                                                scalars=scalars)))
            self._f.flush()  # a log step is rare; flushing keeps the file live for TensorBoard

    def close(self) -> None:
        self._f.close()


def _tag(row: dict, key: str) -> str:
    """`train/loss`, `val/val_loss`: TensorBoard groups charts by the prefix."""
    return f"{row.get('split', 'train')}/{key}"


# ------------------------------------------------------------------ Weights & Biases


class WandbWriter:
    """A W&B run per trial; the run id is the trial directory name, so a resumed trial (or a
    requeued SLURM job) continues the same W&B run instead of starting another."""

    def __init__(self, wandb, project: str, workdir: str, config: dict):
        name = os.path.basename(os.path.abspath(workdir))
        self.run = wandb.init(project=project, name=name, id=name, resume="allow",
                              config=config, dir=workdir, reinit=True)

    def write_row(self, row: dict) -> None:
        data = {_tag(row, k): v for k, v in row.items() if k not in ("step", "split")}
        self.run.log(data, step=int(row.get("step", 0)))

    def close(self) -> None:
        self.run.finish()


def _import_wandb():
    try:
        import wandb
        return wandb
    except ImportError:
        return None


# ------------------------------------------------------------------ the writer wrapper


class SinkWriter:
    """A `JsonlWriter` that mirrors each row to extra sinks. Sinks open lazily on the first row
    or truncation, so a run that only checks its workdir creates no event file."""

    def __init__(self, writer, cfg, workdir: str):
        self._w, self._cfg, self._workdir = writer, cfg, workdir
        self._sinks: list | None = None
        self.path = writer.path

    def _open(self) -> list:
        if self._sinks is None:
            self._sinks = []
            log = self._cfg.log
            if log.get("tensorboard", False):
                tb = TensorBoardWriter(os.path.join(self._workdir, "tensorboard"))
                for row in read_jsonl(self._w.path):  # replay what the JSON lines already hold
                    tb.write_row(row)
                self._sinks.append(tb)
            if log.get("wandb", ""):
                wandb = _import_wandb()
                if wandb is None:
                    print(f"warning: log.wandb={log.wandb!r} but wandb is not installed "
                          f"(pip install wandb); logging to metrics.jsonl only", file=sys.stderr)
                else:
                    self._sinks.append(WandbWriter(wandb, log.wandb, self._workdir,
                                                   self._cfg.to_dict()))
        return self._sinks

    def truncate_after(self, step: int) -> None:
        self._w.truncate_after(step)
        self._open()  # (re)builds the TensorBoard file from the kept lines

    def write(self, row: dict) -> None:
        self._w.write(row)
        for sink in self._open():
            sink.write_row(row)

    def sync(self) -> None:
        self._w.sync()

    def close(self) -> None:
        for sink in self._sinks or []:
            sink.close()
        self._sinks = None


def attach(writer, cfg, workdir: str):
    """The trainer's hook: `writer` itself when no sink is enabled, else a mirroring wrapper."""
    log = cfg.log
    if not (log.get("tensorboard", False) or log.get("wandb", "")):
        return writer
    return SinkWriter(writer, cfg, workdir)
