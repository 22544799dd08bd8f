"""Property-style sweep over shapes, dtypes, value ranges, scales and duplication for ``score``, ``birthday`` and the
metric: every call returns what a float64 reference computes, or raises a ValueError/TypeError naming the argument;
none allocates more than the bound the docs state (docs/reliability.md).
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

import fastndb
from tests.birthday_memory import peak_rss_bytes, reset_peak

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

scipy_stats = pytest.importorskip("scipy.stats")

ARGUMENT_NAMES = ("real", "fake", "samples", "num_bins", "num_pairs", "k", "value_range", "imgs")
DTYPES = ("float32", "float64", "float16", "uint8", "uint16", "int16")
SCALES = (1e-30, 1e-6, 1.0, 1e6, 1e30)
# the stated bound (docs/reliability.md): working memory beyond the inputs stays under this for these sizes
MEMORY_BOUND = 96 * 2**20
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def sample_sets(draw, max_rows: int = 240):
    """Two related sample sets with a drawn dtype, scale, shift and number of distinct rows."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    d = draw(st.integers(1, 10))
    n_real = draw(st.integers(1, max_rows))
    n_fake = draw(st.integers(1, max_rows))
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from(SCALES))
    distinct = draw(st.sampled_from([1, 2, 5, None]))
    shift = draw(st.sampled_from([0.0, 3.0]))
    pool = rng.normal(size=(distinct or n_real + n_fake, d))

    def draw_rows(n: int, offset: float) -> np.ndarray:
        rows = pool[rng.integers(pool.shape[0], size=n)] if distinct else rng.normal(size=(n, d))
        return rows + offset

    def cast(x: np.ndarray) -> np.ndarray:
        if dtype == "uint8":
            return np.clip(np.round(127 + 40 * x), 0, 255).astype(np.uint8)
        if dtype == "uint16":
            return np.clip(np.round(32767 + 9000 * x), 0, 65535).astype(np.uint16)
        if dtype == "int16":
            return np.round(1000 * x).astype(np.int16)
        with np.errstate(over="ignore"):
            return (x * scale).astype(dtype)

    return cast(draw_rows(n_real, 0.0)), cast(draw_rows(n_fake, shift)), seed


def _names_an_argument(err: Exception) -> bool:
    return bool(re.match(rf"^({'|'.join(ARGUMENT_NAMES)})\b", str(err))) or str(err).startswith("imgs (")


def _as_float64(x: np.ndarray) -> np.ndarray:
    """The samples as the library holds them, widened to float64: uint8 and uint16 read as x / 255 and x / 65535
    in float32 (the convention's conversion), everything else as it is."""
    if x.dtype in (np.uint8, np.uint16):
        return (x.astype(np.float32) / np.float32(np.iinfo(x.dtype).max)).astype(np.float64)
    return x.astype(np.float64)


def _check_assignment(fitted: fastndb.NDB, fake: np.ndarray, fake_counts: torch.Tensor) -> None:
    """Every fake sample went to a nearest bin (float64 distances; exact near-ties may go either way)."""
    feature_map = fitted.bins.feature_map
    x = torch.from_numpy(fake.reshape(fake.shape[0], -1))
    features = feature_map(x).double()
    centroids = fitted.centroids.double()
    d2 = torch.cdist(features, centroids).square()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels = fitted.assign(x)
    chosen = d2.gather(1, labels[:, None])[:, 0]
    best = d2.min(dim=1).values
    scale = features.square().sum(1) + centroids.square().sum(1).max()
    assert bool((chosen <= best + 1e-5 * scale + 1e-300).all())
    assert torch.equal(torch.bincount(labels, minlength=fitted.num_bins), fake_counts)


def _check_statistics(result: fastndb.NDBResult) -> None:
    """z, p-values and the chi-square test against scipy in float64."""
    r = result.real_counts.double().numpy()
    f = result.fake_counts.double().numpy()
    n_r, n_f = r.sum(), f.sum()
    pooled = (r + f) / (n_r + n_f)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_r + 1 / n_f))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(se > 0, (f / n_f - r / n_r) / se, 0.0)
    np.testing.assert_allclose(result.z.numpy(), z, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.p_values.numpy(), 2 * scipy_stats.norm.sf(np.abs(z)), rtol=1e-9, atol=1e-300)
    keep = (r + f) > 0
    if keep.sum() >= 2:
        chi2, p, dof, _ = scipy_stats.chi2_contingency(np.stack([r[keep], f[keep]]), correction=False)
        assert result.chi2 == pytest.approx(chi2, rel=1e-9, abs=1e-12) and result.chi2_dof == dof
        assert result.p_value == pytest.approx(p, rel=1e-6, abs=1e-300)


@SETTINGS
@given(sets=sample_sets(), num_bins=st.integers(2, 8), mode=st.sampled_from(["holdout", "original"]))
def test_score_agrees_with_a_float64_reference_or_names_the_argument(sets, num_bins, mode):
    real, fake, seed = sets
    before = reset_peak()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = fastndb.NDB(num_bins, mode=mode, seed=seed % 1000).fit(real)
            result = fitted.score(fake)
    except (ValueError, TypeError) as err:
        assert _names_an_argument(err), err
        return
    assert peak_rss_bytes() - before < MEMORY_BOUND
    assert result.num_real == int(result.real_counts.sum()) and result.num_fake == fake.shape[0]
    assert result.num_real == (real.shape[0] if mode == "original" else round(real.shape[0] * 0.5))
    _check_assignment(fitted, fake, result.fake_counts)
    _check_statistics(result)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cached = fastndb.score(real, fake, num_bins=num_bins, mode=mode, seed=seed % 1000)
    assert torch.equal(cached.fake_counts, result.fake_counts) and cached.ndb == result.ndb


def _pairwise_reference(x: np.ndarray) -> np.ndarray:
    """Squared distances of every pair i < j from float64 differences."""
    x64 = _as_float64(x.reshape(x.shape[0], -1))
    rows, cols = np.triu_indices(x64.shape[0], 1)
    with np.errstate(invalid="ignore", over="ignore"):
        return ((x64[rows] - x64[cols]) ** 2).sum(axis=1)


@SETTINGS
@given(sets=sample_sets(max_rows=160), threshold_kind=st.sampled_from(["none", "zero", "between"]))
def test_birthday_agrees_with_a_float64_reference_or_names_the_argument(sets, threshold_kind):
    _, samples, seed = sets
    reference = _pairwise_reference(samples) if samples.shape[0] >= 2 else np.zeros(0)
    threshold = None
    if threshold_kind == "zero":
        threshold = 0.0
    elif threshold_kind == "between" and reference.size and np.isfinite(reference).all():
        # a threshold halfway between two distances that differ by more than rounding: no boundary case
        with np.errstate(invalid="ignore", over="ignore"):
            digits = min(300, 9 - int(np.floor(np.log10(np.sqrt(reference).max() + 1e-300))))
            values = np.unique(np.round(np.sqrt(reference), digits))
        pick = values[min(len(values) - 1, seed % 7)]
        above = values[values > pick]
        threshold = float(2 * pick if above.size == 0 else (pick + above[0]) / 2)
        if not math.isfinite(threshold):
            threshold = None
    num_pairs = max(1, min(5, reference.size))
    before = reset_peak()
    try:
        result = fastndb.birthday(samples, num_pairs=num_pairs, threshold=threshold, block_rows=64)
    except (ValueError, TypeError) as err:
        assert _names_an_argument(err), err
        return
    assert peak_rss_bytes() - before < MEMORY_BOUND
    expected = np.sort(np.sqrt(reference))[:num_pairs]
    np.testing.assert_allclose(result.distances.numpy(), expected, rtol=1e-6, atol=0)
    if threshold is not None:
        assert result.num_duplicates == int((np.sqrt(reference) <= threshold).sum())


@SETTINGS
@given(sets=sample_sets(), num_bins=st.integers(2, 6), batch=st.integers(1, 97), mixed=st.booleans())
def test_metric_equals_score_or_names_the_argument(sets, num_bins, batch, mixed):
    from fastndb.metrics import NDBMetric

    real, fake, _ = sets
    metric = NDBMetric(num_bins=num_bins)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for start in range(0, real.shape[0], batch):
                metric.update(torch.from_numpy(real[start : start + batch]), real=True)
            for i, start in enumerate(range(0, fake.shape[0], batch)):
                part = torch.from_numpy(fake[start : start + batch])
                metric.update(part.double() if mixed and i % 2 and part.is_floating_point() else part, real=False)
            out = metric.compute()
            expected = fastndb.score(real, fake, num_bins=num_bins, cache=False)
    except (ValueError, TypeError) as err:
        assert _names_an_argument(err), err
        return
    assert torch.equal(metric.result.real_counts, expected.real_counts)
    assert torch.equal(metric.result.fake_counts, expected.fake_counts)
    assert int(out["ndb"]) == expected.ndb
