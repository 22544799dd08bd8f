"""Effect sizes and the verdict: missing mass, its interval and test, per-bin differences, the coverage metrics'
intervals, the duplicate comparison, the power function, and the decision graded by a tolerance. Against
independent references (numpy/scipy formulas, published values) and small simulations that can fail; the long
calibration runs are in benchmarks/effect_sizes.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import fastndb
from fastndb._core.effects import (
    HIDDEN_Z,
    _hidden_deficit_end,
    bin_differences,
    missing_mass,
    samples_factor,
    two_group_fit,
)
from fastndb._core.statistics import compare_histograms, compare_rates, poisson_interval
from fastndb._core.verdict import check_tolerance, decide
from tests.conftest import mixture


def planted_counts(rng, k, n_r, n_f, emptied):
    """Reference and fake counts from Gamma(10) shares with ``emptied`` whole bins emptied, and the true mass."""
    r = rng.gamma(10.0, size=k)
    r /= r.sum()
    f = r.copy()
    f[:emptied] = 0
    f /= f.sum()
    return (torch.from_numpy(rng.multinomial(n_r, r)), torch.from_numpy(rng.multinomial(n_f, f)),
            float(np.clip(r - f, 0, None).sum()))


def test_plug_in_and_per_bin_differences_match_numpy():
    rng = np.random.default_rng(0)
    real, fake, _ = planted_counts(rng, 30, 3000, 4000, 3)
    result = compare_histograms(real, fake, alpha=0.05)
    r, f = real.numpy() / 3000, fake.numpy() / 4000
    assert result.missing.plug_in == pytest.approx(0.5 * np.abs(r - f).sum(), abs=1e-12)
    assert torch.allclose(result.difference, torch.from_numpy(f - r).double(), atol=1e-12)
    assert bool((result.difference_low <= result.difference).all() and (result.difference <= result.difference_high).all())


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 against 48/80, method 10: 0.0524 to 0.3339
    d, low, high = bin_differences(torch.tensor([48, 32]), torch.tensor([56, 14]))
    assert float(d[0]) == pytest.approx(0.2) and float(low[0]) == pytest.approx(0.0524, abs=5e-5)
    assert float(high[0]) == pytest.approx(0.3339, abs=5e-5)
    d, low, high = bin_differences(torch.tensor([40, 60]), torch.tensor([0, 100]))  # an emptied bin: not a point
    assert float(d[0]) == pytest.approx(-0.4) and float(low[0]) < -0.4 < float(high[0]) < 0


def test_the_estimate_is_exactly_zero_minus_chance_when_no_bin_is_affected():
    real = torch.full((10,), 1000)
    estimate, raw, fitted, shares, affected = two_group_fit(real, real * 2)
    assert float(raw) == 0.0 and not bool(affected.any()) and -0.01 < float(estimate) < 0
    assert torch.allclose(fitted, shares)


def test_large_samples_recover_the_planted_mass():
    rng = np.random.default_rng(1)
    for emptied in (1, 4, 12):
        real, fake, truth = planted_counts(rng, 40, 400_000, 400_000, emptied)
        m = missing_mass(real, fake)
        assert m.estimate == pytest.approx(truth, abs=0.003) and m.low <= truth <= m.high
        assert m.emptied_bins == emptied and m.emptied_mass == pytest.approx(truth, abs=0.003)
        assert m.p_value < 0.01 and m.high - m.low < 0.01


def test_interval_coverage_and_null_rate_in_a_small_simulation():
    """60 draws per case (the benchmark runs 500): coverage of 95% intervals in [0.85, 1] and the interval
    excluding 0 under the null in at most 10 of 60."""
    rng = np.random.default_rng(2)
    for emptied in (0, 3, 12):
        hits = excluded = 0
        for draw in range(60):
            real, fake, truth = planted_counts(rng, 50, 1500, 2500, emptied)
            m = missing_mass(real, fake, seed=draw)
            hits += m.low - 1e-9 <= truth <= m.high + 1e-9
            excluded += m.low > 0
        assert hits >= 51, (emptied, hits)
        if emptied == 0:
            assert excluded <= 10


def test_half_emptied_bins_near_the_threshold_stay_inside_the_interval():
    """Mixed drops: 6 bins lose half their share, which puts them near the selection's threshold (z about -2.6), and
    3 are emptied. The selection misses about half of the half-emptied ones: on these 60 draws the score interval
    alone covers the truth in 41, with the hidden-deficit end in 55."""
    rng = np.random.default_rng(4)
    hits = 0
    for draw in range(60):
        r = rng.gamma(10.0, size=62)
        r /= r.sum()
        f = r.copy()
        f[:3] = 0
        f[3:9] *= 0.5
        f[9:] *= (1 - f[:9].sum()) / f[9:].sum()
        truth = float(np.clip(r - f, 0, None).sum())
        real, fake = torch.from_numpy(rng.multinomial(1250, r)), torch.from_numpy(rng.multinomial(2500, f))
        m = missing_mass(real, fake, seed=draw)
        hits += m.low - 1e-9 <= truth <= m.high + 1e-9
    assert hits >= 54, hits


def test_hidden_deficit_end_is_the_bootstrap_formula():
    """The upper end from :func:`_hidden_deficit_end` is estimate - bias + z * sd of the two-group estimates on
    histograms drawn from the model that keeps the under-filled bins below -HIDDEN_Z, recomputed here."""
    rng = np.random.default_rng(5)
    real, fake, _ = planted_counts(rng, 40, 2000, 3000, 2)
    r, f = real.double(), fake.double()
    estimate, _, fitted, shares, affected = two_group_fit(r, f)
    end = _hidden_deficit_end(r, f, estimate, fitted, affected, 1.96, 300, torch.Generator().manual_seed(9))
    fake_shares = f / f.sum()
    ratio = fake_shares[~affected].sum() / shares[~affected].sum()
    pi = ratio * 3000 / (ratio * 3000 + 2000)
    z = (f - (r + f) * pi) / torch.sqrt((r + f) * pi * (1 - pi))
    model = torch.where(affected | (z < -HIDDEN_Z), fake_shares, ratio * shares)
    model = model / model.sum()
    g = torch.Generator().manual_seed(9)
    boot_r = torch.poisson((shares * 2000).expand(300, 40).contiguous(), generator=g)
    boot_f = torch.poisson((model * 3000).expand(300, 40).contiguous(), generator=g)
    boot = two_group_fit(boot_r, boot_f)[0]
    truth = (shares - model).clamp_min(0).sum()
    assert float(end) == pytest.approx(float(estimate - (boot.nanmean() - truth) + 1.96 * boot.std()), abs=1e-12)


def test_the_null_test_is_calibrated():
    rng = np.random.default_rng(3)
    p = [missing_mass(*planted_counts(rng, 40, 2000, 2000, 0)[:2], seed=s).p_value for s in range(100)]
    assert np.mean(np.array(p) <= 0.05) <= 0.12 and np.mean(np.array(p) <= 0.5) == pytest.approx(0.5, abs=0.15)


def test_compare_rates_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for count, exposure, ref, ref_exposure in ((10, 1.0, 2, 1.0), (3, 500.0, 9, 2000.0), (0, 1.0, 4, 3.0)):
        p, ratio, low, high = compare_rates(count, exposure, ref, ref_exposure)
        n, share = count + ref, exposure / (exposure + ref_exposure)
        assert p == pytest.approx(stats.binomtest(count, n, share, alternative="greater").pvalue, rel=1e-9)
        pi_low = stats.beta.ppf(0.025, count, n - count + 1) if count else 0.0
        pi_high = stats.beta.ppf(0.975, count + 1, n - count) if count < n else 1.0
        assert low == pytest.approx(pi_low * ref_exposure / ((1 - pi_low) * exposure), rel=1e-6)
        assert high == pytest.approx(pi_high * ref_exposure / ((1 - pi_high) * exposure), rel=1e-6)
        assert ratio == (math.inf if ref == 0 else (count / exposure) / (ref / ref_exposure))
    assert compare_rates(0, 1.0, 0, 1.0)[0] == 1.0


def test_duplicate_rate_interval_is_garwoods():
    x = torch.cat([torch.zeros(4, 3), torch.randn(60, 3, generator=torch.Generator().manual_seed(0)) * 10])
    result = fastndb.birthday(x, threshold=1e-6)
    pairs = 64 * 63 / 2
    low, high = poisson_interval(result.num_duplicates)
    assert result.num_duplicates == 6 and result.duplicate_rate_interval == pytest.approx((low / pairs, high / pairs))


def test_coverage_metrics_carry_split_half_intervals():
    stats = pytest.importorskip("scipy.stats")
    from fastndb._core.coverage import student_quantile

    assert student_quantile(0.975, 19) == pytest.approx(stats.t.ppf(0.975, 19), abs=1e-4)
    g = torch.Generator().manual_seed(0)
    out = fastndb.prdc(torch.randn(1500, 6, generator=g), torch.randn(1500, 6, generator=g))
    assert out.interval_subsets == 10 and out.confidence == 0.95
    for name in ("precision", "recall", "density", "coverage"):
        low, high = getattr(out, f"{name}_interval")
        assert low <= getattr(out, name) <= high and high - low < (0.3 if name == "density" else 0.15)
    assert 0.05 < out.coverage_p_value < 0.95 or abs(out.coverage - out.expected_null_coverage) < 0.03
    tiny = fastndb.prdc(torch.randn(30, 2, generator=g), torch.randn(30, 2, generator=g))
    assert tiny.coverage_interval is None and tiny.coverage_p_value is None and tiny.interval_subsets == 0
    assert fastndb.prdc(torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g), subsets=0
                        ).coverage_interval is None
    half = fastndb.prdc(torch.randn(1500, 6, generator=g), torch.randn(1500, 6, generator=g).abs())
    assert half.coverage_interval[1] < out.expected_null_coverage and half.coverage_p_value < 1e-6


def test_split_halves_are_the_metrics_on_independent_half_pairs():
    from fastndb._core.coverage import split_half_scores

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(301, 3, generator=g, dtype=torch.float64), torch.randn(200, 3, generator=g, dtype=torch.float64)
    halves, density_real = split_half_scores(x, y, nearest_k=5, inclusive=False, splits=2, seed=7)
    assert halves.shape == (2, 4, 4) and density_real.shape == (2, 2)
    generator = torch.Generator().manual_seed(7)
    for split in range(2):
        real, fake = torch.randperm(301, generator=generator), torch.randperm(200, generator=generator)
        reals, fakes = (x[real[:150]], x[real[150:300]]), (y[fake[:100]], y[fake[100:]])
        counts = {}
        for pair, (i, j) in enumerate(((0, 0), (1, 1), (0, 1), (1, 0))):
            direct = fastndb.prdc(reals[i], fakes[j], subsets=0)
            assert halves[split, pair].tolist() == pytest.approx(
                [direct.precision, direct.recall, direct.density, direct.coverage], abs=1e-12)
            counts[i, j] = direct.fake_density.double().numpy() / 5
        for j in (0, 1):  # the real side of density's variance: the shared-fake difference less the fake side's
            delta = counts[0, j] - counts[1, j]
            expected = (delta.mean() ** 2 - delta.var(ddof=1) / 100) / 2
            assert float(density_real[split, j]) == pytest.approx(expected, abs=1e-12)


def test_split_half_interval_is_the_scaled_difference_variance():
    """The interval against its formula in float64 numpy: the angular scale, the size ratio, Student's quantile."""
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(3)
    out = fastndb.prdc(torch.randn(801, 5, generator=g), torch.randn(600, 5, generator=g), subsets=6, seed=11)
    from fastndb._core.coverage import split_half_scores

    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(801, 5, generator=g), torch.randn(600, 5, generator=g)
    halves, density_real = split_half_scores(real, fake, nearest_k=5, inclusive=False, splits=6, seed=11)
    halves = halves.numpy()
    values = np.array([out.precision, out.recall, out.density, out.coverage])
    bounded = np.array([True, True, False, True])

    def phi(v):
        return np.where(bounded, np.arcsin(np.sqrt(np.clip(v, 0, 1))), v)

    h = phi(halves)
    first, second = h[:, 0] - h[:, 1], h[:, 2] - h[:, 3]
    ratio = 0.5 * (400 / 801 + 300 / 600)
    u, v = ratio * (((first + second) / 2) ** 2).mean(0) / 2, ratio * (((first - second) / 2) ** 2).mean(0) / 2
    # the total equals the scaled mean squared difference: d1^2 + d2^2 = 2 (u^2 + v^2)
    assert np.allclose(u + v, ratio * (np.concatenate([first, second]) ** 2).mean(0) / 2)
    variance, df = u + v, np.floor(np.minimum(11, 6 * (u + v) ** 2 / (u**2 + v**2)))
    # density: the fake side exactly at full size (M - 1 degrees of freedom), the real side's half-size variance
    # scaled (R)
    fake_side = np.var(out.fake_density.double().numpy() / 5, ddof=1) / 600
    real_side = 400 / 801 * max(float(density_real.mean()), 0.0)
    variance[2] = fake_side + real_side
    df[2] = np.floor(min(599, variance[2] ** 2 / (fake_side**2 / 599 + real_side**2 / 6)))
    se = np.sqrt(variance)
    q = stats.t.ppf(0.975, df)
    lo, hi = phi(values) - q * se, phi(values) + q * se
    lo = np.where(bounded, np.sin(np.clip(lo, 0, np.pi / 2)) ** 2, np.maximum(lo, 0))
    hi = np.where(bounded, np.sin(np.clip(hi, 0, np.pi / 2)) ** 2, hi)
    assert out.interval_df == tuple(int(d) for d in df) and min(df) >= 6
    for i, name in enumerate(("precision", "recall", "density", "coverage")):
        assert getattr(out, f"{name}_interval") == pytest.approx((lo[i], hi[i]), abs=2e-5)  # the t quantile to 1e-4
    assert out.interval_se == pytest.approx(tuple(se), rel=1e-9)
    assert out.coverage_se == pytest.approx(se[3] * np.sin(2 * phi(values)[3]), rel=1e-9)
    t = (phi(values)[3] - np.arcsin(np.sqrt(out.expected_null_coverage))) / se[3]
    assert out.coverage_p_value == pytest.approx(stats.t.cdf(t, df[3]), abs=1e-6)


def test_coverage_interval_covers_the_null_expectation():
    """Under the null the expected coverage is known exactly: 30 draws, the interval holds it in at least 26."""
    hits = 0
    for seed in range(30):
        g = torch.Generator().manual_seed(100 + seed)
        out = fastndb.prdc(torch.randn(500, 4, generator=g), torch.randn(500, 4, generator=g), seed=seed)
        low, high = out.coverage_interval
        hits += low <= out.expected_null_coverage <= high
    assert hits >= 26, hits


def test_detectable_mass_falls_with_the_sample_size_and_rises_with_the_tolerance():
    small = fastndb.detectable_missing_mass(62, 1250, 2500)
    large = fastndb.detectable_missing_mass(62, 5000, 10000)
    assert 0 < large < small < 0.06
    assert fastndb.detectable_missing_mass(62, 1250, 2500, tolerance=0.05) > small + 0.04


def test_the_decision_follows_the_interval_and_the_tolerance():
    rng = np.random.default_rng(4)
    real, fake, truth = planted_counts(rng, 40, 20_000, 20_000, 4)
    result = compare_histograms(real, fake, alpha=0.05)
    assert decide(result).decision == "missing" and decide(result).flagged
    assert decide(result, tolerance=0.5).decision == "within tolerance"
    near = decide(result, tolerance=result.missing.estimate)
    assert near.decision == "inconclusive" and near.samples_factor is None  # no finite size decides at the estimate
    null_real, null_fake, _ = planted_counts(rng, 40, 1000, 1000, 0)
    null = decide(compare_histograms(null_real, null_fake, alpha=0.05))
    assert null.decision != "missing" and not null.differs and null.headline.startswith("No difference")
    assert null.samples_factor is not None and null.samples_factor > 1
    assert set(null.tests) == {"histograms", "strongest bin", "NDB count", "missing mass"}
    assert null.p_value == pytest.approx(min(1.0, 4 * min(null.tests.values())))
    json.dumps(null.to_dict(python=True))


def test_samples_factor_reaches_the_decision():
    rng = np.random.default_rng(5)
    real, fake, _ = planted_counts(rng, 40, 1000, 1000, 1)
    m = missing_mass(real, fake)
    factor = samples_factor(m, 0.0)
    assert factor is not None and factor >= 1
    assert samples_factor(m, max(m.estimate, 0.0)) is None


@pytest.mark.parametrize("bad, error", [(-0.1, ValueError), (1.0, ValueError), (float("nan"), ValueError),
                                        ("5%", TypeError), (True, TypeError)])
def test_tolerance_is_validated_by_name(bad, error):
    with pytest.raises(error, match="tolerance"):
        check_tolerance(bad)
    with pytest.raises(error, match="tolerance"):
        fastndb.score(torch.randn(200, 2), torch.randn(200, 2), num_bins=4, tolerance=bad, cache=False)


def test_score_records_the_tolerance_and_the_missing_mass():
    real = torch.from_numpy(mixture(4000, 8, num_modes=8, seed=0))
    fake = torch.from_numpy(mixture(2000, 8, num_modes=8, seed=1, keep_modes=6))  # 2 of 8 modes: 25%
    result = fastndb.score(real, fake, tolerance=0.05, cache=False)
    assert result.tolerance == 0.05 and result.missing.low <= 0.25 <= result.missing.high
    verdict = fastndb.decide(result)
    assert verdict.tolerance == 0.05 and verdict.decision == "missing"
    assert verdict.missing.estimate == pytest.approx(0.25, abs=0.04)
    payload = result.to_dict(python=True)
    assert payload["missing"]["estimate"] == result.missing.estimate and payload["tolerance"] == 0.05
    json.dumps(payload)


def test_null_splits_rarely_differ():
    """Random halves of one mixture: the combined test says "different" in at most 4 of 30 (alpha = 0.05)."""
    x = torch.from_numpy(mixture(4000, 6, num_modes=10, seed=7))
    differs = 0
    for split in range(30):
        order = torch.randperm(4000, generator=torch.Generator().manual_seed(split))
        result = fastndb.score(x[order[:2000]], x[order[2000:]], seed=split, cache=False)
        differs += decide(result).differs
    assert differs <= 4, differs


def test_the_command_line_prints_the_verdict_and_takes_the_tolerance(tmp_path):
    np.save(tmp_path / "real.npy", mixture(2000, 4, num_modes=4, seed=0))
    np.save(tmp_path / "fake.npy", mixture(1000, 4, num_modes=4, seed=1, keep_modes=3))
    run = lambda *extra: subprocess.run([sys.executable, "-m", "fastndb", "score", "real.npy", "fake.npy",  # noqa: E731
                                         "--prdc-samples", "0", *extra], capture_output=True, text=True,
                                        cwd=tmp_path, timeout=300)
    out = run()
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Missing modes: about") and "with 80% power" in out.stdout
    relaxed = json.loads(run("--tolerance", "0.6", "--json").stdout)
    assert relaxed["verdict"]["decision"] == "within tolerance" and relaxed["tolerance"] == 0.6
    refused = run("--tolerance", "2")
    assert refused.returncode != 0 and "tolerance" in refused.stderr
