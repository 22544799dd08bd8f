"""Packaging: import hygiene, the kernels package, the demo through the console script."""

from __future__ import annotations

import subprocess
import sys

OPTIONAL = ("faiss", "cuml", "cupy", "sklearn", "scipy", "matplotlib", "torchmetrics", "triton", "numba", "PIL")


def test_import_fastndb_imports_no_optional_backend():
    code = (
        "import sys, torch, numpy; before = set(sys.modules); import fastndb, fastndb.kernels; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        f"print(sorted(new & set({OPTIONAL!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_kernels_are_installed_as_fastndb_kernels():
    import fastndb.kernels

    assert callable(fastndb.kernels.nearest_centroid)


def test_demo_catches_dropped_digits():
    out = subprocess.run([sys.executable, "-m", "fastndb", "demo", "--resampling"], capture_output=True, text=True, check=True,
                         timeout=300)
    rows = {line[:26].strip(): line.split() for line in out.stdout.splitlines() if line.startswith(("healthy", "drops"))}
    healthy = int(rows["healthy (all digits)"][3])
    half = int(rows["drops digits 0,1,2,3,4"][3])
    assert healthy <= 3 and half >= 5, out.stdout


def test_cli_bad_option_exits_nonzero():
    out = subprocess.run([sys.executable, "-m", "fastndb", "demo", "--num-bins", "1"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "argument --num-bins: expected an integer >= 2, got 1" in out.stderr
