"""Time the Approach-3 fit on Epoch's Chinchilla data (240 points).

    python -m scaling.bench.fit [--bootstrap 1000] [--scipy-starts 100]

Reports: the vectorised 4,500-start fit, the same with bootstrap refits, and a
plain scipy L-BFGS-B loop over a random subset of the grid, extrapolated to
4,500 starts, with the speed-up ratio.
"""

import argparse
import time

import numpy as np

from analysis.fits.chinchilla import _objective_np, fit_parametric, hoffmann_grid
from analysis.reference import epoch_chinchilla_data
from scipy.optimize import minimize


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--scipy-starts", type=int, default=100)
    args = ap.parse_args()
    df = epoch_chinchilla_data()
    N, D, L = df["N"].to_numpy(), df["D"].to_numpy(), df["loss"].to_numpy()

    t = time.perf_counter()
    f = fit_parametric(N, D, L)
    t_cold = time.perf_counter() - t
    t = time.perf_counter()
    f = fit_parametric(N, D, L)
    t_warm = time.perf_counter() - t
    t = time.perf_counter()
    fb = fit_parametric(N, D, L, bootstrap=args.bootstrap)
    t_boot = time.perf_counter() - t
    print(f"fit (4,500 starts), first call incl. JIT compile: {t_cold:6.2f} s")
    print(f"fit (4,500 starts), warm:                         {t_warm:6.2f} s")
    print(f"fit + {args.bootstrap} bootstrap refits, warm fit:         {t_boot:6.2f} s")
    print(f"  E={f['E']:.4f} A={f['A']:.1f} B={f['B']:.0f} alpha={f['alpha']:.4f} beta={f['beta']:.4f} "
          f"objective={f['loss']:.9f}")
    print("  CIs:", {k: [round(v[0], 4), round(v[1], 4)] for k, v in fb["ci"].items() if k in ("E", "alpha", "beta")})

    # baseline: what a plain loop costs (Hoffmann/Epoch style, default tolerances)
    rng = np.random.default_rng(0)
    starts = hoffmann_grid()[rng.choice(4500, args.scipy_starts, replace=False)]
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    t = time.perf_counter()
    best = np.inf
    for s in starts:
        r = minimize(lambda th: _objective_np(th, lN, lD, lL, 1e-3)[0], s, method="L-BFGS-B")
        best = min(best, r.fun)
    t_scipy = time.perf_counter() - t
    per = t_scipy / len(starts)
    print(f"scipy L-BFGS-B loop (numerical gradient): {len(starts)} starts in {t_scipy:.2f} s "
          f"-> {per * 4500:.0f} s for 4,500 (best of subset {best:.9f})")
    print(f"speed-up of the vectorised 4,500-start fit vs the scipy loop: {per * 4500 / t_warm:.0f}x")


if __name__ == "__main__":
    main()
