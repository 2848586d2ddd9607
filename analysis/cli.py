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
import math
import sys
from functools import wraps
from pathlib import Path

import numpy as np

from analysis.errors import AnalysisInputError

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


def _jsonable(obj):
    """Floats/np scalars -> JSON-safe values (NaN/inf become null, so the output stays strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def _print_result(result: dict, as_json: bool, keys) -> None:
    if as_json:
        print(json.dumps(_jsonable(result)))
        return
    ci = result.get("ci", {})
    print(f"{result.get('method', 'fit')} fit on {result.get('n_points', '?')} points")
    print(f"{'name':>10}  {'value':>12}  {'CI':>28}")
    for k in keys:
        if k not in result:
            continue
        lo_hi = ci.get(k)
        ci_s = f"[{lo_hi[0]:.4g}, {lo_hi[1]:.4g}]" if lo_hi else ""
        print(f"{k:>10}  {result[k]:>12.5g}  {ci_s:>28}")


# ---------------------------------------------------------------------------- data


def _load_table(args):
    """The finished, finite trials of the table and the guardrail warnings about its trials."""
    from analysis.guardrails import screen_trials
    from analysis.load import load_results

    df = load_results(args.data)
    df, warns = screen_trials(df, _loss_col(args, df))
    if getattr(args, "drop_highest", 0):
        loss_col = _loss_col(args, df)
        k = int(args.drop_highest)
        if k >= len(df):
            raise AnalysisInputError(f"--drop-highest {k} leaves no points out of {len(df)}; use a smaller K")
        # Epoch's rule: keep loss < sorted(loss)[-K] (drops the K highest; ties go too)
        thresh = np.sort(df[loss_col].to_numpy(float))[-k]
        df = df[df[loss_col].to_numpy(float) < thresh]
    return df, warns


def _budgets(df):
    """The IsoFLOP budget label per row (``sweep.budget``) when the sweep has one, else None."""
    if "sweep.budget" not in df.columns:
        return None
    b = np.asarray(df["sweep.budget"], float)
    return b if np.all(np.isfinite(b)) else None


def _trial_ids(df):
    return df["trial_id"].astype(str).tolist() if "trial_id" in df.columns else None


def _table_warnings(df, N, C, L):
    """Guardrails that need the table: IsoFLOP edges whenever the sweep has budgets."""
    from analysis.guardrails import check_isoflop

    budgets = _budgets(df)
    return [] if budgets is None else check_isoflop(N, C, L, trial_ids=_trial_ids(df), budgets=budgets)


def _emit_warnings(res: dict, warns) -> dict:
    """Print each warning on one stderr line and store them under ``res["warnings"]``."""
    from analysis.guardrails import format_warnings

    if warns:
        print(format_warnings(warns), file=sys.stderr)
    res["warnings"] = [w.to_dict() for w in warns]
    return res


def _flops(args, df, N, D):
    """C per row: --c-col, else the trainer's ``flops`` column, else 6ND (tables without FLOPs)."""
    from analysis.load import fit_arrays

    col = args.c_col or ("flops" if "flops" in df.columns else None)
    return fit_arrays(df, [col])[0] if col else 6.0 * N * D


def _loss_col(args, df):
    from analysis.load import default_loss_col

    return args.loss_col or default_loss_col(df)


def _n_d_l(args, df):
    """N, D, L arrays from the table: D from --d-col, or D = C/(6N) with --c-col."""
    from analysis.load import fit_arrays

    loss_col = _loss_col(args, df)
    if args.c_col:
        N, C, L = fit_arrays(df, [args.n_col, args.c_col, loss_col])
        D = C / (6.0 * N)
    else:
        N, D, L = fit_arrays(df, [args.n_col, args.d_col, loss_col])
    return N, D, L


# ---------------------------------------------------------------------------- fit


@_handles_input_errors
def _fit_chinchilla(args) -> int:
    from analysis.fits.chinchilla import fit_parametric

    from analysis.guardrails import check_fit

    df, warns = _load_table(args)
    N, D, L = _n_d_l(args, df)
    kw = dict(delta=args.delta, grid=args.grid, bootstrap=args.bootstrap, seed=args.seed)
    if args.holdout:
        return _holdout("chinchilla", args, df, (N, D, L), warns, **kw)
    res = fit_parametric(N, D, L, **kw)
    warns += _table_warnings(df, N, _flops(args, df, N, D), L) + check_fit(res, "chinchilla", N=N, D=D)
    res = _emit_warnings({"method": "chinchilla", **res}, warns)
    _print_result(res, args.json, ["E", "A", "B", "alpha", "beta", "a", "b", "G", "loss"])
    return 0


def _holdout(kind, args, df, arrays, warns, **fit_kw) -> int:
    """``--holdout``: fit the kept points, predict the held-out ones, print, draw, warn.

    ``arrays`` is (N, D, L) for chinchilla and kaplan, (N, C, L) for isoflop.
    """
    from analysis import holdout as ho
    from analysis.guardrails import check_fit
    from analysis.plots.holdout import plot_holdout

    spec = ho.parse_holdout(args.holdout)
    if kind == "isoflop":
        fit, res = ho.holdout_isoflop(*arrays, spec, budgets=_budgets(df), **fit_kw)
    else:
        N, D, L = arrays
        fn = ho.holdout_parametric if kind == "chinchilla" else ho.holdout_kaplan
        fit, res = fn(N, D, L, _flops(args, df, N, D), spec, budgets=_budgets(df), trial_ids=_trial_ids(df),
                      **fit_kw)
    data = Path(args.data)
    out = Path(args.plot_dir) if args.plot_dir else (data if data.is_dir() else data.parent) / "plots"
    res["plot"] = plot_holdout(res, out, kind)[0]
    res.pop("in_sample")
    warns += check_fit(fit, kind)
    result = _emit_warnings({"method": kind, **fit, "holdout": res}, warns)
    if args.json:
        _print_result(result, True, [])
        return 0
    print(f"{kind} fit on {res['n_fit']} points, holding out {res['n_heldout']} ({spec.text}):")
    for p in res["points"]:
        name = p.get("trial_id") or (f"C={p['C']:.3g}" + (f" N={p['N']:.3g}" if "N" in p else ""))
        print(f"  {name:>24}  observed {p['observed']:.4f}  predicted {p['predicted']:.4f}  "
              f"|rel. err| {100 * p['abs_rel_error']:.2f}%")
    print(f"median |rel. err| {100 * res['median_abs_rel_error']:.2f}%  (plot: {res['plot']})")
    return 0


class _MarkGiven(argparse.Action):
    """Store the value and remember that --d-col was given explicitly."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.d_col_given = True


def _add_data_args(p, *, d_col=True):
    p.add_argument("data", help="sweep directory, .parquet or .csv results table")
    p.add_argument("--n-col", default="params_non_embedding", help="parameter-count column (default: %(default)s)")
    if d_col:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--d-col", default="tokens", action=_MarkGiven,
                       help="token column (default: %(default)s)")
        g.add_argument("--c-col", default=None, help="FLOP column; then D = C/(6N)")
    p.add_argument("--loss-col", default=None, help="loss column (default: val_loss if present, else loss)")
    p.add_argument("--drop-highest", type=int, default=0, metavar="K", help="drop the K highest-loss points first")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N", help="bootstrap refits for CIs (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p.add_argument("--holdout", default=None, metavar="SPEC",
                   help="fit without the largest budgets and predict them: top-budget, top-k:K or 'flops>=X'")
    p.add_argument("--plot-dir", default=None, help="folder for the --holdout plot (default: DATA/plots)")


@_handles_input_errors
def _fit_kaplan(args) -> int:
    from analysis.fits.kaplan import fit_kaplan
    from analysis.load import fit_arrays

    from analysis.guardrails import check_fit

    df, warns = _load_table(args)
    loss_col = _loss_col(args, df)
    if args.c_col and args.d_col_given is False:
        N, C, L = fit_arrays(df, [args.n_col, args.c_col, loss_col])
        D = C / (6.0 * N)
    else:
        N, D, L = fit_arrays(df, [args.n_col, args.d_col, loss_col])
        C = fit_arrays(df, [args.c_col])[0] if args.c_col else None
    if args.holdout:
        return _holdout("kaplan", args, df, (N, D, L), warns, bootstrap=args.bootstrap, seed=args.seed)
    res = {"method": "kaplan", **fit_kaplan(N, D, L, C=C, bootstrap=args.bootstrap, seed=args.seed)}
    warns += _table_warnings(df, N, 6 * N * D if C is None else C, L) + check_fit(res, "kaplan", N=N, D=D)
    _emit_warnings(res, warns)
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
    from analysis.load import fit_arrays

    from analysis.guardrails import check_fit, check_isoflop

    df, warns = _load_table(args)
    N, C, L = fit_arrays(df, [args.n_col, args.c_col or "flops", _loss_col(args, df)])
    D = fit_arrays(df, [args.d_col])[0] if args.d_col in df.columns else None
    warns += check_isoflop(N, C, L, trial_ids=_trial_ids(df), budgets=_budgets(df))
    if args.holdout:
        return _holdout("isoflop", args, df, (N, C, L), warns, D=D, bootstrap=args.bootstrap, seed=args.seed)
    try:
        res = fit_isoflop(N, C, L, D=D, bootstrap=args.bootstrap, seed=args.seed)
    except AnalysisInputError:
        _emit_warnings({}, warns)  # e.g. every minimum at an edge: the warnings say which way to go
        raise
    res = _emit_warnings({"method": "isoflop", **res}, warns + check_fit(res, "isoflop"))
    _print_result(res, args.json, ["a", "b", "k_N", "k_D", "n_budgets"])
    return 0


@_handles_input_errors
def _fit_envelope(args) -> int:
    from analysis.fits.envelope import curve_flops, fit_envelope
    from analysis.guardrails import check_fit, screen_trials
    from analysis.load import load_curves, load_results

    if not Path(args.data).is_dir():
        raise AnalysisInputError(f"{args.data} is not a directory; envelope fits need a sweep dir with trials/*/metrics.jsonl")
    results, warns = screen_trials(load_results(args.data))
    cur = curve_flops(load_curves(args.data), results, n_col=args.n_col)
    res = fit_envelope(cur, n_bins=args.bins, bootstrap=args.bootstrap, seed=args.seed)
    warns += check_fit(res, "envelope", N=cur["N"].to_numpy(float))
    res = _emit_warnings({"method": "envelope", **res}, warns)
    if not args.json:
        res.pop("envelope")
    _print_result(res, args.json, ["a", "b", "k_N", "k_D"])
    return 0


# ---------------------------------------------------------------------------- plot


@_handles_input_errors
def _plot(args) -> int:
    from analysis.fits.chinchilla import fit_parametric
    from analysis.guardrails import check_sweep, format_warnings, screen_trials
    from analysis.plots.sweep import plot_sweep
    from analysis.load import default_loss_col, fit_arrays, load_results

    raw = load_results(args.dir)
    loss_col = args.loss_col or default_loss_col(raw)
    df = screen_trials(raw, loss_col)[0]
    fit = None
    if not args.no_fit:
        try:
            N, D, L = fit_arrays(df, [args.n_col, "tokens", loss_col])
            fit = fit_parametric(N, D, L)
        except AnalysisInputError as exc:  # too few / bad points: plot the data without the fit
            print(f"note: no fitted curves ({exc})", file=sys.stderr)
    warns = check_sweep(raw, fit, n_col=args.n_col, loss_col=loss_col)
    if warns:
        print(format_warnings(warns), file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.dir) / "plots"
    for p in plot_sweep(df, out, fit=fit, n_col=args.n_col, loss_col=loss_col):
        print(p)
    return 0


def register(subparsers) -> None:
    """Add the ``fit`` and ``plot`` subcommands to an argparse ``subparsers`` object."""
    fit = subparsers.add_parser("fit", help="fit scaling laws to sweep results")
    kinds = fit.add_subparsers(dest="fit_kind", metavar="{chinchilla,kaplan,isoflop,envelope}", required=True)

    p = kinds.add_parser("chinchilla", help="Approach 3: L = E + A/N^alpha + B/D^beta (Huber, 4,500 starts)")
    _add_data_args(p)
    p.add_argument("--delta", type=float, default=1e-3, help="Huber delta (default: %(default)s)")
    p.add_argument("--grid", choices=["hoffmann", "small"], default="hoffmann")
    p.set_defaults(func=_fit_chinchilla, d_col_given=False)

    p = kinds.add_parser("kaplan", help="Kaplan 2020: L(N), L(D), L(C_min) and joint L(N,D)")
    _add_data_args(p)
    p.set_defaults(func=_fit_kaplan, d_col_given=False)

    p = kinds.add_parser("isoflop", help="Approach 2: parabola per FLOP budget, N_opt ~ C^a, D_opt ~ C^b")
    _add_data_args(p)
    p.set_defaults(func=_fit_isoflop, d_col_given=False)

    p = kinds.add_parser("envelope", help="Approach 1: min loss per FLOP bin over training curves")
    p.add_argument("data", help="sweep directory (reads trials/*/metrics.jsonl and results)")
    p.add_argument("--n-col", default="params_non_embedding")
    p.add_argument("--bins", type=int, default=100, help="log-spaced FLOP bins (default: %(default)s)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p.set_defaults(func=_fit_envelope)

    p = subparsers.add_parser("plot", help="redraw the sweep plots into DIR/plots/")
    p.add_argument("dir", help="sweep directory")
    p.add_argument("--out", default=None, help="output folder (default: DIR/plots)")
    p.add_argument("--n-col", default="params_non_embedding")
    p.add_argument("--loss-col", default=None)
    p.add_argument("--no-fit", action="store_true", help="skip the Approach-3 fit overlay")
    p.set_defaults(func=_plot)


def main(argv=None) -> int:
    """Stand-alone entry point: ``python -m analysis.cli fit chinchilla DATA ...``."""
    parser = argparse.ArgumentParser(prog="scaling")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
