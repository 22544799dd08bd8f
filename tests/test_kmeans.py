"""k-means: objective against scikit-learn, hard and degenerate data, seeds, backends, errors."""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

import fastndb
from fastndb.demo.synthetic import gaussian_mixture
from fastndb.kernels import nearest_centroid
from tests.conftest import mixture

INERTIA_TOLERANCE = 1.01  # our inertia <= 1.01 x scikit-learn's (n_init=1), stated in the README


def inertia64(x, centroids):
    x64, c64 = torch.as_tensor(x).double(), torch.as_tensor(centroids).double()
    return float(torch.cdist(x64, c64).square().min(1).values.sum())


def median_inertias(x, k, seeds):
    """Median objective over seeds for fastndb and scikit-learn (n_init=1 each): single runs of k-means land
    in different local minima, so single pairs are not comparable."""
    ours = [inertia64(x, fastndb.kmeans(x, k, seed=s).centroids) for s in seeds]
    theirs = [inertia64(x, KMeans(k, n_init=1, random_state=s).fit(x).cluster_centers_) for s in seeds]
    return float(np.median(ours)), float(np.median(theirs))


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_inertia_within_tolerance_of_sklearn(seed):
    rng = np.random.default_rng(seed)
    x = mixture(3000, 32, num_modes=int(rng.integers(3, 12)), seed=seed, means_seed=seed)
    k = int(rng.integers(5, 40))
    ours, theirs = median_inertias(x, k, range(seed, seed + 5))
    assert ours <= INERTIA_TOLERANCE * theirs
    result = fastndb.kmeans(x, k, seed=seed)
    assert result.inertia == pytest.approx(inertia64(x, result.centroids), rel=1e-4)  # reports the real objective
    assert result.centroids.shape == (k, 32) and result.labels.shape == (3000,)
    assert int(result.counts.sum()) == 3000
    assert torch.equal(result.labels, nearest_centroid(torch.from_numpy(x), result.centroids)[0])


def test_half_the_points_identical():
    """FAISS's hard case: half the points are one point."""
    x = mixture(2000, 16, seed=5)
    x[:1000] = x[0]
    ours, theirs = median_inertias(x, 20, range(7))
    assert ours <= INERTIA_TOLERANCE * theirs
    result = fastndb.kmeans(x, 20, seed=0)
    assert torch.isfinite(result.centroids).all()
    assert int(result.counts.max()) >= 1000  # the duplicated point is one cluster


def test_fewer_distinct_points_than_clusters_warns_and_stays_finite():
    x = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)
    with pytest.warns(RuntimeWarning, match="only 3 of 5 clusters hold points"):
        result = fastndb.kmeans(x, 5)
    assert torch.isfinite(result.centroids).all()
    assert result.inertia == pytest.approx(0.0, abs=1e-6)


def test_all_identical_and_k_equal_n():
    with pytest.warns(RuntimeWarning):
        same = fastndb.kmeans(np.ones((50, 4), np.float32), 3)
    assert same.inertia == 0.0
    x = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
    every = fastndb.kmeans(x, 12)
    assert every.inertia == pytest.approx(0.0, abs=1e-5)
    assert sorted(every.counts.tolist()) == [1] * 12
    one = fastndb.kmeans(x, 1)
    np.testing.assert_allclose(one.centroids[0].numpy(), x.mean(0), rtol=1e-5, atol=1e-6)


def test_empty_cluster_is_reseeded():
    # an outlier far away: a seed that lands in an empty region gets moved, all clusters end non-empty
    x = np.concatenate([mixture(600, 8, num_modes=3, seed=2), np.full((1, 8), 500.0, np.float32)])
    result = fastndb.kmeans(x, 6, seed=3)
    assert (result.counts > 0).all()


def test_seed_determinism():
    x = mixture(1500, 24, seed=4)
    a, b = fastndb.kmeans(x, 15, seed=7), fastndb.kmeans(x, 15, seed=7)
    assert torch.equal(a.centroids, b.centroids) and a.inertia == b.inertia and a.n_iter == b.n_iter
    c = fastndb.kmeans(x, 15, seed=8)
    assert not torch.equal(a.centroids, c.centroids)


def test_numpy_torch_iterable_equivalence_and_float64():
    x = mixture(800, 10, seed=6)
    from_numpy = fastndb.kmeans(x, 8, seed=1)
    from_torch = fastndb.kmeans(torch.from_numpy(x), 8, seed=1)
    from_batches = fastndb.kmeans([torch.from_numpy(x[:300]), torch.from_numpy(x[300:])], 8, seed=1)
    assert torch.equal(from_numpy.centroids, from_torch.centroids)
    assert torch.equal(from_numpy.centroids, from_batches.centroids)
    as64 = fastndb.kmeans(x.astype(np.float64), 8, seed=1)
    assert as64.centroids.dtype == torch.float64
    assert as64.inertia == pytest.approx(from_numpy.inertia, rel=1e-4)


def test_images_are_flattened_and_uint8_scaled():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (200, 3, 4, 4), dtype=np.uint8)
    result = fastndb.kmeans(imgs, 4)
    assert result.centroids.shape == (4, 48)
    assert float(result.centroids.max()) <= 1.0


def test_faiss_backend_agrees_with_torch():
    pytest.importorskip("faiss")
    x = mixture(2000, 20, seed=9)
    a = fastndb.kmeans(x, 10, seed=2, backend="torch")
    b = fastndb.kmeans(x, 10, seed=2, backend="faiss")
    assert b.backend == "faiss"
    assert b.inertia == pytest.approx(a.inertia, rel=1e-3)
    np.testing.assert_allclose(b.centroids.numpy(), a.centroids.numpy(), atol=1e-3)


def test_cuml_backend_glue_with_a_stand_in_module(monkeypatch):
    """cuML is not installable here (RAPIDS, CUDA only): check our glue against a stand-in with its API."""
    calls = {}

    class NearestNeighbors:
        def __init__(self, n_neighbors, algorithm, metric, output_type):
            calls["args"] = (n_neighbors, algorithm, metric, output_type)

        def fit(self, centroids):
            self.centroids = centroids
            return self

        def kneighbors(self, x):
            d2 = torch.cdist(x.double(), self.centroids.double()).square()
            best = d2.min(1)
            return best.values[:, None].float(), best.indices[:, None].int()

    fake = types.ModuleType("cuml")
    fake.neighbors = types.SimpleNamespace(NearestNeighbors=NearestNeighbors)
    monkeypatch.setitem(sys.modules, "cuml", fake)
    from fastndb._core.backends import resolve_backend

    engine = resolve_backend("cuml")
    x = torch.randn(30, 4)
    with pytest.raises(ValueError, match="backend='cuml' runs on CUDA tensors, got samples on cpu"):
        engine.nearest(x, x[:3])
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    labels, d2 = engine.nearest(x, x[:3])
    assert calls["args"] == (1, "brute", "sqeuclidean", "cupy")
    assert labels.dtype == torch.int64 and labels[:3].tolist() == [0, 1, 2]
    assert torch.equal(labels, nearest_centroid(x, x[:3])[0])


def test_missing_backend_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuml", None)
    with pytest.raises(ModuleNotFoundError, match="pip install cuml"):
        fastndb.kmeans(np.zeros((10, 2), np.float32), 2, backend="cuml")


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"k": 0}, ValueError, r"k: expected an integer >= 1, got 0"),
        ({"k": 2.5}, TypeError, r"k: expected an integer, got float 2.5"),
        ({"k": 11}, ValueError, r"k: expected at most as many clusters as samples \(10\), got k=11"),
        ({"k": 2, "tol": -1}, ValueError, r"tol: expected a number >= 0, got -1"),
        ({"k": 2, "max_iter": 0}, ValueError, r"max_iter: expected an integer >= 1, got 0"),
        ({"k": 2, "seed": -3}, ValueError, r"seed: expected an integer >= 0, got -3"),
        ({"k": 2, "backend": "sklearn"}, ValueError, r"backend: expected one of \('auto', 'torch', 'faiss', 'cuml'\), got 'sklearn'"),
    ],
)
def test_kmeans_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        fastndb.kmeans(np.zeros((10, 2), np.float32), **kwargs)


def test_no_warning_on_normal_data():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastndb.kmeans(mixture(500, 4, seed=1), 5)


def test_stopping_at_max_iter_warns():
    x = mixture(2000, 8, seed=3)
    with pytest.warns(RuntimeWarning, match=r"k-means stopped at max_iter=1 before the relative inertia decrease"):
        result = fastndb.kmeans(x, 30, max_iter=1, tol=0)
    assert result.n_iter == 1 and not result.converged


def test_faiss_without_gpu_support_on_cuda_tensors_says_so(monkeypatch):
    fake_faiss = types.ModuleType("faiss")  # a CPU-only build: no StandardGpuResources
    monkeypatch.setitem(sys.modules, "faiss", fake_faiss)
    from fastndb._core.backends import resolve_backend

    engine = resolve_backend("faiss")
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    with pytest.raises(ValueError, match=r"backend='faiss': the samples are CUDA tensors but the installed FAISS has "
                                         r"no GPU support; install faiss-gpu, or use backend='torch'"):
        engine.nearest(torch.zeros(4, 2), torch.zeros(2, 2))


def test_one_pass_lloyd_equals_the_textbook_two_pass_loop():
    """The fused loop (assign and sum in one pass) takes exactly the steps of assign, then update, then assign."""
    from fastndb._core.collectives import SingleProcess
    from fastndb._core.kmeans import seed_centroids
    from fastndb.kernels import lloyd_step

    x = torch.from_numpy(gaussian_mixture(2000, 16, num_modes=6, seed=8))
    seeds = seed_centroids(x, 9, seed=2, init_size=900, comm=SingleProcess())
    centroids = seeds
    labels, d2 = nearest_centroid(x, centroids)
    inertia = float(d2.sum(dtype=torch.float64))
    for n_iter in range(1, 301):  # noqa: B007  (read after the loop: the iterations taken)
        sums, counts = lloyd_step(x, centroids, labels)
        updated = torch.where((counts > 0)[:, None], sums / counts.clamp_min(1)[:, None].to(sums.dtype), centroids)
        new_labels, d2 = nearest_centroid(x, updated)
        new_inertia = float(d2.sum(dtype=torch.float64))
        changed = int((new_labels != labels).sum())
        centroids, labels, decrease, inertia = updated, new_labels, inertia - new_inertia, new_inertia
        if changed == 0 or decrease <= 1e-4 * abs(new_inertia):
            break
    result = fastndb.kmeans(x, 9, seed=2, init_size=900)
    assert result.n_iter == n_iter
    assert torch.equal(result.centroids, centroids) and torch.equal(result.labels, labels)
    assert result.inertia == inertia
