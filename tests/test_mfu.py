"""The MFU denominator: a global peak (like the global tokens/s) and TF32 peaks for float32 on
NVIDIA tensor-core GPUs (issue 14)."""
from types import SimpleNamespace

import jax
import pytest

from scaling.train import mfu


def _fake_devices(monkeypatch, kind, platform, n_global, n_local, n_proc):
    dev = SimpleNamespace(platform=platform, device_kind=kind)
    monkeypatch.setattr(jax, "devices", lambda *a, **k: [dev] * n_global)
    monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [dev] * n_local)
    monkeypatch.setattr(jax, "device_count", lambda *a, **k: n_global)
    monkeypatch.setattr(jax, "local_device_count", lambda *a, **k: n_local)
    monkeypatch.setattr(jax, "process_count", lambda *a, **k: n_proc)


@pytest.mark.parametrize("dtype,per_chip", [("bfloat16", 989e12), ("float32", 494.7e12)])
def test_peak_is_global_in_multi_process_runs(monkeypatch, dtype, per_chip):
    """Two processes of 4 H100s: tokens/s is global, so the peak is 8 chips, not 4."""
    _fake_devices(monkeypatch, "NVIDIA H100 80GB HBM3", "gpu", 8, 4, 2)
    peak, source = mfu.peak_flops(dtype)
    assert peak == pytest.approx(8 * per_chip)
    assert "x8" in source


def test_cpu_peak_counts_every_process(monkeypatch):
    _fake_devices(monkeypatch, "cpu", "cpu", 4, 2, 2)
    monkeypatch.setattr(mfu, "measured_matmul_peak", lambda *a, **k: 1e9)
    assert mfu.peak_flops("float32")[0] == pytest.approx(2e9)


@pytest.mark.parametrize("kind,f32,bf16", [
    ("NVIDIA H100 80GB HBM3", 494.7e12, 989e12),
    ("NVIDIA H100 PCIe", 378e12, 756e12),
    ("NVIDIA H200", 494.7e12, 989e12),
    ("NVIDIA A100-SXM4-80GB", 156e12, 312e12),
    ("NVIDIA L4", 60e12, 121e12),
])
def test_float32_peak_is_the_tf32_tensor_core_figure(kind, f32, bf16):
    """XLA runs float32 matmuls as TF32 on these GPUs: the peak is dense TF32 (half of bf16),
    not the CUDA-core FP32 figure (67 TFLOP/s on H100), under which MFU could exceed 1."""
    dev = SimpleNamespace(device_kind=kind)
    assert mfu.datasheet_peak(dev, "float32") == pytest.approx(f32)
    assert mfu.datasheet_peak(dev, "bfloat16") == pytest.approx(bf16)
    assert f32 == pytest.approx(bf16 / 2, rel=0.01)
    assert mfu.datasheet_peak(SimpleNamespace(device_kind="Unknown chip"), "float32") is None
