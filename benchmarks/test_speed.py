"""pytest-benchmark suite: fastndb against its baselines, each group one operation on the same data in one session.

Run (not part of the unit tests; needs the ``bench`` extra)::

    python -m pytest benchmarks/test_speed.py --benchmark-only --benchmark-group-by=group \\
        --benchmark-json=benchmarks/results/speed_cpu.json
    # keep runs to compare: --benchmark-save=NAME --benchmark-storage=benchmarks/results/pytest-benchmark
    pytest-benchmark --storage benchmarks/results/pytest-benchmark compare --group-by=group --columns=min,median

Groups (sizes chosen so that the suite takes a few minutes on 2 cores):

* ``kmeans fit``: 20,000 x 784, K = 100; fastndb to its stopping rule; FAISS ``Kmeans`` on all points for 10
  iterations (what it needs on this mixture to reach fastndb's objective, ``bench_kmeans.py``); scikit-learn.
* ``lloyd pass``: one assignment + update at 50,000 x 784, K = 100: fused (``assign_and_sum``), separate (the
  previous ``nearest_centroid`` then ``lloyd_step``), FAISS ``IndexFlatL2`` search alone (assignment only).
* ``score``: 20,000 x 784 against 100 fitted bins: ``NDB.count``, scikit-learn ``predict``, FAISS search.
* ``birthday``: closest pairs among 8,000 x 784: ``fastndb.birthday``, FAISS flat top-2, scikit-learn brute top-2.
* ``coverage``: 4,000 real + 4,000 fake x 784, k = 5: ``fastndb.prdc``, the ``prdc`` package, and FAISS's share
  (only the three kNN searches PRDC needs, a lower bound of a FAISS-based PRDC).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastndb
from fastndb.demo.synthetic import gaussian_mixture
from fastndb.kernels import lloyd_step, nearest_centroid

try:  # absent before the one-pass Lloyd: the suite also runs on older versions, for the saved comparison
    from fastndb.kernels import assign_and_sum
except ImportError:  # pragma: no cover
    assign_and_sum = None

faiss = pytest.importorskip("faiss")
pytest.importorskip("pytest_benchmark")


@pytest.fixture(scope="module")
def real_np() -> np.ndarray:
    return gaussian_mixture(50_000, 784, num_modes=10, spread=2.0, seed=0)


@pytest.fixture(scope="module")
def fake_np() -> np.ndarray:
    return gaussian_mixture(20_000, 784, num_modes=10, spread=2.0, seed=1)


@pytest.fixture(scope="module")
def bins(real_np):
    return fastndb.NDB(100, seed=0, progress=False).fit(torch.from_numpy(real_np[:20_000]))


def faiss_flat(centroids: np.ndarray):
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return index


# --- kmeans fit
@pytest.mark.benchmark(group="kmeans fit 20k x 784, K=100")
def test_kmeans_fastndb(benchmark, real_np):
    x = torch.from_numpy(real_np[:20_000])
    result = benchmark.pedantic(lambda: fastndb.kmeans(x, 100, seed=0, progress=False), rounds=3, warmup_rounds=1)
    benchmark.extra_info["iterations"] = result.n_iter


@pytest.mark.benchmark(group="kmeans fit 20k x 784, K=100")
def test_kmeans_faiss(benchmark, real_np):
    x = np.ascontiguousarray(real_np[:20_000])

    def run():
        km = faiss.Kmeans(784, 100, niter=10, seed=0, max_points_per_centroid=10**9, verbose=False)
        km.train(x)
        return km

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="kmeans fit 20k x 784, K=100")
def test_kmeans_sklearn(benchmark, real_np):
    from sklearn.cluster import KMeans

    benchmark.pedantic(lambda: KMeans(100, n_init=1, random_state=0).fit(real_np[:20_000]), rounds=1)


# --- one Lloyd pass
@pytest.mark.benchmark(group="lloyd pass 50k x 784, K=100")
def test_lloyd_pass_fused(benchmark, real_np, bins):
    if assign_and_sum is None:
        pytest.skip("this fastndb has no fused pass")
    x, c = torch.from_numpy(real_np), bins.centroids
    benchmark(lambda: assign_and_sum(x, c))


@pytest.mark.benchmark(group="lloyd pass 50k x 784, K=100")
def test_lloyd_pass_separate(benchmark, real_np, bins):
    x, c = torch.from_numpy(real_np), bins.centroids

    def run():
        labels, _ = nearest_centroid(x, c)
        return lloyd_step(x, c, labels)

    benchmark(run)


@pytest.mark.benchmark(group="lloyd pass 50k x 784, K=100")
def test_lloyd_pass_faiss_search_only(benchmark, real_np, bins):
    index = faiss_flat(bins.centroids.numpy())
    benchmark(lambda: index.search(real_np, 1))


# --- score
@pytest.mark.benchmark(group="score 20k x 784 vs 100 bins")
def test_score_fastndb(benchmark, fake_np, bins):
    fake = torch.from_numpy(fake_np)
    benchmark(lambda: bins.count(fake))


@pytest.mark.benchmark(group="score 20k x 784 vs 100 bins")
def test_score_sklearn_predict(benchmark, fake_np, bins):
    from sklearn.cluster import KMeans

    model = KMeans(100, n_init=1, max_iter=1, random_state=0).fit(fake_np[:2000])
    model.cluster_centers_ = bins.centroids.numpy().astype(model.cluster_centers_.dtype)
    benchmark(lambda: model.predict(fake_np))


@pytest.mark.benchmark(group="score 20k x 784 vs 100 bins")
def test_score_faiss(benchmark, fake_np, bins):
    index = faiss_flat(bins.centroids.numpy())
    benchmark(lambda: index.search(fake_np, 1))


# --- birthday
@pytest.mark.benchmark(group="birthday closest pairs 8k x 784")
def test_birthday_fastndb(benchmark, fake_np):
    x = torch.from_numpy(fake_np[:8000])
    benchmark.pedantic(lambda: fastndb.birthday(x, num_pairs=20, progress=False), rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="birthday closest pairs 8k x 784")
def test_birthday_faiss_top2(benchmark, fake_np):
    x = np.ascontiguousarray(fake_np[:8000])

    def run():
        index = faiss_flat(x)
        return index.search(x, 2)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="birthday closest pairs 8k x 784")
def test_birthday_sklearn_top2(benchmark, fake_np):
    from sklearn.neighbors import NearestNeighbors

    x = fake_np[:8000]
    benchmark.pedantic(lambda: NearestNeighbors(n_neighbors=2, algorithm="brute").fit(x).kneighbors(x), rounds=2)


# --- coverage
@pytest.mark.benchmark(group="coverage 4k + 4k x 784, k=5")
def test_coverage_fastndb(benchmark, real_np, fake_np):
    real, fake = torch.from_numpy(real_np[:4000]), torch.from_numpy(fake_np[:4000])
    benchmark.pedantic(lambda: fastndb.prdc(real, fake, nearest_k=5, progress=False), rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="coverage 4k + 4k x 784, k=5")
def test_coverage_prdc_package(benchmark, real_np, fake_np):
    prdc = pytest.importorskip("prdc")
    benchmark.pedantic(lambda: prdc.compute_prdc(real_np[:4000], fake_np[:4000], nearest_k=5), rounds=2)


@pytest.mark.benchmark(group="coverage 4k + 4k x 784, k=5")
def test_coverage_faiss_knn_share(benchmark, real_np, fake_np):
    real, fake = np.ascontiguousarray(real_np[:4000]), np.ascontiguousarray(fake_np[:4000])

    def run():  # the kNN radii of both sets and every real sample's nearest fake: PRDC's searches, no ball counts
        return faiss_flat(real).search(real, 6), faiss_flat(fake).search(fake, 6), faiss_flat(fake).search(real, 1)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
