"""Analysis of sweep results: scaling-law fits (Kaplan, Chinchilla Approaches 1-3), plots, CLI.

Reads result files only (parquet / CSV / JSON lines); never imports the trainer; it reads them
through the modules that define their format (``scaling.fileio``, ``scaling.sweeps.store``, both
stdlib only) and prints tables with ``scaling.display``.
Modules: ``load`` (readers, usable rows, seed aggregation), ``convention`` (THE meaning of N, D
and C), ``fits/`` (``chinchilla`` Approach 3, ``isoflop`` Approach 2, ``envelope`` Approach 1,
``kaplan``, ``bootstrap`` — the one bootstrap, ``lbfgs``, ``powerlaw``), ``plots/`` (``style``,
``sweep``, ``fits``, ``abilities``), ``report`` (the end-of-sweep report), ``guardrails`` (coded warnings), ``holdout`` (held-out
validation), ``lr_rule`` (per-size learning rate), ``abilities`` (eval
data), ``reference`` (bundled published data), ``synthetic`` (fake sweeps for tests), ``cli``
(``register(subparsers)``).
Submodules are not imported here so that ``import analysis`` stays cheap (no JAX).
"""


def __getattr__(name):
    """`analysis.load_sweep(DIR)` without importing pandas until it is used."""
    if name == "load_sweep":
        from analysis.load import load_sweep
        return load_sweep
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
