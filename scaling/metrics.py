"""Metrics files (JSON lines, atomic JSON) and the peak FLOP/s that MFU divides by."""
from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

# Dense datasheet peaks per chip (FLOP/s) for the compute dtype. MFU on accelerators divides by
# these times the device count. Sources: vendor datasheets (dense, no sparsity).
DATASHEET_PEAKS = {
    "H100": {"bfloat16": 989e12, "float32": 67e12},   # SXM
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "L4": {"bfloat16": 121e12, "float32": 30e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12},
    "TPU v6 lite": {"bfloat16": 918e12, "float32": 918e12},
}


def datasheet_peak(device, dtype: str) -> float | None:
    kind = getattr(device, "device_kind", "")
    for name, peaks in DATASHEET_PEAKS.items():
        if name.lower() in kind.lower():
            return peaks[dtype]
    return None


_MEASURED: dict[tuple, float] = {}


def measured_matmul_peak(dtype: str = "float32", n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a jitted n^3 matmul on one device, median of `repeats` (cached per process)."""
    key = (jax.default_backend(), dtype, n)
    if key not in _MEASURED:
        x = jnp.ones((n, n), dtype=dtype)
        f = jax.jit(lambda a: a @ a)
        f(x).block_until_ready()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(x).block_until_ready()
            times.append(time.perf_counter() - t0)
        _MEASURED[key] = 2 * n**3 / float(np.median(times))
    return _MEASURED[key]


def peak_flops(dtype: str) -> tuple[float, str]:
    """(peak FLOP/s of all local devices, how it was obtained) — the MFU denominator."""
    devices = jax.local_devices()
    if devices[0].platform == "cpu":
        # Forced host devices share the same cores: the whole machine is one measured peak.
        return measured_matmul_peak("float32"), "cpu: measured jnp.dot 1024^3 float32 in-process"
    per = datasheet_peak(devices[0], dtype)
    if per is None:
        return len(devices) * measured_matmul_peak(dtype, n=4096), \
            f"{devices[0].device_kind}: measured {dtype} matmul (no datasheet entry)"
    return len(devices) * per, f"{devices[0].device_kind}: datasheet dense {dtype} x{len(devices)}"


def write_json_atomic(path: str, obj) -> None:
    """Write JSON via a temp file and rename, so readers never see half a file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict]:
    """Parse a JSON-lines file, ignoring a torn last line left by a killed writer."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


class JsonlWriter:
    """Appends one JSON object per line; `truncate_after(step)` drops lines past a resume point."""

    def __init__(self, path: str):
        self.path = path

    def truncate_after(self, step: int) -> None:
        rows = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        os.replace(tmp, self.path)

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def sync(self) -> None:
        if os.path.exists(self.path):
            with open(self.path, "a") as f:
                os.fsync(f.fileno())
