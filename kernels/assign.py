r"""Nearest-centroid assignment and the Lloyd step, chunked GEMM in PyTorch.

Squared distances use the expansion

.. math:: \|x - c\|^2 = \|x\|^2 - 2\, x \cdot c + \|c\|^2,

computed as one ``addmm`` per row chunk (``||c||^2 - 2 x C^T``) followed by a row-wise ``min``; ``||x||^2``
is added only to the winning entry and the result is clamped at 0, so exact duplicates give 0, never a
negative number. The expansion carries a rounding error of about ``eps * ||x||^2`` (float32: ~1e-7
relative), which can flip the winner between two centroids at almost the same distance (near-ties); the
argmin itself is the exact argmin of the computed scores. PyTorch's float32 matmul uses TF32 or bfloat16 only if
asked (:func:`reduced_matmul` reads the settings), so the default is full float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

_CPU_CHUNK_BYTES = 2**20 * 4  # x rows per chunk on CPUs: ~4 MiB, within L2 + L3 reach (see default_chunk_rows)
_CPU_CHUNK_MIN, _CPU_CHUNK_MAX = 1024, 4096
_GPU_CHUNK_BYTES = 256 * 2**20  # bound on the (rows x K) score block on accelerators


def default_chunk_rows(num_rows: int, num_centroids: int, device: torch.device, dim: int = 784) -> int:
    """Rows per chunk: blocks that stay in cache on CPU, large ones bounded in bytes on GPU.

    On the CPU the chunk is the power of two nearest below ``4 MiB / (4 D)`` rows, clamped to ``[1024, 4096]``:
    measured on a 2-core AMD EPYC with MKL (one fused Lloyd pass at 50,000 x 784, K = 100; docs/speed.md), 1024 rows
    at ``D = 784`` were fastest: 256-row blocks ran 25% slower (per-call overhead), 512 and 2048 rows 3-6% slower.

    Example:
        >>> default_chunk_rows(10**6, 100, torch.device("cpu"), dim=784)
        1024
        >>> default_chunk_rows(10**6, 100, torch.device("cpu"), dim=64)
        4096
    """
    if device.type == "cpu":
        fit = _CPU_CHUNK_BYTES // (4 * max(dim, 1))
        rows = 1 << max(fit, 1).bit_length() - 1
        return max(1, min(num_rows, max(_CPU_CHUNK_MIN, min(_CPU_CHUNK_MAX, rows))))
    return max(1, min(num_rows, _GPU_CHUNK_BYTES // (4 * max(num_centroids, 1))))


_REDUCED_EPS = {"tf32": 2.0**-10, "bf16": 2.0**-7}  # unit roundoff of the reduced formats' inputs


def reduced_matmul(device: torch.device) -> str | None:
    """The reduced precision a float32 matmul on ``device`` may use under torch's current settings: ``"tf32"``,
    ``"bf16"``, or ``None`` for full float32.

    Reads the per-backend ``fp32_precision`` settings of torch 2.9 and later first (``torch.backends.cuda.matmul``
    on CUDA, ``torch.backends.mkldnn.matmul`` on the CPU, then ``torch.backends``), and the legacy
    ``allow_tf32`` / ``float32_matmul_precision`` only where those say nothing: once a user sets the new API,
    reading the legacy flags raises, so they are read last and guarded.

    Example:
        >>> reduced_matmul(torch.device("cpu")) is None  # torch's default
        True
    """
    backend = torch.backends.cuda.matmul if device.type == "cuda" else getattr(
        getattr(torch.backends, "mkldnn", None), "matmul", None
    )
    for holder in (backend, torch.backends):
        value = getattr(holder, "fp32_precision", None) if holder is not None else None
        if value in _REDUCED_EPS:
            return value
        if value == "ieee":
            return None
    try:
        if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
            return "tf32"
        setting = torch.get_float32_matmul_precision()
    except RuntimeError:  # legacy and new APIs mixed: the new one ("none") leaves torch's default, full float32
        return None
    return {"highest": None, "high": "tf32"}.get(setting, "bf16")


def matmul_eps(dtype: torch.dtype, device: torch.device) -> float:
    """Relative rounding of one product in a GEMM of ``dtype`` on ``device`` under the current settings."""
    if dtype == torch.float64:
        return float(torch.finfo(torch.float64).eps)
    reduced = reduced_matmul(device)
    return _REDUCED_EPS[reduced] if reduced else float(torch.finfo(torch.float32).eps)


def matmul_precision(dtype: torch.dtype, device: torch.device) -> str:
    """How the assignment GEMM computes for ``dtype`` on ``device`` under the current torch settings.

    Example:
        >>> matmul_precision(torch.float64, torch.device("cpu"))
        'float64'
    """
    if dtype == torch.float64:
        return "float64"
    reduced = reduced_matmul(device)
    if reduced is not None:
        return f"float32 inputs, {reduced.upper()} matmul allowed by torch's settings (near-ties may move)"
    return "float32"


def squared_norms(x: Tensor) -> Tensor:
    """Row squared norms ``(N,)`` of ``x (N, D)`` in ``x``'s dtype.

    Example:
        >>> squared_norms(torch.tensor([[3.0, 4.0]]))
        tensor([25.])
    """
    return torch.linalg.vector_norm(x, dim=1).square()


def _nearest_blocks(x: Tensor, centroids: Tensor, centroid_sq_norms: Tensor | None, chunk_rows: int | None):
    """Yield ``(start, block, best_score, label)`` per row chunk, ``best_score = min_k ||c_k||^2 - 2 x.c_k``."""
    n, k = x.shape[0], centroids.shape[0]
    c_sq = squared_norms(centroids) if centroid_sq_norms is None else centroid_sq_norms
    c_t = centroids.t().contiguous()
    rows = max(1, chunk_rows or default_chunk_rows(n, k, x.device, x.shape[1]))
    # one score buffer for all chunks; not when autograd records (out= is not differentiable, and the kernels stay
    # differentiable in x and the centroids for callers who want that)
    tracked = torch.is_grad_enabled() and (x.requires_grad or centroids.requires_grad)
    scores = None if tracked else torch.empty((min(rows, n), k), dtype=x.dtype, device=x.device)
    for start in range(0, n, rows):
        block = x[start : start + rows]
        out = None if scores is None else scores[: block.shape[0]]
        block_scores = torch.addmm(c_sq, block, c_t, beta=1, alpha=-2, out=out)
        best, arg = block_scores.min(dim=1)
        yield start, block, best, arg


def _assign_pass(x: Tensor, centroids: Tensor, centroid_sq_norms: Tensor | None, x_sq_norms: Tensor | None,
                 chunk_rows: int | None, sums: Tensor | None = None, method: str = "index_add"
                 ) -> tuple[Tensor, Tensor]:
    """Labels and squared distances of every row; with ``sums``, each chunk also summed into it while in cache."""
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    best_scores = torch.empty(n, dtype=x.dtype, device=x.device)
    for start, block, best, arg in _nearest_blocks(x, centroids, centroid_sq_norms, chunk_rows):
        labels[start : start + block.shape[0]] = arg
        best_scores[start : start + block.shape[0]] = best
        if sums is not None:
            _accumulate(sums, block, arg, method)
    x_sq = squared_norms(x) if x_sq_norms is None else x_sq_norms
    return labels, best_scores.add_(x_sq).clamp_min_(0)


def nearest_centroid(
    x: Tensor,
    centroids: Tensor,
    *,
    centroid_sq_norms: Tensor | None = None,
    x_sq_norms: Tensor | None = None,
    chunk_rows: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Index of and squared distance to the nearest centroid for every row of ``x``.

    Args:
        x: ``(N, D)`` floating samples.
        centroids: ``(K, D)`` centroids, same dtype and device as ``x``.
        centroid_sq_norms: optional precomputed ``(K,)`` squared norms of ``centroids``.
        x_sq_norms: optional precomputed ``(N,)`` squared norms of ``x`` (k-means computes them once per fit).
        chunk_rows: rows per GEMM block (default: :func:`default_chunk_rows`).

    Returns:
        ``labels (N,)`` int64 and ``sq_distances (N,)`` in ``x``'s dtype, ``>= 0``. Ties go to the lowest index.

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [2.0, 2.0], [9.0, 9.0]])
        >>> c = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
        >>> labels, d2 = nearest_centroid(x, c)
        >>> labels.tolist(), [round(v, 3) for v in d2.tolist()]  # the expansion is exact only up to rounding
        ([0, 0, 1], [0.0, 8.0, 2.0])
    """
    return _assign_pass(x, centroids, centroid_sq_norms, x_sq_norms, chunk_rows)


def nearest_labels(x: Tensor, centroids: Tensor, *, chunk_rows: int | None = None) -> Tensor:
    """Index ``(N,)`` int64 of the nearest centroid of every row: :func:`nearest_centroid` without the distances
    (no pass for ``||x||^2``, which the argmin does not need), for scoring.

    Example:
        >>> nearest_labels(torch.tensor([[0.0], [9.0]]), torch.tensor([[1.0], [10.0]])).tolist()
        [0, 1]
    """
    labels = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for start, block, _, arg in _nearest_blocks(x, centroids, None, chunk_rows):
        labels[start : start + block.shape[0]] = arg
    return labels


def assign_and_sum(
    x: Tensor,
    centroids: Tensor,
    *,
    x_sq_norms: Tensor | None = None,
    chunk_rows: int | None = None,
    method: str | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""One Lloyd pass over the data: the nearest centroid of every row and the per-centroid sums of that
    assignment, each row chunk summed while it is still in cache.

    The result equals :func:`nearest_centroid` followed by :func:`lloyd_step` on its labels (the same sums in the
    same order, bit for bit on the CPU), but it reads ``x`` from memory once instead of twice.

    Args:
        x: ``(N, D)`` floating samples.
        centroids: ``(K, D)`` centroids, same dtype and device.
        x_sq_norms: optional precomputed ``(N,)`` squared norms of ``x``.
        chunk_rows: rows per block (default: :func:`default_chunk_rows`).
        method: the update's method, as for :func:`lloyd_step`.

    Returns:
        ``labels (N,)`` int64, ``sq_distances (N,)`` (``>= 0``), ``sums (K, D)`` with
        :math:`s_k = \sum_{i: l_i = k} x_i` and ``counts (K,)`` int64.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [9.0]])
        >>> labels, d2, sums, counts = assign_and_sum(x, torch.tensor([[0.0], [10.0]]))
        >>> labels.tolist(), sums.tolist(), counts.tolist()
        ([0, 0, 1], [[1.0], [9.0]], [2, 1])
    """
    sums = torch.zeros_like(centroids, dtype=x.dtype)
    labels, sq_dist = _assign_pass(x, centroids, None, x_sq_norms, chunk_rows, sums, _update_method(method, x))
    return labels, sq_dist, sums, bin_counts(labels, centroids.shape[0])


_UPDATE_CHUNK_ELEMENTS = 2**24  # one-hot rows x K per GEMM chunk of the CUDA update (64 MiB in float32)


def lloyd_step(
    x: Tensor, centroids: Tensor, labels: Tensor, *, method: str | None = None
) -> tuple[Tensor, Tensor]:
    """Per-centroid sums and counts of an assignment: the update half of a Lloyd iteration.

    Args:
        x: ``(N, D)`` samples.
        centroids: ``(K, D)`` current centroids (only their shape, dtype and device are used).
        labels: ``(N,)`` int64 assignment.
        method: ``"index_add"`` (sequential, deterministic on the CPU), ``"gemm"`` (one-hot ``(N, K)^T (N, D)``
            GEMMs over row chunks: deterministic on CUDA too, where ``index_add_`` sums floats with atomics in a
            varying order), or ``None``: ``"gemm"`` on CUDA, ``"index_add"`` elsewhere.

    Returns:
        ``sums (K, D)`` in ``x``'s dtype and ``counts (K,)`` int64.

    Example:
        >>> sums, counts = lloyd_step(torch.tensor([[1.0], [3.0], [5.0]]), torch.zeros(2, 1), torch.tensor([0, 0, 1]))
        >>> sums.tolist(), counts.tolist()
        ([[4.0], [5.0]], [2, 1])
    """
    sums = torch.zeros_like(centroids, dtype=x.dtype)
    _accumulate(sums, x, labels, _update_method(method, x))
    return sums, bin_counts(labels, centroids.shape[0])


def _update_method(method: str | None, x: Tensor) -> str:
    if method is None:
        return "gemm" if x.is_cuda else "index_add"
    if method not in ("index_add", "gemm"):
        raise ValueError(f"method: expected 'index_add', 'gemm' or None, got {method!r}")
    return method


def _accumulate(sums: Tensor, x: Tensor, labels: Tensor, method: str) -> None:
    """``sums[l_i] += x_i`` in place, in row order (``index_add``) or as one-hot GEMMs over row chunks."""
    if method == "index_add":
        sums.index_add_(0, labels, x)
        return
    k = sums.shape[0]
    rows = max(1, _UPDATE_CHUNK_ELEMENTS // max(k, 1))
    classes = torch.arange(k, device=x.device)
    for start in range(0, x.shape[0], rows):
        one_hot = (labels[start : start + rows, None] == classes).to(x.dtype)
        sums.addmm_(one_hot.t(), x[start : start + rows])


def bin_counts(labels: Tensor, k: int) -> Tensor:
    """``(k,)`` int64 number of each label in ``0..k-1``: a scatter of ones, which needs no host read (``bincount``
    reads the labels' min and max back to the host on CUDA).

    Example:
        >>> bin_counts(torch.tensor([0, 2, 2]), 4).tolist()
        [1, 0, 2, 0]
    """
    return torch.zeros(k, dtype=torch.int64, device=labels.device).scatter_add_(0, labels, torch.ones_like(labels))
