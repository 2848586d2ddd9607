"""Benchmarks: `scaling bench` (harness.py) and the scripts run as `python -m scaling.bench.NAME`.

Speed and memory goals live here and in docs/benchmarks.md, never in timed tests.
"""
import os

# The repository's benchmarks/results/ when running from a checkout; an installed package
# writes to the current directory instead.
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS_DIR = (os.path.join(_REPO, "benchmarks", "results")
               if os.path.isdir(os.path.join(_REPO, "benchmarks", "results")) else ".")
