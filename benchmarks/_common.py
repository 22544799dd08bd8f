"""Helpers shared by the benchmark scripts: machine description and timing, the same as ``fastndb bench`` uses
(defined once, in the package: :mod:`fastndb.bench`)."""

from __future__ import annotations

from fastndb.bench import copy_bandwidth, cpu_name, gemm_rate, sync, timed

__all__ = ["copy_bandwidth", "cpu_name", "gemm_rate", "sync", "timed"]
