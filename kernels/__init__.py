"""Compute kernels of fastndb, installed as ``fastndb.kernels``.

Each kernel has a pure-PyTorch implementation here that runs on any device and is the reference the
dedicated GPU kernels are tested against. All of them work on row chunks so that the ``N x K`` distance
matrix is never held whole.
"""

from fastndb.kernels.assign import (
    assign_and_sum,
    bin_counts,
    default_chunk_rows,
    lloyd_step,
    matmul_eps,
    matmul_precision,
    nearest_centroid,
    nearest_labels,
    reduced_matmul,
    squared_norms,
)

__all__ = ["assign_and_sum", "bin_counts", "default_chunk_rows", "lloyd_step", "matmul_eps", "matmul_precision",
           "nearest_centroid", "nearest_labels", "reduced_matmul", "squared_norms"]
