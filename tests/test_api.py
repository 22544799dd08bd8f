"""fastndb.score: agrees with NDB, caches bins per real set, never serves a stale cache."""

from __future__ import annotations

import pytest
import torch

import fastndb
import fastndb._ndb
from fastndb._core import bins as bins_module
from tests.conftest import mixture


@pytest.fixture
def count_fits(monkeypatch):
    fastndb.clear_cache()
    calls = []
    original = bins_module.fit_kmeans

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(bins_module, "fit_kmeans", counting)
    yield calls
    fastndb.clear_cache()


def test_score_equals_ndb_class(count_fits):
    real, fake = mixture(3000, 16, seed=1), mixture(1500, 16, seed=2, keep_modes=7)
    ours = fastndb.score(real, fake, num_bins=12, seed=4, correction="bh")
    reference = fastndb.NDB(12, seed=4, correction="bh").fit(real).score(fake)
    assert ours.ndb == reference.ndb and torch.equal(ours.fake_counts, reference.fake_counts)
    assert ours.correction == "bh"


def test_same_tensor_is_not_refitted_and_in_place_changes_are_seen(count_fits):
    real = torch.from_numpy(mixture(2000, 8, seed=3))
    fake = torch.from_numpy(mixture(800, 8, seed=4))
    first = fastndb.score(real, fake, num_bins=10)
    second = fastndb.score(real, fake, num_bins=10, alpha=0.01, correction="holm")  # test options: no refit
    assert len(count_fits) == 1
    assert second.alpha == 0.01 and torch.equal(first.fake_counts, second.fake_counts)
    fastndb.score(real, fake, num_bins=11)  # bin options: refit
    assert len(count_fits) == 2
    real.mul_(2.0)  # in place: version counter moves
    fastndb.score(real, fake, num_bins=10)
    assert len(count_fits) == 3
    real[0, 0] = 5.0  # indexing assignment too
    fastndb.score(real, fake, num_bins=10)
    assert len(count_fits) == 4
    view = real[:10]
    view.add_(1.0)  # through a view
    fastndb.score(real, fake, num_bins=10)
    assert len(count_fits) == 5
    fastndb.score(real.clone(), fake, num_bins=10)  # another tensor: no identity, refit
    assert len(count_fits) == 6


def test_numpy_content_changes_are_seen(count_fits):
    real, fake = mixture(2000, 8, seed=5), mixture(800, 8, seed=6)
    fastndb.score(real, fake, num_bins=10)
    fastndb.score(real.copy(), fake, num_bins=10)  # same content: hit
    assert len(count_fits) == 1
    real[5, 3] += 1e-3
    fastndb.score(real, fake, num_bins=10)
    assert len(count_fits) == 2


def test_clear_cache_and_cache_off(count_fits):
    real, fake = mixture(2000, 8, seed=7), mixture(800, 8, seed=8)
    fastndb.score(real, fake, num_bins=10)
    assert fastndb.cache_info()["entries"] == 1
    fastndb.clear_cache()
    assert fastndb.cache_info()["entries"] == 0
    fastndb.score(real, fake, num_bins=10)
    fastndb.score(real, fake, num_bins=10, cache=False)
    assert len(count_fits) == 3


def test_cache_is_bounded(count_fits):
    fake = mixture(500, 4, seed=9)
    for seed in range(fastndb.cache_info()["capacity"] + 3):
        fastndb.score(mixture(1000, 4, seed=seed), fake, num_bins=5)
    assert fastndb.cache_info()["entries"] == fastndb.cache_info()["capacity"]


def test_iterables_of_batches_are_streamed(count_fits):
    real, fake = mixture(2000, 8, seed=10), mixture(900, 8, seed=11)
    drawn = []

    def generator():
        for start in range(0, 900, 100):
            drawn.append(start)
            yield torch.from_numpy(fake[start : start + 100]), torch.zeros(100)

    result = fastndb.score(torch.from_numpy(real), generator(), num_bins=10)
    assert result.num_fake == 900 and len(drawn) == 9
    assert torch.equal(result.fake_counts, fastndb.score(torch.from_numpy(real), torch.from_numpy(fake), num_bins=10).fake_counts)
