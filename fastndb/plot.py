"""Pictures of results: every function returns ``(fig, ax)`` and needs matplotlib (``pip install fastndb[plot]``).

matplotlib is imported inside each function, so ``import fastndb.plot`` costs nothing and works without it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from fastndb._core.optional import require
from fastndb._core.results import BirthdayResult, ElbowResult, NDBResult


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
    empty = ((result.fake_counts.detach().cpu() == 0) & (result.real_counts.detach().cpu() > 0)).nonzero()[:, 0]
    if empty.numel():  # a bar of height 0 draws nothing: the bins a generator dropped must still be seen
        top = float(max(real.max(), fake.max()))
        ax.plot((empty.double() + width / 2).tolist(), [0.0] * empty.numel(), linestyle="none", marker="^",
                markersize=9, color="tab:red", label=f"empty in fake ({empty.numel()})", clip_on=False, zorder=5)
        for b in empty.tolist():
            ax.annotate("empty", (b + width / 2, 0.04 * top), ha="center", fontsize=6, color="tab:red", rotation=90)
    ax.xaxis.set_major_locator(require("matplotlib.ticker", "plotting").MaxNLocator(integer=True))
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


def prdc_scores(result: Any, *, ax: Any = None) -> tuple[Any, Any]:
    """Precision, recall, density and coverage of a :class:`~fastndb.PRDCResult` as bars, with their intervals
    where the result has them.

    Example:
        >>> import torch, fastndb, fastndb.plot
        >>> g = torch.Generator().manual_seed(0)
        >>> result = fastndb.prdc(torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g))
        >>> fig, ax = fastndb.plot.prdc_scores(result)
        >>> len(ax.patches)
        4
    """
    fig, ax = _figure_and_axes(ax, (4.5, 3.0))
    names = ("precision", "recall", "density", "coverage")
    values = [float(getattr(result, name)) for name in names]
    intervals = [getattr(result, f"{name}_interval", None) for name in names]
    errors = None
    if all(interval is not None for interval in intervals):
        lows = [v - lo for v, (lo, _) in zip(values, intervals, strict=True)]
        highs = [hi - v for v, (_, hi) in zip(values, intervals, strict=True)]
        errors = [lows, highs]
    ax.bar(names, values, yerr=errors, capsize=4, color="#4c72b0")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_ylabel("value")
    ax.set_title(f"k = {result.nearest_k}, {result.num_real} real, {result.num_fake} fake")
    fig.tight_layout()
    return fig, ax


def mode_curves(result: Any, *, ax: Any = None) -> tuple[Any, Any]:
    """The RKE counts of both sides of a :class:`~fastndb.ModesResult` against the bandwidth (log-log), the chosen
    bandwidth marked with both counts' intervals.

    Example:
        >>> import torch, fastndb, fastndb.plot
        >>> g = torch.Generator().manual_seed(0)
        >>> result = fastndb.modes(torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g), top=0)
        >>> fig, ax = fastndb.plot.mode_curves(result)
        >>> len(ax.lines) >= 2
        True
    """
    fig, ax = _figure_and_axes(ax, (4.5, 3.2))
    widths = list(result.curve_bandwidths)
    ax.plot(widths, result.curve_real, "o-", color="#4c72b0", label="real")
    ax.plot(widths, result.curve_fake, "s--", color="#dd8452", label="fake")
    for count, colour in ((result.real, "#4c72b0"), (result.fake, "#dd8452")):
        ax.errorbar([result.bandwidth], [count.count], yerr=[[count.count - count.low], [count.high - count.count]],
                    color=colour, capsize=4)
    ax.axvline(result.bandwidth, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("kernel bandwidth")
    ax.set_ylabel("effective modes (RKE)")
    ax.set_title(f"{result.real.count:.3g} real vs {result.fake.count:.3g} fake modes at {result.bandwidth:.3g} "
                 f"({result.bandwidth_rule})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    return fig, ax


def missing_modes(result: Any, real: Tensor, *, image_shape: tuple[int, ...] | None = None, invented: bool = False,
                  fake: Tensor | None = None, title: str | None = None) -> tuple[Any, Any]:
    """One row per missing mode of a :class:`~fastndb.ModesResult`: its example real samples as images, labelled
    with the mode's real and fake shares (``invented=True``: the invented modes, from ``fake``).

    Args:
        result: the modes result. real: the real samples it was computed on (images, or flat rows of an image).
        image_shape: ``(C, H, W)`` of a flat sample. invented: draw the invented modes. fake: their samples.

    Example:
        >>> import torch, fastndb, fastndb.plot
        >>> g = torch.Generator().manual_seed(0)
        >>> centres = torch.rand(4, 16, generator=g)
        >>> real = (centres[torch.arange(200) % 4] + 0.01 * torch.randn(200, 16, generator=g)).clamp(0, 1)
        >>> result = fastndb.modes(real, real[torch.arange(200) % 4 != 3], bandwidth=0.3, value_range=(0, 1))
        >>> fig, ax = fastndb.plot.missing_modes(result, real)
        >>> len(ax.images)
        1
    """
    modes = result.invented if invented else result.missing
    samples = fake if invented else real
    if invented and fake is None:
        raise ValueError("fake: expected the fake samples to draw the invented modes, got None")
    if not modes:
        fig, ax = _figure_and_axes(None, (4.0, 1.0))
        ax.text(0.5, 0.5, "no invented modes" if invented else "no missing modes", ha="center", va="center")
        ax.set_axis_off()
        return fig, ax
    flat = torch.as_tensor(samples)
    channels, height, width = _image_shape(flat, image_shape)
    rows = [flat[mode.examples.to(flat.device)].reshape(-1, channels, height, width).double().cpu() for mode in modes]
    columns = max(r.shape[0] for r in rows)
    images = torch.cat([torch.cat([r, torch.ones(columns - r.shape[0], channels, height, width,
                                                 dtype=torch.float64)]) for r in rows])
    if images.max() > 1:
        images = images / 255.0
    fig, ax = image_grid(images, columns=columns, title=title)
    labels = [f"{100 * m.real_share:.1f}% real / {100 * m.fake_share:.1f}% fake" for m in modes]
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([(i + 0.5) * (height + 1) for i in range(len(modes))])
    ax.set_yticklabels(labels, fontsize=7)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.set_size_inches(0.5 * columns + 2.2, 0.5 * len(modes) + 0.8)
    fig.tight_layout()
    return fig, ax


def _image_shape(samples: Tensor, image_shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    """``(C, H, W)`` of one sample: given, from the samples' own shape, or from a square ``D``."""
    if image_shape is None:
        if samples.dim() == 4:
            return tuple(samples.shape[1:])  # type: ignore[return-value]
        if samples.dim() == 3:
            return (1, *samples.shape[1:])  # type: ignore[return-value]
        d = samples.shape[1]
        for channels in (1, 3):
            side = math.isqrt(d // channels)
            if d % channels == 0 and side * side * channels == d:
                return (channels, side, side)
        raise ValueError(
            f"image_shape: samples have {d} features, which is not a square image with 1 or 3 channels; "
            f"pass image_shape=(C, H, W)"
        )
    shape = tuple(int(v) for v in image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or math.prod(shape) != math.prod(samples.shape[1:]):
        raise ValueError(
            f"image_shape: expected (C, H, W) or (H, W) with {math.prod(samples.shape[1:])} values, got {image_shape}"
        )
    return shape  # type: ignore[return-value]


def birthday_pairs(
    samples: Any,
    result: BirthdayResult,
    *,
    num_pairs: int | None = None,
    image_shape: tuple[int, ...] | None = None,
    ax: Any = None,
) -> tuple[Any, Any]:
    """The closest pairs of a birthday test side by side, for a person to judge whether they are duplicates.

    Column ``p`` shows pair ``p``: sample ``i`` on top, sample ``j`` below, the distance in the label; pairs
    within the result's threshold are marked "dup". Pixel values are scaled to [0, 1] over the images shown.

    Args:
        samples: the samples the test ran on (indices refer to them): ``(s, C, H, W)``, ``(s, H, W)`` or
            ``(s, D)`` with ``image_shape`` (or a square ``D`` with 1 or 3 channels).
        result: a :class:`~fastndb.BirthdayResult` of those samples.
        num_pairs: pairs to show (default: all in ``result``, at most 16).
        image_shape: ``(C, H, W)`` or ``(H, W)`` of one sample when ``samples`` are flat.
        ax: matplotlib axes (default: a new figure).

    Returns:
        ``(fig, ax)``.

    Example:
        >>> import torch, fastndb, fastndb.plot
        >>> imgs = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> imgs[30] = imgs[3]
        >>> result = fastndb.birthday(imgs, num_pairs=4, threshold=0.0)
        >>> fig, ax = fastndb.plot.birthday_pairs(imgs, result)
        >>> ax.images[0].get_array().shape  # 2 rows of 8-pixel images, 4 columns, 1-pixel gaps
        (17, 35)
    """
    x = torch.as_tensor(samples) if not isinstance(samples, Tensor) else samples
    shape = _image_shape(x, image_shape)
    shown = min(result.pairs.shape[0], 16 if num_pairs is None else num_pairs)
    if shown < 1:
        raise ValueError(f"num_pairs: expected at least 1 pair to show, got {num_pairs}")
    pairs = result.pairs[:shown].cpu()
    distances = result.distances[:shown].tolist()
    labels = []
    for (i, j), d in zip(pairs.tolist(), distances, strict=True):
        duplicate = result.threshold is not None and d <= result.threshold
        labels.append(f"{i}\n{j}\n{d:.3g}" + ("\ndup" if duplicate else ""))
    fig, ax = _pair_mosaic(x, pairs[:, 0], x, pairs[:, 1], shape, labels, ax)
    ax.set_title(f"closest {shown} pairs of {result.num_samples} samples ({result.metric} distance)")
    fig.tight_layout()
    return fig, ax


def _pair_mosaic(top: Tensor, top_rows: Tensor, bottom: Tensor, bottom_rows: Tensor, shape: tuple[int, int, int],
                 labels: list[str], ax: Any) -> tuple[Any, Any]:
    """Column ``p``: ``top[top_rows[p]]`` above ``bottom[bottom_rows[p]]``, scaled to [0, 1] together, labelled."""
    channels, height, width = shape
    shown = int(top_rows.numel())
    upper = top.reshape(top.shape[0], channels, height, width).index_select(0, top_rows.to(top.device))
    lower = bottom.reshape(bottom.shape[0], channels, height, width).index_select(0, bottom_rows.to(bottom.device))
    images = torch.stack([upper.detach().double().cpu(), lower.detach().double().cpu()], dim=1)
    low, high = float(images.min()), float(images.max())
    images = (images - low) / (high - low) if high > low else torch.zeros_like(images)
    gap = 1
    mosaic = torch.ones(channels, 2 * height + gap, shown * (width + gap) - gap, dtype=torch.float64)
    for p in range(shown):
        left = p * (width + gap)
        mosaic[:, :height, left : left + width] = images[p, 0]
        mosaic[:, height + gap :, left : left + width] = images[p, 1]
    fig, ax = _figure_and_axes(ax, (max(4.0, 0.9 * shown), 2.6))
    if channels == 1:
        ax.imshow(mosaic[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(mosaic[:3].permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([p * (width + gap) + (width - 1) / 2 for p in range(shown)])
    ax.set_xticklabels(labels, fontsize="x-small")
    ax.set_yticks([])
    return fig, ax


def memorized_pairs(
    train: Any,
    fake: Any,
    result: Any,
    *,
    count: int = 16,
    image_shape: tuple[int, ...] | None = None,
    ax: Any = None,
) -> tuple[Any, Any]:
    """The generated samples most like copies (:meth:`~fastndb.MemorizationResult.closest`) above their nearest
    training samples, for a person to judge.

    Column ``p``: a generated sample on top, its nearest training sample below; the label gives both indices, the
    ratio ``d_1 / d_2`` and "copy" where the sample is flagged. Pixel values are scaled to [0, 1] over the images.

    Args:
        train, fake: the samples :func:`fastndb.memorization` ran on (indices refer to them), ``(s, C, H, W)``,
            ``(s, H, W)`` or ``(s, D)`` with ``image_shape`` (or a square ``D`` with 1 or 3 channels).
        result: their :class:`~fastndb.MemorizationResult`.
        count: columns (at most the generated samples).
        image_shape: ``(C, H, W)`` or ``(H, W)`` of one sample when the samples are flat.
        ax: matplotlib axes (default: a new figure).

    Returns:
        ``(fig, ax)``.

    Example:
        >>> import torch, fastndb, fastndb.plot
        >>> g = torch.Generator().manual_seed(0)
        >>> train = torch.rand(300, 1, 8, 8, generator=g)
        >>> fake = torch.cat([torch.rand(60, 1, 8, 8, generator=g), train[:4]])
        >>> result = fastndb.memorization(train, fake, alpha=0.05)
        >>> fig, ax = fastndb.plot.memorized_pairs(train, fake, result, count=4)
        >>> [label.get_text().split()[0] for label in ax.get_xticklabels()]  # the four copies come first
        ['60', '61', '62', '63']
    """
    a = torch.as_tensor(train) if not isinstance(train, Tensor) else train
    b = torch.as_tensor(fake) if not isinstance(fake, Tensor) else fake
    count = min(int(count), result.num_fake)
    if count < 1:
        raise ValueError(f"count: expected at least 1 sample to show, got {count}")
    rows = result.closest(count).cpu()
    nearest = result.nearest_train.cpu()[rows]
    ratio, flagged = result.ratio.cpu()[rows].tolist(), result.copy.cpu()[rows].tolist()
    labels = [f"{i}\n{j}\n{r:.2g}" + ("\ncopy" if c else "")
              for i, j, r, c in zip(rows.tolist(), nearest.tolist(), ratio, flagged, strict=True)]
    fig, ax = _pair_mosaic(b, rows, a, nearest, _image_shape(b, image_shape), labels, ax)
    ax.set_title(f"generated (top) and nearest training sample (bottom): {result.num_copies} of {result.num_fake} "
                 f"flagged as copies")
    fig.tight_layout()
    return fig, ax


def elbow(result: ElbowResult, *, ax: Any = None) -> tuple[Any, Any]:
    """k-means inertia against K with the chosen K marked.

    Example:
        >>> from fastndb._core.results import ElbowResult
        >>> fig, ax = elbow(ElbowResult((2, 4, 8), (10.0, 4.0, 3.0), 4, "knee"))
        >>> len(ax.lines)
        2
    """
    fig, ax = _figure_and_axes(ax, (5.0, 3.2))
    ax.plot(list(result.ks), list(result.inertias), marker="o", label="inertia")
    chosen = result.ks.index(result.chosen_k)
    ax.plot([result.chosen_k], [result.inertias[chosen]], marker="o", markersize=12, fillstyle="none",
            color="tab:red", linestyle="none", label=f"knee: K = {result.chosen_k}")
    ax.set_xlabel("K (number of bins)")
    ax.set_ylabel("k-means inertia")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig, ax


def close(fig: Any) -> None:
    """Release a figure made here (long training runs make one per epoch)."""
    require("matplotlib.pyplot", "plotting").close(fig)


def image_grid(images: Tensor, *, columns: int = 8, title: str | None = None, ax: Any = None) -> tuple[Any, Any]:
    """Images ``(N, C, H, W)`` with values in [0, 1] as one grid (C = 1 grey, 3 RGB).

    Example:
        >>> fig, ax = image_grid(torch.rand(10, 1, 4, 4), columns=5)
        >>> ax.images[0].get_array().shape  # 2 rows x 5 columns of 4-pixel images, 1-pixel gaps
        (9, 24)
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images: expected (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    x = images.detach().double().cpu().clamp(0, 1)
    n, channels, height, width = x.shape
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    mosaic = torch.ones(channels, rows * (height + 1) - 1, columns * (width + 1) - 1, dtype=torch.float64)
    for i in range(n):
        top, left = (i // columns) * (height + 1), (i % columns) * (width + 1)
        mosaic[:, top : top + height, left : left + width] = x[i]
    fig, ax = _figure_and_axes(ax, (0.5 * columns + 1, 0.5 * rows + 0.6))
    if channels == 1:
        ax.imshow(mosaic[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(mosaic.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig, ax


def training_curves(
    records: list[dict],
    *,
    threshold: float | None = None,
    collapsed_at: int | None = None,
    null_level: float | None = None,
    null_coverage: float | None = None,
    tolerance: float | None = None,
    ax: Any = None,
) -> tuple[Any, Any]:
    """Per epoch, on separate axes that cannot be misread: the missing mass with its 95% band and ``tolerance``
    (when the records hold ``missing_mass``, ``missing_low``, ``missing_high``), NDB/K (with the collapse
    threshold, the flagged epoch and its chance level ``null_level``), the birthday duplicate rate, coverage (with
    ``null_coverage``, when the records hold it) and the two losses (when they hold them); each legend outside its
    axes' data.

    ``ax`` is ignored (several axes are drawn); returns ``(fig, axes)``.

    Example:
        >>> rows = [{"epoch": 1, "ndb_ratio": 0.2, "duplicate_rate": 0.0, "d_loss": 1.0, "g_loss": 2.0},
        ...         {"epoch": 2, "ndb_ratio": 0.7, "duplicate_rate": 0.01, "d_loss": 0.8, "g_loss": 2.5}]
        >>> fig, axes = training_curves(rows, threshold=0.5, collapsed_at=2, null_level=0.05)
        >>> [len(a.lines) for a in axes]
        [4, 2, 3]
    """
    if not records:
        raise ValueError("records: expected at least one epoch, got none")
    plt = require("matplotlib.pyplot", "plotting")
    epochs = [r["epoch"] for r in records]
    has = lambda key: all(key in r and r[key] == r[key] for r in records)  # noqa: E731  (present and not NaN)
    panels = (["missing"] if has("missing_mass") and has("missing_low") and has("missing_high") else []) + \
        ["ndb", "duplicates"] + (["coverage"] if has("coverage") else []) + \
        (["losses"] if has("d_loss") and has("g_loss") else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.0, 1.9 * len(panels) + 0.6), sharex=True, squeeze=False)
    axes = [row[0] for row in axes]
    for panel, axis in zip(panels, axes, strict=True):
        if panel == "missing":
            axis.fill_between(epochs, [100 * r["missing_low"] for r in records],
                              [100 * r["missing_high"] for r in records], color="tab:orange", alpha=0.25,
                              label="95% interval")
            axis.plot(epochs, [100 * max(r["missing_mass"], 0.0) for r in records], marker="o", color="tab:orange",
                      label="missing mass")
            if tolerance is not None:
                axis.axhline(100 * tolerance, color="tab:red", linestyle="--", linewidth=1,
                             label=f"tolerance {100 * tolerance:g}%")
            axis.set_ylim(bottom=0)
            axis.set_ylabel("missing (% of data)")
        elif panel == "ndb":
            axis.plot(epochs, [r["ndb_ratio"] for r in records], marker="o", label="NDB/K")
            if threshold is not None:
                axis.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"collapse at {threshold}")
            if null_level is not None:
                axis.axhline(null_level, color="tab:green", linestyle=":", linewidth=1, label=f"chance {null_level}")
            axis.set_ylim(0, 1.02)
            axis.set_ylabel("NDB/K")
        elif panel == "duplicates":
            axis.plot(epochs, [r["duplicate_rate"] for r in records], marker="s", color="tab:gray",
                      label="duplicate pairs (share)")
            axis.set_ylabel("duplicates")
        elif panel == "coverage":
            axis.plot(epochs, [r["coverage"] for r in records], marker="^", color="tab:purple", label="coverage")
            if null_coverage is not None:
                axis.axhline(null_coverage, color="tab:green", linestyle=":", linewidth=1,
                             label=f"chance {null_coverage:.2f}")
            axis.set_ylim(0, 1.02)
            axis.set_ylabel("coverage")
        else:
            axis.plot(epochs, [r["d_loss"] for r in records], marker=".", label="D loss")
            axis.plot(epochs, [r["g_loss"] for r in records], marker=".", label="G loss")
            axis.set_ylabel("loss")
        if collapsed_at is not None:
            axis.axvline(collapsed_at, color="tab:red", linewidth=1,
                         label=f"flagged at epoch {collapsed_at}" if panel == panels[0] else None)
        axis.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(require("matplotlib.ticker", "plotting").MaxNLocator(integer=True))
    fig.tight_layout()
    return fig, axes
