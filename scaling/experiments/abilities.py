"""Abilities sweep: 5 model sizes pretrained on KJV mixed with task streams, then task evals.

    scaling sweep --config experiments/abilities.py --workdir runs/abilities          (~1 h, 2 cores)
    scaling sweep --config experiments/abilities.py:smoke --workdir runs/abilities_smoke  (minutes)
    scaling sweep --config experiments/abilities.py:arith --workdir runs/arith   (8M tokens/size,
        60% addition + 30% copy: the sizes where 2-digit addition and copying appear)
    python -m analysis.abilities runs/abilities      # emergence / ICL / self-consistency charts

Every trial ends with `scaling.evals.run` (eval.jsonl; columns eval/... in results.parquet):
addition (direct and scratchpad CoT), modular arithmetic, copying, in-context symbol->label
mapping, held-out KJV next-word completion; k in 0,1,2,4,8; self-consistency (5 samples at
T=0.8, top-k 40) at k=4. Sizes span N_non-embedding ~13k -> ~800k (60x), same token budget.
"""
from scaling.config import default_config
from scaling.sweeps import grid

SIZES = [grid.size(32, 1, 2), grid.size(48, 2, 3), grid.size(64, 3, 4), grid.size(96, 3, 6),
         grid.size(128, 4, 8)]
TOKENS = 2_500_000
MIXTURE = "kjv:0.2,addition:0.3,icl_mapping:0.25,modular:0.1,copy:0.15"


def get_config(arg=None):
    c = default_config()
    c.name = "abilities"
    c.data.mixture = MIXTURE
    c.train.update(dict(batch_size=32, seq_len=160, lr=3e-3, tokens=TOKENS))
    c.log.every = 20
    c.eval.update(dict(tasks="addition,icl_mapping,modular,copy,text", examples=48,
                       shots="0,1,2,4,8", sc_samples=5, sc_shots=4, temperature=0.8, top_k=40))
    if arg == "arith":  # more tokens, arithmetic-heavy mix: where addition and copying are learned
        c.data.mixture = "kjv:0.1,addition:0.6,copy:0.3"
        c.train.tokens = 8_000_000
        c.log.every = 100
        c.eval.update(dict(tasks="addition,copy", shots="0,4"))
    if arg == "smoke":
        c.train.tokens = 32 * 160 * 20
        c.eval.update(dict(examples=4, shots="0,2", sc_shots=2, sc_samples=3))
    return c


def get_sweep(arg=None):
    return [{"model.d_model": s["model.d_model"], "model.n_layers": s["model.n_layers"],
             "model.n_heads": s["model.n_heads"]} for s in (SIZES[:2] if arg == "smoke" else SIZES)]
