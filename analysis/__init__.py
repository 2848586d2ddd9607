"""Analysis of sweep results: scaling-law fits (Kaplan, Chinchilla Approaches 1-3), plots, CLI.

Reads result files only (parquet / CSV / JSON lines); never imports the trainer. It reads them
through the modules that define their format (``scaling.fileio``, ``scaling.sweeps.store``, both
stdlib only) and prints tables with ``scaling.display``. ``report.report_sweep`` is the end-of-sweep
report (table, fit, plots) that ``scaling sweep`` calls.
Modules: ``results`` (loaders), ``chinchilla`` (Approach 3), ``envelope`` (Approach 1),
``isoflop`` (Approach 2), ``kaplan``, ``reference`` (bundled published data), ``plots``,
``plots_fits``, ``synthetic`` (fake sweeps for tests), ``cli`` (``register(subparsers)``).
Submodules are not imported here so that ``import analysis`` stays cheap (no JAX).
"""


def __getattr__(name):
    """`analysis.load_sweep(DIR)` without importing pandas until it is used."""
    if name == "load_sweep":
        from analysis.load import load_sweep
        return load_sweep
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
