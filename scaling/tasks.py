"""Synthetic and corpus tasks: examples from (seed, split), k-shot episodes, answer parsers.

Every task is byte-level text in one format, one example per line pair:

    Q: 58+67=\\nA: 125\\n                             direct
    Q: 58+67= (steps)\\nA: 8+7=15,5+6+1=12 so 125\\n   chain of thought (scratchpad rationale)

The model's completion is cut at the first newline and the answer is its last word, so the
same parser reads a direct answer and the end of a worked rationale.

Train/eval disjointness: an example belongs to the eval split iff a hash of (task name, its
content key) falls in the first `1 / EVAL_EVERY` of the hash range. Examples are drawn by
rejection from a seeded generator, so the two splits never share a key whatever the seeds, and
a pretraining stream built from the train split never contains an eval question. Commutative
tasks key on the operand set (`operand_key`), so `58+67=` and its swapped twin `67+58=` always
fall in the same split: an eval question's twin is never in pretraining.

Spec strings name a task with optional knobs: "addition", "addition(digits=3)".

Also here, so that scaling/config.py can check them without importing jax: the checks of
`data.mixture` and `eval.*` (`check_eval_config`) and the default evaluation suite.
"""
from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from typing import Callable

import numpy as np

from scaling.errors import UserError
from scaling.knowledge import ATTRIBUTES, MAX_ENTITIES, knowledge_base, outsiders, random_entity

EVAL_EVERY = 5          # 1 in 5 keys is held out for evaluation
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Example:
    question: str          # "58+67="
    answer: str            # "125"
    rationale: str = ""    # "8+7=15,5+6+1=12" (empty: the task has none)
    key: str = ""          # content that decides the split ("" = question)


def split_of(task: str, key: str) -> str:
    """"eval" for 1 in EVAL_EVERY content keys (by hash), else "train"."""
    h = int.from_bytes(hashlib.sha1(f"{task}|{key}".encode()).digest()[:8], "little")
    return "eval" if h % EVAL_EVERY == 0 else "train"


def operand_key(op: str, a: int, b: int, suffix: str = "") -> str:
    """The split key of a commutative `a op b`: the sorted operands ("67+58" -> "58+67")."""
    lo, hi = sorted((a, b))
    return f"{lo}{op}{hi}{suffix}"


def rng_for(*parts) -> np.random.Generator:
    """A generator keyed by ints and strings (strings hashed), so streams never collide."""
    words = [p if isinstance(p, (int, np.integer)) else
             int.from_bytes(hashlib.sha1(str(p).encode()).digest()[:4], "little") for p in parts]
    return np.random.default_rng([int(w) % (2 ** 32) for w in words])


def parse_last_word(completion: str) -> str:
    """The answer in a completion: its first line's last word ("8+7=15 so 125" -> "125")."""
    line = completion.split("\n", 1)[0].strip()
    return line.split()[-1] if line.split() else ""


class Task:
    """Base task: subclasses define `draw(rng) -> Example` (and may override the rest)."""

    name = "task"
    chance = 0.0            # exact-match accuracy of guessing (chart's chance line)
    has_rationale = False   # evaluated in both "direct" and "cot" modes
    few_shot = True         # False: evaluated at 0 shots only
    max_new_tokens = 16     # generation budget for an answer (cot: `cot_new_tokens`)
    cot_new_tokens = 48
    from_corpus = False     # True: examples come from the corpus (no pretraining text of its own)
    free_form = False       # True: also scored by ROUGE-L, BLEU and token F1 (scaling/evals/generation.py)

    @property
    def modes(self) -> tuple[str, ...]:
        """Evaluation modes: "direct", plus "cot" for tasks with a rationale."""
        return ("direct", "cot") if self.has_rationale else ("direct",)

    def draw(self, rng: np.random.Generator) -> Example:
        raise NotImplementedError

    # -- examples and splits --
    def key(self, ex: Example) -> str:
        return ex.key or ex.question

    def in_split(self, ex: Example, split: str) -> bool:
        return split_of(self.name, self.key(ex)) == split

    def sample(self, rng: np.random.Generator, split: str) -> Example:
        """One example of `split`, by rejection (expected EVAL_EVERY draws for eval)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        for _ in range(10_000):
            ex = self.draw(rng)
            if self.in_split(ex, split):
                return ex
        raise RuntimeError(f"task {self.name}: no {split} example in 10000 draws")

    def examples(self, seed: int, split: str, n: int) -> list[Example]:
        """`n` examples of `split`, a pure function of (task, seed, split, n)."""
        rng = rng_for(seed, self.name, split)
        return [self.sample(rng, split) for _ in range(n)]

    # -- text --
    def format(self, ex: Example, cot: bool = False) -> tuple[str, str]:
        """(prompt, target): the target is what the model should write, newline included."""
        cot = cot and bool(ex.rationale)
        prompt = f"Q: {ex.question}{' (steps)' if cot else ''}\nA: "
        return prompt, (f"{ex.rationale} so {ex.answer}" if cot else ex.answer) + "\n"

    def parse(self, completion: str) -> str:
        return parse_last_word(completion)

    def episode(self, seed: int, index: int, k: int, cot: bool = False) -> tuple[str, str, Example]:
        """Eval item `index` with `k` train-split demonstrations: (prompt, target, example).

        The query is the same for every k (paired comparison across shots); the demos depend
        on (seed, index, k).
        """
        query = self.examples(seed, "eval", index + 1)[index]
        rng = rng_for(seed, self.name, "demos", index, k)
        demos = "".join("".join(self.format(self.sample(rng, "train"), cot)) for _ in range(k))
        prompt, target = self.format(query, cot)
        return demos + prompt, target, query

    def mode_episode(self, seed: int, index: int, k: int, mode: str) -> tuple[str, str, Example]:
        """`episode` in evaluation mode `mode` (one of `modes`)."""
        return self.episode(seed, index, k, cot=mode == "cot")

    def mode_metrics(self, mode: str, queries: list[Example]) -> dict[str, float]:
        """Extra metrics of a mode that depend on the queries only (e.g. retrieval recall)."""
        return {}

    def train_text(self, rng: np.random.Generator, n_chars: int) -> str:
        """Pretraining text: train-split examples back to back, at least `n_chars` long.

        Tasks with a rationale write half of their examples in the chain-of-thought format.
        """
        parts, size = [], 0
        while size < n_chars:
            ex = self.sample(rng, "train")
            text = "".join(self.format(ex, cot=self.has_rationale and rng.random() < 0.5))
            parts.append(text)
            size += len(text)
        return "".join(parts)


class Addition(Task):
    """a + b with `digits`-digit operands; the rationale adds digit by digit with carries."""

    has_rationale = True

    def __init__(self, digits: int = 2):
        if not 1 <= digits <= 8:
            raise UserError(f"addition: digits must be in [1, 8], got {digits}")
        self.digits, self.name = digits, "addition" if digits == 2 else f"addition{digits}"
        self.chance = 10.0 ** -(digits + 0.5)  # a uniform guess of the answer's digits
        self.max_new_tokens = digits + 3
        self.cot_new_tokens = 12 * digits + 8

    def draw(self, rng):
        a, b = (int(x) for x in rng.integers(0, 10 ** self.digits, size=2))
        steps, carry = [], 0
        da, db = str(a).zfill(self.digits)[::-1], str(b).zfill(self.digits)[::-1]
        for x, y in zip(da, db):  # least significant digit first, as written by hand
            s = int(x) + int(y) + carry
            steps.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={s}")
            carry = s // 10
        return Example(f"{a}+{b}=", str(a + b), ",".join(steps), key=operand_key("+", a, b))


class Modular(Task):
    """(a + b) mod m for a, b < m."""

    def __init__(self, modulus: int = 13):
        if modulus < 2:
            raise UserError(f"modular: modulus must be >= 2, got {modulus}")
        self.m, self.name = modulus, "modular" if modulus == 13 else f"modular{modulus}"
        self.chance = 1.0 / modulus
        self.max_new_tokens = len(str(modulus)) + 2

    def draw(self, rng):
        a, b = (int(x) for x in rng.integers(0, self.m, size=2))
        return Example(f"{a}+{b} mod {self.m}=", str((a + b) % self.m),
                       key=operand_key("+", a, b, f" mod {self.m}"))


class Copy(Task):
    """Repeat a random lowercase string of `length` letters (induction: copy from context)."""

    def __init__(self, length: int = 6):
        if not 1 <= length <= 32:
            raise UserError(f"copy: length must be in [1, 32], got {length}")
        self.length, self.name = length, "copy" if length == 6 else f"copy{length}"
        self.chance = 26.0 ** -length
        self.max_new_tokens = length + 2

    def draw(self, rng):
        s = "".join(rng.choice(list(string.ascii_lowercase), size=self.length))
        return Example(f"copy {s}", s)


class IclMapping(Task):
    """Symbol -> label, with a random mapping per prompt: learnable only from the demos.

    Each episode draws `symbols` distinct lowercase letters and maps each to one of `labels`
    distinct uppercase letters (also drawn per episode). The demonstrations and the query share
    the episode's mapping; the split is decided by the mapping, so eval mappings never occur in
    training. Chance is 1/labels for a model that answers with one of the labels shown.
    """

    few_shot = True
    max_new_tokens = 3

    def __init__(self, symbols: int = 4, labels: int = 2):
        if not 2 <= labels <= symbols <= 26:
            raise UserError(f"icl_mapping: need 2 <= labels <= symbols <= 26, got "
                            f"labels={labels}, symbols={symbols}")
        self.n_sym, self.n_lab = symbols, labels
        self.name = "icl_mapping" if (symbols, labels) == (4, 2) else f"icl_mapping{symbols}x{labels}"
        self.chance = 1.0 / labels

    def mapping(self, rng) -> dict[str, str]:
        syms = rng.choice(list(string.ascii_lowercase), size=self.n_sym, replace=False)
        labs = rng.choice(list(string.ascii_uppercase), size=self.n_lab, replace=False)
        return {str(s): str(labs[i % self.n_lab]) for i, s in enumerate(syms)}

    @staticmethod
    def mapping_key(m: dict[str, str]) -> str:
        return ",".join(f"{s}{m[s]}" for s in sorted(m))

    def _draw_mapping(self, rng, split):
        for _ in range(10_000):
            m = self.mapping(rng)
            if split_of(self.name, self.mapping_key(m)) == split:
                return m
        raise RuntimeError("no mapping found")

    def _ex(self, m, rng) -> Example:
        s = str(rng.choice(sorted(m)))
        return Example(f"{s}", m[s], key=self.mapping_key(m))

    def draw(self, rng):
        return self._ex(self.mapping(rng), rng)

    def episode(self, seed, index, k, cot=False):
        rng = rng_for(seed, self.name, "eval", index)
        m = self._draw_mapping(rng, "eval")
        query = self._ex(m, rng)                     # same mapping and query for every k
        demo_rng = rng_for(seed, self.name, "demos", index, k)
        demos = "".join("".join(self.format(self._ex(m, demo_rng))) for _ in range(k))
        prompt, target = self.format(query)
        return demos + prompt, target, query

    def train_text(self, rng, n_chars):
        """Episodes of one mapping each (train split), 4 to 16 examples long."""
        parts, size = [], 0
        while size < n_chars:
            m = self._draw_mapping(rng, "train")
            text = "".join("".join(self.format(self._ex(m, rng)))
                           for _ in range(int(rng.integers(4, 17))))
            parts.append(text + "\n")                # a blank line between episodes
            size += len(text) + 1
        return "".join(parts)


class TextCompletion(Task):
    """The next word of a held-out corpus passage (validation split = eval, train = train).

    Needs the corpus: `documents(split)` returns the split's flat token array (scaling.data).
    Splits come from the corpus' own split, not the hash. Zero-shot only.
    """

    few_shot = False
    from_corpus = True
    chance = 0.0
    max_new_tokens = 16

    def __init__(self, context: int = 64, documents: Callable[[str], np.ndarray] | None = None):
        self.context, self.name, self._documents = context, "text", documents

    def _tokens(self, split):
        if self._documents is None:
            raise UserError("task 'text' needs the corpus: evaluate it through scaling.evals.run")
        return self._documents(split)

    def sample(self, rng, split):
        tokens = self._tokens(split)
        for _ in range(10_000):
            start = int(rng.integers(0, len(tokens) - self.context - 64))
            window = np.asarray(tokens[start:start + self.context + 64])
            if (window >= 256).any():
                continue                              # stay inside one document
            text = bytes(window.astype(np.uint8)).decode("utf-8", errors="replace")
            cut = text.rfind(" ", 0, self.context)    # the passage ends before a word
            m = re.match(r" ([A-Za-z]+)", text[cut:])
            if cut > 8 and m:
                return Example(text[:cut], m.group(1))
        raise RuntimeError("no text example found")

    def in_split(self, ex, split):
        return True

    def format(self, ex, cot=False):
        return ex.question + " ", ex.answer + " "

    def parse(self, completion):
        words = completion.split()
        return re.sub(r"[^A-Za-z]", "", words[0]) if words else ""

    def train_text(self, rng, n_chars):
        raise UserError("task 'text' is the corpus itself: mix the corpus in by its data.name")


class VerseContinuation(Task):
    """Continue a KJV verse (free-form): prompt = its first `prompt` words, reference = the
    next `words` words. Scored by exact match and by ROUGE-L, BLEU and token F1 of the
    completion's first `words` words (`free_form`).

    Needs the verses: `verses(split)` returns the split's verse strings ("train" / "eval" =
    the corpus' validation chapters, scaling.data.kjv.verses). Zero-shot only.
    """

    few_shot = False
    free_form = True
    from_corpus = True

    def __init__(self, prompt: int = 6, words: int = 8,
                 verses: Callable[[str], list[str]] | None = None):
        for knob, v in (("prompt", prompt), ("words", words)):
            if not 1 <= v <= 32:
                raise UserError(f"verse: {knob} must be in [1, 32], got {v}")
        self.n_prompt, self.words, self._verses = prompt, words, verses
        self.name = "verse" if (prompt, words) == (6, 8) else f"verse{prompt}x{words}"
        self.max_new_tokens = 8 * words + 8   # bytes: KJV words average under 5 letters

    def sample(self, rng, split):
        if self._verses is None:
            raise UserError("task 'verse' needs the KJV verses: evaluate it through scaling.evals.run")
        verses = self._verses(split)
        for _ in range(10_000):
            w = verses[int(rng.integers(len(verses)))].split()
            if len(w) >= self.n_prompt + self.words:  # the reference is always `words` long
                return Example(" ".join(w[:self.n_prompt]),
                               " ".join(w[self.n_prompt:self.n_prompt + self.words]))
        raise RuntimeError(f"no verse of {self.n_prompt + self.words}+ words")

    def in_split(self, ex, split):
        return True

    def format(self, ex, cot=False):
        return ex.question + " ", ex.answer + " "

    def parse(self, completion):
        return " ".join(completion.split()[:self.words])

    def train_text(self, rng, n_chars):
        raise UserError("task 'verse' is the KJV corpus itself: mix the corpus in by its data.name")


class Facts(Task):
    """Questions about a synthetic knowledge base (scaling/knowledge.py), closed-book or retrieved.

    Pretraining text holds every entity's passage (so every fact, eval ones included, is in
    the mixture), closed-book Q/A of train-split facts and retrieved-format Q/A of train-split
    facts ("Context: <passage>" line, then the Q/A), and Context + Q/A about entities outside
    the knowledge base, whose facts exist only in that context (reading practice). The split is
    by (entity, attribute): an eval question is never asked in pretraining, though its fact was
    stated there.
    Modes: "direct" = closed-book (the answer must come from the parameters); "retrieved" =
    the BM25 top-1 passage of the knowledge base prepended as a "Context:" line, and the
    metrics recall@1 / recall@5 (gold passage among BM25's top k). Zero-shot.

    `cloze=1` asks each fact as its statement's prefix, "Dorin Kesta lives in" -> "Varno", instead
    of a question ("Where does Dorin Kesta live?"), so reading the answer out of the context is a
    copy of what followed the same prefix. Measured on 2-layer byte-level models of 25k-222k
    parameters, it raised closed-book accuracy and not retrieved accuracy (docs/results.md,
    "Retrieval vs parameters").

    `per_fact=1` makes the retrieval unit one fact (a single statement) instead of an entity's
    four-fact passage, in the index and in every Context line of pretraining: the context then
    holds one value, so reading is a copy with nothing to choose. With cloze prompts BM25 finds
    the right statement (recall@1 1.0 on the default KB); with questions it cannot tell an
    entity's facts apart ("live" vs "lives", no stemming: recall@1 0.25).
    """

    few_shot = False
    modes = ("direct", "retrieved")
    max_new_tokens = 12

    def __init__(self, entities: int = 200, kb: int = 0, cloze: int = 0, per_fact: int = 0):
        if not 2 <= entities <= MAX_ENTITIES:
            raise UserError(f"facts: entities must be in [2, {MAX_ENTITIES}], got {entities}")
        if kb < 0:
            raise UserError(f"facts: kb (the knowledge base's seed) must be >= 0, got {kb}")
        if cloze not in (0, 1):
            raise UserError(f"facts: cloze must be 0 (questions) or 1 (statement prefixes), got {cloze}")
        if per_fact not in (0, 1):
            raise UserError(f"facts: per_fact must be 0 (retrieve an entity's passage) or 1 "
                            f"(retrieve one fact), got {per_fact}")
        self.kb = knowledge_base(entities, kb)
        self.cloze = bool(cloze)
        self.unit = "fact" if per_fact else "entity"
        self.name = ("facts" if (entities, kb) == (200, 0) else f"facts{entities}kb{kb}") + \
            ("_cloze" if cloze else "") + ("_perfact" if per_fact else "")
        self.chance = 1.0 / min(len(v) for _, _, v in ATTRIBUTES.values())
        self._ids = {n: i for i, n in enumerate(self.kb.names)}
        self._context: dict[str, str] = {}
        self._outsiders = outsiders(self.kb)

    def draw(self, rng):
        i, a = int(rng.integers(len(self.kb.names))), list(ATTRIBUTES)[int(rng.integers(len(ATTRIBUTES)))]
        return self._example(self.kb, i, a)

    def _example(self, kb, i: int, a: str) -> Example:
        question = kb.prefix(i, a) if self.cloze else kb.question(i, a)
        return Example(question, kb.values[i][a], key=f"{kb.names[i]}|{a}")

    def format(self, ex, cot=False):
        if not self.cloze:
            return super().format(ex, cot)
        return ex.question + " ", ex.answer + "\n"

    def parse(self, completion):
        if not self.cloze:
            return super().parse(completion)
        # A cloze answer is the first word; the model may go on with the passage ("Varno. Dorin").
        words = completion.split()
        return re.sub(r"[^A-Za-z]", "", words[0]) if words else ""

    def entity(self, ex: Example) -> int:
        return self._ids[ex.key.split("|")[0]]

    @staticmethod
    def attribute(ex: Example) -> str:
        return ex.key.split("|")[1]

    def gold(self, ex: Example) -> int:
        """The id of the retrieval unit that answers `ex` (its entity, or its fact)."""
        i = self.entity(ex)
        return i if self.unit == "entity" else self.kb.fact_id(i, self.attribute(ex))

    def context(self, question: str) -> str:
        """The "Context: <BM25 top-1 unit>" line for `question`."""
        if question not in self._context:
            top = self.kb.retrieve([question], unit=self.unit)[0, 0]
            self._context[question] = f"Context: {self.kb.units(self.unit)[top]}\n"
        return self._context[question]

    def mode_episode(self, seed, index, k, mode):
        prompt, target, ex = self.episode(seed, index, k)
        if mode == "retrieved":  # the context goes right before the query (after any demos)
            query = self.format(ex)[0]
            prompt = prompt[:-len(query)] + self.context(ex.question) + query
        return prompt, target, ex

    def mode_metrics(self, mode, queries):
        if mode != "retrieved":
            return {}
        return self.kb.recall_at([q.question for q in queries], [self.gold(q) for q in queries],
                                 unit=self.unit)

    def _passage(self, rng, i: int, kb=None) -> str:
        """Entity i's passage (of `kb`, default the task's) in a random attribute order."""
        return (kb or self.kb).passage(i, order=[str(a) for a in rng.permutation(list(ATTRIBUTES))])

    def _context_line(self, rng, kb, i: int, attribute: str) -> str:
        """A pretraining Context line in the retrieval unit's shape: the asked fact alone, or
        the entity's passage in a random attribute order."""
        text = kb.statement(i, attribute) if self.unit == "fact" else self._passage(rng, i, kb)
        return f"Context: {text}\n"

    def train_text(self, rng, n_chars):
        """30% passages (any entity), 20% closed-book Q/A and 15% Context + Q/A of train facts,
        35% Context + Q/A about an entity outside the knowledge base with fresh random values.

        The last kind is the only one where the context is needed: KB facts are memorised
        from the passages, so without it a model learns to ignore the Context line (measured:
        retrieved = closed-book exact match at every size, docs/results.md)."""
        parts, size = [], 0
        while size < n_chars:
            r = rng.random()
            if r < 0.3:
                text = self._passage(rng, int(rng.integers(len(self.kb.names)))) + "\n"
            elif r < 0.65 or not self._outsiders:  # a KB of every name leaves no outsider
                ex = self.sample(rng, "train")
                text = "".join(self.format(ex))
                if r >= 0.5:
                    text = self._context_line(rng, self.kb, self.entity(ex), self.attribute(ex)) + text
            else:
                text = self._reading(rng)
            parts.append(text)
            size += len(text)
        return "".join(parts)

    def _reading(self, rng) -> str:
        one = random_entity(rng, self._outsiders)
        a = list(ATTRIBUTES)[int(rng.integers(len(ATTRIBUTES)))]
        ex = self._example(one, 0, a)
        return self._context_line(rng, one, 0, a) + "".join(self.format(ex))


REGISTRY: dict[str, Callable[..., Task]] = {
    "addition": Addition, "modular": Modular, "copy": Copy, "icl_mapping": IclMapping,
    "text": TextCompletion, "verse": VerseContinuation, "facts": Facts,
}
# Constructor arguments a task takes from its caller's context (get_task(spec, **context)).
CONTEXT_ARGS = {"text": ("documents",), "verse": ("verses",)}

_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$")


def split_specs(text: str) -> list[str]:
    """"addition(digits=3),copy" -> ["addition(digits=3)", "copy"] (commas in parens kept)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def get_task(spec: str, **context) -> Task:
    """A task from a spec "name" or "name(knob=int, ...)"; bad specs raise one-line UserErrors.

    `context` passes extra constructor arguments some tasks need (CONTEXT_ARGS: text takes
    documents=..., verse takes verses=...); the others ignore it.
    """
    m = _SPEC.match(spec)
    if not m or m.group(1) not in REGISTRY:
        raise UserError(f"unknown task {spec!r}: pick from {', '.join(sorted(REGISTRY))} "
                        f"(knobs as name(key=int), e.g. addition(digits=3))")
    knobs = {}
    for item in filter(None, (s.strip() for s in (m.group(2) or "").split(","))):
        key, eq, val = item.partition("=")
        if not eq or not val.strip().lstrip("-").isdigit():
            raise UserError(f"task {spec!r}: knobs are key=int, got {item!r}")
        knobs[key.strip()] = int(val)
    factory = REGISTRY[m.group(1)]
    knobs.update({k: context[k] for k in CONTEXT_ARGS.get(m.group(1), ()) if k in context})
    try:
        return factory(**knobs)
    except TypeError as e:
        raise UserError(f"task {spec!r}: bad knob ({e})") from e


# ---------------------------------------------------------------------------- config checks

# What `scaling eval --workdir RUN` evaluates when the run's `eval.tasks` is empty: every kind of
# task (arithmetic with chain of thought, induction, in-context mapping, the corpus) at 0 and
# 2 shots. Compilation dominates its time: ~30 s of one CPU core for a tiny model, cold
# (~60 s with self-consistency sampling, hence sc_samples=0). Flags override any part.
DEFAULT_SUITE = dict(tasks="addition,copy,icl_mapping,text", shots="0,2", examples=16,
                     sc_samples=0)


def parse_shots(text: str) -> list[int]:
    """"0,1,2,4" -> [0, 1, 2, 4] (sorted, unique); UserError if not ints >= 0."""
    try:
        shots = sorted({int(s) for s in str(text).split(",") if s.strip()})
    except ValueError:
        raise UserError(f"eval.shots={text!r}: write comma-separated ints, e.g. 0,1,2,4,8") from None
    if not shots or shots[0] < 0:
        raise UserError(f"eval.shots={text!r}: give at least one k >= 0")
    return shots


def parse_mixture(text: str, corpus: str) -> dict[str, float]:
    """"kjv:0.5,addition:0.5" -> {"kjv": 0.5, "addition": 0.5} (normalised); UserError if bad."""
    weights: dict[str, float] = {}
    for item in split_specs(text):
        name, colon, w = item.rpartition(":")
        if not colon or not name.strip():
            raise UserError(f"data.mixture item {item!r}: write NAME:WEIGHT, e.g. "
                            f"{corpus}:0.5,addition:0.5")
        try:
            weight = float(w)
        except ValueError:
            raise UserError(f"data.mixture item {item!r}: weight {w!r} is not a number") from None
        if not weight >= 0:
            raise UserError(f"data.mixture item {item!r}: weight must be >= 0")
        name = name.strip()
        if name != corpus:
            if get_task(name).from_corpus:  # get_task raises on an unknown task or bad knob
                raise UserError(f"data.mixture: {name!r} is the corpus itself; name it {corpus!r}")
        weights[name] = weights.get(name, 0.0) + weight
    total = sum(weights.values())
    if total <= 0:
        raise UserError(f"data.mixture={text!r} has no positive weight")
    return {k: v / total for k, v in weights.items()}


def check_eval_config(cfg) -> None:
    """One-line UserErrors for data.mixture and eval.* (called by scaling.config.validate)."""
    if cfg.data.mixture:
        parse_mixture(cfg.data.mixture, cfg.data.name)
    e = cfg.eval
    for spec in split_specs(e.tasks):
        get_task(spec)
    shots = parse_shots(e.shots)
    for key in ("examples", "sc_samples", "top_k"):
        if e[key] < 0 or (key == "examples" and e[key] == 0):
            raise UserError(f"eval.{key} must be {'> 0' if key == 'examples' else '>= 0'}, "
                            f"got {e[key]}")
    if e.temperature <= 0 and e.sc_samples:
        raise UserError(f"eval.temperature must be > 0 for self-consistency sampling, "
                        f"got {e.temperature} (or set eval.sc_samples=0)")
    if e.sc_samples and e.sc_shots >= 0 and e.sc_shots not in shots:
        # Self-consistency runs only at k = sc_shots: outside eval.shots it would never run.
        raise UserError(f"eval.sc_shots={e.sc_shots} is not in eval.shots={e.shots!r}: add it "
                        f"to eval.shots, set eval.sc_shots=-1 (the largest k) or eval.sc_samples=0")
