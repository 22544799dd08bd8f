"""Demos on scikit-learn's bundled 8x8 digits (no download).

* :func:`run_dcgan_demo` (``fastndb demo``): a DCGAN trained on the digits upsampled to 32 x 32, with NDB and
  the birthday test watching for mode collapse every epoch (:mod:`fastndb.demo.training`); or on MNIST / Fashion-MNIST
  from an IDX file, or any image file fastndb reads, with ``data``.
* :func:`run_digits_demo` (``fastndb demo --resampling``): seconds, no training: "generators" resample a pool of
  real digits disjoint from the reference set and add pixel noise, so a healthy one draws from (nearly) the real
  distribution while the others never produce some digit classes.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fastndb import NDB
from fastndb._core.optional import require
from fastndb._core.results import NDBResult
from fastndb._core.verdict import DEFAULT_TOLERANCE
from fastndb.demo.training import CollapseMonitor, EpochRecord, GANConfig, TrainingResult, train_gan

# defaults of ``fastndb demo``: a few CPU minutes on the bundled digits; with ``--data``, the full-size setting of
# the PyTorch DCGAN example (width 64, 25 epochs of full passes); K = min(100, N / 40) for both, the library's rule
DIGITS_DEFAULTS = {"epochs": 8, "steps_per_epoch": 150, "width": 32, "max_bins": 100}
FULL_SIZE_DEFAULTS = {"epochs": 25, "steps_per_epoch": None, "width": 64, "max_bins": 100}


def demo_defaults(data: str | None) -> dict:
    """The demo's defaults: :data:`DIGITS_DEFAULTS` without ``data``, :data:`FULL_SIZE_DEFAULTS` with it
    (``steps_per_epoch=None``: one pass over the data per epoch; ``max_bins``: the cap on K = N / 40)."""
    return dict(DIGITS_DEFAULTS if data is None else FULL_SIZE_DEFAULTS)


@dataclass(frozen=True)
class DemoRow:
    """One generator's outcome."""

    generator: str
    dropped: tuple[int, ...]
    result: NDBResult


def load_digits_tensor() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``(1797, 64)`` float32 in [0, 1] and ``(1797,)`` int64 labels."""
    datasets = require("sklearn", "the digits demo").datasets
    digits = datasets.load_digits()
    return torch.from_numpy(digits.data).float() / 16.0, torch.from_numpy(digits.target).long()


def run_digits_demo(
    *, num_bins: int = 10, num_fake: int = 2000, noise: float = 0.03, seed: int = 0,
    drops: tuple[tuple[int, ...], ...] = ((), (3, 8), (0, 1, 2, 3, 4)),
) -> list[DemoRow]:
    """Fit NDB bins on 1000 real digits and score one generator per entry of ``drops``.

    Args:
        num_bins: NDB bins.
        num_fake: samples drawn from each generator.
        noise: std of the Gaussian pixel noise the generators add (pixels are in [0, 1]).
        seed: seed of the split, the generators and NDB.
        drops: for each generator, the digit classes it never produces.
    """
    x, y = load_digits_tensor()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator)
    real, pool_x, pool_y = x[order[:1000]], x[order[1000:]], y[order[1000:]]
    ndb = NDB(num_bins, seed=seed).fit(real)
    rows = []
    for dropped in drops:
        keep = ~torch.isin(pool_y, torch.tensor(dropped, dtype=torch.int64))
        candidates = pool_x[keep]
        picks = torch.randint(len(candidates), (num_fake,), generator=generator)
        fake = (candidates[picks] + noise * torch.randn(num_fake, x.shape[1], generator=generator)).clamp(0, 1)
        name = "healthy (all digits)" if not dropped else f"drops digits {','.join(map(str, dropped))}"
        rows.append(DemoRow(name, tuple(dropped), ndb.score(fake)))
    return rows


def format_rows(rows: list[DemoRow]) -> str:
    """The demo's table as text."""
    header = f"{'generator':<26} {'NDB':>4} {'NDB/K':>6} {'expected by chance':>19} {'JS':>8}"
    lines = [f"{header} {'p (histograms differ)':>22}"]
    for row in rows:
        r = row.result
        lines.append(
            f"{row.generator:<26} {r.ndb:>4} {r.ndb_ratio:>6.2f} {r.expected_false_positives:>19.2f} "
            f"{r.js:>8.4f} {r.p_value:>22.3g}"
        )
    return "\n".join(lines)


def read_idx_images(path: str | Path) -> torch.Tensor:
    """MNIST-style IDX image file (``*-images-idx3-ubyte``, optionally ``.gz``) as ``(N, 1, H, W)`` uint8.

    The IDX format: big-endian magic ``0x00000803`` (unsigned bytes, 3 dimensions), the three sizes as uint32,
    then the pixels.
    """
    from fastndb._core.files import check_expansion

    path = Path(path)
    stored = path.stat().st_size
    with path.open("rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if compressed else path.open("rb")) as f:
        header = f.read(16)
        if len(header) < 16 or int.from_bytes(header[:4], "big") != 0x803:
            raise ValueError(f"{path}: not an IDX image file (expected magic 0x00000803 for uint8 images)")
        n, height, width = (int.from_bytes(header[i : i + 4], "big") for i in (4, 8, 12))
        declared = n * height * width
        if compressed:  # the header's size is checked before anything is decompressed
            check_expansion(declared, stored, str(path))
        elif declared != stored - 16:
            raise ValueError(f"{path}: IDX header says {n} x {height} x {width} pixels, the file has {stored - 16}")
        raw = f.read(declared + 1)
    if len(raw) != declared:
        raise ValueError(f"{path}: IDX header says {n} x {height} x {width} pixels, the file has "
                         f"{'more' if len(raw) > declared else len(raw)}")
    pixels = np.frombuffer(raw, dtype=np.uint8).reshape(n, 1, height, width)
    return torch.from_numpy(pixels.copy())


def _is_idx(path: Path) -> bool:
    """Whether a file is an IDX image file, by its content (magic, under gzip or not), not by its name."""
    from fastndb._core.files import ARRAY_SUFFIXES

    if path.is_dir() or path.suffix.lower() in ARRAY_SUFFIXES or not path.is_file():
        return False
    with path.open("rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(4)
        except OSError:
            return False
    return int.from_bytes(head[:4], "big") == 0x803


def load_training_images(data: str | None, *, digit: int | None = None, image_size: int = 32,
                         drop_digits: tuple[int, ...] = ()) -> torch.Tensor:
    """Training images in [-1, 1], ``(N, C, S, S)`` with ``S = image_size``.

    ``data=None``: scikit-learn's digits (optionally one ``digit`` class, or all but ``drop_digits``), upsampled
    bilinearly from 8 x 8.
    Otherwise an IDX file (MNIST, Fashion-MNIST) or anything :func:`fastndb._core.files.load_samples` reads, resized
    to ``S`` if needed.
    """
    if data is None:
        x, y = load_digits_tensor()
        images = x.reshape(-1, 1, 8, 8)
        if digit is not None:
            images = images[y == digit]
        if drop_digits:
            images = images[~torch.isin(y, torch.tensor(drop_digits, dtype=torch.int64))]
    else:
        from fastndb._core.files import load_samples

        name = str(data)
        loaded = read_idx_images(name) if _is_idx(Path(name)) else load_samples(name)
        if loaded.dim() != 4:
            raise ValueError(f"data: expected images (N, C, H, W), got shape {tuple(loaded.shape)}")
        images = loaded.float() / 255.0 if loaded.dtype == torch.uint8 else loaded.float()
        if digit is not None or drop_digits:
            raise ValueError("digit, drop_digits: choosing classes needs labels; it works with the bundled digits only")
    if images.shape[-1] != image_size or images.shape[-2] != image_size:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (images.clamp(0, 1) * 2 - 1).contiguous()


def run_dcgan_demo(
    *,
    data: str | None = None,
    digit: int | None = None,
    image_size: int = 32,
    device: str = "cpu",
    out_dir: str | Path | None = "fastndb-demo",
    config: GANConfig | None = None,
    num_bins: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    progress: bool | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    drop_digits: tuple[int, ...] = (),
    second_feature: object = None,
) -> TrainingResult:
    """Train a DCGAN with the collapse monitor (see the module docstring); returns the :class:`TrainingResult`.

    ``config=None`` and ``num_bins=None`` take :func:`demo_defaults` (``K = min(max_bins, N // 40)``, so that
    the held-out half of the N real images puts about 20 or more in each bin). ``drop_digits``: the DCGAN trains on
    the digits without these classes while the monitor compares it with all of them (a generator that misses modes
    by construction). ``second_feature``: NDB in that feature space too (e.g. ``"digits"``), next to pixels.
    """
    real = load_training_images(data, digit=digit, image_size=image_size).to(device)
    train = real if not drop_digits else load_training_images(data, image_size=image_size,
                                                               drop_digits=tuple(drop_digits)).to(device)
    defaults = demo_defaults(data)
    if config is None:
        config = GANConfig(epochs=defaults["epochs"], steps_per_epoch=defaults["steps_per_epoch"],
                           width=defaults["width"])
    if num_bins is None:
        num_bins = max(2, min(defaults["max_bins"], real.shape[0] // 40))
    monitor = CollapseMonitor(real, num_bins=num_bins, tolerance=tolerance, seed=config.seed,
                              second_feature=second_feature)
    return train_gan(train, config, monitor=monitor, out_dir=out_dir, progress=progress, on_epoch=on_epoch)


def format_epoch_header(second: str | None = None) -> str:
    """Header of the per-epoch table the demo prints (with a second feature space's NDB/K and JS, if named)."""
    extra = "" if second is None else f" {second[:6] + ' NDB/K':>12} {'JS':>7}"
    return (f"{'epoch':>5} {'D loss':>7} {'G loss':>7} {'NDB':>4} {'NDB/K':>6} {'JS':>7}{extra} {'cover':>5} "
            f"{'dup pairs':>9} {'emptied':>7} {'missing (95% interval)':>22} {'verdict':>16} {'flag':>7} {'s':>5}")


def format_epoch(record: EpochRecord) -> str:
    """One row of the per-epoch table."""
    no_second_space = math.isnan(record.feature_ndb_ratio)
    extra = "" if no_second_space else f" {record.feature_ndb_ratio:>12.2f} {record.feature_js:>7.4f}"
    return (f"{record.epoch:>5} {record.d_loss:>7.3f} {record.g_loss:>7.3f} {record.ndb:>4} {record.ndb_ratio:>6.2f} "
            f"{record.js:>7.4f}{extra} {record.coverage:>5.2f} {record.num_duplicates:>9} {record.emptied_bins:>7} "
            f"{_missing_text(record):>22} {record.decision or '-':>16} {'FLAGGED' if record.collapsed else '-':>7} "
            f"{record.seconds:>5.1f}")


def _missing_text(record: EpochRecord) -> str:
    if math.isnan(record.missing_mass):
        return "-"
    return (f"{100 * max(record.missing_mass, 0):.1f}% ({100 * record.missing_low:.1f}-"
            f"{100 * record.missing_high:.1f}%)")
