"""The DCGAN of Radford et al. (2016), as used in the mode-collapse experiments NDB comes from.

Generator: a latent vector ``(N, latent_size)`` -> ``ConvTranspose2d`` / ``BatchNorm2d`` / ``ReLU`` blocks that
double the resolution -> a last ``ConvTranspose2d`` and ``Tanh``: images ``(N, C, H, W)`` in [-1, 1].
Discriminator: strided ``Conv2d`` / ``BatchNorm2d`` (not on the first block) / ``LeakyReLU(0.2)`` blocks that halve
the resolution -> a last ``Conv2d`` and ``Sigmoid``: the probability ``(N,)`` that each image is real.
Sizes: 32 and 64 pixels start from a 4 x 4 map, 28 pixels (MNIST) from 7 x 7; any channel count. Weights start
as N(0, 0.02), batch-norm scales as N(1, 0.02) (:func:`init_weights`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

IMAGE_SIZES = {28: (7, 2), 32: (4, 3), 64: (4, 4)}  # image size -> (first map size, doubling blocks)


def _check_size(image_size: int) -> tuple[int, int]:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size: expected one of {sorted(IMAGE_SIZES)}, got {image_size}")
    return IMAGE_SIZES[image_size]


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02); batch-norm scale N(1, 0.02), shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """DCGAN generator.

    Args:
        latent_size: length of the latent vector (100 in the paper).
        channels: image channels ``C``.
        image_size: 28, 32 or 64.
        width: channels of the last hidden block (64 in the paper); earlier blocks double it.

    Example:
        >>> g = Generator(latent_size=8, channels=1, image_size=28, width=8)
        >>> g(torch.randn(2, 8)).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(self, latent_size: int = 100, channels: int = 1, image_size: int = 32, width: int = 64) -> None:
        super().__init__()
        start, blocks = _check_size(image_size)
        self.latent_size, self.channels, self.image_size = latent_size, channels, image_size
        hidden = width * 2 ** (blocks - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_size, hidden, start, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(True),
        ]
        for _ in range(blocks - 1):
            layers += [nn.ConvTranspose2d(hidden, hidden // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(hidden // 2),
                       nn.ReLU(True)]
            hidden //= 2
        layers += [nn.ConvTranspose2d(hidden, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: Tensor) -> Tensor:
        """Images ``(N, C, H, W)`` in [-1, 1] from latents ``(N, latent_size)``."""
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """DCGAN discriminator.

    Args:
        channels: image channels ``C``.
        image_size: 28, 32 or 64.
        width: channels of the first block (64 in the paper); later blocks double it.

    Example:
        >>> d = Discriminator(channels=3, image_size=64, width=8)
        >>> d(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2])
    """

    def __init__(self, channels: int = 1, image_size: int = 32, width: int = 64) -> None:
        super().__init__()
        start, blocks = _check_size(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        hidden = width
        for _ in range(blocks - 1):
            layers += [nn.Conv2d(hidden, hidden * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(hidden * 2),
                       nn.LeakyReLU(0.2, True)]
            hidden *= 2
        layers += [nn.Conv2d(hidden, 1, start, 1, 0, bias=False), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """Probability ``(N,)`` that each image is real."""
        return self.net(x).reshape(-1)


def sample(generator: Generator, num_samples: int, *, generator_rng: torch.Generator | None = None,
           latents: Tensor | None = None, batch_size: int = 1024) -> Tensor:
    """``num_samples`` images from ``generator`` in eval mode, on its device, without gradients.

    Latents are ``latents`` if given, else drawn on the generator's device (from ``generator_rng`` if given, which
    must live there too), so nothing crosses to the host.
    """
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            parts = []
            for start in range(0, num_samples, batch_size):
                n = min(batch_size, num_samples - start)
                z = (latents[start : start + n] if latents is not None
                     else torch.randn(n, generator.latent_size, device=device, generator=generator_rng))
                parts.append(generator(z))
            return torch.cat(parts)
    finally:
        generator.train(was_training)
