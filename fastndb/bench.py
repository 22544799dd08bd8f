"""``fastndb bench``: a quick benchmark shipped with the package, against the hardware floor measured in the same run.

Every figure is our time next to the floor of its work on this machine: ``flops / measured float32 GEMM rate`` (and,
where larger, ``bytes / measured copy bandwidth``), so "of floor" 1.0 means at the roof. Sizes are chosen so that the
default run takes about a minute on a 2-core CPU (``quick``: about 15 s). The full suites, with their baselines
(scikit-learn, FAISS, ``prdc``), stay in the source checkout's ``benchmarks/`` (``fastndb bench --full``).

    fastndb bench [--quick] [--device cuda] [--json]
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def sync(device: str) -> None:
    """Wait for queued GPU work so that wall times cover it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str = "cpu", repeats: int = 3) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls after one warm-up call, and the last result."""
    result = fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def gemm_rate(device: str) -> float:
    """Measured float32 GEMM rate, FLOP/s (a square matrix product, the best case of this machine)."""
    n = 4096 if device.startswith("cuda") else 2048
    a = torch.randn(n, n, device=device)
    seconds, _ = timed(lambda: a @ a, device, repeats=5)
    return 2 * n**3 / seconds


def copy_bandwidth(device: str) -> float:
    """Measured device memory bandwidth, bytes/s (read + write of a large copy)."""
    x = torch.empty(2**28 if device.startswith("cuda") else 2**26, device=device)
    y = torch.empty_like(x)
    seconds, _ = timed(lambda: y.copy_(x), device, repeats=5)
    return 2 * x.numel() * 4 / seconds


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# An H100 SXM on paper (NVIDIA's data sheet, dense figures): HBM3 bandwidth, fp32 on CUDA cores, TF32 on tensor
# cores. What the roofline predicts is max(flops / rate, bytes / bandwidth) for each figure's work.
H100 = {"name": "H100 SXM (data sheet)", "bandwidth": 3.35e12, "fp32": 67e12, "tf32": 495e12}


def roofline_seconds(flops: float, nbytes: float, machine: dict = H100, *, tf32: bool = False) -> float:
    """The roofline time of a piece of work on ``machine``: its flops at the fp32 (or TF32) rate, or its bytes at
    the bandwidth, whichever is longer.

    Example:
        >>> round(roofline_seconds(2 * 50_000 * 784 * 100, 50_000 * 784 * 4) * 1e6, 1)  # one assignment pass, us
        117.0
    """
    return max(flops / machine["tf32" if tf32 else "fp32"], nbytes / machine["bandwidth"])


def run(*, device: str = "cpu", quick: bool = False, repeats: int = 3) -> dict:
    """Measure the quick suite: k-means, scoring, the birthday search and the coverage metrics.

    Returns:
        ``{"machine", "device", "gemm_flops", "bandwidth", "rows"}``; each row has ``figure``, ``size``,
        ``seconds``, ``floor_seconds`` and ``of_floor``.
    """
    import fastndb
    from fastndb.demo.synthetic import gaussian_mixture

    scale = 1 if quick else 2
    n, d, k = 10_000 * scale, 256, 50
    real = torch.from_numpy(gaussian_mixture(n, d, num_modes=10, seed=0)).to(device)
    fake = torch.from_numpy(gaussian_mixture(n // 2, d, num_modes=10, seed=1)).to(device)
    rate, bandwidth = gemm_rate(device), copy_bandwidth(device)
    rows = []

    def add(figure: str, size: str, seconds: float, flops: float, nbytes: float = 0.0) -> None:
        floor = max(flops / rate, nbytes / bandwidth)
        rows.append({"figure": figure, "size": size, "seconds": seconds, "floor_seconds": floor,
                     "of_floor": floor / seconds, "flops": flops, "bytes": nbytes,
                     "h100_seconds": roofline_seconds(flops, nbytes)})

    seconds, clusters = timed(lambda: fastndb.kmeans(real, k, seed=0, progress=False), device, repeats)
    add(f"k-means fit (seeding + {clusters.n_iter} Lloyd)", f"{n:,} x {d}, K = {k}", seconds,
        2 * n * d * k * (clusters.n_iter + 1), n * d * 4 * (clusters.n_iter + 1))
    ndb = fastndb.NDB(k, seed=0, progress=False).fit(real)
    seconds, _ = timed(lambda: ndb.score(fake), device, repeats)
    add("NDB.score (assign + tests)", f"{n // 2:,} x {d}, K = {k}", seconds, 2 * (n // 2) * d * k, (n // 2) * d * 4)
    s = 4000 * scale
    seconds, _ = timed(lambda: fastndb.birthday(fake[:s], num_pairs=20), device, repeats)
    add("birthday: closest 20 pairs", f"{s:,} x {d}", seconds, s * (s - 1) / 2 * 2 * d)
    m = 2000 * scale
    seconds, _ = timed(lambda: fastndb.prdc(real[:m], fake[:m], nearest_k=5), device, max(1, repeats - 1))
    add("precision/recall/density/coverage", f"{m:,} + {m:,} x {d}, k = 5", seconds, 2 * d * 3 * m * m)
    machine = (f"{cpu_name()}, {torch.get_num_threads()} threads" if device == "cpu"
               else torch.cuda.get_device_name(torch.device(device)))
    return {"machine": machine, "device": device, "torch": torch.__version__, "fastndb": fastndb.__version__,
            "gemm_flops": rate, "bandwidth": bandwidth, "rows": rows}


def format_table(measured: dict) -> str:
    """The table ``fastndb bench`` prints."""
    lines = [f"fastndb {measured['fastndb']} on {measured['machine']} ({measured['device']}, "
             f"torch {measured['torch']}): GEMM {measured['gemm_flops'] / 1e9:.0f} GFLOP/s, "
             f"copy {measured['bandwidth'] / 1e9:.1f} GB/s measured in this run", "",
             f"{'figure':<38} {'size':<28} {'time (s)':>9} {'floor (s)':>10} {'of floor':>9}"]
    gpu = measured["device"].startswith("cuda")
    if gpu:
        lines[-1] += f" {'H100 model (s)':>15} {'measured / model':>17}"
    for row in measured["rows"]:
        line = (f"{row['figure']:<38} {row['size']:<28} {row['seconds']:>9.4f} {row['floor_seconds']:>10.4f} "
                f"{row['of_floor']:>9.2f}")
        if gpu:  # the roofline on paper next to what this GPU did: how far from the model the first runs are
            line += f" {row['h100_seconds']:>15.6f} {row['seconds'] / row['h100_seconds']:>17.1f}"
        lines.append(line)
    lines += ["", "of floor: the hardware floor of the work (flops at the measured GEMM rate, or bytes at the measured "
              "bandwidth) over the time; 1.0 is the roof. Baselines (scikit-learn, FAISS, prdc): benchmarks/ in a "
              "source checkout, fastndb bench --full."]
    return "\n".join(lines)
