"""Peak resident memory of ``fastndb.prdc`` in a fresh process (not a test module itself).

Usage: python coverage_memory.py N D same|random   ->   prints "peak_increase_MiB coverage seconds"

The increase is measured over the data alone (the two (N, D) float32 sets), from ru_maxrss.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fastndb  # noqa: E402


def main() -> None:
    n, d, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    if kind == "same":
        real = torch.ones(n, d)
        fake = torch.ones(n, d)
    else:
        real = torch.randn(n, d, generator=g)
        fake = torch.randn(n, d, generator=g)
    fastndb.prdc(real[:100], fake[:100])  # warm-up: libraries and allocator in place before the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = fastndb.prdc(real, fake)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{peak - before:.1f} {result.coverage} {seconds:.2f}")


if __name__ == "__main__":
    main()
