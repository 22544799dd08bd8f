r"""Tiled pairwise search: the closest pairs among ``s`` samples without the ``s x s`` matrix.

The upper triangle of the pairwise squared-distance matrix is visited in ``B x B`` blocks (row block ``I``,
column blocks ``J >= I``); each block is one GEMM,

.. math:: d^2_{ij} = \|x_i\|^2 + \|x_j\|^2 - 2\, x_i \cdot x_j \quad (\text{clamped at } 0),

followed by a block top-k that is merged into a running top-k of candidate pairs, so memory is ``O(B^2 + k)``
whatever ``s``. The expansion carries a rounding error of about ``eps (\|x_i\|^2 + \|x_j\|^2)``, which can
reorder pairs at almost the same distance and gives near-duplicates small non-zero distances; callers fetch more
candidates than they report and recompute the candidates' distances exactly from the differences
(:func:`exact_squared_distances`), so exact duplicates come out at exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from fastndb.kernels.assign import squared_norms

_CPU_BLOCK = 2048  # rows per block on CPUs (a 16 MiB float32 block stays cache-friendly enough)
_GPU_BLOCK = 8192  # rows per block on accelerators (256 MiB float32 block)


def default_block_rows(num_rows: int, device: torch.device) -> int:
    """Block edge ``B`` for :func:`smallest_pairs`.

    Example:
        >>> default_block_rows(100_000, torch.device("cpu"))
        2048
    """
    return max(1, min(num_rows, _CPU_BLOCK if device.type == "cpu" else _GPU_BLOCK))


_BAND_SLAB_PAIRS = 2**16  # in-band pairs listed at once (16 bytes each): the band never holds more than 1 MiB


class PairSearch(NamedTuple):
    """Outcome of :func:`smallest_pairs`.

    Attributes:
        pairs: ``(k, 2)`` int64, ``i < j``, in ascending order of computed distance.
        sq_distances: ``(k,)`` computed (expansion) squared distances, ascending.
        num_below: 0-d int64 count of pairs at or below the caller's threshold (``None`` without a band): those
            computed below the band's lower end, plus those inside the band that ``settle`` confirmed.
    """

    pairs: Tensor
    sq_distances: Tensor
    num_below: Tensor | None


def _block_squared_distances(a: Tensor, a_sq: Tensor, b: Tensor, b_sq: Tensor, out: Tensor | None = None) -> Tensor:
    """``(len(a), len(b))`` squared distances by the expansion, clamped at 0 (into ``out`` when given)."""
    if out is None:
        return torch.addmm(b_sq[None, :], a, b.t(), alpha=-2).add_(a_sq[:, None]).clamp_min_(0)
    return torch.addmm(b_sq[None, :], a, b.t(), alpha=-2, out=out).add_(a_sq[:, None]).clamp_min_(0)


def smallest_pairs(
    x: Tensor,
    k: int,
    *,
    block_rows: int | None = None,
    count_band: tuple[float, float] | None = None,
    settle: Callable[[Tensor], Tensor] | None = None,
    on_block: Callable[[int], None] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> PairSearch:
    """The ``k`` pairs ``i < j`` with the smallest computed squared distances; optionally a threshold count.

    Args:
        x: ``(s, D)`` floating samples.
        k: number of pairs, ``1 <= k <= s (s - 1) / 2``.
        block_rows: block edge ``B`` (default :func:`default_block_rows`).
        count_band: ``(lower, upper)`` squared distances around a threshold, wide enough to cover the expansion's
            rounding: also count the pairs computed below ``lower``, and pass those computed in ``[lower, upper]``
            to ``settle`` (see :class:`PairSearch`).
        settle: with ``count_band``, called with ``(m, 2)`` int64 pairs (``m <= 65536``) inside the band; returns
            how many of them are at or below the threshold (a 0-d tensor), decided exactly. The band is visited
            in row slabs, so its memory is bounded however many pairs fall in it (all of them when every sample
            is the same).
        on_block: called with the number of rows of each finished row block (progress).
        shard: ``(rank, world_size)``: only the row blocks ``b`` with ``b % world_size == rank`` (each against the
            blocks to its right); the pairs are this share's ``k`` smallest and the count this share's, so that
            the ``k`` smallest of the ranks' pairs together, and the sum of their counts, are the whole.

    Returns:
        :class:`PairSearch`.

    Example:
        >>> x = torch.tensor([[0.0], [10.0], [0.5], [10.1]])
        >>> found = smallest_pairs(x, 2)
        >>> found.pairs.tolist(), [round(v, 4) for v in found.sq_distances.tolist()]
        ([[1, 3], [0, 2]], [0.01, 0.25])
    """
    s = x.shape[0]
    rows = block_rows or default_block_rows(s, x.device)
    sq = squared_norms(x)
    best_d2 = torch.empty(0, dtype=x.dtype, device=x.device)
    best_idx = torch.empty(0, dtype=torch.int64, device=x.device)  # flat index i * s + j
    counting = count_band is not None
    lo, hi = count_band if count_band is not None else (0.0, 0.0)
    num_below = torch.zeros((), dtype=torch.int64, device=x.device)
    if counting and settle is None:
        raise ValueError("settle: expected a function deciding the pairs inside count_band, got None")
    kth_best = torch.full((), float("inf"), dtype=x.dtype, device=x.device)  # running k-th smallest value
    lower_or_diagonal: Tensor | None = None
    for block_index, i0 in enumerate(range(0, s, rows)):
        if block_index % shard[1] != shard[0]:
            continue
        a, a_sq = x[i0 : i0 + rows], sq[i0 : i0 + rows]
        for j0 in range(i0, s, rows):
            block = _block_squared_distances(a, a_sq, x[j0 : j0 + rows], sq[j0 : j0 + rows])
            if j0 == i0:  # diagonal block: keep j > i only
                if lower_or_diagonal is None or lower_or_diagonal.shape != block.shape:
                    lower_or_diagonal = ~torch.ones_like(block, dtype=torch.bool).triu_(1)
                block.masked_fill_(lower_or_diagonal, float("inf"))
            # Only rows whose minimum can enter the top k are searched: the k-th smallest row minimum bounds
            # the block's k-th smallest value, and the running k-th best bounds what can still enter.
            # A value equal to the running k-th best cannot improve the top k, so once k pairs at distance 0 are
            # held (a collapsed generator) no row is searched again.
            row_min = block.amin(dim=1)
            # k-th smallest row minimum (topk, not kthvalue: kthvalue refuses deterministic mode on older CUDA torch)
            block_bound = torch.topk(row_min, min(k, row_min.numel()), largest=False).values[-1]
            candidate_rows = ((row_min <= block_bound) & (row_min < kth_best)).nonzero()[:, 0]
            if candidate_rows.numel():
                sub = block.index_select(0, candidate_rows)
                width = sub.shape[1]
                values, flat = torch.topk(sub.reshape(-1), min(k, sub.numel()), largest=False, sorted=False)
                found_idx = (i0 + candidate_rows[flat // width]) * s + (j0 + flat % width)
                merged_d2 = torch.cat([best_d2, values])
                merged_idx = torch.cat([best_idx, found_idx])
                best_d2, order = torch.topk(merged_d2, min(k, merged_d2.numel()), largest=False, sorted=False)
                best_idx = merged_idx[order]
                if best_d2.numel() == k:
                    kth_best = best_d2.max()
            if counting and settle is not None:
                near_rows = (row_min <= hi).nonzero()[:, 0]  # only these rows hold entries below or in the band
                if near_rows.numel():
                    near = block.index_select(0, near_rows) if near_rows.numel() < block.shape[0] else block
                    num_below += (near < lo).sum()
                    num_below += _settle_band(near, near_rows + i0, lo, hi, j0, settle)
        if on_block is not None:
            on_block(a.shape[0])
    order = torch.argsort(best_d2, stable=True)
    best_d2, best_idx = best_d2[order], best_idx[order]
    pairs = torch.stack([best_idx // s, best_idx % s], dim=1)
    return PairSearch(pairs, best_d2, num_below if counting else None)


def _settle_band(
    block: Tensor, row_ids: Tensor, lo: float, hi: float, j0: int, settle: Callable[[Tensor], Tensor]
) -> Tensor:
    """Count the in-band entries of (rows ``row_ids`` of) one block that ``settle`` confirms, listing at most
    ``_BAND_SLAB_PAIRS`` pairs at once."""
    in_band = (block >= lo) & (block <= hi) & (block < float("inf"))  # masked (i >= j) entries are +inf
    settled = torch.zeros((), dtype=torch.int64, device=block.device)
    rows_with_band = in_band.any(dim=1).nonzero()[:, 0]
    if rows_with_band.numel() == 0:
        return settled
    slab = max(1, _BAND_SLAB_PAIRS // block.shape[1])
    for start in range(0, rows_with_band.numel(), slab):
        rows = rows_with_band[start : start + slab]
        local = in_band.index_select(0, rows).nonzero()
        pairs = torch.stack([row_ids[rows[local[:, 0]]], local[:, 1] + j0], dim=1)
        settled += settle(pairs)
    return settled


def nearest_other(x: Tensor, *, block_rows: int | None = None) -> Tensor:
    """Index ``(s,)`` of every row's nearest other row (by the expansion), visiting each block pair once.

    Example:
        >>> nearest_other(torch.tensor([[0.0], [3.0], [1.0]])).tolist()
        [2, 2, 0]
    """
    s = x.shape[0]
    rows = block_rows or default_block_rows(s, x.device)
    sq = squared_norms(x)
    best = torch.full((s,), float("inf"), dtype=x.dtype, device=x.device)
    arg = torch.zeros(s, dtype=torch.int64, device=x.device)

    def improve(target: slice, values: Tensor, index: Tensor) -> None:
        better = values < best[target]
        best[target] = torch.where(better, values, best[target])
        arg[target] = torch.where(better, index, arg[target])

    for i0 in range(0, s, rows):
        a, a_sq = x[i0 : i0 + rows], sq[i0 : i0 + rows]
        for j0 in range(i0, s, rows):
            block = _block_squared_distances(a, a_sq, x[j0 : j0 + rows], sq[j0 : j0 + rows])
            if j0 == i0:
                block.fill_diagonal_(float("inf"))
            row_min, row_arg = block.min(dim=1)
            improve(slice(i0, i0 + a.shape[0]), row_min, row_arg + j0)
            if j0 != i0:
                col_min, col_arg = block.min(dim=0)
                improve(slice(j0, j0 + block.shape[1]), col_min, col_arg + i0)
    return arg


def exact_squared_distances(x: Tensor, pairs: Tensor) -> Tensor:
    """Squared distances ``(P,)`` of ``pairs (P, 2)`` from the differences, in float64 (exact duplicates give 0).

    Example:
        >>> x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [4.0, 6.0]])
        >>> exact_squared_distances(x, torch.tensor([[0, 1], [0, 2]])).tolist()
        [0.0, 25.0]
    """
    diff = x[pairs[:, 0]].double() - x[pairs[:, 1]].double()
    return diff.square().sum(dim=1)
