"""Statistics against independent float64 references (scipy / numpy written from the definitions)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.spatial.distance import jensenshannon

from fastndb._core.statistics import (
    adjust_p_values,
    chi2_homogeneity,
    compare_histograms,
    expected_null_js,
    js_divergence,
    two_proportion_z_test,
)


def random_counts(rng, k, n, alpha=1.0):
    p = rng.dirichlet(np.full(k, alpha))
    return rng.multinomial(n, p)


def reference_z_test(r, n_r, f, n_f):
    """Pooled two-proportion z-test written from its textbook definition, float64 numpy + scipy.norm."""
    z = np.zeros(len(r))
    p = np.ones(len(r))
    for k in range(len(r)):
        pooled = (r[k] + f[k]) / (n_r + n_f)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n_r + 1 / n_f))
        if se > 0:
            z[k] = (f[k] / n_f - r[k] / n_r) / se
            p[k] = 2 * scipy.stats.norm.sf(abs(z[k]))
    return z, p


@pytest.mark.parametrize("seed", range(5))
def test_z_test_matches_scipy_reference(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 200))
    n_r, n_f = int(rng.integers(100, 50000)), int(rng.integers(100, 50000))
    r, f = random_counts(rng, k, n_r, 0.5), random_counts(rng, k, n_f, 0.5)
    z, p = two_proportion_z_test(torch.from_numpy(r), n_r, torch.from_numpy(f), n_f)
    z_ref, p_ref = reference_z_test(r, n_r, f, n_f)
    assert z.dtype == torch.float64 and p.dtype == torch.float64
    np.testing.assert_allclose(z.numpy(), z_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p.numpy(), p_ref, rtol=1e-10, atol=1e-300)


def test_z_test_sign_and_degenerate_bins():
    # bin 0: over-represented in fake; bin 1: under; bin 2: empty in both; bin 3 never used
    z, p = two_proportion_z_test(torch.tensor([10, 90, 0]), 100, torch.tensor([60, 40, 0]), 100)
    assert z[0] > 0 and z[1] < 0
    assert z[2] == 0 and p[2] == 1
    # everything in one bin on both sides: pooled p = 1, no variance
    z, p = two_proportion_z_test(torch.tensor([100, 0]), 100, torch.tensor([50, 0]), 50)
    assert z.tolist() == [0.0, 0.0] and p.tolist() == [1.0, 1.0]
    assert torch.isfinite(z).all() and torch.isfinite(p).all()


def test_p_values_keep_precision_in_the_tails():
    z, p = two_proportion_z_test(torch.tensor([5000, 5000]), 10000, torch.tensor([6000, 4000]), 10000)
    assert p[0] > 0  # erfc, not 1 - cdf: 1 - cdf would be exactly 0 at z ~ 14
    np.testing.assert_allclose(p.numpy(), 2 * scipy.stats.norm.sf(np.abs(z.numpy())), rtol=1e-9)


def reference_holm(p):
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted


def reference_bh(p):
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 1.0
    for rank in range(m - 1, -1, -1):
        idx = order[rank]
        running = min(running, m * p[idx] / (rank + 1))
        adjusted[idx] = min(running, 1.0)
    return adjusted


@pytest.mark.parametrize("seed", range(4))
def test_corrections_match_reference(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, int(rng.integers(1, 300))) ** 2
    p[: len(p) // 5] = p[0]  # ties
    adjusted_holm = adjust_p_values(torch.from_numpy(p), "holm").numpy()
    adjusted_bh = adjust_p_values(torch.from_numpy(p), "bh").numpy()
    np.testing.assert_allclose(adjusted_holm, reference_holm(p), rtol=1e-12)
    np.testing.assert_allclose(adjusted_bh, reference_bh(p), rtol=1e-12)
    # scipy's BH where available
    if hasattr(scipy.stats, "false_discovery_control"):
        np.testing.assert_allclose(adjusted_bh, scipy.stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    np.testing.assert_array_equal(adjust_p_values(torch.from_numpy(p), None).numpy(), p)


@pytest.mark.parametrize("seed", range(4))
def test_chi2_matches_scipy_contingency(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 150))
    r, f = random_counts(rng, k, 20000, 0.3), random_counts(rng, k, 7000, 0.3)
    r[0] = f[0] = 0  # a bin empty in both samples is dropped, as scipy requires
    stat, dof, p = chi2_homogeneity(torch.from_numpy(r), torch.from_numpy(f))
    keep = (r + f) > 0
    ref = scipy.stats.chi2_contingency(np.stack([r[keep], f[keep]]), correction=False)
    assert dof == ref.dof
    assert stat == pytest.approx(ref.statistic, rel=1e-10)
    assert p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)


def test_chi2_degenerate():
    assert chi2_homogeneity(torch.tensor([5, 0]), torch.tensor([3, 0])) == (0.0, 0, 1.0)


@pytest.mark.parametrize("seed", range(4))
def test_js_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 100))
    p, q = rng.dirichlet(np.full(k, 0.3)), rng.dirichlet(np.full(k, 0.3))
    p[0] = 0.0
    p /= p.sum()
    ours = float(js_divergence(torch.from_numpy(p), torch.from_numpy(q)))
    assert ours == pytest.approx(jensenshannon(p, q) ** 2, rel=1e-9, abs=1e-15)  # natural log, squared distance
    assert float(js_divergence(torch.from_numpy(p), torch.from_numpy(p))) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("k, n_r, n_f", [(20, 900, 2000), (100, 5000, 5000), (10, 300, 10000)])
def test_expected_null_js_matches_simulation(k, n_r, n_f):
    # both histograms drawn from the same unequal shares; the mean JS (scipy) of 4000 draws against the formula
    rng = np.random.default_rng(k)
    shares = rng.dirichlet(np.full(k, 5.0))
    real, fake = rng.multinomial(n_r, shares, size=4000) / n_r, rng.multinomial(n_f, shares, size=4000) / n_f
    simulated = np.mean(jensenshannon(real, fake, axis=1) ** 2)
    assert expected_null_js(k, n_r, n_f) == pytest.approx(simulated, rel=0.04)


def test_compare_histograms_needs_samples_on_both_sides():
    with pytest.raises(ValueError, match="fake_counts: expected counts with a positive total, got a total of 0"):
        compare_histograms(torch.tensor([5, 5]), torch.tensor([0, 0]), alpha=0.05)
    with pytest.raises(ValueError, match="real_counts: expected counts with a positive total"):
        compare_histograms(torch.tensor([0, 0]), torch.tensor([3, 1]), alpha=0.05)


def test_compare_histograms_fields_consistent():
    rng = np.random.default_rng(7)
    r, f = random_counts(rng, 30, 5000), random_counts(rng, 30, 3000)
    result = compare_histograms(torch.from_numpy(r), torch.from_numpy(f), alpha=0.01)
    z_ref, p_ref = reference_z_test(r, 5000, f, 3000)
    assert result.ndb == int((p_ref < 0.01).sum())
    assert result.ndb_ratio == result.ndb / 30
    assert result.num_real == 5000 and result.num_fake == 3000
    assert result.real_counts.dtype == torch.int64
    np.testing.assert_allclose(result.real_proportions.numpy(), r / 5000)
    assert result.expected_false_positives == pytest.approx(0.3)
    assert result.expected_null_js == pytest.approx(29 / 8 * (1 / 5000 + 1 / 3000))
    with_threshold = compare_histograms(torch.from_numpy(r), torch.from_numpy(f), alpha=0.01, z_threshold=3.0)
    np.testing.assert_array_equal(with_threshold.different.numpy(), np.abs(z_ref) > 3.0)
    d = result.to_dict()
    assert set(d) >= {"ndb", "ndb_ratio", "js", "real_counts", "fake_counts", "z", "p_values", "different"}
    assert isinstance(result.to_dict(python=True)["z"], list)
