"""``fastndb.score``: one call per epoch, with the fitted bins cached per real data set.

Cache key: the NDB options that shape the bins (``num_bins``, ``mode``, ``seed``, ``backend``,
``holdout_fraction``, ``whitening``, ``max_dims``, ``max_iter``, ``tol``) and the identity of the real data:

* a ``torch.Tensor``: the object itself (held by weak reference, so a new tensor at a recycled address is
  not mistaken for it), its storage pointer, shape, strides, dtype, device and PyTorch's version counter,
  which every in-place torch operation on the tensor or a view of it increments. Checking this costs no pass
  over the data and no host synchronisation. Not seen: writes that bypass autograd's counter (through
  ``tensor.data``, a numpy view from ``tensor.numpy()``, or DLPack); call :func:`clear_cache` after those.
* an inference tensor (made under ``torch.inference_mode()``, which keeps no version counter), and anything else
  (numpy, CuPy, DLPack, iterables of batches): a 128-bit fingerprint of the exact bytes computed on the data's
  own device (:func:`fastndb._core.sampling.content_fingerprint`: one pass, no host copy), so in-place changes are
  always seen.

The per-bin test options (``alpha``, ``correction``, ``z_threshold``) are applied at each call and never
cause a refit. At most :data:`CACHE_SIZE` fitted bin sets are kept (least recently used dropped); the cache
holds bins (``K x d`` numbers), never the real samples.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from fastndb._core.inputs import as_batches, check_same_library, concatenate
from fastndb._ndb import NDB, compare_to_reference
from fastndb._core.results import NDBResult
from fastndb._core.sampling import content_fingerprint

CACHE_SIZE = 4
_cache: OrderedDict[tuple, tuple[Any, NDB]] = OrderedDict()
_lock = threading.Lock()


def clear_cache() -> None:
    """Drop every cached set of fitted bins."""
    with _lock:
        _cache.clear()


def cache_info() -> dict:
    """Number of cached bin sets and the cache's capacity."""
    with _lock:
        return {"entries": len(_cache), "capacity": CACHE_SIZE}


def content_digest(x: torch.Tensor) -> str:
    """SHA-1 hex digest of a tensor's dtype, shape and bytes (copied to the CPU if needed)."""
    flat = x.detach().contiguous().cpu().reshape(-1)
    raw = flat.view(torch.uint8) if flat.numel() else flat
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"{x.dtype}|{tuple(x.shape)}".encode())
    digest.update(memoryview(np.ascontiguousarray(raw.numpy())))
    return digest.hexdigest()


def _tensor_identity(real: torch.Tensor) -> tuple:
    """Identity of a tensor's current contents without reading them (see the module docstring)."""
    return ("torch", id(real), real.data_ptr(), tuple(real.shape), real.stride(), str(real.dtype),
            str(real.device), real._version)


def _trackable(real: object) -> bool:
    """Whether ``real`` is a tensor whose changes PyTorch's version counter records (inference tensors have none)."""
    return isinstance(real, torch.Tensor) and not real.is_inference()


def score(
    real: object,
    fake: object,
    *,
    num_bins: int = 100,
    alpha: float = 0.05,
    mode: str = "holdout",
    seed: int = 0,
    correction: str | None = None,
    z_threshold: float | None = None,
    cache: bool = True,
    **options: Any,
) -> NDBResult:
    """NDB score of fake samples against real ones, fitting the bins once per real data set.

    Args:
        real: ``(N, D)`` or ``(N, C, H, W)`` real samples: tensor (any device), numpy/CuPy/DLPack array, or an
            iterable of batches. Must come from the same array library as ``fake``.
        fake: generated samples, same forms; an iterable is streamed batch by batch.
        num_bins: number of k-means bins ``K``.
        alpha: per-bin significance level.
        mode: ``"holdout"`` (calibrated, default) or ``"original"`` (the paper's design); see :class:`NDB`.
        seed: seed of the split, feature subset and k-means.
        correction: ``None`` | ``"holm"`` | ``"bh"``.
        z_threshold: flag ``|z| > z_threshold`` instead of ``p < alpha``.
        cache: reuse bins fitted on the same real data with the same options (see the module docstring).
        **options: further :class:`NDB` options (``backend``, ``holdout_fraction``, ``whitening``,
            ``max_dims``, ``max_iter``, ``tol``, ``value_range``, ``progress``).

    Returns:
        :class:`NDBResult` with tensors on the device of the fake samples.

    Raises:
        TypeError: ``real`` and ``fake`` from different array libraries; unknown options; non-array input.
        ValueError: invalid options or samples (see :class:`NDB`).

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
    unknown = set(options) - {"backend", "holdout_fraction", "whitening", "max_dims", "max_iter", "tol", "value_range",
                              "progress"}
    if unknown:
        raise TypeError(f"score() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    config = NDB(num_bins, alpha, mode=mode, seed=seed, correction=correction, z_threshold=z_threshold, **options)
    fake_batches = as_batches(fake, "fake")
    bin_options = {k: v for k, v in options.items() if k != "progress"}
    bin_options.update(num_bins=num_bins, mode=mode, seed=seed, value_range=config.value_range)
    if cache:
        fitted = _cached_fit(real, fake_batches.library, config, bin_options)
    else:
        real_batches = as_batches(real, "real")
        check_same_library(real=real_batches.library, fake=fake_batches.library)
        fitted = config.fit(concatenate(real_batches), distributed=False)
    fake_counts = fitted.count(fake_batches)
    # a cached NDB may carry another call's test options: apply this call's (validated in ``config``)
    return compare_to_reference(
        fitted.real_counts, fake_counts, alpha=config.alpha, correction=config.correction,
        z_threshold=config.z_threshold, mode=mode, precision=fitted.precision_on(fake_counts.device),
    )


def _lookup(key: tuple, real: object) -> NDB | None:
    with _lock:
        hit = _cache.get(key)
        if hit is None or (hit[0] is not None and hit[0]() is not real):
            return None
        _cache.move_to_end(key)
        return hit[1]


def _cached_fit(real: object, fake_library: str, ndb: NDB, bin_options: dict) -> NDB:
    """Bins for ``real`` from the cache, or fitted and cached. A torch tensor found in the cache is not
    re-validated: it was validated when cached, and its version counter shows it has not changed since."""
    options_key = tuple(sorted(bin_options.items()))
    if isinstance(real, torch.Tensor) and _trackable(real):
        check_same_library(real="torch", fake=fake_library)
        key = (_tensor_identity(real), options_key)
        hit = _lookup(key, real)
        if hit is not None:
            return hit
        ndb.fit(real, distributed=False)
        _store(key, weakref.ref(real), ndb)
        return ndb
    real_batches = as_batches(real, "real")
    check_same_library(real=real_batches.library, fake=fake_library)
    matrix = concatenate(real_batches)
    key = (("content", content_fingerprint(matrix)), options_key)
    hit = _lookup(key, None)
    if hit is not None:
        return hit
    ndb.fit(matrix, distributed=False)
    _store(key, None, ndb)
    return ndb


def _store(key: tuple, ref: Any, ndb: NDB) -> None:
    with _lock:
        _cache[key] = (ref, ndb)
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
