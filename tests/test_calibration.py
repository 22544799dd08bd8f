"""Honesty of the statistics under the null (fake drawn like real), over many independent repeats."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats

from fastndb import NDB
from tests.conftest import mixture


def null_results(repeats, *, num_real=4000, num_fake=2000, dim=16, num_bins=20, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for r in range(repeats):
            real = mixture(num_real, dim, seed=5000 + r, spread=1.0)
            fake = mixture(num_fake, dim, seed=9000 + r, spread=1.0)
            yield NDB(num_bins, seed=r, **options).fit(real).score(fake)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_per_bin_false_positive_rate_tracks_alpha(alpha):
    results = list(null_results(40, alpha=alpha))
    rate = sum(r.ndb for r in results) / (40 * 20)
    spread = 4 * np.sqrt(alpha * (1 - alpha) / (40 * 20))  # 4 binomial standard errors
    assert abs(rate - alpha) <= spread + 0.005, (rate, alpha)


def test_unequal_sample_sizes_stay_calibrated():
    results = list(null_results(40, num_real=2000, num_fake=20000))
    rate = sum(r.ndb for r in results) / (40 * 20)
    assert 0.02 <= rate <= 0.085, rate


def test_overall_p_value_is_uniform_under_the_null():
    p_values = [r.p_value for r in null_results(60)]
    assert scipy.stats.kstest(p_values, "uniform").pvalue > 0.001
    assert np.mean(np.array(p_values) < 0.05) <= 0.15


def test_holm_controls_the_family_wise_error_rate():
    any_flag = [r.ndb > 0 for r in null_results(60, correction="holm")]
    assert np.mean(any_flag) <= 0.13  # alpha = 0.05, plus sampling noise over 60 repeats


def test_p_values_per_bin_are_uniform_under_the_null():
    p = np.concatenate([r.p_values.numpy() for r in null_results(30)])
    # discrete counts make p-values slightly conservative; the lower tail matters for false alarms
    for level in (0.01, 0.05, 0.1):
        assert np.mean(p < level) <= level * 1.5 + 0.005
