"""Features: from validated samples to the vectors the bins live in.

Steps, all optional but the first:

1. dtype: ``uint8`` becomes ``float32`` in [0, 1] (``x / 255``, the torchvision ``ToTensor`` convention), other
   integer and half-precision types become ``float32``; ``float32``/``float64`` stay as they are.
2. dimension subset (``max_dims``): a seeded random subset of the features, as in the original NDB, which
   clusters on ``d // 6`` random dimensions when ``d > 1000``.
3. whitening: per-dimension ``(x - mean) / (std + 1e-6)`` with the real set's mean and population std.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastndb.collectives import Collective, SingleProcess

WHITENING_EPS = 1e-6  # added to the std, as in the original NDB


def to_float(x: torch.Tensor) -> torch.Tensor:
    """Floating-point view or copy of ``x`` (see the module docstring for the rules).

    Example:
        >>> to_float(torch.tensor([[0, 255]], dtype=torch.uint8))
        tensor([[0., 1.]])
    """
    if x.dtype in (torch.float32, torch.float64):
        return x
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


def original_max_dims(num_features: int) -> int | None:
    """The original NDB's automatic dimension cap: ``d // 6`` when ``d > 1000``, else no cap."""
    return num_features // 6 if num_features > 1000 else None


@dataclass(frozen=True)
class FeatureMap:
    """A fitted feature transform ``(N, D) -> (N, d)``.

    Attributes:
        num_features: ``D``, the input dimension it was fitted on.
        dims: ``(d,)`` int64 indices of the kept features, or ``None`` for all.
        mean: ``(d,)`` whitening mean, or ``None``.
        scale: ``(d,)`` whitening divisor ``std + 1e-6``, or ``None``.
    """

    num_features: int
    dims: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    @property
    def output_features(self) -> int:
        return self.num_features if self.dims is None else int(self.dims.numel())

    def to(self, device: torch.device | str) -> FeatureMap:
        """The same map with its tensors on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return FeatureMap(self.num_features, move(self.dims), move(self.mean), move(self.scale))

    def to_dict(self) -> dict:
        """Fields as a dict of tensors and ints (for ``torch.save`` and state dicts)."""
        return {"num_features": self.num_features, "dims": self.dims, "mean": self.mean, "scale": self.scale}

    @classmethod
    def from_dict(cls, state: dict) -> FeatureMap:
        """Inverse of :meth:`to_dict`."""
        return cls(int(state["num_features"]), state["dims"], state["mean"], state["scale"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the map to ``(N, D)`` samples; returns ``(N, d)`` floating point."""
        x = to_float(x)
        if self.dims is not None:
            x = x.index_select(1, self.dims.to(x.device))
        if self.mean is not None and self.scale is not None:
            x = (x - self.mean.to(x.device, x.dtype)) / self.scale.to(x.device, x.dtype)
        return x


def fit_feature_map(
    x: torch.Tensor,
    *,
    whitening: bool = False,
    max_dims: int | None = None,
    seed: int = 0,
    comm: Collective | None = None,
) -> FeatureMap:
    """Fit the feature transform on real samples.

    Args:
        x: ``(N, D)`` real samples (this rank's shard with a distributed ``comm``; may be empty there).
        whitening: standardise each kept feature with the real mean and population std, computed in float64
            in two passes (mean, then mean squared deviation), each summed over ranks.
        max_dims: keep a random subset of this many features (all if ``None`` or ``>= D``).
        seed: seed of the feature subset.
        comm: collective over the ranks holding the real samples (default: this process only).

    Example:
        >>> fm = fit_feature_map(torch.arange(12.0).reshape(3, 4), whitening=True, max_dims=2, seed=0)
        >>> fm(torch.arange(12.0).reshape(3, 4)).shape
        torch.Size([3, 2])
    """
    num_features = x.shape[1]
    dims = None
    if max_dims is not None and max_dims < num_features:
        generator = torch.Generator().manual_seed(seed)
        dims = torch.randperm(num_features, generator=generator)[:max_dims].sort().values.to(x.device)
    mean = scale = None
    if whitening:
        comm = comm or SingleProcess()
        selected = to_float(x if dims is None else x.index_select(1, dims))
        count = comm.all_reduce_sum(torch.tensor([float(selected.shape[0])], dtype=torch.float64, device=x.device))
        mean64 = comm.all_reduce_sum(selected.sum(dim=0, dtype=torch.float64)) / count
        variance = comm.all_reduce_sum((selected.double() - mean64).square().sum(dim=0)) / count
        scale = (variance.sqrt() + WHITENING_EPS).to(selected.dtype)
        mean = mean64.to(selected.dtype)
    return FeatureMap(num_features, dims, mean, scale)
