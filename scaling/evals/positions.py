"""`ppl_by_position`: validation loss per position bucket, past the training length too.

    scaling eval --workdir RUN --positions 256 [--buckets 8] [--rope-scaling linear:2] [--out F]

Sequences of `length` tokens (e.g. 2x train.seq_len) are cut from the validation split (the
fixed spread sample of `eval.batches` batches, as for val_loss); the next-token loss of every
position is averaged over them and then over `buckets` equal position ranges. Rows whose range
starts at or past train.seq_len are flagged `beyond_train`. Learned positions stop at
model.max_len: their rows past the table have loss null and a note (the model cannot be run
there). `rope_scaling` evaluates the same parameters under another `model.rope_scaling` (e.g.
position interpolation without fine-tuning). The result is one JSON file (default
`<workdir>/ppl_by_position.json`), read by analysis/plots/positions.py.
"""
from __future__ import annotations

import functools
import math
import os

import jax
import numpy as np
import optax
from flax import nnx

from scaling.config import ConfigDict, resolve
from scaling.data import TokenBatches
from scaling.decode import split_for_jit
from scaling.errors import UserError
from scaling.fileio import write_json_atomic
from scaling.model.transformer import abstract_model


@functools.partial(jax.jit, static_argnames=("static",))
def _token_losses(static, params, tokens_BT1):
    logits_BTV = nnx.merge(static.graphdef, params)(tokens_BT1[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits_BTV, tokens_BT1[:, 1:])


def with_model_config(model, cfg_model: ConfigDict):
    """`model`'s parameters under another (shape-compatible) model config, e.g. rope_scaling."""
    graphdef, _ = nnx.split(abstract_model(cfg_model), nnx.Param)
    return nnx.merge(graphdef, nnx.state(model, nnx.Param))


def position_losses(cfg: ConfigDict, model, length: int) -> tuple[np.ndarray, int]:
    """(mean loss of each position 0..n-1 over the validation sample, its sequence count);
    n = length, or model.max_len for learned positions if shorter."""
    n = min(length, cfg.model.max_len) if cfg.model.pos == "learned" else length
    c = ConfigDict(cfg.to_dict())
    c.train.seq_len = length
    data = TokenBatches(c, c.data.val_split)
    k = min(cfg.eval.batches, data.num_batches)
    static, params = split_for_jit(model)
    total, rows = np.zeros(n), 0
    for i in range(k):
        batch = np.asarray(data.spread_batch(i, k))[:, :n + 1]
        total += np.asarray(_token_losses(static, params, batch), np.float64).sum(axis=0)
        rows += batch.shape[0]
    return total / rows, rows


def ppl_by_position(cfg: ConfigDict, model, length: int, buckets: int = 8) -> dict:
    """The `ppl_by_position` result (see the module docstring) for a trained `model`."""
    if length < 2 or buckets < 1 or buckets > length:
        raise UserError(f"--positions {length} --buckets {buckets}: need length >= 2 and "
                        f"1 <= buckets <= length")
    per_pos, n_seq = position_losses(cfg, model, length)
    T, edges = cfg.train.seq_len, np.linspace(0, length, buckets + 1).round().astype(int)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        row = {"metric": "ppl_by_position", "lo": int(lo), "hi": int(hi),
               "beyond_train": bool(lo >= T), "loss": None, "ppl": None}
        if hi <= per_pos.size:
            loss = float(per_pos[lo:hi].mean())
            row.update(loss=loss, ppl=math.exp(min(loss, 50.0)))
        else:
            row["note"] = (f"learned positions stop at model.max_len={cfg.model.max_len}: "
                           f"no loss past the table")
        rows.append(row)
    m = cfg.model
    return {"length": length, "train_seq_len": T, "pos": m.pos, "attention": m.attention,
            "rope_scaling": m.rope_scaling, "max_len": m.max_len, "sequences": n_seq,
            "per_position": [float(x) for x in per_pos], "rows": rows}


def run_and_write(cfg: ConfigDict, model, length: int, buckets: int, out: str,
                  rope_scaling: str | None = None) -> dict:
    """Evaluate (under `rope_scaling` if given) and write the JSON to `out`."""
    if rope_scaling:
        cfg = ConfigDict(cfg.to_dict())
        cfg.model.rope_scaling = rope_scaling
        cfg = resolve(cfg)  # a bad spec, or scaling without rope: one-line UserError
        model = with_model_config(model, cfg.model)
    result = ppl_by_position(cfg, model, length, buckets)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_json_atomic(out, result)
    return result
