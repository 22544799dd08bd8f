"""NDB in pixel space next to the shipped digits network's feature space, on the demo's DCGAN settings. A script.

    python benchmarks/feature_space.py [--seeds 0 1] [--epochs 8]

Settings (the demo's defaults otherwise: 150 batches of 64 per epoch, width 32, K = 20 in both spaces):
healthy (all digits), latent size 1 (collapse-prone), and trained without digits 3 and 8 (two modes missing by
construction; the monitor compares with all ten digits). Each epoch scores the same 2000 generated samples in both
spaces. Also, with no training: 2000 held-out real digits, and held-out digits without 3 and 8 (what the scores
give a perfect generator and one that drops exactly two modes). Writes benchmarks/results/feature_space.{json,txt}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from _common import cpu_name

import fastndb
from fastndb._core.statistics import expected_null_js
from fastndb.demo.runner import DIGITS_DEFAULTS, load_digits_tensor, run_dcgan_demo
from fastndb.demo.training import GANConfig

OUT = Path(__file__).resolve().parent / "results"
SETTINGS = {
    "healthy": {"latent_size": 100, "drop": ()},
    "latent size 1": {"latent_size": 1, "drop": ()},
    "without digits 3, 8": {"latent_size": 100, "drop": (3, 8)},
}


def resampled_rows(seed: int) -> list[dict]:
    """No training: real digits split in two; NDB of held-out digits (all, or without 3 and 8) in both spaces."""
    x, y = load_digits_tensor()
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    images = (x.reshape(-1, 1, 8, 8) * 2 - 1)[order]
    labels = y[order]
    real, pool, pool_labels = images[:1000], images[1000:], labels[1000:]
    rows = []
    for name, keep in (("held-out real digits", torch.ones_like(pool_labels, dtype=torch.bool)),
                       ("held-out digits without 3, 8", ~torch.isin(pool_labels, torch.tensor([3, 8])))):
        fake = pool[keep]
        row = {"setting": name, "seed": seed, "epoch": None, "num_fake": int(fake.shape[0])}
        for space, feature in (("pixels", None), ("digits", "digits")):
            result = fastndb.score(real, fake, num_bins=20, seed=seed, value_range=(-1, 1), feature=feature,
                                   cache=False)
            row[space] = {"ndb": result.ndb, "ndb_ratio": result.ndb_ratio, "js": result.js,
                          "null_js": expected_null_js(20, result.num_real, result.num_fake)}
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=DIGITS_DEFAULTS["epochs"])
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rows: list[dict] = []
    for seed in args.seeds:
        rows.extend(resampled_rows(seed))
        for name, setting in SETTINGS.items():
            config = GANConfig(epochs=args.epochs, steps_per_epoch=DIGITS_DEFAULTS["steps_per_epoch"],
                               width=DIGITS_DEFAULTS["width"], latent_size=setting["latent_size"], seed=seed)
            start = time.perf_counter()
            run = run_dcgan_demo(config=config, out_dir=None, progress=False, drop_digits=setting["drop"],
                                 second_feature="digits")
            seconds = time.perf_counter() - start
            monitor = run.monitor
            for record in run.records:
                rows.append({
                    "setting": name, "seed": seed, "epoch": record.epoch, "num_fake": monitor.num_samples,
                    "pixels": {"ndb": record.ndb, "ndb_ratio": record.ndb_ratio, "js": record.js,
                               "null_js": monitor.null_js},
                    "digits": {"ndb_ratio": record.feature_ndb_ratio, "js": record.feature_js,
                               "null_js": monitor.second_null_js},
                    "duplicates": record.num_duplicates, "seconds": seconds,
                })
            print(f"{name}, seed {seed}: {seconds:.0f} s", flush=True)
    threads = torch.get_num_threads()
    machine = f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__} ({threads} threads)"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "feature_space.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    lines = [f"NDB (K = 20, alpha = 0.05) in pixels and in the digits network's 64-d features; {machine}",
             "chance level: NDB/K about 0.05 in both spaces; JS chance level per row", "",
             f"{'setting':<30} {'seed':>4} {'epoch':>5} | {'pixels NDB/K':>12} {'JS':>7} {'chance':>7} | "
             f"{'digits NDB/K':>12} {'JS':>7} {'chance':>7}"]
    for row in rows:
        if row["epoch"] not in (None, args.epochs, 1, 3):
            continue
        p, d = row["pixels"], row["digits"]
        epoch = "-" if row["epoch"] is None else str(row["epoch"])
        lines.append(f"{row['setting']:<30} {row['seed']:>4} {epoch:>5} | {p['ndb_ratio']:>12.2f} {p['js']:>7.4f} "
                     f"{p['null_js']:>7.4f} | {d['ndb_ratio']:>12.2f} {d['js']:>7.4f} {d['null_js']:>7.4f}")
    text = "\n".join(lines)
    (OUT / "feature_space.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
