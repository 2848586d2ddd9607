"""Chunked vs unchunked cross-entropy memory (XLA's compiled memory analysis).

A thin entry point for `python -m scaling.bench.ce_memory` (the code lives in the package, like
every benchmark); writes benchmarks/results/ce_memory_<platform>.json. See docs/benchmarks.md.
"""
from scaling.bench.ce_memory import main

if __name__ == "__main__":
    main()
