"""The README's figures, from scikit-learn's bundled digits (needs scikit-learn and matplotlib).

    python benchmarks/figures.py     # writes docs/bins.png, docs/birthday_pairs.png and docs/elbow.png

A "generator" that resamples training digits 0-4 only, with small pixel noise, against the real digits: the bin
plot shows the digits it never produces as under-filled bins; the birthday search on 300 of its samples finds
near-copies, shown side by side.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import fastndb  # noqa: E402
import fastndb._core.elbow  # noqa: E402
import fastndb.plot  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    digits = load_digits()
    images = torch.from_numpy(digits.images).float()[:, None] / 16.0  # (1797, 1, 8, 8) in [0, 1]
    labels = torch.from_numpy(digits.target)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(images), generator=g)
    real, train = images[order[:1000]], images[order[1000:]]
    train_labels = labels[order[1000:]]
    kept = train[train_labels < 5]  # the generator only knows digits 0-4, and only the training ones
    fake = kept[torch.randint(len(kept), (800,), generator=g)]
    fake = (fake + 0.02 * torch.randn(fake.shape, generator=g)).clamp(0, 1)

    result = fastndb.score(real, fake, num_bins=20, seed=0)
    fig, _ = fastndb.plot.bin_proportions(result)
    fig.savefig(OUT / "bins.png", dpi=110)

    threshold = fastndb.duplicate_threshold(real, quantile=0.01, num_samples=300)
    pairs = fastndb.birthday(fake[:300], num_pairs=12, threshold=threshold)
    fig, _ = fastndb.plot.birthday_pairs(fake[:300], pairs)
    fig.savefig(OUT / "birthday_pairs.png", dpi=110)
    curve = fastndb._core.elbow.elbow(images, [5, 10, 20, 40, 80, 160], seed=0)
    fig, _ = fastndb.plot.elbow(curve)
    fig.savefig(OUT / "elbow.png", dpi=110)
    print(result)
    print(pairs)
    print(curve)
    print(f"the generator's support: {len(kept)} training digits")


if __name__ == "__main__":
    main()
