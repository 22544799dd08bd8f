"""Train the shipped digits network (fastndb/_core/digits_net.py) deterministically and record how it did.

    python benchmarks/train_digits_net.py            # writes fastndb/_core/weights/digits_cnn.pt and
                                                     # benchmarks/results/digits_net.json
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from fastndb._core.digits_net import WEIGHTS, train_digits_net


def main() -> None:
    torch.set_num_threads(2)
    start = time.perf_counter()
    net, accuracy = train_digits_net(epochs=40, seed=0)
    seconds = time.perf_counter() - start
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), WEIGHTS)
    record = {"held_out_accuracy": accuracy, "training_seconds": round(seconds, 1), "epochs": 40, "seed": 0,
              "weights_bytes": WEIGHTS.stat().st_size, "parameters": sum(p.numel() for p in net.parameters()),
              "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 2 threads",
              "split": "scikit-learn digits, 1437 train / 360 held out (seeded permutation)"}
    out = Path(__file__).parent / "results" / "digits_net.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    sys.stdout.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
