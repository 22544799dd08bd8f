"""Fixed results on fixed data: a refactor that changes any bin, count or p-value fails ``test_golden.py``.

``python tests/golden.py`` rewrites ``tests/data/golden.json`` (only when a change of results is intended).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import fastndb
from fastndb.demo.synthetic import gaussian_mixture

PATH = Path(__file__).parent / "data" / "golden.json"
CASES = {
    "holdout": {"num_bins": 20},
    "original": {"num_bins": 20, "mode": "original"},
    "whitened_subset": {"num_bins": 12, "whitening": True, "max_dims": 10, "seed": 3},
    "holm": {"num_bins": 20, "correction": "holm"},
    "tanh_range": {"num_bins": 10, "value_range": (-1.0, 1.0)},
}


def compute() -> dict:
    real = torch.from_numpy(gaussian_mixture(3000, 32, seed=0))
    fake = torch.from_numpy(gaussian_mixture(1500, 32, seed=1, keep_modes=7))
    out = {}
    for name, options in CASES.items():
        if "value_range" in options:
            real_in, fake_in = torch.tanh(real / 8), torch.tanh(fake / 8)
        else:
            real_in, fake_in = real, fake
        ndb = fastndb.NDB(**options).fit(real_in)
        result = ndb.score(fake_in)
        centroids = ndb.centroids.double()
        out[name] = {
            "real_counts": result.real_counts.tolist(),
            "fake_counts": result.fake_counts.tolist(),
            "p_values": [float.hex(v) for v in result.p_values.tolist()],
            "ndb": result.ndb,
            "p_value": float.hex(result.p_value),
            "centroid_sum": float.hex(float(centroids.sum())),
            "centroid_0": [float.hex(v) for v in centroids[0].tolist()],
        }
    pairs = fastndb.birthday(real[:1500], num_pairs=5, threshold=4.0)
    out["birthday"] = {"pairs": pairs.pairs.tolist(), "distances": [float.hex(v) for v in pairs.distances.tolist()],
                       "num_duplicates": pairs.num_duplicates}
    km = fastndb.kmeans(real, 10, seed=1)
    out["kmeans"] = {"inertia": float.hex(km.inertia), "counts": km.counts.tolist(), "n_iter": km.n_iter}
    return out


if __name__ == "__main__":
    PATH.parent.mkdir(exist_ok=True)
    PATH.write_text(json.dumps(compute(), indent=1) + "\n")
    sys.stdout.write(f"wrote {PATH}\n")
