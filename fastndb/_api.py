"""``fastndb.score``: one call per epoch, with the fitted bins cached per real data set and bin options
(:mod:`fastndb._core.cache`)."""

from __future__ import annotations

from typing import Any

import torch

from fastndb._core.backends import resolve_backend
from fastndb._core.bins import FittedBins, compare_counts, count_bins, features_of, fit_bins_from
from fastndb._core.cache import MemoryCache, bins_key, tensor_identity, trackable
from fastndb._core.collectives import SingleProcess
from fastndb._core.inputs import as_batches, check_same_library, concatenate
from fastndb._core.options import BinOptions, split_options
from fastndb._core.references import Reference
from fastndb._core.results import NDBResult
from fastndb._core.sampling import content_fingerprint

_memory = MemoryCache()


def clear_cache() -> None:
    """Drop every cached set of fitted bins."""
    _memory.clear()


def cache_info() -> dict:
    """Number of cached bin sets and the cache's capacity."""
    return _memory.info()


def score(real: object, fake: object, *, cache: bool = True, **options: Any) -> NDBResult:
    """NDB score of fake samples against real ones, fitting the bins once per real data set.

    Args:
        real: ``(N, D)`` or ``(N, C, H, W)`` real samples: tensor (any device), numpy/CuPy/DLPack array, or an
            iterable of batches. Must come from the same array library as ``fake``. Or a named reference
            (:func:`fastndb.load_reference`): its stored bins are used, and only ``feature`` (which must match the
            reference's) and the test options may be given.
        fake: generated samples, same forms; an iterable is streamed batch by batch.
        cache: reuse bins fitted on the same real data with the same bin options (:mod:`fastndb._core.cache`).
        **options: every option of :class:`~fastndb.NDB`, by the same names (``num_bins`` (100), ``alpha`` (0.05),
            ``mode``, ``seed``, ``holdout_fraction``, ``whitening``, ``max_dims``, ``max_iter``, ``tol``,
            ``backend``, ``value_range``, ``feature``, ``correction``, ``z_threshold``, ``progress``): the bin
            options (:class:`~fastndb.BinOptions`) key the cache; the test options (:class:`~fastndb.TestOptions`)
            and ``progress`` apply to this call only, whether the bins came from the cache or not. With
            ``feature=`` (a name, a module, a callable or ``fastndb.extractor(...)``) both sets are embedded
            first and the bins live in that feature space: the real set's features are computed once per real
            data set and extractor (the cache key holds the extractor's identity), the fake samples' batch by
            batch, keeping only their bin counts.

    Returns:
        :class:`NDBResult` with tensors on the device of the fake samples.

    Raises:
        TypeError: ``real`` and ``fake`` from different array libraries; unknown options; non-array input.
        ValueError: invalid options or samples (see :class:`~fastndb.NDB`).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> real = torch.randn(3000, 8, generator=g)
        >>> result = score(real, torch.randn(1500, 8, generator=g), num_bins=10)
        >>> result.num_bins, result.num_real, result.num_fake
        (10, 1500, 1500)
        >>> score(real, torch.randn(1500, 8, generator=g) + 1.0, num_bins=10).ndb >= 5
        True
    """
    if isinstance(real, Reference):
        return real.score(fake, **options)
    bin_options, test_options, progress = split_options(options, where="score()")
    flatten = bin_options.feature is None  # an extractor sees the samples in their own shape
    fake_batches = as_batches(fake, "fake", check_finite=False, flatten=flatten)  # checked by one range read later
    if cache:
        bins = _cached_bins(real, fake_batches.library, bin_options, progress)
    else:
        real_batches = as_batches(real, "real", check_finite=False, flatten=flatten)  # one range read: NaN/Inf
        check_same_library(real=real_batches.library, fake=fake_batches.library)
        bins = fit_bins_from(concatenate(real_batches), bin_options, comm=SingleProcess(), progress=progress)
    counted = features_of(fake_batches, bins, bin_options, "fake")
    fake_counts = count_bins(bins, counted.iterator, engine=resolve_backend(bin_options.backend),
                             progress=progress, numbered=fake_batches.single is None)
    return compare_counts(bins, fake_counts, test_options)


def _cached_bins(real: object, fake_library: str, options: BinOptions, progress: bool | None) -> FittedBins:
    """Bins for ``real`` from the cache, or fitted and cached. A tracked tensor found in the cache is not
    re-validated: it was validated when cached, and its version counter shows it has not changed since."""
    if isinstance(real, torch.Tensor) and trackable(real):
        check_same_library(real="torch", fake=fake_library)
        key = (tensor_identity(real), options.key())
        hit = _memory.get(key, real)
        if hit is not None:
            return hit
        flatten = options.feature is None
        real_matrix = concatenate(as_batches(real, "real", check_finite=False, flatten=flatten))  # one range read
        bins = fit_bins_from(real_matrix, options, comm=SingleProcess(), progress=progress)
        _memory.put(key, bins, real)
        return bins
    # a hit means these bytes were checked and fitted
    real_batches = as_batches(real, "real", check_finite=False, flatten=options.feature is None)
    check_same_library(real=real_batches.library, fake=fake_library)
    matrix = concatenate(real_batches)
    key = bins_key((*content_fingerprint(matrix), str(matrix.device)), options)
    hit = _memory.get(key)
    if hit is not None:
        return hit
    bins = fit_bins_from(matrix, options, comm=SingleProcess(), progress=progress)
    _memory.put(key, bins)
    return bins
