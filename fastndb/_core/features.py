"""Features: from validated samples to the vectors the bins live in.

The value-range convention (one for the whole library):

* ``uint8`` samples are images at 8 bits, read as ``x / 255`` in [0, 1] (torchvision's ``ToTensor``);
  ``uint16`` samples (16-bit PNGs) as ``x / 65535``;
* every other dtype (floats, other integers) is taken as it is, or, with ``value_range=(low, high)``, mapped
  linearly from ``[low, high]`` to [0, 1]: ``value_range=(-1, 1)`` for a generator's ``tanh`` output,
  ``(0, 255)`` for unscaled pixels in a float tensor.

So real ``uint8`` images and generated images in [-1, 1] compare as they should once ``value_range=(-1, 1)`` is
stated. When two sets obviously live on different ranges, :func:`check_value_ranges` refuses (images against
numbers outside [0, 1] with no range stated) or warns (other clear mismatches).

Steps of a :class:`FeatureMap`, all optional but the first:

1. values: the convention above, then, for data whose magnitude is extreme (largest ``|x|`` outside
   ``[2^-24, 2^24]``), an exact power-of-two rescaling to magnitude about 1, so that squared distances neither
   underflow nor overflow in float32 (results are the same as for the data at a unit scale);
2. dimension subset (``max_dims``): a seeded random subset of the features, as in the original NDB, which
   clusters on ``d // 6`` random dimensions when ``d > 1000``;
3. whitening: per-dimension ``(x - mean) / (std + 1e-6)`` with the real set's mean and population std.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from fastndb._core.collectives import Collective, SingleProcess

WHITENING_EPS = 1e-6  # added to the std, as in the original NDB
IMAGE_DTYPES = {torch.uint8: 255.0, **({torch.uint16: 65535.0} if hasattr(torch, "uint16") else {})}
_SAFE_MAGNITUDE = 2.0**24  # |x| in [2^-24, 2^24]: squared distances stay far from float32's limits
_RANGE_SLACK = 0.1  # numbers compared with images may stray this far outside [0, 1] before we refuse
_STATED_SLACK = 0.05  # values outside a stated value_range by more than this share of it warn


def check_value_range(value_range: object, name: str = "value_range") -> tuple[float, float] | None:
    """``None`` or a ``(low, high)`` pair of finite numbers with ``low < high``.

    Example:
        >>> check_value_range([-1, 1])
        (-1.0, 1.0)
    """
    if value_range is None:
        return None
    try:
        low, high = (float(v) for v in value_range)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected None or a pair (low, high) of numbers, got {value_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{name}: expected finite numbers with low < high, got {value_range!r}")
    return low, high


def to_float(x: torch.Tensor, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Floating-point view or copy of ``x`` under the value-range convention (module docstring).

    Example:
        >>> to_float(torch.tensor([[0, 255]], dtype=torch.uint8))
        tensor([[0., 1.]])
        >>> to_float(torch.tensor([[-1.0, 0.0, 1.0]]), value_range=(-1, 1))
        tensor([[0.0000, 0.5000, 1.0000]])
    """
    if x.dtype in IMAGE_DTYPES:
        return x.to(torch.float32).div_(IMAGE_DTYPES[x.dtype])
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    if value_range is not None:
        low, high = value_range
        x = (x - low) / (high - low)
    return x


def unit_scale(largest: float) -> float:
    """Exact power of two that brings data whose largest magnitude is ``largest`` to about 1 (1.0 when it is
    already safe, see the module docstring).

    Example:
        >>> unit_scale(3.0), unit_scale(2.0**40), unit_scale(0.0)
        (1.0, 9.094947017729282e-13, 1.0)
    """
    if largest == 0 or not math.isfinite(largest) or 1 / _SAFE_MAGNITUDE <= largest <= _SAFE_MAGNITUDE:
        return 1.0
    return 2.0 ** -round(math.log2(largest))


def rescale(x: torch.Tensor, unit: float) -> torch.Tensor:
    """``x * unit`` for a power of two ``unit`` from :func:`unit_scale`, in two exact steps when ``unit`` itself
    is not representable in ``x``'s dtype (float32 stops at ``2^127``)."""
    if unit == 1.0:
        return x
    exponent = round(math.log2(unit))
    half = exponent // 2
    return x * 2.0**half * 2.0 ** (exponent - half)


@dataclass(frozen=True)
class ValueSummary:
    """The range of a set of samples under the value-range convention.

    Attributes:
        low: smallest value, after the convention's mapping.
        high: largest value, after the convention's mapping.
        images: whether the samples were ``uint8``/``uint16`` images (their range is [0, 1] by definition).
        stated: whether a ``value_range`` was stated for them.
    """

    low: float
    high: float
    images: bool
    stated: bool

    @property
    def largest(self) -> float:
        return max(abs(self.low), abs(self.high))

    def merge(self, other: ValueSummary) -> ValueSummary:
        return ValueSummary(min(self.low, other.low), max(self.high, other.high), self.images and other.images,
                            self.stated and other.stated)

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "images": self.images, "stated": self.stated}

    @classmethod
    def from_dict(cls, state: dict | None) -> ValueSummary | None:
        return None if state is None else cls(float(state["low"]), float(state["high"]), bool(state["images"]),
                                              bool(state["stated"]))


def summarize(x: torch.Tensor, value_range: tuple[float, float] | None, name: str = "samples") -> ValueSummary:
    """:class:`ValueSummary` of ``(N, D)`` samples from one ``aminmax`` pass (one host read), refusing NaN/Inf
    values (naming ``name``): the same read serves both."""
    from fastndb._core.inputs import value_range_of

    low, high = value_range_of(x, name)
    images = x.dtype in IMAGE_DTYPES
    if images:
        full = IMAGE_DTYPES[x.dtype]
        low, high = low / full, high / full
    elif value_range is not None:
        a, b = value_range
        low, high = (low - a) / (b - a), (high - a) / (b - a)
    return ValueSummary(low, high, images, value_range is not None and not images)


def _suggest_range(summary: ValueSummary) -> str:
    if summary.low >= -0.5 and summary.high > 2:
        top = 65535 if summary.high > 255.5 else 255
        return f"value_range=(0, {top}) for unscaled pixels"
    if summary.low < -_RANGE_SLACK and summary.low >= -1.0 - _RANGE_SLACK:
        return "value_range=(-1, 1) for tanh outputs"
    return "value_range=(low, high) with the range they were made in"


def check_value_ranges(reference: ValueSummary, other: ValueSummary, *, reference_name: str, name: str) -> None:
    """Refuse or warn when two sets of samples obviously live on different value ranges.

    Rules (both summaries after the convention's mapping):

    * images (``uint8``/``uint16``) against other samples with no ``value_range`` stated, whose values leave
      ``[-0.1, 1.1]``: ``ValueError`` (e.g. ``uint8`` real images against ``tanh`` outputs, or floats in 0..255);
    * samples with a stated ``value_range`` whose values leave it by more than 5% of its width: ``RuntimeWarning``;
    * otherwise, ``other`` reaching beyond ``reference``'s range by more than three quarters of its width:
      ``RuntimeWarning`` (a generator can stray, so this only warns).

    Raises:
        ValueError: the first rule.
    """
    for image_side, number_side, number_name in ((reference, other, name), (other, reference, reference_name)):
        if image_side.images and not number_side.images and not number_side.stated and (
            number_side.low < -_RANGE_SLACK or number_side.high > 1 + _RANGE_SLACK
        ):
            image_name = reference_name if image_side is reference else name
            raise ValueError(
                f"{number_name}: values in [{number_side.low:.4g}, {number_side.high:.4g}] but {image_name} holds "
                f"integer images, read as x / 255 (uint8) or x / 65535 (uint16) in [0, 1]; state the range of "
                f"{number_name} with {_suggest_range(number_side)}"
            )
    for summary, which in ((reference, reference_name), (other, name)):
        if summary.stated and (summary.low < -_STATED_SLACK or summary.high > 1 + _STATED_SLACK):
            warnings.warn(
                f"{which}: values reach [{summary.low:.4g}, {summary.high:.4g}] of the stated value_range mapped to "
                f"[0, 1]: outside the range stated for them",
                RuntimeWarning,
                stacklevel=3,
            )
            return
    width = max(reference.high - reference.low, 1e-12 * reference.largest, 1e-300)
    if other.low < reference.low - 0.75 * width or other.high > reference.high + 0.75 * width:
        warnings.warn(
            f"value ranges differ: {reference_name} in [{reference.low:.4g}, {reference.high:.4g}], {name} in "
            f"[{other.low:.4g}, {other.high:.4g}]; if they are the same kind of data in different units, state "
            f"value_range or rescale one of them",
            RuntimeWarning,
            stacklevel=3,
        )


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
        value_range: the ``value_range`` of the convention (``None``: values as they are).
        unit: exact power-of-two factor applied after the convention (1.0 unless the data's scale is extreme).
        real_values: the real data's :class:`ValueSummary`, to check other samples against.
    """

    num_features: int
    dims: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    value_range: tuple[float, float] | None = None
    unit: float = 1.0
    real_values: ValueSummary | None = None

    @property
    def output_features(self) -> int:
        return self.num_features if self.dims is None else int(self.dims.numel())

    def to(self, device: torch.device | str) -> FeatureMap:
        """The same map with its tensors on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return FeatureMap(self.num_features, move(self.dims), move(self.mean), move(self.scale), self.value_range,
                          self.unit, self.real_values)

    def to_dict(self) -> dict:
        """Fields as a dict of tensors, numbers and plain dicts (for ``torch.save`` and state dicts)."""
        return {"num_features": self.num_features, "dims": self.dims, "mean": self.mean, "scale": self.scale,
                "value_range": None if self.value_range is None else list(self.value_range), "unit": self.unit,
                "real_values": None if self.real_values is None else self.real_values.to_dict()}

    @classmethod
    def from_dict(cls, state: dict) -> FeatureMap:
        """Inverse of :meth:`to_dict`."""
        value_range = state.get("value_range")
        return cls(int(state["num_features"]), state["dims"], state["mean"], state["scale"],
                   None if value_range is None else (float(value_range[0]), float(value_range[1])),
                   float(state.get("unit", 1.0)), ValueSummary.from_dict(state.get("real_values")))

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """Step 1 only: the convention and the unit scale, ``(N, D)`` floating point."""
        return rescale(to_float(x, self.value_range), self.unit)

    def check(self, summary: ValueSummary, name: str) -> None:
        """Check other samples' range against the real data's (:func:`check_value_ranges`), and that their
        distances stay representable at the bins' unit scale."""
        if self.real_values is not None:
            check_value_ranges(self.real_values, summary, reference_name="real", name=name)
        if summary.largest * self.unit > _SAFE_MAGNITUDE**2:
            real = "" if self.real_values is None else f" (the real data reach {self.real_values.largest:.3g})"
            raise ValueError(
                f"{name}: values up to {summary.largest:.3g}{real}: at the bins' scale their squared distances "
                f"overflow float32; the two sets are not on one scale"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the map to ``(N, D)`` samples; returns ``(N, d)`` floating point."""
        x = self.values(x)
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
    value_range: tuple[float, float] | None = None,
    real_values: ValueSummary | None = None,
    comm: Collective | None = None,
) -> FeatureMap:
    """Fit the feature transform on real samples.

    Args:
        x: ``(N, D)`` real samples (this rank's shard with a distributed ``comm``; may be empty there).
        whitening: standardise each kept feature with the real mean and population std, computed in float64
            in two passes (mean, then mean squared deviation), each summed over ranks.
        max_dims: keep a random subset of this many features (all if ``None`` or ``>= D``).
        seed: seed of the feature subset.
        value_range: the convention's ``value_range`` (module docstring).
        real_values: the real data's :class:`ValueSummary` over all ranks (sets the unit scale and is kept for
            checks); ``None``: none kept, unit scale 1.
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
    unit = 1.0 if real_values is None else unit_scale(real_values.largest)
    base = FeatureMap(num_features, value_range=value_range, unit=unit, real_values=real_values)
    mean = scale = None
    if whitening:
        comm = comm or SingleProcess()
        selected = base.values(x if dims is None else x.index_select(1, dims))
        count = comm.all_reduce_sum(torch.tensor([float(selected.shape[0])], dtype=torch.float64, device=x.device))
        mean64 = comm.all_reduce_sum(selected.sum(dim=0, dtype=torch.float64)) / count
        variance = comm.all_reduce_sum((selected.double() - mean64).square().sum(dim=0)) / count
        scale = (variance.sqrt() + WHITENING_EPS * unit).to(selected.dtype)
        mean = mean64.to(selected.dtype)
    return FeatureMap(num_features, dims, mean, scale, value_range, unit, real_values)
