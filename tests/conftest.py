"""Shared test data: seeded Gaussian mixtures, fresh per test through the seed argument."""

from __future__ import annotations

import pytest
import torch

from fastndb.demo.synthetic import gaussian_mixture

mixture = gaussian_mixture


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU here; GPU tests are never run on the CPU instead)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
