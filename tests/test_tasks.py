"""Tasks (registry, determinism, disjoint train/eval splits, parsers) and the pretraining mixture."""
import numpy as np
import pytest

from conftest import tiny_config
from scaling.config import resolve
from scaling.data import TokenBatches
from scaling.data.mixture import MixedBatches, parse_mixture
from scaling.errors import UserError
from scaling.tasks import REGISTRY, get_task, split_of

SYNTHETIC = ["addition", "addition(digits=3)", "modular", "copy", "icl_mapping", "facts"]


@pytest.mark.parametrize("spec", SYNTHETIC)
def test_examples_deterministic_and_splits_disjoint(spec):
    task = get_task(spec)
    train = task.examples(0, "train", 300)
    assert train == task.examples(0, "train", 300)                # pure function of the seed
    assert train != task.examples(1, "train", 300)
    evals = task.examples(0, "eval", 60) + task.examples(7, "eval", 60)
    train_keys = {task.key(e) for e in train + task.examples(3, "train", 300)}
    eval_keys = {task.key(e) for e in evals}
    assert eval_keys and not train_keys & eval_keys              # never the same content
    assert all(split_of(task.name, k) == "eval" for k in eval_keys)
    # The pretraining text of a task only holds train-split questions.
    text = task.train_text(np.random.default_rng(0), 3000)
    for e in evals:
        if task.name.startswith("icl"):
            continue  # checked by mapping below
        assert f"Q: {e.question}\n" not in text and f"Q: {e.question} (steps)\n" not in text


def test_addition_answers_and_scratchpad():
    task = get_task("addition(digits=3)")
    for ex in task.examples(0, "train", 50):
        a, b = (int(x) for x in ex.question.rstrip("=").split("+"))
        assert int(ex.answer) == a + b
        assert len(ex.rationale.split(",")) == 3
        prompt, target = task.format(ex, cot=True)
        assert prompt.endswith("(steps)\nA: ") and target == f"{ex.rationale} so {ex.answer}\n"
        assert task.parse(target) == ex.answer                   # CoT: last word
        assert task.parse(task.format(ex)[1]) == ex.answer       # direct
    assert task.parse("1+2=3 so 17\nQ: junk") == "17" and task.parse("") == ""


def test_episode_shots_and_pairing():
    task = get_task("addition")
    p0, t0, q0 = task.episode(0, 3, 0)
    p4, t4, q4 = task.episode(0, 3, 4)
    assert q0 == q4 and t0 == t4 and p4.endswith(p0)             # same query for every k
    assert p4.count("Q: ") == 5 and p0.count("Q: ") == 1


def test_icl_mapping_labels_only_from_demos():
    task = get_task("icl_mapping(symbols=6,labels=3)")
    labels = set()
    for i in range(20):
        prompt, target, query = task.episode(0, i, 16)
        pairs = [blk.split("\nA: ") for blk in prompt.split("Q: ")[1:-1]]
        shown = {s: lab.strip() for s, lab in pairs}
        if query.question in shown:
            assert shown[query.question] == query.answer         # consistent with the demos
        assert len(set(shown.values())) <= 3
        labels.add(tuple(sorted(set(shown.values()))))
        # The mapping is eval-split; train mappings never equal it.
        assert split_of(task.name, query.key) == "eval"
    assert len(labels) > 5                                       # a new mapping per prompt
    assert task.chance == pytest.approx(1 / 3)


def test_registry_and_bad_specs():
    assert {"addition", "modular", "copy", "icl_mapping", "text"} <= set(REGISTRY)
    for bad, msg in [("nope", "unknown task"), ("addition(digits=x)", "key=int"),
                     ("addition(digits=99)", "digits"), ("addition(width=3)", "bad knob")]:
        with pytest.raises(UserError, match=msg):
            get_task(bad)


def test_parse_mixture():
    assert parse_mixture("kjv:1,addition:3", "kjv") == {"kjv": 0.25, "addition": 0.75}
    for bad, msg in [("kjv", "NAME:WEIGHT"), ("kjv:x", "not a number"), ("foo:1", "unknown task"),
                     ("kjv:0", "no positive"), ("kjv:1,text:1", "is the corpus")]:
        with pytest.raises(UserError, match=msg):
            parse_mixture(bad, "kjv")


def test_corpus_share_counts_epochs_in_corpus_tokens():
    from scaling.config import default_config
    from scaling.data.mixture import corpus_share
    c = default_config()
    assert corpus_share(c.data) == 1.0
    c.data.mixture = "kjv:0.15,facts:0.85"
    assert corpus_share(c.data) == pytest.approx(0.15)
    c.data.mixture = "addition:1"
    assert corpus_share(c.data) == 0.0


def test_config_validates_mixture_and_eval_keys():
    c = tiny_config()
    c.data.mixture = "kjv:1,additon:1"
    with pytest.raises(UserError, match="unknown task 'additon'"):
        resolve(c)
    c = tiny_config()
    c.eval.shots = "0,a"
    c.eval.tasks = "copy"
    with pytest.raises(UserError, match="eval.shots"):
        resolve(c)


def test_sc_shots_outside_shots_is_refused():
    """Self-consistency runs only at k = eval.sc_shots: a k not in eval.shots is a UserError."""
    c = tiny_config()
    c.eval.update(shots="0,1,2", sc_shots=3)
    with pytest.raises(UserError, match=r"eval.sc_shots=3 is not in eval.shots") as e:
        resolve(c)
    assert "\n" not in str(e.value)
    for fix in (dict(shots="0,1,2,3"), dict(sc_shots=-1), dict(sc_shots=2), dict(sc_samples=0)):
        c = tiny_config()
        c.eval.update(shots="0,1,2", sc_shots=3)
        c.eval.update(fix)
        resolve(c)  # each fix named in the message passes


def test_mixture_batches_pure_and_weighted():
    c = tiny_config()
    c.train.update(batch_size=64, seq_len=64)
    plain_cfg = resolve(c)
    plain = TokenBatches(plain_cfg)
    c.data.mixture = "kjv:0.5,addition:0.25,icl_mapping:0.25"
    cfg = resolve(c)
    a, b = TokenBatches(cfg), TokenBatches(cfg)
    assert isinstance(a._batches, MixedBatches)
    for step in (0, 5, 1000):
        np.testing.assert_array_equal(a.batch(step), b.batch(step))   # pure (seed, step)
    x = a.batch(5)
    assert x.shape == (64, 65) and x.dtype == np.int32
    corpus_rows = [(x[r] == plain.batch(5)[r]).all() for r in range(64)]
    texts = [bytes(row.astype(np.uint8)).decode("latin-1") for row in x]
    add_rows = [t.startswith("Q: ") and "+" in t.split("\n")[0] for t in texts]
    icl_rows = [t.startswith("Q: ") and "+" not in t.split("\n")[0] for t in texts]
    assert all(c or ad or ic for c, ad, ic in zip(corpus_rows, add_rows, icl_rows))
    n = np.array([sum(corpus_rows), sum(add_rows), sum(icl_rows)])
    assert n.sum() == 64 and (n > 5).all()                        # all three sources appear
    # Validation stays pure corpus; a process's rows are the same rows of the global batch.
    np.testing.assert_array_equal(TokenBatches(cfg, "validation").batch(0),
                                  TokenBatches(plain_cfg, "validation").batch(0))
    half = TokenBatches(cfg, process_index=1, process_count=2).batch(5)
    np.testing.assert_array_equal(half, x[32:])


def test_default_config_is_pure_corpus():
    cfg = resolve(tiny_config())
    assert cfg.data.mixture == "" and cfg.eval.tasks == ""
    assert not isinstance(TokenBatches(cfg)._batches, MixedBatches)
