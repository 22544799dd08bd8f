"""GPU readiness checked on the CPU: settings that break CUDA-only paths, determinism, host waits, device of state."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import fastndb
from tests.conftest import mixture


def _run(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("setting", [
    "torch.backends.cuda.matmul.fp32_precision = 'tf32'",
    "torch.backends.mkldnn.matmul.fp32_precision = 'bf16'",
    "torch.set_float32_matmul_precision('medium')",
])
def test_matmul_precision_settings_never_break_scoring(setting):
    out = _run(f"""
        import json, torch, fastndb
        {setting}
        g = torch.Generator().manual_seed(0)
        real, fake = torch.randn(2000, 8, generator=g), torch.randn(1000, 8, generator=g)
        x = torch.randn(300, 8, generator=g); x[200] = x[3]
        result = fastndb.score(real, fake, num_bins=5)
        pairs = fastndb.birthday(x, threshold=0.0)
        print(json.dumps({{"precision": result.precision, "dups": pairs.num_duplicates, "ndb": result.ndb}}))
    """)
    assert out["dups"] == 1
    if "mkldnn" in setting or "medium" in setting:
        assert "BF16" in out["precision"]  # said in the result, and the birthday band widened to match
    else:
        assert out["precision"] == "float32"  # a CUDA setting does not change CPU arithmetic


def test_birthday_band_follows_the_matmul_precision():
    from fastndb._core.birthday import _rounding_band

    x = torch.randn(100, 16)
    full = _rounding_band(x)
    out = _run("""
        import json, torch
        torch.backends.mkldnn.matmul.fp32_precision = 'bf16'
        from fastndb._core.birthday import _rounding_band
        print(json.dumps({"band": _rounding_band(torch.ones(1, 16) * 0 + torch.randn(100, 16, generator=torch.Generator().manual_seed(0)))}))
    """)
    assert out["band"] > 1000 * full / 10  # 2^-7 against 2^-23 relative: about 65,000 times wider
