"""Figures for fitted scaling laws: IsoFLOP profiles, N_opt/D_opt vs compute, loss contours, residuals.

All functions write ``outdir/<stem>.{png,pdf}`` and return the paths (analysis/plots/style.py).
Compute follows each fit's own convention (its ``fpt`` law, analysis/convention.py; published
fits: C = 6ND).
"""

from __future__ import annotations

import numpy as np

from analysis.convention import SIX_N, flops_per_token, tokens_for
from analysis.fits.chinchilla import compute_optimal, predict_loss
from analysis.fits.isoflop import budget_groups
from analysis.plots.style import paper_style, plt, save_figure
from analysis.reference import PF_DAY, hoffmann_fit, published_constants

__all__ = ["plot_isoflop", "plot_allocation", "plot_contours", "plot_residuals", "allocation_lines"]


def plot_isoflop(iso: dict, N, C, L, outdir, *, stem="isoflop") -> list[str]:
    """Loss vs N per FLOP budget with the fitted parabolas (in ln N) and their minima."""
    N, C, L = (np.asarray(v, float) for v in (N, C, L))
    b = budget_groups(C)
    budgets = np.unique(b)
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(budgets)))
    opt = {o["C"]: o for o in iso["optima"]}
    with paper_style():
        fig, ax = plt.subplots(figsize=(3.5, 2.6))
        for c, col in zip(budgets, colors):
            m = b == c
            ax.plot(N[m], L[m], "o", color=col, ms=2.5, label=f"C={c:.2g}")
            if c in opt:
                o = opt[c]
                # draw the parabola only over the window it was fitted on (0.75 decades)
                xs, w = np.log(o["N_opt"]), np.log(10) * 0.75
                x = np.linspace(max(xs - w, np.log(N[m].min())), min(xs + w, np.log(N[m].max())), 100)
                ax.plot(np.exp(x), o["c0"] + o["c1"] * x + o["c2"] * x * x, "-", color=col, lw=0.8)
                ax.plot(o["N_opt"], o["loss_opt"], "*", color=col, ms=7, mec="k", mew=0.4)
        ax.set(xscale="log", xlabel="model size N (parameters)", ylabel="loss (nats/token)",
               title=f"IsoFLOP profiles (stars: optima, a = {iso['a']:.3f})")
        ax.legend(ncol=2, title="budget (FLOPs)", title_fontsize=6)
        return save_figure(fig, outdir, stem)


def allocation_lines(C) -> dict:
    """Published N_opt(C) lines: Hoffmann Approach 3 (unrounded), Epoch's refit, Kaplan 2020.

    Kaplan's ``N_opt = 1.3e9 C_min^0.73`` (C in PF-days, non-embedding N) is a
    third-party transcription of their Table 6 (see published_constants.json).
    """
    C = np.asarray(C, float)
    e = published_constants()["besiroglu2024_epoch_replication"]["published_estimates_se"]
    epoch = {k: v[0] for k, v in e.items()}
    return {
        "Chinchilla (Hoffmann A3)": compute_optimal(hoffmann_fit(), C)[0],
        "Epoch refit (2024)": compute_optimal(epoch, C)[0],
        "Kaplan (2020)": 1.3e9 * (C / PF_DAY) ** 0.73,
    }


def _power(fit, C, which):
    if "k_N" in fit:  # Approach 1/2: N_opt = k_N C^a
        return fit["k_N"] * C ** fit["a"] if which == "N" else fit["k_D"] * C ** fit["b"]
    N, D = compute_optimal(fit, C)
    return N if which == "N" else D


def _band(fit, C, which):
    s = fit.get("samples")
    if not s:
        return None
    if "k_N" in s:
        k, e = (s["k_N"], s["a"]) if which == "N" else (s["k_D"], s["b"])
        curves = np.asarray(k)[:, None] * C[None, :] ** np.asarray(e)[:, None]
    else:
        fpt = fit.get("fpt") or SIX_N
        G, a = (np.asarray(s[x])[:, None] for x in ("G", "a"))
        N = G * (C / fpt["coef"]) ** a
        curves = N if which == "N" else tokens_for(fpt, N, C)
    return np.nanpercentile(curves, [2.5, 97.5], axis=0)


def plot_allocation(fits: dict, C_range, outdir, *, stem="allocation", published=True) -> list[str]:
    """N_opt(C) and D_opt(C) for each fit (name -> fit dict), 95% bands where the fit kept
    bootstrap ``samples``, plus published Chinchilla/Epoch/Kaplan lines."""
    C = np.geomspace(*C_range, 200)
    with paper_style():
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.6))
        colors = plt.cm.tab10(np.arange(10))
        for (name, fit), col in zip(fits.items(), colors):
            for ax, which in zip(axes, ("N", "D")):
                ax.plot(C, _power(fit, C, which), color=col, label=f"{name} (a={fit['a']:.2f})" if which == "N"
                        else f"{name} (b={fit['b']:.2f})")
                band = _band(fit, C, which)
                if band is not None:
                    ax.fill_between(C, band[0], band[1], color=col, alpha=0.2, lw=0)
        if published:
            styles = {"Chinchilla (Hoffmann A3)": "k--", "Epoch refit (2024)": "k-.", "Kaplan (2020)": "k:"}
            for name, n_opt in allocation_lines(C).items():
                axes[0].plot(C, n_opt, styles[name], lw=0.9, label=name)
                axes[1].plot(C, C / (6 * n_opt), styles[name], lw=0.9, label=name)
        for ax, what in zip(axes, ("$N_{opt}$ (parameters)", "$D_{opt}$ (tokens)")):
            ax.set(xscale="log", yscale="log", xlabel="training compute C (FLOPs)", ylabel=what)
            ax.legend()
        axes[0].set_title("Compute-optimal model size")
        axes[1].set_title("Compute-optimal data")
        fig.tight_layout()
        return save_figure(fig, outdir, stem)


def plot_contours(fit: dict, outdir, *, N=None, C=None, N_range=None, C_range=None, stem="contours") -> list[str]:
    """Hoffmann Fig. 4-style: contours of the fitted L(N, D = C/fpt(N)) over (C, N) with the
    efficient frontier N_opt(C); runs (``N``, ``C``) drawn on top when given."""
    if C_range is None:
        C_range = (np.min(C) / 3, np.max(C) * 30) if C is not None else (1e18, 1e24)
    if N_range is None:
        N_range = (np.min(N) / 3, np.max(N) * 10) if N is not None else (1e7, 1e11)
    cc, nn = np.meshgrid(np.geomspace(*C_range, 200), np.geomspace(*N_range, 200))
    loss = predict_loss(fit, nn, tokens_for(fit.get("fpt"), nn, cc))
    with paper_style():
        fig, ax = plt.subplots(figsize=(3.5, 2.8))
        levels = np.quantile(loss, np.linspace(0.02, 0.9, 12))
        cs = ax.contour(cc, nn, loss, levels=levels, cmap="viridis", linewidths=0.7)
        ax.clabel(cs, fmt="%.2f", fontsize=5)
        Cl = np.geomspace(*C_range, 100)
        ax.plot(Cl, compute_optimal(fit, Cl)[0], "r-", lw=1.3, label="efficient frontier")
        if N is not None and C is not None:
            ax.plot(C, N, "k.", ms=2, alpha=0.5, label="runs")
        ax.set(xscale="log", yscale="log", xlim=C_range, ylim=N_range, xlabel="training compute C (FLOPs)",
               ylabel="model size N (parameters)", title="IsoLoss contours of fitted $L(N, D)$")
        ax.legend(loc="upper left")
        return save_figure(fig, outdir, stem)


def plot_residuals(fit: dict, N, D, L, outdir, *, stem="residuals") -> list[str]:
    """Log-loss residuals ``log L - log L_fit`` against N and against D."""
    N, D, L = (np.asarray(v, float) for v in (N, D, L))
    r = np.log(L) - np.log(predict_loss(fit, N, D))
    with paper_style():
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.4), sharey=True)
        for ax, x, lab in zip(axes, (N, D), ("model size N (parameters)", "training tokens D")):
            sc = ax.scatter(x, r, c=np.log10(flops_per_token(fit.get("fpt"), N) * D), s=5, cmap="viridis")
            ax.axhline(0, color="k", lw=0.7)
            ax.set(xscale="log", xlabel=lab)
        axes[0].set_ylabel("residual  log L − log $\\hat L$")
        axes[0].set_title(f"RMS residual {np.sqrt(np.mean(r ** 2)):.4f}")
        fig.colorbar(sc, ax=axes, label="log$_{10}$ C (FLOPs)")
        return save_figure(fig, outdir, stem)
