r"""The birthday-paradox test (Arora & Zhang 2017, "Do GANs learn the distribution?").

Draw ``s`` samples, find the most similar pairs, count near-duplicates. If samples of size ``s`` contain
duplicates with good probability, the generator's support is about :math:`s^2`: far smaller than the data's
when ``s`` is in the hundreds or thousands.

Steps: samples are validated and flattened (:mod:`fastndb._core.inputs`), optionally L2-normalised (``cosine``);
the pairwise search is tiled (:func:`fastndb.kernels.pairwise.smallest_pairs`: block GEMM and a running top-k,
never the ``s x s`` matrix); more candidates than asked are fetched and their distances recomputed exactly in
float64 from the differences (so exact duplicates give exactly 0, never NaN); the duplicate count settles pairs
near the threshold exactly too; the support estimate and its interval come from
:func:`fastndb._core.statistics.poisson_interval`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import Tensor

from fastndb._core.checks import check_int, check_open_unit, check_seed
from fastndb._core.collectives import Collective, resolve_collective
from fastndb._core.extractors import Extractor, embed, resolve_feature
from fastndb._core.features import check_value_range, rescale, summarize, to_float, unit_scale
from fastndb._core.inputs import as_batches, concatenate
from fastndb._core.progress import progress_bar
from fastndb._core.results import BirthdayResult
from fastndb._core.sampling import SEEDING_SALT, key_positions, row_keys
from fastndb._core.statistics import poisson_interval
from fastndb.kernels import matmul_eps, matmul_precision
from fastndb.kernels.pairwise import exact_squared_distances, nearest_other, smallest_pairs

logger = logging.getLogger(__name__)

METRICS = ("l2", "cosine")
_EXTRA_CANDIDATES = 32  # candidates fetched beyond 2 * num_pairs before the exact recompute
_EXACT_CHUNK_ELEMENTS = 2**22  # float64 values gathered at once by the exact recomputation (32 MiB per side)
_IDENTITY_SALT = 0x1D3A


def check_options(metric: object, threshold: object) -> None:
    """Validate ``metric`` and ``threshold`` (raises ``ValueError`` / ``TypeError`` naming them)."""
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise TypeError(f"threshold: expected a finite number or None, got {threshold!r}")
        if threshold < 0:
            raise ValueError(f"threshold: expected a distance >= 0, got {threshold}")


def _prepare(
    samples: object, name: str, metric: str, value_range: tuple[float, float] | None, extractor: Extractor | None,
    subset: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, float]:
    """Validated ``(s, D)`` floating samples under the value-range convention (or their features, with an
    extractor), at a safe scale, and that scale.

    The scale is an exact power of two (:func:`~fastndb._core.features.unit_scale`): distances computed on the scaled
    samples are the true ones times the scale, with no underflow or overflow in float32. ``subset`` picks the rows
    to keep before an extractor runs (so only those are embedded).
    """
    check_options(metric, None)
    raw = concatenate(as_batches(samples, name, check_finite=False, flatten=extractor is None))
    if extractor is not None:
        if subset is not None:
            raw = subset(raw)
        raw, _ = embed(raw, extractor, value_range, name)  # distances are taken between features, as they are
        value_range = None
    unit = unit_scale(summarize(raw, value_range, name).largest)  # one pass, one read: NaN check and scale
    x = rescale(to_float(raw, value_range), unit)
    if metric == "cosine":
        zero = (torch.linalg.vector_norm(x, dim=1) == 0).nonzero()[:, 0]
        if zero.numel():
            raise ValueError(
                f"{name}: metric='cosine' needs non-zero samples, got {zero.numel()} all-zero sample(s) "
                f"(first: {int(zero[0])}); use metric='l2'"
            )
    return x, unit


def _search_space(x: Tensor, metric: str) -> Tensor:
    """The vectors whose squared Euclidean distances the search ranks (unit vectors for ``cosine``)."""
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True) if metric == "cosine" else x


def _exact_squared(x: Tensor, pairs: Tensor, metric: str) -> Tensor:
    """Squared distances of ``pairs`` in float64 from the raw samples (normalised in float64 for ``cosine``),
    computed in chunks of at most about 4M gathered values, so any number of pairs takes bounded memory."""
    chunk = max(1, _EXACT_CHUNK_ELEMENTS // max(x.shape[1], 1))
    if pairs.shape[0] > chunk:
        return torch.cat([_exact_squared(x, pairs[start : start + chunk], metric)
                          for start in range(0, pairs.shape[0], chunk)])
    if metric == "l2":
        return exact_squared_distances(x, pairs)
    rows = x.index_select(0, pairs.reshape(-1)).double()
    units = rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    index = torch.arange(units.shape[0], device=x.device).view(-1, 2)
    return exact_squared_distances(units, index)


def _to_squared(distance: float, metric: str) -> float:
    """A reported distance as the squared Euclidean distance the search works in (``inf`` past float range)."""
    if metric == "cosine":
        return 2.0 * distance  # ||u - v||^2 = 2 (1 - cos)
    return distance * distance if distance < 1e150 else math.inf


def _from_squared(sq: Tensor, metric: str) -> Tensor:
    return sq.sqrt() if metric == "l2" else sq / 2.0


def _rounding_band(x: Tensor) -> float:
    """Half-width (in squared distance) that covers the expansion's rounding for these samples, at the GEMM
    precision torch's settings allow on their device (TF32 or bfloat16 widen it: the count stays exact)."""
    eps = matmul_eps(x.dtype, x.device)
    largest = float(torch.linalg.vector_norm(x, dim=1).max()) ** 2 if x.shape[0] else 0.0
    return 8.0 * math.sqrt(x.shape[1]) * eps * 2.0 * largest


def count_identical_pairs(x: Tensor) -> int | None:
    """Number of pairs ``i < j`` with identical rows (``0.0`` equal to ``-0.0``), from content keys in ``O(s D)``
    time and ``O(s)`` memory beyond one chunk; ``None`` in the (about ``2^-62``) case of a key collision, which
    callers settle by the tiled search instead.

    Example:
        >>> count_identical_pairs(torch.tensor([[1.0], [2.0], [1.0], [1.0], [-0.0], [0.0]]))
        4
    """
    canonical = x + 0.0  # -0.0 + 0.0 == +0.0: equal values get equal bits
    keys = row_keys(canonical, 0, _IDENTITY_SALT)
    order = torch.sort(keys, stable=True).indices
    ordered = keys[order]
    first = torch.searchsorted(ordered, ordered)  # first position of each row's key in the sorted order
    chunk = max(1, _EXACT_CHUNK_ELEMENTS // max(x.shape[1], 1))
    for start in range(0, order.numel(), chunk):
        rows = canonical.index_select(0, order[start : start + chunk])
        leaders = canonical.index_select(0, order.index_select(0, first[start : start + chunk]))
        if not torch.equal(rows, leaders):
            return None
    _, sizes = torch.unique_consecutive(ordered, return_counts=True)
    return int((sizes * (sizes - 1) // 2).sum())


def birthday(
    samples: object,
    *,
    num_pairs: int = 20,
    metric: str = "l2",
    threshold: float | None = None,
    confidence: float = 0.95,
    value_range: tuple[float, float] | None = None,
    feature: object = None,
    block_rows: int | None = None,
    progress: bool | None = None,
    distributed: bool | None = None,
    group: object = None,
) -> BirthdayResult:
    r"""The ``num_pairs`` most similar pairs among ``s`` samples, and duplicates below ``threshold``.

    Args:
        samples: ``(s, D)`` or ``(s, C, H, W)`` samples: a tensor on any device (the search runs there), a
            numpy/CuPy array, or an iterable of batches. ``s >= 2``.
        num_pairs: ``P``, how many closest pairs to return (at most ``s (s - 1) / 2``).
        metric: ``"l2"`` (Euclidean distance) or ``"cosine"`` (``1 - cos``; samples must be non-zero).
        threshold: pairs at distance ``<= threshold`` are duplicates (same units as the distances); choose it
            with :func:`duplicate_threshold` so that "duplicate" means closer than real samples are. ``0``
            counts exact duplicates only. ``None``: no duplicate count and no support estimate.
        confidence: level of the support-size interval.
        value_range: ``(low, high)`` of samples that are not ``uint8``/``uint16`` images, mapped to [0, 1] before
            distances are taken (the library's convention, :mod:`fastndb._core.features`); pass the same as to
            :func:`duplicate_threshold`.
        feature: find the pairs among the samples' features instead (:mod:`fastndb._core.extractors`: a name, a
            module, a callable or ``fastndb.extractor(...)``); distances are then in feature units, and the
            threshold must come from :func:`duplicate_threshold` with the same ``feature``.
        block_rows: edge of the square blocks of the tiled search (default: 2048 on CPU, 8192 on GPU);
            memory is about ``block_rows^2`` floats.
        progress: tqdm bar over row blocks (``None``: only on a terminal with tqdm installed).
        distributed: ``None`` (default): under ``torch.distributed`` with several processes, ``samples`` are this
            rank's shard: the union (in rank order) is gathered on every rank, the row blocks of the pair search
            are dealt out between the ranks, and their candidate pairs and duplicate counts are combined (one
            all-gather, one all-reduce); the result equals one process fed the union (among exactly tied pairs,
            which are listed may differ). ``False``: this process alone. ``True``: require a process group.
        group: the ``torch.distributed`` process group (``None``: the default group).

    Memory: the samples, one ``block_rows^2`` block of distances with its masks, ``O(num_pairs)`` candidates,
    and at most about 4M float64 values for the exact recomputation, whatever the threshold and however many
    pairs are duplicates (with every sample the same, all ``s (s - 1) / 2`` pairs are, and are counted by content
    at threshold 0 or in bounded slabs otherwise).

    Returns:
        :class:`~fastndb.BirthdayResult`, tensors on the samples' device.

    Raises:
        ValueError: fewer than 2 samples, ``num_pairs`` out of range, negative ``threshold``, unknown
            ``metric``, all-zero samples with ``cosine``, invalid samples.
        TypeError: input that is not an array, non-integer ``num_pairs``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(500, 32, generator=g)
        >>> x[400] = x[17]  # plant an exact duplicate
        >>> result = birthday(x, num_pairs=3, threshold=0.0)
        >>> result.pairs[0].tolist(), float(result.distances[0]), result.num_duplicates
        ([17, 400], 0.0, 1)
    """
    check_options(metric, threshold)
    value_range = check_value_range(value_range)
    num_pairs = check_int(num_pairs, "num_pairs", minimum=1)
    confidence = check_open_unit(confidence, "confidence")
    if block_rows is not None:
        block_rows = check_int(block_rows, "block_rows", minimum=1)
    comm = resolve_collective(distributed, group)
    x, unit = _prepare(samples, "samples", metric, value_range, resolve_feature(feature))
    if comm.world_size > 1:
        from fastndb._core.coverage import union_of_sets

        (x,), unit = union_of_sets([x], unit, comm)
    return birthday_prepared(x, unit, num_pairs=num_pairs, metric=metric, threshold=threshold, confidence=confidence,
                             block_rows=block_rows, progress=progress,
                             comm=comm if comm.world_size > 1 else None)


def birthday_prepared(x: Tensor, unit: float, *, num_pairs: int, metric: str, threshold: float | None,
                      confidence: float, block_rows: int | None, progress: bool | None,
                      comm: Collective | None = None) -> BirthdayResult:
    """:func:`birthday` of prepared samples (:func:`_prepare`); with ``comm`` every rank holds the same ``x`` and
    the row blocks of the search are dealt out between the ranks."""
    search = _search_space(x, metric)
    s = x.shape[0]
    if s < 2:
        raise ValueError(f"samples: expected at least 2 samples to form a pair, got {s}")
    total_pairs = s * (s - 1) // 2
    if num_pairs > total_pairs:
        raise ValueError(f"num_pairs: expected at most s(s-1)/2 = {total_pairs} pairs for s={s}, got {num_pairs}")

    candidates = min(total_pairs, 2 * num_pairs + _EXTRA_CANDIDATES)
    identical = count_identical_pairs(x) if threshold == 0 and metric == "l2" else None
    band = settle = None
    if threshold is not None and identical is None:
        scaled_threshold = float(threshold) * (unit if metric == "l2" else 1.0)  # exact: unit is a power of two
        threshold_sq = _to_squared(scaled_threshold, metric)
        slack = _rounding_band(search)
        band = (threshold_sq - slack, threshold_sq + slack)

        def settle(pairs: Tensor) -> Tensor:
            # the reported distance itself is compared, so a pair listed at distance t counts at threshold t
            return (_from_squared(_exact_squared(x, pairs, metric), metric) <= scaled_threshold).sum()

    shard = (0, 1) if comm is None else (comm.rank, comm.world_size)
    with progress_bar(progress, total=s, desc="birthday pairs", unit="row") as bar:
        found = smallest_pairs(search, candidates, block_rows=block_rows, count_band=band, settle=settle,
                               on_block=bar.update, shard=shard)
    found_pairs, num_below = found.pairs, found.num_below
    if comm is not None:  # every rank's candidates (a superset of the whole search's) and the summed count
        found_pairs, _ = comm.all_gather_cat(found_pairs)
        if num_below is not None:
            num_below = comm.all_reduce_sum(num_below.view(1))[0]

    exact = _exact_squared(x, found_pairs, metric)
    # by exact distance, ties by (i, j): the same order whatever the search's tiles or ranks
    by_index = torch.argsort(found_pairs[:, 0] * s + found_pairs[:, 1], stable=True)
    order = by_index[torch.argsort(exact[by_index], stable=True)][:num_pairs]
    pairs, distances = found_pairs[order], _from_squared(exact[order], metric)
    if unit != 1.0 and metric == "l2":
        distances = distances / unit

    num_duplicates = duplicate_rate = support = interval = rate_interval = None
    if threshold is not None:
        num_duplicates = identical if identical is not None else int(num_below)  # type: ignore[arg-type]
        duplicate_rate = num_duplicates / total_pairs
        low, high = poisson_interval(num_duplicates, confidence)
        support = total_pairs / num_duplicates if num_duplicates else math.inf
        interval = (total_pairs / high, total_pairs / low if low > 0 else math.inf)
        rate_interval = (low / total_pairs, min(high / total_pairs, 1.0))
    logger.info("birthday: s=%d, %d duplicate pairs at threshold %s (%s)", s, num_duplicates or 0, threshold, metric)
    return BirthdayResult(
        pairs=pairs, distances=distances, metric=metric, num_samples=s, threshold=threshold,
        num_duplicates=num_duplicates, duplicate_rate=duplicate_rate, support_estimate=support,
        support_interval=interval, confidence=confidence, precision=matmul_precision(x.dtype, x.device),
        duplicate_rate_interval=rate_interval,
    )


def duplicate_threshold(
    real: object,
    *,
    quantile: float = 0.01,
    metric: str = "l2",
    num_samples: int | None = 10_000,
    seed: int = 0,
    value_range: tuple[float, float] | None = None,
    feature: object = None,
) -> float:
    """A duplicate threshold from real data: a low quantile of real nearest-neighbour distances.

    Each real sample's distance to its nearest other real sample is computed within a subset of
    ``num_samples`` real samples (chosen by content keys with ``seed``); the threshold is their ``quantile``.
    A fake pair closer than this is closer than all but ``quantile`` of real samples are to their nearest real
    neighbour: a "duplicate" in the sense that real data rarely produce one. Nearest-neighbour distances shrink
    as the sample grows, so pass ``num_samples`` equal to the ``s`` you will test, to compare like with like.

    Real data have such pairs too (about ``quantile * s / 2``, but noisily: a low quantile rests on few
    samples): measure the null level with ``birthday(real_subset_of_size_s, threshold=t)`` and read the
    generator's count against it.

    Args:
        real: real samples, same forms as :func:`birthday`.
        quantile: in ``(0, 1)``; lower is stricter.
        metric: ``"l2"`` or ``"cosine"``, as in :func:`birthday`.
        num_samples: size of the real subset (``None``: all; the search costs ``num_samples^2 D`` flops).
        seed: seed of the subset.
        value_range: as in :func:`birthday` (pass the same to both).
        feature: as in :func:`birthday` (pass the same to both); the subset is chosen on the samples before they
            are embedded, so only ``num_samples`` of them pass through the extractor.

    Returns:
        The threshold (float), in the units of :func:`birthday`'s distances.

    Example:
        >>> import torch
        >>> real = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
        >>> t = duplicate_threshold(real, quantile=0.01, num_samples=1000)
        >>> 0 < t < float(torch.cdist(real[:2], real[2:4]).min())
        True
    """
    quantile = check_open_unit(quantile, "quantile")
    seed = check_seed(seed)
    if num_samples is not None:
        num_samples = check_int(num_samples, "num_samples", minimum=2)

    def subset(x: Tensor) -> Tensor:
        if num_samples is None or x.shape[0] <= num_samples:
            return x
        positions, _ = key_positions(row_keys(x.reshape(x.shape[0], -1), seed, SEEDING_SALT))
        return x[positions < num_samples]

    extractor = resolve_feature(feature)
    x, unit = _prepare(real, "real", metric, check_value_range(value_range), extractor, subset)
    if extractor is None:
        x = subset(x)
    if x.shape[0] < 2:
        raise ValueError(f"real: expected at least 2 samples, got {x.shape[0]}")
    neighbours = nearest_other(_search_space(x, metric))
    rows = torch.arange(x.shape[0], device=x.device)
    nearest = _from_squared(_exact_squared(x, torch.stack([rows, neighbours], dim=1), metric), metric)
    if unit != 1.0 and metric == "l2":
        nearest = nearest / unit
    return float(torch.quantile(nearest, quantile))
