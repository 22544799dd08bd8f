"""A small digit classifier trained on scikit-learn's bundled digits, shipped with its weights: works offline.

It is the ``"digits"`` feature space of the feature-space work (its penultimate layer, 64 numbers per image) and
the classifier that counts modes in the ground-truth benchmarks. Training is deterministic
(``python benchmarks/train_digits_net.py`` rewrites ``fastndb/_core/weights/digits_cnn.pt``); the held-out
accuracy and the training time are recorded in ``benchmarks/results/digits_net.json``.

Input: ``(B, 1, H, W)`` grey images in [0, 1] (the library's value-range convention: ``uint8`` images as
``x / 255``; a ``tanh`` generator's output mapped from [-1, 1]), any size: they are resized to 16 x 16 with
antialiasing, as the 8 x 8 training digits are upsampled.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional

WEIGHTS = Path(__file__).parent / "weights" / "digits_cnn.pt"
INPUT_SIZE = 16
FEATURES = 64


class DigitsNet(nn.Module):
    """Three 3 x 3 convolutions (16, 32, 32 channels, the last two strided: 16 -> 8 -> 4 pixels), a 64-unit layer,
    a linear classifier over the 10 digits; :meth:`features` is the 64-unit layer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 4 * 4, FEATURES), nn.ReLU(),
        )
        self.classifier = nn.Linear(FEATURES, 10)

    @staticmethod
    def prepare(images: Tensor) -> Tensor:
        """``(B, 1, H, W)`` images in [0, 1] -> ``(B, 1, 16, 16)`` float32, centred at 0.5."""
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"images: expected grey images of shape (B, 1, H, W), got {tuple(images.shape)}")
        x = images.to(torch.float32)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = functional.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True,
                                       align_corners=False)
        return x - 0.5

    def features(self, images: Tensor) -> Tensor:
        """``(B, 64)`` penultimate-layer features of images in [0, 1]."""
        return self.body(self.prepare(images))

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 10)`` class logits of images in [0, 1]."""
        return self.classifier(self.features(images))


def load_digits_net(path: Path | str | None = None, device: torch.device | str = "cpu") -> DigitsNet:
    """The shipped (or a given) trained network, in eval mode.

    Raises:
        FileNotFoundError: the weights file is missing, naming where it was expected.
    """
    path = Path(path) if path is not None else WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"digits network: no weights at {path}; run python benchmarks/train_digits_net.py")
    net = DigitsNet()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.to(device).eval()


def digits_dataset(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's 1,797 digits as ``(N, 1, 8, 8)`` images in [0, 1] and labels, split 80/20 by a seeded
    permutation: ``(train_x, train_y, test_x, test_y)``."""
    from fastndb._core.optional import require

    data = require("sklearn.datasets", "the digits network").load_digits()
    images = torch.from_numpy(data.images).to(torch.float32)[:, None] / 16.0
    labels = torch.from_numpy(data.target).to(torch.int64)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * images.shape[0])
    train, test = order[:cut], order[cut:]
    return images[train], labels[train], images[test], labels[test]


def train_digits_net(*, epochs: int = 40, seed: int = 0) -> tuple[DigitsNet, float]:
    """Train deterministically on the 80% split (seeded initialisation and shuffling; CPU); returns the network and
    its accuracy on the held-out 20%."""
    train_x, train_y, test_x, test_y = digits_dataset(seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        net = DigitsNet()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(train_x.shape[0], generator=generator)
        for start in range(0, order.numel(), 64):
            batch = train_x[order[start : start + 64]]
            loss = functional.cross_entropy(net(batch), train_y[order[start : start + 64]])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(test_x).argmax(dim=1) == test_y).to(torch.float64).mean())
    return net, accuracy
