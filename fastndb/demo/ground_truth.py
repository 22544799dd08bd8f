"""Generators whose modes are known, and the counters that say which modes a generator really captured.

The 2-D protocols of VEEGAN (Srivastava et al. 2017) as PacGAN (Lin et al. 2018) runs them, with the settings of
PacGAN's published code (``synthetic_data_experiments/2D*_GAN&PacGAN/config.py``):

* :data:`RING`: 8 Gaussians with means evenly on the unit circle, standard deviation 0.01;
* :data:`GRID`: 25 Gaussians with means on the 5 x 5 grid ``{-4, -2, 0, 2, 4}^2``, standard deviation 0.05.

A sample is *high quality* when it lies within 3 standard deviations of its nearest mode (the distance scaled by
the mode's standard deviation); a mode is *captured* when at least one high-quality sample is nearest to it; the
*reverse KL* is :math:`\\mathrm{KL}(\\hat p \\| u) = \\sum_m \\hat p_m \\log(M \\hat p_m)`, with
:math:`\\hat p` the histogram of the high-quality samples over the ``M`` modes and :math:`u` uniform, as
PacGAN reports it.

Stacked digits (the stacked-MNIST protocol of VEEGAN and PacGAN on scikit-learn's digits, since MNIST cannot be
downloaded here): three digits as the three channels of one image, 1,000 modes; a generated image's mode is the
triple of digit classes that a classifier (the shipped digits network) reads in its channels, and the reverse KL is
taken over the 1,000 modes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fastndb._core.checks import check_int


@dataclass(frozen=True)
class Protocol:
    """A mixture of isotropic Gaussians with known modes.

    Attributes:
        name: what it is called.
        means: ``(M, 2)`` mode means.
        std: the modes' standard deviation.
        source: where the settings come from.
    """

    name: str
    means: Tensor
    std: float
    source: str

    @property
    def num_modes(self) -> int:
        return int(self.means.shape[0])

    def sample(self, n: int, *, seed: int = 0, keep: int | None = None, weights: Tensor | None = None) -> Tensor:
        """``(n, 2)`` float32 samples; ``keep``: only the first ``keep`` modes (a generator that dropped the rest);
        ``weights``: other mode probabilities (``(M,)``, normalised here)."""
        n = check_int(n, "n", minimum=1)
        g = torch.Generator().manual_seed(seed)
        if weights is None:
            count = self.num_modes if keep is None else check_int(keep, "keep", minimum=1)
            if count > self.num_modes:
                raise ValueError(f"keep: expected at most {self.num_modes} modes, got {count}")
            weights = torch.zeros(self.num_modes, dtype=torch.float64)
            weights[:count] = 1.0
        elif weights.shape != (self.num_modes,) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError(f"weights: expected {self.num_modes} non-negative numbers with a positive sum, got "
                             f"{tuple(weights.shape)}")
        which = torch.multinomial(weights.double() / weights.double().sum(), n, replacement=True, generator=g)
        return (self.means[which] + self.std * torch.randn(n, 2, generator=g, dtype=torch.float64)).float()


RING = Protocol("ring of 8 Gaussians",
                torch.tensor([[math.cos(2 * math.pi * i / 8), math.sin(2 * math.pi * i / 8)] for i in range(8)],
                             dtype=torch.float64),
                0.01, "VEEGAN; PacGAN's code: means on the unit circle, std 0.01")
GRID = Protocol("5 x 5 grid of 25 Gaussians",
                torch.tensor([[float(i), float(j)] for i in range(-4, 5, 2) for j in range(-4, 5, 2)],
                             dtype=torch.float64),
                0.05, "VEEGAN; PacGAN's code: means on {-4, -2, 0, 2, 4}^2, std 0.05")


@dataclass(frozen=True)
class ModeStatistics:
    """What a generator's samples capture of known modes.

    Attributes:
        num_modes: ``M``.
        modes_captured: modes with at least one high-quality sample.
        high_quality: share of samples that are high quality (2-D protocols; ``nan`` for stacked digits).
        reverse_kl: :math:`\\mathrm{KL}(\\hat p \\| u)` of the (high-quality) mode histogram against uniform
            (``log M`` when everything falls in one mode, 0 for a perfectly even histogram).
        counts: ``(M,)`` int64 samples per mode.
    """

    num_modes: int
    modes_captured: int
    high_quality: float
    reverse_kl: float
    counts: Tensor

    def to_dict(self) -> dict:
        return {"num_modes": self.num_modes, "modes_captured": self.modes_captured,
                "high_quality": self.high_quality, "reverse_kl": self.reverse_kl, "counts": self.counts.tolist()}


def _from_counts(counts: Tensor, high_quality: float) -> ModeStatistics:
    total = int(counts.sum())
    if total == 0:
        return ModeStatistics(counts.numel(), 0, high_quality, math.inf, counts)
    p = counts.double() / total
    present = p > 0
    kl = float((p[present] * (p[present] * counts.numel()).log()).sum())
    return ModeStatistics(counts.numel(), int(present.sum()), high_quality, kl, counts)


def mode_statistics(samples: Tensor, protocol: Protocol, *, threshold: float = 3.0) -> ModeStatistics:
    """Modes captured, high-quality share and reverse KL of 2-D ``samples (n, 2)`` under ``protocol``.

    Example:
        >>> stats = mode_statistics(RING.sample(4000, seed=0, keep=5), RING)
        >>> stats.modes_captured, round(stats.high_quality, 2), round(stats.reverse_kl, 2)  # log(8/5) = 0.47
        (5, 0.99, 0.47)
    """
    if samples.dim() != 2 or samples.shape[1] != protocol.means.shape[1]:
        raise ValueError(f"samples: expected (n, {protocol.means.shape[1]}) points, got {tuple(samples.shape)}")
    scaled = torch.cdist(samples.double(), protocol.means.to(samples.device)) / protocol.std
    nearest, which = scaled.min(dim=1)
    good = nearest < threshold
    counts = torch.bincount(which[good], minlength=protocol.num_modes).cpu()
    return _from_counts(counts, float(good.double().mean()))


def stacked_digits(n: int, *, seed: int = 0, images: Tensor | None = None, labels: Tensor | None = None,
                   size: int = 16) -> tuple[Tensor, Tensor]:
    """``n`` stacked-digit images ``(n, 3, size, size)`` in [0, 1] and their modes ``(n,)`` (``100 a + 10 b + c``
    for the digits ``a, b, c`` of the channels): each channel an independently drawn digit.

    Args:
        n: images to make.
        seed: seed of the draws.
        images, labels: grey digits ``(N, 1, H, W)`` in [0, 1] and their classes (default: scikit-learn's
            digits, upsampled bilinearly to ``size``).
        size: edge of scikit-learn's digits after upsampling.
    """
    if images is None or labels is None:
        from fastndb._core.digits_net import digits_dataset

        train_x, train_y, test_x, test_y = digits_dataset()
        images, labels = torch.cat([train_x, test_x]), torch.cat([train_y, test_y])
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(images.shape[0], (n, 3), generator=g)
    stacked = torch.cat([images[picks[:, c]] for c in range(3)], dim=1).clamp(0, 1)
    modes = labels[picks[:, 0]] * 100 + labels[picks[:, 1]] * 10 + labels[picks[:, 2]]
    return stacked, modes


def stacked_mode_statistics(images: Tensor, classifier: torch.nn.Module | None = None) -> ModeStatistics:
    """Modes captured of 1,000 and the reverse KL of stacked-digit images ``(n, 3, H, W)`` in [0, 1], each channel
    read by ``classifier`` (default: the shipped digits network, 97.8% held-out accuracy).

    Example:
        >>> images, _ = stacked_digits(3000, seed=0)
        >>> stats = stacked_mode_statistics(images)
        >>> stats.num_modes, stats.modes_captured > 900
        (1000, True)
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected stacked digits (n, 3, H, W), got {tuple(images.shape)}")
    if classifier is None:
        from fastndb._core.digits_net import load_digits_net

        classifier = load_digits_net(device=images.device)
    with torch.no_grad():
        digits = [classifier(images[:, c : c + 1].float()).argmax(dim=1) for c in range(3)]
    modes = digits[0] * 100 + digits[1] * 10 + digits[2]
    return _from_counts(torch.bincount(modes, minlength=1000).cpu(), math.nan)
