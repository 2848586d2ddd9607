"""Generation metrics of free-form answers: ROUGE-L, BLEU and token F1.

ROUGE-L comes from `rouge-score` (Google's reference implementation: the F-measure of the
longest common subsequence, its tokenizer lowercases and keeps alphanumerics, no stemming),
BLEU from `sacrebleu` (corpus BLEU over a setting's examples, its default 13a tokenizer, on
a 0-100 scale), so the numbers are the ones papers report. Token F1 is SQuAD's (Rajpurkar
et al. 2016): bag-of-words overlap after lowercasing and removing punctuation and articles.

Metrics that need a download at run time are not computed: METEOR (NLTK's WordNet data) and
BERTScore (a pretrained model from the Hugging Face hub) — see docs/design.md.
"""
from __future__ import annotations

import collections
import functools
import re
import string

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


@functools.lru_cache(maxsize=1)
def _rouge():
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure in [0, 1] (rouge-score)."""
    return float(_rouge().score(reference, prediction)["rougeL"].fmeasure)


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU in [0, 100] with one reference per prediction (sacrebleu)."""
    return float(sacrebleu.corpus_bleu(predictions, [references]).score)


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 in [0, 1]; two empty answers score 1, one empty answer 0."""
    p, r = normalize(prediction).split(), normalize(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum((collections.Counter(p) & collections.Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def generation_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """{"rouge_l", "token_f1"} (means over pairs) and "bleu" (corpus) for one eval setting."""
    return {"rouge_l": float(np.mean([rouge_l(p, r) for p, r in zip(predictions, references)])),
            "bleu": bleu(predictions, references),
            "token_f1": float(np.mean([token_f1(p, r) for p, r in zip(predictions, references)]))}
