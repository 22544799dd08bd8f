r"""Copies of the training data: per-sample copy flags calibrated on held-out data, AuthPct and the C_T score.

NDB, the coverage metrics and the mode counts all score a generator that returns its training set as perfect.
This module asks the other question: is a generated sample closer to one training sample than fresh data ever
come? Everything runs on the exact tiled neighbour search (:func:`fastndb.kernels.neighbours.nearest_neighbours`):
never a ``train x fake`` matrix.

**The copy flag.** For a sample :math:`y`, let :math:`d_1(y), d_2(y)` be its distances to the nearest and the
second-nearest training samples and :math:`s(y) = d_1 / d_2` (0 when both are 0), the ratio of the extraction
studies (a copy sits on one training sample and away from the rest; the ratio needs no global scale). The same
score is computed for held-out real samples, the *calibration* set: the ``test`` set when given, else each
training sample against the others (leave-one-out). With :math:`T` calibration scores, the conformal p-value of
:math:`y` is

.. math::
    p(y) = \frac{1 + \#\{t : s_t \le s(y)\}}{T + 1},

and :math:`y` is flagged a copy when :math:`p(y) \le \alpha`. A generated sample that is no copy (exchangeable
with held-out data) is flagged with probability :math:`c = \lfloor \alpha (T + 1) \rfloor / (T + 1) \le \alpha`:
the *chance level*, exact for continuous scores, whatever the data (Vovk et al. 2005).

**How many copies.** With :math:`X` of :math:`M` samples flagged, the share :math:`\hat p = X / M` gets a Wilson
interval; the copy share :math:`(\hat p - c) / (1 - c)` corrects it for the flags chance makes (a copy is always
flagged when it is exact; a perturbed copy may not be, so the share is a lower bound). Its interval adds the
calibration's own uncertainty (given the calibration set, the chance rate is
:math:`\mathrm{Beta}(\lfloor\alpha(T+1)\rfloor, T + 1 - \lfloor\alpha(T+1)\rfloor)`) in quadrature. The test of
"no copies" compares :math:`X` with that Beta-binomial null exactly.

**AuthPct** (Alaa et al. 2022, as dgm-eval computes it): the percentage of generated samples :math:`y` whose nearest
training sample :math:`x^*` has another training sample nearer than :math:`y` is,
:math:`100 \cdot \frac1M \sum_y [\delta(x^*) < d_1(y)]` with :math:`\delta(x)` the distance from :math:`x` to its
nearest other training sample. Held-out data score near 50, not 100: its chance level is the same number for the
calibration set (leave-one-out for the training set).

**C_T** (Meehan et al. 2020, as their code computes it): the training set is cut into ``cells`` by k-means; in cell
:math:`\pi`, the distances of test samples (:math:`n_\pi`) and generated samples (:math:`m_\pi`) to their nearest
*training sample of that cell* are compared by the Mann-Whitney statistic :math:`U_\pi` (ties count one half),
:math:`Z_\pi = (U_\pi - n_\pi m_\pi / 2 + 1/2) / \sqrt{n_\pi m_\pi (n_\pi + m_\pi + 1) / 12}`, and
:math:`C_T = \sum_\pi P_n(\pi) Z_\pi / \sum_\pi P_n(\pi)` over the cells holding more than :math:`20` generated
samples (:math:`\tau = 20 / M`), with :math:`P_n(\pi)` the test share of the cell. Below 0: generated samples are
closer to the training set than test samples (copying); above 0: farther (underfitting). Under "no copying" each
:math:`Z_\pi` is about standard normal, so :math:`C_T` has standard deviation
:math:`\sqrt{\sum P_n(\pi)^2} / \sum P_n(\pi)`.
"""

from __future__ import annotations

import logging
import math
import warnings

import torch
from torch import Tensor

from fastndb._core.checks import check_int, check_open_unit, check_seed
from fastndb._core.collectives import Collective, resolve_collective
from fastndb._core.effects import normal_quantile, wilson_interval
from fastndb._core.progress import progress_bar
from fastndb._core.results import MemorizationResult
from fastndb._core.sync import host_values
from fastndb.kernels import matmul_precision
from fastndb.kernels.assign import nearest_labels
from fastndb.kernels.neighbours import Nearest, nearest_neighbours

logger = logging.getLogger(__name__)

COPY_ALPHA = 0.01  # default false-alarm rate of a copy flag
CT_CELLS = 3  # dgm-eval's number of k-means cells for C_T
CT_MIN_FAKE = 20  # a cell enters C_T with more than this many generated samples (tau = 20 / M, as published)


def memorization(
    train: object,
    fake: object,
    test: object = None,
    *,
    alpha: float = COPY_ALPHA,
    confidence: float = 0.95,
    cells: int = CT_CELLS,
    feature: object = None,
    value_range: tuple[float, float] | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    block_rows: int | None = None,
    progress: bool | None = None,
    distributed: bool | None = None,
    group: object = None,
) -> MemorizationResult:
    """Which generated samples copy a training sample, how many, AuthPct and C_T (see
    :class:`~fastndb.MemorizationResult` and this module's docstring for the definitions).

    Args:
        train: ``(N, ...)`` the generator's training samples, every form ``fastndb.score`` takes; the work runs on
            their device.
        fake: ``(M, ...)`` generated samples, same forms.
        test: ``(T, ...)`` held-out real samples the generator never saw (``None``: the training samples calibrate
            the flags leave-one-out, and there is no C_T).
        alpha: the copy flag's false-alarm rate on data that are no copies (held-out samples are flagged at most
            this often); at least ``1 / (T + 1)`` for ``T`` calibration samples.
        confidence: level of the intervals; the "copies" verdict is the one-sided test at ``(1 - confidence) / 2``.
        cells: k-means cells of the training set for C_T (dgm-eval: 3).
        feature: embed every set first, as everywhere.
        value_range: the value-range convention's range for float samples.
        num_samples: use at most this many samples of each set (content keys with ``seed``).
        seed: seed of every random choice (the subsets, the k-means cells).
        block_rows: tile edge. progress: tqdm bar over the searches.
        distributed: ``None`` (default): under ``torch.distributed`` with several processes, the inputs are this
            rank's shards; the union is gathered on every rank and the searches are split by query row blocks (one
            all-reduce each); the result equals one process fed the union. ``False``: this process alone.
            ``True``: require a process group.
        group: the ``torch.distributed`` process group (``None``: the default group).

    Memory: the samples, one ``block_rows^2`` tile with its candidates, ``(M + N + T) x 2`` neighbours (and a
    reordered copy of the training set during its search against itself, up to 512 dimensions): never a
    ``N x M`` matrix, whatever the data (all samples identical included).

    Raises:
        ValueError: fewer than 3 training samples, no fake samples, too few calibration samples for ``alpha``, a
            C_T cell without test samples, invalid samples, mismatched features or value ranges.
        TypeError: non-array input, non-numeric options.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> train, test = torch.randn(2000, 8, generator=g), torch.randn(1000, 8, generator=g)
        >>> fresh = torch.randn(900, 8, generator=g)
        >>> out = memorization(train, torch.cat([fresh, train[:100]]), test)  # 10% copies
        >>> bool(out.copy[900:].all()), out.copying, out.copy_share_interval[0] < 0.1 < out.copy_share_interval[1]
        (True, True, True)
    """
    from fastndb._core.coverage import _subset, prepare_sets, union_of_sets

    alpha = check_open_unit(alpha, "alpha")
    confidence = check_open_unit(confidence, "confidence")
    cells = check_int(cells, "cells", minimum=1)
    if num_samples is not None:
        num_samples = check_int(num_samples, "num_samples", minimum=3)
    seed = check_seed(seed)
    if block_rows is not None:
        block_rows = check_int(block_rows, "block_rows", minimum=1)
    comm = resolve_collective(distributed, group)
    sets = [(train, "train"), (fake, "fake")] + ([] if test is None else [(test, "test")])
    sharded = comm.world_size > 1
    xs, unit = prepare_sets(sets, feature=feature, value_range=value_range,
                            num_samples=None if sharded else num_samples, seed=seed)
    if sharded:
        xs, unit = union_of_sets(xs, unit, comm)
        xs = [_subset(x, num_samples, seed) for x in xs]
    x, y, z = xs[0], xs[1], (xs[2] if test is not None else None)
    return memorization_prepared(x, y, z, unit, alpha=alpha, confidence=confidence, cells=cells, seed=seed,
                                 block_rows=block_rows, progress=progress, comm=comm if sharded else None)


def _search(queries: Tensor, reference: Tensor, k: int, *, exclude_self: bool, block_rows: int | None,
            comm: Collective | None, bar=None) -> Nearest:
    """:func:`nearest_neighbours`, its query row blocks split between the ranks of ``comm`` (each holding all)."""
    on_block = None if bar is None else bar.update
    if comm is None:
        return nearest_neighbours(queries, reference, k, exclude_self=exclude_self, block_rows=block_rows,
                                  on_block=on_block)
    part = nearest_neighbours(queries, reference, k, exclude_self=exclude_self, block_rows=block_rows,
                              shard=(comm.rank, comm.world_size), on_block=on_block,
                              gather=lambda t: comm.all_gather_cat(t)[0])
    return Nearest(comm.all_reduce_sum(part.sq), comm.all_reduce_sum(part.index))


def copy_ratio(found: Nearest) -> Tensor:
    """``d_1 / d_2`` of each row of a 2-nearest search (float64; 0 where both are 0)."""
    d = found.sq.sqrt()
    return torch.where(d[:, 1] > 0, d[:, 0] / d[:, 1].clamp_min(torch.finfo(torch.float64).tiny),
                       torch.zeros_like(d[:, 0]))


def conformal_p_values(scores: Tensor, calibration: Tensor) -> Tensor:
    """``(1 + #{t: s_t <= s}) / (T + 1)`` for each score ``s`` against the ``T`` calibration scores (float64).

    Example:
        >>> conformal_p_values(torch.tensor([0.0, 0.5, 2.0]), torch.tensor([0.1, 0.5, 0.9])).tolist()
        [0.25, 0.75, 1.0]
    """
    ordered = calibration.sort().values
    below = torch.searchsorted(ordered, scores.to(ordered.dtype), right=True)
    return (1 + below).double() / (calibration.numel() + 1)


def beta_binomial_upper(count: int, trials: int, a: float, b: float, device: torch.device) -> float:
    """``P(X >= count)`` for ``X ~ BetaBinomial(trials, a, b)``, summed in log space (float64).

    Example:
        >>> round(beta_binomial_upper(1, 1, 2.0, 3.0, torch.device("cpu")), 4)  # P(X = 1) = a / (a + b)
        0.4
    """
    if count <= 0:
        return 1.0
    i = torch.arange(count, trials + 1, dtype=torch.float64, device=device)
    lg = torch.lgamma
    n = torch.tensor(float(trials), dtype=torch.float64, device=device)
    log_terms = (lg(n + 1) - lg(i + 1) - lg(n - i + 1) + lg(i + a) + lg(n - i + b) - lg(n + a + b)
                 + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))
    return min(1.0, float(torch.logsumexp(log_terms, 0).exp()))


def _authentic(d1: Tensor, nearest: Tensor, own: Nearest, self_rows: Tensor | None = None) -> Tensor:
    """AuthPct's test per query: the nearest training sample's nearest other training sample is closer to it than
    the query is (strict). ``own`` is the training set's 2-nearest search among itself; with ``self_rows`` (the
    leave-one-out chance level) the query is training row ``self_rows[i]`` and is left out of its neighbour's
    search."""
    delta_sq = own.sq[nearest, 0]
    if self_rows is not None:
        delta_sq = torch.where(own.index[nearest, 0] == self_rows, own.sq[nearest, 1], delta_sq)
    return delta_sq < d1


def average_ranks(values: Tensor) -> Tensor:
    """Ranks ``1..n`` of ``values`` (float64), tied values sharing their average rank (as scipy's ``rankdata``).

    Example:
        >>> average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist()
        [3.5, 1.0, 3.5, 2.0]
    """
    ordered, order = values.sort(stable=True)
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(mean_rank[inverse])
    ranks[order] = mean_rank[inverse]
    return ranks


def ct_score(train: Tensor, fake: Tensor, test: Tensor, *, cells: int, seed: int, block_rows: int | None,
             comm: Collective | None, fake_nearest: Nearest | None = None,
             test_nearest: Nearest | None = None) -> tuple[float, float, int, Tensor]:
    """C_T (Meehan et al. 2020) as their code computes it; returns ``(C_T, its null sd, cells used, Z per cell)``.

    ``fake_nearest``, ``test_nearest``: the samples' nearest training samples over the whole training set, when
    known. A sample whose nearest training sample lies in its own cell has that distance within the cell too; only
    the others are searched again, within their cell.

    Raises:
        ValueError: more cells than training samples; a cell without test samples (pass fewer ``cells``).
    """
    from fastndb._core.kmeans import kmeans

    if cells > train.shape[0]:
        raise ValueError(f"cells: expected at most the {train.shape[0]} training samples, got {cells}")
    fitted = kmeans(train, cells, seed=seed, distributed=False)
    train_cell = fitted.labels
    test_cell = nearest_labels(test, fitted.centroids.to(test.dtype))
    fake_cell = nearest_labels(fake, fitted.centroids.to(fake.dtype))
    test_counts = torch.bincount(test_cell, minlength=cells)
    fake_counts = torch.bincount(fake_cell, minlength=cells)
    train_counts = torch.bincount(train_cell, minlength=cells)
    test_n, fake_n, train_n = (host_values(c) for c in (test_counts, fake_counts, train_counts))
    for c in range(cells):
        if test_n[c] == 0 or train_n[c] == 0:
            side = "test" if test_n[c] == 0 else "training"
            raise ValueError(f"cells: k-means cell {c} of {cells} holds no {side} samples, so C_T is undefined; "
                             f"pass fewer cells")
    z = torch.zeros(cells, dtype=torch.float64, device=train.device)
    for c in range(cells):
        m, n = fake_n[c], test_n[c]
        if m == 0:
            continue
        reference = train[train_cell == c]
        to_fake = _in_cell(fake, fake_cell, c, fake_nearest, train_cell, reference, block_rows, comm)
        to_test = _in_cell(test, test_cell, c, test_nearest, train_cell, reference, block_rows, comm)
        ranks = average_ranks(torch.cat([to_fake, to_test]))  # squared distances rank as the distances do
        u = ranks[:m].sum() - m * (m + 1) / 2
        z[c] = (u - (n * m / 2 - 0.5)) / math.sqrt(n * m * (n + m + 1) / 12)
    weights = test_counts.double() / test.shape[0]
    kept = fake_counts > CT_MIN_FAKE
    used = int(host_values(kept.sum().view(1))[0])
    if used == 0:
        return math.nan, math.nan, 0, z
    w = weights[kept]
    score, sd = host_values(torch.stack([(w * z[kept]).sum() / w.sum(), w.square().sum().sqrt() / w.sum()]))
    return score, sd, used, z


def _in_cell(x: Tensor, cell_of: Tensor, c: int, nearest: Nearest | None, train_cell: Tensor, reference: Tensor,
             block_rows: int | None, comm: Collective | None) -> Tensor:
    """Squared distances from the samples of ``x`` in cell ``c`` to their nearest training sample of that cell."""
    rows = (cell_of == c).nonzero()[:, 0]
    if nearest is None:
        return _search(x[rows], reference, 1, exclude_self=False, block_rows=block_rows, comm=comm).sq[:, 0]
    out = nearest.sq[rows, 0].clone()
    away = (train_cell[nearest.index[rows, 0]] != c).nonzero()[:, 0]  # their nearest lies in another cell
    if away.numel():
        out[away] = _search(x[rows[away]], reference, 1, exclude_self=False, block_rows=block_rows,
                            comm=comm).sq[:, 0]
    return out


def memorization_prepared(x: Tensor, y: Tensor, z: Tensor | None, unit: float, *, alpha: float, confidence: float,
                          cells: int, seed: int, block_rows: int | None, progress: bool | None,
                          comm: Collective | None = None) -> MemorizationResult:
    """:func:`memorization` of prepared samples (one scale, one dtype, one device; every rank holding all of them
    with ``comm``)."""
    n, m = x.shape[0], y.shape[0]
    if n < 3:
        raise ValueError(f"train: expected at least 3 training samples (a nearest and a second-nearest other), got {n}")
    if m == 0:
        raise ValueError("fake: expected at least 1 generated sample, got 0")
    if z is not None and z.shape[0] == 0:
        raise ValueError("test: expected at least 1 held-out sample, got 0 (pass test=None to calibrate on the "
                         "training samples)")
    if z is not None and cells > n:
        raise ValueError(f"cells: expected at most the {n} training samples, got {cells}")
    calibration_size = n if z is None else z.shape[0]
    flagged_rank = math.floor(alpha * (calibration_size + 1))
    if flagged_rank < 1:
        raise ValueError(f"alpha: expected at least 1 / (T + 1) = {1 / (calibration_size + 1):.3g} for the "
                         f"{calibration_size} {'test' if z is not None else 'training'} samples that calibrate the "
                         f"copy flags, got {alpha}; pass a larger alpha or more held-out samples")
    total = m + n + (0 if z is None else z.shape[0])
    with progress_bar(progress, total=total, desc="memorization", unit="row") as bar:
        to_fake = _search(y, x, 2, exclude_self=False, block_rows=block_rows, comm=comm, bar=bar)
        own = _search(x, x, 2, exclude_self=True, block_rows=block_rows, comm=comm, bar=bar)
        to_test = None if z is None else _search(z, x, 2, exclude_self=False, block_rows=block_rows, comm=comm,
                                                  bar=bar)
    ratio = copy_ratio(to_fake)
    calibration = copy_ratio(own if to_test is None else to_test)
    p_values = conformal_p_values(ratio, calibration)
    copy = p_values <= alpha
    authentic = _authentic(to_fake.sq[:, 0], to_fake.index[:, 0], own)
    if to_test is None:
        held_authentic = _authentic(own.sq[:, 0], own.index[:, 0], own,
                                    self_rows=torch.arange(n, device=x.device))
    else:
        held_authentic = _authentic(to_test.sq[:, 0], to_test.index[:, 0], own)
    flagged, authentic_count, held_count = (int(v) for v in host_values(torch.stack(
        [copy.sum(), authentic.sum(), held_authentic.sum()])))
    t1 = calibration_size + 1
    chance = flagged_rank / t1
    a, b = float(flagged_rank), float(t1 - flagged_rank)
    chance_var = a * b / (t1 * t1 * (t1 + 1))
    z_level = normal_quantile(0.5 + confidence / 2)
    device = x.device
    low_p, high_p = wilson_interval(torch.tensor(flagged, device=device), torch.tensor(m, device=device), z_level)
    auth_low, auth_high = wilson_interval(torch.tensor(authentic_count, device=device),
                                          torch.tensor(m, device=device), z_level)
    low_p, high_p, auth_low, auth_high = host_values(torch.stack([low_p, high_p, auth_low, auth_high]))
    share = flagged / m
    spread = z_level * math.sqrt(chance_var)
    low = (share - math.hypot(share - low_p, spread) - chance) / (1 - chance)
    high = (share + math.hypot(high_p - share, spread) - chance) / (1 - chance)
    p_copying = beta_binomial_upper(flagged, m, a, b, device)
    ct = ct_sd = math.nan
    used = 0
    if z is not None:
        ct, ct_sd, used, _ = ct_score(x, y, z, cells=cells, seed=seed, block_rows=block_rows, comm=comm,
                                      fake_nearest=to_fake, test_nearest=to_test)
        if used == 0:
            warnings.warn(f"memorization: no C_T: no k-means cell holds more than {CT_MIN_FAKE} of the {m} generated "
                          f"samples", UserWarning, stacklevel=3)
    logger.info("memorization: N=%d, M=%d, T=%d, %d flagged (chance %.4g)", n, m, calibration_size, flagged, chance)
    d = to_fake.sq.sqrt() / unit
    return MemorizationResult(
        num_train=n, num_fake=m, num_test=0 if z is None else z.shape[0],
        calibration="train" if z is None else "test", alpha=alpha, confidence=confidence,
        nearest_train=to_fake.index[:, 0], nearest_distance=d[:, 0], second_distance=d[:, 1], ratio=ratio,
        p_value=p_values, copy=copy, num_copies=flagged, flagged_share=share,
        flagged_interval=(low_p, high_p), chance_level=chance, copy_share=(share - chance) / (1 - chance),
        copy_share_interval=(max(0.0, low), min(1.0, max(0.0, high))), copying_p_value=p_copying,
        copying=p_copying < (1 - confidence) / 2,
        authpct=100 * authentic_count / m, authpct_interval=(100 * auth_low, 100 * auth_high),
        authpct_chance=100 * held_count / calibration_size,
        ct=None if used == 0 else ct, ct_null_sd=None if used == 0 else ct_sd,
        ct_p_value=None if used == 0 else 0.5 * math.erfc(-ct / ct_sd / math.sqrt(2)),
        ct_cells=cells if z is not None else 0, ct_cells_used=used,
        precision_mode=matmul_precision(x.dtype, x.device),
    )
