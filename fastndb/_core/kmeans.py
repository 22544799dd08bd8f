r"""Bins: k-means with greedy k-means++ seeding and Lloyd iterations, on the data's own device.

The objective is the inertia

.. math:: J(C) = \sum_{i=1}^{N} \min_{k} \|x_i - c_k\|^2 .

Seeding is greedy k-means++ (Arthur & Vassilvitskii 2007; the greedy variant of scikit-learn: ``2 + ln K``
candidates per step, the one that lowers the potential most is kept) run on a random subsample of ``init_size``
points (default ``min(N, max(20 K, 4096))``), chosen by content keys (:mod:`fastndb._core.sampling`) so that the
result does not depend on the order of the points: seeding on all of ``N`` costs ``K`` passes over the data and
dominates scikit-learn's run time, while the Lloyd iterations that follow use every point. Each Lloyd iteration is
one pass over the data (:func:`~fastndb._core.backends.lloyd_pass`): every row chunk is assigned to its nearest
centroid and summed into its centroid's row while still in cache, so an iteration reads the data once.
Iteration stops when the relative decrease of the inertia falls to ``tol`` or below, when no label changes, or
at ``max_iter``. An empty cluster is re-seeded at the point farthest from its centroid.

All randomness comes from ``seed`` (content keys and a CPU ``torch.Generator``), so the draws do not depend on
the device, the order of the points, or how they are sharded over the ranks of a distributed job
(:mod:`fastndb._core.collectives`). On CUDA, ``index_add_`` accumulates with atomics, so results can differ in the
last bits between runs.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

from fastndb._core.backends import AssignBackend, lloyd_pass, resolve_backend
from fastndb._core.checks import check_int, check_nonnegative, check_seed
from fastndb._core.collectives import Collective, SingleProcess, resolve_collective
from fastndb._core.features import rescale, to_float, unit_scale
from fastndb._core.inputs import as_batches, concatenate, value_range_of
from fastndb._core.progress import progress_bar
from fastndb._core.sampling import SEEDING_SALT, gather_by_position, key_positions, row_keys
from fastndb._core.sync import host_values
from fastndb.kernels import squared_norms

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KMeansResult:
    """Outcome of :func:`kmeans`.

    Attributes:
        centroids: ``(K, D)`` on the data's device, in the data's floating dtype.
        labels: ``(N,)`` int64 index of each point's nearest centroid.
        counts: ``(K,)`` int64 number of points per centroid.
        inertia: sum of squared distances of the points to their nearest centroid (float64 accumulation).
        n_iter: Lloyd iterations run.
        converged: whether a stopping criterion was met before ``max_iter``.
        backend: name of the assignment backend used.
    """

    centroids: Tensor
    labels: Tensor
    counts: Tensor
    inertia: float
    n_iter: int
    converged: bool
    backend: str

    def to_dict(self) -> dict:
        """Fields as a dict (tensors kept as tensors)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def kmeans_plusplus(sample: Tensor, k: int, *, generator: torch.Generator) -> Tensor:
    """Greedy k-means++ seeds ``(k, D)`` chosen among the rows of ``sample``.

    Candidates are drawn by inverse-CDF search on the device, with no host synchronisation and no operation that
    ``torch.use_deterministic_algorithms`` refuses on CUDA: the squared distances are rounded to int64 fixed point
    (``62 - log2(size)`` bits of the largest, a relative resolution far below anything a seed choice depends on)
    and summed with an exact, deterministic integer ``cumsum``; all uniforms come from the CPU ``generator`` in one
    copy.
    """
    size = sample.shape[0]
    device = sample.device
    sample_sq = squared_norms(sample)
    trials = 2 + int(math.log(k))
    bits = 62 - math.ceil(math.log2(size + 1))
    first = int(torch.randint(size, (1,), generator=generator))
    # the same stream as one draw of ``trials`` uniforms per centre, in one host-to-device copy
    uniforms = torch.rand((max(k - 1, 1), trials), generator=generator, dtype=torch.float64).to(device)
    centers = torch.empty((k, sample.shape[1]), dtype=sample.dtype, device=device)
    centers[0] = sample[first]
    closest = (sample_sq - 2 * sample @ centers[0] + sample_sq[first]).clamp_min_(0)
    for i in range(1, k):
        largest = closest.max().double().clamp_min(torch.finfo(torch.float64).tiny)
        fixed = (closest.double() / largest * 2.0**bits).floor_().to(torch.int64)
        cumulative = torch.cumsum(fixed, 0)
        targets = (uniforms[i - 1] * cumulative[-1].double()).floor_().to(torch.int64)
        picks = torch.searchsorted(cumulative, targets, right=True).clamp_max_(size - 1)
        candidates = sample.index_select(0, picks)
        cand_sq = sample_sq.index_select(0, picks)
        d2 = torch.addmm(cand_sq[None, :] + sample_sq[:, None], sample, candidates.t(), alpha=-2).clamp_min_(0)
        reduced = torch.minimum(d2, closest[:, None])
        best = reduced.sum(0, dtype=torch.float64).argmin().view(1)  # stays on the device: no sync
        centers[i] = candidates.index_select(0, best)[0]
        closest = reduced.index_select(1, best)[:, 0]
    return centers


def seed_centroids(x: Tensor, k: int, *, seed: int, init_size: int, comm: Collective) -> Tensor:
    """k-means++ seeds from the ``init_size`` rows (over all ranks) with the smallest content keys.

    The seeding sample is chosen by :mod:`fastndb._core.sampling` keys, so it is the same whatever the order or the
    sharding of the rows; rank 0 computes the seeds and broadcasts them.
    """
    positions, total = key_positions(row_keys(x, seed, SEEDING_SALT), comm)
    sample = gather_by_position(x, positions, min(init_size, total), comm)
    if comm.rank == 0:
        centers = kmeans_plusplus(sample, k, generator=torch.Generator().manual_seed(seed))
    else:
        centers = torch.empty((k, x.shape[1]), dtype=x.dtype, device=x.device)
    return comm.broadcast(centers)


def _reseed_empty(centroids: Tensor, counts: Tensor, x: Tensor, sq_dist: Tensor, comm: Collective) -> Tensor:
    """Move empty clusters to the points farthest from their centroids (those with a positive distance)."""
    empty = (counts == 0).nonzero()[:, 0]  # counts are global: every rank takes this branch alike
    if empty.numel() == 0:
        return centroids
    local_d2, local_rows = sq_dist.topk(min(empty.numel(), sq_dist.numel()))
    candidates_d2, _ = comm.all_gather_cat(local_d2)
    candidates, _ = comm.all_gather_cat(x.index_select(0, local_rows))
    far_d2, far = candidates_d2.topk(min(empty.numel(), candidates_d2.numel()))
    usable = far_d2 > 0
    empty, far = empty[: far.numel()][usable], far[usable]
    centroids = centroids.clone()
    centroids[empty] = candidates[far]
    return centroids


def lloyd(
    x: Tensor,
    centroids: Tensor,
    engine: AssignBackend,
    *,
    max_iter: int,
    tol: float,
    progress: bool | None = None,
    comm: Collective | None = None,
) -> KMeansResult:
    """Lloyd iterations from ``centroids`` until the relative inertia decrease is ``<= tol`` (see module doc).

    With a distributed ``comm``, ``x`` is this rank's shard: per-centroid sums and counts, the inertia and the
    number of changed labels are summed over ranks each iteration, so every rank takes the same steps and ends
    with the same centroids; ``labels`` are those of the local rows.
    """
    comm = comm or SingleProcess()
    x_sq = squared_norms(x)  # once per fit, not once per pass

    # pass i assigns to centroids c_i and, in the same read of the data, sums the rows per label: the sums that
    # give c_(i+1). The convergence test compares pass i with pass i-1, so the centroids returned are those the
    # returned labels were assigned to, and the last pass's sums are simply not used.
    labels, sq_dist, sums, counts = lloyd_pass(engine, x, centroids, x_sq)
    sums, counts = comm.all_reduce_sum(sums), comm.all_reduce_sum(counts)
    first = host_values(torch.cat([comm.all_reduce_sum(sq_dist.sum(dtype=torch.float64).view(1)),
                                   (counts == 0).sum().to(torch.float64).view(1)]))
    inertia, empty_clusters = first[0], int(first[1])
    converged = False
    n_iter = 0
    bar = progress_bar(progress if comm.rank == 0 else False, total=max_iter, desc="k-means", unit="iter")
    with bar:
        while n_iter < max_iter:
            n_iter += 1
            updated = sums / counts.clamp_min(1).to(sums.dtype)[:, None]
            updated = torch.where((counts > 0)[:, None], updated, centroids)
            if empty_clusters:  # known from the previous iteration's read: no extra host wait when there are none
                updated = _reseed_empty(updated, counts, x, sq_dist, comm)
            new_labels, sq_dist, new_sums, new_counts = lloyd_pass(engine, x, updated, x_sq)
            local = torch.stack([sq_dist.sum(dtype=torch.float64), (new_labels != labels).sum().to(torch.float64)])
            totals = comm.all_reduce_sum(torch.cat([local, new_counts.to(torch.float64)]))
            sums, counts = comm.all_reduce_sum(new_sums), totals[2:].to(torch.int64)
            read = host_values(torch.cat([totals[:2], (counts == 0).sum().to(torch.float64).view(1)]))
            new_inertia, changed, empty_clusters = read[0], int(read[1]), int(read[2])  # the iteration's one read
            centroids, labels = updated, new_labels
            decrease = inertia - new_inertia
            inertia = new_inertia
            bar.update(1)
            bar.set_postfix_str(f"inertia={inertia:.6g}")
            if changed == 0 or decrease <= tol * abs(new_inertia):
                converged = True
                break
    # ``counts`` are the last pass's global counts, those of ``labels``
    centroids = comm.broadcast(centroids)  # identical already (same reduced sums); made bit-identical regardless
    return KMeansResult(centroids, labels, counts, inertia, n_iter, converged, engine.name)


def fit_kmeans(
    data: Tensor,
    k: int,
    *,
    seed: int,
    max_iter: int,
    tol: float,
    engine: AssignBackend,
    init_size: int | None,
    progress: bool | None,
    comm: Collective,
) -> KMeansResult:
    """:func:`kmeans` on a validated floating ``(n, D)`` tensor (this rank's shard; ``n`` may be 0 on some ranks)."""
    total = int(comm.all_reduce_sum(torch.tensor([data.shape[0]], dtype=torch.int64, device=data.device))[0])
    if k > total:
        where = f" over {comm.world_size} ranks" if comm.world_size > 1 else ""
        raise ValueError(f"k: expected at most as many clusters as samples ({total}{where}), got k={k}")
    if init_size is None:
        init_size = min(total, max(20 * k, 4096))
    init_size = min(check_int(init_size, "init_size", minimum=k), total)
    seeds = seed_centroids(data, k, seed=seed, init_size=init_size, comm=comm)
    result = lloyd(data, seeds, engine, max_iter=max_iter, tol=tol, progress=progress, comm=comm)
    logger.debug("k-means: N=%d over %d rank(s), D=%d, k=%d, %d iterations (converged=%s), inertia %.6g, backend %s",
                 total, comm.world_size, data.shape[1], k, result.n_iter, result.converged, result.inertia,
                 result.backend)
    if not result.converged:
        warnings.warn(
            f"k-means stopped at max_iter={max_iter} before the relative inertia decrease fell to tol={tol}; "
            f"raise max_iter for tighter bins",
            RuntimeWarning,
            stacklevel=3,
        )
    nonempty = int((result.counts > 0).sum())
    if nonempty < k:
        local_distinct = torch.unique(row_keys(data, 0))
        distinct = int(torch.unique(comm.all_gather_cat(local_distinct)[0]).numel())
        why = (f"the data have only {distinct} distinct points, fewer than k" if distinct < k else
               f"the {distinct} distinct points sit so close together that k-means could not separate them")
        warnings.warn(
            f"k-means: only {nonempty} of {k} clusters hold points: {why}; the empty bins stay empty",
            RuntimeWarning,
            stacklevel=3,
        )
    return result


def kmeans(
    x: object,
    k: int,
    *,
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-4,
    backend: str = "auto",
    init_size: int | None = None,
    progress: bool | None = None,
    distributed: bool | None = None,
    group: Any = None,
) -> KMeansResult:
    """Cluster ``x`` into ``k`` groups with k-means, on the device ``x`` lives on.

    Args:
        x: ``(N, D)`` samples (or ``(N, C, H, W)``, flattened): a tensor on any device, a numpy/CuPy/DLPack array,
            or an iterable of batches. Integer data is converted to float32 (``uint8`` to [0, 1]).
        k: number of clusters, ``1 <= k <= N``.
        seed: seed of every random draw (seeding subsample, k-means++ candidates).
        max_iter: most Lloyd iterations.
        tol: stop when ``(J_prev - J) <= tol * J`` for the inertia ``J`` of consecutive iterations.
        backend: assignment engine, ``"auto"`` | ``"torch"`` | ``"faiss"`` | ``"cuml"`` (see
            :mod:`fastndb._core.backends`).
        init_size: points used for k-means++ seeding (default ``min(N, max(20 k, 4096))``: each
            k-means++ step reads the whole sample, so seeding costs ``k * init_size`` skinny products).
        progress: show a tqdm bar over iterations (``None``: only on a terminal with tqdm installed).
        distributed: ``None`` (default): when ``torch.distributed`` is initialised with several processes, ``x``
            is this rank's shard and the clustering runs over the union of the shards (see below); ``True``:
            require that; ``False``: cluster this process's ``x`` alone.
        group: ``torch.distributed`` process group (``None``: the default group).

    Distributed: every rank of the group must call this with its shard (of any length, the same ``D``). The
    seeding sample is gathered from all ranks (``init_size`` rows), each Lloyd step all-reduces the
    ``K x D`` per-centroid sums and ``K`` counts, and every rank returns the same centroids: those one process
    gets from the union of the shards, up to the rounding of the sums. ``labels`` are the local rows'; ``counts``
    and ``inertia`` are global. NCCL needs the shards on CUDA devices, gloo on the CPU.

    Returns:
        :class:`KMeansResult` with tensors on ``x``'s device.

    Raises:
        TypeError: non-integer ``k``/``max_iter``/``seed``, or input that is not an array.
        ValueError: ``k`` outside ``[1, N]``, negative ``tol``, bad ``backend``, invalid samples,
            ``distributed=True`` without an initialised process group.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.cat([torch.randn(100, 2, generator=g) + 10, torch.randn(100, 2, generator=g) - 10])
        >>> result = kmeans(x, 2, seed=0)
        >>> sorted(result.counts.tolist()), result.converged
        ([100, 100], True)
        >>> result.centroids.abs().round().sort(dim=0).values.tolist()
        [[10.0, 10.0], [10.0, 10.0]]
    """
    k = check_int(k, "k", minimum=1)
    seed = check_seed(seed)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_nonnegative(tol, "tol")
    engine = resolve_backend(backend)
    comm = resolve_collective(distributed, group)
    data = to_float(concatenate(as_batches(x, "x", check_finite=False)))
    # data of extreme magnitude are clustered at an exact power-of-two scale (the same argmins, no float32
    # underflow or overflow of squared distances), and the centroids and inertia are scaled back; the one read
    # of the local range also refuses NaN/Inf
    low, high = value_range_of(data, "x") if data.shape[0] else (0.0, 0.0)
    local = torch.tensor([max(abs(low), abs(high))], dtype=torch.float64, device=data.device)
    largest = float(comm.all_gather_cat(local)[0].max())
    unit = unit_scale(largest)
    result = fit_kmeans(rescale(data, unit), k, seed=seed, max_iter=max_iter, tol=tol,
                        engine=engine, init_size=init_size, progress=progress, comm=comm)
    if unit == 1.0:
        return result
    return replace(result, centroids=rescale(result.centroids, 1 / unit), inertia=result.inertia / unit**2)
