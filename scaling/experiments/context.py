"""Context extension (issue 17): loss by position past the training length, per position scheme.

    python -m scaling.experiments.context runs/context          (~10 min on 2 cores)
    python -m scaling.experiments.context runs/context smoke    (~2 min)

Trains d64/L2 models at T = 64 with learned, sinusoidal and RoPE positions (`scaling train
--config experiments/context.py --config.model.pos=POS`), fine-tunes the RoPE model at 2T under
position interpolation (Chen et al. 2023: `:finetune`, `--init-from`, rope_scaling=linear:2,
FINETUNE_STEPS steps), evaluates `ppl_by_position` at 2T (`scaling eval --positions`) for:
learned (stops at its table), sinusoidal, rope, rope + interpolation without fine-tuning, rope +
NTK scaling without fine-tuning, rope + interpolation + fine-tune; and draws the chart
(`python -m analysis.architecture context DIR` -> DIR/plots/ppl_by_position.png). Every step is
a CLI command (printed as it runs), so each can be rerun alone; finished runs are not retrained.
"""
import os
import subprocess
import sys

from scaling.config import default_config

T, FACTOR, FINETUNE_STEPS = 64, 2, 150
TOKENS = 1_500_000


def get_config(arg=None):
    c = default_config()
    c.name = "context"
    c.model.update(dict(d_model=64, n_layers=2, n_heads=4, pos="rope"))
    c.train.update(dict(batch_size=16, seq_len=T, tokens=TOKENS, lr=3e-3))
    c.log.every = 50
    c.eval.batches = 16
    if arg in ("smoke", "finetune-smoke"):
        c.train.tokens = 16 * T * 30
    if arg in ("finetune", "finetune-smoke"):  # Chen et al.: short, low lr, no long warmup
        c.model.rope_scaling = f"linear:{FACTOR}"
        c.train.update(dict(seq_len=FACTOR * T, tokens=0, steps=FINETUNE_STEPS, lr=1e-3,
                            warmup=5.0))
        if arg == "finetune-smoke":
            c.train.steps = 5
    return c


def _run(*args: str) -> None:
    cmd = [sys.executable, "-m", *args]
    print("+", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or len(argv) > 2:
        print("usage: python -m scaling.experiments.context DIR [smoke]", file=sys.stderr)
        return 2
    out, smoke = argv[0], len(argv) == 2 and argv[1] == "smoke"
    here = os.path.abspath(__file__)
    base = f"{here}:smoke" if smoke else here
    for pos in ("learned", "sinusoidal", "rope"):
        _run("scaling.cli", "train", "--config", base, f"--config.model.pos={pos}",
             "--workdir", f"{out}/{pos}")
    _run("scaling.cli", "train", "--config", f"{here}:finetune{'-smoke' if smoke else ''}",
         "--init-from", f"{out}/rope", "--workdir", f"{out}/rope_pi_finetuned")
    L = str(FACTOR * T)
    evals = [("learned", "learned", None), ("sinusoidal", "sinusoidal", None),
             ("rope", "rope", None), ("rope_pi_no_finetune", "rope", f"linear:{FACTOR}"),
             ("rope_ntk_no_finetune", "rope", f"ntk:{FACTOR}"),
             ("rope_pi_finetuned", "rope_pi_finetuned", None)]
    for label, run, scaling in evals:
        _run("scaling.cli", "eval", "--workdir", f"{out}/{run}", "--positions", L, "--buckets",
             "8", "--out", f"{out}/ppl/{label}.json",
             *(["--rope-scaling", scaling] if scaling else []))
    _run("analysis.architecture", "context", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
