"""benchmarks/bench_data.py --quick on a tiny generated corpus writes a well-formed result.

Schema and sanity only: the throughput and RSS targets live in the benchmark and
docs/benchmarks.md, never in timed tests (a shared 2-core machine makes timings noisy).
"""
import json
import math
import subprocess
import sys

from conftest import ROOT


def test_bench_data_quick_json_fields(tmp_path):
    out = tmp_path / "data.json"
    r = subprocess.run([sys.executable, "benchmarks/bench_data.py", "--quick", "--mb", "0.5",
                        "--vocab", "300", "--cache", str(tmp_path / "cache"), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert "ratio" in r.stdout and str(out) in r.stdout
    corpus = res["corpus"]
    assert corpus["text_bytes"] >= 0.5e6 and corpus["documents"] > 10
    assert sum(corpus["bytes_by_origin"].values()) == corpus["text_bytes"]
    assert res["tokenizer"]["spec"] == "bpe:300" and res["tokenizer"]["train_s"] > 0
    raw, prep = res["raw"], res["prepare"]
    # the same text on both sides: every byte and token the raw encoder saw, the store holds
    assert raw["before"]["text_bytes"] == raw["after"]["text_bytes"] == round(corpus["mb"] * 1e6)
    assert sum(prep["tokens"].values()) == raw["before"]["tokens"] + corpus["documents"]  # + EOS
    for key in ("wall_s", "mb_per_s", "peak_rss_tree_bytes", "max_rss_single_process_bytes"):
        assert math.isfinite(prep[key]) and prep[key] > 0, key
    assert prep["peak_rss_tree_bytes"] < 4e9
    assert res["ratio"] == prep["mb_per_s"] / raw["mb_per_s"]
    assert set(res["targets"]) == {"ratio_min", "rss_max_bytes", "ratio_met", "rss_met"}
    loader = res["loader"]
    assert 0 < loader["batch_median_s"] < loader["step_median_s"] * 100
    assert loader["overhead_fraction"] == loader["batch_median_s"] / loader["step_median_s"]
    m = res["machine"]
    assert m["cpu_cores"] >= 1 and len(m["load_avg_start"]) == 3 and m["tokenizers"]
    assert not list((tmp_path / "cache").glob("run-*"))   # the run's store is cleaned up
