"""fastndb's exact neighbour work against FAISS's exact flat search, interleaved call by call.

The pytest-benchmark suite (``benchmarks/test_knn.py``) runs each tool's rounds back to back; on a shared VM whose
speed drifts by tens of percent within minutes, a drift between two groups moves their ratio. Here each round runs
fastndb and then FAISS on the same data, so both see the same machine; the table gives each tool's fastest and
median round and the ratio of the medians. Operations as in the suite: ``radii`` (``kth_neighbour_sq``, k = 5,
against ``IndexFlatL2.search(x, 6)``) and ``prdc`` (``fastndb.prdc`` without intervals against FAISS's three
searches only: both radii and each real sample's nearest fake; the ball tests have no FAISS call).

    python benchmarks/knn_interleaved.py [--rounds 7]     # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from _common import cpu_name

import fastndb
from fastndb.demo.synthetic import gaussian_mixture
from fastndb.kernels.neighbours import kth_neighbour_sq

RESULTS = Path(__file__).parent / "results"
CASES = [("radii", 64, 20_000), ("prdc", 64, 20_000), ("prdc", 784, 10_000), ("prdc", 2048, 5_000)]


def _data(n: int, d: int, seed: int) -> np.ndarray:
    return np.ascontiguousarray(gaussian_mixture(n, d, num_modes=10, spread=2.0, seed=seed), dtype=np.float32)


def _flat(x: np.ndarray):
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index


def _calls(op: str, d: int, n: int):
    real, fake = _data(n, d, 0), _data(n, d, 1)
    real_t, fake_t = torch.from_numpy(real), torch.from_numpy(fake)
    if op == "radii":
        index = _flat(real)
        return (lambda: kth_neighbour_sq(real_t, 5)), (lambda: index.search(real, 6))

    def faiss_searches() -> None:
        _flat(real).search(real, 6)
        fake_index = _flat(fake)
        fake_index.search(fake, 6)
        fake_index.search(real, 1)

    return (lambda: fastndb.prdc(real_t, fake_t, nearest_k=5, subsets=0)), faiss_searches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    faiss.omp_set_num_threads(torch.get_num_threads())
    rows = []
    for op, d, n in CASES:
        ours, theirs = _calls(op, d, n)
        times: dict[str, list[float]] = {"fastndb": [], "faiss": []}
        for _ in range(args.rounds):
            for name, call in (("fastndb", ours), ("faiss", theirs)):
                began = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - began)
        rows.append({"op": op, "d": d, "n": n, "seconds": times})
    lines = [f"exact neighbour work, fastndb and FAISS interleaved round by round ({args.rounds} rounds); "
             f"{cpu_name()}, torch {torch.__version__} ({torch.get_num_threads()} threads), FAISS {faiss.__version__}",
             "",
             "| operation | N x D | fastndb fastest / median | FAISS fastest / median | FAISS / fastndb (medians) "
             "| rounds fastndb was faster |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        ours, theirs = row["seconds"]["fastndb"], row["seconds"]["faiss"]
        wins = sum(a < b for a, b in zip(ours, theirs, strict=True))
        size = f"{row['n']:,} x {row['d']:,}" if row["op"] == "radii" else f"{row['n']:,} + {row['n']:,} x {row['d']:,}"
        lines.append(f"| {row['op']} | {size} | {min(ours):.3f} / {statistics.median(ours):.3f} s | "
                     f"{min(theirs):.3f} / {statistics.median(theirs):.3f} s | "
                     f"{statistics.median(theirs) / statistics.median(ours):.2f} | {wins} of {len(ours)} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "knn_interleaved_cpu.txt").write_text(text)
    (RESULTS / "knn_interleaved_cpu.json").write_text(json.dumps({"rows": rows}, indent=1))
    print(text, end="")


if __name__ == "__main__":
    main()
