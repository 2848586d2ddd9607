"""Process start-up shared by every entry point that runs JAX (the CLI, sweep workers, SLURM
jobs, tests): the persistent compilation cache. JAX is imported inside, so importing this module
stays cheap."""
from __future__ import annotations

import os


def setup_jax() -> None:
    """Persistent compilation cache shared by every trial and run (cuts per-trial start-up).
    Its folder is $SCALING_CACHE_DIR, default ~/.cache/scaling/jax."""
    import jax
    cache = os.environ.get("SCALING_CACHE_DIR",
                           os.path.join(os.path.expanduser("~"), ".cache", "scaling", "jax"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
