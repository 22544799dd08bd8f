"""``fastndb bench`` from an installed package: a fresh virtual environment, another directory, the quick suite."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_from_an_installed_package_in_another_directory(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)  # torch and numpy from this Python
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                              str(ROOT)], capture_output=True, text=True, timeout=600)
    if install.returncode != 0:
        pytest.fail(f"pip install . failed:\n{install.stderr[-3000:]}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([str(env_dir / "bin" / "fastndb"), "bench", "--quick", "--json"], capture_output=True,
                          text=True, cwd=elsewhere, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout)
    assert [row["figure"].split(" (")[0] for row in measured["rows"]] == [
        "k-means fit", "NDB.score", "birthday: closest 20 pairs", "precision/recall/density/coverage"]
    assert all(row["seconds"] > 0 and row["of_floor"] > 0 for row in measured["rows"])
    assert measured["gemm_flops"] > 1e8
    located = subprocess.run([str(python), "-c", "import fastndb; print(fastndb.__file__)"], capture_output=True,
                             text=True, cwd=elsewhere, timeout=120).stdout
    assert str(ROOT) not in located  # the installed copy ran, not the checkout
    full = subprocess.run([str(env_dir / "bin" / "fastndb"), "bench", "--full"], capture_output=True, text=True,
                          cwd=elsewhere, timeout=120)
    assert full.returncode == 1 and "source checkout" in full.stderr
    assert sys.executable  # the suite's own interpreter made the environment


def test_the_gpu_table_prints_the_roofline_model_next_to_measured():
    from fastndb import bench

    row = {"figure": "x", "size": "s", "seconds": 0.01, "floor_seconds": 0.001, "of_floor": 0.1,
           "h100_seconds": bench.roofline_seconds(2 * 50_000 * 784 * 100, 50_000 * 784 * 4)}
    measured = {"fastndb": "0", "machine": "m", "device": "cuda", "torch": "t", "gemm_flops": 1e12, "bandwidth": 1e12,
                "rows": [row]}
    table = bench.format_table(measured)
    assert "H100 model (s)" in table and f"{0.01 / row['h100_seconds']:.1f}" in table
    assert "H100 model" not in bench.format_table({**measured, "device": "cpu"})
    # the assignment of the CPU benchmark: compute-bound in fp32 (117 us), bandwidth-bound with TF32 (47 us)
    assert abs(row["h100_seconds"] - 117.0e-6) < 1e-6
    assert abs(bench.roofline_seconds(2 * 50_000 * 784 * 100, 50_000 * 784 * 4, tf32=True) - 46.8e-6) < 1e-6
