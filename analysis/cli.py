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


def _emit(res: dict, warns) -> dict:
    """Print each warning as one `warning: [code] ...` line on stderr; store them as dicts."""
    from analysis.guardrails import format_warnings

    if warns:
        print(format_warnings(warns), file=sys.stderr)
    res["warnings"] = [w.to_dict() for w in warns]
    return res


def _budgets(df):
    """The IsoFLOP budget label per row (``sweep.budget``) when the sweep has one, else None."""
    if "sweep.budget" not in df.columns:
        return None
    b = np.asarray(df["sweep.budget"], float)
    return b if np.all(np.isfinite(b)) else None


def _trial_ids(df):
    return df["trial_id"].astype(str).tolist() if "trial_id" in df.columns else None


def _table_warnings(df, x) -> list:
    """Guardrails that need the table: IsoFLOP edges whenever the sweep has budgets."""
    from analysis.guardrails import check_isoflop

    if _budgets(df) is None:
        return []
    return check_isoflop(x["N"], x["C"], x["L"], trial_ids=_trial_ids(df), budgets=_budgets(df))


# ---------------------------------------------------------------------------- data


def _coded(lines, code: str) -> list:
    """Plain warning strings (from the fits and loaders) as coded guardrail warnings."""
    from analysis.guardrails import Warning

    return [Warning(code, str(w)) for w in lines]


def _load_table(args, n_cols):
    """Finished, finite rows (others excluded with a coded warning; analysis/guardrails.py),
    the per-trial guardrails, seeds averaged, then --drop-highest."""
    from analysis.guardrails import screen_trials
    from analysis.load import aggregate_seeds, default_loss_col, load_results, seed_noise, usable

    df = load_results(args.data)
    loss_col = args.loss_col or default_loss_col(df)
    df, warnings = screen_trials(df, loss_col)
    need = list(n_cols) + [loss_col] + [c for c in (args.d_col, args.c_col, "flops")
                                        if c and c in df.columns]
    if "status" in df.columns:  # a sweep's table: unusable trials are skipped with a warning;
        df, unusable = usable(df, list(dict.fromkeys(need)))  # a plain CSV's NaN is bad input
        warnings += _coded(unusable, "trial-excluded")
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

    from analysis.guardrails import check_fit

    n_boot = _bootstrap_count(args)
    n_cols = _n_cols(args, load_results(args.data).columns)
    df, loss_col, info = _load_table(args, n_cols)
    if args.holdout:
        return _holdout("chinchilla", args, df, loss_col, info, bootstrap=n_boot, seed=args.seed,
                        delta=args.delta, grid=args.grid)
    by_n = {}
    for n_col in n_cols:
        by_n[f"N = {n_col}"] = fit_sweep_table(df, n_col=n_col, loss_col=loss_col, bootstrap=n_boot,
                                               seed=args.seed, d_col=args.d_col, c_col=args.c_col,
                                               delta=args.delta, grid=args.grid)
    primary = next(iter(by_n.values()))
    x = _inputs(args, df, loss_col)
    warns = info["warnings"] + _coded([f"{lb}: {w}" for lb, f in by_n.items() for w in f["warnings"]],
                                      "fit")
    warns += _table_warnings(df, x)
    for f in by_n.values():
        warns += check_fit(f, "chinchilla", N=x["N"], D=x["D"])
    res = {"method": "chinchilla", **primary, "loss_col": loss_col, "seed_noise": info["seed_noise"]}
    if len(by_n) > 1:
        res["by_n"] = by_n
    _print_result(_emit(res, warns), args.json, list(CONSTANTS) + ["loss"])
    return 0


def _holdout(kind, args, df, loss_col, info, **fit_kw) -> int:
    """``--holdout``: fit the kept points, predict the held-out ones, print, draw, warn."""
    from analysis import holdout as ho
    from analysis.guardrails import check_fit
    from analysis.plots.holdout import plot_holdout
    from analysis.report import jsonable

    spec = ho.parse_holdout(args.holdout)
    x = _inputs(args, df, loss_col)
    if kind == "isoflop":
        fit_kw.pop("delta", None), fit_kw.pop("grid", None)
        fit, res = ho.holdout_isoflop(x["N"], x["C"], x["L"], spec, D=x["D"], budgets=_budgets(df),
                                      **fit_kw)
    else:
        fn = ho.holdout_parametric if kind == "chinchilla" else ho.holdout_kaplan
        if kind == "kaplan":
            fit_kw = {k: v for k, v in fit_kw.items() if k in ("bootstrap", "seed")}
        fit, res = fn(x["N"], x["D"], x["L"], x["C"], spec, budgets=_budgets(df),
                      trial_ids=_trial_ids(df), **fit_kw)
    from analysis.load import plot_dir
    out = plot_dir(args.data, args.plot_dir)
    res["plot"] = plot_holdout(res, out, kind)[0]
    res.pop("in_sample", None)
    warns = info["warnings"] + check_fit(fit, kind)
    result = _emit({"method": kind, **fit, **_conventions(x), "holdout": res}, warns)
    if args.json:
        print(json.dumps(jsonable(result)))
        return 0
    print(f"{kind} fit on {res['n_fit']} points, holding out {res['n_heldout']} ({spec.text}):")
    for p in res["points"]:
        name = p.get("trial_id") or (f"C={p['C']:.3g}" + (f" N={p['N']:.3g}" if "N" in p else ""))
        print(f"  {name:>24}  observed {p['observed']:.4f}  predicted {p['predicted']:.4f}  "
              f"|rel. err| {100 * p['abs_rel_error']:.2f}%")
    print(f"median |rel. err| {100 * res['median_abs_rel_error']:.2f}%  (plot: {res['plot']})")
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
    p.add_argument("--holdout", default=None, metavar="SPEC",
                   help="fit on the rest and predict the held-out points: top-budget, top-k:K or "
                        "'flops>=X' (analysis/holdout.py)")
    p.add_argument("--plot-dir", default=None,
                   help="where the held-out plot goes (default: DATA/plots, or the file's folder/plots)")


def _inputs(args, df, loss_col):
    from analysis.convention import fit_inputs

    return fit_inputs(df, n_col=args.n_col or "params_non_embedding", loss_col=loss_col,
                      d_col=args.d_col, c_col=args.c_col)


def _conventions(x) -> dict:
    return {k: x[k] for k in ("n_convention", "c_convention", "d_convention", "notes")}


@_handles_input_errors
def _fit_kaplan(args) -> int:
    from analysis.fits.kaplan import fit_kaplan

    from analysis.guardrails import check_fit

    n_boot = _bootstrap_count(args)
    df, loss_col, info = _load_table(args, [args.n_col or "params_non_embedding"])
    if args.holdout:
        return _holdout("kaplan", args, df, loss_col, info, bootstrap=n_boot, seed=args.seed)
    x = _inputs(args, df, loss_col)
    fit = fit_kaplan(x["N"], x["D"], x["L"], C=x["C"], bootstrap=n_boot, seed=args.seed,
                     c_convention=x["c_convention"])
    warns = (info["warnings"] + _table_warnings(df, x) + _coded(fit["warnings"], "fit")
             + check_fit(fit, "kaplan", N=x["N"], D=x["D"]))
    res = _emit({"method": "kaplan", **fit, **_conventions(x), "seed_noise": info["seed_noise"]}, warns)
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

    from analysis.guardrails import check_fit, check_isoflop

    n_boot = _bootstrap_count(args)
    df, loss_col, info = _load_table(args, [args.n_col or "params_non_embedding"])
    if args.holdout:
        return _holdout("isoflop", args, df, loss_col, info, bootstrap=n_boot, seed=args.seed)
    x = _inputs(args, df, loss_col)
    warns = info["warnings"] + check_isoflop(x["N"], x["C"], x["L"], trial_ids=_trial_ids(df),
                                             budgets=_budgets(df))
    try:
        fit = fit_isoflop(x["N"], x["C"], x["L"], D=x["D"], bootstrap=n_boot, seed=args.seed, fpt=x["fpt"])
    except AnalysisInputError:
        _emit({}, warns)  # e.g. every minimum at an edge: the warnings say which way to extend
        raise
    warns += _coded(fit["warnings"], "fit") + check_fit(fit, "isoflop")
    res = _emit({"method": "isoflop", **fit, **_conventions(x), "seed_noise": info["seed_noise"]}, warns)
    _print_result(res, args.json, ["a", "b", "k_N", "k_D", "n_budgets"])
    return 0


@_handles_input_errors
def _fit_envelope(args) -> int:
    from analysis.convention import C_FLOPS, n_convention
    from analysis.fits.envelope import POINTS, curve_flops, final_points, fit_envelope
    from analysis.load import completed, load_curves, load_results

    n_boot = _bootstrap_count(args)
    if args.points == "curves" and not Path(args.data).is_dir():
        raise AnalysisInputError(f"{args.data} is not a directory; --points curves needs a sweep dir "
                                 f"with trials/*/metrics.jsonl (--points final reads a results table)")
    from analysis.guardrails import screen_trials

    kept, warns = screen_trials(load_results(args.data))
    if args.points == "final":
        cur = final_points(completed(kept), n_col=args.n_col)
    else:
        cur = curve_flops(load_curves(args.data), completed(kept), n_col=args.n_col)
    res = fit_envelope(cur, n_bins=args.bins, bootstrap=n_boot, seed=args.seed)
    res = {"method": "envelope", "points": POINTS[args.points], **res,
           "n_convention": n_convention(args.n_col), "c_convention": C_FLOPS}
    _emit(res, warns + _coded(res.get("warnings", []), "fit"))
    if not args.json:
        res.pop("envelope")
    _print_result(res, args.json, ["a", "b", "k_N", "k_D"])
    return 0


def _parse_at(text: str | None):
    """``--at N,D`` -> (N, D) floats."""
    if text is None:
        return None
    try:
        n, d = (float(v) for v in text.split(","))
    except ValueError:
        raise AnalysisInputError(f"--at {text!r} is not N,D (e.g. --at 1e6,2e7)") from None
    if not (n > 0 and d > 0 and np.isfinite(n) and np.isfinite(d)):
        raise AnalysisInputError(f"--at {text!r}: N and D must be positive numbers")
    return n, d


def _loss_law(args, df, loss_col, mask):
    """The (N, D) -> loss law for the two-step prediction: --loss-fit, else fitted on the kept rows."""
    from analysis.downstream import load_loss_fit
    from analysis.fits.chinchilla import fit_parametric

    if args.loss_fit:
        return load_loss_fit(args.loss_fit)
    x = _inputs(args, df[~mask], loss_col)
    try:
        return fit_parametric(x["N"], x["D"], x["L"], grid="small")
    except AnalysisInputError as exc:
        raise AnalysisInputError(f"the two-step prediction needs an (N, D) -> loss law: {exc}; pass "
                                 "--loss-fit FIT.json (from `scaling fit chinchilla --json`)") from exc


@_handles_input_errors
def _fit_downstream(args) -> int:
    """``scaling fit downstream DATA --metric COL``: the loss -> metric fit, hold-out, two-step."""
    from analysis import downstream as ds
    from analysis.fits import downstream as fd
    from analysis.guardrails import check_downstream

    n_boot, at = _bootstrap_count(args), _parse_at(args.at)
    df, loss_col, notes = ds.downstream_table(args.data, args.metric, loss_col=args.loss_col)
    chance = args.chance if args.chance is not None else ds.chance_of(args.data, args.metric)
    L, y = df[loss_col].to_numpy(float), df[args.metric].to_numpy(float)
    kw = {"form": args.form, "chance": chance, "bootstrap": n_boot, "seed": args.seed}
    mask = np.zeros(len(df), bool)
    res = {"method": "downstream", "metric": args.metric, "loss_col": loss_col, "notes": notes}
    if args.holdout:
        mask = ds.heldout_mask(df, args.holdout, n_col=args.n_col or "params_non_embedding")
        fit, res["holdout"] = fd.holdout_downstream(L, y, mask, trial_ids=df.get("trial_id"),
                                                    N=df.get(args.n_col or "params_non_embedding"), **kw)
    else:
        fit = fd.fit_downstream(L, y, keep_samples=True, **kw)
    asked = at is not None or args.at_flops is not None
    if asked or args.holdout:
        try:
            law = _loss_law(args, df, loss_col, mask)
        except AnalysisInputError as exc:
            if asked:
                raise
            law = None  # the one-step hold-out stands; say why there is no two-step number
            res["notes"].append(f"no two-step hold-out: {exc}")
    if (asked or args.holdout) and law is not None:
        res["loss_law"] = {k: law[k] for k in ("E", "A", "B", "alpha", "beta")}
        if at is not None:
            L_hat, y_hat = fd.two_step_predict(law, fit, at[0], at[1])
            res["at"] = {"N": at[0], "D": at[1], "loss": float(L_hat), "metric": float(y_hat)}
        if args.at_flops is not None:
            r = fd.metric_at_flops(law, fit, args.at_flops)
            res["at_flops"] = {k: float(v) for k, v in r.items()}
        if args.holdout:
            x = _inputs(args, df[mask], loss_col)
            L_hat, y_hat = fd.two_step_predict(law, fit, x["N"], x["D"])
            res["holdout"]["two_step_mean_abs_error"] = float(np.mean(np.abs(y_hat - y[mask])))
    res["plot"] = _downstream_plot(args, fit, L[~mask], y[~mask], res.get("holdout"))
    fit.pop("samples", None)
    res.update(fit=fit)
    _emit(res, _coded(fit["warnings"], "fit") + check_downstream(fit, L[~mask], y[~mask]))
    return _print_downstream(res, args.json)


def _downstream_plot(args, fit, L, y, holdout) -> str:
    from analysis.plots.downstream import plot_downstream
    from analysis.plots.style import save_figure

    from analysis.load import plot_dir
    out = plot_dir(args.data, args.plot_dir)
    fig = plot_downstream(L, y, fit, holdout=holdout, metric=args.metric, title=args.metric)
    return save_figure(fig, out, "downstream")[0]


def _print_downstream(res: dict, as_json: bool) -> int:
    from analysis.fits.downstream import FORMS
    from analysis.report import format_constants, jsonable

    if as_json:
        print(json.dumps(jsonable(res)))
        return 0
    fit = res["fit"]
    print(f"{fit['form']} fit of {res['metric']} vs {res['loss_col']} on {fit['n_points']} trials "
          f"(chance: {fit['chance'] if fit['chance'] is not None else 'free'}; rmse {fit['rmse']:.3g})")
    for line in format_constants({"value [95% interval]": fit}, list(FORMS[fit["form"]]) + ["threshold"]):
        print(line)
    for line in res["notes"]:
        print(line)
    for p in (res.get("holdout") or {}).get("points", []):
        print(f"  held out {p['trial_id'] or ''} (N={p['N']:.3g}, loss {p['loss']:.4f}): observed "
              f"{p['observed']:.4f}  predicted {p['predicted']:.4f}  |err| {p['abs_error']:.4f}")
    if "holdout" in res:
        h = res["holdout"]
        print(f"held-out mean |err| {h['mean_abs_error']:.4f} (max {h['max_abs_error']:.4f}); "
              f"baseline (the lowest-loss fitted trial's value {h['baseline']['value']:.4f}) "
              f"|err| {h['baseline']['mean_abs_error']:.4f}"
              + (f"; two-step (N, D) -> loss -> metric mean |err| {h['two_step_mean_abs_error']:.4f}"
                 if "two_step_mean_abs_error" in h else ""))
    if "at" in res:
        a = res["at"]
        print(f"at N={a['N']:.3g}, D={a['D']:.3g}: loss {a['loss']:.4f} -> {res['metric']} {a['metric']:.4f}")
    if "at_flops" in res:
        a = res["at_flops"]
        print(f"at C={a['C']:.3g} (compute-optimal N={a['N']:.3g}, D={a['D']:.3g}): loss {a['loss']:.4f} "
              f"-> {res['metric']} {a['metric']:.4f}")
    print(f"plot: {res['plot']}")
    return 0


@_handles_input_errors
def _fit_moe(args) -> int:
    """Clark et al.'s routed form on experiments/moe.py results (analysis/fits/moe.py)."""
    from analysis.fits.moe import experts_vs_dense, fit_routed, moe_table
    from analysis.load import load_results
    from analysis.plots.moe import plot_moe

    table = moe_table(load_results(args.data), args.loss_col)
    res = {"method": "moe", **fit_routed(table["N"], table["E"], table["loss"]),
           "points": table.to_dict(orient="records")}
    versus = experts_vs_dense(table)
    res["experts_vs_dense"] = versus.to_dict(orient="records")
    if args.plot:
        res["plots"] = plot_moe(table, res, args.plot)
    if args.json:
        print(json.dumps(res))
        return 0
    for k in "abcd":
        lo, hi = res.get(f"{k}_ci", [float("nan")] * 2)
        print(f"{k}: {res[k]:.4g}  95% CI [{lo:.4g}, {hi:.4g}]")
    print(f"rmse_log: {res['rmse_log']:.4g}  ({res['n_points']} points, {res['dof']} dof)")
    print(f"form: {res['form']}")
    if len(versus):
        print(versus.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for w in res["warnings"]:
        print(w)
    for p in res.get("plots", []):
        print(f"plot: {p}")
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
    kinds = fit.add_subparsers(dest="fit_kind", metavar="{chinchilla,kaplan,isoflop,envelope,downstream,moe}", required=True)

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

    p = kinds.add_parser("moe", help="Clark 2022: log L = a log N + b log E + c log N log E + d")
    p.add_argument("data", help="sweep directory or results file of experiments/moe.py")
    p.add_argument("--loss-col", default="val_loss")
    p.add_argument("--plot", default=None, metavar="DIR", help="write moe.png/.pdf into DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p.set_defaults(func=_fit_moe)

    p = kinds.add_parser("envelope", help="Approach 1: min loss per FLOP bin (end-of-schedule points)")
    p.add_argument("data", help="sweep directory (reads results; trials/*/metrics.jsonl with --points curves)")
    p.add_argument("--points", choices=("final", "curves"), default="final",
                   help="final: each trial's end-of-schedule validation loss, seeds averaged "
                        "(default; annealed points only); curves: every logged training step, as "
                        "Hoffmann et al. did with many cosine lengths")
    p.add_argument("--n-col", default="params_non_embedding")
    p.add_argument("--bins", type=int, default=100, help="log-spaced FLOP bins (default: %(default)s)")
    p.add_argument("--bootstrap", type=int, default=_DEFAULT_BOOT, metavar="N",
                   help="bootstrap refits: 0 or >= 20 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p.set_defaults(func=_fit_envelope)

    p = kinds.add_parser("downstream", help="a task metric vs loss: sigmoid/exponential, emergence "
                         "threshold, held-out largest model, (N, D) -> loss -> metric")
    p.add_argument("data", help="sweep directory, .parquet or .csv results table")
    p.add_argument("--metric", required=True, help="metric column, e.g. eval/addition/direct/exact_match@k4")
    p.add_argument("--form", choices=["sigmoid", "exponential"], default="sigmoid")
    p.add_argument("--chance", type=float, default=None,
                   help="the metric at chance (fixes the lower asymptote; default: the task's, from "
                        "eval.jsonl, for an exact-match column of a sweep directory; else free)")
    p.add_argument("--loss-col", default=None, help="loss column (default: val_loss if present, else loss)")
    p.add_argument("--n-col", default=None, help="parameter-count column (default: params_non_embedding)")
    p.add_argument("--d-col", default="tokens", help="token column (default: %(default)s)")
    p.add_argument("--c-col", default=None, help="FLOP column (default: flops when present)")
    p.add_argument("--holdout", default=None, metavar="SPEC",
                   help="'largest' (every trial of the largest model) or a loss-fit SPEC (top-k:K, 'flops>=X')")
    p.add_argument("--at", default=None, metavar="N,D", help="predict the metric at N parameters, D tokens")
    p.add_argument("--at-flops", type=float, default=None, metavar="C",
                   help="predict the metric at the compute-optimal (N, D) of C FLOPs")
    p.add_argument("--loss-fit", default=None, metavar="JSON",
                   help="(N, D) -> loss law for --at/--at-flops (default: a Chinchilla fit of DATA)")
    p.add_argument("--bootstrap", type=int, default=_DEFAULT_BOOT, metavar="N",
                   help="bootstrap refits: 0 or >= 20 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p.add_argument("--plot-dir", default=None, help="where downstream.png goes (default: DATA/plots)")
    p.set_defaults(func=_fit_downstream)

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
