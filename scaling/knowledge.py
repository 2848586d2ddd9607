"""A synthetic knowledge base (entities with attributes) and BM25 retrieval over it.

The fact task (`scaling.tasks.Facts`) asks questions about it closed-book (the model must have
stored the fact during pretraining) or with the BM25 top-1 passage prepended (retrieval can
stand in for parameters: RETRO, Borgeaud et al. 2022). Everything is a pure function of
(entities, kb seed): the same knobs give the same entities, facts and passages on every machine.

Two retrieval units (what BM25 indexes and returns): an entity's passage, its attributes in a
fixed order,

    Dorin Kesta lives in Varno. Dorin Kesta works as a smith. Dorin Kesta wears red. ...

or one fact, a single statement ("Dorin Kesta lives in Varno."): proposition-sized units, which
Chen et al. 2023 ("Dense X Retrieval: What Retrieval Granularity Should We Use?") find retrieve
and read better than passages.

BM25 is `bm25s` (a maintained library, not a hand-written scorer), English stopwords removed,
no stemming; it is imported on first use, so config checks stay light.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

FIRST = ("Dorin", "Aleth", "Maris", "Teven", "Corla", "Bram", "Ysolde", "Harl", "Nessa", "Oren",
         "Pell", "Quara", "Rusk", "Sabel", "Tamsin", "Ulric", "Vessa", "Wend", "Xara", "Yorick",
         "Zella", "Garn", "Ilsa", "Jory")
LAST = ("Kesta", "Morrow", "Vane", "Holt", "Brisk", "Calder", "Dunmore", "Elling", "Fenwick",
        "Garrow", "Hale", "Ivers", "Jessop", "Kell", "Lorne", "Marsh", "Norcott", "Orme",
        "Pryor", "Quill", "Rook", "Stroud", "Thane", "Upton")
# attribute -> (statement template, question template, values): one-word values, so the
# answer parser (last word of the first line) reads them.
ATTRIBUTES = {
    "city": ("{e} lives in {v}.", "Where does {e} live?",
             ("Varno", "Tessil", "Brume", "Caldor", "Essen", "Fallow", "Gint", "Harrow",
              "Ixley", "Jorvik", "Kestrel", "Lunde")),
    "job": ("{e} works as a {v}.", "What is the job of {e}?",
            ("smith", "baker", "miner", "weaver", "potter", "sailor", "farmer", "scribe",
             "tanner", "mason", "cooper", "fletcher")),
    "color": ("{e} wears {v}.", "What color does {e} wear?",
              ("red", "blue", "green", "yellow", "black", "white", "purple", "orange", "grey",
               "brown", "pink", "gold")),
    "food": ("{e} eats {v}.", "What does {e} eat?",
             ("plums", "bread", "cheese", "apples", "fish", "rice", "beans", "honey", "figs",
              "pears", "nuts", "oats")),
}


UNITS = ("entity", "fact")


@dataclass(frozen=True)
class KnowledgeBase:
    """Entities (unique full names) and their attribute values, one passage per entity."""
    names: tuple[str, ...]
    values: tuple[dict, ...]        # values[i][attribute] -> str

    def statement(self, i: int, attribute: str) -> str:
        return ATTRIBUTES[attribute][0].format(e=self.names[i], v=self.values[i][attribute])

    def question(self, i: int, attribute: str) -> str:
        return ATTRIBUTES[attribute][1].format(e=self.names[i])

    def prefix(self, i: int, attribute: str) -> str:
        """The statement up to its value, as a cloze: "Dorin Kesta lives in"."""
        return ATTRIBUTES[attribute][0].split("{v}")[0].format(e=self.names[i]).rstrip()

    def passage(self, i: int, order=None) -> str:
        """Entity i's facts as one line (canonical attribute order unless `order` is given)."""
        return " ".join(self.statement(i, a) for a in (order or ATTRIBUTES))

    @functools.cached_property
    def passages(self) -> list[str]:
        return [self.passage(i) for i in range(len(self.names))]

    @functools.cached_property
    def facts(self) -> list[str]:
        """Every statement, entity-major: fact id i * len(ATTRIBUTES) + attribute index."""
        return [self.statement(i, a) for i in range(len(self.names)) for a in ATTRIBUTES]

    @staticmethod
    def fact_id(i: int, attribute: str) -> int:
        return i * len(ATTRIBUTES) + list(ATTRIBUTES).index(attribute)

    def units(self, unit: str) -> list[str]:
        """The texts of retrieval unit `unit` ("entity": passages, "fact": statements)."""
        if unit not in UNITS:
            raise ValueError(f"unknown retrieval unit {unit!r}; pick from {UNITS}")
        return self.passages if unit == "entity" else self.facts

    @functools.cached_property
    def _indexes(self) -> dict:
        return {}

    def _index(self, unit: str):
        if unit not in self._indexes:
            import bm25s  # heavy import only where retrieval runs
            logging.getLogger("bm25s").setLevel(logging.WARNING)  # its DEBUG lines reach stderr
            index = bm25s.BM25()
            index.index(bm25s.tokenize(self.units(unit), stopwords="en", show_progress=False),
                        show_progress=False)
            self._indexes[unit] = index
        return self._indexes[unit]

    def retrieve(self, queries: list[str], k: int = 1, unit: str = "entity") -> np.ndarray:
        """Ids (into `units(unit)`) of the BM25 top-k units per query, best first: (len(queries), k)."""
        import bm25s
        k = min(k, len(self.units(unit)))
        ids_QK, _ = self._index(unit).retrieve(
            bm25s.tokenize(queries, stopwords="en", show_progress=False),
            k=k, show_progress=False, n_threads=1)
        return np.asarray(ids_QK)

    def recall_at(self, queries: list[str], gold: list[int], ks=(1, 5),
                  unit: str = "entity") -> dict[str, float]:
        """{"recall@k": share of queries whose gold unit id is among the top k}."""
        top_QK = self.retrieve(queries, max(ks), unit)
        hit_QK = top_QK == np.asarray(gold)[:, None]
        return {f"recall@{k}": float(hit_QK[:, :k].any(axis=1).mean()) for k in ks}


def outsiders(kb: KnowledgeBase) -> tuple[str, ...]:
    """Every first x last name that is NOT an entity of `kb` (for reading-only examples)."""
    taken = set(kb.names)
    return tuple(n for n in (f"{f} {l}" for f in FIRST for l in LAST) if n not in taken)


def random_entity(rng: np.random.Generator, names: tuple[str, ...]) -> KnowledgeBase:
    """A one-entity knowledge base: a name from `names` with freshly drawn values, so its
    facts can only be known by reading its passage."""
    name = names[int(rng.integers(len(names)))]
    values = {a: str(vals[int(rng.integers(len(vals)))]) for a, (_, _, vals) in ATTRIBUTES.items()}
    return KnowledgeBase((name,), (values,))


@functools.lru_cache(maxsize=8)
def knowledge_base(entities: int, seed: int) -> KnowledgeBase:
    """`entities` distinct names (first x last) with uniform random values, from `seed`."""
    rng = np.random.default_rng([seed, 0x6B62])  # 'kb': a stream of its own
    pairs = rng.choice(len(FIRST) * len(LAST), size=entities, replace=False)
    names = tuple(f"{FIRST[p // len(LAST)]} {LAST[p % len(LAST)]}" for p in pairs)
    values = tuple({a: str(vals[int(rng.integers(len(vals)))])
                    for a, (_, _, vals) in ATTRIBUTES.items()} for _ in names)
    return KnowledgeBase(names, values)


MAX_ENTITIES = len(FIRST) * len(LAST)
