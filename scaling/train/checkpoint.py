"""Checkpoints of a run: the orbax manager, save, restore, and loading a trained model.

A checkpoint `<workdir>/checkpoints/<step>/` holds the train state ("state": the pytree of
`scaling.train.step.Trainer`) and a small JSON ("meta": step, seed, wall seconds so far, and
"checksum": a CRC-32 of each top-level state entry's bytes, computed on host at save time). orbax
commits each one atomically, so only finished checkpoints are ever listed; the checksum catches
what orbax cannot: bits flipped inside a committed data file (disk, copy or network faults).

Which are kept: every multiple of `checkpoint.every` and every step of `checkpoint.at` for good,
and the newest `checkpoint.keep` of all (so the final checkpoint, the newest, is always kept).

Every read goes through `restore`, one idiom for both uses: training resume restores the whole
state onto the run's shardings; `load_trained` restores only `state["params"]` (orbax partial
restore, the optimizer state is not read) onto one local device (also the start of a run with
`train.init_from`: `init_params`). Both take the newest
checkpoint that reads back (`restore_latest`), stepping past damaged ones.
"""
from __future__ import annotations

import os
import sys
import time
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from scaling.config import ConfigDict, checkpoint_steps, from_json_file
from scaling.errors import UserError
from scaling.model.transformer import Transformer, abstract_model


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def manager(workdir: str, cfg: ConfigDict | None = None) -> ocp.CheckpointManager:
    """The run's checkpoint manager: writable (async saves, keeps `checkpoint.keep`) given the
    run's `cfg`, read-only without it."""
    if cfg is None:
        options = ocp.CheckpointManagerOptions(read_only=True)
    elif checkpoint_steps(cfg):  # orbax's delete options cannot name steps; its policies can
        policies = ocp.checkpoint_managers
        keep = [policies.LatestN(cfg.checkpoint.keep),
                policies.CustomSteps(checkpoint_steps(cfg))]
        if cfg.checkpoint.every:
            keep.append(policies.EveryNSteps(cfg.checkpoint.every))
        options = ocp.CheckpointManagerOptions(
            create=True, enable_async_checkpointing=True,
            preservation_policy=policies.AnyPreservationPolicy(keep))
    else:
        options = ocp.CheckpointManagerOptions(max_to_keep=cfg.checkpoint.keep, create=True,
                                               keep_period=cfg.checkpoint.every or None,
                                               enable_async_checkpointing=True)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


class ChecksumMismatch(RuntimeError):
    """A restored checkpoint's bytes differ from those saved (a damaged data file)."""


def checksums(state: dict) -> dict[str, str] | None:
    """{top-level key: CRC-32 (hex) of its leaves' bytes in tree order}, computed on host; None
    when the state is not fully addressable by this process (multi-host: not checked).

    zlib's CRC-32 runs at GB/s, so this costs about one host copy of the state per save
    (measured in docs/design.md, "checkpoints"); it is computed at save and restore only."""
    leaves = jax.tree.leaves(state)
    if not all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return None
    out = {}
    for key in sorted(state):
        crc = 0
        for a in jax.device_get(jax.tree.leaves(state[key])):
            crc = zlib.crc32(np.ascontiguousarray(a).reshape(-1).view(np.uint8), crc)
        out[key] = format(crc, "08x")
    return out


def save(mngr: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
    """Start an (async) save of `state` and `meta` (+ the state's checksums) as checkpoint
    `step`."""
    meta = dict(meta, checksum=checksums(state))
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                             meta=ocp.args.JsonSave(meta)))


def _verify(state: dict, meta: dict, step: int) -> None:
    """Raise `ChecksumMismatch` if a restored entry's checksum differs from the saved one
    (checkpoints saved without checksums, or multi-host ones, are not checked)."""
    saved = meta.get("checksum") if isinstance(meta, dict) else None
    got = checksums(state) if saved else None
    for key in sorted(got or {}):
        if key in saved and saved[key] != got[key]:
            raise ChecksumMismatch(f"checksum of state[{key!r}] in checkpoint {step} is "
                                   f"{got[key]}, saved as {saved[key]}: its data is damaged")


def restore(mngr: ocp.CheckpointManager, step: int, target, *, partial: bool = False):
    """(state, meta) of checkpoint `step`, laid out like `target` (a pytree of
    `jax.ShapeDtypeStruct` with shardings). `partial`: `target` names a subtree (e.g.
    {"params": ...}) and nothing else is read."""
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=partial),
        meta=ocp.args.JsonRestore()))
    _verify(restored.state, restored.meta, step)
    return restored.state, restored.meta


def restore_latest(mngr: ocp.CheckpointManager, target, *, partial: bool = False,
                   move_aside: bool = True):
    """(step, state, meta) from the newest checkpoint that restores, else None.

    orbax only lists committed (atomically finalised) checkpoints; one that is committed but
    damaged (a truncated or deleted file, or flipped bits: `ChecksumMismatch`) is skipped with a warning for the one before it. With
    `move_aside` (a writable manager), it is renamed to `<step>.corrupt.<time>` (kept for
    inspection) so that the step can be saved again.
    """
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            state, meta = restore(mngr, step, target, partial=partial)
        except Exception as e:  # noqa: BLE001 - any failure to read means: try an older one
            print(f"warning: checkpoint {step} in {mngr.directory} is unreadable "
                  f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); trying an older one",
                  file=sys.stderr, flush=True)
            if move_aside:
                bad = os.path.join(str(mngr.directory), str(step))
                os.replace(bad, f"{bad}.corrupt.{int(time.time())}")
                mngr.reload()
            continue
        return step, state, meta
    return None


def load_trained(workdir: str, step: int | None = None) -> tuple[ConfigDict, Transformer]:
    """(cfg, model) of a trained run: its config.json and the params of checkpoint `step`
    (default: the newest readable one), on this process's first device whatever mesh the run
    was trained on. No checkpoint: FileNotFoundError."""
    cfg = from_json_file(os.path.join(workdir, "config.json"))
    graphdef, abstract_params = nnx.split(abstract_model(cfg.model), nnx.Param)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {"params": jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
        nnx.to_pure_dict(abstract_params))}
    with manager(workdir) as mngr:
        if step is None:
            found = restore_latest(mngr, target, partial=True, move_aside=False)
        elif step in mngr.all_steps():
            found = (step, *restore(mngr, step, target, partial=True))
        else:
            found = None
    if found is None:
        what = "checkpoint" if step is None else f"checkpoint {step}"
        raise FileNotFoundError(f"no readable {what} under {checkpoint_dir(workdir)}")
    return cfg, nnx.merge(graphdef, found[1]["params"])


# ---------------------------------------------------------------------------- train.init_from

def init_source(path: str) -> tuple[str, int | None]:
    """`train.init_from` -> (trained run dir, checkpoint step or None for the newest): a run dir
    or one of its `checkpoints/<step>` dirs; anything else is a one-line `UserError`."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    if name.isdigit() and os.path.basename(parent) == "checkpoints":
        run, step = os.path.dirname(parent), int(name)
    else:
        run, step = path, None
    if not os.path.isfile(os.path.join(run, "config.json")):
        raise UserError(f"--init-from {path}: not a trained run (no config.json in {run}); pass "
                        f"a trial dir or its checkpoints/<step>")
    return run, step


def _param_shapes(cfg_model) -> dict[str, tuple]:
    params = nnx.to_pure_dict(nnx.state(abstract_model(cfg_model), nnx.Param))
    return {jax.tree_util.keystr(k): tuple(a.shape)
            for k, a in jax.tree_util.tree_flatten_with_path(params)[0]}


def check_init_from(cfg: ConfigDict) -> None:
    """A one-line `UserError` unless `cfg.train.init_from` names a run whose parameters have
    exactly this config's names and shapes (other fields: attention, positions' scaling,
    seq_len, optimizer... may differ). No data is read."""
    run, _ = init_source(cfg.train.init_from)
    src = from_json_file(os.path.join(run, "config.json"))
    there, here = _param_shapes(src.model), _param_shapes(cfg.model)
    diff = [k for k in sorted(set(there) | set(here)) if there.get(k) != here.get(k)]
    if diff:
        k = diff[0]
        hint = (" (learned positions: the table is model.max_len long; extend a pos=rope model)"
                if "pos_embed" in k else "")
        raise UserError(f"--init-from {run}: {len(diff)} parameter(s) differ in shape, e.g. "
                        f"{k} is {there.get(k, 'absent')} there and {here.get(k, 'absent')} "
                        f"here{hint}; keep the model.* sizes of the source run")


def init_params(init_from: str, shardings) -> dict:
    """The parameters of the run named by `train.init_from` (see `init_source`), laid out on
    `shardings` (the train state's param shardings); no checkpoint: a `UserError`."""
    run, step = init_source(init_from)
    try:
        _, model = load_trained(run, step)
    except FileNotFoundError as e:
        raise UserError(f"--init-from {init_from}: {e}; train the source run first") from e
    return jax.device_put(nnx.to_pure_dict(nnx.state(model, nnx.Param)), shardings)
