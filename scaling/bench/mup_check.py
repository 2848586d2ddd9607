"""`scaling mup-check`: the coordinate check of Yang et al. (Tensor Programs V, Fig. 5), SP vs μP.

    scaling mup-check [--widths 64,128,256,512,1024] [--steps 5] [--out FILE]

For each parametrization and width (fixed depth and head count, so d_head grows with width) it
trains `steps` Adam steps from one seed on the built-in corpus and, at init and after every step,
measures the RMS of the activations on one fixed batch: the embedding output, every block's
output (the residual stream) and the output logits. Under μP these stay Θ(1) as width grows;
under SP with a width-independent lr, the logits (and the residual stream) grow with width.
Writes the numbers to FILE (default benchmarks/results/mup_check.json); the plot and the
width-growth table are drawn from that file by analysis/mup.py.
"""
from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.bench import RESULTS_DIR
from scaling.config import default_config, resolve
from scaling.data.batches import TokenBatches
from scaling.fileio import write_json_atomic
from scaling.parallel.mesh import make_mesh
from scaling.train.step import Trainer

WIDTHS = (64, 128, 256, 512, 1024)
# Small enough for 2 CPU cores (~1-2 min for all widths); lr high enough that the updates, not
# the init, set the activations after a few steps (Yang et al. use a large lr for the check).
SHAPE = dict(n_layers=2, n_heads=4, seq_len=64, batch_size=8, lr=1e-2, base_width=64)


def check_config(width: int, parametrization: str, *, steps: int = 5, **shape):
    """A resolved config: `width` = d_model, constant lr (no warmup/decay), no clipping."""
    s = {**SHAPE, **shape}
    c = default_config()
    c.name = f"mup-check-{parametrization}-d{width}"
    c.model.update(dict(d_model=width, n_layers=s["n_layers"], n_heads=s["n_heads"],
                        parametrization=parametrization, base_width=s["base_width"]))
    c.train.update(dict(steps=steps, lr=s["lr"], warmup=0, min_lr_ratio=1.0, grad_clip=0.0,
                        seq_len=s["seq_len"], batch_size=s["batch_size"]))
    c.mesh.update(dict(data=1))
    return resolve(c)


def rms(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32))))


def activation_rms(model, tokens_BT: jax.Array) -> dict[str, jax.Array]:
    """RMS of the embedding output, each block's output and the logits (one forward pass)."""
    x_BTD = model.embed_inputs(tokens_BT)
    out = {"embed": rms(x_BTD)}
    graphdef, state = nnx.split(model.blocks)
    for i in range(model.cfg.n_layers):  # the stacked blocks one by one, as run_blocks does
        x_BTD = nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))(x_BTD)
        out[f"block{i}"] = rms(x_BTD)
    out["logits"] = rms(model.logits(x_BTD))
    return out


def measure(width: int, parametrization: str, *, steps: int = 5, seed: int = 0,
            **shape) -> list[dict]:
    """Train `steps` steps at `width`; rows {parametrization, width, step, layer, rms} for
    step 0 (init) .. steps, measured on the fixed batch of step 0."""
    cfg = check_config(width, parametrization, steps=steps, **shape)
    trainer = Trainer(cfg, make_mesh(cfg.mesh, jax.devices()[:1]))
    data = TokenBatches(cfg, "train")
    probe_BT = jnp.asarray(data.batch(0)[:, :-1])
    probe = jax.jit(lambda params: activation_rms(nnx.merge(trainer.graphdef, params), probe_BT))
    state = trainer.init(seed)
    rows = []
    for step in range(steps + 1):
        for layer, value in probe(state["params"]).items():
            rows.append({"parametrization": parametrization, "width": width, "step": step,
                         "layer": layer, "rms": float(value)})
        if step < steps:
            state, _ = trainer.step(state, trainer.global_batch(data.batch(step)))
    return rows


def run(widths=WIDTHS, parametrizations=("sp", "mup"), *, steps: int = 5, out: str | None = None,
        verbose: bool = True, **shape) -> dict:
    """The coordinate check over widths × parametrizations; written to `out` (JSON) if given."""
    rows, t0 = [], time.perf_counter()
    for p in parametrizations:
        for w in widths:
            rows += measure(w, p, steps=steps, **shape)
            if verbose:
                last = {r["layer"]: r["rms"] for r in rows if r["step"] == steps}
                print(f"{p:>3} d{w:<5} " + "  ".join(f"{k} {v:.3g}" for k, v in last.items()),
                      flush=True)
    result = {"widths": list(widths), "steps": steps, "shape": {**SHAPE, **shape},
              "machine": f"{platform.machine()} {os.cpu_count()} cpus, {jax.default_backend()}",
              "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    if out:
        write_json_atomic(out, result)
    return result


def default_out() -> str:
    return os.path.join(RESULTS_DIR, "mup_check.json")
