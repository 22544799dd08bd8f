"""Coverage metrics benchmark: fastndb.prdc against the prdc package and a full-matrix torch baseline, side by side.

Speed: the same data (10-mode mixture, float32) for each tool in one run (fastndb without its intervals, which the
other tools do not give: the split halves cost about 6.7 times the work, 10 halvings of four half-size pairs), with the
GEMM floor measured in that run: ``2 D (N^2 + M^2 + N M)`` flops (the two k-NN radius searches and the real x fake
ball tests, one GEMM per tile) over the measured float32 GEMM rate. Memory: peak resident memory over the data
alone, in a fresh process per tool (``tests/coverage_memory.py`` for fastndb); for ``prdc`` it is computed where it
cannot run here: its ``N x N``, ``M x M`` and ``N x M`` distance matrices (float32 for float32 input) and
``np.argpartition``'s int64 index matrix of the ``N x N`` radius search, ``4 (N^2 + M^2 + N M) + 8 N^2`` bytes at
its peak or more (the cdist baseline: the three matrices and an ``N x M`` mask).

The "cdist" baseline is torch-fidelity's method (``torch.cdist`` over whole sets, ``kthvalue``, then the ball tests
on the full matrices), written here with torch because torch-fidelity itself imports torchvision, which PyPI
builds against CUDA torch and which does not import beside this machine's CPU torch wheel.

    python benchmarks/bench_coverage.py            # 20,000 x 784 and 50,000 x 64 (minutes)
    python benchmarks/bench_coverage.py --quick    # 5,000 x 784 and 10,000 x 64
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from _common import cpu_name, gemm_rate

import fastndb
from fastndb._core.optional import is_available
from fastndb.demo.synthetic import gaussian_mixture

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
RAM_BYTES = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cdist_baseline(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict:
    """Full matrices, as torch-fidelity's ``calculate_precision_recall_full`` (with density and coverage added)."""
    r = torch.cdist(real, real).kthvalue(k + 1, dim=1).values
    s = torch.cdist(fake, fake).kthvalue(k + 1, dim=1).values
    d = torch.cdist(real, fake)
    inside = d < r[:, None]
    return {"precision": inside.any(0).double().mean().item(), "recall": (d < s[None, :]).any(1).double().mean().item(),
            "density": inside.sum(0).double().mean().item() / k, "coverage": inside.any(1).double().mean().item()}


def faiss_knn_share(real: np.ndarray, fake: np.ndarray, k: int) -> None:
    """FAISS's share of PRDC: the three exact flat kNN searches it needs (real and fake radii, every real sample's
    nearest fake). Precision and density also need each fake sample tested against every real ball of its own
    radius, which a kNN search does not give: a FAISS-based PRDC costs at least this."""
    import faiss

    def flat(x: np.ndarray):
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(x)
        return index

    flat(real).search(real, k + 1)
    fake_index = flat(fake)
    fake_index.search(fake, k + 1)
    fake_index.search(real, 1)


def needed_bytes(kind: str, n: int, m: int) -> int:
    """What a full-matrix tool needs at its peak, at least: prdc its three float32 matrices and argpartition's
    int64 ``N x N`` indices; the cdist baseline its three float32 matrices and one ``N x M`` boolean mask."""
    if kind == "faiss":
        return 0
    matrices = 4 * (n * n + m * m + n * m)
    return matrices + (8 * n * n if kind == "prdc" else n * m)


def measure_in_process(kind: str, n: int, d: int) -> tuple[float, float]:
    """Time and peak memory increase (MiB) of one tool on ``n x d`` real and fake, in a fresh process."""
    code = f"""
import contextlib, io, os, sys, threading, time, numpy as np, torch
sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); sys.path.insert(0, {str(ROOT)!r})
from fastndb.demo.synthetic import gaussian_mixture
import fastndb, prdc, bench_coverage  # imported before the baseline: their own memory is not the work's
torch.set_num_threads(2)
real = gaussian_mixture({n}, {d}, num_modes=10, seed=0).astype(np.float32)
fake = gaussian_mixture({n}, {d}, num_modes=10, seed=1, keep_modes=7).astype(np.float32)
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page / 2**20
peak = [rss()]
base = peak[0]
done = threading.Event()
def watch():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
watcher = threading.Thread(target=watch, daemon=True)
watcher.start()
start = time.perf_counter()
if {kind!r} == "prdc":
    from prdc import compute_prdc
    with contextlib.redirect_stdout(io.StringIO()):
        compute_prdc(real, fake, 5)
elif {kind!r} == "faiss":
    from bench_coverage import faiss_knn_share
    faiss_knn_share(real, fake, 5)
elif {kind!r} == "cdist":
    from bench_coverage import cdist_baseline
    cdist_baseline(torch.from_numpy(real), torch.from_numpy(fake), 5)
else:
    import fastndb
    fastndb.prdc(torch.from_numpy(real), torch.from_numpy(fake), nearest_k=5, subsets=0)
seconds = time.perf_counter() - start
done.set(); watcher.join()
print(seconds, max(peak[0], rss()) - base)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    seconds, peak = (float(v) for v in done.stdout.split())
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--render", metavar="JSON", help="redraw the table of a saved run, measuring nothing")
    args = parser.parse_args()
    if args.render:
        render(Path(args.render))
        return
    torch.set_num_threads(2)
    sizes = [(5_000, 784), (10_000, 64)] if args.quick else [(20_000, 784), (50_000, 64)]
    rate = gemm_rate("cpu")
    rows = []
    for n, d in sizes:
        real = gaussian_mixture(n, d, num_modes=10, seed=0).astype(np.float32)
        fake = gaussian_mixture(n, d, num_modes=10, seed=1, keep_modes=7).astype(np.float32)
        floor = 2 * d * 3 * n * n / rate
        ours = fastndb.prdc(torch.from_numpy(real), torch.from_numpy(fake), nearest_k=5, subsets=0)
        row = {"size": f"{n:,} x {d}", "floor_s": floor, "ours": ours.scores(), "tools": {}}
        for kind in ("fastndb", "prdc", "cdist", "faiss"):
            if kind == "faiss" and not is_available("faiss"):
                continue
            needed = needed_bytes(kind, n, n) if kind != "fastndb" else 0
            if needed > 0.6 * RAM_BYTES:
                row["tools"][kind] = {"seconds": None, "peak_mib": needed / 2**20, "computed": True}
                continue
            seconds, peak = measure_in_process(kind, n, d)
            row["tools"][kind] = {"seconds": seconds, "peak_mib": peak, "computed": False}
            print(f"{n} x {d} {kind}: {seconds:.1f} s, +{peak:.0f} MiB", flush=True)
        if row["tools"]["prdc"]["seconds"] is not None:
            with contextlib.redirect_stdout(io.StringIO()):
                from prdc import compute_prdc

                reference = compute_prdc(real, fake, 5)
            row["largest_difference_to_prdc"] = max(abs(ours.scores()[k] - float(v)) for k, v in reference.items())
        rows.append(row)
    machine = f"{cpu_name()}, {os.cpu_count()} logical cores, {RAM_BYTES / 2**30:.0f} GiB, torch {torch.__version__}"
    name = "coverage_cpu_quick" if args.quick else "coverage_cpu"
    (OUT / f"{name}.json").write_text(json.dumps({"machine": machine, "gemm_flops": rate, "rows": rows}, indent=1))
    render(OUT / f"{name}.json")


def render(path: Path) -> None:
    """Write the table of a saved run next to its JSON (``--render`` redraws one without measuring again)."""
    saved = json.loads(path.read_text())
    lines = [f"precision/recall/density/coverage, k = 5, N = M, float32, 10-mode mixture (fake: 7 of 10 modes); "
             f"{saved['machine']}; GEMM {saved['gemm_flops'] / 1e9:.0f} GFLOP/s measured in this run", "",
             "| N = M x D | tool | time (s) | time / fastndb's | peak memory over the data | of GEMM floor |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in saved["rows"]:
        ours_s = row["tools"]["fastndb"]["seconds"]
        n = int(row["size"].split(" x ")[0].replace(",", ""))
        for kind, label in (("fastndb", "fastndb.prdc"), ("prdc", "prdc.compute_prdc"),
                            ("cdist", "torch.cdist full matrices"), ("faiss", "FAISS flat kNN searches only *")):
            if kind not in row["tools"]:
                continue
            tool = row["tools"][kind]
            if tool["computed"]:
                needed = needed_bytes(kind, n, n) / 2**30
                lines.append(f"| {row['size']} | {label} | not run: needs {needed:.1f} GiB | | {needed:.1f} GiB "
                             f"(computed) | |")
                continue
            ratio = "" if kind == "fastndb" else f"{tool['seconds'] / ours_s:.2f}"
            lines.append(f"| {row['size']} | {label} | {tool['seconds']:.1f} | {ratio} | {tool['peak_mib']:.0f} MiB | "
                         f"{row['floor_s'] / tool['seconds']:.2f} |")
        if "largest_difference_to_prdc" in row:
            lines.append(f"| {row['size']} | (fastndb - prdc, largest of the four) | "
                         f"{row['largest_difference_to_prdc']:.1e} | | | |")
    if any("faiss" in row["tools"] for row in saved["rows"]):
        lines += ["", "* FAISS does only the three kNN searches PRDC needs (both sets' radii, each real sample's "
                  "nearest fake); the ball tests of precision and density are not a kNN search, so a FAISS-based "
                  "PRDC costs at least this."]
    text = "\n".join(lines)
    path.with_suffix(".txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
