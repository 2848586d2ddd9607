"""`scaling bench` writes a well-formed result, and a sweep's second trial reuses the compiled step.

Only schema and sanity are checked here: speed goals live in the benchmark and
docs/benchmarks.md, never in timed tests (a shared 2-core machine makes timings noisy).
"""
import json
import math

import jax
import jax.numpy as jnp
import pytest

from scaling.parallel import mesh as mesh_lib
from scaling.bench.harness import CacheEvents
from scaling.config import resolve
from scaling.train.step import Trainer
from conftest import run_cli, tiny_config


@pytest.mark.slow
def test_bench_quick_json_schema(tmp_path):
    out = tmp_path / "bench.json"
    r = run_cli("bench", "--quick", "--json", "--sizes", "d32", "--no-ablations", "--repeats", "1",
                "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    printed = json.loads(r.stdout.strip().splitlines()[-1])
    saved = json.loads(out.read_text())
    assert printed["ladder"][0]["name"] == saved["ladder"][0]["name"] == "d32"

    m = saved["machine"]
    assert m["platform"] == jax.default_backend() and m["cpu_cores"] >= 1 and m["jax"]
    assert len(m["load_avg_start"]) == 3 and len(m["load_avg_end"]) == 3
    assert saved["matmul_peak"]["measured_flops_per_s"] > 1e8
    assert "12*L*T" in saved["flops_convention"]

    row = saved["ladder"][0]
    assert (row["d_model"], row["n_layers"], row["seq_len"], row["batch"]) == (32, 1, 32, 8)
    for key in ("step_s", "baseline_step_s", "tokens_per_s", "baseline_tokens_per_s",
                "flops_per_s", "mfu_measured_peak", "vs_baseline"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["tokens_per_s"] == pytest.approx(8 * 32 / row["step_s"])
    assert 0 < row["mfu_measured_peak"] < 2  # a fraction of the measured rate (noise allowed)
    if m["platform"] == "cpu":
        assert row["mfu_datasheet"] is None  # no datasheet peak for a CPU
    # XLA's own FLOP count of the step agrees with scaling.counting within a loose factor
    xla = row["xla_cost_analysis_flops_per_step"]
    assert xla is None or 0.5 < xla / (row["flops_per_token"] * 8 * 32) < 2

    c = row["compile"]
    for phase in ("cold", "warm"):
        assert c[phase]["total_s"] > 0 and c[phase]["compile_s"] > 0
    assert c["cold"]["cache_misses"] >= 1
    # the second "trial" (other token budget and seed) finds every executable in the cache
    assert c["warm"]["cache_misses"] == 0 and c["warm"]["cache_hits"] >= 3

    mem = row["memory"]
    assert mem["peak_bytes"] >= mem["argument_bytes"] > 0 and mem["temp_bytes"] >= 0

    d = row["decode"]
    assert d["new_tokens"] > 0 and d["cached_tokens_per_s"] > 0 and d["uncached_tokens_per_s"] > 0
    assert row["breakdown"]["matmuls_only_s"] > 0


def test_bench_rejects_unknown_size():
    r = run_cli("bench", "--sizes", "d9999")
    assert r.returncode == 2 and "unknown bench size" in r.stderr


def _compile_step(cfg, events):
    """Trace and compile a fresh Trainer's step (in-memory caches cleared, like a new process)."""
    jax.clear_caches()
    trainer = Trainer(cfg, mesh_lib.make_mesh(cfg.mesh))
    batch = jax.ShapeDtypeStruct((cfg.train.batch_size, cfg.train.seq_len + 1), jnp.int32,
                                 sharding=trainer.batch_sharding)
    h0, m0 = events.hits, events.misses
    trainer.jit_step.lower(trainer.abstract_state, batch, trainer.hparams).compile()
    return events.hits - h0, events.misses - m0


def test_second_trial_of_same_shape_hits_compilation_cache():
    """Trials differing in token budget, lr and seed share one compiled step (persistent cache).

    The optimizer numbers are arguments of the step, not constants baked into its HLO; were they
    constants, each trial's schedule length would change the cache key and force a recompile.
    """
    events = CacheEvents()
    first = tiny_config()
    first.model.d_model = 40  # a shape no other test compiles, so the first trial is a miss
    first.mesh.data = 1
    second = first.copy_and_resolve_references()
    second.train.update(dict(steps=first.train.steps * 7, lr=1e-3, seed=3))
    hits1, misses1 = _compile_step(resolve(first), events)
    hits2, misses2 = _compile_step(resolve(second), events)
    assert misses1 == 1 and hits1 == 0
    assert (hits2, misses2) == (1, 0)
