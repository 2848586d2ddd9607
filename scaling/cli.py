"""The `scaling` command: parse, call, exit codes (0 ok, 2 bad input, 1 failure while running).

    scaling train    --config FILE[:ARG] [--config.KEY=VALUE ...] --workdir DIR
    scaling describe --config FILE[:ARG] [--config.KEY=VALUE ...] [--json]
    scaling sweep    [--config FILE[:ARG]] [--config.KEY=VALUE ...] --workdir DIR
    scaling fit      chinchilla DATA [--n-col ...] [--d-col ... | --c-col ...] --loss-col ... [--json]
    scaling plot     DIR
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from scaling.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit code 2."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def setup_jax() -> None:
    """Persistent compilation cache shared by every trial and run (cuts per-trial start-up)."""
    import jax
    cache = os.environ.get("SCALING_CACHE_DIR",
                           os.path.join(os.path.expanduser("~"), ".cache", "scaling", "jax"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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
    return resolve(load_config(args.config, args.overrides))


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
    from scaling.train import train
    summary = train(_load(args), args.workdir)
    print(json.dumps(summary) if args.json else
          f"done: loss {summary['loss']:.4f} val_loss {summary['val_loss']:.4f} "
          f"wall {summary['wall_s']:.1f}s -> {os.path.join(args.workdir, 'summary.json')}")
    return 0


def cmd_sweep(args) -> int:
    setup_jax()
    from scaling.sweeps.runner import run_sweep
    return run_sweep(args.config, args.overrides, args.workdir, retry_failed=args.retry_failed,
                     plan_only=args.dry_run)


def cmd_status(args) -> int:
    import pandas as pd
    from scaling.sweeps.runner import status_table
    df = status_table(args.workdir)
    if args.json:
        print(df.to_json(orient="records"))
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    counts = df["status"].value_counts().to_dict()
    eta = df["eta_s"].sum()
    print(", ".join(f"{v} {k}" for k, v in counts.items())
          + (f"; ETA of running trials {eta / 60:.1f} min" if eta > 0 else ""))
    return 0


def cmd_collect(args) -> int:
    from scaling.sweeps.runner import collect
    df = collect(args.workdir)
    print(f"{len(df)} trials ({(df['status'] == 'done').sum()} done) -> "
          f"{os.path.join(args.workdir, 'results.parquet')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scaling", description="LLM scaling-law experiments in JAX/Flax.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_config(sp, required=True):
        sp.add_argument("--config", required=required, default=None,
                        help="experiment file FILE[:ARG]; override fields with --config.KEY=VALUE")

    sp = sub.add_parser("describe", help="print the resolved config, parameter counts and FLOPs")
    with_config(sp, required=False)
    sp.add_argument("--json", action="store_true", help="one JSON object on stdout")
    sp.set_defaults(func=cmd_describe)

    sp = sub.add_parser("train", help="train one run in a workdir (resumes automatically)")
    with_config(sp, required=False)
    sp.add_argument("--workdir", required=True)
    sp.add_argument("--json", action="store_true", help="print the summary as JSON")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("sweep", help="run an experiment's grid of trials, skipping finished ones")
    with_config(sp, required=False)
    sp.add_argument("--workdir", required=True)
    sp.add_argument("--retry-failed", action="store_true", help="rerun trials that failed")
    sp.add_argument("--dry-run", action="store_true",
                    help="print the trials with N, D, C and an estimated time; train nothing")
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser("status", help="progress of a sweep's trials, with ETA")
    sp.add_argument("workdir", metavar="DIR")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("collect", help="write DIR/results.parquet and results.csv")
    sp.add_argument("workdir", metavar="DIR")
    sp.set_defaults(func=cmd_collect)

    from analysis import cli as analysis_cli
    analysis_cli.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a failure while running: one line plus where to look
        from scaling.train import TrainingError
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
