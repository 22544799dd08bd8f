"""The NDB test (Richardson & Weiss 2018, "On GANs and GMMs") as a stateful object: fitted bins and a running
fake histogram.

:class:`NDB` is a thin wrapper over the functional core (:mod:`fastndb._core.bins`: ``fit_bins``, ``count_bins``,
``compare_counts``); it validates its options once (:mod:`fastndb._core.options`) and keeps state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fastndb._core.backends import resolve_backend
from fastndb._core.bins import FittedBins, assign_checked, compare_counts, count_bins, features_of, fit_bins_from
from fastndb._core.collectives import resolve_collective
from fastndb._core.extractors import same_features
from fastndb._core.inputs import Batches, as_batches, concatenate
from fastndb._core.options import BIN_OPTION_NAMES, TEST_OPTION_NAMES, split_options
from fastndb._core.results import NDBResult


class NotFittedError(RuntimeError):
    """Raised when bins are needed before :meth:`NDB.fit` was called."""


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
        samples look different far more often than ``alpha`` (docs/statistics.md gives the measured rates). Use it
        to reproduce published numbers, not to decide whether a model collapsed. As in the original, when
        ``max_dims`` is not given and ``D > 1000``, a random ``D // 6`` of the dimensions are used.

    Args:
        num_bins: number of bins ``K >= 2``.
        alpha: per-bin significance level in ``(0, 1)``.
        **options: the other options, each defined once in :class:`~fastndb.BinOptions` (what shapes the bins:
            ``mode``, ``seed``, ``holdout_fraction``, ``whitening``, ``max_dims``, ``max_iter``, ``tol``,
            ``backend``, ``value_range``, ``feature``: the space the bins live in, see
            :mod:`fastndb._core.extractors`) and :class:`~fastndb.TestOptions` (how bins are compared:
            ``correction``, ``z_threshold``), and ``progress`` (tqdm bars; ``None``: only on a terminal).

    Attributes:
        options: the :class:`~fastndb.BinOptions`; each is also an attribute (``ndb.mode``, ``ndb.seed``, ...).
        test: the :class:`~fastndb.TestOptions` (``ndb.alpha``, ``ndb.correction``, ``ndb.z_threshold``).

    Raises:
        TypeError: an unknown option.
        ValueError: an option out of its range.

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

    def __init__(self, num_bins: int = 100, alpha: float = 0.05, **options: Any) -> None:
        self.options, self.test, self.progress = split_options(
            {"num_bins": num_bins, "alpha": alpha, **options}, where="NDB()"
        )
        self._engine = resolve_backend(self.options.backend)
        self._bins: FittedBins | None = None
        self._bins_on: dict[torch.device, FittedBins] = {}
        self._fake_counts: Tensor | None = None

    def __getattr__(self, name: str) -> Any:
        """The options as attributes: ``ndb.num_bins``, ``ndb.alpha``, ``ndb.mode``, ..."""
        if name in BIN_OPTION_NAMES:
            return getattr(self.__dict__["options"], name)
        if name in TEST_OPTION_NAMES:
            return getattr(self.__dict__["test"], name)
        raise AttributeError(f"'NDB' object has no attribute {name!r}")

    # ------------------------------------------------------------------ fitting
    def fit(self, real: object, *, distributed: bool | None = None, group: Any = None) -> NDB:
        """Fit the bins on real samples ``(N, D)`` (or ``(N, C, H, W)``), on their device.

        Random choices (the holdout split, the k-means seeding sample) are made by content keys: the bins do not
        depend on the order or batching of the real samples.

        Args:
            real: real samples: one array or an iterable of batches.
            distributed: ``None`` (default): when ``torch.distributed`` is initialised with several processes,
                ``real`` is this rank's shard and the bins are fitted on the union of the shards, identical on
                every rank (see :func:`fastndb.kmeans`); ``True``: require that; ``False``: this process only.
            group: ``torch.distributed`` process group (``None``: the default group).

        Raises:
            ValueError: too few samples for ``num_bins`` (``holdout`` needs ``K`` to fit and ``K`` to hold out),
                invalid samples, shards with different numbers of features.
            TypeError: input that is not an array or an iterable of arrays.
        """
        comm = resolve_collective(distributed, group)
        x = concatenate(self._batches(real, "real"))  # fit_bins' one range read checks NaN/Inf
        return self.load_bins(fit_bins_from(x, self.options, comm=comm, progress=self.progress))

    def _batches(self, data: object, name: str) -> Batches:
        """``data`` as validated batches, flat or (for an extractor) in their own shape."""
        return as_batches(data, name, check_finite=False, flatten=self.options.feature is None)

    def load_bins(self, bins: FittedBins) -> NDB:
        """Use already-fitted bins (e.g. from :meth:`FittedBins.from_dict`); the fake stream is reset."""
        if not isinstance(bins, FittedBins):
            raise TypeError(f"bins: expected a FittedBins, got {type(bins).__name__}")
        if bins.num_bins != self.num_bins:
            raise ValueError(f"bins: expected {self.num_bins} bins (num_bins), got {bins.num_bins}")
        same_features(bins.feature, self.options.feature, "bins")
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

    @property
    def num_features(self) -> int:
        """``D``, the number of features per sample the bins were fitted on."""
        return self.bins.num_features

    # --------------------------------------------------------------- assignment
    def _bins_for(self, device: torch.device) -> FittedBins:
        """The bins on ``device`` (copied once per device: K x d numbers, never samples)."""
        if device not in self._bins_on:
            self._bins_on[device] = self.bins.to(device)
        return self._bins_on[device]

    def assign(self, x: object) -> Tensor:
        """Bin index of every sample: ``(N,)`` int64 on the samples' device.

        Example:
            >>> ndb = NDB(num_bins=2, mode="original").fit(torch.tensor([[0.0], [0.1], [0.2], [10.0]]))
            >>> ndb.assign(torch.tensor([[9.0], [-1.0]])).tolist()  # bin 0 is the largest in the real set
            [1, 0]
        """
        bins = self.bins
        matrix = concatenate(features_of(self._batches(x, "x"), bins, self.options, "x"))
        return assign_checked(self._bins_for(matrix.device), matrix, self._engine, "x")

    def count(self, x: object) -> Tensor:
        """Bin histogram ``(K,)`` int64 of samples (one array or an iterable of batches, streamed)."""
        batches = x if isinstance(x, Batches) else self._batches(x, "fake")
        counted = features_of(batches, self.bins, self.options, "fake")
        return count_bins(self.bins, counted.iterator, engine=self._engine, progress=self.progress,
                          place=self._bins_for, numbered=batches.single is None)

    # ---------------------------------------------------------------- statistics
    def compare(self, fake_counts: Tensor) -> NDBResult:
        """NDB statistics of a fake histogram against the fitted reference counts."""
        return compare_counts(self.bins, fake_counts, self.test)

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
            f"backend={self.backend!r}, value_range={self.value_range}, feature={self.feature}, {fitted})"
        )
