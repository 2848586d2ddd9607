"""The train state, its shardings and the jitted init / step / eval for one config on one mesh.

The train state is a plain pytree {"step", "params", "opt_state", "guard"} (params as a pure
dict, merged into the NNX model inside the step), so optax, orbax and shardings see ordinary
nested dicts. "guard" holds the non-finite / loss-spike bookkeeping (see `Trainer._guard`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

from scaling.config import ConfigDict
from scaling.model import mup
from scaling.model.moe import aux_objective
from scaling.model.transformer import Transformer, abstract_model
from scaling.parallel import gpipe as pipeline
from scaling.parallel import mesh as mesh_lib
from scaling.train.loss import loss_chunk, token_cross_entropy
from scaling.train.optim import make_optimizer, optimizer_hparams


class Trainer:
    """Optimizer, shardings and jitted init/step/eval for one resolved config on one mesh."""

    def __init__(self, cfg: ConfigDict, mesh: jax.sharding.Mesh):
        self.cfg, self.mesh = cfg, mesh
        self.loss_chunk = loss_chunk(cfg)
        self.graphdef, abstract_params = nnx.split(abstract_model(cfg.model), nnx.Param)
        logical = nnx.to_pure_dict(nnx.get_partition_spec(abstract_params))
        # μP's per-parameter Adam lr multipliers; None under sp (the plain optimizer).
        self.lr_mults = ((mup.param_labels(logical), mup.lr_multipliers(cfg.model))
                         if cfg.model.parametrization == "mup" else None)
        self.tx, self.schedule = make_optimizer(cfg.train, lr_mults=self.lr_mults)
        abstract = nnx.to_pure_dict(abstract_params)
        param_sh = jax.tree.map(lambda names, a: mesh_lib.logical_sharding(names, a.shape, mesh),
                                logical, abstract, is_leaf=lambda x: isinstance(x, P))
        repl = self.replicated = mesh_lib.replicated(mesh)
        abstract_opt = jax.eval_shape(self.tx.init, abstract)
        opt_sh = optax.tree_map_params(self.tx, lambda _, s: s, abstract_opt, param_sh,
                                       transform_non_params=lambda _: repl)
        abstract_guard = jax.eval_shape(self._guard_init)
        self.state_sharding = {"step": repl, "params": param_sh, "opt_state": opt_sh,
                               "guard": jax.tree.map(lambda _: repl, abstract_guard)}
        self.batch_sharding = mesh_lib.batch_sharding(mesh)
        self.abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": abstract,
             "opt_state": abstract_opt, "guard": abstract_guard}, self.state_sharding)
        self.init = jax.jit(self._init, out_shardings=self.state_sharding)
        # Optimizer numbers travel as (replicated, device-resident) arguments, so the compiled
        # step depends only on shapes and structure and is reused across a sweep's trials.
        self.hparams = jax.device_put(optimizer_hparams(cfg.train), repl)
        self.jit_step = jax.jit(self._step,
                                in_shardings=(self.state_sharding, self.batch_sharding, repl),
                                out_shardings=(self.state_sharding, repl), donate_argnums=0)
        # Per-sequence losses [B], replicated so that every process can read all of them.
        self.eval_losses = jax.jit(self._seq_losses, in_shardings=(param_sh, self.batch_sharding),
                                   out_shardings=repl)

    # -- pure functions (traced once) --
    def _init(self, seed):
        model = Transformer(self.cfg.model, nnx.Rngs(params=jax.random.key(seed)))
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        return {"step": jnp.zeros((), jnp.int32), "params": params,
                "opt_state": self.tx.init(params), "guard": self._guard_init()}

    def _guard_init(self):
        i32 = lambda v: jnp.full((), v, jnp.int32)  # noqa: E731
        return {"bad_step": i32(-1), "skipped": i32(0), "count": i32(0),
                "hist": jnp.zeros((max(self.cfg.train.spike_window, 1),), jnp.float32)}

    def _token_losses(self, params, tokens_BT1) -> tuple[jax.Array, dict]:
        """Next-token cross-entropy of every position: [B, T] float32 (scaling/train/loss.py;
        in chunks of `train.loss_chunk` positions, never the whole [B, T, V] logits), and the
        MoE router statistics ({} for a dense model; scaling/model/moe.py)."""
        model = nnx.merge(self.graphdef, params)
        x_BTD = model.embed_inputs(tokens_BT1[:, :-1])
        n_stages = self.mesh.shape["pipeline"]
        if n_stages == 1:
            # The mesh in the trace lets the MoE layers constrain their dispatched tokens.
            with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
                x_BTD, sown = nnx.capture(model.run_blocks, nnx.Intermediate)(x_BTD)
        else:  # GPipe over the stacked blocks; the loss runs after the last stage
            x_BTD = pipeline.run_blocks(model.blocks, x_BTD, n_stages,
                                        pipeline.num_microbatches(self.cfg), self.mesh)
            sown = {}  # MoE is refused with a pipeline
        moe = nnx.to_pure_dict(sown).get("moe", ({},))[0] if sown else {}
        return token_cross_entropy(model.logits, x_BTD, tokens_BT1[:, 1:], self.loss_chunk), moe

    def _loss(self, params, tokens_BT1) -> tuple[jax.Array, tuple[jax.Array, dict]]:
        """The training objective: mean next-token cross-entropy over the batch, plus the MoE
        router losses; aux (cross-entropy, MoE statistics)."""
        losses_BT, moe = self._token_losses(params, tokens_BT1)
        loss = losses_BT.mean()
        return (loss + aux_objective(moe, self.cfg.model.moe) if moe else loss), (loss, moe)

    def _seq_losses(self, params, tokens_BT1) -> jax.Array:
        """Mean next-token cross-entropy of each sequence: [B] (validation, its spread)."""
        return self._token_losses(params, tokens_BT1)[0].mean(axis=1)

    def step(self, state, tokens_BT1):
        """One jitted optimizer step (donates `state`): returns (new state, metrics)."""
        return self.jit_step(state, tokens_BT1, self.hparams)

    def _step(self, state, tokens_BT1, hp):
        tx, schedule = make_optimizer(self.cfg.train, hp, self.lr_mults)  # structure of self.tx
        (_, (loss, moe)), grads = jax.value_and_grad(self._loss, has_aux=True)(
            state["params"], tokens_BT1)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        grad_norm = optax.tree.norm(grads)
        guard, ok = self._guard(state, loss, grad_norm)
        if self.cfg.train.nan_policy == "skip":  # keep the old params and moments
            keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
            params = jax.tree.map(keep, params, state["params"])
            opt_state = jax.tree.map(keep, opt_state, state["opt_state"])
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state["step"]),
                   "skipped": guard["skipped"], "bad_step": guard["bad_step"], **moe}
        return {"step": state["step"] + 1, "params": params, "opt_state": opt_state,
                "guard": guard}, metrics

    def _guard(self, state, loss, grad_norm):
        """Track non-finite steps and loss spikes; returns (new guard state, update ok?).

        A spike is a loss above mean + `spike_sigmas` * std of the last `spike_window` accepted
        losses (OLMo / MaxText style). The window lives in the train state, so skipping is
        deterministic and survives resume.
        """
        t, g = self.cfg.train, state["guard"]
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        ok = finite
        if t.spike_window:
            hist = g["hist"]
            full = g["count"] >= hist.shape[0]
            spike = full & (loss > hist.mean() + t.spike_sigmas * hist.std())
            ok = finite & ~spike
        write = ok & finite
        hist = jnp.where(write, g["hist"].at[g["count"] % g["hist"].shape[0]].set(loss),
                         g["hist"])
        step1 = state["step"] + 1
        return {"bad_step": jnp.where((g["bad_step"] < 0) & ~finite, step1, g["bad_step"]),
                "skipped": g["skipped"] + (~ok).astype(jnp.int32),
                "count": g["count"] + write.astype(jnp.int32), "hist": hist}, ok

    # -- host helpers --
    def global_batch(self, local_BT1: np.ndarray) -> jax.Array:
        """Assemble the global batch from this process's rows (multi-host ready)."""
        return jax.make_array_from_process_local_data(self.batch_sharding, local_BT1)
