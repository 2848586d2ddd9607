"""Commutative tasks split on the operand set: a question and its swapped twin share a split,
so no eval question has its twin in pretraining (issue 14)."""
import re

import numpy as np
import pytest

from scaling.tasks import get_task, split_of

COMMUTATIVE = ["addition", "addition(digits=1)", "modular", "modular(modulus=97)"]


class _Operands:
    """A stand-in generator whose `integers` returns fixed operands (to draw a chosen pair)."""

    def __init__(self, a, b):
        self.ab = np.array([a, b])

    def integers(self, lo, hi, size=None):
        return self.ab


def _operand_range(task):
    return 10 ** task.digits if hasattr(task, "digits") else task.m


@pytest.mark.parametrize("spec", COMMUTATIVE)
def test_pair_and_swap_share_a_split(spec):
    task = get_task(spec)
    n = min(_operand_range(task), 100)
    for a in range(n):
        for b in range(a + 1, n):
            ex, twin = task.draw(_Operands(a, b)), task.draw(_Operands(b, a))
            assert ex.question != twin.question and ex.answer == twin.answer
            assert split_of(task.name, task.key(ex)) == split_of(task.name, task.key(twin))


@pytest.mark.parametrize("spec", COMMUTATIVE)
def test_no_eval_question_has_its_twin_in_training(spec):
    task = get_task(spec)
    train = {e.question for e in task.examples(0, "train", 20000)}   # ~all train questions
    text = task.train_text(np.random.default_rng(1), 20000)
    evals = task.examples(0, "eval", 200)
    for e in evals:
        a, b, rest = re.fullmatch(r"(\d+)\+(\d+)(.*=)", e.question).groups()
        twin = f"{b}+{a}{rest}"              # "58+67 mod 97=" -> "67+58 mod 97="
        assert twin not in train, (e.question, twin)
        assert f"Q: {twin}\n" not in text and f"Q: {twin} (steps)\n" not in text
