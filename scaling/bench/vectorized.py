"""Vectorised trials vs separate ones (scaling/train/group.py): G trials of a small model trained
as one vmapped group, against the same G trials trained one after another, in this process.

Two sweeps of G trials each: G seeds, and G learning rates. For each, both ways, it records the
end-to-end wall time (compile, data, validation and checkpoints included; the persistent
compilation cache warm, as in a sweep) and the steady-state training throughput (tokens/s over
all G trials: the train lines' `tokens_per_s`, which exclude compile and validation; a group
member's is its own tokens over the group's time, so the group's is their sum), and the largest
difference between a trial's losses trained both ways. Results: benchmarks/results/
vectorized_<platform>.json (docs/benchmarks.md, "vectorised trials").

    python benchmarks/bench_vectorized.py [--group 8] [--steps 60] [--d-model 32] [--layers 2] [--floor]
                                           [--mode auto|vmap|map]

`--floor` also trains every trial separately a second time with the cross-entropy summed in
chunks, and reports how far those two separate runs drift apart: float32 rounding alone, which
at a loss plateau grows into 1e-2 differences within tens of steps (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time

import jax

from scaling.bench import RESULTS_DIR
from scaling.config import ConfigDict, default_config
from scaling.fileio import read_jsonl, write_json_atomic
from scaling.startup import setup_jax
from scaling.train.group import MODES, step_mode, train_group
from scaling.train.loop import train


def _config(args, **train_kw) -> ConfigDict:
    c = default_config()
    c.model.update(dict(d_model=args.d_model, n_layers=args.layers, n_heads=max(1, args.d_model // 16)))
    c.train.update(dict(steps=args.steps, batch_size=args.batch, seq_len=args.seq_len, **train_kw))
    c.log.update(dict(every=10, tensorboard=False))
    c.eval.batches = 2
    c.checkpoint.every_minutes = 0.0
    return c


def _losses(workdir: str) -> list[float]:
    return [r["loss"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]


def _steady_tps(workdir: str) -> float:
    """Median tokens/s of the train lines after the first (which holds the compile)."""
    rows = [r["tokens_per_s"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
            if "tokens_per_s" in r][1:]
    return statistics.median(rows)


def compare(args, field: str, values: list, root: str) -> dict:
    """One sweep of `field` over `values`, separately and as one group."""
    cfgs = [_config(args, **{field: v}) for v in values]
    sep, grp, flo = ([os.path.join(root, f"{field}-{kind}{k}") for k in range(len(cfgs))]
                     for kind in ("s", "g", "f"))
    t0 = time.perf_counter()
    for c, d in zip(cfgs, sep):
        train(ConfigDict(c.to_dict()), d, verbose=False)
    sep_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_group([ConfigDict(c.to_dict()) for c in cfgs], grp, mode=args.mode)
    group_wall = time.perf_counter() - t0
    # G runs one after another: tokens over their summed time = the mean of their rates
    sep_tps = statistics.mean(_steady_tps(d) for d in sep)
    group_tps = sum(_steady_tps(d) for d in grp)
    diffs = [_max_diff(s, g) for s, g in zip(sep, grp)]
    out = {"field": field, "values": values, "separate_wall_s": sep_wall,
           "group_wall_s": group_wall, "wall_speedup": sep_wall / group_wall,
           "separate_tokens_per_s": sep_tps, "group_tokens_per_s": group_tps,
           "throughput_ratio": group_tps / sep_tps, "max_loss_diff": max(diffs),
           "loss_diff_per_trial": diffs}
    if args.floor:
        # The rounding floor: the same separate runs with the cross-entropy summed in chunks
        # (mathematically the same loss, another summation order). How far two float32 runs
        # drift apart from rounding alone bounds how equal group and separate can be.
        for v, d in zip(values, flo):
            train(_config(args, loss_chunk=args.seq_len // 4, **{field: v}), d, verbose=False)
        out["floor_loss_diff_per_trial"] = [_max_diff(s, f) for s, f in zip(sep, flo)]
        out["floor_max_loss_diff"] = max(out["floor_loss_diff_per_trial"])
    return out


def _max_diff(a: str, b: str) -> float:
    """Largest |loss difference| over the train lines of two runs of the same trial."""
    return max(abs(x - y) for x, y in zip(_losses(a), _losses(b)))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_vectorized.py")
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--mode", default="auto", choices=MODES,
                   help="how the group computes its G steps (scaling/train/group.py; auto: map "
                        "on CPU, vmap elsewhere)")
    p.add_argument("--floor", action="store_true",
                   help="also train each trial separately with a chunked loss (the float32 "
                        "rounding floor of the loss comparison)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup_jax()
    root = tempfile.mkdtemp(prefix="bench-vectorized-")
    try:
        g = args.group
        rows = [compare(args, "seed", list(range(g)), root),
                compare(args, "lr", [1e-3 * 2 ** (k / 2) for k in range(g)], root)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = {"machine": {"platform": jax.default_backend(), "device": str(jax.devices()[0]),
                       "cpus": len(os.sched_getaffinity(0)), "processor": platform.processor(),
                       "load_avg_1m": os.getloadavg()[0]},
           "group_mode": step_mode(args.mode),
           "model": {"d_model": args.d_model, "n_layers": args.layers, "batch_size": args.batch,
                     "seq_len": args.seq_len, "steps": args.steps, "group": g},
           "results": rows}
    path = args.out or os.path.join(RESULTS_DIR, f"vectorized_{jax.default_backend()}.json")
    write_json_atomic(path, out)
    print(f"group mode: {out['group_mode']}")
    for r in rows:
        print(f"{r['field']:>5} x{g}: throughput {r['group_tokens_per_s']:,.0f} vs "
              f"{r['separate_tokens_per_s']:,.0f} tok/s ({r['throughput_ratio']:.2f}x), wall "
              f"{r['group_wall_s']:.1f}s vs {r['separate_wall_s']:.1f}s "
              f"({r['wall_speedup']:.2f}x), max |loss diff| {r['max_loss_diff']:.2e}"
              + (f" (rounding floor {r['floor_max_loss_diff']:.2e})" if "floor_max_loss_diff" in r else ""))
    print(f"-> {path}")
    return out


if __name__ == "__main__":
    main()
