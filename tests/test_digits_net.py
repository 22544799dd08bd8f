"""The shipped digits network: it loads offline, classifies held-out digits, and trains deterministically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")

from fastndb._core.digits_net import FEATURES, WEIGHTS, digits_dataset, load_digits_net, train_digits_net  # noqa: E402

RECORD = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "digits_net.json"


def test_shipped_weights_classify_held_out_digits():
    net = load_digits_net()
    _, _, test_x, test_y = digits_dataset(0)
    with torch.no_grad():
        accuracy = float((net(test_x).argmax(dim=1) == test_y).to(torch.float64).mean())
    assert accuracy >= 0.97
    assert accuracy == pytest.approx(json.loads(RECORD.read_text())["held_out_accuracy"], abs=1e-9)
    assert WEIGHTS.stat().st_size < 1_000_000


def test_features_of_images_in_the_library_convention():
    net = load_digits_net()
    _, _, test_x, test_y = digits_dataset(0)
    large = torch.nn.functional.interpolate(test_x, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        features = net.features(large)
        accuracy = float((net(large).argmax(dim=1) == test_y).to(torch.float64).mean())
    assert features.shape == (test_x.shape[0], FEATURES) and torch.isfinite(features).all()
    assert accuracy >= 0.95  # 32 x 32 images, as the DCGAN demo draws them, are resized back
    with pytest.raises(ValueError, match=r"images: expected grey images of shape \(B, 1, H, W\)"):
        net.features(torch.rand(2, 3, 8, 8))


def test_training_is_deterministic():
    first, _ = train_digits_net(epochs=1, seed=3)
    again, _ = train_digits_net(epochs=1, seed=3)
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="digits network: no weights at .*nope.pt"):
        load_digits_net(tmp_path / "nope.pt")
