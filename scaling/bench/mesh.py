"""Step time, tokens/s and pipeline bubble for each mesh layout on 8 forced CPU devices.

    python -m scaling.bench.mesh [--steps 8] [--out benchmarks/results/mesh_cpu.json]

Sets XLA_FLAGS itself (before importing jax). For a pipeline mesh the *measured* bubble is
1 - t_ref / t_pipe, where t_ref is the step time of the same mesh with the pipeline axis folded
into `data` (same devices, same per-device share of the useful work, no schedule). The GPipe
schedule runs every stage on every iteration (MaxText-style vmap), so it executes (M+S-1)/M times
the useful work; the theoretical bubble is (S-1)/(M+S-1). The measured figure also includes the
schedule's own overhead (buffer shifts, collective-permutes).

8 fake devices share the machine's cores, so these numbers measure correctness and overhead, not
parallel speed-up: the compute of all devices is serialised onto the same cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from scaling.bench import RESULTS_DIR
from scaling.config import default_config, resolve  # noqa: E402
from scaling.parallel.mesh import check_divisibility, make_mesh  # noqa: E402
from scaling.parallel.gpipe import bubble_fraction, num_microbatches  # noqa: E402
from scaling.train.step import Trainer  # noqa: E402

# (name, mesh axes, microbatches, reference without pipeline for the measured bubble)
MESHES = [
    ("data=8", dict(data=8), 0, None),
    ("fsdp=8", dict(data=1, fsdp=8), 0, None),
    ("data=2 x tensor=4", dict(data=2, tensor=4), 0, None),
    ("data=2 x tensor=2 x pipeline=2", dict(data=2, tensor=2, pipeline=2), 0,
     "data=4 x tensor=2"),
    ("data=2 x pipeline=4, 8 microbatches", dict(data=2, pipeline=4), 8, "data=8"),
    ("fsdp=2 x tensor=2 x pipeline=2", dict(data=1, fsdp=2, tensor=2, pipeline=2), 0,
     "data=2 x fsdp=2 x tensor=2"),
]
REFERENCES = {
    "data=4 x tensor=2": dict(data=4, tensor=2),
    "data=2 x fsdp=2 x tensor=2": dict(data=2, fsdp=2, tensor=2),
}


def bench_config(axes: dict, microbatches: int):
    """d=64, 4 layers, 4 heads, B=32, T=64, float32: small enough to compile in seconds."""
    c = default_config()
    c.model.update(dict(d_model=64, n_layers=4, n_heads=4, d_ff=256))
    c.train.update(dict(batch_size=32, seq_len=64, steps=100))
    c.mesh.update({**dict(data=1, fsdp=1, tensor=1, pipeline=1), **axes})
    c.pipeline.microbatches = microbatches
    return resolve(c)


def time_mesh(axes: dict, microbatches: int, steps: int) -> dict:
    cfg = bench_config(axes, microbatches)
    mesh = make_mesh(cfg.mesh)
    check_divisibility(cfg, mesh)
    trainer = Trainer(cfg, mesh)
    state = trainer.init(0)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.train.seq_len + 1),
                          dtype=np.int32)
    batch = trainer.global_batch(tokens)
    t0 = time.perf_counter()
    state, m = trainer.step(state, batch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    state, m = trainer.step(state, batch)  # one more warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = trainer.step(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    S = cfg.mesh.pipeline
    return {"mesh": dict(mesh.shape), "step_s": step_s,
            "tokens_per_s": cfg.train.batch_size * cfg.train.seq_len / step_s,
            "compile_and_first_step_s": compile_s,
            "microbatches": num_microbatches(cfg) if S > 1 else 1,
            "bubble_theory": bubble_fraction(S, num_microbatches(cfg))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default=os.path.join(RESULTS_DIR, "mesh_cpu.json"))
    args = ap.parse_args()
    from scaling.startup import setup_jax
    setup_jax()
    rows = {}
    for name, axes in REFERENCES.items():
        rows[name] = time_mesh(axes, 0, args.steps)
        print(f"{name:40s} {rows[name]['step_s'] * 1e3:8.1f} ms (reference)", flush=True)
    for name, axes, micro, ref in MESHES:
        rows[name] = r = time_mesh(axes, micro, args.steps)
        if ref is not None:
            t_ref = rows[ref]["step_s"] if ref in rows else None
            r["reference"] = ref
            r["bubble_measured"] = 1 - t_ref / r["step_s"]
        print(f"{name:40s} {r['step_s'] * 1e3:8.1f} ms {r['tokens_per_s']:10,.0f} tok/s"
              + (f"  bubble theory {r['bubble_theory']:.3f} measured {r['bubble_measured']:.3f}"
                 if ref else ""), flush=True)
    out = {"machine": f"{platform.machine()} {os.cpu_count()}-core CPU VM, 8 forced host devices",
           "jax": jax.__version__, "model": "d=64, L=4, H=4, F=256, B=32, T=64, float32, adamw",
           "steps_timed": args.steps, "results": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print("->", args.out)


if __name__ == "__main__":
    main()
