"""Shared test data: seeded Gaussian mixtures, fresh per test through the seed argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def mixture(n: int, dim: int, *, num_modes: int = 10, spread: float = 4.0, seed: int = 0,
            keep_modes: int | None = None, means_seed: int = 1234) -> np.ndarray:
    """``(n, dim)`` float32 samples of an isotropic Gaussian mixture with unit-variance modes.

    The mode means depend only on ``means_seed`` so that real and fake sets drawn with different ``seed`` share
    them; ``keep_modes`` restricts sampling to the first modes (a generator that dropped the others).
    """
    means = np.random.default_rng(means_seed).normal(0.0, spread, (num_modes, dim))
    rng = np.random.default_rng(seed)
    which = rng.integers(0, keep_modes or num_modes, n)
    return (means[which] + rng.normal(0.0, 1.0, (n, dim))).astype(np.float32)


@pytest.fixture
def make_mixture():
    return mixture


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU here; GPU tests are never run on the CPU instead)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
