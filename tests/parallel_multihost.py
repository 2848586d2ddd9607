"""One process of a multi-process run on localhost: `train()` joined via jax.distributed.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
        python tests/parallel_multihost.py WORKDIR COORDINATOR NUM_PROCESSES PROCESS_ID [KEY=VALUE ...]

Loads tests/tiny_experiment.py with the overrides, sets the `distributed.*` keys and calls
`scaling.train.train` (what `scaling train` does, without the CLI's other imports). Prints
`process P of N: D global devices` first. Used by tests/test_parallel.py.
"""
import sys

from scaling.startup import setup_jax
from scaling.config import load_config
from scaling.train.loop import train

if __name__ == "__main__":
    workdir, coordinator, n, pid, *overrides = sys.argv[1:]
    setup_jax()
    cfg = load_config("tests/tiny_experiment.py", [
        *overrides, f"distributed.coordinator={coordinator}",
        f"distributed.num_processes={n}", f"distributed.process_id={pid}"])
    summary = train(cfg, workdir, verbose=True)

    import jax
    print(f"process {jax.process_index()} of {jax.process_count()}: "
          f"{jax.device_count()} global devices, {jax.local_device_count()} local", flush=True)
