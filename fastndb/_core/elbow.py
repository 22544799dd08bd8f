"""Choosing K: k-means inertia against K and the knee of the curve (as the original NDB blog post does by eye)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastndb._core.checks import check_int
from fastndb._core.features import to_float
from fastndb._core.inputs import as_batches, concatenate
from fastndb._core.kmeans import kmeans
from fastndb._core.progress import progress_bar
from fastndb._core.results import ElbowResult

KNEE_RULE = ("farthest point from the chord between the first and last (K, inertia) points, both axes scaled "
             "to [0, 1] (Kneedle)")


def knee(ks: Sequence[int], inertias: Sequence[float]) -> int:
    """The K at the knee of a decreasing inertia curve (see :data:`KNEE_RULE`).

    Example:
        >>> knee([2, 4, 8, 16, 32], [100.0, 30.0, 20.0, 15.0, 12.0])
        4
    """
    if len(ks) < 3:
        raise ValueError(f"ks: expected at least 3 values of K to find a knee, got {list(ks)}")
    k = torch.tensor(ks, dtype=torch.float64)
    j = torch.tensor(inertias, dtype=torch.float64)
    x = (k - k[0]) / (k[-1] - k[0])
    span = j[0] - j[-1]
    y = (j - j[-1]) / span if span > 0 else torch.zeros_like(j)
    distance_below_chord = (1 - x) - y  # chord from (0, 1) to (1, 0): y = 1 - x
    return int(ks[int(torch.argmax(distance_below_chord))])


def elbow(
    x: object,
    ks: Sequence[int],
    *,
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-4,
    progress: bool | None = None,
) -> ElbowResult:
    """Fit k-means for every K in ``ks`` and pick the knee.

    Args:
        x: ``(N, D)`` samples (any form :func:`fastndb._core.kmeans` takes).
        ks: at least 3 distinct values of K, each ``<= N``.
        seed, max_iter, tol: as in :func:`fastndb._core.kmeans`.
        progress: a tqdm bar over the values of K.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> centres = torch.randn(6, 5, generator=g) * 10
        >>> x = centres[torch.randint(6, (1200,), generator=g)] + torch.randn(1200, 5, generator=g)
        >>> elbow(x, [2, 4, 6, 10, 16]).chosen_k
        6
    """
    values = sorted({check_int(k, "ks", minimum=1) for k in ks})
    if len(values) < 3:
        raise ValueError(f"ks: expected at least 3 distinct values of K, got {list(ks)}")
    data = to_float(concatenate(as_batches(x, "x")))
    inertias = []
    with progress_bar(progress, total=len(values), desc="elbow", unit="K") as bar:
        for k in values:
            inertias.append(kmeans(data, k, seed=seed, max_iter=max_iter, tol=tol, distributed=False).inertia)
            bar.update(1)
    return ElbowResult(tuple(values), tuple(inertias), knee(values, inertias), KNEE_RULE)
