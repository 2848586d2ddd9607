"""``scaling fit ...`` and ``scaling plot ...`` subcommands.

The trainer's CLI wires these in with::

    from analysis.cli import register
    register(subparsers)   # adds "fit" and "plot"; each sets args.func(args) -> exit code

Every handler catches :class:`AnalysisInputError`, prints ``error: <message>``
on one line to stderr and returns 2. ``python -m analysis.cli ...`` runs the
same commands without the trainer.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import wraps
from pathlib import Path

import numpy as np

from analysis.errors import AnalysisInputError

_DEFAULT_BOOT = 200  # = analysis.report.DEFAULT_BOOTSTRAP (not imported: keeps `scaling --help` light)

__all__ = ["register", "main"]


def _handles_input_errors(fn):
    @wraps(fn)
    def wrapper(args):
        try:
            return fn(args)
        except AnalysisInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapper


def _print_result(result: dict, as_json: bool, keys) -> None:
    """One JSON object, or the constants with their intervals, then notes and warnings."""
    from analysis.report import format_constants, jsonable

    if as_json:
        print(json.dumps(jsonable(result)))
        return
    print(f"{result.get('method', 'fit')} fit on {result.get('n_points', '?')} points"
          + (f" (C: {result['c_convention']})" if result.get("c_convention") else ""))
    fits = result.get("by_n") or {"value [95% interval]": result}
    for line in format_constants(fits, keys):
        print(line)
    for line in result.get("notes", []):
        print(line)
    noise = result.get("seed_noise")
    if noise:
        print(f"seed noise floor: median std {noise['median_std']:.3g} ({noise['median_rel_std']:.2%}) "
              f"over {noise['n_configs']} configurations")
    for w in result.get("warnings", []):
        print(f"warning: {w}")


# ---------------------------------------------------------------------------- data


def _load_table(args, n_cols):
    """Usable finished rows (others skipped with a warning), seeds averaged, then --drop-highest."""
    from analysis.load import aggregate_seeds, default_loss_col, load_results, seed_noise, usable

    df = load_results(args.data)
    loss_col = args.loss_col or default_loss_col(df)
    need = list(n_cols) + [loss_col] + [c for c in (args.d_col, args.c_col, "flops")
                                        if c and c in df.columns]
    df, warnings = usable(df, list(dict.fromkeys(need)))
    df = aggregate_seeds(df)
    if getattr(args, "drop_highest", 0):
        k = int(args.drop_highest)
        if k >= len(df):
            raise AnalysisInputError(f"--drop-highest {k} leaves no points out of {len(df)}; use a smaller K")
        # Epoch's rule: keep loss < sorted(loss)[-K] (drops the K highest; ties go too)
        thresh = np.sort(df[loss_col].to_numpy(float))[-k]
        df = df[df[loss_col].to_numpy(float) < thresh]
    return df, loss_col, {"warnings": warnings, "seed_noise": seed_noise(df, loss_col)}


def _n_cols(args, df_cols) -> list[str]:
    """--n-col, or both N conventions side by side when the table has both."""
    if args.n_col:
        return [args.n_col]
    both = ["params_non_embedding", "params_total"]
    return both if all(c in df_cols for c in both) else ["params_non_embedding"]


def _bootstrap_count(args) -> int:
    from analysis.fits.bootstrap import check_count

    return check_count(args.bootstrap)


# ---------------------------------------------------------------------------- fit


@_handles_input_errors
def _fit_chinchilla(args) -> int:
    from analysis.load import load_results
    from analysis.report import CONSTANTS, fit_sweep_table

    n_boot = _bootstrap_count(args)
    n_cols = _n_cols(args, load_results(args.data).columns)
    df, loss_col, info = _load_table(args, n_cols)
    by_n = {}
    for n_col in n_cols:
        by_n[f"N = {n_col}"] = fit_sweep_table(df, n_col=n_col, loss_col=loss_col, bootstrap=n_boot,
                                               seed=args.seed, d_col=args.d_col, c_col=args.c_col,
                                               delta=args.delta, grid=args.grid)
    primary = next(iter(by_n.values()))
    res = {"method": "chinchilla", **primary, "loss_col": loss_col, "seed_noise": info["seed_noise"],
           "warnings": info["warnings"] + [f"{lb}: {w}" for lb, f in by_n.items() for w in f["warnings"]]}
    if len(by_n) > 1:
        res["by_n"] = by_n
    _print_result(res, args.json, list(CONSTANTS) + ["loss"])
    return 0


def _add_data_args(p, *, d_col=True):
    p.add_argument("data", help="sweep directory, .parquet or .csv results table")
    p.add_argument("--n-col", default=None,
                   help="parameter-count column (default: params_non_embedding; chinchilla fits "
                        "params_non_embedding and params_total side by side when both exist)")
    if d_col:
        p.add_argument("--d-col", default="tokens",
                       help="token column (default: %(default)s; without it D = C/(6N))")
        p.add_argument("--c-col", default=None,
                       help="FLOP column (default: flops when present, else C = 6ND; see analysis/convention.py)")
    p.add_argument("--loss-col", default=None, help="loss column (default: val_loss if present, else loss)")
    p.add_argument("--drop-highest", type=int, default=0, metavar="K", help="drop the K highest-loss points first")
    p.add_argument("--bootstrap", type=int, default=_DEFAULT_BOOT, metavar="N",
                   help="bootstrap refits for 95%% intervals: 0 (none) or >= 20 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")


def _inputs(args, df, loss_col):
    from analysis.convention import fit_inputs

    return fit_inputs(df, n_col=args.n_col or "params_non_embedding", loss_col=loss_col,
                      d_col=args.d_col, c_col=args.c_col)


def _conventions(x) -> dict:
    return {k: x[k] for k in ("n_convention", "c_convention", "d_convention", "notes")}


@_handles_input_errors
def _fit_kaplan(args) -> int:
    from analysis.fits.kaplan import fit_kaplan

    n_boot = _bootstrap_count(args)
    df, loss_col, info = _load_table(args, [args.n_col or "params_non_embedding"])
    x = _inputs(args, df, loss_col)
    fit = fit_kaplan(x["N"], x["D"], x["L"], C=x["C"], bootstrap=n_boot, seed=args.seed,
                     c_convention=x["c_convention"])
    res = {"method": "kaplan", **fit, **_conventions(x), "seed_noise": info["seed_noise"],
           "warnings": info["warnings"] + fit["warnings"]}
    if args.json:
        _print_result(res, True, [])
    else:
        flat = {**res, **{f"L_ND.{k}": v for k, v in res["L_ND"].items()}}
        _print_result(flat, False, ["alpha_N", "N_c", "alpha_D", "D_c", "alpha_C", "C_c", "L_ND.alpha_N",
                                    "L_ND.alpha_D", "L_ND.N_c", "L_ND.D_c"])
    return 0


@_handles_input_errors
def _fit_isoflop(args) -> int:
    from analysis.fits.isoflop import fit_isoflop

    n_boot = _bootstrap_count(args)
    df, loss_col, info = _load_table(args, [args.n_col or "params_non_embedding"])
    x = _inputs(args, df, loss_col)
    fit = fit_isoflop(x["N"], x["C"], x["L"], D=x["D"], bootstrap=n_boot, seed=args.seed, fpt=x["fpt"])
    res = {"method": "isoflop", **fit, **_conventions(x), "seed_noise": info["seed_noise"],
           "warnings": info["warnings"] + fit["warnings"]}
    _print_result(res, args.json, ["a", "b", "k_N", "k_D", "n_budgets"])
    return 0


@_handles_input_errors
def _fit_envelope(args) -> int:
    from analysis.convention import C_FLOPS, n_convention
    from analysis.fits.envelope import curve_flops, fit_envelope
    from analysis.load import completed, load_curves, load_results

    n_boot = _bootstrap_count(args)
    if not Path(args.data).is_dir():
        raise AnalysisInputError(f"{args.data} is not a directory; envelope fits need a sweep dir with trials/*/metrics.jsonl")
    cur = curve_flops(load_curves(args.data), completed(load_results(args.data)), n_col=args.n_col)
    res = fit_envelope(cur, n_bins=args.bins, bootstrap=n_boot, seed=args.seed)
    res = {"method": "envelope", **res, "n_convention": n_convention(args.n_col), "c_convention": C_FLOPS}
    if not args.json:
        res.pop("envelope")
    _print_result(res, args.json, ["a", "b", "k_N", "k_D"])
    return 0


# ---------------------------------------------------------------------------- plot


@_handles_input_errors
def _plot(args) -> int:
    """`scaling plot DIR`: the same report as the end of a sweep (analysis/report.py)."""
    from analysis.fits.bootstrap import check_count
    from analysis.report import report_sweep

    n_boot = check_count(args.bootstrap)
    report_sweep(args.dir, fit=not args.no_fit, bootstrap=n_boot, plot_dir=args.out)
    return 0


def register(subparsers) -> None:
    """Add the ``fit`` and ``plot`` subcommands to an argparse ``subparsers`` object."""
    fit = subparsers.add_parser("fit", help="fit scaling laws to sweep results")
    kinds = fit.add_subparsers(dest="fit_kind", metavar="{chinchilla,kaplan,isoflop,envelope}", required=True)

    p = kinds.add_parser("chinchilla", help="Approach 3: L = E + A/N^alpha + B/D^beta (Huber, 4,500 starts)")
    _add_data_args(p)
    p.add_argument("--delta", type=float, default=1e-3, help="Huber delta (default: %(default)s)")
    p.add_argument("--grid", choices=["hoffmann", "small"], default="hoffmann")
    p.set_defaults(func=_fit_chinchilla)

    p = kinds.add_parser("kaplan", help="Kaplan 2020: L(N), L(D), L(C_min) and joint L(N,D)")
    _add_data_args(p)
    p.set_defaults(func=_fit_kaplan)

    p = kinds.add_parser("isoflop", help="Approach 2: parabola per FLOP budget, N_opt ~ C^a, D_opt ~ C^b")
    _add_data_args(p)
    p.set_defaults(func=_fit_isoflop)

    p = kinds.add_parser("envelope", help="Approach 1: min loss per FLOP bin over training curves")
    p.add_argument("data", help="sweep directory (reads trials/*/metrics.jsonl and results)")
    p.add_argument("--n-col", default="params_non_embedding")
    p.add_argument("--bins", type=int, default=100, help="log-spaced FLOP bins (default: %(default)s)")
    p.add_argument("--bootstrap", type=int, default=_DEFAULT_BOOT, metavar="N",
                   help="bootstrap refits: 0 or >= 20 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p.set_defaults(func=_fit_envelope)

    p = subparsers.add_parser("plot", help="redraw the sweep plots into DIR/plots/")
    p.add_argument("dir", help="sweep directory")
    p.add_argument("--out", default=None, help="output folder (default: DIR/plots)")
    p.add_argument("--no-fit", action="store_true", help="skip the Approach-3 fit (and fit.json)")
    p.add_argument("--bootstrap", type=int, default=_DEFAULT_BOOT, metavar="N",
                   help="bootstrap refits for the fit's intervals: 0 or >= 20 (default: %(default)s)")
    p.set_defaults(func=_plot)


def main(argv=None) -> int:
    """Stand-alone entry point: ``python -m analysis.cli fit chinchilla DATA ...``."""
    parser = argparse.ArgumentParser(prog="scaling")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
