"""Vectorised trials vs separate ones: 8 seeds and 8 lrs of a d32/L2 model, as one group and
one after another.

A thin entry point for `python -m scaling.bench.vectorized` (the code lives in the package, like
every benchmark); writes benchmarks/results/vectorized_<platform>.json. See docs/benchmarks.md.
"""
from scaling.bench.vectorized import main

if __name__ == "__main__":
    main()
