"""Multi-process (multi-host) start-up: `jax.distributed.initialize` from the config.

One process per host (or per GPU); every process runs the same `scaling train` command. After
initialisation `jax.devices()` lists the devices of all processes, the mesh spans them, each process
reads only its own rows of every batch (`TokenBatches(process_index=..., process_count=...)` and
`jax.make_array_from_process_local_data` in the trainer), and only process 0 writes
`metrics.jsonl`/`summary.json`. Checkpoints are written by all processes together (orbax), into a
workdir that all of them must see (a shared filesystem). Launch recipes: docs/parallelism.md.
"""
from __future__ import annotations

import os

import jax

from scaling.errors import UserError

# Where a launcher puts this process's rank, first match wins.
PROCESS_ID_ENV = ("SCALING_PROCESS_ID", "SLURM_PROCID")


def process_id_from_env() -> int | None:
    for name in PROCESS_ID_ENV:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def initialize(dist) -> bool:
    """Join the job described by the `distributed` config section; True if multi-process.

    - `coordinator` set: explicit `host:port`, `num_processes`, and `process_id` (-1 = from
      $SCALING_PROCESS_ID or $SLURM_PROCID).
    - `auto=True`: `jax.distributed.initialize()` with no arguments, which detects SLURM (srun),
      Open MPI and Cloud TPU pods from their environment variables.
    - neither: a single process (nothing to do).
    Must run before anything touches the jax backend; a second call is a no-op.
    """
    if jax.distributed.is_initialized():
        return True
    if dist.coordinator:
        pid = dist.process_id if dist.process_id >= 0 else process_id_from_env()
        if pid is None or dist.num_processes < 1:
            raise UserError("distributed.coordinator is set but distributed.num_processes or the "
                            "process id is not; set distributed.num_processes and "
                            "distributed.process_id (or $SCALING_PROCESS_ID)")
        if not 0 <= pid < dist.num_processes:
            raise UserError(f"process id {pid} is not in [0, distributed.num_processes="
                            f"{dist.num_processes})")
        jax.distributed.initialize(dist.coordinator, dist.num_processes, pid)
        return True
    if dist.auto:
        jax.distributed.initialize()  # cluster auto-detection (SLURM, Open MPI, TPU pods)
        return True
    return False
