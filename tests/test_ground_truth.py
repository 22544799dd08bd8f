"""Known modes: the 2-D protocols' settings, the mode counters against what the samples were drawn from."""

from __future__ import annotations

import math

import pytest
import torch

from fastndb.demo.ground_truth import GRID, RING, mode_statistics, stacked_digits, stacked_mode_statistics


def test_the_protocols_have_the_published_settings():
    assert RING.num_modes == 8 and RING.std == 0.01
    torch.testing.assert_close(RING.means.norm(dim=1), torch.ones(8, dtype=torch.float64))
    assert GRID.num_modes == 25 and GRID.std == 0.05
    assert sorted(set(GRID.means[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]


@pytest.mark.parametrize("protocol", [RING, GRID], ids=["ring", "grid"])
def test_samples_of_the_mixture_capture_every_mode_with_the_gaussian_share(protocol):
    stats = mode_statistics(protocol.sample(20_000, seed=1), protocol)
    assert stats.modes_captured == protocol.num_modes
    assert abs(stats.high_quality - (1 - math.exp(-4.5))) < 0.005  # P(chi2 with 2 dof < 9) within 3 std
    assert stats.reverse_kl < 0.01


@pytest.mark.parametrize("keep", [1, 3, 6])
def test_dropped_and_collapsed_modes_are_counted(keep):
    stats = mode_statistics(GRID.sample(10_000, seed=2, keep=keep), GRID)
    assert stats.modes_captured == keep
    assert abs(stats.reverse_kl - math.log(25 / keep)) < 0.02  # uniform over keep of 25 modes
    assert int(stats.counts[keep:].sum()) == 0


def test_samples_between_the_modes_are_not_high_quality():
    off = torch.rand(5000, 2, generator=torch.Generator().manual_seed(0)) * 12 - 6
    stats = mode_statistics(off, GRID)
    area_share = 25 * math.pi * (3 * GRID.std) ** 2 / 12**2  # the discs within 3 std of a mode: 1.2% of the square
    assert abs(stats.high_quality - area_share) < 0.006
    weights = torch.zeros(8, dtype=torch.float64)
    weights[3] = 1.0
    collapsed = mode_statistics(RING.sample(1000, weights=weights), RING)
    assert collapsed.modes_captured == 1 and abs(collapsed.reverse_kl - math.log(8)) < 1e-12


def test_stacked_digits_have_1000_modes_and_the_classifier_counts_them():
    images, modes = stacked_digits(10_000, seed=0)
    assert images.shape == (10_000, 3, 16, 16) and float(images.min()) >= 0 and float(images.max()) <= 1
    assert int(modes.unique().numel()) > 990
    stats = stacked_mode_statistics(images)
    assert stats.num_modes == 1000 and stats.modes_captured > 990 and stats.reverse_kl < 0.1
    half, _ = stacked_digits(10_000, seed=1)
    from fastndb._core.digits_net import digits_dataset

    train_x, train_y, test_x, test_y = digits_dataset()
    x, y = torch.cat([train_x, test_x]), torch.cat([train_y, test_y])
    x = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    low = stacked_digits(10_000, seed=2, images=x[y < 5], labels=y[y < 5])[0]  # digits 0-4 in every channel
    fewer = stacked_mode_statistics(low)
    assert fewer.modes_captured < 200 and abs(fewer.reverse_kl - math.log(1000 / 125)) < 0.3  # 125 modes of 1000


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"samples: expected \(n, 2\) points"):
        mode_statistics(torch.zeros(5, 3), RING)
    with pytest.raises(ValueError, match="keep: expected at most 8 modes"):
        RING.sample(10, keep=9)
    with pytest.raises(ValueError, match="weights: expected 8 non-negative numbers"):
        RING.sample(10, weights=torch.ones(3))
    with pytest.raises(ValueError, match=r"images: expected stacked digits \(n, 3, H, W\)"):
        stacked_mode_statistics(torch.zeros(2, 1, 8, 8))
