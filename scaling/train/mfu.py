"""The peak FLOP/s that MFU divides by: datasheet peaks, or a measured matmul rate on CPU."""
from __future__ import annotations

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
