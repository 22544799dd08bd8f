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

_CPU_CHUNK_ROWS = 2048  # cache-friendly on CPUs: measured 1024-4096 rows give ~160 GFLOP/s vs ~95 unchunked
_GPU_CHUNK_BYTES = 256 * 2**20  # bound on the (rows x K) score block on accelerators


def default_chunk_rows(num_rows: int, num_centroids: int, device: torch.device) -> int:
    """Rows per chunk: small blocks that stay in cache on CPU, large ones bounded in bytes on GPU.

    Example:
        >>> default_chunk_rows(10**6, 100, torch.device("cpu"))
        2048
    """
    if device.type == "cpu":
        return min(num_rows, _CPU_CHUNK_ROWS)
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


def nearest_centroid(
    x: Tensor,
    centroids: Tensor,
    *,
    centroid_sq_norms: Tensor | None = None,
    chunk_rows: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Index of and squared distance to the nearest centroid for every row of ``x``.

    Args:
        x: ``(N, D)`` floating samples.
        centroids: ``(K, D)`` centroids, same dtype and device as ``x``.
        centroid_sq_norms: optional precomputed ``(K,)`` squared norms of ``centroids``.
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
    n = x.shape[0]
    k = centroids.shape[0]
    c_sq = squared_norms(centroids) if centroid_sq_norms is None else centroid_sq_norms
    c_t = centroids.t().contiguous()
    rows = max(1, chunk_rows or default_chunk_rows(n, k, x.device))
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    sq_dist = torch.empty(n, dtype=x.dtype, device=x.device)
    for start in range(0, n, rows):
        block = x[start : start + rows]
        scores = torch.addmm(c_sq, block, c_t, beta=1, alpha=-2)  # ||c||^2 - 2 x.c
        best, arg = scores.min(dim=1)
        labels[start : start + rows] = arg
        sq_dist[start : start + rows] = (best + squared_norms(block)).clamp_min_(0)
    return labels, sq_dist


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
    k = centroids.shape[0]
    method = method or ("gemm" if x.is_cuda else "index_add")
    if method == "index_add":
        sums = torch.zeros_like(centroids, dtype=x.dtype).index_add_(0, labels, x)
    elif method == "gemm":
        sums = torch.zeros_like(centroids, dtype=x.dtype)
        rows = max(1, _UPDATE_CHUNK_ELEMENTS // max(k, 1))
        classes = torch.arange(k, device=x.device)
        for start in range(0, x.shape[0], rows):
            one_hot = (labels[start : start + rows, None] == classes).to(x.dtype)
            sums.addmm_(one_hot.t(), x[start : start + rows])
    else:
        raise ValueError(f"method: expected 'index_add', 'gemm' or None, got {method!r}")
    return sums, bin_counts(labels, k)


def bin_counts(labels: Tensor, k: int) -> Tensor:
    """``(k,)`` int64 number of each label in ``0..k-1``: a scatter of ones, which needs no host read (``bincount``
    reads the labels' min and max back to the host on CUDA).

    Example:
        >>> bin_counts(torch.tensor([0, 2, 2]), 4).tolist()
        [1, 0, 2, 0]
    """
    return torch.zeros(k, dtype=torch.int64, device=labels.device).scatter_add_(0, labels, torch.ones_like(labels))
