"""Predicted vs observed loss of a held-out validation (:mod:`analysis.holdout`)."""

from __future__ import annotations

import numpy as np

from analysis.plots.sweep import paper_style, plt, save_figure

__all__ = ["plot_holdout"]


def plot_holdout(holdout: dict, outdir, kind: str, *, formats=("png",)) -> list[str]:
    """``outdir/holdout_<kind>.png``: predicted vs observed loss, fitted points grey, held-out red.

    IsoFLOP holdouts get a second panel with N_opt predicted vs measured.
    """
    iso = "N_opt_observed" in (holdout["points"][0] if holdout["points"] else {})
    with paper_style():
        fig, axes = plt.subplots(1, 2 if iso else 1, figsize=(7.0 if iso else 3.5, 3.0), squeeze=False)
        ax = axes[0, 0]
        ins = holdout.get("in_sample") or {}
        obs = np.array([p["observed"] for p in holdout["points"]])
        pred = np.array([p["predicted"] for p in holdout["points"]])
        if ins.get("observed"):
            ax.plot(ins["observed"], ins["predicted"], "o", color="0.6", ms=2.5, label=f"fitted ({holdout['n_fit']})")
        ax.plot(obs, pred, "o", color="C3", ms=4, label=f"held out ({holdout['n_heldout']})")
        _identity(ax, np.concatenate([obs, pred, ins.get("observed", []), ins.get("predicted", [])]))
        what = "optimal loss L_opt" if iso else "loss"
        ax.set(xlabel=f"observed {what}", ylabel=f"predicted {what}",
               title=f"{kind} --holdout {holdout['spec']}: median |rel. err| "
                     f"{100 * holdout['median_abs_rel_error']:.2g}%")
        ax.legend()
        if iso:
            ax = axes[0, 1]
            n_obs = np.array([p["N_opt_observed"] for p in holdout["points"]])
            n_pred = np.array([p["N_opt_predicted"] for p in holdout["points"]])
            ax.plot(n_obs, n_pred, "o", color="C3", ms=4)
            _identity(ax, np.concatenate([n_obs, n_pred]), log=True)
            ax.set(xscale="log", yscale="log", xlabel="measured N_opt", ylabel="predicted N_opt",
                   title=f"median |rel. err| {100 * holdout['median_N_opt_abs_rel_error']:.2g}%")
        return save_figure(fig, outdir, f"holdout_{kind}", formats=formats)


def _identity(ax, values, log: bool = False) -> None:
    """The y = x line over the data's range (5% margin, in log space when ``log``)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)] if log else v[np.isfinite(v)]
    lo, hi = (np.log(v.min()), np.log(v.max())) if log else (v.min(), v.max())
    pad = 0.05 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
    ends = np.array([lo - pad, hi + pad])
    ends = np.exp(ends) if log else ends
    ax.plot(ends, ends, "-", color="k", lw=0.6, label="y = x")
