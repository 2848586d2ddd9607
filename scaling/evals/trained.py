"""Task evaluations after training, run by the caller of `scaling.train.loop.train`.

`scaling train` and a sweep's trials call `evaluate_trained(workdir, summary)` once training is
done: it restores the run's final params (`load_trained`, the same path as `scaling eval`),
writes `eval.jsonl` and records the seconds it took as `eval_s` in summary.json (so `wall_s`
stays training time only).
"""
from __future__ import annotations

import os

import jax

from scaling.config import from_json_file
from scaling.evals.run import run_and_write
from scaling.train.checkpoint import load_trained
from scaling.sweeps.store import write_summary


def evaluate_trained(workdir: str, summary: dict, *, log=None) -> dict:
    """Run the finished run's `eval.tasks` (if any) -> eval.jsonl; returns the summary with
    `eval_s`, also written to summary.json (atomically). A summary that already has `eval_s`
    (or a run that did not finish) is returned unchanged."""
    if summary.get("status") != "done" or "eval_s" in summary:
        return summary
    if not from_json_file(os.path.join(workdir, "config.json")).eval.tasks:
        return summary
    cfg, model = load_trained(workdir)
    is_main = jax.process_index() == 0
    summary = dict(summary, eval_s=run_and_write(cfg, model, workdir, is_main, log=log))
    return write_summary(workdir, summary) if is_main else summary
