"""Figures: each returns (fig, ax), writes a non-blank PNG, and rejects what it cannot draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastndb

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import fastndb.plot  # noqa: E402


def _png_pixels(fig, path) -> np.ndarray:
    fig.savefig(path, dpi=60)
    import matplotlib.image

    return matplotlib.image.imread(path)


def _assert_not_blank(pixels: np.ndarray) -> None:
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert pixels[..., :3].std() > 0.05  # more than a background colour


def test_bin_proportions_png(tmp_path):
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(3000, 8, generator=g), torch.randn(1500, 8, generator=g) * 1.5
    result = fastndb.score(real, fake, num_bins=20)
    fig, ax = fastndb.plot.bin_proportions(result)
    assert result.ndb > 0
    red = [p for p in ax.patches if p.get_facecolor()[:3] == matplotlib.colors.to_rgb("tab:red")]
    assert len(red) == result.ndb  # the flagged bins are the highlighted ones
    _assert_not_blank(_png_pixels(fig, tmp_path / "bins.png"))


def test_birthday_pairs_png_and_shapes(tmp_path):
    g = torch.Generator().manual_seed(1)
    rgb = torch.rand(50, 3, 6, 6, generator=g)
    rgb[40] = rgb[2]
    result = fastndb.birthday(rgb, num_pairs=6, threshold=0.0)
    fig, ax = fastndb.plot.birthday_pairs(rgb, result)
    assert ax.images[0].get_array().shape == (13, 41, 3)
    assert "dup" in ax.get_xticklabels()[0].get_text()
    _assert_not_blank(_png_pixels(fig, tmp_path / "pairs.png"))
    flat = rgb.reshape(50, -1)
    fig, ax = fastndb.plot.birthday_pairs(flat, result, num_pairs=2)  # 108 = 3 x 6 x 6: found by itself
    assert ax.images[0].get_array().shape == (13, 13, 3)
    with pytest.raises(ValueError, match=r"image_shape: samples have 10 features"):
        fastndb.plot.birthday_pairs(torch.rand(50, 10), result)
    with pytest.raises(ValueError, match=r"image_shape: expected \(C, H, W\) or \(H, W\) with 108 values"):
        fastndb.plot.birthday_pairs(flat, result, image_shape=(5, 5))


def test_metric_history_errors():
    with pytest.raises(ValueError, match="values: expected at least one compute"):
        fastndb.plot.metric_history([])
    with pytest.raises(ValueError, match="key: 'ndb_ratio' is missing from values"):
        fastndb.plot.metric_history([{"js": 0.1}])
