#!/usr/bin/env bash
# The GPU check, run first whenever a GPU is lent (docs/gpu.md): the `cuda` tests, `fastndb bench --device cuda`
# (every figure next to its H100 roofline time and this GPU's measured floor), and the mode counts' tiled kernel on
# the GPU against the CPU's answer, and the coverage metrics of 50,000 + 50,000 x 64 on both. About 5 minutes on one
# GPU, 8 at most (each step has its own time limit).
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]      # default benchmarks/results/gpu_check; commit what it wrote
set -u
out=${1:-benchmarks/results/gpu_check}
mkdir -p "$out"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} > "$out/device.txt" 2>&1
timeout 200 python3 -m pytest -q -m cuda tests -p no:cacheprovider > "$out/cuda_tests.txt" 2>&1
echo "cuda tests: exit $?" >> "$out/device.txt"
timeout 130 python3 -m fastndb bench --device cuda > "$out/bench_cuda.txt" 2>&1
echo "bench: exit $?" >> "$out/device.txt"
timeout 60 python3 - > "$out/modes_cuda.txt" 2>&1 <<'PY'
import time, torch
from fastndb._core.modes import rke_count
x = torch.rand(50_000, 64, generator=torch.Generator().manual_seed(0))
for device in ("cpu", "cuda"):
    y = x.to(device)
    rke_count(y[:2000], 0.5)  # warm-up
    torch.cuda.synchronize()
    began = time.perf_counter()
    out = rke_count(y, 0.5)
    torch.cuda.synchronize()
    flops, nbytes = 50_000**2 * 64, 3 * 4 * 50_000**2 / 2  # upper-triangle GEMM; tiles written, exp'd, summed
    print(f"{device}: RKE count {out.count:.10g} of 50,000 x 64 in {time.perf_counter() - began:.4f} s "
          f"(H100 roofline, fp32, unfused tiles: {max(flops / 67e12, nbytes / 3.35e12) * 1e3:.2f} ms)")
PY
echo "modes: exit $?" >> "$out/device.txt"
timeout 90 python3 - > "$out/coverage_cuda.txt" 2>&1 <<'PY'
import time, torch
import fastndb
g = torch.Generator().manual_seed(0)
means = 2.0 * torch.randn(10, 64, generator=g)
real = means[torch.randint(10, (50_000,), generator=g)] + torch.randn(50_000, 64, generator=g)
fake = means[torch.randint(7, (50_000,), generator=g)] + torch.randn(50_000, 64, generator=g)
answers = {}
for device in ("cpu", "cuda"):
    x, y = real.to(device), fake.to(device)
    fastndb.prdc(x[:2000], y[:2000], nearest_k=5, subsets=0)  # warm-up
    torch.cuda.synchronize()
    began = time.perf_counter()
    out = fastndb.prdc(x, y, nearest_k=5, subsets=0)
    torch.cuda.synchronize()
    answers[device] = (out.precision, out.recall, out.density, out.coverage)
    print(f"{device}: precision, recall, density, coverage of 50,000 + 50,000 x 64 in "
          f"{time.perf_counter() - began:.4f} s: {answers[device]} (H100 on paper: 14.3 ms compute roofline, "
          f"about 80 ms with the torch epilogues' tile traffic; docs/gpu.md)")
print("equal to the CPU's:", answers["cpu"] == answers["cuda"])
PY
echo "coverage: exit $?" >> "$out/device.txt"
cat "$out"/*.txt
