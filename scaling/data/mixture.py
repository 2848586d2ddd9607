"""Pretraining mixtures: the corpus plus task streams, by weight (`data.mixture`).

    data.mixture = "kjv:0.5,addition:0.3,icl_mapping(symbols=6):0.2"    ("" = corpus only)

Each row of each training batch picks its source with a generator keyed by (seed, step, row);
a task row is train-split task text generated from the same key, cut to seq_len + 1 tokens.
So `batch(step)` stays a pure function of (seed, step) and resume stays exact. The corpus name
is `data.name`; corpus rows are the ordinary shuffled windows of the same step. The spec is parsed and
checked by `scaling.tasks.parse_mixture` (beside the tasks, so config validation needs no data code).
"""
from __future__ import annotations

import numpy as np

from scaling.tasks import get_task, parse_mixture


class MixedBatches:
    """`mixed[step]` = the corpus batch of `step` with some rows replaced by task text.

    `rows` is this process's slice of the global batch: a row's source and text depend on its
    global index, so every process count yields the same global batch.
    """

    def __init__(self, corpus_batches, weights: dict[str, float], corpus: str, seed: int,
                 seq_len: int, rows: slice):
        self.corpus_batches, self.seed, self.seq_len, self.rows = corpus_batches, seed, seq_len, rows
        self.names = list(weights)
        self.p = np.array([weights[n] for n in self.names])
        self.tasks = {n: None if n == corpus else get_task(n) for n in self.names}

    def source(self, step: int, row: int) -> str:
        rng = np.random.default_rng([self.seed, step, row, 0])
        return self.names[int(rng.choice(len(self.names), p=self.p))]

    def task_row(self, name: str, step: int, row: int) -> np.ndarray:
        """seq_len + 1 byte tokens of task `name`'s train text for (seed, step, row)."""
        rng = np.random.default_rng([self.seed, step, row, 1])
        text = self.tasks[name].train_text(rng, self.seq_len + 1)
        return np.frombuffer(text.encode("utf-8"), np.uint8)[:self.seq_len + 1].astype(np.int32)

    def __getitem__(self, step: int) -> np.ndarray:
        batch_BT1 = np.array(self.corpus_batches[step])  # a copy: rows are replaced below
        for b, row in enumerate(range(self.rows.start, self.rows.stop)):
            name = self.source(step, row)
            if self.tasks[name] is not None:
                batch_BT1[b] = self.task_row(name, step, row)
        return batch_BT1


def corpus_share(data) -> float:
    """The corpus's share of the training rows under `data.mixture` (1.0 without one).

    Epochs count corpus tokens only: task rows are generated fresh and never repeat, so a
    mixture with 15% corpus repeats the corpus at 0.15x the rate its token count suggests."""
    return parse_mixture(data.mixture, data.name).get(data.name, 0.0) if data.mixture else 1.0


def mix(corpus_batches, cfg, rows: slice):
    """Wrap a corpus batch source with `cfg.data.mixture` (the corpus itself if it is "")."""
    if not cfg.data.mixture:
        return corpus_batches
    weights = parse_mixture(cfg.data.mixture, cfg.data.name)
    return MixedBatches(corpus_batches, weights, cfg.data.name, cfg.train.seed,
                        cfg.train.seq_len, rows)
