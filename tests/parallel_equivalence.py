"""Train one tiny model on several meshes in one process; write per-step losses and final params.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python tests/parallel_equivalence.py OUT_DIR MESHES_JSON [STEPS]

MESHES_JSON is a list of {"name", ["data", "fsdp", "tensor", "pipeline", "expert", "microbatches",
"loss_chunk", "devices", "moe", "parametrization"]}: missing axes are 1 except data, which fills the
devices (-1, as in the config); "devices" (default: all) takes the first n devices, e.g. 1 for the
single-device reference; "moe" (a dict of model.moe fields, default none: dense) makes the MLPs
mixtures of experts; "parametrization" (default sp) trains μP at base width 8 (width multiplier 4)
instead. Writes OUT_DIR/results.json
({name: {"losses", "specs", "mesh", "seconds"}}) and OUT_DIR/params_<name>.npz. Batches are random tokens
keyed by step, so every mesh sees the same data without building a corpus. Used by
tests/test_parallel.py; one process amortises the jax import and start-up over all meshes.
"""
from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np

from scaling.config import default_config, resolve
from scaling.parallel.mesh import check_divisibility, make_mesh
from scaling.train.step import Trainer


def equivalence_config(mesh: dict):
    """d=32, 4 layers (pipeline=4 divides), 4 query / 2 KV heads, B=16, T=32, float32."""
    c = default_config()
    c.model.update(dict(d_model=32, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=64))
    c.train.update(dict(batch_size=16, seq_len=32, steps=10, lr=3e-3, seed=0))
    c.mesh.update({a: mesh.get(a, -1 if a == "data" else 1)
                   for a in ("data", "fsdp", "tensor", "pipeline", "expert")})
    c.model.moe.update(mesh.get("moe", {}))
    c.pipeline.microbatches = mesh.get("microbatches", 0)
    c.train.loss_chunk = mesh.get("loss_chunk", -1)
    c.model.update(dict(parametrization=mesh.get("parametrization", "sp"), base_width=8))
    return resolve(c)


def batch(cfg, step: int) -> np.ndarray:
    """Random tokens [B, T+1] keyed by step."""
    rng = np.random.default_rng(1000 + step)
    return rng.integers(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.train.seq_len + 1),
                        dtype=np.int32)


def run(mesh_spec: dict, steps: int) -> tuple[list[float], dict, dict, dict]:
    cfg = equivalence_config(mesh_spec)
    mesh = make_mesh(cfg.mesh, jax.devices()[:mesh_spec.get("devices", jax.device_count())])
    check_divisibility(cfg, mesh)
    trainer = Trainer(cfg, mesh)
    state = trainer.init(cfg.train.seed)
    losses = []
    for step in range(steps):
        state, metrics = trainer.step(state, trainer.global_batch(batch(cfg, step)))
        losses.append(float(metrics["loss"]))
    flat = {jax.tree_util.keystr(k): v for k, v in
            jax.tree_util.tree_leaves_with_path(state["params"])}
    params = {k: np.asarray(v) for k, v in flat.items()}
    specs = {k: str(v.sharding.spec) for k, v in flat.items()}
    return losses, params, specs, dict(mesh.shape)


def main(out_dir: str, meshes: list[dict], steps: int) -> None:
    os.makedirs(out_dir, exist_ok=True)
    results = {}
    for spec in meshes:
        t0 = time.perf_counter()
        losses, params, specs, shape = run(spec, steps)
        np.savez(os.path.join(out_dir, f"params_{spec['name']}.npz"), **params)
        results[spec["name"]] = {"losses": losses, "specs": specs, "mesh": shape,
                                 "seconds": time.perf_counter() - t0}
        print(spec["name"], f"{time.perf_counter() - t0:.1f}s", losses[-1], flush=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    from scaling.startup import setup_jax
    setup_jax()
    main(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 10)
