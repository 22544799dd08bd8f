"""NDB: calibration, power, the original design, streaming, input forms, determinism."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats
import torch

import fastndb
from fastndb import NDB
from tests.conftest import mixture

warnings.filterwarnings("ignore", message="NDB: .* per bin", category=RuntimeWarning)


def null_false_positive_rate(mode, *, dim, num_real, num_fake, num_bins, repeats, spread=1.0):
    flagged = 0
    for r in range(repeats):
        real = mixture(num_real, dim, seed=1000 + r, spread=spread)
        fake = mixture(num_fake, dim, seed=2000 + r, spread=spread)
        flagged += NDB(num_bins, mode=mode, seed=r).fit(real).score(fake).ndb
    return flagged / (repeats * num_bins)


@pytest.mark.parametrize("dim,num_real,num_fake,num_bins,repeats", [(64, 6000, 3000, 20, 15), (784, 4000, 2000, 40, 8)])
def test_holdout_is_calibrated_under_the_null(dim, num_real, num_fake, num_bins, repeats):
    """Fake drawn like real: the per-bin false-positive rate must be near alpha = 0.05."""
    rate = null_false_positive_rate("holdout", dim=dim, num_real=num_real, num_fake=num_fake,
                                    num_bins=num_bins, repeats=repeats)
    assert 0.015 <= rate <= 0.09, rate


def test_original_design_raises_false_alarms_in_high_dimension():
    """The paper's design (reference shares from the fit set) flags many bins under the null in 784 dims."""
    rate = null_false_positive_rate("original", dim=784, num_real=4000, num_fake=2000, num_bins=40, repeats=2)
    assert rate > 0.2, rate


def test_power_dropped_modes_are_detected():
    real = mixture(8000, 64, seed=1)
    ndb = NDB(40, seed=0).fit(real)
    half = ndb.score(mixture(4000, 64, seed=2, keep_modes=5))
    assert half.ndb >= 30 and half.p_value < 1e-50 and half.js > 0.2
    one_dropped = ndb.score(mixture(4000, 64, seed=3, keep_modes=9))
    assert one_dropped.ndb >= 3 and one_dropped.p_value < 1e-6
    # bins of the dropped mode are the under-represented ones
    assert (one_dropped.z[one_dropped.different] < 0).any()
    collapsed = ndb.score(mixture(4000, 64, seed=4, keep_modes=1))
    assert collapsed.ndb >= 36 and (collapsed.fake_counts > 0).sum() <= 8


def reference_original_evaluation(train, query, centers, alpha, z_threshold=None, mean=0.0, std=1.0, dims=None):
    """The original NDB evaluation (gans-n-gmms utils/ndb.py) re-derived from the paper with numpy + scipy,
    given bin centres: per-bin distance loop, training shares from the training set, z = (p_train - p_query)/se."""
    dims = np.arange(train.shape[1]) if dims is None else dims

    def proportions(samples):
        white = ((samples - mean) / std)[:, dims].astype(np.float64)
        distances = np.zeros((len(samples), len(centers)))
        for i in range(len(centers)):
            distances[:, i] = np.linalg.norm(white - centers[i], axis=1)
        labels = distances.argmin(1)
        return np.bincount(labels, minlength=len(centers)) / len(samples)

    p1, n1 = proportions(train), len(train)
    p2, n2 = proportions(query), len(query)
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (p1 - p2) / se
    if z_threshold is not None:
        different = np.abs(z) > z_threshold
    else:
        different = 2.0 * scipy.stats.norm.cdf(-np.abs(z)) < alpha
    m = (p1 + p2) / 2
    kl = lambda p, q: np.sum(p[p > 0] * np.log(p[p > 0] / q[p > 0]))  # noqa: E731
    return int(np.count_nonzero(different)), 0.5 * (kl(p1, m) + kl(p2, m)), different, p1


@pytest.mark.parametrize("whitening,z_threshold", [(False, None), (True, None), (False, 2.0)])
def test_original_mode_reproduces_the_original_algorithm(whitening, z_threshold):
    real = mixture(3000, 1200, seed=5, spread=0.5)  # D > 1000: the original clusters on D // 6 random dims
    fake = mixture(1500, 1200, seed=6, keep_modes=7, spread=0.5)
    ndb = NDB(20, mode="original", whitening=whitening, z_threshold=z_threshold, seed=3).fit(real)
    fm = ndb.bins.feature_map
    assert fm.dims is not None and fm.dims.numel() == 1200 // 6
    mean = fm.mean.numpy() if whitening else 0.0
    std = fm.scale.numpy() if whitening else 1.0
    if whitening:
        selected = real[:, fm.dims.numpy()].astype(np.float64)
        np.testing.assert_allclose(mean, selected.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(std, selected.std(0) + 1e-6, rtol=1e-5)
        mean_full, std_full = np.zeros(1200), np.ones(1200)
        mean_full[fm.dims.numpy()], std_full[fm.dims.numpy()] = mean, std
        mean, std = mean_full, std_full
    ours = ndb.score(fake)
    ref_ndb, ref_js, ref_different, ref_p_train = reference_original_evaluation(
        real, fake, ndb.centroids.double().numpy(), 0.05, z_threshold, mean, std, fm.dims.numpy()
    )
    assert ours.ndb == ref_ndb
    np.testing.assert_array_equal(ours.different.numpy(), ref_different)
    assert ours.js == pytest.approx(ref_js, rel=1e-9)
    np.testing.assert_allclose(ours.real_proportions.numpy(), ref_p_train, rtol=1e-12)
    assert ours.num_real == 3000
    # bins ordered by size, largest first, as in the original
    assert torch.all(ndb.real_counts[:-1] >= ndb.real_counts[1:])


def test_holdout_split_sizes_and_reference_independence():
    real = mixture(5000, 16, seed=7)
    ndb = NDB(10, holdout_fraction=0.3, seed=1).fit(real)
    assert ndb.bins.num_reference == 1500 and ndb.bins.num_fit == 3500
    assert int(ndb.real_counts.sum()) == 1500
    assert ndb.score(mixture(2000, 16, seed=8)).num_real == 1500


def test_streaming_equals_one_shot_and_reset_keeps_bins():
    real, fake = mixture(4000, 32, seed=9), mixture(3000, 32, seed=10, keep_modes=6)
    ndb = NDB(16).fit(real)
    one_shot = ndb.score(fake)
    rng = np.random.default_rng(0)
    for sizes in ([3000], [1, 999, 2000], [7] * 428 + [4]):
        ndb.reset()
        order = rng.permutation(3000)  # batch order and size do not matter
        start = 0
        for size in sizes:
            ndb.update(torch.from_numpy(fake[order[start : start + size]]))
            start += size
        streamed = ndb.result()
        assert torch.equal(streamed.fake_counts, one_shot.fake_counts)
        assert streamed.ndb == one_shot.ndb and streamed.js == one_shot.js
    centroids = ndb.centroids.clone()
    ndb.reset()
    assert torch.equal(ndb.centroids, centroids)
    with pytest.raises(ValueError, match="no fake samples yet"):
        ndb.result()


def test_score_does_not_touch_streaming_state():
    ndb = NDB(8).fit(mixture(2000, 8, seed=1))
    ndb.update(mixture(500, 8, seed=2))
    before = ndb.result().fake_counts.clone()
    ndb.score(mixture(700, 8, seed=3))
    assert torch.equal(ndb.result().fake_counts, before)


def test_input_forms_agree():
    real, fake = mixture(3000, 48, seed=11), mixture(1500, 48, seed=12, keep_modes=8)
    base = NDB(12, seed=2).fit(real).score(fake)
    as_torch = NDB(12, seed=2).fit(torch.from_numpy(real)).score(torch.from_numpy(fake))
    images = NDB(12, seed=2).fit(real.reshape(3000, 3, 4, 4)).score(fake.reshape(1500, 3, 4, 4))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(fake), torch.zeros(1500)),
                                         batch_size=128)
    from_loader = NDB(12, seed=2).fit([real[:1000], real[1000:]]).score(loader)
    for other in (as_torch, images, from_loader):
        assert torch.equal(other.fake_counts, base.fake_counts) and other.ndb == base.ndb
        assert torch.equal(other.real_counts, base.real_counts)
    assert base.real_counts.device.type == "cpu" and base.z.dtype == torch.float64


def test_uint8_images_match_their_float_version():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2000, 1, 8, 8), dtype=np.uint8)
    as_float = images.astype(np.float32) / 255
    a = NDB(10, seed=0).fit(images).score(images[:700])
    b = NDB(10, seed=0).fit(as_float).score(as_float[:700])
    assert torch.equal(a.fake_counts, b.fake_counts)


def test_determinism_with_a_seed():
    real, fake = mixture(3000, 40, seed=13), mixture(1000, 40, seed=14)
    a = NDB(15, seed=5, whitening=True, max_dims=20).fit(real)
    b = NDB(15, seed=5, whitening=True, max_dims=20).fit(real)
    assert torch.equal(a.centroids, b.centroids)
    assert torch.equal(a.score(fake).fake_counts, b.score(fake).fake_counts)
    c = NDB(15, seed=6, whitening=True, max_dims=20).fit(real)
    assert not torch.equal(a.centroids, c.centroids)


def test_assign_returns_nearest_bins():
    real = mixture(2000, 12, seed=15)
    ndb = NDB(10, whitening=True, seed=0).fit(real)
    queries = mixture(300, 12, seed=16)
    labels = ndb.assign(queries)
    fm = ndb.bins.feature_map
    white = (torch.from_numpy(queries).double() - fm.mean.double()) / fm.scale.double()
    reference = torch.cdist(white, ndb.centroids.double()).argmin(1)
    assert labels.dtype == torch.int64 and labels.shape == (300,)
    assert (labels == reference).float().mean() > 0.99


def test_corrections_reduce_flags_under_the_null():
    real, fake = mixture(6000, 32, seed=17, spread=1.0), mixture(3000, 32, seed=18, spread=1.0)
    plain = NDB(50, seed=0).fit(real).score(fake)
    holm = NDB(50, seed=0, correction="holm").fit(real).score(fake)
    bh = NDB(50, seed=0, correction="bh").fit(real).score(fake)
    assert holm.ndb <= bh.ndb <= plain.ndb
    assert torch.all(holm.p_values_adjusted >= plain.p_values)
    assert holm.ndb == int((holm.p_values_adjusted < 0.05).sum())


def test_duplicated_and_degenerate_real_data():
    real = mixture(3000, 16, seed=19)
    real[:1500] = real[0]  # half identical
    ndb = NDB(10, seed=0).fit(real)
    result = ndb.score(mixture(1000, 16, seed=20))
    assert torch.isfinite(result.z).all() and torch.isfinite(result.p_values).all()
    constant = np.ones((400, 5), np.float32)
    with pytest.warns(RuntimeWarning, match="clusters hold points"):
        flat = NDB(4, seed=0).fit(constant)
    same = flat.score(constant[:100])
    assert same.ndb == 0 and same.js == 0.0 and same.p_value == 1.0


def test_small_samples_warn():
    ndb = NDB(20, seed=0).fit(mixture(400, 4, seed=1))
    with pytest.warns(RuntimeWarning, match="fewer than 5 per bin"):
        ndb.score(mixture(50, 4, seed=2))


def test_result_to_dict_and_repr():
    result = NDB(5).fit(mixture(500, 3, seed=1)).score(mixture(300, 3, seed=2))
    plain = result.to_dict(python=True)
    import json

    decoded = json.loads(json.dumps(plain))
    assert decoded["ndb"] == result.ndb and len(decoded["z"]) == 5
    assert "NDBResult(ndb=" in repr(result)
    with pytest.raises(AttributeError):
        result.ndb = 3  # frozen


def test_faiss_backend_gives_the_same_ndb():
    pytest.importorskip("faiss")
    real, fake = mixture(3000, 24, seed=21), mixture(1500, 24, seed=22, keep_modes=7)
    a = NDB(12, seed=0, backend="torch").fit(real).score(fake)
    b = NDB(12, seed=0, backend="faiss").fit(real).score(fake)
    assert a.ndb == b.ndb and torch.equal(a.fake_counts, b.fake_counts)


@pytest.mark.cuda
def test_cuda_inputs_are_scored_on_the_gpu():
    real = torch.from_numpy(mixture(4000, 32, seed=23)).cuda()
    fake = torch.from_numpy(mixture(2000, 32, seed=24, keep_modes=6)).cuda()
    result = fastndb.score(real, fake, num_bins=16, cache=False)
    assert result.fake_counts.is_cuda and result.z.is_cuda
    cpu = fastndb.score(real.cpu(), fake.cpu(), num_bins=16, cache=False)
    assert abs(result.ndb - cpu.ndb) <= 2  # k-means on another device: same algorithm, different float rounding
