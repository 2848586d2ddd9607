"""The peak FLOP/s that MFU divides by: datasheet peaks, or a measured matmul rate on CPU.

The rule: MFU = global tokens/s * FLOPs per token / GLOBAL peak. The trainer's tokens/s counts
the global batch (every process), so `peak_flops` is the peak of every device of the run
(`jax.device_count()`), not of this process's local devices.

Which precision the peak assumes: the matmul precision XLA actually uses for the compute dtype.
- bfloat16: the dense bf16 tensor-core (GPU) / MXU (TPU) figure.
- float32 on NVIDIA Ampere and later (A100, L4, H100, H200): XLA's default matmul precision runs
  float32 matmuls as TF32 on the tensor cores, so the peak is the dense TF32 tensor-core figure
  (the non-tensor-core FP32 figure, e.g. 67 TFLOP/s on H100, would let MFU exceed 1).
- float32 on TPU: default precision runs matmuls as single-pass bf16 on the MXU: the bf16 figure.
(JAX documents these defaults: "float32 dot products may be computed with reduced-precision
arithmetic internally (bfloat16 on TPU, TF32 on recent GPUs)", docs.jax.dev, "Matmul precision".)
A run that forces `jax_default_matmul_precision=highest` does true fp32 matmuls and its MFU
against these peaks is low by construction.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

# Dense (no sparsity) datasheet peaks per chip, FLOP/s, for the compute dtype; "float32" is the
# figure of the precision XLA uses for float32 matmuls (see the module docstring). Sources:
# NVIDIA H100 datasheet (SXM: BF16 1979 / TF32 989 TFLOP/s "with sparsity", i.e. 989.5 / 494.7
# dense; PCIe: 1513 / 756 sparse -> 756 / 378 dense; NVL: 1671 / 835 sparse -> 835 / 417.5 dense);
# NVIDIA H200 datasheet (SXM: same as H100 SXM; NVL: same as H100 NVL); NVIDIA A100 datasheet
# (BF16 312, TF32 156 dense); NVIDIA L4 datasheet (BF16 242 / TF32 120 sparse -> 121 / 60 dense);
# Google Cloud TPU system architecture pages (bf16 per chip).
# More specific names come first: the first name found in `device_kind` wins.
DATASHEET_PEAKS = {
    "H100 PCIe": {"bfloat16": 756e12, "float32": 378e12},
    "H100 NVL": {"bfloat16": 835e12, "float32": 417.5e12},
    "H200 NVL": {"bfloat16": 835e12, "float32": 417.5e12},
    "H100": {"bfloat16": 989e12, "float32": 494.7e12},   # SXM
    "H200": {"bfloat16": 989e12, "float32": 494.7e12},   # SXM
    "A100": {"bfloat16": 312e12, "float32": 156e12},
    "L4": {"bfloat16": 121e12, "float32": 60e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12},
    "TPU v6 lite": {"bfloat16": 918e12, "float32": 918e12},
}


def datasheet_peak(device, dtype: str) -> float | None:
    """The dense datasheet peak of one chip for `dtype` (None: not in the table)."""
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
    """(peak FLOP/s of ALL devices of the run, how it was obtained) — the MFU denominator.

    Global, like the trainer's tokens/s: every process returns the same number.
    """
    devices = jax.devices()
    n_proc = jax.process_count()
    if devices[0].platform == "cpu":
        # Forced host devices of one process share its cores: one measured peak per process.
        return n_proc * measured_matmul_peak("float32"), \
            f"cpu: measured jnp.dot 1024^3 float32 in-process x{n_proc} process(es)"
    per = datasheet_peak(devices[0], dtype)
    if per is None:
        kind = devices[0].device_kind
        return len(devices) * measured_matmul_peak(dtype, n=4096), \
            f"{kind}: measured {dtype} matmul (no datasheet entry) x{len(devices)}"
    return len(devices) * per, f"{devices[0].device_kind}: datasheet dense {dtype} x{len(devices)}"
