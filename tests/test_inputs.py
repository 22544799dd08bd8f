"""Input handling: zero copy where possible, odd numpy layouts, DLPack producers, progress bars, precision."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import fastndb
from fastndb._core.inputs import array_library, as_batches, check_same_library, to_tensor
from tests.conftest import mixture


class DLPackOnly:
    """An array from some other library: exposes only ``__dlpack__``/``__dlpack_device__`` and ``shape``."""

    __module__ = "otherlib.arrays"

    def __init__(self, array: np.ndarray):
        self._array = array
        self.shape = array.shape

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_numpy_and_dlpack_inputs_are_not_copied():
    x = mixture(100, 4, seed=0)
    assert to_tensor(x, "x").data_ptr() == x.ctypes.data
    wrapped = to_tensor(DLPackOnly(x), "x")
    assert wrapped.data_ptr() == x.ctypes.data
    assert array_library(DLPackOnly(x)) == "otherlib"


def test_dlpack_producers_score_like_numpy():
    real, fake = mixture(2000, 8, seed=1), mixture(800, 8, seed=2)
    a = fastndb.score(DLPackOnly(real), DLPackOnly(fake), num_bins=10, cache=False)
    b = fastndb.score(real, fake, num_bins=10, cache=False)
    assert torch.equal(a.fake_counts, b.fake_counts)
    with pytest.raises(TypeError, match="real is a otherlib array, fake is a numpy array"):
        fastndb.score(DLPackOnly(real), fake, num_bins=10)


def test_cupy_like_arrays_are_recognised_without_importing_cupy():
    class FakeCupy(DLPackOnly):
        __module__ = "cupy._core.core"

    assert array_library(FakeCupy(np.zeros((2, 2)))) == "cupy"
    with pytest.raises(TypeError, match="real is a cupy array, fake is a torch array"):
        check_same_library(real="cupy", fake="torch")


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x[::-1],  # negative strides
        lambda x: x.astype(x.dtype.newbyteorder(">")),  # big-endian
        lambda x: np.asfortranarray(x),  # column-major
        lambda x: x[:, ::2].repeat(2, axis=1),  # a strided copy
    ],
)
def test_odd_numpy_layouts(make):
    real = mixture(2000, 8, seed=3)
    ndb = fastndb.NDB(10, seed=0).fit(real)
    odd = make(real[:500])
    expected = ndb.assign(np.ascontiguousarray(odd, dtype=np.float32))
    assert torch.equal(ndb.assign(odd), expected)


def test_read_only_arrays_give_no_warning():
    x = mixture(1000, 4, seed=4)
    x.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastndb.NDB(5).fit(x)


def test_batches_are_validated_lazily():
    drawn = []

    def gen():
        for i in range(3):
            drawn.append(i)
            yield np.ones((4, 2), np.float32)

    batches = as_batches(gen(), "fake")
    assert drawn == [0]  # only the first batch is looked at to find the library
    assert sum(b.shape[0] for b in batches.iterator) == 12


def test_progress_bars_run(capsys):
    pytest.importorskip("tqdm")
    real = mixture(2000, 8, seed=5)
    ndb = fastndb.NDB(10, progress=True).fit(real)
    ndb.score(real[:300])
    assert "k-means" in capsys.readouterr().err


def test_precision_is_reported():
    real = mixture(1000, 4, seed=6)
    assert fastndb.NDB(5).fit(real).score(real[:300]).precision == "float32"
    assert fastndb.NDB(5).fit(real.astype(np.float64)).score(real[:300]).precision == "float64"
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert "TF32 matmul allowed" in fastndb.NDB(5).fit(real).score(real[:300]).precision
    finally:
        torch.set_float32_matmul_precision(previous)


def test_generator_outputs_with_autograd_history():
    real = torch.from_numpy(mixture(2000, 8, seed=7)).requires_grad_()
    fake = torch.from_numpy(mixture(500, 8, seed=8)).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for backend in ("torch", "faiss"):
            if backend == "faiss":
                pytest.importorskip("faiss")
            result = fastndb.NDB(10, whitening=True, backend=backend).fit(real).score(fake * 2)
            assert not result.z.requires_grad and not result.fake_counts.requires_grad
            assert fastndb.kmeans(real, 5).centroids.requires_grad is False


def test_sparse_tensors_are_refused_clearly():
    ndb = fastndb.NDB(5).fit(mixture(500, 4, seed=9))
    with pytest.raises(TypeError, match=r"fake: expected a dense \(strided\) tensor, got layout torch.sparse_coo"):
        ndb.score(torch.eye(4).to_sparse())


def test_fitted_ndb_pickles_with_every_backend():
    import pickle

    real, fake = mixture(2000, 8, seed=10), mixture(500, 8, seed=11)
    for backend in ("torch", "faiss"):
        if backend == "faiss":
            pytest.importorskip("faiss")
        ndb = fastndb.NDB(10, backend=backend).fit(real)
        ndb.update(fake)
        copy = pickle.loads(pickle.dumps(ndb))
        assert torch.equal(copy.centroids, ndb.centroids)
        assert torch.equal(copy.result().fake_counts, ndb.result().fake_counts)
        assert torch.equal(copy.score(fake).fake_counts, ndb.score(fake).fake_counts)
