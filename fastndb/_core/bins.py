"""Bins, as pure functions: fit bins on real samples, count samples into them, compare two histograms.

:func:`fit_bins` (a collective call under ``torch.distributed``), :func:`count_bins` and :func:`compare_counts` are
the functional core that :class:`fastndb.NDB`, :func:`fastndb.score`, the metrics and the command line wrap.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import cast

import torch
from torch import Tensor

from fastndb._core.backends import AssignBackend, nearest_bins, resolve_backend
from fastndb._core.collectives import Collective
from fastndb._core.extractors import embed, embedded, label_of, same_features
from fastndb._core.features import (
    FeatureMap,
    ValueSummary,
    check_value_ranges,
    fit_feature_map,
    original_max_dims,
    summarize,
    to_float,
)
from fastndb._core.inputs import Batches
from fastndb._core.kmeans import fit_kmeans
from fastndb._core.options import BinOptions, TestOptions
from fastndb._core.progress import progress_bar
from fastndb._core.results import NDBResult
from fastndb._core.sampling import SPLIT_SALT, key_positions, row_keys
from fastndb._core.statistics import compare_histograms
from fastndb.kernels import bin_counts, matmul_precision

logger = logging.getLogger(__name__)

_COUNT_CHUNK_ROWS = 65536  # rows transformed at once when counting, bounding the feature copy
_MIN_MEAN_COUNT = 5  # below this mean count per bin the z-test's normal approximation is poor


@dataclass(frozen=True)
class FittedBins:
    """Bins fitted on real data.

    Attributes:
        feature_map: the transform from samples to the bins' feature space.
        centroids: ``(K, d)`` bin centres in feature space, ordered by decreasing size in the fit set.
        real_counts: ``(K,)`` int64 reference counts (held-out set in ``holdout`` mode, fit set in ``original``).
        num_fit: real samples the k-means was fitted on.
        num_reference: real samples behind ``real_counts``.
        inertia: k-means inertia on the fit set (in feature space).
        mode: ``"holdout"`` or ``"original"``, how ``real_counts`` were obtained.
        feature: the extractor the bins were fitted behind (:meth:`~fastndb.Extractor.label`), ``None`` for raw
            values.
        input_values: with an extractor, the real samples' own range (under the value-range convention), which
            other samples are checked against before they are embedded; ``None`` without one.
    """

    feature_map: FeatureMap
    centroids: Tensor
    real_counts: Tensor
    num_fit: int
    num_reference: int
    inertia: float
    mode: str = "holdout"
    feature: str | None = None
    input_values: ValueSummary | None = None

    @property
    def num_bins(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def num_features(self) -> int:
        """``D``, the number of features per sample the bins were fitted on."""
        return self.feature_map.num_features

    def to(self, device: torch.device | str) -> FittedBins:
        """The same bins with the tensors the assignment needs on ``device`` (``K x d`` numbers, never samples)."""
        device = torch.device(device)
        if self.centroids.device == device:
            return self
        return replace(self, feature_map=self.feature_map.to(device), centroids=self.centroids.to(device),
                       real_counts=self.real_counts.to(device))

    def to_dict(self) -> dict:
        """Plain dict of tensors and numbers (``torch.save``-able; no pickled classes)."""
        return {
            "feature_map": self.feature_map.to_dict(),
            "centroids": self.centroids,
            "real_counts": self.real_counts,
            "num_fit": self.num_fit,
            "num_reference": self.num_reference,
            "inertia": self.inertia,
            "mode": self.mode,
            "feature": self.feature,
            "input_values": None if self.input_values is None else self.input_values.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: object, source: str = "bins") -> FittedBins:
        """Inverse of :meth:`to_dict`, for bins read from a file or a checkpoint: every field is checked (keys, types,
        shapes, integer counts that add up, finite centres and whitening) before the bins are used.

        Raises:
            ValueError: anything that :meth:`to_dict` would not have written, naming ``source`` and the field.
        """
        return _checked_bins(state, source)

    def input_check(self) -> Callable[[ValueSummary, str], None] | None:
        """With an extractor: the check of other samples' own range against the real samples' (refusing ``uint8``
        images against ``tanh`` outputs with no range stated, as without one); ``None`` without an extractor."""
        if self.input_values is None:
            return None
        reference = self.input_values
        return lambda summary, name: check_value_ranges(reference, summary, reference_name="real", name=name)


def _checked_bins(state: object, source: str) -> FittedBins:
    """:meth:`FittedBins.from_dict` with every field validated (see there)."""

    def bad(field: str, expected: str, got: object) -> ValueError:
        return ValueError(f"{source}: {field}: expected {expected}, got {got}")

    def tensor(value: object, field: str, dim: int, floating: bool, optional: bool = False) -> Tensor | None:
        if value is None and optional:
            return None
        kind = "floating-point" if floating else "integer"
        if not isinstance(value, Tensor):
            raise bad(field, f"a {dim}-d {kind} tensor", type(value).__name__)
        if value.dim() != dim or value.is_floating_point() != floating or value.is_complex() or \
                value.dtype == torch.bool:
            raise bad(field, f"a {dim}-d {kind} tensor", f"shape {tuple(value.shape)} of {value.dtype}")
        if floating and not bool(torch.isfinite(value).all()):
            raise bad(field, "finite values", "NaN or infinite values")
        return value

    def number(value: object, field: str, kind: type) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)):
            raise bad(field, f"a{'n integer' if kind is int else ' number'}", repr(value))
        if not math.isfinite(value) or value < 0:
            raise bad(field, "a finite number >= 0", repr(value))
        return value

    if not isinstance(state, dict):
        raise bad("bins", "a dict of the fitted bins", type(state).__name__)
    missing = [key for key in ("feature_map", "centroids", "real_counts", "num_fit", "num_reference", "inertia")
               if key not in state]
    if missing:
        raise ValueError(f"{source}: missing {', '.join(missing)}: not bins written by fastndb (or a damaged file)")
    mapping = state["feature_map"]
    if not isinstance(mapping, dict) or "num_features" not in mapping:
        raise bad("feature_map", "a dict with num_features", type(mapping).__name__)
    num_features = int(number(mapping["num_features"], "feature_map.num_features", int))
    dims = tensor(mapping.get("dims"), "feature_map.dims", 1, False, optional=True)
    if dims is not None and dims.numel() and (int(dims.min()) < 0 or int(dims.max()) >= num_features):
        raise bad("feature_map.dims", f"indices in [0, {num_features})", f"[{int(dims.min())}, {int(dims.max())}]")
    width = num_features if dims is None else dims.numel()
    for name in ("mean", "scale"):
        value = tensor(mapping.get(name), f"feature_map.{name}", 1, True, optional=True)
        if value is not None and value.numel() != width:
            raise bad(f"feature_map.{name}", f"{width} values (one per feature)", value.numel())
    if mapping.get("scale") is not None and not bool((mapping["scale"] > 0).all()):
        raise bad("feature_map.scale", "positive divisors", "values <= 0")
    centroids = cast(Tensor, tensor(state["centroids"], "centroids", 2, True))
    counts = cast(Tensor, tensor(state["real_counts"], "real_counts", 1, False))
    if centroids.shape[0] < 1 or centroids.shape[1] != width:
        raise bad("centroids", f"(K, {width}) centres for the feature map's {width} features",
                  f"shape {tuple(centroids.shape)}")
    if counts.numel() != centroids.shape[0]:
        raise bad("real_counts", f"{centroids.shape[0]} counts (one per centre)", counts.numel())
    num_fit = int(number(state["num_fit"], "num_fit", int))
    num_reference = int(number(state["num_reference"], "num_reference", int))
    if bool((counts < 0).any()) or int(counts.sum()) != num_reference:
        raise bad("real_counts", f"non-negative counts adding up to num_reference = {num_reference}",
                  f"counts adding up to {int(counts.sum())}" if not bool((counts < 0).any()) else "negative counts")
    mode = state.get("mode", "holdout")
    if mode not in ("holdout", "original"):
        raise bad("mode", "'holdout' or 'original'", repr(mode))
    feature = state.get("feature")
    if feature is not None and not isinstance(feature, str):
        raise bad("feature", "None or the extractor's identity (a string)", type(feature).__name__)
    try:
        feature_map = FeatureMap.from_dict(mapping)
        input_values = ValueSummary.from_dict(state.get("input_values"))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ValueError(f"{source}: feature_map or input_values: unreadable ({type(err).__name__}: {err})") from err
    return FittedBins(feature_map, centroids, counts.to(torch.int64), num_fit, num_reference,
                      float(number(state["inertia"], "inertia", float)), mode, feature, input_values)


def merge_summaries(local: ValueSummary | None, comm: Collective, device: torch.device) -> ValueSummary | None:
    """One :class:`~fastndb._core.features.ValueSummary` of all ranks (a collective; ``None`` if no rank has one)."""
    row = [math.inf, -math.inf, 1.0, 1.0] if local is None else [local.low, local.high, float(local.images),
                                                                  float(local.stated)]
    everyone, _ = comm.all_gather_cat(torch.tensor([row], dtype=torch.float64, device=device))
    low, high = float(everyone[:, 0].min()), float(everyone[:, 1].max())
    if not math.isfinite(low):
        return None
    return ValueSummary(low, high, bool(everyone[:, 2].min() > 0), bool(everyone[:, 3].min() > 0))


def assign_samples(x: Tensor, bins: FittedBins, engine: AssignBackend) -> Tensor:
    """Bin index ``(N,)`` int64 of raw samples ``x (N, D)`` (bins on ``x``'s device), transformed chunk by chunk to
    bound memory."""
    labels = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], _COUNT_CHUNK_ROWS):
        features = bins.feature_map(x[start : start + _COUNT_CHUNK_ROWS]).to(bins.centroids.dtype)
        labels[start : start + _COUNT_CHUNK_ROWS] = nearest_bins(engine, features, bins.centroids)
    return labels


def fit_bins(
    x: Tensor,
    options: BinOptions,
    *,
    comm: Collective,
    real_values: ValueSummary | None = None,
    progress: bool | None = None,
) -> FittedBins:
    """Fit bins on a validated ``(n, D)`` tensor: this rank's shard under ``comm`` (``n`` may be 0 on some ranks).

    Random choices (the holdout split, the k-means seeding sample) are made by content keys
    (:mod:`fastndb._core.sampling`), so the bins do not depend on the order, batching or sharding of the samples.

    Args:
        x: ``(n, D)`` real samples as passed (the value-range convention is applied inside).
        options: the bin options.
        comm: the collective over the ranks holding shards (``SingleProcess()`` for one process).
        real_values: the real data's range as they were passed, when ``x`` was converted before (the metric buffers
            samples already in [0, 1]); ``None``: taken from ``x``.
        progress: tqdm bar for k-means.

    Raises:
        ValueError: too few samples for ``num_bins`` (``holdout`` needs ``K`` to fit and ``K`` to hold out),
            shards with different numbers of features.
    """
    n_local, num_features = x.shape
    # the real samples' one range read, which also refuses NaN/Inf (callers skip the separate finiteness pass)
    local_values = summarize(x, options.value_range, "real") if real_values is None and n_local else None
    feature_counts, _ = comm.all_gather_cat(torch.tensor([num_features], device=x.device))
    if bool((feature_counts != num_features).any()):
        raise ValueError(f"real: expected the same number of features on every rank, got {feature_counts.tolist()}")
    n = int(comm.all_reduce_sum(torch.tensor([n_local], dtype=torch.int64, device=x.device))[0])
    k = options.num_bins
    reference_rows: Tensor | None = None
    if options.mode == "holdout":
        num_reference = int(round(n * options.holdout_fraction))
        num_fit = n - num_reference
        if min(num_fit, num_reference) < k:
            need = math.ceil(k / min(options.holdout_fraction, 1 - options.holdout_fraction))
            raise ValueError(
                f"real: {n} samples split into {num_fit} to fit and {num_reference} to hold out "
                f"(holdout_fraction={options.holdout_fraction}), each fewer than num_bins={k}; "
                f"need at least {need} real samples, or fewer bins"
            )
        positions, _ = key_positions(row_keys(x, options.seed, SPLIT_SALT), comm)
        in_fit = positions < num_fit
        fit_rows = in_fit.nonzero()[:, 0]
        fit_rows = fit_rows[torch.argsort(positions[fit_rows])]  # key order: sums, hence bins, bit-identical
        x_fit = x.index_select(0, fit_rows)                     # whatever the order of the real samples
        reference_rows = (~in_fit).nonzero()[:, 0]
    else:
        if n < k:
            raise ValueError(f"real: expected at least num_bins={k} samples, got {n}")
        num_fit = num_reference = n
        x_fit = x
    if real_values is None:
        real_values = merge_summaries(local_values, comm, x.device)
    max_dims = options.max_dims
    if max_dims is None and options.mode == "original":
        max_dims = original_max_dims(num_features)
    feature_map = fit_feature_map(x_fit, whitening=options.whitening, max_dims=max_dims, seed=options.seed,
                                  value_range=options.value_range, real_values=real_values, comm=comm)
    engine = resolve_backend(options.backend)
    clusters = fit_kmeans(
        to_float(feature_map(x_fit)), k, seed=options.seed, max_iter=options.max_iter, tol=options.tol,
        engine=engine, init_size=None, progress=progress, comm=comm,
    )
    order_by_size = torch.argsort(clusters.counts, descending=True, stable=True)
    centroids = clusters.centroids.index_select(0, order_by_size)
    bins = FittedBins(feature_map, centroids, clusters.counts.index_select(0, order_by_size), num_fit, num_reference,
                      clusters.inertia, options.mode)
    if reference_rows is not None:
        labels = assign_samples(x.index_select(0, reference_rows), bins, engine)
        bins = FittedBins(feature_map, centroids, comm.all_reduce_sum(bin_counts(labels, k)), num_fit,
                          num_reference, clusters.inertia, options.mode)
    logger.info("NDB bins: K=%d fitted on %d real samples (%d features -> %d), reference counts from %d "
                "(%s mode, %d rank(s))", k, num_fit, num_features, feature_map.output_features, num_reference,
                options.mode, comm.world_size)
    return bins


def fit_bins_from(
    x: Tensor, options: BinOptions, *, comm: Collective, progress: bool | None = None
) -> FittedBins:
    """:func:`fit_bins` behind ``options.feature``: the real samples ``x (n, *dims)`` are embedded first (their own
    range kept in :attr:`FittedBins.input_values`, merged over ranks) and the bins fitted on the features with no
    range mapping (:meth:`BinOptions.without_features`). Without an extractor, :func:`fit_bins` itself."""
    if options.feature is None:
        return fit_bins(x, options, comm=comm, progress=progress)
    features, summary = embed(x, options.feature, options.value_range, "real")
    input_values = merge_summaries(summary, comm, x.device)
    bins = fit_bins(features, options.without_features(), comm=comm, progress=progress)
    return replace(bins, feature=label_of(options.feature), input_values=input_values)


def features_of(batches: Batches, bins: FittedBins, options: BinOptions, name: str) -> Batches:
    """The batches the bins count: ``batches`` themselves without an extractor, else their features (lazily, each
    batch's own range checked against the real samples' first)."""
    if options.feature is None:
        return batches
    same_features(bins.feature, options.feature, "bins")  # the network may have changed since the fit
    return embedded(batches, options.feature, options.value_range, name, check=bins.input_check())


def check_features(bins: FittedBins, x: Tensor, name: str) -> None:
    """Refuse samples with another number of features than the bins."""
    if x.shape[1] != bins.num_features:
        raise ValueError(
            f"{name}: expected {bins.num_features} features per sample (the bins' dimension), got {x.shape[1]}"
        )


def assign_checked(bins: FittedBins, x: Tensor, engine: AssignBackend, name: str) -> Tensor:
    """:func:`assign_samples` after checking ``x``'s features and value range against the bins (which are moved to
    ``x``'s device if they are not there)."""
    check_features(bins, x, name)
    bins.feature_map.check(summarize(x, bins.feature_map.value_range, name), name)  # refuse what cannot be compared
    return assign_samples(x, bins.to(x.device), engine)


def count_bins(
    bins: FittedBins,
    batches: Iterable[Tensor],
    *,
    engine: AssignBackend,
    name: str = "fake",
    progress: bool | None = None,
    place: Callable[[torch.device], FittedBins] | None = None,
    numbered: bool = False,
) -> Tensor:
    """Bin histogram ``(K,)`` int64 of validated ``(n_b, D)`` batches, streamed: only ``K`` counts are kept.

    ``place`` gives the bins on a batch's device (a caller's memo of per-device copies); default ``bins.to``.
    ``numbered``: name batches in messages as ``"fake (batch i)"`` (the input was an iterable of batches).

    Raises:
        ValueError: a batch with another number of features than the bins, or on a value range that cannot be
            compared with the real data's (:func:`~fastndb._core.features.check_value_ranges`); no batch at all.
    """
    total: Tensor | None = None
    with progress_bar(progress, total=None, desc="assigning", unit="sample") as bar:
        for index, matrix in enumerate(batches):
            here = bins.to(matrix.device) if place is None else place(matrix.device)
            label = f"{name} (batch {index})" if numbered else name
            counts = bin_counts(assign_checked(here, matrix, engine, label), bins.num_bins)
            total = counts if total is None else total + counts.to(total.device)
            bar.update(matrix.shape[0])
    if total is None:
        raise ValueError(f"{name}: expected at least one batch, got none")
    return total


def compare_counts(bins: FittedBins, fake_counts: Tensor, test: TestOptions) -> NDBResult:
    """The NDB statistics of a fake histogram against the bins' reference counts, on the fake counts' device (one
    host read), warning when the samples are too few for the per-bin z-test."""
    real_counts = bins.real_counts.to(fake_counts.device)
    result = compare_histograms(
        real_counts, fake_counts, alpha=test.alpha, correction=test.correction, z_threshold=test.z_threshold,
        mode=bins.mode, precision=matmul_precision(bins.centroids.dtype, fake_counts.device),
        tolerance=test.tolerance,
    )
    smallest = min(result.num_real, result.num_fake)
    if smallest < _MIN_MEAN_COUNT * result.num_bins:
        warnings.warn(
            f"NDB: {smallest} samples over {result.num_bins} bins is fewer than {_MIN_MEAN_COUNT} per bin on "
            f"average; the per-bin z-test's normal approximation is unreliable there: use more samples or fewer bins",
            RuntimeWarning,
            stacklevel=3,
        )
    return result
