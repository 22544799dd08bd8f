"""The collapse monitor in the digits network's feature space, on the demo's DCGAN with and without two classes.

    python benchmarks/monitor_features.py            # the healthy demo run
    python benchmarks/monitor_features.py 3 8        # trained without the 3s and 8s, compared with all ten classes

Prints K, the epoch the monitor flagged, and per epoch NDB/K, the under-filled bins beyond alpha / K, the emptied
bins, coverage and its shortfall in standard errors, and the signs shown (docs/monitor.md). One thread; the
demo's settings (8 epochs of 150 batches, width 32, seed 0); a few minutes on the CPU.
"""

from __future__ import annotations

import sys
import warnings

import torch

from fastndb.demo.runner import load_training_images
from fastndb.demo.training import CollapseMonitor, GANConfig, train_gan


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    drop = tuple(int(d) for d in sys.argv[1:])
    real = load_training_images(None, image_size=32)
    train = real if not drop else load_training_images(None, image_size=32, drop_digits=drop)
    monitor = CollapseMonitor(real, feature="digits", seed=0)
    result = train_gan(train, GANConfig(epochs=8, steps_per_epoch=150, width=32, seed=0), monitor=monitor,
                       out_dir=None, progress=False)
    print(f"K {monitor.ndb.num_bins}, dropped digits {drop or 'none'}, flagged at epoch {result.collapsed_at}")
    print("epoch NDB/K under-filled emptied coverage shortfall signs")
    for r in result.records:
        print(f"{r.epoch:5d} {r.ndb_ratio:5.2f} {r.missing_bins:12d} {r.emptied_bins:7d} {r.coverage:8.3f} "
              f"{r.coverage_shortfall:9.1f} {r.signal}")


if __name__ == "__main__":
    main()
