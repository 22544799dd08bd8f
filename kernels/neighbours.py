r"""Exact tiled k-nearest-neighbour search, radii and ball tests, never an ``N x N`` or ``N x M`` matrix.

Three kernels behind the coverage metrics (precision, recall, density, coverage) and the memorisation tests:

* :func:`kth_neighbour_sq`: each sample's squared distance to its ``k``-th nearest *other* sample of the same set
  (duplicates count as others, so a radius of 0 is legal).
* :func:`ball_counts`: for samples ``a`` with radii ``r_a`` and samples ``b`` with radii ``r_b``, which pairs
  fall inside the balls: ``d(a_i, b_j) < r_a[i]`` and ``d(a_i, b_j) < r_b[j]`` (or ``<=`` with ``inclusive``),
  reduced as the metrics need them (per-row any, per-column any and count).
* :func:`nearest_neighbours`: the ``k`` nearest rows of a reference set, with their indices, for every query.

All visit ``B x B`` blocks of squared distances by the expansion
:math:`\|x\|^2 + \|y\|^2 - 2 x \cdot y` (one GEMM per block), whose rounding is bounded by a band
:math:`\beta = 8 \sqrt{D}\, \epsilon \cdot 2 \max \|x\|^2` at the GEMM precision in effect. The searches keep each
row's running ``k + 16`` smallest computed values; once a row has them, a tile is only compared with the row's
running last value, and the few entries below it are merged (no sort of the tile). A set searched against itself
in one process visits each pair of tiles once; up to 512 dimensions its rows are first ordered into compact
blocks (a copy of the set), whose own tiles come first and whose far pairs are skipped where the gap between the
blocks' balls keeps every entry above the rows' running thresholds. Anything the band cannot decide is settled
exactly: the candidates within the band of the ``k``-th are recomputed in float64 from the differences, and
pairs whose computed distance lies within the band of a radius are re-tested in float64 from the differences, in
slabs of at most 65,536 pairs and 131,072 gathered float64 values at once. Memory: one block (with two 0/1
buffers of its size for the ball tests on the torch path), ``O((N + M) k)`` candidates and one slab, whatever the
data (also when every sample is the same).

On the CPU, for float32 samples, what follows each tile's GEMM is one compiled pass over the tile while it is in
cache (``_tiles.c``, loaded by ``_native``; docs/speed.md): the merge into the running candidates (each entry
compared with its row's last value, the few below it inserted; a list's first tile bounded by the ``w``-th
smallest of its group minima) and the ball tests with their reductions. It does the torch path's arithmetic, so
both give the same answers; the torch path runs on other devices and dtypes, where the library was not built, and
with ``FASTNDB_NATIVE=0``. The searches are not differentiable (they run under ``torch.no_grad``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from fastndb.kernels import _native
from fastndb.kernels.assign import matmul_eps, squared_norms
from fastndb.kernels.pairwise import _block_squared_distances, default_block_rows

_EXTRA_CANDIDATES = 16  # candidates beyond k + 1 per row, before the exact recompute
_EXACT_ELEMENTS = 2**17  # float64 values gathered at once by an exact recompute (1 MiB per temporary: stays in cache)
_SLAB_PAIRS = 2**16  # ambiguous pairs re-tested at once
_MASK_ENTRIES = 2**20  # tile entries whose band test is listed at once (the listed pairs: at most 16 MiB)
_GROUP = 16  # tile rows (or columns) per group of the candidate filters
_CANDIDATE_BYTES = 96 * 2**20  # merged k-NN candidates of a row block, with indices (default blocks fit at small k)
_PRUNE_MAX_DIM = 512  # self-searches order the rows and skip far pairs of tiles up to this many dimensions
_POWER_STEPS = 4  # power iterations per bisection of that order
_WIDE_DIM = 512  # from this many dimensions on, self-searches on CPUs use tiles of _SELF_BLOCK_WIDE rows
_SELF_BLOCK_WIDE = 512
_SEED_GROUPS = 4  # a seeded first tile falls back to a topk beyond this many groups a row at the seed, on average


def rounding_band(*sets: Tensor) -> float:
    """Half-width, in squared distance, that covers the expansion's rounding for distances between these sets."""
    largest = max(float(squared_norms(x).max()) if x.shape[0] else 0.0 for x in sets)
    x = sets[0]
    return 8.0 * math.sqrt(x.shape[1]) * matmul_eps(x.dtype, x.device) * 2.0 * largest


def exact_sq(u: Tensor, v: Tensor) -> Tensor:
    """Float64 squared distances ``(P,)`` between rows ``u[p]`` and ``v[p]`` (both ``(P, D)``) from the differences.

    The one exact distance of this module: radii and ball tests both use it, so a pair at exactly a radius (a
    fake sample that copies a real one sits at its neighbours' radii) compares equal, bit for bit.
    """
    return (u.double() - v).square_().sum(dim=1)  # v is widened inside the subtraction: no float64 copy of it


def _exact_candidates(a: Tensor, rows: Tensor, b: Tensor, best: Tensor, best_idx: Tensor, k: int, band: float
                      ) -> Tensor:
    """Exact squared distances ``(P, W)`` from ``a[rows[p]]`` to its candidates ``b[best_idx[p, w]]`` (computed
    ``best``, ascending), recomputed only where they can be among the ``k`` smallest: a candidate computed above
    ``c_k + 2 band`` (``c_k`` the row's ``k``-th computed value) has an exact distance above ``c_k + band``, which
    each of the ``k`` computed smallest is below; the others are ``+inf``. ``best`` may be in any order."""
    limit = torch.topk(best, k, dim=1, largest=False).values[:, -1:].double() + 2 * band
    r, w = ((best.double() <= limit) & torch.isfinite(best)).nonzero(as_tuple=True)
    exact = torch.full(best.shape, math.inf, dtype=torch.float64, device=a.device)
    per_call = max(1, _EXACT_ELEMENTS // max(1, a.shape[1]))
    for start in range(0, r.numel(), per_call):
        rr, ww = r[start : start + per_call], w[start : start + per_call]
        exact[rr, ww] = exact_sq(a.index_select(0, rows[rr]), b.index_select(0, best_idx[rr, ww]))
    return exact


def _smallest_candidates(a: Tensor, a_sq: Tensor, ref: Tensor, ref_sq: Tensor, width: int, rows: int,
                         own_offset: int | None = None) -> tuple[Tensor, Tensor]:
    """The ``width`` smallest computed squared distances from each row of ``a`` to the rows of ``ref`` and their
    indices, sorted ascending, one ``rows``-column tile at a time (``own_offset``: ``a`` is ``ref[own_offset:]``,
    and a row is not its own candidate).

    Once a row holds ``width`` candidates, a tile is first compared with the row's running ``width``-th value: only
    the entries below it can enter, and they are few (about ``width`` per tile early on, fewer later), so the tile is
    never sorted. A value left out is at least the running ``width``-th value when it was seen, hence at least the
    final one: the callers' bound on what was left out holds.
    """
    m, device = a.shape[0], a.device
    native = _native.usable(a, ref)
    best = torch.full((m, width if native else 0), math.inf, dtype=a.dtype, device=device)
    best_idx = torch.zeros(m, width if native else 0, dtype=torch.int64, device=device)
    tile = torch.empty(m * min(rows, ref.shape[0]), dtype=a.dtype, device=device)  # one tile, reused
    for j0 in range(0, ref.shape[0], rows):
        cols = min(rows, ref.shape[0] - j0)
        block = _block_squared_distances(a, a_sq, ref[j0 : j0 + rows], ref_sq[j0 : j0 + rows],
                                         out=tile[: m * cols].view(m, cols))
        if own_offset is not None:
            lo, hi = max(own_offset, j0), min(own_offset + m, j0 + block.shape[1])
            if lo < hi:  # this tile holds some rows' own columns
                own = torch.arange(lo, hi, device=device)
                block[own - own_offset, own - j0] = float("inf")
        if native:  # the lists start at +inf: every entry below a list's last value enters (_tiles.c)
            _native.merge_rows(block, best, best_idx, j0)
            continue
        if best.shape[1] < width:  # not full yet: the tile's own smallest
            values, where = torch.topk(block, min(width, block.shape[1]), dim=1, largest=False)
            found, found_idx = values, where + j0
        else:
            r, c = (block < best[:, -1:]).nonzero(as_tuple=True)
            if r.numel() == 0:
                continue
            counts = torch.bincount(r, minlength=m)
            slot = torch.arange(r.numel(), device=device) - (counts.cumsum(0) - counts)[r]  # rank within its row
            wide = int(counts.max())
            found = torch.full((m, wide), float("inf"), dtype=a.dtype, device=device)
            found_idx = torch.zeros(m, wide, dtype=torch.int64, device=device)
            found[r, slot], found_idx[r, slot] = block[r, c], c + j0
        merged = torch.cat([best, found], dim=1)
        merged_idx = torch.cat([best_idx, found_idx], dim=1)
        best, pick = torch.topk(merged, min(width, merged.shape[1]), dim=1, largest=False)
        best_idx = merged_idx.gather(1, pick)
    return best, best_idx


def _compact_order(x: Tensor, rows: int) -> Tensor:
    """A permutation of the rows of ``x (N, D)`` whose consecutive blocks of ``rows`` are compact in space: recursive
    bisection at the projection onto each part's leading principal direction (power iterations from a fixed start),
    the lower part a multiple of ``rows`` rows, so that every block is one leaf. Deterministic; ``O(N D log(N /
    rows))`` work over row chunks of the input (no copy of ``x``)."""
    device = x.device
    chunk = max(1, 2**22 // max(1, x.shape[1]))
    leaves, stack = [], [torch.arange(x.shape[0], device=device)]
    start = torch.linspace(1.0, 2.0, x.shape[1], dtype=torch.float64, device=device)
    while stack:
        idx = stack.pop()
        if idx.numel() <= rows:
            leaves.append(idx)
            continue
        mean = sum(x.index_select(0, idx[c : c + chunk]).double().sum(0) for c in range(0, idx.numel(), chunk))
        mean = mean / idx.numel()
        direction = start / start.norm()
        for _ in range(_POWER_STEPS):  # v <- sum_i (x_i - m) ((x_i - m) . v), normalised
            update = torch.zeros_like(direction)
            for c in range(0, idx.numel(), chunk):
                part = x.index_select(0, idx[c : c + chunk]).double() - mean
                update += part.t() @ (part @ direction)
            norm = update.norm()
            if not bool(norm > 0):  # all rows equal: any split is as compact
                break
            direction = update / norm
        projection = torch.cat([(x.index_select(0, idx[c : c + chunk]).double() - mean) @ direction
                                for c in range(0, idx.numel(), chunk)])
        ordered = idx[torch.argsort(projection, stable=True)]
        split = rows * -(-(idx.numel() // 2) // rows)  # the lower half, rounded up to whole blocks
        stack.append(ordered[split:])
        stack.append(ordered[:split])
    return torch.cat(leaves)


def _symmetric_candidates(x: Tensor, sq: Tensor, width: int, rows: int, exclude_self: bool = False,
                          pairs: tuple[int, int] = (0, 1)) -> tuple[Tensor, Tensor]:
    """:func:`_smallest_candidates` of every row of ``x`` against ``x`` itself, visiting each pair of tiles once: a
    tile above the diagonal serves its rows and, transposed, its columns. Half the products and half the passes
    of the row-by-row search; the running candidates of all rows, ``(N, width)``, are held meanwhile.

    At up to ``_PRUNE_MAX_DIM`` dimensions, where the selection rather than the product costs the time, the rows
    are first ordered so that each block is compact (:func:`_compact_order`, a copy of ``x``), each block's
    centroid and radius are computed in float64, the blocks' own tiles are visited first and then the other pairs
    nearest first, and a pair is skipped for the rows of a block when no entry can enter their candidates: by the
    triangle inequality every exact distance between the blocks is at least the gap between their balls, every
    computed one at least its square less the rounding band, and an entry enters only below the row's running
    ``width``-th value. So what is left out still lies at or above that value, as the callers' bound requires:
    the candidates, hence the exact answers, are those of the full search. On clustered data most pairs are
    skipped; on data without structure none are.

    ``pairs=(rank, world_size)``: only the pairs of tiles ``p`` (in visiting order) with ``p % world_size ==
    rank``; the candidates are then this share's, to be merged with the other ranks' (:func:`_merge_shares`)."""
    n, device = x.shape[0], x.device
    prune = n > 2 * rows and x.shape[1] <= _PRUNE_MAX_DIM
    order = _compact_order(x, rows) if prune else None
    if order is not None:
        x, sq = x.index_select(0, order), sq.index_select(0, order)
    best = torch.full((n, width), math.inf, dtype=x.dtype, device=device)
    best_idx = torch.zeros(n, width, dtype=torch.int64, device=device)
    tile = torch.empty(min(rows, n) ** 2, dtype=x.dtype, device=device)  # one tile, reused
    starts = list(range(0, n, rows))
    seen = [0] * len(starts)  # columns each row block has met so far
    need = width + 1 if exclude_self else width  # a row's own column is +inf, not a candidate
    visits = [(bi, bi) for bi in range(len(starts))]
    if prune:
        band = rounding_band(x)
        centres = torch.stack([x[i0 : i0 + rows].double().mean(0) for i0 in starts])
        reach = torch.stack([(x[i0 : i0 + rows].double() - centres[b]).square().sum(1).max().sqrt()
                             for b, i0 in enumerate(starts)])
        gaps = (torch.cdist(centres, centres) - reach[:, None] - reach[None, :]).clamp_min(0)
        # a lower bound on every computed squared distance between two blocks (float64 rounding of the bound is far
        # below the band)
        floors = (gaps.square() - band).tolist()
        others = [(bi, bj) for bi in range(len(starts)) for bj in range(bi + 1, len(starts))]
        visits += sorted(others, key=lambda pair: floors[pair[0]][pair[1]])
    else:
        visits += [(bi, bj) for bi in range(len(starts)) for bj in range(bi + 1, len(starts))]
    for pair, (bi, bj) in enumerate(visits):
        if pair % pairs[1] != pairs[0]:
            continue
        i0, j0 = starts[bi], starts[bj]
        rows_gain = cols_gain = True
        if prune and bi != bj and floors[bi][bj] >= 0:  # a negative floor is below every threshold: no host read
            floor = floors[bi][bj]
            ceilings = torch.stack([best[i0 : i0 + rows, -1].max(), best[j0 : j0 + rows, -1].max()]).tolist()
            rows_gain = seen[bi] < need or floor < ceilings[0]
            cols_gain = seen[bj] < need or floor < ceilings[1]
            if not (rows_gain or cols_gain):
                continue
        shape = (min(rows, n - i0), min(rows, n - j0))
        block = _block_squared_distances(x[i0 : i0 + rows], sq[i0 : i0 + rows], x[j0 : j0 + rows],
                                         sq[j0 : j0 + rows], out=tile[: shape[0] * shape[1]].view(shape))
        if bj == bi and exclude_self:
            block.fill_diagonal_(math.inf)
        if rows_gain:
            _merge_candidates(best, best_idx, i0, block, j0, width, seen[bi] >= need)
            seen[bi] += block.shape[1]
        if bj != bi and cols_gain:
            _merge_candidates(best, best_idx, j0, block, i0, width, seen[bj] >= need, transposed=True)
            seen[bj] += block.shape[0]
    if order is None:
        return best, best_idx
    values = torch.empty_like(best)
    index = torch.empty_like(best_idx)
    values[order], index[order] = best, order[best_idx]
    return values, index


def _self_block_rows(n: int, x: Tensor) -> int:
    """Tile edge of a set searched against itself: the default, but at most ``_SELF_BLOCK_WIDE`` rows on CPUs from
    ``_WIDE_DIM`` dimensions on, where the products cost the time: a pair of tiles is visited once, but a diagonal
    tile is computed whole, so smaller tiles compute fewer products twice (``n B / 2`` of the ``n^2 / 2``)."""
    rows = default_block_rows(n, x.device)
    if x.device.type == "cpu" and x.shape[1] >= _WIDE_DIM:
        rows = min(rows, _SELF_BLOCK_WIDE)
    return rows


def _merge_shares(share: tuple[Tensor, Tensor], gather: Callable[[Tensor], Tensor], width: int
                  ) -> tuple[Tensor, Tensor]:
    """Every rank's candidates of every row (``gather``: the ranks' tensors concatenated along dim 0 in rank
    order), merged into each row's ``width`` smallest: what one process visiting all pairs of tiles holds."""
    best, best_idx = share
    n = best.shape[0]
    values = gather(best).view(-1, n, width).permute(1, 0, 2).reshape(n, -1)
    index = gather(best_idx).view(-1, n, width).permute(1, 0, 2).reshape(n, -1)
    merged, pick = torch.topk(values, width, dim=1, largest=False)
    return merged, index.gather(1, pick)


def _merge_candidates(best: Tensor, best_idx: Tensor, r0: int, block: Tensor, c0: int, width: int, full: bool,
                      transposed: bool = False) -> None:
    """Merge a tile's entries into the running candidates of rows ``r0...`` (in place): its own smallest while the
    rows' lists are not full, else only the entries below each row's running ``width``-th value. ``transposed``:
    the rows are the tile's columns (compared in the tile's own layout, which is several times faster)."""
    m = block.shape[1] if transposed else block.shape[0]
    current, current_idx = best[r0 : r0 + m], best_idx[r0 : r0 + m]
    if _native.usable(block, best, best_idx):  # one compiled pass: compare with each list's last value, insert
        (_native.merge_cols if transposed else _native.merge_rows)(block, current, current_idx, c0)
        return
    rows_grouped = transposed and block.shape[0] % _GROUP == 0
    columns_grouped = not transposed and block.shape[1] % _GROUP == 0
    seedable = (block.shape[0] if transposed else block.shape[1]) // _GROUP >= width  # width group minima a row
    seeded = not full and (rows_grouped or columns_grouped) and seedable
    found = None
    if seeded or full:
        found = _entries_below(block, current[:, -1], width, transposed, rows_grouped, columns_grouped, seeded, c0)
    if found is None:
        # a row-major copy first: topk along a strided dim is several times slower than the copy and a contiguous one
        tile = block.t().contiguous() if transposed else block
        values, where = torch.topk(tile, min(width, tile.shape[1]), dim=1, largest=False)
        found = values, where + c0
    elif not found[0].numel():
        return
    merged = torch.cat([current, found[0]], dim=1)
    merged_idx = torch.cat([current_idx, found[1]], dim=1)
    values, pick = torch.topk(merged, width, dim=1, largest=False)
    best[r0 : r0 + m], best_idx[r0 : r0 + m] = values, merged_idx.gather(1, pick)


def _entries_below(block: Tensor, threshold: Tensor, width: int, transposed: bool, rows_grouped: bool,
                   columns_grouped: bool, seeded: bool, c0: int) -> tuple[Tensor, Tensor] | None:
    """The tile's entries below each row's ``threshold`` (or, ``seeded``, at or below the width-th smallest of the
    row's group minima), as ``(m, wide)`` values and column indices padded with ``inf``; ``None`` where a seeded
    tile holds more than ``_SEED_GROUPS * width`` groups a row at the seed (ties: identical samples put every
    entry there, and a topk over the tile is then smaller than the list)."""
    m = block.shape[1] if transposed else block.shape[0]
    device = block.device
    if rows_grouped:
        # minima over groups of 16 tile rows (a reduction across contiguous columns, several times cheaper than
        # a comparison of the whole tile) say which groups hold entries below a column's threshold
        groups = block.view(block.shape[0] // _GROUP, _GROUP, block.shape[1])
        minima = groups.amin(dim=1).t()  # (columns, groups)
    elif columns_grouped:
        # the same for the rows: groups of 16 columns a stride apart (member t of group g is column
        # t * C / 16 + g), so that their minima are again a reduction across contiguous memory
        stride = block.shape[1] // _GROUP
        groups = block.view(block.shape[0], _GROUP, stride)
        minima = groups.amin(dim=1)  # (rows, groups)
    if seeded:
        # a row's first tile: the width-th smallest of its group minima is width distinct entries' largest, so
        # it bounds the width-th smallest entry from above; the entries at or below it (nextafter: "<" below is
        # "<=" here) hold the row's width smallest, and they are few: no topk over the whole tile
        seed = torch.topk(minima, width, dim=1, largest=False).values[:, -1]
        threshold = torch.nextafter(seed, torch.full_like(seed, math.inf))
    hit = minima < threshold[:, None] if rows_grouped or columns_grouped else None
    if seeded and int(hit.sum()) > _SEED_GROUPS * width * m:
        return None
    if rows_grouped:
        col, g = hit.nonzero(as_tuple=True)
        inside = groups[g, :, col]  # (hits, 16)
        h, k = (inside < threshold[col, None]).nonzero(as_tuple=True)
        i, j, values = g[h] * _GROUP + k, col[h], inside[h, k]
    elif columns_grouped:
        row, g = hit.nonzero(as_tuple=True)
        inside = groups.permute(0, 2, 1)[row, g]  # (hits, 16)
        h, k = (inside < threshold[row, None]).nonzero(as_tuple=True)
        i, j, values = row[h], k * stride + g[h], inside[h, k]
    else:
        i, j = (block < (threshold[None, :] if transposed else threshold[:, None])).nonzero(as_tuple=True)
        values = block[i, j]
    if i.numel() == 0:
        return block.new_empty(m, 0), torch.empty(m, 0, dtype=torch.int64, device=device)
    r, c = (j, i) if transposed else (i, j)
    if transposed:  # group by the new rows (nonzero lists them by the tile's rows)
        order = torch.argsort(r, stable=True)
        r, c, values = r[order], c[order], values[order]
    counts = torch.bincount(r, minlength=m)
    slot = torch.arange(r.numel(), device=device) - (counts.cumsum(0) - counts)[r]  # rank within its row
    wide = int(counts.max())
    found = torch.full((m, wide), math.inf, dtype=block.dtype, device=device)
    found_idx = torch.zeros(m, wide, dtype=torch.int64, device=device)
    found[r, slot], found_idx[r, slot] = values, c + c0
    return found, found_idx


@torch.no_grad()  # exact searches: no graph (tiles are written in place)
def kth_neighbour_sq(x: Tensor, k: int, *, block_rows: int | None = None, shard: tuple[int, int] = (0, 1),
                     gather: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Exact squared distance ``(N,)`` float64 from each row of ``x (N, D)`` to its ``k``-th nearest other row.

    The ``k + 1`` smallest distances of a row include the row itself (0); the largest of them is the radius, as
    ``prdc``'s ``compute_nearest_neighbour_distances``. Candidates are the ``k + 1 + 16`` smallest by the
    expansion; their distances are recomputed exactly, and a row whose radius the band cannot separate from the
    candidates left out is recomputed exactly against every row.

    ``shard=(rank, world_size)``: only the row blocks ``b`` with ``b % world_size == rank`` are answered; the other
    rows' radii are 0, so that a sum over the ranks is the whole. Without ``gather`` each of those blocks is searched
    against all of ``x``; with it (the ranks' tensors concatenated along dim 0 in rank order, a collective), the
    pairs of tiles are dealt out instead (each visited once, by one rank) and the ranks' candidates merged: half
    the products, as in one process.

    Raises:
        ValueError: ``k < 1`` or ``k >= N``.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [3.0], [3.0]])
        >>> kth_neighbour_sq(x, 1).tolist(), kth_neighbour_sq(x, 2).tolist()
        ([1.0, 1.0, 0.0, 0.0], [9.0, 4.0, 4.0, 4.0])
    """
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"nearest_k: expected 1 <= k < {n} (the number of samples), got {k}")
    width = min(n, k + 1 + _EXTRA_CANDIDATES)
    rows = block_rows or _self_block_rows(n, x)
    # the merged candidates of a row block, rows x (width + rows) values with their int64 indices: bounded, so that
    # a large k (up to N - 1) costs time, not an N x N array in effect
    rows = max(1, min(rows, _CANDIDATE_BYTES // (20 * (width + rows))))
    sq = squared_norms(x)
    band = rounding_band(x)
    radii = torch.zeros(n, dtype=torch.float64, device=x.device)
    # one process: each pair of tiles once (symmetric); a shard: its row blocks against all of x
    everything = None
    if shard == (0, 1):
        everything = _symmetric_candidates(x, sq, width, rows)
    elif gather is not None:
        everything = _merge_shares(_symmetric_candidates(x, sq, width, rows, pairs=shard), gather, width)
    for block_index, i0 in enumerate(range(0, n, rows)):
        if block_index % shard[1] != shard[0]:
            continue
        a, a_sq = x[i0 : i0 + rows], sq[i0 : i0 + rows]
        if everything is None:
            best, best_idx = _smallest_candidates(a, a_sq, x, sq, width, rows)
        else:
            best, best_idx = everything[0][i0 : i0 + rows], everything[1][i0 : i0 + rows]
        here = torch.arange(i0, i0 + a.shape[0], device=x.device)
        exact = _exact_candidates(x, here, x, best, best_idx, k + 1, band).sort(dim=1).values
        radius = exact[:, k]  # the (k + 1)-th smallest, the row itself included
        # a candidate left out has an exact distance >= (its computed distance - band) >= best.max - band
        left_out_floor = best.max(dim=1).values.double() - band
        unsafe = ((radius > left_out_floor) & (radius > 0) & (best.shape[1] < n)).nonzero()[:, 0]
        for row in unsafe.tolist():  # ties within the band at the k-th distance: this row, exactly, in full
            radius[row] = _exact_kth_of_row(x, i0 + row, k)
        radii[i0 : i0 + a.shape[0]] = radius
    return radii


def _exact_kth_of_row(x: Tensor, row: int, k: int) -> Tensor:
    """The exact ``(k + 1)``-th smallest squared distance from row ``row`` to all rows (itself included), over
    column chunks of at most ``_EXACT_ELEMENTS`` gathered values."""
    chunk = max(1, _EXACT_ELEMENTS // max(1, x.shape[1]))
    smallest: Tensor | None = None
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk]
        values = exact_sq(x[row : row + 1].expand(part.shape[0], -1), part)
        pool = values if smallest is None else torch.cat([smallest, values])
        smallest = torch.topk(pool, min(k + 1, pool.numel()), largest=False).values
    return smallest.max()


class BallCounts(NamedTuple):
    """Outcome of :func:`ball_counts` for ``a (N, D)`` with radii ``r_a`` and ``b (M, D)`` with radii ``r_b``.

    Attributes:
        a_any: ``(N,)`` bool: some ``b_j`` lies in ``a_i``'s ball (``d < r_a[i]``): coverage of real samples.
        b_count: ``(M,)`` int64: how many ``a`` balls hold ``b_j``: density (and precision, where > 0).
        a_in_b: ``(N,)`` bool: ``a_i`` lies in some ``b_j``'s ball (``d < r_b[j]``): recall of real samples.
        num_settled: pairs the band could not decide, re-tested exactly (diagnostic).
    """

    a_any: Tensor
    b_count: Tensor
    a_in_b: Tensor
    num_settled: int


@torch.no_grad()  # exact searches: no graph (tiles are written in place)
def ball_counts(
    a: Tensor,
    radii_a: Tensor,
    b: Tensor,
    radii_b: Tensor,
    *,
    inclusive: bool = False,
    block_rows: int | None = None,
    on_block: Callable[[int], None] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> BallCounts:
    """Which pairs ``(a_i, b_j)`` lie inside ``a_i``'s ball and inside ``b_j``'s ball, by tiles.

    Args:
        a: ``(N, D)`` samples; ``radii_a``: ``(N,)`` float64 squared radii.
        b: ``(M, D)`` samples; ``radii_b``: ``(M,)`` float64 squared radii.
        inclusive: test ``d <= r`` instead of ``d < r``.
        block_rows: block edge (default: 2048 on CPU, 8192 on GPU).
        on_block: called with the rows of each finished row block (progress).
        shard: ``(rank, world_size)``: only the row blocks of ``a`` with ``b % world_size == rank`` (each against all
            of ``b``); the other rows' flags stay ``False`` and ``b_count`` holds this share's counts, so that an OR
            (a sum) over the ranks is the whole.

    Example:
        >>> a, b = torch.tensor([[0.0], [10.0]]), torch.tensor([[0.5], [20.0]])
        >>> out = ball_counts(a, torch.tensor([1.0, 1.0], dtype=torch.float64), b,
        ...                   torch.tensor([0.25, 1.0], dtype=torch.float64))
        >>> out.a_any.tolist(), out.b_count.tolist(), out.a_in_b.tolist()
        ([True, False], [1, 0], [False, False])
    """
    n, m = a.shape[0], b.shape[0]
    rows = block_rows or default_block_rows(max(n, m), a.device)
    a_sq, b_sq = squared_norms(a), squared_norms(b)
    band = rounding_band(a, b)
    less = torch.le if inclusive else torch.lt
    a_any = torch.zeros(n, dtype=torch.bool, device=a.device)
    a_in_b = torch.zeros(n, dtype=torch.bool, device=a.device)
    b_count = torch.zeros(m, dtype=torch.int64, device=a.device)
    settled = 0
    # one tile and two 0/1 masks (float32 at least: their column sums stay exact; the torch path's only),
    # allocated once at the largest tile's size and viewed at each tile's shape (contiguous): no allocation per tile
    size = min(rows, n) * min(rows, m)
    native = _native.usable(a, b)
    mask_dtype = torch.promote_types(a.dtype, torch.float32)
    masks = 0 if native else size  # the compiled pass needs no masks
    flat = (torch.empty(size, dtype=a.dtype, device=a.device), torch.empty(masks, dtype=mask_dtype, device=a.device),
            torch.empty(masks, dtype=mask_dtype, device=a.device))
    for block_index, i0 in enumerate(range(0, n, rows)):
        if block_index % shard[1] != shard[0]:
            continue
        a_low, a_high = _band_edges(radii_a[i0 : i0 + rows, None], band, a.dtype, inclusive)
        for j0 in range(0, m, rows):
            here, there = slice(i0, min(i0 + rows, n)), slice(j0, min(j0 + rows, m))
            shape = (here.stop - i0, there.stop - j0)
            block = flat[0][: shape[0] * shape[1]].view(shape)
            if native:  # one compiled pass over the tile: the same tests and reductions, the same bits
                torch.addmm(b_sq[None, there], a[here], b[there].t(), alpha=-2, out=block)
                b_low, b_high = _band_edges(radii_b[there], band, a.dtype, inclusive)
                hit, unsure_rows, surely, maybe, counts = _native.ball_rows(
                    block, a_sq[here], a_low.view(-1), a_high.view(-1), b_low, b_high)
                a_any[here] |= hit
                b_count[there] += counts
                a_in_b[here] |= surely
                for flags, low, high, radius, count_into in (
                        (unsure_rows, a_low, a_high, radii_a[here, None], b_count[there]),
                        (maybe, b_low[None, :], b_high[None, :], radii_b[None, there], None)):
                    if bool(flags.any()):
                        rows_left = flags.nonzero()[:, 0]
                        found, count = _settle_rows(block, rows_left, low, high, a, b, i0, j0, radius, less,
                                                    count_into, per_row=count_into is not None)
                        (a_any if count_into is not None else a_in_b)[rows_left + i0] |= found
                        settled += count
                continue
            inside, unsure = (buffer[: shape[0] * shape[1]].view(shape) for buffer in flat[1:])
            _block_squared_distances(a[here], a_sq[here], b[there], b_sq[there], out=block)
            # a's balls (every pair counts, for b_count): computed distances below r - band lie inside, above
            # r + band outside, and the exact test decides between. The masks are 0/1 in the tile's dtype:
            # comparisons into a float buffer, float row maxima and column sums are several times faster than
            # boolean ones on the CPU, and exact (at most block_rows ones per sum)
            torch.lt(block, a_low, out=inside)
            torch.le(block, a_high, out=unsure).sub_(inside)  # inside implies below the high edge
            rows_unsure = (unsure.amax(dim=1) > 0).nonzero()[:, 0]
            if rows_unsure.numel():
                settled += _settle(inside, unsure, rows_unsure, a, b, i0, j0, radii_a[here, None], less)
            a_any[here] |= inside.amax(dim=1) > 0
            b_count[there] += inside.sum(dim=0).to(torch.int64)
            # b's balls (an OR per row of a): row minima of the distances less each column's edges decide most rows
            b_low, b_high = _band_edges(radii_b[None, there], band, a.dtype, inclusive)
            surely = torch.sub(block, b_low, out=unsure).amin(dim=1) < 0
            maybe = (torch.sub(block, b_high, out=unsure).amin(dim=1) <= 0) & ~surely
            a_in_b[here] |= surely
            if bool(maybe.any()):
                rows_left = maybe.nonzero()[:, 0]
                found, count = _settle_rows(block, rows_left, b_low, b_high, a, b, i0, j0, radii_b[None, there],
                                            less)
                a_in_b[rows_left + i0] |= found
                settled += count
        if on_block is not None:
            on_block(min(rows, n - i0))
    return BallCounts(a_any, b_count, a_in_b, settled)


def _band_edges(radius: Tensor, band: float, dtype: torch.dtype, inclusive: bool) -> tuple[Tensor, Tensor]:
    """``r - band`` and ``r + band`` in ``dtype``, rounded outwards: below the first a computed squared distance
    surely lies inside the ball, above the second surely outside. Nothing lies strictly inside a radius of 0, so
    without ``inclusive`` such balls get an empty band (``-inf``)."""
    low, high = _outward(radius - band, dtype, -math.inf), _outward(radius + band, dtype, math.inf)
    if not inclusive:
        high = torch.where(radius > 0, high, torch.full_like(high, -math.inf))
    return low, high


def _outward(edge: Tensor, dtype: torch.dtype, direction: float) -> Tensor:
    """``edge`` (float64) in ``dtype``, rounded away from the band's centre (towards ``direction``) when inexact."""
    rounded = edge.to(dtype)
    moved = torch.nextafter(rounded, torch.full_like(rounded, direction))
    inexact = rounded.double() > edge if direction < 0 else rounded.double() < edge
    return torch.where(inexact, moved, rounded)


def _settle_rows(block: Tensor, rows: Tensor, low: Tensor, high: Tensor, a: Tensor, b: Tensor, i0: int, j0: int,
                 radius: Tensor, less: Callable, counts: Tensor | None = None, per_row: bool = False
                 ) -> tuple[Tensor, int]:
    """For the tile's ``rows``, whether some pair lies inside exactly: the entries between the band edges (``low``,
    ``high`` and the squared ``radius`` are ``(1, m)`` per column or, ``per_row``, ``(n, 1)``) are re-tested
    from the differences, a bounded slab at a time; returns the flags and how many pairs were re-tested.
    ``counts`` (``(m,)`` int64): the pairs found inside are also added to their columns' counts."""
    found = torch.zeros(rows.numel(), dtype=torch.bool, device=block.device)
    pairs_at_once = max(1, min(_SLAB_PAIRS, _EXACT_ELEMENTS // max(1, a.shape[1])))
    slab = max(1, _MASK_ENTRIES // block.shape[1])  # rows whose in-band entries are listed at once
    count = 0
    for start in range(0, rows.numel(), slab):
        part = rows[start : start + slab]
        sub = block.index_select(0, part)
        if per_row:
            low_part, high_part = low.index_select(0, part), high.index_select(0, part)
        else:
            low_part, high_part = low, high
        r, c = ((sub >= low_part) & (sub <= high_part)).nonzero(as_tuple=True)
        del sub
        hits = torch.zeros(part.numel(), dtype=torch.int64, device=block.device)
        for p0 in range(0, r.numel(), pairs_at_once):  # the exact tests, a bounded slab of pairs at a time
            rr, cc = r[p0 : p0 + pairs_at_once], c[p0 : p0 + pairs_at_once]
            edge = radius[part[rr], 0] if per_row else radius[0, cc]
            exact = less(exact_sq(a.index_select(0, part[rr] + i0), b.index_select(0, cc + j0)), edge).long()
            hits.index_add_(0, rr, exact)
            if counts is not None:
                counts.index_add_(0, cc, exact)
        found[start : start + part.numel()] |= hits > 0
        count += int(r.numel())
    return found, count


def _settle(inside: Tensor, unsure: Tensor, rows_with: Tensor, a: Tensor, b: Tensor, i0: int, j0: int,
            radius: Tensor, less: Callable) -> int:
    """Re-test the entries of ``inside`` (a 0/1 float tile, in place) that ``unsure`` (0/1) marks, in the rows
    ``rows_with``, exactly from the differences, at most ``_SLAB_PAIRS`` pairs and ``_EXACT_ELEMENTS`` gathered values
    per side at once (one row's pairs at the least); returns how many were re-tested."""
    full = radius.expand(inside.shape)
    pairs_at_once = max(1, min(_SLAB_PAIRS, _EXACT_ELEMENTS // max(1, a.shape[1])))  # bounds the float64 gathers
    slab = max(1, pairs_at_once // inside.shape[1])
    count = 0
    for start in range(0, rows_with.numel(), slab):
        rows = rows_with[start : start + slab]
        local = unsure.index_select(0, rows).nonzero()
        r, c = rows[local[:, 0]], local[:, 1]
        inside[r, c] = less(exact_sq(a.index_select(0, r + i0), b.index_select(0, c + j0)), full[r, c]).to(
            inside.dtype)
        count += int(r.numel())
    return count


class Nearest(NamedTuple):
    """Outcome of :func:`nearest_neighbours`: the ``k`` nearest rows of a reference set for each query row.

    Attributes:
        sq: ``(Q, k)`` float64 exact squared distances, ascending.
        index: ``(Q, k)`` int64 rows of the reference; among exactly equal distances the lower row comes first
            (distances of 0 excepted: any of several exact copies may be named).
    """

    sq: Tensor
    index: Tensor


@torch.no_grad()  # exact searches: no graph (tiles are written in place)
def nearest_neighbours(
    queries: Tensor, reference: Tensor, k: int, *, exclude_self: bool = False, block_rows: int | None = None,
    shard: tuple[int, int] = (0, 1), on_block: Callable[[int], None] | None = None,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> Nearest:
    """Exact ``k`` nearest rows of ``reference (N, D)`` for every row of ``queries (Q, D)``, by tiles.

    Candidates are the ``k + 16`` smallest by the expansion; their distances are recomputed exactly in float64
    and sorted (by distance, then row). A row whose ``k``-th exact distance the rounding band cannot separate
    from the candidates left out is recomputed exactly against the whole reference.

    Args:
        queries: ``(Q, D)`` rows searched for.
        reference: ``(N, D)`` rows searched in.
        k: neighbours per query, ``1 <= k <= N`` (``N - 1`` with ``exclude_self``).
        exclude_self: ``queries`` is ``reference``: row ``i`` is not its own neighbour (its exact copies are).
        block_rows: block edge (default: 2048 on CPU, 8192 on GPU).
        shard: ``(rank, world_size)``: only the query row blocks ``b`` with ``b % world_size == rank``; the other
            rows hold zeros (distances and indices), so that a sum over the ranks is the whole.
        on_block: called with the rows of each finished query block (progress).
        gather: with ``exclude_self`` and ``shard``, the ranks' tensors concatenated along dim 0 in rank order (a
            collective): the pairs of tiles of the reference against itself are then dealt out between the ranks
            and their candidates merged (half the products, as in one process).

    Memory: one ``block_rows^2`` tile, ``block_rows x (k + 16)`` running candidates (``(N, k + 16)`` for a reference
    searched against itself, each pair of tiles then visited once, with a reordered copy of the reference up to 512
    dimensions), the ``(Q, k)``
    answers and bounded float64 slabs: never a ``Q x N`` matrix.

    Raises:
        ValueError: ``k`` out of range.

    Example:
        >>> ref = torch.tensor([[0.0], [1.0], [3.0]])
        >>> out = nearest_neighbours(torch.tensor([[0.9], [2.9]]), ref, 2)
        >>> out.index.tolist(), [[round(v, 2) for v in row] for row in out.sq.tolist()]
        ([[1, 0], [2, 1]], [[0.01, 0.81], [0.01, 3.61]])
        >>> nearest_neighbours(ref, ref, 1, exclude_self=True).index.tolist()
        [[1], [0], [1]]
    """
    q, n = queries.shape[0], reference.shape[0]
    available = n - 1 if exclude_self else n
    if not 1 <= k <= available:
        rows_meant = "reference rows other than the query" if exclude_self else "reference rows"
        raise ValueError(f"k: expected 1 <= k <= {available} (the {rows_meant}), got {k}")
    width = min(available, k + _EXTRA_CANDIDATES)
    # the reference against itself in one process: each pair of tiles once (symmetric)
    same = (queries.data_ptr() == reference.data_ptr() and queries.shape == reference.shape
            and queries.stride() == reference.stride())
    symmetric = exclude_self and same and (shard == (0, 1) or gather is not None)
    rows = block_rows or (_self_block_rows(n, reference) if symmetric
                          else default_block_rows(max(q, n), queries.device))
    rows = max(1, min(rows, _CANDIDATE_BYTES // (20 * (width + rows))))
    q_sq, r_sq = squared_norms(queries), squared_norms(reference)
    band = rounding_band(queries, reference)
    device = queries.device
    everything = None
    if symmetric:
        everything = _symmetric_candidates(reference, r_sq, width, rows, exclude_self=True, pairs=shard)
        if shard != (0, 1):
            everything = _merge_shares(everything, gather, width)
    out_sq = torch.zeros(q, k, dtype=torch.float64, device=device)
    out_idx = torch.zeros(q, k, dtype=torch.int64, device=device)
    for block_index, i0 in enumerate(range(0, q, rows)):
        if block_index % shard[1] != shard[0]:
            continue
        a, a_sq = queries[i0 : i0 + rows], q_sq[i0 : i0 + rows]
        here = torch.arange(i0, i0 + a.shape[0], device=device)
        if everything is None:
            best, best_idx = _smallest_candidates(a, a_sq, reference, r_sq, width, rows,
                                                  i0 if exclude_self else None)
        else:
            best, best_idx = everything[0][i0 : i0 + rows], everything[1][i0 : i0 + rows]
        best_idx, order_by_row = best_idx.sort(dim=1)  # by row: the stable sort below puts the lower row first
        exact = _exact_candidates(queries, here, reference, best.gather(1, order_by_row), best_idx, k, band)
        exact, order = exact.sort(dim=1, stable=True)
        idx = best_idx.gather(1, order)
        kth = exact[:, k - 1]
        left_out_floor = best.max(dim=1).values.double() - band
        unsafe = ((kth >= left_out_floor) & (kth > 0) & (best.shape[1] < available)).nonzero()[:, 0]
        for row in unsafe.tolist():  # a tie within the band at the k-th distance: this row, exactly, in full
            values, index = _exact_smallest_of_row(queries[i0 + row], reference, k, i0 + row if exclude_self else -1)
            exact[row, :k], idx[row, :k] = values, index
        out_sq[i0 : i0 + a.shape[0]], out_idx[i0 : i0 + a.shape[0]] = exact[:, :k], idx[:, :k]
        if on_block is not None:
            on_block(a.shape[0])
    return Nearest(out_sq, out_idx)


def _exact_smallest_of_row(query: Tensor, reference: Tensor, k: int, skip: int) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest exact squared distances from ``query (D,)`` to the rows of ``reference`` (row ``skip``
    left out), lower rows first among equals, over column chunks of at most ``_EXACT_ELEMENTS`` gathered values."""
    chunk = max(1, _EXACT_ELEMENTS // max(1, reference.shape[1]))
    values = torch.empty(0, dtype=torch.float64, device=reference.device)
    index = torch.empty(0, dtype=torch.int64, device=reference.device)
    for start in range(0, reference.shape[0], chunk):
        part = reference[start : start + chunk]
        d = exact_sq(query[None, :].expand(part.shape[0], -1), part)
        cols = torch.arange(start, start + part.shape[0], device=reference.device)
        if skip >= 0:
            d = d.masked_fill(cols == skip, float("inf"))
        pool, pool_idx = torch.cat([values, d]), torch.cat([index, cols])
        pool, order = pool.sort(stable=True)
        values, index = pool[:k], pool_idx[order][:k]
    return values, index
