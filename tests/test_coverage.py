"""Precision, recall, density, coverage: equal to the ``prdc`` package and to float64 references, exact on ties and
duplicates, bounded in memory, on every face."""

from __future__ import annotations

import contextlib
import io
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastndb
from fastndb._core.statistics import expected_null_coverage
from tests.conftest import mixture

prdc_package = pytest.importorskip("prdc")


def _reference(real: np.ndarray, fake: np.ndarray, k: int) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the sizes
        return prdc_package.compute_prdc(real, fake, k)


def _cases() -> dict:
    rng = np.random.default_rng(0)
    duplicated = np.repeat(rng.normal(size=(120, 8)), 6, axis=0)  # every sample 6 times: radii 0 for k < 6
    return {
        "random": (rng.normal(size=(1400, 16)), rng.normal(size=(1100, 16)) * 1.2 + 0.2),
        # copies within each set (radii of 0), none across the sets
        "duplicates": (duplicated, np.repeat(rng.normal(size=(100, 8)) * 1.1, 5, axis=0)),
        # a generator that replays real samples: a fake copy of a real sample sits exactly at the radii of its
        # neighbours, where prdc's answer depends on its rounding (cross and self distances are computed
        # differently); the float64 reference decides these exactly, and so must we
        "memorised": (duplicated, np.concatenate([duplicated[:300], rng.normal(size=(200, 8))])),
        "ties": (rng.integers(0, 4, size=(900, 5)).astype(np.float64),  # integer lattice: many equal distances
                 rng.integers(0, 4, size=(700, 5)).astype(np.float64)),
        "mixture": (mixture(1500, 32, seed=1), mixture(1000, 32, seed=2, keep_modes=6)),
    }


@pytest.mark.parametrize("case", ["random", "duplicates", "ties", "mixture"])
@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_equals_the_prdc_package(case, k):
    real, fake = _cases()[case]
    got = fastndb.prdc(torch.from_numpy(real), torch.from_numpy(fake), nearest_k=k, block_rows=512)
    expected = _reference(real, fake, k)
    for key, value in expected.items():
        assert abs(getattr(got, key) - float(value)) <= 1e-6, (key, getattr(got, key), value)


def _brute(real: np.ndarray, fake: np.ndarray, k: int, inclusive: bool) -> dict:
    """Float64 reference from the full distance matrices (small inputs only)."""
    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    r = np.sort(dist(real, real), axis=1)[:, k]
    s = np.sort(dist(fake, fake), axis=1)[:, k]
    d = dist(real, fake)
    less = np.less_equal if inclusive else np.less
    in_real = less(d, r[:, None])
    in_fake = less(d, s[None, :])
    return {"real_radii": r, "fake_radii": s, "real_covered": in_real.any(1), "fake_density": in_real.sum(0),
            "fake_realistic": in_real.any(0), "real_recalled": in_fake.any(1)}


@pytest.mark.parametrize("inclusive", [False, True])
@pytest.mark.parametrize("case", ["random", "duplicates", "ties", "memorised"])
def test_per_sample_outcomes_equal_a_float64_reference(case, inclusive):
    real, fake = (a[:400] for a in _cases()[case])
    got = fastndb.prdc(torch.from_numpy(real).float(), torch.from_numpy(fake).float(), nearest_k=3,
                       inclusive=inclusive, block_rows=128)
    expected = _brute(real.astype(np.float32).astype(np.float64), fake.astype(np.float32).astype(np.float64), 3,
                      inclusive)
    for key, value in expected.items():
        ours = getattr(got, key).numpy()
        if ours.dtype.kind == "f":
            np.testing.assert_allclose(ours, value, rtol=1e-6, atol=1e-12, err_msg=key)
        else:
            assert np.array_equal(ours, value), key
    assert got.precision == expected["fake_realistic"].mean() and got.coverage == expected["real_covered"].mean()


def test_inclusive_differs_from_strict_only_at_ties():
    real, fake = _cases()["ties"]
    strict = fastndb.prdc(torch.from_numpy(real), torch.from_numpy(fake), nearest_k=3)
    inclusive = fastndb.prdc(torch.from_numpy(real), torch.from_numpy(fake), nearest_k=3, inclusive=True)
    assert inclusive.coverage > strict.coverage and inclusive.precision >= strict.precision  # the lattice ties
    real, fake = _cases()["random"]
    a = fastndb.prdc(torch.from_numpy(real), torch.from_numpy(fake), nearest_k=3)
    b = fastndb.prdc(torch.from_numpy(real), torch.from_numpy(fake), nearest_k=3, inclusive=True)
    assert a.scores() == b.scores()  # continuous data: no distance equals a radius


def test_the_null_expectations_hold():
    coverage, density = [], []
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        result = fastndb.prdc(torch.randn(300, 6, generator=g), torch.randn(200, 6, generator=g), nearest_k=3)
        coverage.append(result.coverage)
        density.append(result.density)
    assert abs(statistics.mean(coverage) - expected_null_coverage(3, 300, 200)) < 0.02
    assert abs(statistics.mean(density) - 1.0) < 0.05
    assert result.expected_null_coverage == expected_null_coverage(3, 300, 200)


def test_dropped_modes_lower_coverage_and_recall_not_precision():
    real = torch.from_numpy(mixture(3000, 16, num_modes=10, seed=0))
    healthy = fastndb.prdc(real, torch.from_numpy(mixture(2000, 16, num_modes=10, seed=1)))
    dropped = fastndb.prdc(real, torch.from_numpy(mixture(2000, 16, num_modes=10, seed=1, keep_modes=5)))
    assert dropped.coverage < healthy.coverage - 0.3 and dropped.recall < healthy.recall - 0.3
    assert dropped.precision > 0.8 * healthy.precision  # what it makes is still realistic
    uncovered = ~dropped.real_covered
    assert 0.3 < float(uncovered.double().mean()) < 0.7  # the missing half of the real samples, listed


def test_feature_space_and_value_range_follow_the_conventions():
    real, fake = (torch.from_numpy(a).float() for a in _cases()["mixture"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(32, 8), torch.nn.Tanh())
    got = fastndb.prdc(real, fake, feature=net)
    with torch.no_grad():
        expected = fastndb.prdc(torch.cat([net(b) for b in real.split(64)]), torch.cat([net(b) for b in fake.split(64)]))
    assert got.scores() == expected.scores()
    images = (torch.rand(600, 1, 6, 6, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    tanh = images[:300].float() / 127.5 - 1
    with pytest.raises(ValueError, match=r"fake: values in .* but real holds integer images"):
        fastndb.prdc(images, tanh)
    assert fastndb.prdc(images, tanh, value_range=(-1, 1)).coverage == fastndb.prdc(images, images[:300]).coverage


def test_extreme_scales_and_subsets():
    real, fake = (torch.from_numpy(a) for a in _cases()["random"])
    base = fastndb.prdc(real, fake)
    for scale in (1e-30, 1e30):
        scaled = fastndb.prdc(real * scale, fake * scale)
        assert scaled.scores() == base.scores()
        torch.testing.assert_close(scaled.real_radii / scale, base.real_radii, rtol=1e-12, atol=0)
    subset = fastndb.prdc(real, fake, num_samples=500, seed=1)
    assert subset.num_real == subset.num_fake == 500
    assert fastndb.prdc(real.flip(0), fake.flip(0), num_samples=500, seed=1).scores() == subset.scores()  # by content


def test_errors_name_the_argument():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"nearest_k: expected fewer than the 10 real samples"):
        fastndb.prdc(x, torch.randn(20, 3), nearest_k=10)
    with pytest.raises(ValueError, match=r"nearest_k: expected fewer than the 4 fake samples"):
        fastndb.prdc(x, torch.randn(4, 3), nearest_k=5)
    with pytest.raises(ValueError, match="fake: expected 3 features per sample like real, got 4"):
        fastndb.prdc(x, torch.randn(10, 4))
    with pytest.raises(TypeError, match="mixed array libraries"):
        fastndb.prdc(x, x.numpy())
    with pytest.raises(ValueError, match="expected finite values"):
        fastndb.prdc(x, torch.full((10, 3), float("nan")))
    with pytest.raises(TypeError, match="inclusive: expected True or False"):
        fastndb.prdc(x, x, inclusive=1)
    with pytest.raises(ValueError, match="nearest_k"):
        fastndb.prdc(x, x, nearest_k=0)


def test_memory_stays_bounded_when_every_sample_is_the_same(tmp_path):
    script = Path(__file__).with_name("coverage_memory.py")
    done = subprocess.run([sys.executable, str(script), "20000", "16", "same"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    peak_mib, coverage, _seconds = (float(v) for v in done.stdout.split())
    assert coverage == 0.0  # nothing lies strictly inside a ball of radius 0
    assert peak_mib < 200, peak_mib  # the 20,000 x 20,000 float32 matrix alone would take 1526 MiB


def test_the_metric_equals_the_function_and_round_trips():
    pytest.importorskip("torchmetrics")
    from fastndb.metrics import PRDCMetric

    real, fake = (torch.from_numpy(a).float() for a in _cases()["mixture"])
    metric = PRDCMetric(nearest_k=4, reset_real_features=False)
    for r in real.split(400):
        metric.update(r, real=True)
    for f in fake.split(300):
        metric.update(f, real=False)
    out = metric.compute()
    expected = fastndb.prdc(real, fake, nearest_k=4)
    assert {k: float(v) for k, v in out.items()} == expected.scores()
    again = PRDCMetric(nearest_k=4)
    metric.persistent(True)
    again.load_state_dict(metric.state_dict())
    assert {k: float(v) for k, v in again.compute().items()} == expected.scores()
    metric.reset()  # real samples kept: fake again
    metric.update(fake, real=False)
    assert float(metric.compute()["coverage"]) == expected.coverage
    capped = PRDCMetric(nearest_k=4, max_samples=500)
    capped.update(real, real=True)
    capped.update(fake, real=False)
    capped.compute()
    assert capped.result.num_real == capped.result.num_fake == 500
    with pytest.raises(ValueError, match=r"compute: no fake samples yet"):
        empty = PRDCMetric()
        empty.update(real, real=True)
        empty.compute()
