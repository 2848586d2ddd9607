"""Pipeline parallelism: a GPipe schedule over the stacked `layers` axis, MaxText-style.

The L stacked layers are split into S = mesh.pipeline stages of L/S consecutive layers: every block
parameter [L, ...] is reshaped to [S, L/S, ...]. Because `RULES["layers"] = "pipeline"` shards the
`layers` axis in contiguous chunks, the reshape is local: stage s's layers already live on the
devices of pipeline index s. The batch [B, T, D] is split into M microbatches.

The schedule is GPipe (Huang et al. 2019) written as one SPMD program, as in MaxText:
a buffer [S, mb, T, D] holds the activation each stage works on. Each of the M + S - 1 iterations
  1. shifts the buffer by one stage (stage s receives stage s-1's last output; `jnp.roll` on an
     axis sharded over `pipeline`, which XLA lowers to a collective-permute),
  2. puts the next microbatch into stage 0,
  3. runs every stage at once: `jax.vmap` over the stage axis of the per-stage layer scan,
  4. stores stage S-1's output as a finished microbatch.
Stage s works on microbatch i - s at iteration i; outside 0 <= i - s < M it computes on filler
(the bubble: (S - 1) / (M + S - 1) of the work). Filler never reaches the output, so it has zero
gradient. The backward pass is autodiff through the schedule (GPipe's all-forward-then-all-backward).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from scaling.parallel import mesh as mesh_lib


def num_microbatches(cfg) -> int:
    """`pipeline.microbatches`, where 0 means one per stage."""
    return cfg.pipeline.microbatches or cfg.mesh.pipeline


def bubble_fraction(n_stages: int, n_microbatches: int) -> float:
    """GPipe's idle fraction (S - 1) / (M + S - 1); 0 without pipelining."""
    return (n_stages - 1) / (n_microbatches + n_stages - 1) if n_stages > 1 else 0.0


def run_blocks(blocks: nnx.Module, x_BTD: jax.Array, n_stages: int, n_micro: int,
               mesh: Mesh) -> jax.Array:
    """Apply the stacked `blocks` (leading axis L) to x [B, T, D] as an S-stage, M-microbatch GPipe."""
    S, M = n_stages, n_micro
    B, T, D = x_BTD.shape
    mb = B // M
    block_def, layers_state = nnx.split(blocks)
    # [L, ...] -> [S, L/S, ...]: contiguous layers per stage (local, see the module docstring).
    stages_state = jax.tree.map(lambda a: a.reshape(S, a.shape[0] // S, *a.shape[1:]),
                                layers_state)

    def stage_fn(stage_state, x_mTD):
        """One stage: its L/S layers in a scan over the (unstacked) layer parameters."""
        def layer(x_mTD, layer_state):
            return nnx.merge(block_def, layer_state)(x_mTD), None
        return jax.lax.scan(layer, x_mTD, stage_state)[0]

    # Microbatch j is rows j, j+M, j+2M, ...: rows are sharded over the batch mesh axes in
    # contiguous blocks, so the [B/M, M] split keeps each data shard's rows on its own devices
    # (this needs (B per data shard) % M == 0, which check_divisibility enforces).
    batch_axes = mesh_lib.RULES["batch"]
    x_MmTD = x_BTD.reshape(mb, M, T, D).swapaxes(0, 1)
    x_MmTD = _constrain(x_MmTD, mesh, P(None, batch_axes))
    buf_SmTD = _constrain(jnp.zeros((S, mb, T, D), x_BTD.dtype), mesh, P("pipeline", batch_axes))
    out_MmTD = jnp.zeros_like(x_MmTD)

    def iteration(carry, i):
        buf_SmTD, out_MmTD = carry
        buf_SmTD = jnp.roll(buf_SmTD, 1, axis=0)                       # stage s-1 -> stage s
        new_mTD = jax.lax.dynamic_index_in_dim(x_MmTD, jnp.minimum(i, M - 1), keepdims=False)
        buf_SmTD = buf_SmTD.at[0].set(new_mTD)                         # feed stage 0
        buf_SmTD = _constrain(buf_SmTD, mesh, P("pipeline", batch_axes))
        buf_SmTD = jax.vmap(stage_fn)(stages_state, buf_SmTD)         # all stages at once
        buf_SmTD = _constrain(buf_SmTD, mesh, P("pipeline", batch_axes))
        # Iterations i < S-1 write filler to slot i-S+1 mod M; the real microbatch overwrites it.
        done = jnp.mod(i - (S - 1), M)
        out_MmTD = jax.lax.dynamic_update_index_in_dim(out_MmTD, buf_SmTD[S - 1], done, axis=0)
        return (buf_SmTD, out_MmTD), None

    (_, out_MmTD), _ = jax.lax.scan(iteration, (buf_SmTD, out_MmTD), jnp.arange(M + S - 1))
    return out_MmTD.swapaxes(0, 1).reshape(B, T, D)


def _constrain(x: jax.Array, mesh: Mesh, spec: P) -> jax.Array:
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
