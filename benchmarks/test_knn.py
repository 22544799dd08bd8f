"""pytest-benchmark suite: the exact neighbour engine against FAISS's exact flat search and the GEMM floor.

Run (not part of the unit tests; needs the ``bench`` extra)::

    python -m pytest benchmarks/test_knn.py --benchmark-only --benchmark-group-by=group \\
        --benchmark-json=benchmarks/results/knn_cpu.json

Each group is one operation on one data set (a 10-mode mixture, float32), at D = 64, 784 and 2,048, two sizes each:

* ``radii``: every sample's distance to its 5th nearest other sample, ``kth_neighbour_sq`` (exact: candidates
  re-tested in float64) against FAISS ``IndexFlatL2.search(x, 6)`` (float32 distances), and the GEMM floor: the
  same ``N^2 D`` multiply-adds as ``torch.mm`` of 2,048-row tiles, nothing else.
* ``prdc`` (N real and N fake): ``fastndb.prdc`` without intervals (two radius searches and the ball tests)
  against FAISS's share of it (its three exact searches: the real and fake radii and each real sample's nearest
  fake; the ball tests of precision and density have no FAISS call, so a FAISS-based PRDC costs more), the
  ``prdc`` package itself at the smaller size of each D (one round: full distance matrices), and the GEMM floor
  of the three products.
* ``birthday``: the 20 closest pairs, ``fastndb.birthday``, against FAISS's top-2 search of every sample (from
  which the closest pairs follow), and the GEMM floor of the upper triangle.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastndb
from fastndb.demo.synthetic import gaussian_mixture
from fastndb.kernels.neighbours import kth_neighbour_sq

faiss = pytest.importorskip("faiss")
pytest.importorskip("pytest_benchmark")

SIZES = {64: (20_000, 50_000), 784: (10_000, 20_000), 2048: (5_000, 10_000)}
CASES = [(d, n) for d, sizes in SIZES.items() for n in sizes]
SMALL = [(d, sizes[0]) for d, sizes in SIZES.items()]
ROUNDS = 3


def _data(n: int, d: int, seed: int) -> np.ndarray:
    return np.ascontiguousarray(gaussian_mixture(n, d, num_modes=10, spread=2.0, seed=seed), dtype=np.float32)


def _gemm_floor(a: torch.Tensor, b: torch.Tensor, tile: int = 2048) -> None:
    """The products of the tiled search alone: ``a @ b.T`` one tile at a time."""
    for i in range(0, a.shape[0], tile):
        for j in range(0, b.shape[0], tile):
            torch.mm(a[i : i + tile], b[j : j + tile].t())


def _flat(x: np.ndarray):
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index


@pytest.mark.parametrize("d, n", CASES)
def test_radii_fastndb(benchmark, d, n):
    benchmark.group = f"radii k=5 {n} x {d}"
    x = torch.from_numpy(_data(n, d, 0))
    benchmark.pedantic(lambda: kth_neighbour_sq(x, 5), rounds=ROUNDS, warmup_rounds=0)


@pytest.mark.parametrize("d, n", CASES)
def test_radii_faiss(benchmark, d, n):
    benchmark.group = f"radii k=5 {n} x {d}"
    x = _data(n, d, 0)
    index = _flat(x)
    benchmark.pedantic(lambda: index.search(x, 6), rounds=ROUNDS, warmup_rounds=0)


@pytest.mark.parametrize("d, n", CASES)
def test_radii_gemm_floor(benchmark, d, n):
    benchmark.group = f"radii k=5 {n} x {d}"
    x = torch.from_numpy(_data(n, d, 0))
    benchmark.pedantic(lambda: _gemm_floor(x, x), rounds=ROUNDS, warmup_rounds=0)


@pytest.mark.parametrize("d, n", CASES)
def test_prdc_fastndb(benchmark, d, n):
    benchmark.group = f"prdc k=5 {n} + {n} x {d}"
    real, fake = torch.from_numpy(_data(n, d, 0)), torch.from_numpy(_data(n, d, 1))
    benchmark.pedantic(lambda: fastndb.prdc(real, fake, nearest_k=5, subsets=0), rounds=ROUNDS, warmup_rounds=0)


@pytest.mark.parametrize("d, n", CASES)
def test_prdc_faiss_searches(benchmark, d, n):
    benchmark.group = f"prdc k=5 {n} + {n} x {d}"
    real, fake = _data(n, d, 0), _data(n, d, 1)

    def run():
        _flat(real).search(real, 6)
        fake_index = _flat(fake)
        fake_index.search(fake, 6)
        fake_index.search(real, 1)

    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=0)


@pytest.mark.parametrize("d, n", SMALL)
def test_prdc_package(benchmark, d, n):
    """The ``prdc`` package (full distance matrices): the smaller size only (it needs 3 N^2 distances in memory),
    one round (it takes 10 to 30 times as long)."""
    compute_prdc = pytest.importorskip("prdc").compute_prdc
    benchmark.group = f"prdc k=5 {n} + {n} x {d}"
    real, fake = _data(n, d, 0), _data(n, d, 1)
    benchmark.pedantic(lambda: compute_prdc(real, fake, nearest_k=5), rounds=1, warmup_rounds=0)


@pytest.mark.parametrize("d, n", CASES)
def test_prdc_gemm_floor(benchmark, d, n):
    benchmark.group = f"prdc k=5 {n} + {n} x {d}"
    real, fake = torch.from_numpy(_data(n, d, 0)), torch.from_numpy(_data(n, d, 1))
    benchmark.pedantic(lambda: (_gemm_floor(real, real), _gemm_floor(fake, fake), _gemm_floor(real, fake)),
                       rounds=ROUNDS, warmup_rounds=0)


@pytest.mark.parametrize("d, n", CASES)
def test_birthday_fastndb(benchmark, d, n):
    benchmark.group = f"birthday 20 pairs {n} x {d}"
    x = torch.from_numpy(_data(n, d, 2))
    benchmark.pedantic(lambda: fastndb.birthday(x, num_pairs=20), rounds=ROUNDS, warmup_rounds=0)


@pytest.mark.parametrize("d, n", CASES)
def test_birthday_faiss(benchmark, d, n):
    benchmark.group = f"birthday 20 pairs {n} x {d}"
    x = _data(n, d, 2)
    index = _flat(x)
    benchmark.pedantic(lambda: index.search(x, 2), rounds=ROUNDS, warmup_rounds=0)


@pytest.mark.parametrize("d, n", CASES)
def test_birthday_gemm_floor(benchmark, d, n):
    benchmark.group = f"birthday 20 pairs {n} x {d}"
    x = torch.from_numpy(_data(n, d, 2))

    def upper() -> None:  # the blocks on and above the diagonal
        for i in range(0, n, 2048):
            torch.mm(x[i : i + 2048], x[i:].t())

    benchmark.pedantic(upper, rounds=ROUNDS, warmup_rounds=0)
