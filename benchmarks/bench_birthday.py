"""Birthday search benchmark: the closest pairs among s samples against scikit-learn's brute-force top-2 search.

Side by side in one run on the same data: ``fastndb.birthday`` (tiled upper-triangle block GEMM + running
top-k, exact recompute of the candidates) against ``NearestNeighbors(n_neighbors=2, algorithm="brute")``
``.fit(X).kneighbors(X)`` (every sample's nearest other sample, from which the closest pair follows), with the
fraction of the GEMM floor: our search needs ``s (s - 1) / 2 * 2 D`` flops, divided by the GEMM rate measured in
the same run. Also the peak memory of one search (fresh process, ``tests/birthday_memory.py``).

    python benchmarks/bench_birthday.py                    # CPU: s = 20,000 x 784; memory at 30,000 x 256
    python benchmarks/bench_birthday.py --quick
    python benchmarks/bench_birthday.py --device cuda      # also s = 100,000 on the GPU (no sklearn there)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from _common import cpu_name, gemm_rate, timed

import fastndb
from fastndb.demo.synthetic import gaussian_mixture

ROOT = Path(__file__).resolve().parents[1]


def sklearn_closest_pair(x: np.ndarray) -> tuple[float, float]:
    """Seconds of scikit-learn's brute top-2 search, and the closest distance it implies."""
    from sklearn.neighbors import NearestNeighbors

    def run():
        return NearestNeighbors(n_neighbors=2, algorithm="brute").fit(x).kneighbors(x)

    seconds, (distances, _) = timed(run, "cpu", repeats=1)
    return seconds, float(distances[:, 1].min())


def faiss_closest_pair(x: np.ndarray) -> tuple[float, float] | None:
    """Seconds of FAISS's exact flat top-2 self-search (``IndexFlatL2``) and the closest distance it implies, or
    ``None`` without FAISS. It searches all ``s^2`` pairs where ours computes the upper triangle."""
    try:
        import faiss
    except ImportError:
        return None

    def run():
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(x)
        return index.search(x, 2)

    seconds, (sq_distances, _) = timed(run, "cpu", repeats=3)
    return seconds, float(np.sqrt(max(float(sq_distances[:, 1].min()), 0.0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="s = 5,000")
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--gpu-samples", type=int, default=100_000)
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.gpu_samples = 5_000, 20_000
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")

    x_np = gaussian_mixture(args.samples, args.dim, seed=0)
    x_np[123] = x_np[4567 % args.samples]  # one planted duplicate: both searches must find distance 0
    rate = gemm_rate("cpu")
    flops = args.samples * (args.samples - 1) / 2 * 2 * args.dim
    ours_s, result = timed(lambda: fastndb.birthday(torch.from_numpy(x_np), num_pairs=20), "cpu", repeats=3)
    sk_s, sk_closest = sklearn_closest_pair(x_np)
    rows = [{
        "figure": f"closest 20 pairs, s={args.samples} x {args.dim}", "device": "cpu", "ours_s": ours_s,
        "baseline_s": sk_s, "baseline": "sklearn NearestNeighbors(brute) top-2", "ratio": sk_s / ours_s,
        "fraction_of_gemm_floor": flops / rate / ours_s, "closest": float(result.distances[0]),
        "baseline_closest": sk_closest,
    }]
    flat = faiss_closest_pair(x_np)
    if flat is not None:
        rows.append({"figure": f"closest 20 pairs, s={args.samples} x {args.dim}", "device": "cpu", "ours_s": ours_s,
                     "baseline_s": flat[0], "baseline": "FAISS IndexFlatL2 top-2", "ratio": flat[0] / ours_s,
                     "fraction_of_gemm_floor": flops / rate / ours_s, "closest": float(result.distances[0]),
                     "baseline_closest": flat[1]})

    if args.device == "cuda":
        gpu_rate = gemm_rate("cuda")
        x_gpu = torch.from_numpy(gaussian_mixture(args.gpu_samples, args.dim, seed=1)).cuda()
        gpu_flops = args.gpu_samples * (args.gpu_samples - 1) / 2 * 2 * args.dim
        gpu_s, _ = timed(lambda: fastndb.birthday(x_gpu, num_pairs=20), "cuda", repeats=3)
        rows.append({"figure": f"closest 20 pairs, s={args.gpu_samples} x {args.dim}", "device": "cuda",
                     "ours_s": gpu_s, "fraction_of_gemm_floor": gpu_flops / gpu_rate / gpu_s})

    memory = json.loads(subprocess.run(
        [sys.executable, str(ROOT / "tests" / "birthday_memory.py"), "30000", "256"], capture_output=True,
        text=True, check=True).stdout.strip().splitlines()[-1])

    print(f"machine: {cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)"
          + (f", GPU {torch.cuda.get_device_name()}" if args.device == "cuda" else ""))
    print(f"measured: CPU GEMM {rate / 1e9:.0f} GFLOP/s; data: 10-mode Gaussian mixture, one planted duplicate")
    print()
    print(f"{'figure':42s} {'device':6s} {'ours (s)':>9s} {'baseline (s)':>12s} {'ratio':>6s}  {'baseline':<38s} "
          f"{'of GEMM floor':>13s}")
    for row in rows:
        baseline = f"{row['baseline_s']:12.3f} {row['ratio']:5.1f}x" if "baseline_s" in row else " " * 19
        print(f"{row['figure']:42s} {row['device']:6s} {row['ours_s']:9.3f} {baseline}  "
              f"{row.get('baseline', ''):<38s} {row['fraction_of_gemm_floor']:13.2f}")
    print()
    print(f"closest distance: ours {rows[0]['closest']:.6g}, " + ", ".join(
        f"{row['baseline'].split()[0]} {row['baseline_closest']:.6g}" for row in rows if "baseline_closest" in row)
        + " (exact duplicate planted: 0 expected)")
    print(f"peak memory of one search at s=30,000 x 256: +{memory['peak_increase_bytes'] / 2**20:.0f} MiB over the "
          f"data, against {memory['s_squared_float32_bytes'] / 2**30:.2f} GiB for the s x s float32 matrix "
          f"({memory['peak_increase_bytes'] / memory['s_squared_float32_bytes']:.1%}); {memory['seconds']:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "memory": memory}, indent=2))


if __name__ == "__main__":
    main()
