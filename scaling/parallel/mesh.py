"""The device mesh and the one table that maps logical axis names to mesh axes.

Mesh axes, outermost to innermost: data, fsdp, pipeline, tensor (tensor innermost so that its
frequent collectives stay on the fastest links). Parameters carry logical names (see model.py);
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

AXES = ("data", "fsdp", "pipeline", "tensor")

# logical axis -> mesh axis (or tuple of axes, or None = replicated)
RULES: dict[str | None, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),   # FSDP shards the batch too (ZeRO-3 style data parallelism)
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
    sizes = {a: int(cfg_mesh[a]) for a in AXES}
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
    s = dict(mesh) if isinstance(mesh, dict) else dict(mesh.shape)
    m, t = cfg.model, cfg.train
    batch_shards = s["data"] * s["fsdp"]
    if t.batch_size % batch_shards:
        raise UserError(f"train.batch_size={t.batch_size} is not divisible by mesh.data*mesh.fsdp="
                        f"{batch_shards}; use a multiple of {batch_shards}")
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
                            f"train.batch_size/(mesh.data*mesh.fsdp)) is not divisible by "
                            f"pipeline.microbatches={micro}; change either")


def check_mesh(cfg, n_devices: int) -> dict[str, int]:
    """`mesh_shape` + `check_divisibility` for `n_devices` devices, without building a Mesh
    (so a sweep can check every trial before any trains, with no devices in hand)."""
    sizes = mesh_shape(cfg.mesh, n_devices)
    check_divisibility(cfg, sizes)
    return sizes


def logical_sharding(names, shape, mesh: Mesh) -> NamedSharding:
    """NamedSharding for an array with logical axis `names`, replicating dims that don't divide."""
    spec = []
    for name, dim in zip(names, shape):
        axes = RULES[name]
        axes_t = (axes,) if isinstance(axes, str) else (axes or ())
        n = math.prod(mesh.shape[a] for a in axes_t)
        spec.append(axes if axes_t and n > 1 and dim % n == 0 else None)
    return NamedSharding(mesh, P(*spec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(RULES["batch"], None))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
