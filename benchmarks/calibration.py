"""Calibration and power of the NDB test: per-bin false-positive rate under the null, holdout vs original.

Null: real and fake are independent draws from the same 10-mode Gaussian mixture. A calibrated test flags
about ``alpha * K`` bins; the original design (reference shares from the points the bins were fitted on) flags
far more in high dimension. Power: the fake set drops modes.

    python benchmarks/calibration.py            # 784 and 3072 dims, 20k real, 10k fake, K=100, 5 seeds
    python benchmarks/calibration.py --quick    # 2 seeds, 784 dims only
    python benchmarks/calibration.py --sweep    # null only, one seed, over mixture spreads and dimension caps
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import cpu_name

import fastndb
from fastndb.demo.synthetic import gaussian_mixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--num-real", type=int, default=20_000)
    parser.add_argument("--num-fake", type=int, default=10_000)
    parser.add_argument("--num-bins", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--spread", type=float, default=1.0, help="std of the mode means per coordinate")
    parser.add_argument("--sweep", action="store_true", help="null false alarms over spreads and dimension caps")
    args = parser.parse_args()
    if args.sweep:
        sweep(args)
        return
    dims = (784,) if args.quick else (784, 3072)
    seeds = range(2 if args.quick else 5)
    warnings.simplefilter("ignore", RuntimeWarning)

    print(f"machine: {cpu_name()}, numpy {np.__version__}, fastndb {fastndb.__version__}")
    print(f"10-mode Gaussian mixture (mode means N(0, {args.spread}^2 I), unit-variance modes), "
          f"{args.num_real} real, {args.num_fake} fake, K={args.num_bins}, alpha={args.alpha}, seeds {list(seeds)}")
    print(f"expected false positives under the null: alpha*K = {args.alpha * args.num_bins:.1f}\n")
    header = f"{'dim':>5} {'mode':<9} {'fake':<16} {'NDB per seed':<28} {'mean NDB/K':>10}"
    print(f"{header} {'p<0.05 overall':>14} {'bins <5 ref':>11} {'flagged/bins >=20 ref':>22} {'s/run':>6}")
    for dim in dims:
        for mode in ("holdout", "original"):
            for label, keep in (("same (null)", None), ("drops 1 of 10", 9), ("drops 5 of 10", 5)):
                ndbs, overall, start = [], 0, time.perf_counter()
                sparse_bins, flagged_reached, reached = 0, 0, 0
                for seed in seeds:
                    real = gaussian_mixture(args.num_real, dim, spread=args.spread, seed=100 + seed)
                    fake = gaussian_mixture(args.num_fake, dim, spread=args.spread, seed=200 + seed, keep_modes=keep)
                    result = fastndb.score(real, fake, num_bins=args.num_bins, alpha=args.alpha, mode=mode, seed=seed)
                    ndbs.append(result.ndb)
                    overall += result.p_value < 0.05
                    sparse_bins += int((result.real_counts < 5).sum())
                    well_filled = result.real_counts >= 20  # bins that fresh samples actually reach
                    flagged_reached += int((result.different & well_filled).sum())
                    reached += int(well_filled.sum())
                per_run = (time.perf_counter() - start) / len(seeds)
                print(f"{dim:>5} {mode:<9} {label:<16} {str(ndbs):<28} {np.mean(ndbs) / args.num_bins:>10.3f} "
                      f"{overall:>8}/{len(seeds):<5} {sparse_bins / len(seeds):>11.1f} "
                      f"{f'{flagged_reached}/{reached}':>22} {per_run:>6.1f}")
            fastndb.clear_cache()


def sweep(args: argparse.Namespace) -> None:
    """Null only: flagged bins per design over mixture geometries (seed 0)."""
    warnings.simplefilter("ignore", RuntimeWarning)
    print(f"machine: {cpu_name()}; null (fake drawn like real), {args.num_real} real, {args.num_fake} fake, "
          f"K={args.num_bins}, alpha={args.alpha}, seed 0; expected by chance {args.alpha * args.num_bins:.1f}\n")
    print(f"{'dim':>5} {'spread':>6} {'holdout':>8} {'original':>9} {'original, all dims':>19}")
    for dim in (784, 3072):
        for spread in (0.05, 0.2, 0.5, 1.0, 3.0):
            real = gaussian_mixture(args.num_real, dim, spread=spread, seed=100)
            fake = gaussian_mixture(args.num_fake, dim, spread=spread, seed=200)
            flagged = [
                fastndb.score(real, fake, num_bins=args.num_bins, alpha=args.alpha, mode=mode, max_dims=cap,
                              cache=False).ndb
                for mode, cap in (("holdout", None), ("original", None), ("original", dim))
            ]
            print(f"{dim:>5} {spread:>6} {flagged[0]:>8} {flagged[1]:>9} {flagged[2]:>19}")


if __name__ == "__main__":
    main()
