r"""Bins: k-means with greedy k-means++ seeding and Lloyd iterations, on the data's own device.

The objective is the inertia

.. math:: J(C) = \sum_{i=1}^{N} \min_{k} \|x_i - c_k\|^2 .

Seeding is greedy k-means++ (Arthur & Vassilvitskii 2007; the greedy variant of scikit-learn: ``2 + ln K``
candidates per step, the one that lowers the potential most is kept) run on a random subsample of
``init_size`` points (default ``min(N, 100 K)``): seeding on all of ``N`` costs ``K`` passes over the data and
dominates scikit-learn's run time, while the Lloyd iterations that follow use every point. Each Lloyd iteration
is one assignment (:class:`~fastndb.backends.AssignBackend`) and one update (per-centroid sums and counts).
Iteration stops when the relative decrease of the inertia falls to ``tol`` or below, when no label changes, or
at ``max_iter``. An empty cluster is re-seeded at the point farthest from its centroid.

All randomness comes from a CPU ``torch.Generator`` seeded with ``seed``, so the draws do not depend on the
device. On CUDA, ``index_add_`` accumulates with atomics, so results can differ in the last bits between runs.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from fastndb._checks import check_int, check_nonnegative
from fastndb._progress import progress_bar
from fastndb.backends import AssignBackend, resolve_backend
from fastndb.features import to_float
from fastndb.inputs import as_batches, concatenate
from fastndb.kernels import lloyd_step, squared_norms

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


def kmeans_plusplus(x: Tensor, k: int, *, generator: torch.Generator, init_size: int) -> Tensor:
    """Greedy k-means++ seeds, ``(k, D)``, drawn from a random subsample of ``init_size`` rows of ``x``.

    Runs without host synchronisation: candidates are drawn by inverse-CDF search on the device with
    uniforms from the CPU ``generator``.
    """
    n = x.shape[0]
    device = x.device
    if init_size < n:
        rows = torch.randperm(n, generator=generator)[:init_size].to(device)
        sample = x.index_select(0, rows)
    else:
        sample = x
    size = sample.shape[0]
    sample_sq = squared_norms(sample)
    trials = 2 + int(math.log(k))

    first = int(torch.randint(size, (1,), generator=generator))
    centers = torch.empty((k, x.shape[1]), dtype=x.dtype, device=device)
    centers[0] = sample[first]
    closest = (sample_sq - 2 * sample @ centers[0] + sample_sq[first]).clamp_min_(0)
    for i in range(1, k):
        cumulative = torch.cumsum(closest, 0, dtype=torch.float64)
        uniforms = torch.rand(trials, generator=generator, dtype=torch.float64).to(device)
        picks = torch.searchsorted(cumulative, uniforms * cumulative[-1], right=True).clamp_max_(size - 1)
        candidates = sample.index_select(0, picks)
        cand_sq = sample_sq.index_select(0, picks)
        d2 = torch.addmm(cand_sq[None, :] + sample_sq[:, None], sample, candidates.t(), alpha=-2).clamp_min_(0)
        reduced = torch.minimum(d2, closest[:, None])
        best = reduced.sum(0, dtype=torch.float64).argmin().view(1)  # stays on the device: no sync
        centers[i] = candidates.index_select(0, best)[0]
        closest = reduced.index_select(1, best)[:, 0]
    return centers


def _reseed_empty(centroids: Tensor, counts: Tensor, x: Tensor, sq_dist: Tensor) -> Tensor:
    """Move empty clusters to the points farthest from their centroids (those with a positive distance)."""
    empty = (counts == 0).nonzero()[:, 0]
    if empty.numel() == 0:
        return centroids
    far_d2, far_rows = sq_dist.topk(min(empty.numel(), sq_dist.numel()))
    usable = far_d2 > 0
    empty, far_rows = empty[: far_rows.numel()][usable], far_rows[usable]
    centroids = centroids.clone()
    centroids[empty] = x[far_rows]
    return centroids


def lloyd(
    x: Tensor,
    centroids: Tensor,
    engine: AssignBackend,
    *,
    max_iter: int,
    tol: float,
    progress: bool | None = None,
) -> KMeansResult:
    """Lloyd iterations from ``centroids`` until the relative inertia decrease is ``<= tol`` (see module doc)."""
    labels, sq_dist = engine.nearest(x, centroids)
    inertia = float(sq_dist.sum(dtype=torch.float64))
    converged = False
    n_iter = 0
    bar = progress_bar(progress, total=max_iter, desc="k-means", unit="iter")
    with bar:
        while n_iter < max_iter:
            n_iter += 1
            sums, counts = lloyd_step(x, centroids, labels)
            updated = sums / counts.clamp_min(1).to(sums.dtype)[:, None]
            updated = torch.where((counts > 0)[:, None], updated, centroids)
            updated = _reseed_empty(updated, counts, x, sq_dist)
            new_labels, sq_dist = engine.nearest(x, updated)
            new_inertia = float(sq_dist.sum(dtype=torch.float64))
            unchanged = bool(torch.equal(new_labels, labels))
            centroids, labels = updated, new_labels
            decrease = inertia - new_inertia
            inertia = new_inertia
            bar.update(1)
            bar.set_postfix_str(f"inertia={inertia:.6g}")
            if unchanged or decrease <= tol * abs(new_inertia):
                converged = True
                break
    counts = torch.bincount(labels, minlength=centroids.shape[0])
    return KMeansResult(centroids, labels, counts, inertia, n_iter, converged, engine.name)


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
            :mod:`fastndb.backends`).
        init_size: points used for k-means++ seeding (default ``min(N, 100 k)``).
        progress: show a tqdm bar over iterations (``None``: only on a terminal with tqdm installed).

    Returns:
        :class:`KMeansResult` with tensors on ``x``'s device.

    Raises:
        TypeError: non-integer ``k``/``max_iter``/``seed``, or input that is not an array.
        ValueError: ``k`` outside ``[1, N]``, negative ``tol``, bad ``backend``, invalid samples.

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
    seed = check_int(seed, "seed", minimum=0)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_nonnegative(tol, "tol")
    engine = resolve_backend(backend)
    data = to_float(concatenate(as_batches(x, "x")))
    n = data.shape[0]
    if k > n:
        raise ValueError(f"k: expected at most as many clusters as samples ({n}), got k={k}")
    if init_size is None:
        init_size = min(n, 100 * k)
    init_size = min(check_int(init_size, "init_size", minimum=k), n)

    generator = torch.Generator().manual_seed(seed)
    seeds = kmeans_plusplus(data, k, generator=generator, init_size=init_size)
    result = lloyd(data, seeds, engine, max_iter=max_iter, tol=tol, progress=progress)
    logger.debug("k-means: N=%d, D=%d, k=%d, %d iterations (converged=%s), inertia %.6g, backend %s",
                 n, data.shape[1], k, result.n_iter, result.converged, result.inertia, result.backend)
    if not result.converged:
        warnings.warn(
            f"k-means stopped at max_iter={max_iter} before the relative inertia decrease fell to tol={tol}; "
            f"raise max_iter for tighter bins",
            RuntimeWarning,
            stacklevel=2,
        )
    nonempty = int((result.counts > 0).sum())
    if nonempty < k:
        warnings.warn(
            f"k-means: only {nonempty} of {k} clusters hold points; the data have fewer than k distinct points "
            f"(or duplicates concentrate them), so some bins stay empty",
            RuntimeWarning,
            stacklevel=2,
        )
    return result
