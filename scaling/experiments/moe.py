"""Mixture of experts vs dense at matched ACTIVE parameters: 3 sizes x {dense, 4, 8 experts}.

    scaling sweep --config experiments/moe.py --workdir runs/moe          (~25 min, 2 cores)
    scaling sweep --config experiments/moe.py:pilot --workdir runs/moe_pilot   (smallest size)
    scaling fit moe runs/moe --plot runs/moe/plots       # Clark et al. fit + loss vs active/total

Design:
- Byte-level LMs on KJV, the isoflop study's batch (8 x 128) and per-size learning rate (its
  lr rule, evaluated at the ACTIVE non-embedding parameter count, which is the dense count plus
  the small router).
- Every layer's MLP is a top-1 (Switch) mixture of E experts, each the dense MLP's shape, so a
  token multiplies the same weights as in the dense model (plus the router): matched active
  parameters and, by scaling.counting's convention, matched FLOPs per token. Total parameters
  grow ~E-fold in the MLPs. Capacity factor 1.25 (dropped fraction logged per step), the
  Switch load-balancing weight 0.01 and ST-MoE z-loss 0.001.
- One token budget per size (600 optimizer steps = 614k tokens), so the comparison at each
  size is at equal compute; sizes 3.2k / 12k / 25k non-embedding parameters (dense).
"""
from scaling.experiments.isoflop import lr_for, size_counts
from scaling.config import default_config
from scaling.sweeps import grid

SIZES = [grid.size(16, 1, 2), grid.size(32, 1, 2), grid.size(32, 2, 2)]
EXPERTS = [0, 4, 8]
BATCH, SEQ_LEN, STEPS = 8, 128, 600


def get_config(arg=None):
    c = default_config()
    c.name = "moe"
    c.train.update(dict(batch_size=BATCH, seq_len=SEQ_LEN, tokens=BATCH * SEQ_LEN * STEPS,
                        warmup=0.05))
    c.model.moe.update(dict(top_k=1, every=1, capacity_factor=1.25, aux_loss_weight=0.01,
                            z_loss_weight=0.001))
    c.log.every = 25
    c.eval.batches = 64
    return c


def get_sweep(arg=None):
    base = get_config(arg)
    sizes = SIZES[:1] if arg == "pilot" else SIZES
    points = grid.product(sizes, {"model.moe.experts": EXPERTS})
    # lr from the dense size: experts leave the active count unchanged but for the router
    return grid.per_size(points, lambda p: {"train.lr": lr_for(size_counts(base, {
        k: v for k, v in p.items() if k != "model.moe.experts"})[0])})
