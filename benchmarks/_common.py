"""Helpers shared by the benchmark scripts: machine description and timing."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def sync(device: str) -> None:
    """Wait for queued GPU work so that wall times cover it."""
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str = "cpu", repeats: int = 3):
    """Median wall time of ``repeats`` calls after one warm-up call, and the last result."""
    result = fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def gemm_rate(device: str) -> float:
    """Measured float32 GEMM rate, FLOP/s (square matmul, the best case of this machine)."""
    n = 4096 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device)
    seconds, _ = timed(lambda: a @ a, device, repeats=5)
    return 2 * n**3 / seconds


def copy_bandwidth(device: str) -> float:
    """Measured device memory bandwidth, bytes/s (read + write of a large copy)."""
    x = torch.empty(2**28 if device == "cuda" else 2**26, device=device)
    y = torch.empty_like(x)
    seconds, _ = timed(lambda: y.copy_(x), device, repeats=5)
    return 2 * x.numel() * 4 / seconds
