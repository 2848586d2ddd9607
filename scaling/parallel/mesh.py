"""The device mesh and the one table that maps logical axis names to mesh axes.

Mesh axes, outermost to innermost: data, fsdp, pipeline, expert, tensor (tensor innermost so that
its frequent collectives stay on the fastest links). `expert` shards the experts of a
mixture-of-experts MLP (scaling/model/moe.py) and, like data, the batch: outside the MoE layers it
is one more data-parallel axis, and inside them the change of sharding from tokens-over-`expert` to
experts-over-`expert` is the token all-to-all (GShard, MaxText). Parameters carry logical names (see model.py);
`RULES` says which mesh axis shards each. A dimension that the mesh axis does not divide is
replicated instead (e.g. a 257-token byte vocabulary, or fewer KV heads than tensor shards, which
Megatron and MaxText also replicate).
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from scaling.errors import UserError

AXES = ("data", "fsdp", "pipeline", "expert", "tensor")

# logical axis -> mesh axis (or tuple of axes, or None = replicated)
RULES: dict[str | None, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp", "expert"),  # FSDP shards the batch too (ZeRO-3 style data
                                          # parallelism), and so does the expert axis
    "expert": "expert",          # the experts of a MoE MLP (expert parallelism)
    "expert_batch": ("data", "fsdp"),  # token groups inside a MoE layer, once dispatched
    "layers": "pipeline",        # contiguous layer chunks = pipeline stages (scaling/parallel/gpipe.py)
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",           # Megatron: column-parallel Q/K/V, row-parallel output
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",             # column-parallel W_in, row-parallel W_out
    None: None,
}


def mesh_shape(cfg_mesh, n_devices: int) -> dict[str, int]:
    """Resolve a -1 axis and check that the mesh uses exactly `n_devices`."""
    sizes = {a: int(cfg_mesh.get(a, 1)) for a in AXES}  # configs from before `expert`: 1
    fill = [a for a, v in sizes.items() if v == -1]
    known = math.prod(v for v in sizes.values() if v != -1)
    if fill:
        if n_devices % known:
            raise UserError(f"mesh axes multiply to {known}, which does not divide the "
                            f"{n_devices} devices; change mesh.* so the product divides it")
        sizes[fill[0]] = n_devices // known
    total = math.prod(sizes.values())
    if total != n_devices:
        desc = "x".join(f"{a}={sizes[a]}" for a in AXES)
        raise UserError(f"mesh {desc} needs {total} devices but {n_devices} are available; "
                        f"set mesh.* so the product is {n_devices} (or one axis to -1)")
    return sizes


def make_mesh(cfg_mesh, devices=None) -> Mesh:
    """A `Mesh` over `devices` (default: all) with Auto axis types (docs/toolchain-facts.md)."""
    devices = jax.devices() if devices is None else devices
    sizes = mesh_shape(cfg_mesh, len(devices))
    return Mesh(np.asarray(devices).reshape([sizes[a] for a in AXES]), AXES)


def check_divisibility(cfg, mesh: Mesh | dict[str, int]) -> None:
    """One-line errors for shapes that the mesh (a Mesh, or its axis sizes) cannot split."""
    s = {"expert": 1, **(dict(mesh) if isinstance(mesh, dict) else dict(mesh.shape))}
    m, t = cfg.model, cfg.train
    batch_shards = s["data"] * s["fsdp"] * s["expert"]
    shard_axes = "mesh.data*mesh.fsdp" + ("*mesh.expert" if s["expert"] > 1 else "")
    if t.batch_size % batch_shards:
        raise UserError(f"train.batch_size={t.batch_size} is not divisible by {shard_axes}="
                        f"{batch_shards}; use a multiple of {batch_shards}")
    experts = m.moe.experts if "moe" in m else 0
    if experts and experts % s["expert"]:
        raise UserError(f"model.moe.experts={experts} is not divisible by mesh.expert="
                        f"{s['expert']}; pick an expert axis dividing the number of experts")
    if experts and s["pipeline"] > 1:
        raise UserError("model.moe with mesh.pipeline > 1 is not supported (the pipeline does not "
                        "carry the router's auxiliary losses); use mesh.pipeline=1")
    if m.n_heads % s["tensor"]:
        raise UserError(f"model.n_heads={m.n_heads} is not divisible by mesh.tensor={s['tensor']}; "
                        f"pick a tensor size dividing the number of heads")
    if m.d_ff % s["tensor"]:
        raise UserError(f"model.d_ff={m.d_ff} is not divisible by mesh.tensor={s['tensor']}")
    if s["pipeline"] > 1:
        p, micro = s["pipeline"], cfg.pipeline.microbatches or s["pipeline"]
        if m.n_layers % p:
            raise UserError(f"model.n_layers={m.n_layers} is not divisible by mesh.pipeline={p}; "
                            f"pick a pipeline size dividing the number of layers")
        if (t.batch_size // batch_shards) % micro:
            raise UserError(f"the batch per data shard ({t.batch_size // batch_shards} = "
                            f"train.batch_size/({shard_axes})) is not divisible by "
                            f"pipeline.microbatches={micro}; change either")


def check_mesh(cfg, n_devices: int) -> dict[str, int]:
    """`mesh_shape` + `check_divisibility` for `n_devices` devices, without building a Mesh
    (so a sweep can check every trial before any trains, with no devices in hand)."""
    sizes = mesh_shape(cfg.mesh, n_devices)
    check_divisibility(cfg, sizes)
    return sizes


def logical_spec(names, shape, mesh_shape) -> P:
    """PartitionSpec for logical axis `names` (RULES), replicating dims that don't divide."""
    spec = []
    for name, dim in zip(names, shape):
        axes = RULES[name]
        axes_t = (axes,) if isinstance(axes, str) else (axes or ())
        n = math.prod(mesh_shape[a] for a in axes_t)
        spec.append(axes if axes_t and n > 1 and dim % n == 0 else None)
    return P(*spec)


def logical_sharding(names, shape, mesh: Mesh) -> NamedSharding:
    """NamedSharding for an array with logical axis `names`, replicating dims that don't divide."""
    return NamedSharding(mesh, logical_spec(names, shape, mesh.shape))


def constrain(x: jax.Array, names) -> jax.Array:
    """Constrain activation `x` to logical axes `names` under the mesh being traced with
    (`jax.sharding.use_abstract_mesh`, set by the Trainer); without one (decoding, tests on one
    device), `x` unchanged. How the MoE layer expresses its all-to-all (scaling/model/moe.py)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or "expert" not in mesh.shape:
        return x
    return jax.lax.with_sharding_constraint(x, logical_spec(names, x.shape, mesh.shape))


def summary_axes(mesh: Mesh) -> dict[str, int]:
    """Axis sizes as run summaries record them: `expert` only when used (> 1), so that dense
    runs record the same mesh as before the expert axis existed."""
    return {a: n for a, n in mesh.shape.items() if a != "expert" or n > 1}


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(RULES["batch"], None))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
