"""Shared, seeded data of the distributed tests: uneven real shards, and fake shards with an empty one."""

from __future__ import annotations

import torch

from fastndb.demo.synthetic import gaussian_mixture

REAL_SPLITS = (0.35, 0.65)  # uneven shards


def real_union() -> torch.Tensor:
    return torch.from_numpy(gaussian_mixture(3000, 24, num_modes=8, seed=11))


def fake_union() -> torch.Tensor:
    return torch.from_numpy(gaussian_mixture(1600, 24, num_modes=8, seed=12, keep_modes=6))


def held_out_union() -> torch.Tensor:
    """Held-out samples of the real distribution (the memorisation tests' calibration set)."""
    return torch.from_numpy(gaussian_mixture(800, 24, num_modes=8, seed=13))


def held_out_shards(world: int) -> list[torch.Tensor]:
    union = held_out_union()
    return [union[:300], union[300:]] if world == 2 else [union]


def real_shards(world: int) -> list[torch.Tensor]:
    union = real_union()
    first = int(REAL_SPLITS[0] * union.shape[0])
    return [union[:first], union[first:]][:world] if world == 2 else [union]


def fake_shards(world: int) -> list[torch.Tensor]:
    union = fake_union()
    return [union, union[:0]] if world == 2 else [union]  # rank 1 has no fake samples


def feature_net() -> torch.nn.Module:
    """The same small seeded network on every rank: the feature space of the distributed metric test."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(21)
        return torch.nn.Sequential(torch.nn.Linear(24, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))
