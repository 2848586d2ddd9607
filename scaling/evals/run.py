"""Task evaluations of a trained model: k-shot, direct vs chain-of-thought, self-consistency.

For each task in `eval.tasks`, each k in `eval.shots` (0 only for zero-shot tasks) and each mode
(`task.modes`: "direct", plus "cot" for tasks with a rationale and "retrieved" for the fact
task), `eval.examples` eval-split queries get k train-split demonstrations and are scored by
  - greedy decoding (scaling.decode.generate): `exact_match` of the parsed answer and the
    byte-level `edit_distance` between the parsed and the correct answer;
  - teacher forcing of the correct target: `logprob` (summed log p of its tokens),
    `token_acc` (argmax == target, per token) and `brier` (per token, sum over the vocabulary);
  - at k = `eval.sc_shots` (-1: the largest k): `eval.sc_samples` samples at `eval.temperature`
    with `eval.top_k`, and `maj@j` = exact match of the majority vote over the first j samples
    (Wang et al. 2022; ties go to the answer seen first).
One row per (task, shots, mode, metric) goes to `<workdir>/eval.jsonl`.
"""
from __future__ import annotations

import collections
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.data import kjv
from scaling.data.store import load_tokens
from scaling.decode import generate, split_for_jit
from scaling.errors import UserError
from scaling.evals.generation import generation_metrics
from scaling.fileio import atomic_write
from scaling.tasks import Task, get_task, parse_shots, split_specs

NEWLINE = ord("\n")
BUCKET = 32      # pad prompt/sequence lengths to multiples of this: fewer recompilations


# ---------------------------------------------------------------------------- metrics

def edit_distance(a, b) -> int:
    """Levenshtein distance between two sequences (bytes of the answers here)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def majority(answers: list[str]) -> str:
    """Most common answer; ties go to the one seen first (Counter keeps insertion order)."""
    return collections.Counter(answers).most_common(1)[0][0] if answers else ""


def maj_at(samples_NS: list[list[str]], truth_N: list[str]) -> list[float]:
    """[maj@1, ..., maj@S]: accuracy of the vote over each query's first j samples."""
    S = len(samples_NS[0]) if samples_NS else 0
    return [float(np.mean([majority(s[:j]) == t for s, t in zip(samples_NS, truth_N)]))
            for j in range(1, S + 1)]


def _encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def _bucket(n: int, cap: int) -> int:
    return min(-(-n // BUCKET) * BUCKET, cap)


@functools.partial(jax.jit, static_argnames=("static",))
def _teacher_forced(static, params, tokens_BT, mask_BT):
    """Per row: summed log p, correct-argmax count, summed Brier, count over masked targets."""
    model = nnx.merge(static.graphdef, params)
    logits_BTV = model(tokens_BT[:, :-1]).astype(jnp.float32)
    target_BT, m_BT = tokens_BT[:, 1:], mask_BT[:, 1:].astype(jnp.float32)
    logp_BTV = jax.nn.log_softmax(logits_BTV)
    lp_BT = jnp.take_along_axis(logp_BTV, target_BT[..., None], axis=-1)[..., 0]
    p_BTV = jnp.exp(logp_BTV)
    brier_BT = jnp.sum(p_BTV ** 2, axis=-1) - 2 * jnp.exp(lp_BT) + 1.0  # sum_v (p_v - 1[v=y])^2
    correct_BT = (jnp.argmax(logits_BTV, axis=-1) == target_BT).astype(jnp.float32)
    return ((lp_BT * m_BT).sum(1), (correct_BT * m_BT).sum(1), (brier_BT * m_BT).sum(1),
            m_BT.sum(1))


def teacher_forced(model, prompts: list[list[int]], targets: list[list[int]]) -> dict:
    """Mean over rows of logprob (summed per target), token_acc and brier (per target token)."""
    seqs = [p + t for p, t in zip(prompts, targets)]
    T = _bucket(max(map(len, seqs)), model.cfg.max_len + 1)
    tokens_BT = np.zeros((len(seqs), T), np.int32)       # right-padded: causal, so harmless
    mask_BT = np.zeros((len(seqs), T), bool)
    for b, (p, s) in enumerate(zip(prompts, seqs)):
        tokens_BT[b, :len(s)] = s
        mask_BT[b, len(p):len(s)] = True
    static, params = split_for_jit(model)
    lp, correct, brier, count = jax.device_get(_teacher_forced(static, params, tokens_BT, mask_BT))
    return {"logprob": float(np.mean(lp)), "token_acc": float(correct.sum() / count.sum()),
            "brier": float(brier.sum() / count.sum())}


# ---------------------------------------------------------------------------- one setting

def _fit(model, task: Task, seed: int, index: int, k: int, mode: str, max_new: int):
    """The episode with the most demos <= k that fits the context (learned positions)."""
    limit = model.cfg.max_len if model.cfg.pos == "learned" else 1 << 30
    for kk in range(k, -1, -1):
        prompt, target, ex = task.mode_episode(seed, index, kk, mode)
        # generation needs prompt + max_new positions, teacher forcing prompt + target
        if len(_encode(prompt)) + max(max_new, len(_encode(target))) <= limit:
            return prompt, target, ex, kk
    raise UserError(f"task {task.name} ({mode}): a 0-shot prompt does not fit model.max_len="
                    f"{model.cfg.max_len}; raise model.max_len")


def _complete(model, prompts: list[list[int]], max_new: int, **sampling) -> list[str]:
    P = max(map(len, prompts))
    width = max(P, _bucket(P, model.cfg.max_len - max_new) if model.cfg.pos == "learned"
                else -(-P // BUCKET) * BUCKET)
    prompt_BP = np.zeros((len(prompts), width), np.int32)
    for b, p in enumerate(prompts):
        prompt_BP[b, width - len(p):] = p
    lengths_B = np.array([len(p) for p in prompts], np.int32)
    out = generate(model, prompt_BP, prompt_lengths=lengths_B, max_new_tokens=max_new,
                   stop_tokens=(NEWLINE,), **sampling)
    tokens_BN = np.asarray(jax.device_get(out.tokens))
    lengths = np.asarray(jax.device_get(out.lengths))
    return [bytes(np.clip(row[:n], 0, 255).astype(np.uint8)).decode("utf-8", "replace")
            for row, n in zip(tokens_BN, lengths)]


def evaluate_setting(model, task: Task, e, k: int, mode: str, sc: bool) -> list[dict]:
    """Rows {metric, value} for one (task, k, mode); `e` is cfg.eval."""
    max_new = task.cot_new_tokens if mode == "cot" else task.max_new_tokens
    items = [_fit(model, task, e.seed, i, k, mode, max_new) for i in range(e.examples)]
    prompts = [_encode(p) for p, _, _, _ in items]
    truth = [ex.answer for _, _, ex, _ in items]
    greedy = [task.parse(c) for c in _complete(model, prompts, max_new)]
    rows = {"exact_match": float(np.mean([g == t for g, t in zip(greedy, truth)])),
            "edit_distance": float(np.mean([edit_distance(g.encode(), t.encode())
                                            for g, t in zip(greedy, truth)])),
            "shots_used": float(np.mean([kk for *_, kk in items]))}
    if task.free_form:
        rows.update(generation_metrics(greedy, truth))
    rows.update(task.mode_metrics(mode, [ex for _, _, ex, _ in items]))
    # Teacher forcing scores the answer itself (the target minus its end-of-line).
    rows.update(teacher_forced(model, prompts, [_encode(t.rstrip("\n ")) for _, t, _, _ in items]))
    if sc and e.sc_samples > 0:
        S = e.sc_samples
        rng = jax.random.key(e.seed)
        samples = _complete(model, [p for p in prompts for _ in range(S)], max_new,
                            temperature=e.temperature, top_k=e.top_k, rng=rng)
        parsed = [[task.parse(c) for c in samples[i * S:(i + 1) * S]] for i in range(len(prompts))]
        for j, acc in enumerate(maj_at(parsed, truth), 1):
            rows[f"maj@{j}"] = acc
    return [{"task": task.name, "shots": k, "mode": mode, "metric": m, "value": v,
             "n": len(items), "chance": task.chance} for m, v in rows.items()]


def evaluate(cfg, model, *, log=print) -> list[dict]:
    """Every (task, shots, mode, metric) row for `model` under `cfg.eval` (see module doc)."""
    e = cfg.eval
    shots = parse_shots(e.shots)
    sc_k = max(shots) if e.sc_shots < 0 else e.sc_shots
    role = {"train": cfg.data.train_split, "eval": cfg.data.val_split}
    documents = functools.lru_cache(None)(lambda split: load_tokens(cfg.data, role[split]))
    verses = lambda split: kjv.verses({"train": "train", "eval": "validation"}[split])  # noqa: E731
    rows = []
    for spec in split_specs(e.tasks):
        task = get_task(spec, documents=documents, verses=verses)
        for k in (shots if task.few_shot else [0]):
            for mode in task.modes:
                t0 = time.perf_counter()
                new = evaluate_setting(model, task, e, k, mode, sc=(k == sc_k or not task.few_shot))
                rows += new
                em = next(r["value"] for r in new if r["metric"] == "exact_match")
                if log:
                    log(f"eval {task.name} k={k} {mode}: exact_match {em:.3f} "
                        f"({time.perf_counter() - t0:.1f}s)")
    return rows


def write_eval(rows: list[dict], workdir: str) -> str:
    """Write rows to `<workdir>/eval.jsonl` (replacing it, atomically)."""
    path = os.path.join(workdir, "eval.jsonl")
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_and_write(cfg, model, workdir: str, is_main: bool = True, log=None) -> float:
    """Evaluate and write eval.jsonl (main process); returns the seconds it took."""
    t0 = time.perf_counter()
    rows = evaluate(cfg, model, log=log)
    if is_main:
        write_eval(rows, workdir)
    return time.perf_counter() - t0
