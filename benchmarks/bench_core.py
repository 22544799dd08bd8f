"""Core benchmark: k-means fit and scoring against scikit-learn and the original NDB loop, side by side.

Every baseline is measured in the same run on the same data. The table gives each figure, the baseline, the
ratio (baseline time / our time: > 1 means faster), and the fraction of the hardware floor: the floor is
``flops / measured GEMM rate`` (and on CUDA also ``bytes / measured copy bandwidth``), so 1.0 means at the roof.

    python benchmarks/bench_core.py                 # CPU, 50k x 784 real, K=100, 20k fake
    python benchmarks/bench_core.py --quick         # smaller sizes, a quick check
    python benchmarks/bench_core.py --device cuda   # our side on the GPU, baselines on the CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from _common import copy_bandwidth, cpu_name, gemm_rate, timed

import fastndb
from fastndb._core.backends import FaissBackend, TorchBackend
from fastndb._core.optional import is_available
from fastndb.demo.synthetic import gaussian_mixture

ROW_FIELDS = ("figure", "ours_s", "baseline_s", "baseline", "fraction_of_floor")


def original_assignment(samples: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """The original NDB's assignment: one full pass over the samples per bin (numpy)."""
    distances = np.zeros((len(samples), len(centers)), dtype=samples.dtype)
    for i in range(len(centers)):
        distances[:, i] = np.linalg.norm(samples - centers[i], ord=2, axis=1)
    return distances.argmin(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="10k x 784 real, 5k fake")
    parser.add_argument("--num-real", type=int, default=50_000)
    parser.add_argument("--num-fake", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--num-bins", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.num_real, args.num_fake, args.repeats = 10_000, 5_000, 1
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")

    from sklearn.cluster import KMeans, kmeans_plusplus
    from threadpoolctl import threadpool_info

    device, k = args.device, args.num_bins
    real_np = gaussian_mixture(args.num_real, args.dim, num_modes=10, spread=2.0, seed=0)
    fake_np = gaussian_mixture(args.num_fake, args.dim, num_modes=10, spread=2.0, seed=1)
    real, fake = torch.from_numpy(real_np).to(device), torch.from_numpy(fake_np).to(device)

    peak = gemm_rate(device)
    bandwidth = copy_bandwidth(device)
    fit_flops_per_iter = 2 * args.num_real * args.dim * k
    score_flops = 2 * args.num_fake * args.dim * k
    rows = []

    # --- k-means fit
    ours_fit_s, ours = timed(lambda: fastndb.kmeans(real, k, seed=0, progress=False), device, args.repeats)
    sk_fit_s, sk = timed(lambda: KMeans(k, n_init=1, random_state=0).fit(real_np), "cpu", args.repeats)
    sk_init_s, _ = timed(lambda: kmeans_plusplus(real_np, k, random_state=0), "cpu", 1)
    ours_inertia = float(torch.cdist(real.double(), ours.centroids.double()).square().min(1).values.sum())
    inertia_ratio = ours_inertia / float(sk.inertia_)
    fit_floor = fit_flops_per_iter * (ours.n_iter + 1) / peak
    rows.append(("k-means fit (time)", ours_fit_s, sk_fit_s, "sklearn KMeans(n_init=1)", fit_floor / ours_fit_s))
    # --- scoring fake against fitted bins
    ndb = fastndb.NDB(k, seed=0, progress=False).fit(real)
    centers_np = ndb.centroids.cpu().numpy()
    sk.cluster_centers_ = centers_np.astype(sk.cluster_centers_.dtype)  # same bins for a like-for-like predict
    ours_score_s, _ = timed(lambda: ndb.count(fake), device, args.repeats)
    predict_s, _ = timed(lambda: sk.predict(fake_np), "cpu", args.repeats)
    original_s, original_labels = timed(lambda: original_assignment(fake_np, centers_np), "cpu", 1)
    same = float((ndb.assign(fake).cpu().numpy() == original_labels).mean())
    score_floor = max(score_flops / peak, args.num_fake * args.dim * 4 / bandwidth)
    rows.append(("score fake vs bins", ours_score_s, predict_s, "sklearn KMeans.predict", score_floor / ours_score_s))
    rows.append(("score fake vs bins", ours_score_s, original_s, "original per-bin loop", score_floor / ours_score_s))
    full_s, _ = timed(lambda: ndb.score(fake), device, args.repeats)
    rows.append(("NDB.score (assign + tests)", full_s, None, "", score_floor / full_s))
    # --- the assignment engines on the same centroids (why backend="auto" is torch)
    if device == "cpu" and is_available("faiss"):
        centroids = ndb.centroids
        torch_s, _ = timed(lambda: TorchBackend().nearest(real, centroids), device, args.repeats)
        faiss_s, _ = timed(lambda: FaissBackend().nearest(real, centroids), device, args.repeats)
        fraction = fit_flops_per_iter / peak / torch_s
        rows.append(("nearest centroid, real set", torch_s, faiss_s, "FAISS IndexFlatL2 backend", fraction))

    blas = sorted({f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info()})
    machine = (f"{cpu_name()}, {os.cpu_count()} logical cores, torch "
               f"{torch.__version__} ({torch.get_num_threads()} threads), sklearn BLAS/OpenMP {', '.join(blas)}")
    if device == "cuda":
        machine += f", GPU {torch.cuda.get_device_name()}"
    print(f"machine: {machine}")
    print(f"data: 10-mode Gaussian mixture, real {args.num_real} x {args.dim}, fake {args.num_fake} x {args.dim}, "
          f"K={k}, device={device}")
    print(f"measured: GEMM {peak / 1e9:.0f} GFLOP/s, copy bandwidth {bandwidth / 1e9:.1f} GB/s")
    print(f"k-means: {ours.n_iter} iterations, inertia ratio ours/sklearn = {inertia_ratio:.4f} "
          f"(sklearn: {sk.n_iter_} iterations, its k-means++ init alone {sk_init_s:.2f} s)")
    print(f"assignment agreement with the original loop: {same:.4%} (differences are float near-ties)\n")
    print(f"{'figure':<28} {'ours (s)':>9} {'baseline (s)':>13} {'ratio':>7}  {'baseline':<26} {'of floor':>8}")
    for name, ours_s, base_s, base_name, fraction in rows:
        base = f"{base_s:13.4f}" if base_s is not None else f"{'':>13}"
        ratio = f"{base_s / ours_s:6.1f}x" if base_s is not None else f"{'':>7}"
        print(f"{name:<28} {ours_s:9.4f} {base} {ratio}  {base_name:<26} {fraction:8.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "args": vars(args), "gemm_flops": peak, "bandwidth": bandwidth,
                       "inertia_ratio": inertia_ratio, "kmeans_iters": ours.n_iter, "sklearn_iters": int(sk.n_iter_),
                       "sklearn_init_s": sk_init_s,
                       "rows": [dict(zip(ROW_FIELDS, row, strict=True)) for row in rows]}, fh, indent=2)


if __name__ == "__main__":
    main()
