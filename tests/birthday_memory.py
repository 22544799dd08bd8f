"""Peak resident memory of one birthday search, measured in a fresh process (used by tests and benchmarks).

Usage: python birthday_memory.py S D [healthy|collapsed] [THRESHOLD]  ->  one JSON line with the peak increase over
the data alone. ``collapsed``: every sample is the same vector (the worst case for the duplicate count).
"""

from __future__ import annotations

import json
import resource
import sys
import time

import torch

import fastndb


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        lines = status.read().splitlines()
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> int:
    """Reset the resident-set high-water mark to the current RSS (Linux clear_refs 5); returns current bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set since the last reset (VmHWM)."""
    try:
        return _status_kib("VmHWM") * 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    s, d = int(sys.argv[1]), int(sys.argv[2])
    kind = sys.argv[3] if len(sys.argv) > 3 else "healthy"
    threshold = float(sys.argv[4]) if len(sys.argv) > 4 else None
    generator = torch.Generator().manual_seed(0)
    if kind == "collapsed":
        x = torch.randn(1, d, generator=generator).expand(s, d).contiguous()
    else:
        x = torch.randn(s, d, generator=generator)
    fastndb.birthday(x[:100], num_pairs=5, threshold=threshold)  # load everything lazy before the baseline
    before = reset_peak()
    start = time.perf_counter()
    result = fastndb.birthday(x, num_pairs=20, threshold=threshold)
    seconds = time.perf_counter() - start
    increase = peak_rss_bytes() - before
    print(json.dumps({"s": s, "d": d, "peak_increase_bytes": increase, "s_squared_float32_bytes": s * s * 4,
                      "seconds": seconds, "closest": float(result.distances[0]), "kind": kind, "threshold": threshold,
                      "num_duplicates": result.num_duplicates}))


if __name__ == "__main__":
    main()
