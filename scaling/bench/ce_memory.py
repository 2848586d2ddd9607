"""Memory of the LM loss with and without chunking, from XLA's compiled memory analysis.

    python -m scaling.bench.ce_memory [--vocab 50257] [--batch 8] [--seq 1024] [--d-model 64]
                                      [--chunks 0,1024,512,256,128] [--out FILE]

Compiles loss-and-gradient of `scaling.train.loss.token_cross_entropy` (hidden states [B, T, D]
-> logits through a [D, V] head -> mean cross-entropy; gradients for the hidden states and the
head) for each chunk size, and reads `compiled.memory_analysis()`: temp bytes are the buffers
XLA allocates inside the step (the [B, T, V] logits and their gradient, unchunked). Nothing runs,
so the figures are the compiler's and the same on any machine of a platform. Results: JSON
(default benchmarks/results/ce_memory_<platform>.json) and a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform

import jax
import jax.numpy as jnp

from scaling.bench import RESULTS_DIR
from scaling.fileio import write_json_atomic
from scaling.train.loss import token_cross_entropy


def loss_memory(vocab: int, batch: int, seq: int, d_model: int, chunk: int) -> dict:
    """Compiled memory (bytes) of value_and_grad of the mean cross-entropy with `chunk`."""
    def loss(x_BTD, w_DV, labels_BT):
        return token_cross_entropy(lambda x: x @ w_DV, x_BTD, labels_BT, chunk).mean()

    args = (jax.ShapeDtypeStruct((batch, seq, d_model), jnp.float32),
            jax.ShapeDtypeStruct((d_model, vocab), jnp.float32),
            jax.ShapeDtypeStruct((batch, seq), jnp.int32))
    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(*args).compile()
    m = compiled.memory_analysis()
    return {"chunk": chunk, "temp_bytes": int(m.temp_size_in_bytes),
            "argument_bytes": int(m.argument_size_in_bytes),
            "output_bytes": int(m.output_size_in_bytes)}


def _cpu_model() -> str:
    """`lscpu`'s model name (the machine the figures were compiled on)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--chunks", default="0,1024,512,256,128")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    rows = [loss_memory(a.vocab, a.batch, a.seq, a.d_model, int(c)) for c in a.chunks.split(",")]
    base = rows[0]["temp_bytes"]
    for r in rows:
        r["temp_saving_x"] = base / max(r["temp_bytes"], 1)
    backend = jax.default_backend()
    result = {"benchmark": "ce_memory", "platform": backend, "device": jax.devices()[0].device_kind,
              "cpu_model": _cpu_model(), "jax": jax.__version__,
              "shape": {"vocab": a.vocab, "batch": a.batch, "seq": a.seq, "d_model": a.d_model},
              "logits_bytes": a.batch * a.seq * a.vocab * 4, "rows": rows}
    out = a.out or os.path.join(RESULTS_DIR, f"ce_memory_{backend}.json")
    write_json_atomic(out, result)
    print(f"loss + grad, V={a.vocab} B={a.batch} T={a.seq} D={a.d_model} ({result['device']})")
    for r in rows:
        print(f"  chunk {r['chunk'] or 'none':>5}: temp {r['temp_bytes'] / 2**20:9.1f} MiB "
              f"({r['temp_saving_x']:.1f}x smaller)")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
