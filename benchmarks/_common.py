"""Helpers shared by the benchmark scripts: machine description and timing, the same as ``fastndb bench`` uses
(defined once, in the package: :mod:`fastndb.bench`)."""

from __future__ import annotations

import torch

from fastndb.bench import copy_bandwidth, cpu_name, gemm_rate, sync, timed

__all__ = ["copy_bandwidth", "cpu_name", "digits_like", "gemm_rate", "peak_memory_during", "sync", "timed"]


def digits_like(n: int, *, size: int = 28, noise: float = 0.1, seed: int = 0):
    """``(n, size * size)`` float32 numpy array: MNIST-like images made from the scikit-learn digits (8 x 8, upsampled
    bilinearly to ``size x size``), with Gaussian pixel noise and clipping to [0, 1]. MNIST itself cannot be
    downloaded here; this keeps its size, its value range and its few-modes-plus-noise structure."""
    import numpy as np
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    generator = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(load_digits().images.astype(np.float32) / 16)
    picks = torch.randint(len(images), (n,), generator=generator)
    x = F.interpolate(images[picks][:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    x = x + noise * torch.randn(x.shape, generator=generator)
    return x.reshape(n, -1).clamp_(0, 1).numpy()


def _heap_in_use():
    """Bytes the C heap has handed out and not taken back (glibc ``mallinfo2``: arena bytes in use plus mmapped
    blocks), or ``None`` where it is not available. Unlike the resident set, it falls when memory is freed, even
    when the allocator keeps the pages."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = MallInfo2

    def read() -> int:
        info = mallinfo2()
        return int(info.uordblks + info.hblkhd)

    return read


def peak_memory_during(fn):
    """``(result, peak extra bytes)`` of ``fn()``: the C heap in use (glibc's ``mallinfo2``; elsewhere the resident
    set) sampled every 2 ms in a thread, minus its value before the call. Buffers that live under 2 ms can be
    missed, so the figure is a lower bound of the peak."""
    import threading

    read = _heap_in_use()
    if read is None:
        import psutil

        process = psutil.Process()
        read = lambda: process.memory_info().rss  # noqa: E731
    base = read()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], read())
            done.wait(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], read())
    return result, peak[0] - base
