"""Assignment kernels against a brute-force float64 search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastndb.kernels import assign_and_sum, lloyd_step, nearest_centroid, nearest_labels, squared_norms


def brute_force(x, c):
    d2 = ((x.double()[:, None, :] - c.double()[None, :, :]) ** 2).sum(-1)
    return d2.argmin(1), d2


@pytest.mark.parametrize("n,d,k,chunk", [(1, 3, 1, None), (257, 17, 13, 64), (1000, 64, 100, None), (333, 5, 7, 1)])
def test_nearest_matches_float64_brute_force(n, d, k, chunk):
    g = torch.Generator().manual_seed(n + d + k)
    x, c = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    labels, d2 = nearest_centroid(x, c, chunk_rows=chunk)
    ref_labels, ref_d2 = brute_force(x, c)
    best = ref_d2.gather(1, ref_labels[:, None])[:, 0]
    chosen = ref_d2.gather(1, labels[:, None])[:, 0]
    # the chosen centroid is optimal up to float32 rounding of the expansion (ties aside)
    assert torch.all(chosen - best <= 1e-4 * (1 + best))
    assert (labels == ref_labels).float().mean() > 0.99
    np.testing.assert_allclose(d2.double().numpy(), chosen.numpy(), rtol=1e-4, atol=1e-4)
    assert labels.dtype == torch.int64 and labels.shape == (n,)


def test_exact_duplicates_give_zero_not_negative_or_nan():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(10, 128, generator=g) * 30  # large norms: the expansion cancels badly
    x = torch.cat([c, c[:3]])
    labels, d2 = nearest_centroid(x, c)
    assert torch.isfinite(d2).all() and (d2 >= 0).all()
    assert labels.tolist() == list(range(10)) + [0, 1, 2]
    assert float(d2.max()) < 1e-2 * float(squared_norms(c).max()) * 1e-3


def test_ties_go_to_lowest_index_and_chunking_is_invisible():
    c = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    x = torch.zeros(50, 2)  # equidistant from all
    labels, _ = nearest_centroid(x, c, chunk_rows=7)
    assert set(labels.tolist()) <= {0, 2}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(999, 9, generator=g)
    c = torch.randn(31, 9, generator=g)
    whole = nearest_centroid(x, c, chunk_rows=999)
    pieces = nearest_centroid(x, c, chunk_rows=100)
    assert torch.equal(whole[0], pieces[0])


def test_float64_inputs_stay_float64():
    x = torch.randn(20, 4, dtype=torch.float64)
    labels, d2 = nearest_centroid(x, x[:5])
    assert d2.dtype == torch.float64
    assert labels[:5].tolist() == [0, 1, 2, 3, 4]


def test_lloyd_step_sums_and_counts():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(500, 6, generator=g)
    labels = torch.randint(0, 9, (500,), generator=g)
    sums, counts = lloyd_step(x, torch.zeros(9, 6), labels)
    for k in range(9):
        np.testing.assert_allclose(sums[k].numpy(), x[labels == k].sum(0).numpy(), rtol=1e-5, atol=1e-5)
        assert counts[k] == int((labels == k).sum())
    assert counts.dtype == torch.int64


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_assign_and_sum_is_nearest_then_lloyd_step_bit_for_bit(chunk, dtype):
    g = torch.Generator().manual_seed(chunk)
    x = (torch.randn(503, 9, generator=g) * 3).to(dtype)
    c = x[torch.randperm(503, generator=g)[:11]].clone()
    labels, d2, sums, counts = assign_and_sum(x, c, chunk_rows=chunk)
    ref_labels, ref_d2 = nearest_centroid(x, c, chunk_rows=chunk)  # the same blocks: GEMM rounding follows them
    ref_sums, ref_counts = lloyd_step(x, c, ref_labels)
    assert torch.equal(labels, ref_labels) and torch.equal(d2, ref_d2)
    assert torch.equal(sums, ref_sums) and torch.equal(counts, ref_counts)
    # and against float64 numpy: every point in its nearest centroid, sums per label
    exact = ((x.double()[:, None] - c.double()[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels.numpy(), exact.argmin(1).numpy())
    np.testing.assert_allclose(sums.double().numpy(), np.stack([x.double()[labels == k].sum(0).numpy()
                                                               for k in range(11)]), rtol=1e-5, atol=1e-4)


def test_assign_and_sum_gemm_update_matches_index_add():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 5, generator=g, dtype=torch.float64)
    c = x[:6].clone()
    a = assign_and_sum(x, c, method="index_add", chunk_rows=50)
    b = assign_and_sum(x, c, method="gemm", chunk_rows=50)
    assert torch.equal(a[0], b[0]) and torch.equal(a[3], b[3])
    torch.testing.assert_close(a[2], b[2], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="method"):
        assign_and_sum(x, c, method="scatter")


def test_precomputed_norms_give_the_same_distances():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(200, 7, generator=g)
    c = x[:5].clone()
    x_sq = squared_norms(x)
    assert torch.equal(nearest_centroid(x, c, x_sq_norms=x_sq)[1], nearest_centroid(x, c)[1])
    assert torch.equal(assign_and_sum(x, c, x_sq_norms=x_sq)[1], nearest_centroid(x, c)[1])


def test_kernels_stay_differentiable_and_work_on_inference_tensors():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 6, generator=g, requires_grad=True)
    c = torch.randn(4, 6, generator=g)
    _, d2 = nearest_centroid(x, c, chunk_rows=64)
    d2.sum().backward()
    exact = x.detach().clone().requires_grad_()
    ((exact[:, None] - c[None]) ** 2).sum(-1).min(1).values.sum().backward()
    torch.testing.assert_close(x.grad, exact.grad, rtol=1e-4, atol=1e-4)
    with torch.inference_mode():
        y = torch.randn(100, 6, generator=g)
    labels, _, sums, counts = assign_and_sum(y, c)
    assert torch.equal(labels, nearest_labels(y, c)) and int(counts.sum()) == 100


@pytest.fixture(params=["native", "torch"])
def engine(request, monkeypatch):
    """The neighbour engine's two CPU paths: the compiled tile epilogues (kernels/_tiles.c) and the torch ops."""
    from fastndb.kernels import _native

    if request.param == "native" and not _native.available:
        pytest.skip("the compiled tile epilogues are not built here")
    monkeypatch.setattr(_native, "enabled", request.param == "native")
    return request.param


def test_the_compiled_epilogues_are_built_wherever_a_compiler_is():
    """A broken build must not fall back to the slow path unnoticed: with a C compiler on the PATH (and
    ``FASTNDB_NATIVE`` not 0) the install has built ``_tiles`` and it loads."""
    import os
    import shutil

    from fastndb.kernels import _native

    if os.environ.get("FASTNDB_NATIVE", "1") == "0" or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here, or switched off")
    assert _native.available


@pytest.mark.parametrize("case", ["lattice", "sorted", "identical"])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_radii_from_seeded_first_tiles_equal_float64_brute_force(case, k, engine):
    """Tiles of 512 rows: a row's first tile is searched below the width-th smallest of its group minima (no topk
    over the tile). Ties (an integer lattice), samples sorted by mode (a tile's rows all far from some columns)
    and identical samples (every entry at the threshold) against the sorted float64 distances."""
    from fastndb.kernels.neighbours import kth_neighbour_sq, nearest_neighbours

    g = torch.Generator().manual_seed(k)
    if case == "lattice":
        x = torch.randint(0, 3, (1300, 4), generator=g).float()
    elif case == "sorted":
        x = (torch.randn(1300, 8, generator=g) + 40 * torch.arange(1300)[:, None].div(300, rounding_mode="floor"))
    else:
        x = torch.ones(1300, 6)
    x64 = x.double()
    d2 = ((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    expected = d2.sort(dim=1).values[:, k]
    assert torch.equal(kth_neighbour_sq(x, k, block_rows=512), expected)
    found = nearest_neighbours(x, x, 2, exclude_self=True, block_rows=512)
    off = d2.clone().fill_diagonal_(float("inf"))
    assert torch.equal(found.sq, off.sort(dim=1).values[:, :2])
    # the named rows are at those distances; among equal non-zero distances the lower row comes first
    assert torch.equal(off.gather(1, found.index), found.sq)
    first = found.sq[:, :1]
    lower_tie = (off == first) & (torch.arange(1300)[None, :] < found.index[:, :1]) & (first > 0)
    assert not bool(lower_tie.any())


def test_far_pairs_of_tiles_are_skipped_and_the_answers_stay_exact(monkeypatch, engine):
    """A set against itself: rows ordered into compact blocks, far pairs of tiles skipped by the gap between the
    blocks' balls. Six clusters 100 apart, shuffled: most pairs are skipped, and the radii and 2-NN equal the
    float64 brute force."""
    from fastndb.kernels import neighbours as nb

    g = torch.Generator().manual_seed(5)
    centres = torch.randn(6, 8, generator=g) * 100
    x = (centres.repeat_interleave(500, 0) + torch.randn(3000, 8, generator=g))[torch.randperm(3000, generator=g)]
    order = nb._compact_order(x, 500)
    assert torch.equal(order.sort().values, torch.arange(3000))  # a permutation
    calls = []
    original = nb._block_squared_distances
    monkeypatch.setattr(nb, "_block_squared_distances", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    radii = nb.kth_neighbour_sq(x, 5, block_rows=500)
    assert len(calls) <= 6 + 3, len(calls)  # the 6 blocks' own tiles, few of the 15 others
    x64 = x.double()
    d2 = ((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    assert torch.equal(radii, d2.sort(dim=1).values[:, 5])
    found = nb.nearest_neighbours(x, x, 2, exclude_self=True, block_rows=500)
    assert torch.equal(found.sq, d2.fill_diagonal_(float("inf")).sort(dim=1).values[:, :2])


def test_seeded_first_tiles_stay_small_when_every_sample_is_the_same(monkeypatch):
    """Identical samples put every entry of a first tile at its seed: the merge must not list the whole tile (it did:
    330 MiB for 20,000 samples); it falls back to a topk, and every list it builds stays within a few groups a row."""
    from fastndb.kernels import _native
    from fastndb.kernels import neighbours as nb

    monkeypatch.setattr(_native, "enabled", False)  # the torch path's lists (the compiled merge keeps w a row)
    widths, fallbacks = [], []
    original = nb._entries_below

    def spy(*args):
        found = original(*args)
        (fallbacks if found is None else widths).append(0 if found is None else found[0].shape[1])
        return found

    monkeypatch.setattr(nb, "_entries_below", spy)
    radii = nb.kth_neighbour_sq(torch.ones(5000, 4), 5, block_rows=2048)  # 128 groups a row: all at the seed
    assert torch.equal(radii, torch.zeros(5000, dtype=torch.float64))
    width = 5 + 1 + nb._EXTRA_CANDIDATES
    assert fallbacks and max(widths, default=0) <= nb._GROUP * nb._SEED_GROUPS * width


def _ball_brute_force(a, ra, b, rb, inclusive):
    d2 = ((a.double()[:, None, :] - b.double()[None, :, :]) ** 2).sum(-1)
    less = torch.le if inclusive else torch.lt
    in_a, in_b = less(d2, ra[:, None]), less(d2, rb[None, :])
    return in_a.any(1), in_a.sum(0), in_b.any(1)


@pytest.mark.parametrize("case", ["lattice", "copies", "scaled", "identical"])
@pytest.mark.parametrize("inclusive", [False, True])
@pytest.mark.parametrize("rows", [64, 333])
def test_ball_counts_equal_float64_brute_force_on_both_paths(case, inclusive, rows, engine):
    """Ball tests (a's balls: any per row, count per column; b's balls: any per row) against float64 brute force:
    a lattice (many pairs exactly at a radius), fakes that copy reals (distance 0, radii at neighbours'
    distances), data at 1e6 (a wide rounding band), identical samples (radii 0); odd tile sizes and tails."""
    from fastndb.kernels.neighbours import ball_counts, kth_neighbour_sq

    g = torch.Generator().manual_seed(rows + inclusive)
    if case == "lattice":
        a, b = (torch.randint(0, 4, (700, 3), generator=g).float() for _ in range(2))
    elif case == "copies":
        a = torch.randn(700, 5, generator=g)
        b = torch.cat([a[torch.randperm(700, generator=g)[:300]], torch.randn(410, 5, generator=g)])
    elif case == "scaled":
        a, b = (1e6 + torch.randn(700, 16, generator=g) for _ in range(2))
    else:
        a, b = torch.ones(700, 4), torch.ones(650, 4)
    ra, rb = kth_neighbour_sq(a, 3), kth_neighbour_sq(b, 3)
    out = ball_counts(a, ra, b, rb, inclusive=inclusive, block_rows=rows)
    a_any, b_count, a_in_b = _ball_brute_force(a, ra, b, rb, inclusive)
    assert torch.equal(out.a_any, a_any) and torch.equal(out.b_count, b_count) and torch.equal(out.a_in_b, a_in_b)


def test_ball_counts_paths_agree_bit_for_bit_and_settle_the_same_pairs(monkeypatch):
    """The compiled pass does the torch path's arithmetic: the same flags, counts and re-tested pairs."""
    from fastndb.kernels import _native
    from fastndb.kernels.neighbours import ball_counts, kth_neighbour_sq

    if not _native.available:
        pytest.skip("the compiled tile epilogues are not built here")
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 5, (1500, 6), generator=g).float() + 1e-3 * torch.randn(1500, 6, generator=g)
    b = torch.randint(0, 5, (1200, 6), generator=g).float()
    ra, rb = kth_neighbour_sq(a, 5), kth_neighbour_sq(b, 5)
    outs = []
    for enabled in (False, True):
        monkeypatch.setattr(_native, "enabled", enabled)
        outs.append(ball_counts(a, ra, b, rb, block_rows=512))
    assert outs[0].num_settled > 0  # the band is exercised
    for left, right in zip(outs[0], outs[1], strict=True):
        assert torch.equal(left, right) if isinstance(left, torch.Tensor) else left == right


@pytest.mark.parametrize("w", [1, 7, 22])
def test_compiled_merges_keep_the_smallest_entries_with_their_indices(w):
    """merge_rows / merge_cols against a topk of the lists and the tile together: the same values, each index
    naming an entry of that value, on lists that start empty (the seeded first tile), half full and full."""
    from fastndb.kernels import _native

    if not _native.available:
        pytest.skip("the compiled tile epilogues are not built here")
    g = torch.Generator().manual_seed(w)
    for n, m in [(300, 2048), (129, 37), (64, 1000)]:
        tile = torch.randint(0, 50, (n, m), generator=g).float()  # many ties
        for start in ("empty", "partial", "full"):
            for transposed in (False, True):
                lists = m if transposed else n
                if start == "empty":
                    best = torch.full((lists, w), float("inf"))
                elif start == "partial":  # a few entries, the last still +inf (a short tile came first)
                    best = torch.full((lists, w), float("inf"))
                    best[:, : (w + 1) // 2] = torch.randint(0, 50, (lists, (w + 1) // 2), generator=g).float()
                    best = best.sort(dim=1).values
                else:
                    best = torch.randint(0, 50, (lists, w), generator=g).float().sort(dim=1).values
                idx = torch.full((lists, w), -1, dtype=torch.int64)
                before = best.clone()
                view = tile.t() if transposed else tile
                if transposed:
                    _native.merge_cols(tile, best, idx, 1000)
                else:
                    _native.merge_rows(tile, best, idx, 1000)
                expected = torch.cat([before, view], dim=1).topk(w, dim=1, largest=False).values.sort(1).values
                assert torch.equal(best, expected)
                new = idx >= 1000  # entries from the tile name their value's position
                rows_of = torch.arange(lists)[:, None].expand(-1, w)
                assert torch.equal(view[rows_of[new], idx[new] - 1000], best[new])


@pytest.mark.parametrize("tail", [1, 3, 17])
def test_a_short_last_block_keeps_its_candidates(tail, engine):
    """A last block of a few rows: its diagonal tile leaves its lists part-filled (last value +inf), and the next
    tiles merge into them transposed. The entries already there must survive (the compiled merge seeds only
    lists with no entry). Radii and 2-NN against float64 brute force, two clusters so that the nearest rows of the
    short block's samples lie in that block."""
    from fastndb.kernels.neighbours import kth_neighbour_sq, nearest_neighbours

    g = torch.Generator().manual_seed(tail)
    n = 2 * 512 + tail
    x = torch.randn(n, 6, generator=g)
    x[-tail:] += 50.0  # the short block's samples are each other's nearest
    x64 = x.double()
    d2 = ((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    k = min(tail, 3)
    assert torch.equal(kth_neighbour_sq(x, k, block_rows=512), d2.sort(dim=1).values[:, k])
    found = nearest_neighbours(x, x, 2, exclude_self=True, block_rows=512)
    assert torch.equal(found.sq, d2.fill_diagonal_(float("inf")).sort(dim=1).values[:, :2])
