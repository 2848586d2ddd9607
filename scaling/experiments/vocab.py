"""Vocabulary size as a sweep axis: byte, bpe:512 ... bpe:8192 x 3 model sizes on KJV.

    scaling sweep --config experiments/vocab.py --workdir runs/vocab           (~30 min, 2 cores)
    scaling sweep --config experiments/vocab.py:pilot --workdir runs/vocab_pilot  (~2 min)
    scaling plot runs/vocab        # + plots/bpb_vs_vocab.png: val_bpb vs vocabulary per size

In the spirit of Tao et al. 2024 ("Scaling Laws with Vocabulary"): is there a best vocabulary
per model size, and does it grow with the size? Two choices make tokenizers comparable:

* the loss is read in bits per UTF-8 byte of validation text (`val_bpb`), not nats per token;
* every trial of a size trains on the same TEXT, TEXT_BYTES bytes of the KJV train split
  (~0.2 epochs), as Tao et al. count data in characters: `train.tokens` = TEXT_BYTES / the
  tokenizer's bytes per token on the train split, read from its token store (built and the
  bpe trained on first use, a few seconds each, when the sweep is planned). A larger vocabulary
  thus takes fewer, more expensive steps: its embedding and output layer grow with V, which
  at these sizes is most of the parameters (and of the FLOPs of the larger vocabularies).

Sizes: N_non-embedding ~25k, 99k, 394k (d32/64/128, 2 layers), batch 8 x 128 tokens, lr per
size from experiments/lr_sweep.py's rule (fitted on byte-level models: a caveat for large V).
"""
from scaling.config import ConfigDict, default_config
from scaling.data.store import prepare, read_index
from scaling.data.sources import split_name
from scaling.experiments import isoflop
from scaling.sweeps import grid

SIZES = [grid.size(32, 2, 2), grid.size(64, 2, 4), grid.size(128, 2, 4)]
TOKENIZERS = ["byte", "bpe:512", "bpe:1024", "bpe:2048", "bpe:4096", "bpe:8192"]
TEXT_BYTES = 800_000
PILOT = dict(sizes=SIZES[:1], tokenizers=["byte", "bpe:512"], text_bytes=60_000)


def get_config(arg=None):
    c = default_config()
    c.name = "vocab"
    c.train.update(dict(batch_size=8, seq_len=128, warmup=0.05))
    c.train.tokens = TEXT_BYTES
    c.log.every = 25
    c.eval.batches = 32
    return c


def bytes_per_token(base, tokenizer: str) -> float:
    """UTF-8 bytes of text per token of `tokenizer` on the train split (documents + EOS),
    from the token store's index (prepared on first use, as the first trial would)."""
    data = ConfigDict(base.data.to_dict())
    data.tokenizer = tokenizer
    split = split_name(data, data.train_split)
    s = read_index(prepare(data, data.train_split, progress=False))["splits"][split]
    return s["text_bytes"] / s["tokens"]


def get_sweep(arg=None):
    p = PILOT if arg == "pilot" else dict(sizes=SIZES, tokenizers=TOKENIZERS,
                                          text_bytes=TEXT_BYTES)
    base = get_config(arg)
    tokens = {t: int(p["text_bytes"] / bytes_per_token(base, t)) for t in p["tokenizers"]}
    points = grid.product(p["sizes"], {"data.tokenizer": p["tokenizers"]})
    return grid.per_size(points, lambda q: {
        "train.tokens": tokens[q["data.tokenizer"]],
        "train.lr": isoflop.lr_for(isoflop.size_counts(base, q)[0])})
