"""Coverage metrics: precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020), exact
and memory-bounded, on the tiled kNN kernels (:mod:`fastndb.kernels.neighbours`).

Definitions are those of the ``prdc`` package's ``compute_prdc`` (radius: the distance to the ``k``-th nearest other
sample of the same set; a sample is inside a ball when its distance is strictly less than the radius), so numbers
compare with published ones; ``inclusive=True`` tests ``<=`` instead, as torch-fidelity's precision/recall and the
papers' text do. ``nearest_k=3`` with ``inclusive=True`` is the improved precision/recall of Kynkäänniemi et al.

Steps: inputs validated as everywhere (:mod:`fastndb._core.inputs`), optionally a content-keyed subset of each set
(``num_samples``), the value-range convention or a feature extractor (``feature=``), the real and fake ranges
checked against each other, an exact power-of-two rescaling for extreme scales, then the radii and the ball tests.
"""

from __future__ import annotations

import logging
import math
import warnings

import torch
from torch import Tensor

from fastndb._core.checks import check_int, check_open_unit, check_seed
from fastndb._core.collectives import Collective, resolve_collective
from fastndb._core.extractors import embed, resolve_feature
from fastndb._core.features import check_value_range, check_value_ranges, rescale, summarize, to_float, unit_scale
from fastndb._core.inputs import as_batches, check_same_library, concatenate
from fastndb._core.progress import progress_bar
from fastndb._core.results import PRDCResult
from fastndb._core.sampling import SEEDING_SALT, key_positions, row_keys
from fastndb._core.sync import host_values
from fastndb.kernels import matmul_precision
from fastndb.kernels.neighbours import BallCounts, ball_counts, kth_neighbour_sq

logger = logging.getLogger(__name__)

INTERVAL_GROUPS = 10  # random halvings of both sets behind the intervals of the four numbers
MIN_GROUP_SIZE = 20  # samples of each set per half
MIN_GROUPS = 2  # fewer halvings give no interval (a Student interval on 1 degree of freedom is too wide to use)
ANGULAR = (True, True, False, True)  # precision, recall, coverage on the angular scale asin(sqrt(p)); density as is


def _subset(x: Tensor, size: int | None, seed: int) -> Tensor:
    """At most ``size`` rows of ``x``, chosen by content keys (the same rows whatever their order)."""
    if size is None or x.shape[0] <= size:
        return x
    positions, _ = key_positions(row_keys(x.reshape(x.shape[0], -1), seed, SEEDING_SALT))
    return x[positions < size]


def prepare_pair(
    real: object, fake: object, *, feature: object, value_range: tuple[float, float] | None,
    num_samples: int | None, seed: int,
) -> tuple[Tensor, Tensor, float]:
    """Both sets as ``(N, d)`` and ``(M, d)`` floating tensors of one dtype on the real set's device, under the
    value-range convention (or embedded), at one exact power-of-two scale, and that scale (:func:`prepare_sets`).

    Raises:
        TypeError: different array libraries.
        ValueError: invalid samples, different numbers of features, value ranges that cannot be compared.
    """
    (x, y), unit = prepare_sets([(real, "real"), (fake, "fake")], feature=feature, value_range=value_range,
                                num_samples=num_samples, seed=seed)
    return x, y, unit


def prepare_sets(
    sets: list[tuple[object, str]], *, feature: object, value_range: tuple[float, float] | None,
    num_samples: int | None, seed: int,
) -> tuple[list[Tensor], float]:
    """Each ``(samples, name)`` of ``sets`` as an ``(N_i, d)`` floating tensor, all of one dtype on the first set's
    device, under the value-range convention (or embedded), at one exact power-of-two scale; and that scale. The
    first set is the reference: the others' value ranges and numbers of features are checked against it.

    Raises:
        TypeError: different array libraries.
        ValueError: invalid samples, different numbers of features, value ranges that cannot be compared.
    """
    extractor = resolve_feature(feature)
    flatten = extractor is None
    batches = [as_batches(samples, name, check_finite=False, flatten=flatten) for samples, name in sets]
    first = sets[0][1]
    check_same_library(**{name: b.library for (_, name), b in zip(sets, batches, strict=True)})
    raw = [_subset(concatenate(b), num_samples, seed) for b in batches]
    names = [name for _, name in sets]
    if extractor is not None:
        ref_x, ref_values = embed(raw[0], extractor, value_range, first)
        check = lambda summary, name: check_value_ranges(ref_values, summary, reference_name=first,  # noqa: E731
                                                          name=name)
        xs = [ref_x] + [embed(r, extractor, value_range, name, check)[0] for r, name in zip(raw[1:], names[1:],
                                                                                             strict=True)]
        value_range = None
    else:
        xs = raw
    summaries = [summarize(x, value_range, name) for x, name in zip(xs, names, strict=True)]
    for summary, name, x in zip(summaries[1:], names[1:], xs[1:], strict=True):
        check_value_ranges(summaries[0], summary, reference_name=first, name=name)
        if x.shape[1] != xs[0].shape[1]:
            raise ValueError(f"{name}: expected {xs[0].shape[1]} features per sample like {first}, got {x.shape[1]}")
    unit = unit_scale(max(s.largest for s in summaries))
    floats = [to_float(x, value_range).to(xs[0].device) for x in xs]
    dtype = floats[0].dtype
    for f in floats[1:]:
        dtype = torch.promote_types(dtype, f.dtype)
    return [rescale(f.to(dtype), unit) for f in floats], unit


def prdc(
    real: object,
    fake: object,
    *,
    nearest_k: int = 5,
    inclusive: bool = False,
    feature: object = None,
    value_range: tuple[float, float] | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    block_rows: int | None = None,
    progress: bool | None = None,
    subsets: int = INTERVAL_GROUPS,
    confidence: float = 0.95,
    distributed: bool | None = None,
    group: object = None,
) -> PRDCResult:
    """Precision, recall, density and coverage of ``fake`` against ``real`` (see :class:`~fastndb.PRDCResult`).

    Args:
        real: ``(N, D)`` or ``(N, C, H, W)`` real samples, every form ``fastndb.score`` takes; the work runs on
            their device (the fake samples are moved there).
        fake: ``(M, ...)`` generated samples, same forms, same array library.
        nearest_k: ``k`` of the k-NN radii (the ``prdc`` package's default is 5; 3 in Kynkäänniemi et al.).
        inclusive: test ``d <= r`` (torch-fidelity, the papers' text) instead of ``d < r`` (``prdc``).
        feature: embed both sets first (:mod:`fastndb._core.extractors`), as everywhere.
        value_range: the value-range convention's range for float samples.
        num_samples: use at most this many samples of each set, chosen by content keys with ``seed`` (``None``:
            all); the cost is ``(N^2 + M^2 + N M) D`` multiply-adds.
        seed: seed of that choice.
        block_rows: edge of the tiles (default: 2048 on CPU, 8192 on GPU).
        progress: tqdm bar over row blocks.
        subsets: ``R``, the random halvings of both sets behind the intervals (:func:`split_half_scores`; 0: no
            intervals; none where a half would hold under 20 samples of either set, or for ``R < 2``). They cost
            about ``2 R / 3`` times the metrics themselves (each halving computes the four numbers on four pairs
            of half-size sets): pass ``subsets=0`` where only the numbers are wanted.
        confidence: level of the intervals.
        distributed: ``None`` (default): when ``torch.distributed`` is initialised with several processes, ``real``
            and ``fake`` are this rank's shards: each rank embeds its own, the union (in rank order) is gathered on
            every rank, and the k-NN searches and ball tests are split by row blocks between the ranks (each block
            searched against the whole union, the answers combined by three all-reduces); the result equals one
            process fed the union. ``False``: this process alone. ``True``: require a process group.
        group: the ``torch.distributed`` process group (``None``: the default group).

    Memory: the samples, one tile of ``block_rows^2`` distances with two 0/1 buffers of its size (float32),
    ``(N + M)(k + 17)`` candidates, a reordered copy of each set during its radius search (up to 512 dimensions)
    and at most 65,536
    pairs re-tested at once: never an ``N x N`` or ``N x M`` matrix, whatever the data (duplicates and ties
    included: a radius of 0 is legal, and nothing lies strictly inside it).

    Raises:
        ValueError: ``nearest_k`` not below the number of samples of either set; invalid samples; different
            numbers of features; value ranges that cannot be compared.
        TypeError: non-array input, a non-integer ``nearest_k``, a non-bool ``inclusive``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> real = torch.randn(500, 8, generator=g)
        >>> same = prdc(real, torch.randn(500, 8, generator=g))
        >>> half = prdc(real, torch.randn(500, 8, generator=g).abs())  # only one orthant of the real cloud
        >>> same.coverage > 0.9 > 0.3 > half.coverage
        True
    """
    nearest_k = check_int(nearest_k, "nearest_k", minimum=1)
    if not isinstance(inclusive, bool):
        raise TypeError(f"inclusive: expected True or False, got {inclusive!r}")
    if num_samples is not None:
        num_samples = check_int(num_samples, "num_samples", minimum=2)
    seed = check_seed(seed)
    value_range = check_value_range(value_range)
    if block_rows is not None:
        block_rows = check_int(block_rows, "block_rows", minimum=1)
    subsets = check_int(subsets, "subsets", minimum=0)
    confidence = check_open_unit(confidence, "confidence")
    comm = resolve_collective(distributed, group)
    sharded = comm.world_size > 1
    x, y, unit = prepare_shards(real, fake, comm, feature=feature, value_range=value_range, num_samples=num_samples,
                                seed=seed)
    return prdc_prepared(x, y, unit, nearest_k=nearest_k, inclusive=inclusive, seed=seed, block_rows=block_rows,
                         progress=progress, subsets=subsets, confidence=confidence, comm=comm if sharded else None)


def prepare_shards(real: object, fake: object, comm: Collective, *, feature: object,
                   value_range: tuple[float, float] | None, num_samples: int | None, seed: int
                   ) -> tuple[Tensor, Tensor, float]:
    """:func:`prepare_pair` of this rank's samples; with several ranks, the union of every rank's (in rank order, at
    one scale: :func:`union_of_ranks`), then at most ``num_samples`` of each set by content keys."""
    if comm.world_size == 1:
        return prepare_pair(real, fake, feature=feature, value_range=value_range, num_samples=num_samples, seed=seed)
    x, y, unit = prepare_pair(real, fake, feature=feature, value_range=value_range, num_samples=None, seed=seed)
    x, y, unit = union_of_ranks(x, y, unit, comm)
    return _subset(x, num_samples, seed), _subset(y, num_samples, seed), unit


def union_of_ranks(x: Tensor, y: Tensor, unit: float, comm: Collective) -> tuple[Tensor, Tensor, float]:
    """:func:`union_of_sets` of two sets."""
    (x, y), unit = union_of_sets([x, y], unit, comm)
    return x, y, unit


def union_of_sets(xs: list[Tensor], unit: float, comm: Collective) -> tuple[list[Tensor], float]:
    """Every rank's prepared samples of each set concatenated in rank order, at one power-of-two scale: each rank
    scaled its own by the unit of its largest magnitude; the common unit is the smallest (the union's largest
    magnitude), and rescaling by a ratio of powers of two is exact."""
    units = comm.all_gather_cat(torch.tensor([unit], dtype=torch.float64, device=xs[0].device))[0]
    common = float(units.min())
    if common != unit:
        xs = [x * (common / unit) for x in xs]
    return [comm.all_gather_cat(x)[0] for x in xs], common


def _radii(x: Tensor, k: int, block_rows: int | None, comm: Collective | None) -> Tensor:
    """:func:`kth_neighbour_sq`, its row blocks split between the ranks of ``comm`` (each holding all of ``x``)."""
    if comm is None:
        return kth_neighbour_sq(x, k, block_rows=block_rows)
    return comm.all_reduce_sum(kth_neighbour_sq(x, k, block_rows=block_rows, shard=(comm.rank, comm.world_size),
                                                gather=lambda t: comm.all_gather_cat(t)[0]))


def _balls(x: Tensor, x_sq: Tensor, y: Tensor, y_sq: Tensor, *, inclusive: bool, block_rows: int | None,
           comm: Collective | None, on_block=None) -> BallCounts:
    """:func:`ball_counts`, its row blocks split between the ranks of ``comm`` (each holding all of ``x``, ``y``)."""
    if comm is None:
        return ball_counts(x, x_sq, y, y_sq, inclusive=inclusive, block_rows=block_rows, on_block=on_block)
    part = ball_counts(x, x_sq, y, y_sq, inclusive=inclusive, block_rows=block_rows, on_block=on_block,
                       shard=(comm.rank, comm.world_size))
    n, m = x.shape[0], y.shape[0]
    settled = torch.tensor([part.num_settled], dtype=torch.int64, device=x.device)
    packed = comm.all_reduce_sum(torch.cat([part.a_any.long(), part.a_in_b.long(), part.b_count, settled]))
    return BallCounts(packed[:n] > 0, packed[2 * n : 2 * n + m], packed[n : 2 * n] > 0, int(packed[-1]))


def prdc_prepared(x: Tensor, y: Tensor, unit: float, *, nearest_k: int, inclusive: bool, seed: int,
                  block_rows: int | None, progress: bool | None, subsets: int, confidence: float,
                  comm: Collective | None = None) -> PRDCResult:
    """:func:`prdc` of prepared samples (:func:`prepare_pair`); with ``comm`` every rank holds the same ``x`` and
    ``y`` and the searches are split between the ranks."""
    n, m = x.shape[0], y.shape[0]
    for name, count in (("real", n), ("fake", m)):
        if nearest_k >= count:
            raise ValueError(f"nearest_k: expected fewer than the {count} {name} samples (the k-th nearest other "
                             f"sample must exist), got {nearest_k}")
    real_sq = _radii(x, nearest_k, block_rows, comm)
    fake_sq = _radii(y, nearest_k, block_rows, comm)
    with progress_bar(progress, total=n, desc="coverage", unit="row") as bar:
        balls = _balls(x, real_sq, y, fake_sq, inclusive=inclusive, block_rows=block_rows, comm=comm,
                       on_block=bar.update)
    realistic = balls.b_count > 0
    precision, recall, density, coverage = host_values(torch.stack([
        realistic.double().mean(), balls.a_in_b.double().mean(),
        balls.b_count.double().sum() / (nearest_k * m), balls.a_any.double().mean(),
    ]))
    logger.info("prdc: N=%d, M=%d, k=%d, %d boundary pairs re-tested exactly", n, m, nearest_k, balls.num_settled)
    intervals: dict = {}
    usable = subsets >= MIN_GROUPS and min(n, m) // 2 >= MIN_GROUP_SIZE
    if usable and nearest_k >= min(n, m) // 2:
        # a half must still hold a k-th nearest other sample
        warnings.warn(f"prdc: no intervals: nearest_k={nearest_k} leaves no k-th neighbour in a half of "
                      f"{min(n, m)} samples; pass a smaller nearest_k for intervals", UserWarning, stacklevel=3)
    elif usable:
        halves, density_real = split_half_scores(x, y, nearest_k=nearest_k, inclusive=inclusive, splits=subsets,
                                                 seed=seed, block_rows=block_rows, comm=comm)
        # density given the real samples is a mean over the fake ones: its variance there is exact at full size
        density_given_real = (balls.b_count.double() / nearest_k).var() / m
        intervals = split_half_intervals([precision, recall, density, coverage], halves, density_given_real,
                                         density_real, n=n, m=m, confidence=confidence)
    elif subsets > 0:
        logger.info("prdc: no intervals: %d halvings of %d real and %d fake samples (at least %d halvings and "
                    "%d samples a half are needed)", subsets, n, m, MIN_GROUPS, max(MIN_GROUP_SIZE, nearest_k + 1))
    return PRDCResult(
        precision=precision, recall=recall, density=density, coverage=coverage, nearest_k=nearest_k, num_real=n,
        num_fake=m, inclusive=inclusive, real_radii=real_sq.sqrt() / unit, fake_radii=fake_sq.sqrt() / unit,
        real_covered=balls.a_any, real_recalled=balls.a_in_b, fake_realistic=realistic, fake_density=balls.b_count,
        precision_mode=matmul_precision(x.dtype, x.device), **intervals,
    )



def split_half_scores(x: Tensor, y: Tensor, *, nearest_k: int, inclusive: bool, splits: int, seed: int,
                      block_rows: int | None = None, comm: Collective | None = None) -> tuple[Tensor, Tensor]:
    r"""Precision, recall, density and coverage on independent half-size pairs: ``(R, 4, 4)`` float64, and the
    real side's share of density's half-size variance, ``(R, 2)`` float64.

    Halving ``r`` splits each set at random (seeded, on its device) into two disjoint halves of ``floor(N / 2)``
    and ``floor(M / 2)`` samples, ``X_1, X_2`` and ``Y_1, Y_2``, and computes the four numbers (radii included)
    on the pairs ``(X_1, Y_1), (X_2, Y_2), (X_1, Y_2), (X_2, Y_1)``, in that order along dim 1. Disjoint subsets
    of independent samples are independent, so the first two pairs are two independent draws of the metrics at
    half size, and so are the last two: their differences estimate the half-size variance without bias, whatever
    the statistic (:func:`split_half_intervals`).

    Density is a mean over the fake samples given the real ones, :math:`\frac{1}{kM}\sum_j D_X(y_j)`
    (:math:`D_X(y)` the real balls holding :math:`y`), so its variance splits into the fake side's, exact from the
    counts, and the real side's, :math:`\mathrm{Var}_X(E[\text{density} \mid X])`. The pairs sharing their fake
    half, :math:`(X_1, Y_j)` and :math:`(X_2, Y_j)`, estimate the latter at half size without bias:
    :math:`\frac12\big(\Delta^2 - \widehat{\mathrm{Var}}(\delta) / (M/2)\big)` with :math:`\Delta` their
    difference and :math:`\delta_j = (D_{X_1}(y_j) - D_{X_2}(y_j)) / k`, one per fake half.
    """
    device = x.device
    generator = torch.Generator(device=device).manual_seed(seed)
    n2, m2 = x.shape[0] // 2, y.shape[0] // 2
    out, real_side = [], []
    for _ in range(splits):
        real_order = torch.randperm(x.shape[0], generator=generator, device=device)
        fake_order = torch.randperm(y.shape[0], generator=generator, device=device)
        reals = [x[real_order[:n2]], x[real_order[n2 : 2 * n2]]]
        fakes = [y[fake_order[:m2]], y[fake_order[m2 : 2 * m2]]]
        real_sq = [_radii(a, nearest_k, block_rows, comm) for a in reals]
        fake_sq = [_radii(b, nearest_k, block_rows, comm) for b in fakes]
        rows, held = [], {}
        for i, j in ((0, 0), (1, 1), (0, 1), (1, 0)):
            balls = _balls(reals[i], real_sq[i], fakes[j], fake_sq[j], inclusive=inclusive, block_rows=block_rows,
                           comm=comm)
            held[i, j] = balls.b_count.double() / nearest_k
            rows.append(torch.stack([(balls.b_count > 0).double().mean(), balls.a_in_b.double().mean(),
                                     held[i, j].mean(), balls.a_any.double().mean()]))
        out.append(torch.stack(rows))
        real_side.append(torch.stack([((held[0, j].mean() - held[1, j].mean()) ** 2
                                       - (held[0, j] - held[1, j]).var() / m2) / 2 for j in (0, 1)]))
    return torch.stack(out), torch.stack(real_side)


def angular(values: Tensor) -> Tensor:
    r"""The intervals' scale: :math:`\arcsin\sqrt{p}` for precision, recall and coverage (the last dim's entries
    0, 1, 3), density as it is."""
    scaled = values.clone()
    for column, bounded in enumerate(ANGULAR):
        if bounded:
            scaled[..., column] = torch.asin(values[..., column].clamp(0.0, 1.0).sqrt())
    return scaled


def split_half_intervals(centre: list[float], halves: Tensor, density_given_real: Tensor, density_real: Tensor,
                         *, n: int, m: int, confidence: float) -> dict:
    r"""The intervals of :class:`~fastndb.PRDCResult` from :func:`split_half_scores`.

    On the scale :math:`\phi` of :func:`angular` (on which a proportion's variance hardly depends on its value,
    so that a half-size variance carries over to full size when the metric's mean moves with the size), each
    halving gives two independent differences :math:`d = \phi(\theta_{11}) - \phi(\theta_{22})` and
    :math:`\phi(\theta_{12}) - \phi(\theta_{21})`, with :math:`E[d^2] = 2\,\mathrm{Var}(\phi_{N/2})`. The
    full-size variance is the half-size one times the ratio of the sizes, as for every statistic whose variance
    falls as :math:`1 / N` (the k-NN metrics' central limit theorems):
    :math:`\widehat{\mathrm{se}}^2 = \frac{s}{2}\,\overline{d^2}` with
    :math:`s = \frac12\left(\frac{\lfloor N/2 \rfloor}{N} + \frac{\lfloor M/2 \rfloor}{M}\right)`. The interval
    is Student's around the full-size value, mapped back to the metric's scale, on Satterthwaite's degrees of
    freedom: the half sum and half difference of a halving's two differences are, to first order, its real and
    its fake halves' contrasts, each estimated on ``R`` degrees of freedom, so the total has between ``R`` (one
    side dominates, as the real side does for coverage where modes are dropped) and ``2R``. Density's variance
    is its fake side's, exact at full size (``density_given_real``, the counts' variance over ``M``, on ``M - 1``
    degrees of freedom), plus its real side's half-size variance (``density_real``) times
    :math:`\lfloor N/2 \rfloor / N`: only that part relies on the scaling (in 32 dimensions, where the counts'
    spread grows with the sizes, scaling the whole half-size variance made density's intervals too narrow).
    Unlike a jackknife (whose variance counts the higher-order terms of these OR-of-balls statistics upwards) or a
    plain bootstrap (a resampled point is its own neighbour), nothing here is biased but the :math:`1/N` scaling.

    Args:
        centre: the full-size precision, recall, density, coverage (Python numbers).
        halves: ``(R, 4, 4)`` float64 from :func:`split_half_scores`.
        density_given_real: ``()`` float64, the sample variance of the full-size per-fake counts over ``k``,
            divided by ``M``.
        density_real: ``(R, 2)`` float64 from :func:`split_half_scores`.
        n, m: the full sizes.
        confidence: the level.

    Returns:
        The interval fields of :class:`~fastndb.PRDCResult`.
    """
    splits = halves.shape[0]
    scaled = angular(halves)
    first, second = scaled[:, 0] - scaled[:, 1], scaled[:, 2] - scaled[:, 3]  # (R, 4) each
    # d1 = (X1 - X2) + (Y1 - Y2) and d2 = (X1 - X2) - (Y1 - Y2) in first order: their half sum and half difference
    # are the real and the fake halves' contrasts, d1^2 + d2^2 = 2 (u^2 + v^2)
    real_contrast = (((first + second) / 2) ** 2).mean(0)
    fake_contrast = (((first - second) / 2) ** 2).mean(0)
    ratio = 0.5 * ((n // 2) / n + (m // 2) / m)
    real_share = (n // 2) / n * density_real.mean().clamp(min=0.0)
    values = host_values(torch.cat([real_contrast, fake_contrast, torch.stack([density_given_real, real_share])]))
    parts, density_parts = (values[:4], values[4:8]), values[8:]  # one host read
    middle = [math.asin(math.sqrt(min(max(v, 0.0), 1.0))) if bounded else v
              for v, bounded in zip(centre, ANGULAR, strict=True)]
    variance, df = [], []
    for column in range(4):
        if column == 2:  # density: the fake side exact (M - 1 degrees of freedom), the real side on R
            pieces, dfs = density_parts, (m - 1, splits)
        else:  # each contrast on R degrees of freedom
            pieces, dfs = [ratio * parts[0][column] / 2, ratio * parts[1][column] / 2], (splits, splits)
        total = sum(pieces)
        variance.append(total)
        # Satterthwaite's degrees of freedom of a sum of two variance estimates (between R and 2R here, R where one
        # side dominates, as the real side does for coverage when modes are dropped)
        denominator = sum(piece**2 / d for piece, d in zip(pieces, dfs, strict=True))
        df.append(max(1, int(min(2 * splits - 1 if column != 2 else m - 1,
                                 total**2 / denominator if denominator > 0 else 2 * splits - 1))))
    se = [math.sqrt(v) for v in variance]
    intervals = {}
    names = ("precision_interval", "recall_interval", "density_interval", "coverage_interval")
    plain_se = []
    for column, name in enumerate(names):
        half = student_quantile(0.5 + confidence / 2, df[column]) * se[column]
        if ANGULAR[column]:
            low = math.sin(min(max(middle[column] - half, 0.0), math.pi / 2)) ** 2
            high = math.sin(min(max(middle[column] + half, 0.0), math.pi / 2)) ** 2
            # the standard error on the metric's own scale (delta method: d sin^2(phi) / d phi = sin(2 phi))
            plain_se.append(se[column] * math.sin(2 * middle[column]))
        else:
            low, high = max(middle[column] - half, 0.0), middle[column] + half
            plain_se.append(se[column])
        intervals[name] = (low, high)
    intervals.update(coverage_se=plain_se[3], interval_se=tuple(se), interval_df=tuple(df),
                     interval_subsets=splits, confidence=confidence)
    return intervals


def student_cdf(t: float, df: int) -> float:
    r"""The Student t distribution function for an integer ``df``, exactly: with
    :math:`\theta = \arctan(t / \sqrt\nu)`, :math:`P(|T| < t)` is Abramowitz & Stegun's 26.7.3 (odd
    :math:`\nu`) or 26.7.4 (even) finite series in :math:`\cos\theta`.

    Example:
        >>> round(student_cdf(2.093, 19), 4)  # scipy.stats.t.cdf(2.093, 19) = 0.975
        0.975
    """
    theta = math.atan(abs(t) / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    if df % 2:
        total, term = 0.0, c
        for j in range(1, (df - 1) // 2 + 1):
            if j > 1:
                term *= c * c * (2 * j - 2) / (2 * j - 1)
            total += term
        inside = 2 / math.pi * (theta + s * total) if df > 1 else 2 * theta / math.pi
    else:
        total, term = 1.0, 1.0
        for j in range(1, df // 2):
            term *= c * c * (2 * j - 1) / (2 * j)
            total += term
        inside = s * total
    return 0.5 + math.copysign(0.5 * min(inside, 1.0), t)


def student_quantile(q: float, df: int) -> float:
    """The Student t quantile, by the Cornish-Fisher expansion in :math:`1/\\nu` about the normal quantile
    (Abramowitz & Stegun 26.7.5; within 0.003 of the exact value for :math:`\\nu \\ge 5` at 97.5%).

    Example:
        >>> round(student_quantile(0.975, 19), 3)  # scipy.stats.t.ppf(0.975, 19) = 2.093
        2.093
    """
    from fastndb._core.effects import normal_quantile

    z = normal_quantile(q)
    v = float(df)
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))
