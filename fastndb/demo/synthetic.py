"""Synthetic data with known modes, for calibration, power checks and benchmarks."""

from __future__ import annotations

import numpy as np


def gaussian_mixture(
    n: int,
    dim: int,
    *,
    num_modes: int = 10,
    spread: float = 4.0,
    seed: int = 0,
    keep_modes: int | None = None,
    means_seed: int = 1234,
) -> np.ndarray:
    """``(n, dim)`` float32 samples of an equal-weight mixture of unit-variance isotropic Gaussians.

    Args:
        n: number of samples.
        dim: dimension.
        num_modes: number of mixture components; their means are ``N(0, spread^2 I)`` draws.
        spread: std of the mode means (per coordinate).
        seed: seed of the samples.
        keep_modes: draw only from the first ``keep_modes`` modes (a generator that dropped the rest).
        means_seed: seed of the mode means; keep it fixed so that "real" and "fake" sets drawn with different
            ``seed`` share their modes.

    Example:
        >>> x = gaussian_mixture(1000, 5, num_modes=3, seed=1)
        >>> x.shape, x.dtype
        ((1000, 5), dtype('float32'))
    """
    means = np.random.default_rng(means_seed).normal(0.0, spread, (num_modes, dim))
    rng = np.random.default_rng(seed)
    which = rng.integers(0, keep_modes or num_modes, n)
    return (means[which] + rng.normal(0.0, 1.0, (n, dim))).astype(np.float32)
