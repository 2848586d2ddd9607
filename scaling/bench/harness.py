"""`scaling bench`: how close the trainer runs to this machine's limit, measured in one process.

    scaling bench [--json] [--out FILE] [--sizes 64,128,...] [--quick] [--no-ablations]

For each size of a ladder of models it measures, after warm-up:

* the steady-state train step of our `Trainer` and of an independent plain-JAX loop of the same
  shapes (scaling/bench/baseline_lm.py), timed INTERLEAVED (ours, baseline, ours, ...; medians), so
  that load from other jobs on a shared machine hits both alike; tokens/s; MFU against the
  matmul rate measured here (float32 on CPU, bf16 on GPU) and against the datasheet peak;
* compile time of init + step + eval, cold (a fresh persistent cache) and warm (a second "trial"
  of the same shape with another token budget and seed, in-memory caches cleared), with the
  persistent-cache hits counted from jax's monitoring events;
* memory per step from XLA's buffer assignment (`compiled.memory_analysis()`), or the device's
  peak bytes on GPU;
* greedy decoding tokens/s with the KV cache (`scaling.decode.generate`) and without it
  (scaling/bench/decode.py's full-recompute loop), for the smaller sizes;
* for d_model >= 256, a time breakdown: the step without the optimizer (forward + backward) and
  the model's matmuls alone at their real shapes, which says where the time goes.

Then, on one size, ablations against the default config: a rolled layer loop (`model.scan_unroll=1`;
compile time, memory, step), `model.remat` policies, bf16 compute. FLOPs follow `scaling.counting` (6N + 12·L·T·d_attn, attention not
causally discounted). Results: JSON (default benchmarks/results/bench_<platform>.json) + a table.
Speed goals live here and in docs/benchmarks.md, never in timed tests.
"""
from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling import counting, decode
from scaling.bench import RESULTS_DIR, baseline_lm, decode as bench_decode
from scaling.parallel import mesh as mesh_lib
from scaling.config import default_config, resolve
from scaling.fileio import write_json_atomic
from scaling.train.mfu import datasheet_peak, measured_matmul_peak
from scaling.model.transformer import Transformer, abstract_model

# name -> (d_model, n_layers, n_heads, seq_len, batch): the shapes of the plain-decoder table in
# docs/toolchain-facts.md, so the two can be compared. Default run ≈ 3-4 min on 2 cores.
LADDER = {
    "d64": (64, 2, 4, 128, 32),
    "d128": (128, 4, 4, 128, 32),
    "d256": (256, 4, 8, 256, 16),
    "d512": (512, 6, 8, 256, 8),
}
QUICK_LADDER = {"d32": (32, 1, 2, 32, 8), "d64q": (64, 2, 4, 32, 8)}
ABLATION_SIZE = (256, 4, 8, 256, 8)
QUICK_ABLATION_SIZE = (32, 1, 2, 32, 8)


# ---------------------------------------------------------------------------- helpers

def make_config(d, L, H, T, B, **model):
    """A resolved config of the trainer's default model (learned positions, GELU, LayerNorm)."""
    c = default_config()
    c.model.update(dict(d_model=d, n_layers=L, n_heads=H, **model))
    c.train.update(dict(seq_len=T, batch_size=B, steps=1000))
    c.mesh.update(dict(data=1))
    return resolve(c)


class CacheEvents:
    """Counts jax's persistent compilation cache hits/misses (monitoring events)."""

    def __init__(self):
        self.hits = self.misses = 0
        jax.monitoring.register_event_listener(self._on_event)

    def _on_event(self, event, **_):
        if event == "/jax/compilation_cache/cache_hits":
            self.hits += 1
        elif event == "/jax/compilation_cache/cache_misses":
            self.misses += 1


def use_fresh_cache_dir() -> str:
    """Point the persistent compilation cache at an empty directory (a truly cold start)."""
    path = tempfile.mkdtemp(prefix="scaling-bench-cache-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)  # the bench's caches are throwaway
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:  # the cache object is created once per process; make it re-read the directory
        from jax._src import compilation_cache
        compilation_cache.reset_cache()
    except Exception:  # pragma: no cover - private API; the first use sets it anyway
        pass
    return path


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    dev = jax.devices()[0]
    return {"cpu_model": cpu or platform.processor(), "cpu_cores": os.cpu_count(),
            "platform": jax.default_backend(), "device_kind": dev.device_kind,
            "device_count": jax.device_count(), "jax": jax.__version__,
            "python": platform.python_version(), "os": platform.platform(),
            "load_avg_start": list(os.getloadavg())}


def compile_trainer(cfg, events: CacheEvents) -> dict:
    """Trace+lower and compile init/step/eval of a fresh `Trainer` (in-memory caches cleared)."""
    from scaling.train.step import Trainer
    jax.clear_caches()
    h0, m0 = events.hits, events.misses
    t0 = time.perf_counter()
    trainer = Trainer(cfg, mesh_lib.make_mesh(cfg.mesh))
    t, B = cfg.train, cfg.train.batch_size
    batch = jax.ShapeDtypeStruct((B, t.seq_len + 1), jnp.int32, sharding=trainer.batch_sharding)
    lowered = [trainer.init.lower(t.seed),
               trainer.jit_step.lower(trainer.abstract_state, batch, trainer.hparams),
               trainer.eval_losses.lower(trainer.abstract_state["params"], batch)]
    t1 = time.perf_counter()
    compiled = [lo.compile() for lo in lowered]
    t2 = time.perf_counter()
    return {"trainer": trainer, "step_compiled": compiled[1], "trace_lower_s": t1 - t0,
            "compile_s": t2 - t1, "total_s": t2 - t0,
            "cache_hits": events.hits - h0, "cache_misses": events.misses - m0}


def memory_of(compiled) -> dict:
    """Bytes of the step's buffers as XLA assigned them; `peak_bytes` ≈ what one step holds."""
    out = {}
    try:
        ma = compiled.memory_analysis()
        out = {"argument_bytes": int(ma.argument_size_in_bytes),
               "output_bytes": int(ma.output_size_in_bytes),
               "alias_bytes": int(ma.alias_size_in_bytes),
               "temp_bytes": int(ma.temp_size_in_bytes)}
        out["peak_bytes"] = (out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"]
                             + out["temp_bytes"])
    except Exception:  # noqa: BLE001 - not every backend reports it
        pass
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        out["device_peak_bytes_in_use"] = int(stats["peak_bytes_in_use"])
    return out


def _time_steps(run, k: int) -> float:
    """Seconds per call of `run()` (which must block) over k calls."""
    t0 = time.perf_counter()
    for _ in range(k):
        run()
    return (time.perf_counter() - t0) / k


def interleaved(runs: dict, repeats: int, target_s: float = 0.4) -> dict:
    """Median seconds per call of each blocking `run()`, timed A/B/A/B after one warm-up call.

    Each timed block repeats a call k times (k chosen so one block takes ≈ target_s), which
    keeps timer noise small for tiny models without making big ones slow.
    """
    ks = {}
    for name, run in runs.items():
        run()  # warm-up (compile on first use)
        ks[name] = max(1, round(target_s / max(_time_steps(run, 1), 1e-6)))
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(_time_steps(run, ks[name]))
    return {name: {"median_s": statistics.median(ts), "runs_s": ts, "calls_per_run": ks[name]}
            for name, ts in times.items()}


def _random_batch(cfg, seed=0):
    t = cfg.train
    return jax.random.randint(jax.random.key(seed), (t.batch_size, t.seq_len + 1), 0,
                              cfg.model.vocab_size, jnp.int32)


class _OurLoop:
    """Our trainer's step on a fixed batch, as the train loop calls it (donated state)."""

    def __init__(self, trainer, cfg):
        self.trainer, self.state = trainer, trainer.init(cfg.train.seed)
        self.batch = trainer.global_batch(np.asarray(_random_batch(cfg)))

    def __call__(self):
        self.state, metrics = self.trainer.step(self.state, self.batch)
        jax.block_until_ready(metrics)


class _BaselineLoop:
    def __init__(self, baseline, d, L, H, T, B):
        self.params, self.opt, self.step, self.tokens = baseline.setup(
            d=d, layers=L, heads=H, seq=T, batch=B)

    def __call__(self):
        self.params, self.opt, loss = self.step(self.params, self.opt, self.tokens)
        jax.block_until_ready(loss)


# ---------------------------------------------------------------------------- breakdown

def matmul_only_step(cfg):
    """A jitted fwd+bwd of the model's matmuls alone, at their real shapes, and its FLOPs.

    No norms, activations, softmax, masking or optimizer: what is left is the matmul work of a
    training step (forward, and the two backward matmuls per weight). Its time vs the real step
    is the matmul share; the rest is elementwise work, attention's softmax/mask, and Adam.
    """
    m, t = cfg.model, cfg.train
    D, L, H, F, V, T, B = (m.d_model, m.n_layers, m.n_heads, m.d_ff, m.vocab_size,
                           t.seq_len, t.batch_size)
    K = D // H
    key = iter(jax.random.split(jax.random.key(0), 8))
    w = {"qkv": jax.random.normal(next(key), (L, D, 3 * D)) * 0.02,
         "o": jax.random.normal(next(key), (L, D, D)) * 0.02,
         "w1": jax.random.normal(next(key), (L, D, F)) * 0.02,
         "w2": jax.random.normal(next(key), (L, F, D)) * 0.02,
         "emb": jax.random.normal(next(key), (V, D)) * 0.02}
    x0 = jax.random.normal(next(key), (B, T, D))

    def f(w, x):
        def layer(x, lw):
            q, k, v = jnp.split(x @ lw["qkv"], 3, axis=-1)
            q, k, v = (a.reshape(B, T, H, K) for a in (q, k, v))
            s = jnp.einsum("bqhk,bshk->bhqs", q, k) * (1.0 / K)
            o = jnp.einsum("bhqs,bshk->bqhk", s, v).reshape(B, T, D)
            x = x + o @ lw["o"]
            return x + (x @ lw["w1"]) @ lw["w2"], None
        x, _ = jax.lax.scan(layer, x, {k: w[k] for k in ("qkv", "o", "w1", "w2")})
        return jnp.mean(x @ w["emb"].T)

    step = jax.jit(jax.grad(f, argnums=(0, 1)))
    flops = counting.flops_per_token(m, T) * B * T
    return (lambda: jax.block_until_ready(step(w, x0))), flops


def fwd_bwd_only(trainer, cfg):
    """Our loss's value_and_grad (no optimizer update) on the trainer's params."""
    params = trainer.init(cfg.train.seed)["params"]
    batch = trainer.global_batch(np.asarray(_random_batch(cfg)))
    f = jax.jit(jax.value_and_grad(trainer._loss, has_aux=True))  # aux: (cross-entropy, MoE stats)
    return lambda: jax.block_until_ready(f(params, batch))


# ---------------------------------------------------------------------------- decoding

def decode_speed(cfg, new_tokens: int, batch: int = 4, prompt: int = 32) -> dict:
    """Greedy tokens/s with the KV cache vs recomputing the prefix (same model, rope positions)."""
    c = cfg.copy_and_resolve_references()
    c.model.pos, c.model.max_len = "rope", 0  # learned positions would cap length at seq_len
    c = resolve(c)
    graphdef, _ = nnx.split(abstract_model(c.model))
    state = jax.jit(lambda: nnx.state(Transformer(c.model, nnx.Rngs(params=0))))()
    model = nnx.merge(graphdef, state)
    prompt_BP = jax.random.randint(jax.random.key(1), (batch, prompt), 0, 256, jnp.int32)
    uncached_fn = bench_decode.uncached_greedy(model, new_tokens)
    res = interleaved({
        "cached": lambda: jax.block_until_ready(
            decode.generate(model, prompt_BP, max_new_tokens=new_tokens).tokens),
        "uncached": lambda: jax.block_until_ready(uncached_fn(prompt_BP)),
    }, repeats=2, target_s=0.0)
    n = batch * new_tokens
    tc, tu = res["cached"]["median_s"], res["uncached"]["median_s"]
    return {"batch": batch, "prompt_len": prompt, "new_tokens": new_tokens,
            "cached_tokens_per_s": n / tc, "uncached_tokens_per_s": n / tu,
            "cached_s": tc, "uncached_s": tu, "speedup": tu / tc}


# ---------------------------------------------------------------------------- the bench

def bench_size(name, shape, *, peak, ds_peak, baseline, events, repeats, decode_new,
               decode_max_d, breakdown_min_d) -> dict:
    d, L, H, T, B = shape
    cfg = make_config(*shape)
    cold = compile_trainer(cfg, events)
    second = cfg.copy_and_resolve_references()  # the next trial of a sweep: same shape
    second.train.update(dict(steps=cfg.train.steps * 3, seed=1))
    warm = compile_trainer(second, events)
    trainer = warm["trainer"]
    t_base0 = time.perf_counter()
    base = _BaselineLoop(baseline, d, L, H, T, B)
    base()  # compile
    base_compile_s = time.perf_counter() - t_base0
    runs = {"ours": _OurLoop(trainer, second), "baseline": base}
    breakdown = d >= breakdown_min_d
    if breakdown:
        runs["fwd_bwd"] = fwd_bwd_only(trainer, second)
        runs["matmuls"], mm_flops = matmul_only_step(second)
    timing = interleaved(runs, repeats)
    tokens = B * T
    fpt = counting.flops_per_token(cfg.model, T)
    ours_s, base_s = timing["ours"]["median_s"], timing["baseline"]["median_s"]
    flops_per_s = tokens * fpt / ours_s
    try:
        xla_flops = float(cold["step_compiled"].cost_analysis()["flops"])
    except Exception:  # noqa: BLE001
        xla_flops = None
    row = {
        "name": name, "d_model": d, "n_layers": L, "n_heads": H, "seq_len": T, "batch": B,
        "params_total": counting.param_counts(cfg.model)["total"],
        "flops_per_token": fpt, "xla_cost_analysis_flops_per_step": xla_flops,
        "step_s": ours_s, "baseline_step_s": base_s, "vs_baseline": base_s / ours_s,
        "tokens_per_s": tokens / ours_s, "baseline_tokens_per_s": tokens / base_s,
        "flops_per_s": flops_per_s, "mfu_measured_peak": flops_per_s / peak,
        "baseline_mfu_measured_peak": tokens * fpt / base_s / peak,
        "mfu_datasheet": flops_per_s / ds_peak if ds_peak else None,
        "timing_runs_s": {k: v["runs_s"] for k, v in timing.items()},
        "compile": {
            "cold": {k: cold[k] for k in ("trace_lower_s", "compile_s", "total_s", "cache_hits",
                                          "cache_misses")},
            "warm": {k: warm[k] for k in ("trace_lower_s", "compile_s", "total_s", "cache_hits",
                                          "cache_misses")},
            "cold_over_warm": cold["total_s"] / warm["total_s"],
            "baseline_first_call_s": base_compile_s,
        },
        "memory": memory_of(cold["step_compiled"]),
    }
    if breakdown:
        t_fb, t_mm = timing["fwd_bwd"]["median_s"], timing["matmuls"]["median_s"]
        row["breakdown"] = {
            "fwd_bwd_s": t_fb, "optimizer_s": ours_s - t_fb, "matmuls_only_s": t_mm,
            "non_matmul_fwd_bwd_s": t_fb - t_mm,
            "matmul_share_of_step": t_mm / ours_s,
            "matmul_rate_at_model_shapes": mm_flops / t_mm,
            "matmul_rate_at_model_shapes_over_peak": mm_flops / t_mm / peak,
        }
    if d <= decode_max_d and decode_new > 0:
        row["decode"] = decode_speed(cfg, decode_new)
    del runs, trainer, cold, warm
    return row


def ablations(shape, *, events, repeats) -> dict:
    """Scan vs unrolled layers, remat policies and bf16 compute on one size, each vs the default."""
    from scaling.train.step import Trainer

    variants = {"default (unrolled)": {}, "scan_unroll=1 (rolled)": {"scan_unroll": 1},
                # remat implies the rolled loop under the default scan_unroll=0 (see model.py)
                "remat=full (rolled)": {"remat": "full"},
                "remat=dots_saveable (rolled)": {"remat": "dots_saveable"},
                "remat=full, scan_unroll=4": {"remat": "full", "scan_unroll": 4},
                "dtype=bfloat16": {"dtype": "bfloat16"}}
    out, runs = {}, {}
    for name, model_kw in variants.items():
        cfg = make_config(*shape, **model_kw)
        jax.clear_caches()
        use_fresh_cache_dir()  # compile time of each variant from cold
        t0 = time.perf_counter()
        trainer = Trainer(cfg, mesh_lib.make_mesh(cfg.mesh))
        batch = jax.ShapeDtypeStruct((cfg.train.batch_size, cfg.train.seq_len + 1), jnp.int32,
                                     sharding=trainer.batch_sharding)
        compiled = trainer.jit_step.lower(trainer.abstract_state, batch, trainer.hparams).compile()
        out[name] = {"step_compile_s": time.perf_counter() - t0, "memory": memory_of(compiled)}
        runs[name] = _OurLoop(trainer, cfg)
    timing = interleaved(runs, repeats)
    ref = timing["default (unrolled)"]["median_s"]
    for name in variants:
        out[name]["step_s"] = timing[name]["median_s"]
        out[name]["step_vs_default"] = timing[name]["median_s"] / ref
    return {"shape": dict(zip(("d_model", "n_layers", "n_heads", "seq_len", "batch"), shape)),
            "variants": out}


def run_bench(sizes=None, quick=False, repeats=None, with_ablations=True, log=print) -> dict:
    """Run the whole benchmark; returns the result dict (see the module docstring)."""
    ladder = QUICK_LADDER if quick else LADDER
    if sizes:
        pool = {**LADDER, **QUICK_LADDER}
        ladder = {s: pool[s] for s in sizes}
    repeats = repeats or (2 if quick else 3)
    use_fresh_cache_dir()
    events = CacheEvents()
    info = machine()
    gpu = info["platform"] == "gpu"
    peak_dtype = "bfloat16" if gpu else "float32"
    t0 = time.perf_counter()
    peak = measured_matmul_peak(peak_dtype, n=4096 if gpu else 1024, repeats=5)
    ds_peak = datasheet_peak(jax.devices()[0], "float32")
    log(f"matmul peak ({peak_dtype}, measured): {peak / 1e9:.1f} GFLOP/s; datasheet: "
        f"{ds_peak and ds_peak / 1e12} TFLOP/s; load {info['load_avg_start']}")
    baseline = baseline_lm
    rows = []
    for name, shape in ladder.items():
        row = bench_size(name, shape, peak=peak, ds_peak=ds_peak, baseline=baseline,
                         events=events, repeats=repeats,
                         decode_new=16 if quick else 256, decode_max_d=64 if quick else 128,
                         breakdown_min_d=0 if quick else 256)
        rows.append(row)
        log(format_row(row))
    result = {"machine": info, "flops_convention": counting.describe(make_config(*ladder[
        next(iter(ladder))]))["flops_convention"],
        "matmul_peak": {"dtype": peak_dtype, "measured_flops_per_s": peak,
                        "datasheet_flops_per_s": ds_peak},
        "ladder": rows}
    if with_ablations:
        result["ablations"] = ablations(QUICK_ABLATION_SIZE if quick else ABLATION_SIZE,
                                        events=events, repeats=repeats)
    result["wall_s"] = time.perf_counter() - t0
    result["machine"]["load_avg_end"] = list(os.getloadavg())
    return result


def format_row(r: dict) -> str:
    c, mem = r["compile"], r["memory"]
    dec = r.get("decode")
    return (f"{r['name']:>6} {r['params_total'] / 1e6:6.2f}M step {r['step_s'] * 1e3:8.1f} ms "
            f"base {r['baseline_step_s'] * 1e3:8.1f} ms x{r['vs_baseline']:.2f} "
            f"tok/s {r['tokens_per_s']:9,.0f} MFU {r['mfu_measured_peak']:.2f} "
            f"compile {c['cold']['total_s']:.1f}/{c['warm']['total_s']:.2f}s "
            f"mem {mem.get('peak_bytes', 0) / 2**20:.0f}MiB"
            + (f" decode {dec['cached_tokens_per_s']:,.0f}/{dec['uncached_tokens_per_s']:,.0f} "
               f"tok/s x{dec['speedup']:.1f}" if dec else ""))


def print_table(result: dict) -> None:
    m = result["machine"]
    print(f"\n{m['cpu_model']} ({m['cpu_cores']} cores), {m['device_kind']}, jax {m['jax']}, "
          f"load {m['load_avg_start'][0]:.2f} -> {m['load_avg_end'][0]:.2f}")
    for r in result["ladder"]:
        print(format_row(r))
        if "breakdown" in r:
            b = r["breakdown"]
            print(f"{'':>6} breakdown: fwd+bwd {b['fwd_bwd_s'] * 1e3:.0f} ms, optimizer "
                  f"{b['optimizer_s'] * 1e3:.0f} ms, matmuls alone {b['matmuls_only_s'] * 1e3:.0f} ms "
                  f"({b['matmul_rate_at_model_shapes_over_peak']:.2f} of peak at these shapes)")
    if "ablations" in result:
        print(f"ablations at {result['ablations']['shape']}:")
        for name, v in result["ablations"]["variants"].items():
            print(f"  {name:>20}: step {v['step_s'] * 1e3:.1f} ms (x{v['step_vs_default']:.2f}), "
                  f"compile {v['step_compile_s']:.1f}s, temp "
                  f"{v['memory'].get('temp_bytes', 0) / 2**20:.1f} MiB")


def main(args) -> int:
    out = args.out or os.path.join(RESULTS_DIR,
                                   f"bench_{jax.default_backend()}.json")
    sizes = [s.strip() for s in args.sizes.split(",")] if args.sizes else None
    result = run_bench(sizes=sizes, quick=args.quick, repeats=args.repeats,
                       with_ablations=not args.no_ablations,
                       log=(lambda *_: None) if args.json else print)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_json_atomic(out, result)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
        print(f"-> {out}")
    return 0
