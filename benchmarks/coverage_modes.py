"""Which score moves when modes go missing: NDB, JS, precision, recall, density, coverage, birthday duplicates.

    python benchmarks/coverage_modes.py [--seeds 0 1 2]

Real: a 10-mode Gaussian mixture (64-d, unit-variance modes, means spread 4), 10,000 samples. Fake, 5,000 samples
each: the same mixture; with 1, 3 or 5 of the 10 modes dropped (the others equally likely); with one mode holding
half the samples (the other nine share the rest); and a generator that replays 300 real samples (memorised).
NDB with K = 50 bins; the birthday test on 2,000 samples with the 1% real nearest-neighbour threshold, against
2,000 real samples as its null level. Writes benchmarks/results/coverage_modes.{txt,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import numpy as np
import torch
from _common import cpu_name

import fastndb
from fastndb.demo.synthetic import gaussian_mixture

OUT = Path(__file__).resolve().parent / "results"
DIM, MODES, SPREAD, MEANS_SEED = 64, 10, 4.0, 1234


def weighted(n: int, weights: np.ndarray, seed: int) -> np.ndarray:
    """The mixture's modes (as :func:`gaussian_mixture` draws them) with other mode weights."""
    means = np.random.default_rng(MEANS_SEED).normal(0.0, SPREAD, (MODES, DIM))
    rng = np.random.default_rng(seed)
    which = rng.choice(MODES, size=n, p=weights / weights.sum())
    return (means[which] + rng.normal(0.0, 1.0, (n, DIM))).astype(np.float32)


def generators(seed: int) -> dict[str, np.ndarray]:
    draw = lambda keep: gaussian_mixture(5000, DIM, num_modes=MODES, spread=SPREAD, seed=seed + 1,  # noqa: E731
                                         keep_modes=keep)
    real_pool = gaussian_mixture(10_000, DIM, num_modes=MODES, spread=SPREAD, seed=seed)
    memorised = real_pool[np.random.default_rng(seed + 7).integers(0, 300, 5000)]
    return {"same distribution": draw(None), "1 mode dropped": draw(9), "3 modes dropped": draw(7),
            "5 modes dropped": draw(5),
            "one mode over-weighted (50%)": weighted(5000, np.array([9.0] + [1.0] * 9), seed + 1),
            "replays 300 real samples": memorised}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:
        real = torch.from_numpy(gaussian_mixture(10_000, DIM, num_modes=MODES, spread=SPREAD, seed=seed))
        threshold = fastndb.duplicate_threshold(real, num_samples=2000, seed=seed)
        null_duplicates = fastndb.birthday(real[-2000:], threshold=threshold).num_duplicates
        for name, fake_np in generators(seed).items():
            fake = torch.from_numpy(fake_np)
            ndb = fastndb.score(real, fake, num_bins=50, seed=seed)
            coverage = fastndb.prdc(real, fake, nearest_k=5)
            pairs = fastndb.birthday(fake[:2000], threshold=threshold)
            results.setdefault(name, []).append({
                "seed": seed, "ndb_ratio": ndb.ndb_ratio, "js": ndb.js, "null_js": ndb.expected_null_js,
                **coverage.scores(), "null_coverage": coverage.expected_null_coverage,
                "duplicates": pairs.num_duplicates, "null_duplicates": null_duplicates,
            })
        print(f"seed {seed} done", flush=True)
    keys = ("ndb_ratio", "js", "precision", "recall", "density", "coverage", "duplicates")

    def cell(rows: list[dict], key: str) -> str:
        values = [r[key] for r in rows]
        mean = statistics.mean(values)
        if key == "duplicates":
            return f"{mean:.0f} ({min(values)}-{max(values)})"
        return f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})"

    machine = f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__}"
    first = next(iter(results.values()))[0]
    lines = [f"10-mode mixture, {DIM}-d; real 10,000, fake 5,000; NDB K = 50; k = 5; birthday on 2,000 samples; "
             f"mean (min-max) over seeds {args.seeds}; {machine}",
             f"chance levels: NDB/K 0.05, JS {first['null_js']:.4f}, coverage {first['null_coverage']:.3f}, "
             f"density 1, birthday duplicates of 2,000 real samples "
             f"{[r['null_duplicates'] for r in results['1 mode dropped']]}",
             "", "| fake | " + " | ".join(("NDB/K", "JS", "precision", "recall", "density", "coverage",
                                           "birthday duplicates")) + " |",
             "| --- |" + " --- |" * len(keys)]
    for name, rows in results.items():
        lines.append(f"| {name} | " + " | ".join(cell(rows, key) for key in keys) + " |")
    text = "\n".join(lines)
    (OUT / "coverage_modes.txt").write_text(text + "\n")
    (OUT / "coverage_modes.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
