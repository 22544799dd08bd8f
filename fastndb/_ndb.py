"""The NDB test (Richardson & Weiss 2018, "On GANs and GMMs"): fitted bins, assignment, streaming counts.

:class:`NDB` is a thin stateful wrapper: it keeps the fitted bins and a running fake histogram, and delegates
every computation to the pure steps ``features -> kmeans -> backends (assignment) -> statistics``.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fastndb._core.checks import check_int, check_seed, check_nonnegative, check_open_unit, check_positive_or_none
from fastndb._core.progress import progress_bar
from fastndb._core.backends import AssignBackend, resolve_backend
from fastndb._core.collectives import Collective, resolve_collective
from fastndb._core.features import (
    IMAGE_DTYPES,
    FeatureMap,
    ValueSummary,
    check_value_range,
    fit_feature_map,
    original_max_dims,
    summarize,
    to_float,
)
from fastndb._core.inputs import Batches, as_batches, concatenate
from fastndb.kernels import matmul_precision
from fastndb._core.kmeans import fit_kmeans
from fastndb._core.results import NDBResult
from fastndb._core.sampling import SPLIT_SALT, key_positions, row_keys
from fastndb._core.statistics import CORRECTIONS, compare_histograms

logger = logging.getLogger(__name__)

MODES = ("holdout", "original")
_IMAGE_KINDS = tuple(IMAGE_DTYPES)
_COUNT_CHUNK_ROWS = 65536  # rows transformed at once when counting, bounding the feature copy
_MIN_MEAN_COUNT = 5  # below this mean count per bin the z-test's normal approximation is poor


class NotFittedError(RuntimeError):
    """Raised when bins are needed before :meth:`NDB.fit` was called."""


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
    """

    feature_map: FeatureMap
    centroids: Tensor
    real_counts: Tensor
    num_fit: int
    num_reference: int
    inertia: float

    def to_dict(self) -> dict:
        """Plain dict of tensors and numbers (``torch.save``-able; no pickled classes)."""
        return {
            "feature_map": self.feature_map.to_dict(),
            "centroids": self.centroids,
            "real_counts": self.real_counts,
            "num_fit": self.num_fit,
            "num_reference": self.num_reference,
            "inertia": self.inertia,
        }

    @classmethod
    def from_dict(cls, state: dict) -> FittedBins:
        """Inverse of :meth:`to_dict`."""
        return cls(
            FeatureMap.from_dict(state["feature_map"]), state["centroids"], state["real_counts"],
            int(state["num_fit"]), int(state["num_reference"]), float(state["inertia"]),
        )


def assign_samples(x: Tensor, feature_map: FeatureMap, centroids: Tensor, engine: AssignBackend) -> Tensor:
    """Bin index ``(N,)`` int64 of raw samples ``x (N, D)``, transformed chunk by chunk to bound memory."""
    labels = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], _COUNT_CHUNK_ROWS):
        features = feature_map(x[start : start + _COUNT_CHUNK_ROWS]).to(centroids.dtype)
        labels[start : start + _COUNT_CHUNK_ROWS] = engine.nearest(features, centroids)[0]
    return labels


def merge_summaries(local: ValueSummary | None, comm: Collective, device: torch.device) -> ValueSummary | None:
    """One :class:`~fastndb._core.features.ValueSummary` of all ranks' (a collective call; ``None`` if no rank has one)."""
    row = [math.inf, -math.inf, 1.0, 1.0] if local is None else [local.low, local.high, float(local.images),
                                                                  float(local.stated)]
    everyone, _ = comm.all_gather_cat(torch.tensor([row], dtype=torch.float64, device=device))
    low, high = float(everyone[:, 0].min()), float(everyone[:, 1].max())
    if not math.isfinite(low):
        return None
    return ValueSummary(low, high, bool(everyone[:, 2].min() > 0), bool(everyone[:, 3].min() > 0))


def compare_to_reference(
    real_counts: Tensor,
    fake_counts: Tensor,
    *,
    alpha: float,
    correction: str | None,
    z_threshold: float | None,
    mode: str,
    precision: str,
) -> NDBResult:
    """:func:`~fastndb._core.statistics.compare_histograms` on the fake counts' device, warning on small samples."""
    real_counts = real_counts.to(fake_counts.device)
    num_bins = real_counts.numel()
    smallest = min(int(real_counts.sum()), int(fake_counts.sum()))
    if smallest < _MIN_MEAN_COUNT * num_bins:
        warnings.warn(
            f"NDB: {smallest} samples over {num_bins} bins is fewer than {_MIN_MEAN_COUNT} per bin on average; "
            f"the per-bin z-test's normal approximation is unreliable there: use more samples or fewer bins",
            RuntimeWarning,
            stacklevel=3,
        )
    return compare_histograms(
        real_counts, fake_counts, alpha=alpha, correction=correction, z_threshold=z_threshold, mode=mode,
        precision=precision,
    )


def check_test_options(correction: object, z_threshold: object) -> float | None:
    """Validate the per-bin test options; returns ``z_threshold`` as a float or ``None``."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction: expected one of {CORRECTIONS}, got {correction!r}")
    threshold = check_positive_or_none(z_threshold, "z_threshold")
    if threshold is not None and correction is not None:
        raise ValueError(
            f"z_threshold={z_threshold} and correction={correction!r} exclude each other: a z threshold "
            f"replaces the p-value rule that the correction adjusts"
        )
    return threshold


class NDB:
    """Number of statistically Different Bins between real and generated samples.

    Bins are k-means cells of real samples; each fake sample falls in the bin of its nearest centre, and each
    bin's real and fake shares are compared with a two-sided pooled two-proportion z-test. A model that drops
    modes leaves bins under-filled, one that collapses over-fills a few.

    Modes:
        ``"holdout"`` (default): k-means is fitted on ``1 - holdout_fraction`` of the real samples and the
        reference shares are counted on the held-out rest, so under the null (fake drawn like real) each bin is
        flagged with probability about ``alpha``. Costs: fewer points to fit the bins and a smaller reference
        sample (less power per bin) for the same real set.

        ``"original"``: the paper's design (gans-n-gmms ``utils/ndb.py``): bins fitted on all real samples and
        reference shares taken from those same samples. Centres over-fit their own points, so real-like fake
        samples look different. Measured (``benchmarks/calibration.py``) on 10-mode Gaussian mixtures, 20k
        real and 10k fake from the same distribution, K=100, alpha=0.05: 24 to 43 of 100 bins flagged at 784
        dims, 81 to 91 at 3072 dims when clustering on all dimensions, 4 to 41 with the original's automatic
        ``D // 6`` dimension cap; holdout flags 1 to 5 (5 expected by chance). Use it to reproduce published
        numbers, not to decide whether a model collapsed. As in the original, when ``max_dims`` is not given
        and ``D > 1000``, a random ``D // 6`` of the dimensions are used.

    Args:
        num_bins: number of bins ``K >= 2``.
        alpha: per-bin significance level in ``(0, 1)``.
        mode: ``"holdout"`` | ``"original"``.
        seed: seed of the holdout split, the feature subset and k-means.
        backend: assignment engine, ``"auto"`` | ``"torch"`` | ``"faiss"`` | ``"cuml"``.
        holdout_fraction: share of real samples held out for the reference counts (``holdout`` mode).
        correction: ``None`` | ``"holm"`` | ``"bh"`` multiple-testing correction of the per-bin p-values.
        z_threshold: flag bins with ``|z| > z_threshold`` instead of ``p < alpha`` (the original's option).
        whitening: standardise features with the real mean and std before binning.
        max_dims: cluster on a seeded random subset of this many features.
        max_iter: most k-means iterations.
        tol: k-means stopping tolerance (relative inertia decrease).
        value_range: ``(low, high)`` of samples that are not ``uint8``/``uint16`` images, mapped to [0, 1]
            (``(-1, 1)`` for ``tanh`` outputs); ``None``: taken as they are. See :mod:`fastndb._core.features` for the
            convention and the range checks between real and fake samples.
        progress: tqdm bars for k-means and large assignments (``None``: only on a terminal).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> modes = torch.randn(8, 16, generator=g) * 6
        >>> def draw(n, keep=8):
        ...     which = torch.randint(keep, (n,), generator=g)
        ...     return modes[which] + torch.randn(n, 16, generator=g)
        >>> ndb = NDB(num_bins=16, seed=0).fit(draw(4000))
        >>> ndb.score(draw(2000)).ndb <= 4  # same distribution: about alpha * K = 0.8 by chance
        True
        >>> ndb.score(draw(2000, keep=4)).ndb >= 8  # half the modes dropped
        True
    """

    def __init__(
        self,
        num_bins: int = 100,
        alpha: float = 0.05,
        *,
        mode: str = "holdout",
        seed: int = 0,
        backend: str = "auto",
        holdout_fraction: float = 0.5,
        correction: str | None = None,
        z_threshold: float | None = None,
        whitening: bool = False,
        max_dims: int | None = None,
        max_iter: int = 300,
        tol: float = 1e-4,
        value_range: tuple[float, float] | None = None,
        progress: bool | None = None,
    ) -> None:
        self.num_bins = check_int(num_bins, "num_bins", minimum=2)
        self.alpha = check_open_unit(alpha, "alpha")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        self.mode = mode
        self.seed = check_seed(seed)
        self._engine = resolve_backend(backend)
        self.backend = backend
        self.holdout_fraction = check_open_unit(holdout_fraction, "holdout_fraction")
        self.z_threshold = check_test_options(correction, z_threshold)
        self.correction = correction
        self.whitening = bool(whitening)
        self.max_dims = None if max_dims is None else check_int(max_dims, "max_dims", minimum=1)
        self.max_iter = check_int(max_iter, "max_iter", minimum=1)
        self.tol = check_nonnegative(tol, "tol")
        self.value_range = check_value_range(value_range)
        self.progress = progress
        self._bins: FittedBins | None = None
        self._bins_on: dict[torch.device, tuple[FeatureMap, Tensor]] = {}
        self._fake_counts: Tensor | None = None

    # ------------------------------------------------------------------ fitting
    def fit(self, real: object, *, distributed: bool | None = None, group: Any = None) -> NDB:
        """Fit the bins on real samples ``(N, D)`` (or ``(N, C, H, W)``), on their device.

        Random choices (the holdout split, the k-means seeding sample) are made by content keys
        (:mod:`fastndb._core.sampling`): the bins do not depend on the order or batching of the real samples.

        Args:
            real: real samples: one array or an iterable of batches.
            distributed: ``None`` (default): when ``torch.distributed`` is initialised with several processes,
                ``real`` is this rank's shard and the bins are fitted on the union of the shards, identical on
                every rank (see :func:`fastndb._core.kmeans`); ``True``: require that; ``False``: this process only.
            group: ``torch.distributed`` process group (``None``: the default group).

        Raises:
            ValueError: too few samples for ``num_bins`` (``holdout`` needs ``K`` to fit and ``K`` to hold out),
                invalid samples, shards with different numbers of features.
            TypeError: input that is not an array or an iterable of arrays.
        """
        comm = resolve_collective(distributed, group)
        return self.fit_shard(concatenate(as_batches(real, "real")), comm)

    def fit_shard(self, x: Tensor, comm: Collective, real_values: ValueSummary | None = None) -> NDB:
        """Fit on a validated ``(n, D)`` tensor, this rank's shard under ``comm`` (``n`` may be 0 on some ranks).

        ``real_values``: the real data's range as they were passed, when ``x`` was converted before (the metric
        buffers samples already in [0, 1]); ``None``: taken from ``x``."""
        n_local, num_features = x.shape
        feature_counts, _ = comm.all_gather_cat(torch.tensor([num_features], device=x.device))
        if bool((feature_counts != num_features).any()):
            raise ValueError(
                f"real: expected the same number of features on every rank, got {feature_counts.tolist()}"
            )
        n = int(comm.all_reduce_sum(torch.tensor([n_local], dtype=torch.int64, device=x.device))[0])
        reference_rows: Tensor | None = None
        if self.mode == "holdout":
            num_reference = int(round(n * self.holdout_fraction))
            num_fit = n - num_reference
            if min(num_fit, num_reference) < self.num_bins:
                need = math.ceil(self.num_bins / min(self.holdout_fraction, 1 - self.holdout_fraction))
                raise ValueError(
                    f"real: {n} samples split into {num_fit} to fit and {num_reference} to hold out "
                    f"(holdout_fraction={self.holdout_fraction}), each fewer than num_bins={self.num_bins}; "
                    f"need at least {need} real samples, or fewer bins"
                )
            positions, _ = key_positions(row_keys(x, self.seed, SPLIT_SALT), comm)
            in_fit = positions < num_fit
            fit_rows = in_fit.nonzero()[:, 0]
            fit_rows = fit_rows[torch.argsort(positions[fit_rows])]  # key order: sums, hence bins, bit-identical
            x_fit = x.index_select(0, fit_rows)                     # whatever the order of the real samples
            reference_rows = (~in_fit).nonzero()[:, 0]
        else:
            if n < self.num_bins:
                raise ValueError(f"real: expected at least num_bins={self.num_bins} samples, got {n}")
            num_fit = num_reference = n
            x_fit = x
        max_dims = self.max_dims
        if max_dims is None and self.mode == "original":
            max_dims = original_max_dims(num_features)
        feature_map = fit_feature_map(x_fit, whitening=self.whitening, max_dims=max_dims, seed=self.seed,
                                      value_range=self.value_range,
                                      real_values=real_values or self._global_summary(x, comm),
                                      comm=comm)
        clusters = fit_kmeans(
            to_float(feature_map(x_fit)), self.num_bins, seed=self.seed, max_iter=self.max_iter, tol=self.tol,
            engine=self._engine, init_size=None, progress=self.progress, comm=comm,
        )
        order_by_size = torch.argsort(clusters.counts, descending=True, stable=True)
        centroids = clusters.centroids.index_select(0, order_by_size)
        if reference_rows is not None:
            labels = assign_samples(x.index_select(0, reference_rows), feature_map, centroids, self._engine)
            real_counts = comm.all_reduce_sum(torch.bincount(labels, minlength=self.num_bins))
        else:
            real_counts = clusters.counts.index_select(0, order_by_size)
        logger.info("NDB bins: K=%d fitted on %d real samples (%d features -> %d), reference counts from %d "
                    "(%s mode, %d rank(s))", self.num_bins, num_fit, num_features, feature_map.output_features,
                    num_reference, self.mode, comm.world_size)
        # state changes only once everything succeeded
        return self.load_bins(FittedBins(feature_map, centroids, real_counts, num_fit, num_reference,
                                         clusters.inertia))

    def _global_summary(self, x: Tensor, comm: Collective) -> ValueSummary:
        """The real samples' :class:`~fastndb._core.features.ValueSummary` over all ranks."""
        summary = merge_summaries(summarize(x, self.value_range) if x.shape[0] else None, comm, x.device)
        if summary is None:  # fit_kmeans refuses empty data before this matters
            raise ValueError("real: expected at least one sample over all ranks, got none")
        return summary

    def load_bins(self, bins: FittedBins) -> NDB:
        """Use already-fitted bins (e.g. from :meth:`FittedBins.from_dict`); the fake stream is reset."""
        if not isinstance(bins, FittedBins):
            raise TypeError(f"bins: expected a FittedBins, got {type(bins).__name__}")
        if bins.centroids.shape[0] != self.num_bins:
            raise ValueError(f"bins: expected {self.num_bins} bins (num_bins), got {bins.centroids.shape[0]}")
        self._bins = bins
        self._bins_on = {}
        self._fake_counts = None
        return self

    @property
    def is_fitted(self) -> bool:
        """Whether bins were fitted (or loaded)."""
        return self._bins is not None

    @property
    def bins(self) -> FittedBins:
        """The fitted bins (raises :class:`NotFittedError` before :meth:`fit`)."""
        if self._bins is None:
            raise NotFittedError("this NDB has no bins yet: call fit(real) first")
        return self._bins

    @property
    def centroids(self) -> Tensor:
        """``(K, d)`` bin centres in feature space (after whitening / dimension subset)."""
        return self.bins.centroids

    @property
    def real_counts(self) -> Tensor:
        """``(K,)`` int64 reference counts of real samples per bin."""
        return self.bins.real_counts

    def precision_on(self, device: torch.device) -> str:
        """Arithmetic of the assignment on ``device`` (see :func:`fastndb.kernels.matmul_precision`)."""
        return matmul_precision(self.centroids.dtype, device)

    @property
    def num_features(self) -> int:
        """``D``, the number of features per sample the bins were fitted on."""
        return self.bins.feature_map.num_features

    # --------------------------------------------------------------- assignment
    def _bins_for(self, device: torch.device) -> tuple[FeatureMap, Tensor]:
        """Feature map and centroids on ``device`` (copied once per device: K x d numbers, never samples)."""
        if device not in self._bins_on:
            bins = self.bins
            self._bins_on[device] = (bins.feature_map.to(device), bins.centroids.to(device))
        return self._bins_on[device]

    def _check_features(self, x: Tensor, name: str) -> None:
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name}: expected {self.num_features} features per sample (the bins' dimension), got {x.shape[1]}"
            )

    def _assign_matrix(self, x: Tensor, name: str) -> Tensor:
        self._check_features(x, name)
        feature_map, centroids = self._bins_for(x.device)
        return assign_samples(x, feature_map, centroids, self._engine)

    def _count_batches(self, batches: Batches, name: str) -> Tensor:
        total: Tensor | None = None
        feature_map = self.bins.feature_map
        with progress_bar(self.progress, total=None, desc="assigning", unit="sample") as bar:
            for matrix in batches.iterator:
                self._check_features(matrix, name)
                summary = summarize(matrix, feature_map.value_range)
                feature_map.check(summary, name)  # before counting: refuse what cannot be compared
                counts = torch.bincount(self._assign_matrix(matrix, name), minlength=self.num_bins)
                total = counts if total is None else total + counts.to(total.device)
                bar.update(matrix.shape[0])
        if total is None:  # as_batches never yields zero batches; kept as a guard
            raise ValueError(f"{name}: expected at least one batch, got none")
        return total

    def assign(self, x: object) -> Tensor:
        """Bin index of every sample: ``(N,)`` int64 on the samples' device.

        Example:
            >>> ndb = NDB(num_bins=2, mode="original").fit(torch.tensor([[0.0], [0.1], [0.2], [10.0]]))
            >>> ndb.assign(torch.tensor([[9.0], [-1.0]])).tolist()  # bin 0 is the largest in the real set
            [1, 0]
        """
        matrix = concatenate(as_batches(x, "x"))
        self._check_features(matrix, "x")
        self.bins.feature_map.check(summarize(matrix, self.bins.feature_map.value_range), "x")
        return self._assign_matrix(matrix, "x")

    def count(self, x: object) -> Tensor:
        """Bin histogram ``(K,)`` int64 of samples (one array or an iterable of batches, streamed)."""
        batches = x if isinstance(x, Batches) else as_batches(x, "fake")
        return self._count_batches(batches, "fake")

    # ---------------------------------------------------------------- statistics
    def compare(self, fake_counts: Tensor) -> NDBResult:
        """NDB statistics of a fake histogram against the fitted reference counts."""
        return compare_to_reference(
            self.real_counts, fake_counts, alpha=self.alpha, correction=self.correction,
            z_threshold=self.z_threshold, mode=self.mode, precision=self.precision_on(fake_counts.device),
        )

    def score(self, fake: object) -> NDBResult:
        """Compare fake samples (one array or an iterable of batches) with the bins; state is not touched."""
        return self.compare(self.count(fake))

    # ----------------------------------------------------------------- streaming
    def update(self, fake_batch: object) -> NDB:
        """Add fake samples to the running histogram (only ``K`` counts are kept)."""
        counts = self.count(fake_batch)
        self._fake_counts = counts if self._fake_counts is None else self._fake_counts + counts.to(
            self._fake_counts.device
        )
        return self

    def result(self) -> NDBResult:
        """NDB statistics of everything passed to :meth:`update` since the last :meth:`reset`."""
        if self._fake_counts is None:
            raise ValueError("result: no fake samples yet; call update(fake_batch) first")
        return self.compare(self._fake_counts)

    def reset(self) -> NDB:
        """Forget the streamed fake samples; the bins are kept."""
        self._fake_counts = None
        return self

    def __repr__(self) -> str:
        fitted = "fitted" if self._bins is not None else "not fitted"
        return (
            f"NDB(num_bins={self.num_bins}, alpha={self.alpha}, mode={self.mode!r}, seed={self.seed}, "
            f"backend={self.backend!r}, value_range={self.value_range}, {fitted})"
        )
