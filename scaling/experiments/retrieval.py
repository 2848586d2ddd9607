"""Retrieval vs parameters: 4 model sizes pretrained on KJV + a synthetic knowledge base, each
evaluated closed-book and with the BM25-retrieved fact (RETRO, Borgeaud et al. 2022).

    scaling sweep --config experiments/retrieval.py --workdir runs/retrieval --parallel 2  (23 min on 2 quiet cores)
    scaling sweep --config experiments/retrieval.py:questions --workdir runs/retrieval_q   (earlier design)
    scaling sweep --config experiments/retrieval.py:cloze --workdir runs/retrieval_cloze   (earlier design)
    scaling sweep --config experiments/retrieval.py:smoke --workdir runs/retrieval_smoke   (~3 min)
    python -m analysis.retrieval runs/retrieval     # accuracy vs size, closed vs retrieved, gap

The fact task (scaling/tasks.py `facts`, knowledge base in scaling/knowledge.py: 200 people x 4
attributes) states every fact in the pretraining mixture (as each person's four-fact passage)
and asks only train-split (person, attribute) facts there, closed-book and in the retrieved
format ("Context: <retrieved text>" line, then the query). Eval queries are the held-out pairs:
closed-book ("direct" mode) the model must have stored the fact in its parameters; "retrieved"
mode prepends BM25's top-1 unit (bm25s), which holds the answer whenever retrieval is right
(recall@1 is reported). The retrieved prompt is the closed-book prompt plus the context line,
and the model has practised reading such lines. Also scored: free-form KJV verse continuation
(ROUGE-L, BLEU, token F1). One training run per size serves both modes.

Default: queries are cloze prefixes ("Dorin Kesta lives in" -> "Varno") and the retrieval unit
is one fact ("Dorin Kesta lives in Varno."), `facts(cloze=1,per_fact=1)`. Two earlier designs
stay runnable: `:questions` ("Where does Dorin Kesta live?", the entity's four-fact passage
retrieved) and `:cloze` (cloze queries, the passage retrieved). In both the 2-layer models
rarely copied the asked value out of a four-fact passage, and retrieved accuracy fell below
closed-book at some sizes (docs/results.md, "Retrieval vs parameters").
"""
from scaling.config import default_config
from scaling.experiments import isoflop
from scaling.sweeps import grid

# Two layers at least: reading an answer out of the context is an induction-style copy, which
# one-layer models did not learn (d16/L1, d32/L1: retrieved <= closed-book, docs/results.md).
SIZES = [grid.size(32, 2, 2), grid.size(48, 2, 3), grid.size(64, 2, 4), grid.size(96, 2, 6)]
# 1.2M tokens (391 steps) left every size at exact match 0, closed-book and retrieved (the
# answer format was not learned); at 4.8M the format was learned but not reading the context
# (docs/results.md, "Retrieval vs parameters").
TOKENS = 9_600_000
TASKS = {"perfact": "facts(cloze=1,per_fact=1)", "questions": "facts", "cloze": "facts(cloze=1)"}
ARGS = (None, "perfact", "questions", "cloze", "smoke")


def task_for(arg=None) -> str:
    return TASKS[arg if arg in TASKS else "perfact"]


def get_config(arg=None):
    if arg not in ARGS:
        raise ValueError(f"unknown ARG {arg!r}; use nothing (cloze queries, one fact retrieved), "
                         f"questions, cloze or smoke")
    task = task_for(arg)
    c = default_config()
    c.name = "retrieval"
    c.data.mixture = f"kjv:0.15,{task}:0.85"
    # seq_len 192: a retrieved prompt (passage + question, <= 173 bytes) plus its answer fits.
    c.train.update(dict(batch_size=16, seq_len=192, lr=3e-3, tokens=TOKENS, warmup=0.05))
    c.log.every = 50
    c.eval.update(dict(tasks=f"{task},verse", examples=160, shots="0", sc_samples=0))
    if arg == "smoke":
        c.train.tokens = 16 * 192 * 40
        c.log.every = 10
        c.eval.update(dict(examples=16))
    return c


def get_sweep(arg=None):
    base = get_config(arg)
    sizes = [{k: s[k] for k in ("model.d_model", "model.n_layers", "model.n_heads")}
             for s in (SIZES[:2] if arg == "smoke" else SIZES)]
    # Per-size lr from the IsoFLOP study's rule (experiments/lr_sweep.py): one lr for all
    # sizes leaves the smallest far from its optimum (a 400k-token pilot at d48 and lr 3e-3
    # had not yet learned the answer format, closed-book or retrieved).
    return grid.per_size(sizes, lambda p: {"train.lr": isoflop.lr_for(isoflop.size_counts(base, p)[0])})
