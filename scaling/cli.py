"""The `scaling` command: parse, call, exit codes (0 ok, 2 bad input, 1 failure while running).

    scaling train    --config FILE[:ARG] [--config.KEY=VALUE ...] --workdir DIR
                     [--init-from CKPT]
    scaling describe --config FILE[:ARG] [--config.KEY=VALUE ...] [--json]
    scaling sweep    [--config FILE[:ARG]] [--config.KEY=VALUE ...] --workdir DIR
                     [--launcher local|slurm] [--parallel N] [--slurm-* ...] [--retry-failed]
                     [--group-size G | --vectorize]
    scaling fit      chinchilla DATA [--n-col ...] [--d-col ... | --c-col ...] --loss-col ... [--json]
    scaling plot     DIR
    scaling eval     --workdir TRIAL_DIR [--config.eval.KEY=VALUE ...]
                     [--positions LEN [--buckets N] [--rope-scaling SPEC] [--out FILE]]
    scaling data prepare --config FILE[:ARG] [--config.data.KEY=VALUE ...]
    scaling mup-check [--widths 64,128,...] [--steps N] [--out FILE]

Exit codes (every command): 0 ok; 2 bad input only (config, flags, a grid point the mesh cannot
split, a directory that cannot be written), one line naming the fix, before anything trains;
1 a failure while running (a diverged run, a full disk); 128+N stopped by signal N (130 Ctrl-C,
143 SIGTERM). `scaling sweep`: see SWEEP_EXIT_CODES.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from scaling.display import print_table
from scaling.errors import Stopped, UserError, write_failure
from scaling.startup import setup_jax
from scaling.tasks import DEFAULT_SUITE  # numpy only: cheap at start-up


_EVAL_HELP = """Task evaluations of a trained run (its config.json + latest checkpoint) -> eval.jsonl.

Settings come from the run's eval.* config; --config.eval.KEY=VALUE overrides them. When
eval.tasks is empty (the default), the default suite runs (scaling/tasks.py, DEFAULT_SUITE):
  {suite}
and any --config.eval.* flag replaces its part, e.g.
  scaling eval --workdir RUN --config.eval.tasks=addition,modular --config.eval.shots=0,4"""


SWEEP_EXIT_CODES = """exit codes:
  0  every trial is done (or the others still run in another process: a note says so;
     rerun `scaling sweep` or `scaling status DIR` later)
  1  some or all trials failed (see DIR/trials/<id>/error.txt; rerun with --retry-failed),
     or did not run
  2  bad input only: config, flags, a grid point the mesh cannot split, a workdir of another
     experiment or one that cannot be written; nothing was trained
  130/143  stopped by Ctrl-C / SIGTERM (workers are stopped too); rerun to resume"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit code 2."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pull `--config.KEY=VALUE` (or `--config.KEY VALUE`) out of argv."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            body = arg[len("--config."):]
            if "=" not in body:
                if i + 1 >= len(argv):
                    raise UserError(f"override {arg} has no value: write {arg}=VALUE")
                body, i = f"{body}={argv[i + 1]}", i + 1
            overrides.append(body)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def _load(args):
    from scaling.config import load_config, resolve
    cfg = load_config(args.config, args.overrides)
    if getattr(args, "init_from", None):  # a path: set as given (no literal parsing)
        cfg.train.init_from = args.init_from
    return resolve(cfg)


def cmd_describe(args) -> int:
    from scaling import counting
    cfg = _load(args)
    out = dict(counting.describe(cfg))
    if args.json:
        out["config"] = cfg.to_dict()
        print(json.dumps(out))
    else:
        print(cfg)
        for k, v in out.items():
            print(f"{k}: {v:,}" if isinstance(v, (int, float)) else f"{k}: {v}")
    return 0


def cmd_train(args) -> int:
    setup_jax()
    from scaling.evals.trained import evaluate_trained
    from scaling.train.loop import summary_text, train
    summary = train(_load(args), args.workdir, verbose=not args.json)
    summary = evaluate_trained(args.workdir, summary, log=None if args.json else print)
    print(json.dumps(summary) if args.json else
          f"done: {summary_text(summary)} -> {os.path.join(args.workdir, 'summary.json')}")
    return 0


def cmd_sweep(args) -> int:
    import importlib.util
    if args.launcher == "slurm" and importlib.util.find_spec("submitit") is None:
        raise UserError("--launcher slurm needs submitit: pip install -e '.[slurm]'")
    setup_jax()
    from scaling.sweeps.runner import run_sweep
    slurm = {"partition": args.slurm_partition, "time": args.slurm_time, "gpus": args.slurm_gpus,
             "cpus": args.slurm_cpus, "mem_gb": args.slurm_mem_gb,
             "array_parallelism": args.slurm_array_parallelism,
             "local": True if args.slurm_local else None}
    return run_sweep(args.config, args.overrides, args.workdir, retry_failed=args.retry_failed,
                     plan_only=args.dry_run, launcher=args.launcher, parallel=args.parallel,
                     slurm=slurm, wait=not args.no_wait, on_plan=_warn_plan,
                     group_size=8 if args.vectorize and args.group_size == 1 else args.group_size,
                     on_done=lambda df: _report(args.workdir, df))


def _report(workdir: str, df) -> None:
    """Table, fit and plots of the trials that finished. The exit code is the runner's alone
    (`runner.outcome`): a report that cannot be made (too few finished trials) is a note."""
    if not (df["status"] == "done").any():
        return  # nothing to plot or fit; the runner says why the trials did not finish
    from analysis.errors import AnalysisInputError
    from analysis.report import report_sweep
    try:
        report_sweep(workdir)  # from the results the runner just collected
    except AnalysisInputError as e:
        print(f"note: no report: {e}", flush=True)
    except Exception as e:  # the trials and their table are kept: never lose them to a plot
        print(f"warning: the report failed ({type(e).__name__}: {' '.join(str(e).split())}); "
              f"the results are in {os.path.join(workdir, 'results.parquet')}; redraw with "
              f"`scaling plot {workdir}`", file=sys.stderr, flush=True)


def _warn_plan(trials) -> None:
    """Guardrails on the planned trials (steps, warmup, epochs, mixtures) before any training.

    Epochs need the train split's size: its token count in the token store's index (the store
    is built on first use, as the first trial would); if the data cannot be opened here, the
    epochs check is skipped. Epochs count whole windows, as the trainer does.
    """
    from analysis.guardrails import check_plan, format_warnings
    from scaling import counting
    from scaling.data.mixture import corpus_share
    from scaling.data.store import split_tokens
    from scaling.train.optim import warmup_steps

    sizes: dict[str, float] = {}
    rows = []
    for t in trials:
        d, c = counting.describe(t.cfg), t.cfg
        key = json.dumps([c.data.to_dict(), c.data.train_split], sort_keys=True)
        if key not in sizes:
            try:
                sizes[key] = (float(split_tokens(c.data, c.data.train_split)), corpus_share(c.data))
            except (UserError, OSError):
                sizes[key] = (float("nan"), 1.0)
        split, share = sizes[key]
        window_tokens = (split - 1) // c.train.seq_len * c.train.seq_len
        rows.append({"trial_id": t.trial_id, "steps": c.train.steps,
                     "epochs": (d["tokens"] * share / window_tokens
                                if window_tokens > 0 else float("nan")),
                     "warmup_steps": float(warmup_steps(c.train)),
                     "data.mixture": c.data.mixture, "data.name": c.data.name})
    warns = check_plan(rows)
    if warns:
        print(format_warnings(warns), file=sys.stderr, flush=True)


def cmd_eval(args) -> int:
    """Task evaluations of a trained run (its config.json + latest checkpoint) -> eval.jsonl."""
    setup_jax()
    from scaling.config import apply_overrides, from_json_file, parse_overrides, validate
    from scaling.train.checkpoint import load_trained
    from scaling.evals.run import run_and_write
    config_path = os.path.join(args.workdir, "config.json")
    if not os.path.isfile(config_path):
        raise UserError(f"{args.workdir!r} holds no trained run (no config.json); pass a trial dir")
    overrides = parse_overrides(args.overrides)
    bad = [k for k in overrides if not k.startswith("eval.")]
    if bad:
        raise UserError(f"scaling eval takes only --config.eval.* overrides, got {bad[0]!r}")
    cfg = from_json_file(config_path)
    apply_overrides(cfg, overrides)
    if args.positions:
        try:
            _, model = load_trained(args.workdir)
        except FileNotFoundError as e:
            raise UserError(f"{e}: train the run first") from e
        return _eval_positions(args, cfg, model)
    if not cfg.eval.tasks:  # the run names no tasks: the default suite, flags still win
        apply_overrides(cfg, {f"eval.{k}": v for k, v in DEFAULT_SUITE.items()
                              if k == "tasks" or f"eval.{k}" not in overrides})
        print(f"eval: the run sets no eval.tasks; default suite {cfg.eval.tasks} "
              f"(shots {cfg.eval.shots}, {cfg.eval.examples} examples)")
    validate(cfg)  # before the restore: a bad eval.* flag is one line, and nothing is loaded
    try:
        _, model = load_trained(args.workdir)  # its config is config.json: `cfg` less the flags
    except FileNotFoundError as e:
        raise UserError(f"{e}: train the run first") from e
    secs = run_and_write(cfg, model, args.workdir, log=print)
    print(f"eval: {secs:.1f}s -> {os.path.join(args.workdir, 'eval.jsonl')}")
    return 0


def cmd_data_prepare(args) -> int:
    """Tokenize the config's corpus into its token store (resumable; a no-op when complete)."""
    from scaling.data.store import prepare, read_index
    d = _load(args).data
    for path in dict.fromkeys(prepare(d, split) for split in (d.train_split, d.val_split)):
        for name, s in read_index(path)["splits"].items():
            print(f"{name}: {s['tokens']:,} tokens, {s['docs']:,} documents, "
                  f"{s['text_bytes'] / 1e6:.2f} MB of text, {len(s['shards'])} shards -> {path}")
    return 0


def _eval_positions(args, cfg, model) -> int:
    """`scaling eval --positions LEN`: ppl_by_position (scaling/evals/positions.py) only."""
    from scaling.evals.positions import run_and_write
    out = args.out or os.path.join(args.workdir, "ppl_by_position.json")
    result = run_and_write(cfg, model, args.positions, args.buckets, out, args.rope_scaling)
    for r in result["rows"]:
        loss = "n/a" if r["loss"] is None else f"{r['loss']:.4f}"
        print(f"positions {r['lo']:>6}-{r['hi']:<6} loss {loss}"
              + (" (beyond train.seq_len)" if r["beyond_train"] else ""))
    print(f"eval: ppl_by_position -> {out}")
    return 0


def cmd_status(args) -> int:
    from scaling.sweeps.runner import status_table
    df = status_table(args.workdir)
    if args.json:
        print(df.to_json(orient="records"))
        return 0
    print_table(df)
    counts = df["status"].value_counts().to_dict()
    eta = df["eta_s"].sum()
    print(", ".join(f"{v} {k}" for k, v in counts.items())
          + (f"; ETA of running trials {eta / 60:.1f} min" if eta > 0 else ""))
    return 0


def cmd_bench(args) -> int:
    # No setup_jax(): the bench points the compilation cache at a fresh directory itself, so that
    # "cold" compile times are cold and the user's cache is left alone.
    from scaling.bench import harness as bench
    known = {**bench.LADDER, **bench.QUICK_LADDER}
    bad = [s for s in (args.sizes or "").split(",") if s.strip() and s.strip() not in known]
    if bad:
        raise UserError(f"unknown bench size(s) {', '.join(bad)}; pick from {', '.join(known)}")
    return bench.main(args)


def _widths(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        widths = []
    if len(widths) < 2 or any(w < 4 or w % 4 for w in widths):
        raise UserError(f"--widths {text!r}: give two or more multiples of 4 (4 heads), "
                        f"e.g. --widths 64,128,256")
    return sorted(widths)


def cmd_mup_check(args) -> int:
    widths = _widths(args.widths)
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    setup_jax()
    from analysis import mup as mup_analysis
    from scaling.bench import mup_check
    out = args.out or mup_check.default_out()
    mup_check.run(widths, steps=args.steps, out=out)
    df = mup_analysis.load_coord_check(out)
    print_table(mup_analysis.coord_growth(df))
    for path in mup_analysis.plot_coord_check(df, args.plots or os.path.dirname(os.path.abspath(out))):
        print(f"plot: {path}")
    print(f"numbers: {out}")
    return 0


def cmd_collect(args) -> int:
    from scaling.sweeps.runner import collect
    df = collect(args.workdir)
    print(f"{len(df)} trials ({(df['status'] == 'done').sum()} done) -> "
          f"{os.path.join(args.workdir, 'results.parquet')}")
    return 0


def _with_config(sp, required=True):
    sp.add_argument("--config", required=required, default=None,
                    help="experiment file FILE[:ARG]; override fields with --config.KEY=VALUE")


def _add_tool_commands(sub) -> None:
    """status, collect, bench, mup-check: the commands around the training path."""
    sp = sub.add_parser("status", help="progress of a sweep's trials, with ETA")
    sp.add_argument("workdir", metavar="DIR")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("collect", help="write DIR/results.parquet and results.csv")
    sp.add_argument("workdir", metavar="DIR")
    sp.set_defaults(func=cmd_collect)

    sp = sub.add_parser("bench", help="benchmark the trainer vs a plain JAX loop on a model ladder")
    sp.add_argument("--json", action="store_true", help="print the result as one JSON object")
    sp.add_argument("--out", default=None,
                    help="result file (default benchmarks/results/bench_<platform>.json)")
    sp.add_argument("--sizes", default=None, help="comma-separated ladder sizes, e.g. d64,d128")
    sp.add_argument("--quick", action="store_true", help="a tiny ladder (for tests)")
    sp.add_argument("--repeats", type=int, default=None, help="timed repeats per size")
    sp.add_argument("--no-ablations", action="store_true",
                    help="skip scan/remat/bf16 ablations")
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("mup-check", help="coordinate check: activation RMS per layer vs width, "
                                          "SP vs μP (scaling/bench/mup_check.py)")
    sp.add_argument("--widths", default="64,128,256,512,1024", help="comma-separated d_model")
    sp.add_argument("--steps", type=int, default=5, help="Adam steps before the last measurement")
    sp.add_argument("--out", default=None,
                    help="result JSON (default benchmarks/results/mup_check.json)")
    sp.add_argument("--plots", default=None, help="plot directory (default: beside --out)")
    sp.set_defaults(func=cmd_mup_check)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scaling", description="LLM scaling-law experiments in JAX/Flax.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    with_config = _with_config

    sp = sub.add_parser("describe", help="print the resolved config, parameter counts and FLOPs")
    with_config(sp, required=False)
    sp.add_argument("--json", action="store_true", help="one JSON object on stdout")
    sp.set_defaults(func=cmd_describe)

    sp = sub.add_parser("train", help="train one run in a workdir (resumes automatically)")
    with_config(sp, required=False)
    sp.add_argument("--workdir", required=True)
    sp.add_argument("--json", action="store_true", help="print the summary as JSON")
    sp.add_argument("--init-from", default=None, metavar="CKPT",
                    help="start from a trained run's parameters (its dir or checkpoints/<step>; "
                         "fresh optimizer and schedule): sets train.init_from")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("sweep", help="run an experiment's grid of trials, skipping finished ones",
                        epilog=SWEEP_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    with_config(sp, required=False)
    sp.add_argument("--workdir", required=True)
    sp.add_argument("--retry-failed", action="store_true", help="rerun trials that failed")
    sp.add_argument("--dry-run", action="store_true",
                    help="print the trials with N, D, C and an estimated time; train nothing")
    sp.add_argument("--launcher", choices=("local", "slurm"), default="local",
                    help="local: this machine (default); slurm: one submitit job per trial")
    sp.add_argument("--parallel", type=int, default=1, metavar="N",
                    help="local launcher: N worker processes, each on its own CPUs/GPUs")
    sp.add_argument("--group-size", type=int, default=1, metavar="G",
                    help="train up to G trials that differ only in seed or optimizer numbers "
                         "as one vectorised step (one device; local launcher; default 1: off)")
    sp.add_argument("--vectorize", action="store_true",
                    help="same as --group-size 8 (opt-in: on a CPU a group steps its members "
                         "one after another in one program, bitwise equal to separate runs and "
                         "1.1-1.5x their throughput on 2 cores in one process, but a whole "
                         "lr sweep with --parallel 2 took 1.05x as long as ungrouped (groups "
                         "are coarse units to share out); the vmapped step, used on "
                         "accelerators, measured 0.6-0.9x on CPU; docs/benchmarks.md)")
    for flag, typ, what in (("partition", str, "SLURM partition"),
                            ("time", int, "job time limit in minutes (default 60)"),
                            ("gpus", int, "GPUs per job"), ("cpus", int, "CPUs per job"),
                            ("mem-gb", float, "memory per job in GB"),
                            ("array-parallelism", int, "max jobs of the array running at once")):
        sp.add_argument(f"--slurm-{flag}", type=typ, default=None,
                        help=f"{what} (overrides get_slurm() in the experiment file)")
    sp.add_argument("--slurm-local", action="store_true",
                    help="run the slurm launcher's jobs with submitit's local executor")
    sp.add_argument("--no-wait", action="store_true",
                    help="slurm: return after submitting; follow with `scaling status DIR`")
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser("eval", help="task evaluations (k-shot, CoT, self-consistency) of a "
                                     "trained run -> eval.jsonl",
                        description=_EVAL_HELP.format(suite=" ".join(
                            f"eval.{k}={v}" for k, v in DEFAULT_SUITE.items())),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--workdir", required=True, help="a trained run (trial) directory")
    sp.add_argument("--positions", type=int, default=0, metavar="LEN",
                    help="instead of tasks: ppl_by_position, the loss per position bucket of "
                         "LEN-token validation sequences (LEN may exceed train.seq_len)")
    sp.add_argument("--buckets", type=int, default=8, help="--positions: position buckets")
    sp.add_argument("--rope-scaling", default=None, metavar="SPEC",
                    help="--positions: evaluate under model.rope_scaling=SPEC (e.g. linear:2)")
    sp.add_argument("--out", default=None,
                    help="--positions: output JSON (default RUN/ppl_by_position.json)")
    sp.set_defaults(func=cmd_eval, config=None)  # config: accepts --config.eval.* overrides

    sp = sub.add_parser("data", help="data tools: `scaling data prepare` builds the token store")
    data_sub = sp.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    dp = data_sub.add_parser("prepare", help="tokenize data.name with data.tokenizer into the "
                                             "sharded token store (resumable, one worker per core)")
    with_config(dp, required=False)
    dp.set_defaults(func=cmd_data_prepare)

    _add_tool_commands(sub)
    from analysis import cli as analysis_cli
    analysis_cli.register(sub)
    return p


# What else the user can do when a command cannot write where it writes (besides permissions).
_WRITE_HINTS = {
    "collect": ", or copy the sweep (cp -r DIR NEW) and collect the copy",
    "plot": ", or draw the plots elsewhere with --out NEW_DIR",
    "sweep": ", or copy the sweep (cp -r DIR NEW) and run it there",
    "train": ", or pass another --workdir",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = None
    try:
        rest, overrides = _split_overrides(argv)
        args = build_parser().parse_args(rest)
        args.overrides = overrides
        if overrides and not hasattr(args, "config"):
            raise UserError(f"`scaling {args.command}` takes no --config.* overrides")
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except _analysis_input_error() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Stopped as e:  # a signal a command forwarded to its workers (sweep --parallel)
        print(f"stopped by {signal.Signals(e.signum).name}: workers stopped; finished trials are "
              f"kept, rerun the same command to resume", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # an unwritable directory (exit 2) or a full disk (exit 1): one line
        failure = write_failure(e, _WRITE_HINTS.get(getattr(args, "command", None), ""))
        if failure is None:
            raise
        print(f"error: {failure[1]}", file=sys.stderr)
        return failure[0]
    except Exception as e:  # a failure while running: one line plus where to look
        from scaling.train.loop import TrainingError
        if isinstance(e, TrainingError):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise


def _analysis_input_error():
    try:
        from analysis.errors import AnalysisInputError
        return AnalysisInputError
    except ImportError:  # pragma: no cover - analysis is part of the package
        return UserError


if __name__ == "__main__":
    sys.exit(main())
