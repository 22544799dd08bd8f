"""The birthday test against brute force in float64; duplicates, support estimates, memory, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastndb
from fastndb.kernels.pairwise import nearest_other, smallest_pairs


def brute_force_pairs(x: np.ndarray, metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
    """All pairs i < j sorted by float64 distance (independent reference: numpy, no expansion)."""
    x = x.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    i, j = np.triu_indices(len(x), k=1)
    d = np.sqrt(((x[i] - x[j]) ** 2).sum(axis=1))
    if metric == "cosine":
        d = d**2 / 2
    order = np.argsort(d, kind="stable")
    return np.stack([i[order], j[order]], axis=1), d[order]


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("block_rows", [37, 128, None])
def test_closest_pairs_match_brute_force_float64(metric, block_rows):
    rng = np.random.default_rng(hash((metric, block_rows)) % 2**32)
    x = rng.normal(size=(301, 24)).astype(np.float32) * rng.uniform(0.5, 3.0)
    result = fastndb.birthday(x, num_pairs=40, metric=metric, block_rows=block_rows)
    pairs, distances = brute_force_pairs(x, metric)
    assert result.pairs.tolist() == pairs[:40].tolist()
    np.testing.assert_allclose(result.distances.numpy(), distances[:40], rtol=1e-10, atol=1e-12)
    assert result.distances.dtype == torch.float64 and result.pairs.dtype == torch.int64
    assert bool((result.pairs[:, 0] < result.pairs[:, 1]).all())


def test_float64_input_and_batches_give_the_same_pairs():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(250, 12))
    as64 = fastndb.birthday(x, num_pairs=10)
    batched = fastndb.birthday([torch.from_numpy(x[:100]), torch.from_numpy(x[100:])], num_pairs=10)
    assert torch.equal(as64.pairs, batched.pairs) and torch.equal(as64.distances, batched.distances)
    assert as64.pairs.tolist() == brute_force_pairs(x)[0][:10].tolist()


def test_planted_exact_and_near_duplicates_are_all_found_with_large_norms():
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(3000, 64)) * 30 + 500).astype(np.float32)  # norms ~4000: the expansion is not exact
    sources, exact_copies, near_copies = [5, 77, 1200, 2999, 10], [100, 1500, 2000, 2500, 42], [7, 8, 9, 11, 12]
    x[exact_copies] = x[sources]
    x[near_copies] = x[sources] + rng.normal(size=(5, 64)).astype(np.float32) * 1e-2
    result = fastndb.birthday(x, num_pairs=30, threshold=1.0)
    found = {tuple(p) for p in result.pairs[:15].tolist()}
    planted = {tuple(sorted(p)) for p in zip(sources, exact_copies, strict=True)} | {tuple(sorted(p)) for p in
                                                                          zip(sources, near_copies, strict=True)}
    planted |= {tuple(sorted(p)) for p in zip(exact_copies, near_copies, strict=True)}  # copies of one source pair up too
    assert planted <= found
    assert result.distances[:5].tolist() == [0.0] * 5  # exact duplicates give exactly 0
    assert result.num_duplicates == 15 and not bool(result.distances.isnan().any())


def test_identical_inputs_give_zero_not_nan_and_a_support_of_one():
    x = torch.full((60, 16), 3.7)
    result = fastndb.birthday(x, num_pairs=25, threshold=0.0)
    assert result.distances.tolist() == [0.0] * 25
    assert result.num_duplicates == 60 * 59 // 2 and result.duplicate_rate == 1.0
    assert result.support_estimate == pytest.approx(1.0)
    cosine = fastndb.birthday(x, num_pairs=5, metric="cosine", threshold=0.0)
    assert cosine.distances.tolist() == [0.0] * 5


def test_duplicate_count_matches_brute_force_near_the_threshold():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    _, distances = brute_force_pairs(x)
    for threshold in (float(distances[10]), float(distances[500]), float((distances[99] + distances[100]) / 2)):
        result = fastndb.birthday(x, num_pairs=5, threshold=threshold, block_rows=64)
        assert result.num_duplicates == int((distances <= threshold).sum())


@pytest.mark.parametrize("support", [3000, 20000])
def test_support_estimate_recovers_a_known_discrete_support(support):
    points = torch.randn(support, 16, generator=torch.Generator().manual_seed(support)) * 10
    covered, estimates = 0, []
    for seed in range(10):
        draw = torch.randint(support, (1500,), generator=torch.Generator().manual_seed(seed))
        result = fastndb.birthday(points[draw], num_pairs=5, threshold=1e-3)
        low, high = result.support_interval
        covered += low <= support <= high
        estimates.append(result.support_estimate)
    assert covered >= 8  # 95% intervals: 10 of 10 expected, 8 allows for chance
    assert 0.8 < np.median(estimates) / support < 1.25


def test_no_duplicates_gives_an_infinite_estimate_with_a_finite_lower_bound():
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    result = fastndb.birthday(x, threshold=0.0)
    assert result.num_duplicates == 0 and math.isinf(result.support_estimate)
    low, high = result.support_interval
    assert math.isinf(high) and low == pytest.approx(200 * 199 / 2 / 3.6889, rel=1e-3)


def test_threshold_from_real_data_separates_a_copying_generator():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(6000, 32, generator=g)
    healthy = torch.randn(1000, 32, generator=g)
    copier = real[torch.randint(150, (1000,), generator=g)] + 1e-3 * torch.randn(1000, 32, generator=g)
    threshold = fastndb.duplicate_threshold(real, quantile=0.01, num_samples=1000)
    shuffled = fastndb.duplicate_threshold(real.flip(0), quantile=0.01, num_samples=1000)
    assert threshold == shuffled  # the real subset is chosen by content
    assert fastndb.birthday(healthy, threshold=threshold).num_duplicates <= 10
    collapsed = fastndb.birthday(copier, threshold=threshold)
    assert collapsed.num_duplicates > 1000 and collapsed.support_estimate < 300


def test_result_to_dict_is_json_ready():
    result = fastndb.birthday(torch.randn(50, 4), num_pairs=3, threshold=0.5)
    payload = json.loads(json.dumps(result.to_dict(python=True)))
    assert payload["pairs"] == result.pairs.tolist() and payload["num_samples"] == 50
    assert "support_estimate" in repr(result)


def test_kernels_against_brute_force():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(157, 5)).astype(np.float32)
    listed = []

    def settle(pairs):  # every pair in the band counts: the band is the single value 1.0
        listed.append(pairs)
        return torch.tensor(pairs.shape[0])

    found = smallest_pairs(torch.from_numpy(x), 20, block_rows=31, count_band=(1.0, 1.0), settle=settle)
    pairs, distances = brute_force_pairs(x)
    assert found.pairs.tolist() == pairs[:20].tolist()
    assert int(found.num_below) == int((distances**2 <= 1.0).sum())
    assert all(bool((p[:, 0] < p[:, 1]).all()) for p in listed)
    full = np.sqrt(((x[:, None].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1))
    np.fill_diagonal(full, np.inf)
    assert nearest_other(torch.from_numpy(x), block_rows=40).tolist() == full.argmin(axis=1).tolist()


def test_errors_name_the_argument():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="samples: expected at least 2 samples to form a pair, got 1"):
        fastndb.birthday(x[:1])
    with pytest.raises(ValueError, match=r"num_pairs: expected at most s\(s-1\)/2 = 45 pairs for s=10, got 46"):
        fastndb.birthday(x, num_pairs=46)
    with pytest.raises(ValueError, match="threshold: expected a distance >= 0, got -1"):
        fastndb.birthday(x, threshold=-1)
    with pytest.raises(TypeError, match="threshold: expected a finite number or None, got 'small'"):
        fastndb.birthday(x, threshold="small")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metric: expected one of"):
        fastndb.birthday(x, metric="manhattan")
    with pytest.raises(ValueError, match=r"samples: metric='cosine' needs non-zero samples, got 1 all-zero"):
        fastndb.birthday(torch.cat([x, torch.zeros(1, 3)]), metric="cosine")
    with pytest.raises(ValueError, match="samples: expected finite values"):
        fastndb.birthday(torch.tensor([[0.0], [float("nan")]]))
    with pytest.raises(ValueError, match="quantile"):
        fastndb.duplicate_threshold(x, quantile=1.5)


def test_peak_memory_for_30000_samples_stays_far_below_s_squared(tmp_path):
    script = Path(__file__).with_name("birthday_memory.py")
    out = subprocess.run([sys.executable, str(script), "30000", "256"], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    measured = json.loads(out.strip().splitlines()[-1])
    s_squared_bytes = 30000**2 * 4
    assert measured["peak_increase_bytes"] < 0.05 * s_squared_bytes, measured
