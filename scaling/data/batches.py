"""The pretraining stream: the token store (scaling.data.store) -> batches by step.

Every document is tokenized, followed by EOS, and concatenated (in the store's shards). Sequence
i is the window `tokens[i*T : i*T + T + 1]` (T = train.seq_len): inputs are its first T tokens,
targets the last T; a window may span two shards. A training batch is a pure function of
(seed, step): grain shuffles window indices with a Feistel permutation that supports random
access and reshuffles each epoch, so resuming needs nothing but the step number.
"""
from __future__ import annotations

from typing import Iterator

import grain
import numpy as np

from scaling.config import model_vocab_size
from scaling.data.store import load_tokens, tokenizer_for
from scaling.errors import UserError


# ---------------------------------------------------------------------------- batches

class TokenBatches:
    """Batches `[batch_size // process_count, seq_len + 1]` int32, random access by step.

    Train split (default): windows shuffled with `train.seed`, a new permutation each epoch,
    batches cut across epoch boundaries; `batch(step)` is a pure function of (seed, step).
    Validation (`split == data.val_split` or "validation"): windows in order, no shuffle;
    `batch(i)` for i in range(num_batches) covers each full batch once (later i wrap around).
    Process p of P gets rows [p*B/P, (p+1)*B/P) of the global batch.
    """

    def __init__(self, cfg, split: str = "train", *, process_index: int = 0,
                 process_count: int = 1):
        d, t = cfg.data, cfg.train
        tokenizer = tokenizer_for(d)
        vocab = cfg.model.vocab_size or model_vocab_size(d.tokenizer)
        if vocab < tokenizer.vocab_size:
            raise UserError(f"model.vocab_size={vocab} is smaller than the "
                            f"tokenizer's vocabulary ({tokenizer.vocab_size}); raise it")
        if t.batch_size % process_count:
            raise UserError(f"train.batch_size={t.batch_size} is not divisible by the "
                            f"{process_count} processes; pick a multiple of {process_count}")
        if not 0 <= process_index < process_count:
            raise UserError(f"process_index={process_index} is outside [0, {process_count})")
        # "train"/"validation" are roles; the config names the dataset's actual splits.
        role_split = {"train": d.train_split, "validation": d.val_split}
        self.split = role_split.get(split, split)
        self.shuffle = self.split == d.train_split and split != "validation"
        self.seq_len, self.batch_size, self.seed = t.seq_len, t.batch_size, t.seed
        self.vocab_size = tokenizer.vocab_size
        self.tokenizer = tokenizer
        # bytes of text per token id: a batch's bytes = token_bytes_V[targets].sum() (bits per byte)
        self.token_bytes_V = tokenizer.token_byte_lengths()
        self.local_batch_size = t.batch_size // process_count
        self._rows = slice(process_index * self.local_batch_size,
                           (process_index + 1) * self.local_batch_size)

        self.tokens = load_tokens(d, self.split)
        self.num_tokens = int(self.tokens.shape[0])
        self.num_windows = (self.num_tokens - 1) // self.seq_len
        if self.num_windows < 1:
            raise UserError(f"split {self.split!r} of {d.name!r} has {self.num_tokens} tokens, "
                            f"fewer than one sequence of train.seq_len+1={self.seq_len + 1}; "
                            f"lower train.seq_len")
        self.num_batches = max(1, self.num_windows // self.batch_size)  # full batches per epoch
        self._offsets = np.arange(self.seq_len + 1)

        ds = grain.MapDataset.range(self.num_windows)
        if self.shuffle:
            ds = ds.shuffle(seed=self.seed)
        # repeat(): infinite; grain reseeds the shuffle per epoch (deterministically).
        ds = ds.repeat().batch(self.batch_size, drop_remainder=True)
        self._batches = ds.map(self._gather)
        if self.shuffle and getattr(d, "mixture", ""):  # task streams mixed in by row
            from scaling.data.mixture import mix
            self._batches = mix(self._batches, cfg, self._rows)

    def _gather(self, window_ids: np.ndarray) -> np.ndarray:
        starts = np.asarray(window_ids[self._rows], dtype=np.int64) * self.seq_len
        return self.tokens[starts[:, None] + self._offsets].astype(np.int32)

    def batch(self, step: int) -> np.ndarray:
        """This process's rows of global batch `step` (int32, [B/P, seq_len + 1])."""
        if step < 0:
            raise UserError(f"batch step must be >= 0, got {step}")
        return self._batches[int(step)]

    __getitem__ = batch

    def spread_batch(self, i: int, num_batches: int) -> np.ndarray:
        """This process's rows of batch `i` of a fixed sample of `num_batches` batches whose
        windows are evenly spread over the whole split (for validation: every part of the split
        counts, not its first documents). Batch i holds every num_batches-th of the
        num_batches * batch_size evenly spaced windows, so each batch spans the split too. The
        sample depends only on the data, seq_len, batch_size and num_batches (paired across
        runs); with fewer windows than that, windows repeat."""
        n = num_batches * self.batch_size
        ids_N = np.arange(n, dtype=np.int64) * self.num_windows // n
        return self._gather(ids_N[i::num_batches])

    def iterate(self, start_step: int = 0) -> Iterator[np.ndarray]:
        """Batches from `start_step` on, forever (resume = pass the restored step)."""
        step = start_step
        while True:
            yield self.batch(step)
            step += 1

    def state(self, step: int) -> dict:
        """The iterator state to checkpoint: the next step plus what must match on resume."""
        return {"step": int(step), "seed": self.seed, "split": self.split,
                "num_windows": self.num_windows, "seq_len": self.seq_len,
                "batch_size": self.batch_size}

    def restore(self, state: dict) -> int:
        """Check a `state()` against this stream and return its step (mismatch: `UserError`)."""
        mine = self.state(state.get("step", 0))
        diff = [f"{k}={state[k]!r} (now {mine[k]!r})" for k in mine
                if k in state and state[k] != mine[k]]
        if diff:
            raise UserError(f"checkpointed data state differs: {', '.join(diff)}; "
                            f"resume with the config the run was started with")
        return int(state["step"])
