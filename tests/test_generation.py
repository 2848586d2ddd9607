"""Generation metrics (ROUGE-L, BLEU, token F1), the fact task's knowledge base and BM25
retrieval, and their columns in eval.jsonl / results.parquet."""
import json

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from conftest import run_cli, tiny_config
from scaling.config import resolve
from scaling.errors import UserError
from scaling.evals import generation as gen
from scaling.knowledge import ATTRIBUTES, knowledge_base
from scaling.tasks import get_task, parse_mixture

PAIRS = [("the cat sat on the mat", "the cat is on the mat"),
         ("And God said, Let there be light", "And God said Let there be light and there was light"),
         ("in the beginning", "the heaven and the earth"),
         ("unto the LORD thy God", "unto the Lord thy God")]


def test_rouge_l_and_bleu_equal_the_libraries():
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for pred, ref in PAIRS:
        assert gen.rouge_l(pred, ref) == pytest.approx(scorer.score(ref, pred)["rougeL"].fmeasure)
    preds, refs = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    assert gen.bleu(preds, refs) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    # Hand-checkable: identical strings, disjoint strings, and an LCS by hand.
    s = "and the earth was without form and void"
    assert gen.rouge_l(s, s) == pytest.approx(1.0) and gen.bleu([s], [s]) == pytest.approx(100.0)
    assert gen.rouge_l("alpha beta", "gamma delta") == 0.0
    assert gen.bleu(["alpha beta gamma delta"], ["one two three four"]) == 0.0
    # LCS("a b c d", "a c d e") = "a c d": P = R = 3/4, F = 3/4
    assert gen.rouge_l("a b c d", "a c d e") == pytest.approx(0.75)


def test_token_f1_squad_rules():
    assert gen.token_f1("The Cat!", "cat") == 1.0                  # case, punctuation, articles
    assert gen.token_f1("red blue", "blue green yellow") == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert gen.token_f1("x", "y") == 0.0 and gen.token_f1("", "") == 1.0 and gen.token_f1("a", "b") == 0.0
    m = gen.generation_metrics(["a b c d", "x"], ["a c d e", "x"])
    # ROUGE keeps "a" (LCS a c d: F = 3/4); SQuAD F1 drops it as an article (b c d vs c d e: 2/3)
    assert m["rouge_l"] == pytest.approx((0.75 + 1.0) / 2) and m["token_f1"] == pytest.approx((2 / 3 + 1) / 2)


def test_knowledge_base_is_deterministic():
    a, b = knowledge_base(120, 7), knowledge_base.__wrapped__(120, 7)   # the cache bypassed
    assert a.names == b.names and a.values == b.values and a.passages == b.passages
    assert len(set(a.names)) == 120
    c = knowledge_base.__wrapped__(120, 8)
    assert c.names != a.names
    task = get_task("facts(entities=120,kb=7)")
    assert task.examples(0, "eval", 20) == get_task("facts(entities=120,kb=7)").examples(0, "eval", 20)
    for ex in task.examples(0, "train", 40):                      # the answer is the KB's value
        name, attr = ex.key.split("|")
        i = a.names.index(name)
        assert ex.answer == a.values[i][attr] and a.statement(i, attr) in a.passages[i]


def test_bm25_recall_on_the_kbs_own_questions():
    """Measured: recall@1 = 1.0 at 100, 200 and 576 entities (full names are unique tokens)."""
    kb = knowledge_base(200, 0)
    queries = [kb.question(i, a) for i in range(200) for a in ATTRIBUTES]
    gold = [i for i in range(200) for _ in ATTRIBUTES]
    r = kb.recall_at(queries, gold, ks=(1, 5))
    assert r["recall@1"] >= 0.99 and r["recall@5"] >= r["recall@1"]
    # A query that names nobody in the KB cannot be retrieved correctly for every gold.
    assert kb.recall_at(["Where does Nobody Atall live?"] * 2, [0, 1], ks=(1,))["recall@1"] <= 0.5


def test_fact_modes_and_pretraining_text():
    task = get_task("facts")
    closed, target, ex = task.mode_episode(0, 3, 0, "direct")
    retrieved, target2, ex2 = task.mode_episode(0, 3, 0, "retrieved")
    assert (ex, target) == (ex2, target2) and retrieved.endswith(closed)   # paired questions
    assert retrieved.startswith("Context: ") and f"{ex.answer}." in retrieved
    assert ex.answer not in closed
    text = task.train_text(np.random.default_rng(0), 20_000)
    for e in task.examples(0, "eval", 40):                        # stated, but never asked
        i = task.entity(e)
        assert f"Q: {e.question}\n" not in text
    assert any(task.kb.statement(task.entity(e), e.key.split("|")[1]) in text
               for e in task.examples(0, "eval", 40))
    assert "Context: " in text
    # reading practice: Context + Q/A about names outside the KB, answered by their context
    reading = [b for b in text.split("Context: ")[1:]
               if b.split(" ", 2)[:2] and " ".join(b.split(" ", 2)[:2]) not in task.kb.names]
    assert len(reading) > 10
    for b in reading[:-1]:
        passage, q, a = b.split("\n")[:3]
        assert q.startswith("Q: ") and a.startswith("A: ") and f" {a[3:]}." in passage


def test_cloze_facts_make_reading_an_induction_copy():
    """facts(cloze=1): the question is the statement's prefix, so the retrieved passage holds
    "<prefix> <answer>" verbatim; the answer is the completion's first word."""
    task, plain = get_task("facts(cloze=1)"), get_task("facts")
    assert task.name == "facts_cloze" and task.modes == ("direct", "retrieved")
    for e in task.examples(0, "eval", 20):
        i, a = task.entity(e), e.key.split("|")[1]
        assert task.kb.statement(i, a) == f"{e.question} {e.answer}."
    closed, target, ex = task.mode_episode(0, 5, 0, "direct")
    retrieved, _, _ = task.mode_episode(0, 5, 0, "retrieved")
    assert closed == f"{ex.question} " and target == f"{ex.answer}\n" and retrieved.endswith(closed)
    assert f"{ex.question} {ex.answer}." in retrieved and ex.answer not in closed
    assert task.parse("Varno. Dorin Kesta works") == "Varno" and task.parse("") == ""
    assert plain.parse("Varno. Dorin Kesta works") == "works"   # questions keep the last-word rule
    text = task.train_text(np.random.default_rng(1), 20_000)
    assert "Q: " not in text and "Context: " in text
    for e in task.examples(0, "eval", 40):                        # stated, but never asked alone
        assert f"\n{e.question} {e.answer}\n" not in text
    reading = [b for b in text.split("Context: ")[1:-1]
               if " ".join(b.split(" ", 2)[:2]) not in task.kb.names]
    assert len(reading) > 10
    for b in reading:
        passage, cloze = b.split("\n")[:2]
        assert f"{cloze}." in passage                             # the answer is in its context
    with pytest.raises(UserError, match="cloze must be"):
        get_task("facts(cloze=2)")


def test_per_fact_units_retrieve_and_practise_one_statement():
    """facts(per_fact=1): BM25 indexes single statements, every Context line (eval and
    pretraining) holds just the asked fact, and recall is scored against that fact."""
    task = get_task("facts(cloze=1,per_fact=1)")
    assert task.name == "facts_cloze_perfact" and len(task.kb.facts) == 4 * len(task.kb.names)
    queries = task.examples(0, "eval", 60)
    for i, e in enumerate(task.examples(0, "eval", 10)):
        prompt, target, ex = task.mode_episode(0, i, 0, "retrieved")
        context = prompt.split("\n")[0]
        assert context == f"Context: {ex.question} {ex.answer}."       # one fact, the right one
    assert task.mode_metrics("retrieved", queries) == {"recall@1": 1.0, "recall@5": 1.0}
    # Questions share no word with their statement beyond the name: BM25 cannot pick the fact.
    q = get_task("facts(per_fact=1)")
    assert q.mode_metrics("retrieved", q.examples(0, "eval", 60))["recall@1"] < 0.5
    assert get_task("facts").mode_metrics("retrieved", q.examples(0, "eval", 60))["recall@1"] == 1.0
    text = task.train_text(np.random.default_rng(2), 20_000)
    blocks = text.split("Context: ")[1:-1]
    assert len(blocks) > 20
    for b in blocks:
        fact, cloze = b.split("\n")[:2]
        assert fact.count(".") == 1 and fact == f"{cloze}."           # single statement, asked
    with pytest.raises(UserError, match="per_fact must be"):
        get_task("facts(per_fact=2)")


def test_retrieval_experiment_design():
    """experiments/retrieval.py: 4 two-layer sizes on one budget, every trial scored on the same
    fact task closed-book and retrieved; cloze queries with one fact retrieved by default, the
    earlier designs (questions, cloze over passages) by argument."""
    from scaling.sweeps.plan import expand
    for arg, task in [("", "facts(cloze=1,per_fact=1)"), (":questions", "facts"),
                      (":cloze", "facts(cloze=1)")]:
        trials, _ = expand(f"experiments/retrieval.py{arg}", [])
        assert len(trials) == 4 and {t.cfg.model.n_layers for t in trials} == {2}
        assert len({t.cfg.model.d_model for t in trials}) == 4
        assert {t.cfg.train.tokens for t in trials} == {9_600_000}
        for t in trials:
            assert t.cfg.eval.tasks == f"{task},verse" and f"{task}:0.85" in t.cfg.data.mixture
        # the longest retrieved prompt plus its answer fits one training window
        fact = get_task(task)
        longest = max(len("".join(fact.mode_episode(0, i, 0, "retrieved")[:2])) for i in range(160))
        assert longest <= trials[0].cfg.train.seq_len
    with pytest.raises(ValueError, match="questions, cloze or smoke"):
        expand("experiments/retrieval.py:nope", [])


def test_bad_fact_and_verse_specs_are_one_line_errors():
    for spec, msg in [("facts(entities=1)", "entities"), ("facts(kb=-1)", "kb"),
                      ("verse(words=0)", "words"), ("verse(prompt=99)", "prompt")]:
        with pytest.raises(UserError, match=msg) as e:
            get_task(spec)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="is the corpus"):
        parse_mixture("kjv:1,verse:1", "kjv")
    c = tiny_config()
    c.eval.tasks = "verse(words=40)"
    with pytest.raises(UserError, match="verse: words"):
        resolve(c)


@pytest.mark.slow
def test_eval_jsonl_has_generation_and_retrieval_columns(tmp_path):
    from scaling.evals.columns import eval_columns
    from scaling.evals.trained import evaluate_trained
    from scaling.train.loop import train
    c = tiny_config()
    c.train.update(steps=2, seq_len=192)
    c.data.mixture = "kjv:0.5,facts:0.5"
    c.eval.update(tasks="verse,facts", examples=3, shots="0", sc_samples=0)
    evaluate_trained(str(tmp_path), train(c, str(tmp_path), verbose=False))
    rows = [json.loads(line) for line in open(tmp_path / "eval.jsonl")]
    metrics = {(r["task"], r["mode"]): set() for r in rows}
    for r in rows:
        metrics[(r["task"], r["mode"])].add(r["metric"])
    assert set(metrics) == {("verse", "direct"), ("facts", "direct"), ("facts", "retrieved")}
    assert {"rouge_l", "bleu", "token_f1", "exact_match"} <= metrics[("verse", "direct")]
    assert {"recall@1", "recall@5", "exact_match"} <= metrics[("facts", "retrieved")]
    assert "recall@1" not in metrics[("facts", "direct")] and "bleu" not in metrics[("facts", "direct")]
    cols = eval_columns(str(tmp_path))
    assert 0 <= cols["eval/verse/direct/rouge_l@k0"] <= 1 and 0 <= cols["eval/verse/direct/bleu@k0"] <= 100
    assert cols["eval/facts/retrieved/recall@1@k0"] == 1.0
    bad = run_cli("eval", "--workdir", str(tmp_path), "--config.eval.tasks=facts(entities=0)")
    assert bad.returncode == 2 and "entities" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_retrieval_chart_reads_results_only(tmp_path):
    """analysis.retrieval: frame from results.parquet columns, chart files, one-line errors."""
    import pandas as pd
    from analysis import retrieval
    from analysis.errors import AnalysisInputError
    df = pd.DataFrame({"status": "done", "params_non_embedding": [8e4, 1e4, 3e4],
                       "eval/facts/direct/exact_match@k0": [0.3, 0.05, 0.1],
                       "eval/facts/retrieved/exact_match@k0": [0.9, 0.4, 0.7],
                       "eval/facts/retrieved/recall@1@k0": [1.0, 1.0, 1.0]})
    df.to_parquet(tmp_path / "results.parquet")
    paths, frame = retrieval.plot_sweep_retrieval(str(tmp_path))
    assert list(frame["N"]) == [1e4, 3e4, 8e4]
    assert frame["gap"].tolist() == pytest.approx([0.35, 0.6, 0.6])
    assert all((tmp_path / "plots" / f"retrieval.{x}").exists() for x in ("png", "pdf"))
    with pytest.raises(AnalysisInputError, match="retrieved/exact_match"):
        retrieval.retrieval_frame(df.drop(columns="eval/facts/retrieved/exact_match@k0"))
    assert retrieval.main([str(tmp_path / "nope")]) == 2
    # a committed results table works in place of the sweep (plots beside it, or --out)
    table = tmp_path / "tables" / "retrieval_results.csv"
    table.parent.mkdir()
    df.to_csv(table, index=False)
    assert retrieval.main([str(table)]) == 0
    assert (tmp_path / "tables" / "plots" / "retrieval.png").exists()
    assert retrieval.main([str(table), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "retrieval.png").exists()


def test_scaling_plot_draws_the_retrieval_chart_of_any_fact_task(tmp_path):
    """`scaling plot DIR` draws retrieval.png when a task has closed-book and retrieved scores
    (found by column name: facts, facts_cloze, ...), and nothing of the kind otherwise."""
    import pandas as pd
    from analysis import retrieval
    from analysis.errors import AnalysisInputError
    base = {"status": "done", "params_non_embedding": [1e4, 3e4, 8e4], "tokens": [1e6] * 3,
            "flops": [1e11, 3e11, 8e11], "val_loss": [2.0, 1.9, 1.8]}
    df = pd.DataFrame({**base, "eval/facts_cloze/direct/exact_match@k0": [0.1, 0.2, 0.4],
                       "eval/facts_cloze/retrieved/exact_match@k0": [0.8, 0.9, 0.9],
                       "eval/facts_cloze/retrieved/recall@1@k0": [1.0] * 3})
    assert retrieval.retrieval_tasks(df) == ["facts_cloze"]
    assert retrieval.retrieval_frame(df)["gap"].tolist() == pytest.approx([0.7, 0.7, 0.5])
    df.to_parquet(tmp_path / "results.parquet")
    out = run_cli("plot", str(tmp_path), "--no-fit")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "plots" / "retrieval.png").exists()
    both = df.assign(**{c.replace("facts_cloze", "facts"): df[c] for c in df if "facts_cloze" in c})
    with pytest.raises(AnalysisInputError, match="several retrieval tasks"):
        retrieval.retrieval_frame(both)
    plain = tmp_path / "plain"
    plain.mkdir()
    pd.DataFrame(base).to_parquet(plain / "results.parquet")
    assert run_cli("plot", str(plain), "--no-fit").returncode == 0
    assert not (plain / "plots" / "retrieval.png").exists()
