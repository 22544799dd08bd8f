"""Pictures of results: every function returns ``(fig, ax)`` and needs matplotlib (``pip install fastndb[plot]``).

matplotlib is imported inside each function, so ``import fastndb.plot`` costs nothing and works without it.
"""

from __future__ import annotations

from typing import Any

import torch

from fastndb._optional import require
from fastndb.results import NDBResult


def _figure_and_axes(ax: Any, size: tuple[float, float]) -> tuple[Any, Any]:
    plt = require("matplotlib.pyplot", "plotting")
    if ax is None:
        fig, ax = plt.subplots(figsize=size)
    else:
        fig = ax.figure
    return fig, ax


def bin_proportions(result: NDBResult, *, ax: Any = None, title: str | None = None) -> tuple[Any, Any]:
    r"""Real against fake share of every bin, with standard-error bars; the bins NDB counts are highlighted.

    Bins are drawn in their fitted order (largest real bin first), as in the paper's figure. Error bars are one
    standard error of each proportion, :math:`\sqrt{p (1 - p) / n}`.

    Args:
        result: an :class:`~fastndb.NDBResult`.
        ax: matplotlib axes to draw on (default: a new figure).
        title: figure title (default: the NDB summary).

    Returns:
        ``(fig, ax)``.

    Example:
        >>> import torch, fastndb, fastndb.plot
        >>> g = torch.Generator().manual_seed(0)
        >>> real, fake = torch.randn(2000, 4, generator=g), torch.randn(1000, 4, generator=g) + 0.3
        >>> fig, ax = fastndb.plot.bin_proportions(fastndb.score(real, fake, num_bins=10))
        >>> len(ax.patches) >= 20  # two bars per bin
        True
    """
    fig, ax = _figure_and_axes(ax, (max(6.0, 0.12 * result.num_bins + 2), 3.5))
    real = result.real_proportions.detach().double().cpu()
    fake = result.fake_proportions.detach().double().cpu()
    different = result.different.detach().cpu()
    real_se = (real * (1 - real) / max(result.num_real, 1)).sqrt()
    fake_se = (fake * (1 - fake) / max(result.num_fake, 1)).sqrt()
    bins = torch.arange(result.num_bins, dtype=torch.float64)
    width = 0.4
    ax.bar((bins - width / 2).tolist(), real.tolist(), width, yerr=real_se.tolist(), color="0.6", label="real",
           error_kw={"elinewidth": 0.6})
    colors = ["tab:red" if flag else "tab:blue" for flag in different.tolist()]
    ax.bar((bins + width / 2).tolist(), fake.tolist(), width, yerr=fake_se.tolist(), color=colors,
           label="fake (red: different)", error_kw={"elinewidth": 0.6})
    ax.set_xlabel("bin (largest real bin first)")
    ax.set_ylabel("proportion of samples")
    ax.set_xlim(-1, result.num_bins)
    ax.set_title(title if title is not None else
                 f"NDB = {result.ndb} of {result.num_bins} (expected by chance {result.expected_false_positives:.1f}),"
                 f" JS = {result.js:.4f}")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return fig, ax


def metric_history(values: list[dict], *, key: str = "ndb_ratio", ax: Any = None) -> tuple[Any, Any]:
    """A metric over evaluations (e.g. epochs): ``values`` are :meth:`NDBMetric.compute` outputs in order.

    Example:
        >>> import fastndb.plot
        >>> fig, ax = fastndb.plot.metric_history([{"ndb_ratio": 0.05}, {"ndb_ratio": 0.4}])
        >>> len(ax.lines)
        1
    """
    if not values:
        raise ValueError("values: expected at least one compute() output, got an empty list")
    missing = [i for i, v in enumerate(values) if key not in v]
    if missing:
        raise ValueError(f"key: {key!r} is missing from values {missing[:5]}; keys there: {sorted(values[0])}")
    fig, ax = _figure_and_axes(ax, (5.0, 3.0))
    series = [float(v[key]) for v in values]
    ax.plot(range(len(series)), series, marker="o")
    ax.set_xlabel("evaluation")
    ax.set_ylabel(key)
    fig.tight_layout()
    return fig, ax
