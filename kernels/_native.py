"""The compiled CPU tile epilogues (``_tiles.c``) behind ctypes.

The library is built by ``setup.py`` when the package is installed (an optional extension: without a C compiler
the install succeeds and :data:`available` is ``False``); every caller keeps its pure-torch path for that case,
for other devices and dtypes, and for ``FASTNDB_NATIVE=0`` in the environment. A tile's rows (or its lists) are
split into one contiguous share per torch thread (``torch.get_num_threads()``), run by the OpenMP runtime torch
has loaded (``_tiles.c`` says why that matters). Nothing is allocated per call but the small per-thread outputs.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
from pathlib import Path

import torch
from torch import Tensor

_I64, _INT, _PTR = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p


def _load() -> ctypes.CDLL | None:
    if os.environ.get("FASTNDB_NATIVE", "1") == "0":
        return None
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_tiles{suffix}"
        if path.is_file():
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                return None
            lib.fastndb_ball_rows.argtypes = [_PTR, _I64, _I64, _INT] + [_PTR] * 10
            lib.fastndb_merge_rows.argtypes = [_PTR, _I64, _I64, _INT, _PTR, _PTR, _I64, _I64]
            lib.fastndb_merge_cols.argtypes = [_PTR, _I64, _I64, _INT, _PTR, _PTR, _I64, _I64, _PTR]
            for name in ("fastndb_ball_rows", "fastndb_merge_rows", "fastndb_merge_cols"):
                getattr(lib, name).restype = None
            return lib
    return None


_LIB = _load()
available = _LIB is not None  # the compiled epilogues were built and load (and FASTNDB_NATIVE is not 0)
enabled = available  # what the kernels use; tests switch it off to compare with the torch path
_MIN_SHARE = 64  # rows (or lists) per thread at the least: below, one thread does the tile


def usable(*tensors: Tensor) -> bool:
    """Whether the compiled epilogues apply: enabled, every tensor on the CPU and contiguous, every floating one
    float32 (the index lists are int64 by construction)."""
    return enabled and all(t.device.type == "cpu" and t.is_contiguous()
                           and (t.dtype == torch.float32 or not t.is_floating_point()) for t in tensors)


def _threads(count: int) -> int:
    return max(1, min(torch.get_num_threads(), count // _MIN_SHARE))


def ball_rows(block: Tensor, a_sq: Tensor, a_low: Tensor, a_high: Tensor, b_low: Tensor, b_high: Tensor
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One pass over ``block (n, m)`` (``b_sq - 2 a.b``, float32, contiguous; made the clamped squared distance in
    place) with the ball tests of :func:`fastndb.kernels.neighbours.ball_counts`.

    Args:
        a_sq, a_low, a_high: ``(n,)`` float32 row norms and the row balls' band edges.
        b_low, b_high: ``(m,)`` float32 the column balls' band edges.

    Returns:
        ``a_any, a_unsure, b_surely, b_maybe`` (``(n,)`` bool) and the column counts of entries surely inside the
        row balls ``(m,)`` int64.
    """
    n, m = block.shape
    threads = _threads(n)
    flags = torch.zeros(4, n, dtype=torch.uint8)
    counts = torch.zeros(threads, m, dtype=torch.int32)
    _LIB.fastndb_ball_rows(block.data_ptr(), n, m, threads, *(t.data_ptr() for t in (a_sq, a_low, a_high, b_low,
                                                                                      b_high)),
                           *(flags[r].data_ptr() for r in range(4)), counts.data_ptr())
    flags = flags.bool()
    return flags[0], flags[1], flags[2], flags[3], counts.sum(0, dtype=torch.int64)


def merge_rows(block: Tensor, best: Tensor, best_idx: Tensor, c0: int) -> None:
    """Merge each row of ``block (n, m)`` into its running list ``best[i], best_idx[i]`` (``(n, w)``, ascending,
    in place): the entries below the list's last value enter, with column index ``c0 + j``."""
    n, m = block.shape
    _LIB.fastndb_merge_rows(block.data_ptr(), n, m, _threads(n), best.data_ptr(), best_idx.data_ptr(),
                            best.shape[1], c0)


def merge_cols(block: Tensor, best: Tensor, best_idx: Tensor, r0: int) -> None:
    """Merge each column of ``block (n, m)`` into its running list ``best[j], best_idx[j]`` (``(m, w)``, in place),
    with row index ``r0 + i``: the transposed tile, read in its own layout."""
    n, m = block.shape
    scratch = torch.empty(2 * m, dtype=torch.float32)
    _LIB.fastndb_merge_cols(block.data_ptr(), n, m, _threads(m), best.data_ptr(), best_idx.data_ptr(),
                            best.shape[1], r0, scratch.data_ptr())
