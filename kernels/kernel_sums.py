r"""Exact sums of a Gaussian kernel over all pairs of samples, by tiles: never the ``n x n`` matrix.

For samples :math:`x_1..x_n` and a scale :math:`\gamma > 0`, :func:`gaussian_pair_sums` returns

.. math:: S_1 = \sum_{i \ne j} e^{-\gamma d^2_{ij}}, \qquad S_2 = \sum_{i \ne j} e^{-2\gamma d^2_{ij}}, \qquad
          s_i = \sum_{j \ne i} e^{-\gamma d^2_{ij}},

the first two in float64 whatever the samples' dtype. The upper triangle of the distance matrix is visited in
``B x B`` blocks (:func:`~fastndb.kernels.pairwise._block_squared_distances`, one GEMM each); a block's kernel
values are summed in float64, so the accumulation error does not grow with ``n``. The diagonal (``i = j``, kernel
value 1 exactly) is left out of every sum: callers add ``n`` where they want it. Memory: one ``B x B`` block and
the ``(n,)`` row sums.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from fastndb.kernels.assign import squared_norms
from fastndb.kernels.pairwise import _block_squared_distances, default_block_rows


class PairSums(NamedTuple):
    """Outcome of :func:`gaussian_pair_sums`.

    Attributes:
        total: 0-d float64 :math:`S_1`, over ordered pairs ``i != j``.
        total_squared: 0-d float64 :math:`S_2` (the kernel's square summed: the variance of the pair terms).
        row_sums: ``(n,)`` float64 :math:`s_i`.
    """

    total: Tensor
    total_squared: Tensor
    row_sums: Tensor


def gaussian_pair_sums(x: Tensor, gamma: float, *, block_rows: int | None = None,
                       on_block: Callable[[int], None] | None = None, shard: tuple[int, int] = (0, 1)) -> PairSums:
    r"""The sums :math:`S_1, S_2, s_i` of :math:`e^{-\gamma \|x_i - x_j\|^2}` over the pairs ``i != j`` of ``x``.

    Args:
        x: ``(n, D)`` floating samples, any device (centre them first: the expansion's rounding is relative to the
            squared norms).
        gamma: :math:`\gamma > 0`.
        block_rows: block edge (default: 2048 on CPU, 8192 on GPU).
        on_block: called with the rows of each finished row block (progress).
        shard: ``(rank, world_size)``: visit only the tiles ``t`` (numbered row by row over the upper triangle) with
            ``t % world_size == rank`` and return their part of the sums; the parts of all ranks add up to the whole
            (each rank holding all of ``x``: the work, not the samples, is split).

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
        >>> out = gaussian_pair_sums(x, 0.5)
        >>> round(float(out.total), 6) == round(2 * (2.718281828**-0.5 + 2.718281828**-4.5 + 2.718281828**-2), 6)
        True
    """
    n = x.shape[0]
    rows = block_rows or default_block_rows(n, x.device)
    norms = squared_norms(x)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    total_squared = torch.zeros((), dtype=torch.float64, device=x.device)
    row_sums = torch.zeros(n, dtype=torch.float64, device=x.device)
    rank, world = shard
    tile = -1
    for i0 in range(0, n, rows):
        a, a_sq = x[i0 : i0 + rows], norms[i0 : i0 + rows]
        for j0 in range(i0, n, rows):
            tile += 1
            if tile % world != rank:
                continue
            block = _block_squared_distances(a, a_sq, x[j0 : j0 + rows], norms[j0 : j0 + rows])
            values = block.mul_(-gamma).exp_()
            if j0 == i0:
                values.fill_diagonal_(0.0)  # i = j is left out (the caller adds n where wanted)
            weight = 1.0 if j0 == i0 else 2.0  # an off-diagonal block stands for itself and its mirror
            total += weight * values.sum(dtype=torch.float64)
            total_squared += weight * values.square().sum(dtype=torch.float64)
            row_sums[i0 : i0 + a.shape[0]] += values.sum(dim=1, dtype=torch.float64)
            if j0 != i0:
                row_sums[j0 : j0 + values.shape[1]] += values.sum(dim=0, dtype=torch.float64)
        if on_block is not None:
            on_block(min(rows, n - i0))
    return PairSums(total, total_squared, row_sums)
