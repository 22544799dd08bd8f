"""Scaling curves: time and peak extra memory of fit, score and the pairwise metrics against N, D and K.

Each point is one call on fresh float32 data (a 10-mode Gaussian mixture, made with torch so that a million rows
take seconds), timed once after a warm-up call of every operation on small data. The work of each call is counted
in FLOP:

* fit: ``fastndb.kmeans`` with ``max_iter=5, tol=0`` (seeding plus exactly 6 assignment passes, so that every
  size does the same number of iterations): ``6 * 2 N D K`` plus the seeding's ``K * init_size * (2 + ln K) * 2 D``;
* score: ``NDB.score`` of N samples against K bins fitted once per (D, K): ``2 N D K``;
* birthday: the closest 20 pairs among N samples: ``N^2 D`` (the ``N (N - 1) / 2`` pairs, 2 D each);
* coverage: ``fastndb.prdc`` of N real against N fake, k = 5, without intervals (the engine; the split-half
  intervals cost about 6.7 times as much): ``3 * 2 D N^2`` (real-real, fake-fake, real-fake);
* modes: the exact RKE count of N samples (``rke_count``, a fixed bandwidth): ``N^2 D`` (the upper triangle);
* memorization: ``fastndb.memorization`` of N training, N generated and N / 2 test samples: ``2.5 * 2 D N^2`` (three
  2-NN searches; C_T's few re-searches within cells and its k-means not counted).

The "linear-cost line" of an operation is ``time = c * FLOP`` with one constant ``c`` per operation, fitted
(geometric mean of time / FLOP) through its points of all three sweeps: where a point sits above its line the cost
grew faster than the work. Peak memory is the growth of the C heap in use during the call (glibc's ``mallinfo2``,
sampled every 2 ms; a lower bound of the peak), next to the input's own size.
Results: ``benchmarks/results/scaling_cpu.{json,txt,png}``.

    python benchmarks/scaling.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from pathlib import Path

import torch
from _common import cpu_name, gemm_rate, peak_memory_during

import fastndb

RESULTS = Path(__file__).parent / "results"
OPS = ("fit", "score", "birthday", "coverage", "modes", "memorization")
PAIRWISE = ("birthday", "coverage", "modes", "memorization")


def mixture(n: int, d: int, seed: int) -> torch.Tensor:
    """``(n, d)`` float32: 10 unit-variance Gaussians with means 2 apart per coordinate scale."""
    generator = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(10, d, generator=torch.Generator().manual_seed(1234))
    labels = torch.randint(10, (n,), generator=generator)
    return means[labels].add_(torch.randn(n, d, generator=generator))


def flops(op: str, n: int, d: int, k: int) -> float:
    if op == "fit":
        init = min(n, max(20 * k, 4096))
        return 6 * 2 * n * d * k + k * init * (2 + math.log(k)) * 2 * d
    if op == "score":
        return 2 * n * d * k
    if op in ("birthday", "modes"):
        return n * n * d
    if op == "memorization":
        return 2.5 * 2 * d * n * n
    return 3 * 2 * d * n * n


def measure(op: str, n: int, d: int, k: int, fitted: dict) -> dict:
    x = mixture(n, d, seed=n + d)
    if op == "fit":
        call = lambda: fastndb.kmeans(x, k, seed=0, max_iter=5, tol=0.0, progress=False)  # noqa: E731
    elif op == "score":
        key = (d, k)
        if key not in fitted:
            fitted.clear()  # one fitted NDB at a time
            fitted[key] = fastndb.NDB(k, seed=0, progress=False).fit(mixture(max(20_000, 40 * k), d, seed=7))
        ndb = fitted[key]
        call = lambda: ndb.score(x)  # noqa: E731
    elif op == "birthday":
        call = lambda: fastndb.birthday(x, num_pairs=20, progress=False)  # noqa: E731
    elif op == "modes":
        from fastndb._core.modes import rke_count

        call = lambda: rke_count(x, 2.0 * math.sqrt(d))  # noqa: E731
    elif op == "memorization":
        y, z = mixture(n, d, seed=n + d + 1), mixture(n // 2, d, seed=n + d + 2)
        call = lambda: fastndb.memorization(x, y, z, progress=False)  # noqa: E731
    else:
        y = mixture(n, d, seed=n + d + 1)
        call = lambda: fastndb.prdc(x, y, nearest_k=5, progress=False, subsets=0)  # noqa: E731
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=5 by design
        _, extra = peak_memory_during(call)
    seconds = time.perf_counter() - start
    return {"op": op, "n": n, "d": d, "k": k, "seconds": seconds, "peak_extra_bytes": extra,
            "input_bytes": n * d * 4 * {"coverage": 2, "memorization": 2.5}.get(op, 1), "flops": flops(op, n, d, k)}


def sweeps(quick: bool) -> list[tuple[str, str, int, int, int]]:
    """``(sweep, op, n, d, k)`` for every point."""
    points = []
    big = [10_000, 30_000, 100_000] if quick else [10_000, 30_000, 100_000, 300_000, 1_000_000]
    pairs = [2_000, 4_000, 8_000] if quick else [2_000, 4_000, 8_000, 16_000, 32_000]
    for n in big:
        points += [("N", "fit", n, 784, 100), ("N", "score", n, 784, 100)]
    for n in pairs:
        points += [("N", op, n, 784, 100) for op in PAIRWISE]
    dims = [64, 256, 1024, 3072] if quick else [64, 256, 1024, 3072, 12_288]
    for d in dims:
        points += [("D", "fit", 20_000, d, 100), ("D", "score", 20_000, d, 100)]
        points += [("D", op, 5_000, d, 100) for op in PAIRWISE]
    ks = [10, 30, 100, 300] if quick else [10, 30, 100, 300, 1000]
    for k in ks:
        points += [("K", "fit", 50_000, 784, k), ("K", "score", 50_000, 784, k)]
    return points


def plot(rows: list[dict], lines: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(OPS, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"),
                       strict=True))
    fig, axes = plt.subplots(2, 3, figsize=(14, 8.5))
    for col, (sweep, axis_name) in enumerate((("N", "n"), ("D", "d"), ("K", "k"))):
        for op in OPS:
            points = sorted((r for r in rows if r["sweep"] == sweep and r["op"] == op), key=lambda r: r[axis_name])
            if not points:
                continue
            xs = [r[axis_name] for r in points]
            axes[0, col].loglog(xs, [r["seconds"] for r in points], "o", color=colours[op], label=op)
            axes[0, col].loglog(xs, [lines[op] * r["flops"] for r in points], "-", color=colours[op], alpha=0.5)
            axes[1, col].loglog(xs, [max(r["peak_extra_bytes"], 2**20) / 2**20 for r in points], "o-",
                                color=colours[op], label=f"{op}: extra")
            axes[1, col].loglog(xs, [r["input_bytes"] / 2**20 for r in points], ":", color=colours[op], alpha=0.6)
        fixed = {"N": "D = 784, K = 100 (pairwise metrics: N samples a side)",
                 "D": "N = 20,000 (pairwise metrics: 5,000), K = 100", "K": "N = 50,000, D = 784"}[sweep]
        axes[0, col].set_title(f"time against {sweep}\n{fixed}", fontsize=9)
        axes[1, col].set_title(f"peak extra memory against {sweep} (dotted: the input)", fontsize=9)
        axes[1, col].set_xlabel(sweep)
        axes[0, col].set_ylabel("seconds")
        axes[1, col].set_ylabel("MiB")
        axes[0, col].legend(fontsize=8)
        axes[0, col].grid(True, which="both", alpha=0.2)
        axes[1, col].grid(True, which="both", alpha=0.2)
    fig.suptitle("fastndb scaling on the CPU; lines: time proportional to the FLOP count, one constant per operation",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sweeps (about two minutes)")
    parser.add_argument("--out", default=str(RESULTS / "scaling_cpu"), help="path stem of the .json/.txt/.png")
    args = parser.parse_args()
    rate = gemm_rate("cpu")
    warm = mixture(2000, 64, 0)  # warm-up of every operation (thread pools, first-call dispatch)
    fastndb.kmeans(warm, 8, progress=False)
    fastndb.birthday(warm, num_pairs=20, progress=False)
    fastndb.prdc(warm[:1000], warm[1000:], nearest_k=5, progress=False)
    fastndb.memorization(warm[:1000], warm[1000:1500], warm[1500:], progress=False)
    from fastndb._core.modes import rke_count

    rke_count(warm, 10.0)
    fitted: dict = {}
    rows = []
    for sweep, op, n, d, k in sweeps(args.quick):
        row = {"sweep": sweep, **measure(op, n, d, k, fitted)}
        rows.append(row)
        print(f"{sweep} {op:<12} N={n:>9,} D={d:>6,} K={k:>5}: {row['seconds']:8.3f} s, "
              f"{row['flops'] / row['seconds'] / 1e9:6.1f} GFLOP/s, peak +{row['peak_extra_bytes'] / 2**20:8.1f} MiB",
              flush=True)
    lines = {op: math.exp(sum(math.log(r["seconds"] / r["flops"]) for r in rows if r["op"] == op)
                          / sum(1 for r in rows if r["op"] == op)) for op in OPS}
    machine = (f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__} "
               f"({torch.get_num_threads()} threads)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = [f"machine: {machine}; square-GEMM rate {rate / 1e9:.0f} GFLOP/s measured",
            "fitted linear-cost lines (effective GFLOP/s over all points): "
            + ", ".join(f"{op} {1 / lines[op] / 1e9:.0f}" for op in OPS), "",
            f"{'sweep':<5} {'op':<12} {'N':>9} {'D':>6} {'K':>5} {'time (s)':>9} {'GFLOP/s':>8} {'/ line':>7} "
            f"{'of GEMM':>8} {'peak +MiB':>10} {'input MiB':>10}"]
    for r in rows:
        text.append(f"{r['sweep']:<5} {r['op']:<12} {r['n']:>9} {r['d']:>6} {r['k']:>5} {r['seconds']:>9.3f} "
                    f"{r['flops'] / r['seconds'] / 1e9:>8.1f} {r['seconds'] / (lines[r['op']] * r['flops']):>7.2f} "
                    f"{r['flops'] / rate / r['seconds']:>8.2f} {r['peak_extra_bytes'] / 2**20:>10.1f} "
                    f"{r['input_bytes'] / 2**20:>10.1f}")
    out.with_suffix(".txt").write_text("\n".join(text) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "gemm_flops": rate, "rows": rows,
                                                    "line_seconds_per_flop": lines}, indent=2))
    plot(rows, lines, out.with_suffix(".png"))
    print("\n".join(text))


if __name__ == "__main__":
    main()
