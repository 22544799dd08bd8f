"""DCGAN training with a mode-collapse monitor: NDB and the birthday test every epoch, on the generator's device.

:class:`CollapseMonitor` fits NDB bins once on the real images and, each epoch, streams the generator's samples
into them (:meth:`NDB.score <fastndb.NDB.score>` on the samples' device: no host copy of the samples, only K
counts and a few scalars come back), runs the birthday test on a subset with a threshold taken from real data,
and flags mode dropping when an epoch's verdict (:func:`fastndb._core.verdict.decide`, the report's: a calibrated
test that the samples differ, and the missing mass's 95% interval above ``tolerance``) is ``"missing"`` for
``patience`` epochs in a row after ``warmup`` epochs. docs/monitor.md gives its measured false-alarm and
detection rates on samplers and generators whose captured modes are known (``benchmarks/monitor_rule.py``).

:func:`train_gan` is the standard DCGAN loop (Adam, lr 2e-4, betas (0.5, 0.999), binary cross-entropy) with the
options of the label experiments: a share of the discriminator's labels flipped (``label_flip``), one-sided label
smoothing (real targets ``1 - label_smoothing``), and the latent size. All randomness comes from ``seed``.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from fastndb import NDB
from fastndb._core.birthday import birthday, duplicate_threshold
from fastndb._core.checks import check_int
from fastndb._core.coverage import _subset, prdc
from fastndb._core.options import default_num_bins
from fastndb._core.progress import progress_bar
from fastndb._core.results import NDBResult
from fastndb._core.signals import coverage_shortfall, emptied_bins, missing_mode_bins
from fastndb._core.statistics import expected_null_coverage, expected_null_js
from fastndb._core.verdict import (
    DEFAULT_TOLERANCE,
    Verdict,
    check_tolerance,
    compare_duplicates,
    decide,
    duplicate_permutation_test,
)
from fastndb.demo.models import Discriminator, Generator, sample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochRecord:
    """What the monitor saw after one epoch (losses are epoch means)."""

    epoch: int
    d_loss: float
    g_loss: float
    ndb: int
    ndb_ratio: float
    js: float
    p_value: float
    num_duplicates: int
    duplicate_rate: float
    collapsed: bool
    seconds: float
    feature_ndb_ratio: float = math.nan
    feature_js: float = math.nan
    recall: float = math.nan
    coverage: float = math.nan
    missing_bins: int = -1
    emptied_bins: int = -1
    coverage_shortfall: float = math.nan
    signal: str = ""
    missing_mass: float = math.nan
    missing_low: float = math.nan
    missing_high: float = math.nan
    decision: str = ""
    modes_real: float = math.nan
    modes_fake: float = math.nan
    modes_ratio_low: float = math.nan
    modes_ratio_high: float = math.nan

    def to_dict(self) -> dict:
        """Fields as a dict."""
        return asdict(self)


def _samples(data: object, name: str) -> Tensor:
    """A tensor ``(N, ...)`` from any input fastndb takes (tensor, numpy or CuPy array, list or loader of batches),
    in its own shape; NaN and the value range are checked where each score reads it."""
    from fastndb._core.inputs import as_batches, concatenate

    return concatenate(as_batches(data, name, check_finite=False, flatten=False))


class CollapseMonitor:
    """Per-epoch NDB and birthday statistics of a generator against fixed real data.

    Args:
        real: real images ``(N, C, H, W)`` in the generator's value range, on the device to score on.
        num_bins: NDB bins ``K``; ``None``: ``min(100, N // 40, num_samples // 20)`` (at least 2; the library's
            default rule), so that the held-out half of the real images and the samples give about 20 per bin, where
            the per-bin z-test is reliable, and
            K is as large as that allows: NDB sees one missing mode only with about as many bins as modes or more
            (docs/ground_truth.md).
        alpha: per-bin level; under the null NDB/K is about ``alpha``, and a bin counts as emptied (a sign of a
            missing mode) when the samples under-fill it with a p-value below ``alpha / K`` and to less than a
            quarter of its real share.
        tolerance: the missing mass accepted: an epoch counts towards mode dropping when its verdict
            (:func:`fastndb._core.verdict.decide`, the report's) is ``"missing"``: the samples differ from the data
            beyond chance (one calibrated test over NDB, the strongest bin, JS, coverage and the duplicates) and the
            missing mass's 95% interval lies above ``tolerance``.
        patience: epochs in a row decided ``"missing"`` before :attr:`collapsed_at` is set.
        warmup: epochs not counted: an untrained generator differs from the data in every bin, which is not
            collapse.
        num_samples: generated samples scored per epoch.
        birthday_samples: samples of the birthday test per epoch (the threshold comes from as many real ones).
        quantile: quantile of real nearest-neighbour distances used as the duplicate threshold.
        value_range: range of ``real`` and of the generator's samples when they are floats (the library's
            convention, :mod:`fastndb._core.features`): ``(-1, 1)`` for a ``tanh`` generator such as the DCGAN here;
            ``uint8`` real images are read as ``x / 255`` whatever it says.
        feature: score in this feature space instead of pixels (:mod:`fastndb._core.extractors`): ``"digits"`` (the
            shipped digits network) for the demo's digits, a name, a module or a callable; NDB, the duplicate
            threshold and the birthday test all use it.
        second_feature: also fit NDB bins (same ``K``) in this feature space and report its NDB/K and JS next to the
            first space's each epoch (``feature_ndb_ratio``, ``feature_js``; chance level :attr:`second_null_js`);
            the collapse flag follows the first space.
        seed: seed of the bins, the duplicate threshold and the monitor's latents.

    Attributes:
        ndb: the fitted :class:`~fastndb.NDB` bins.
        duplicate_threshold: distance at or below which a pair of samples counts as a duplicate.
        null_ndb_ratio: NDB/K expected by chance alone, for a generator that samples like the data (``alpha``).
        null_js: JS expected by chance alone at these sample sizes (:func:`~fastndb._core.statistics.expected_null_js`);
            a healthy generator's JS should fall towards it, a collapsed one stays far above.
        null_coverage: the coverage (``k = 5``, on ``birthday_samples`` real and fake samples; recorded each epoch
            with recall) expected by chance alone, for a generator that samples like the data.
        modes_bandwidth: the kernel bandwidth of the recorded mode counts: the one :func:`fastndb.modes` reads the
            missing modes at on the real subset (where the real data resolve into modes).
        modes_real: the real subset's :class:`~fastndb.ModeCount` there.
        collapsed_at: the epoch mode dropping (partial or total) was flagged, or ``None``.
        last_result: the full :class:`~fastndb.NDBResult` of the latest :meth:`observe` (per-bin shares, z), or
            ``None`` before the first.
    """

    def __init__(
        self,
        real: Tensor,
        *,
        num_bins: int | None = None,
        alpha: float = 0.05,
        tolerance: float = DEFAULT_TOLERANCE,
        patience: int = 2,
        warmup: int = 3,
        num_samples: int = 2000,
        birthday_samples: int = 500,
        quantile: float = 0.01,
        value_range: tuple[float, float] | None = (-1.0, 1.0),
        feature: object = None,
        second_feature: object = None,
        seed: int = 0,
    ) -> None:
        real = _samples(real, "real")
        self.tolerance = check_tolerance(tolerance)
        self.patience = check_int(patience, "patience", minimum=1)
        self.warmup = check_int(warmup, "warmup", minimum=0)
        self.num_samples = check_int(num_samples, "num_samples", minimum=2)
        self.birthday_samples = min(check_int(birthday_samples, "birthday_samples", minimum=2), self.num_samples)
        self.seed = seed
        if num_bins is None:
            num_bins = default_num_bins(real.shape[0], num_fake=self.num_samples)
        self.value_range = value_range
        self.ndb = NDB(num_bins, alpha, seed=seed, value_range=value_range, feature=feature,
                       tolerance=self.tolerance).fit(real, distributed=False)
        self.feature = self.ndb.options.feature  # resolved once (a name loads its network once)
        self.duplicate_threshold = duplicate_threshold(real, quantile=quantile,
                                                       num_samples=min(self.birthday_samples, real.shape[0]),
                                                       seed=seed, value_range=value_range, feature=self.feature)
        self.null_ndb_ratio = self.ndb.alpha
        self.null_js = expected_null_js(self.ndb.num_bins, self.ndb.bins.num_reference, self.num_samples)
        self.second: NDB | None = None
        self.second_null_js = math.nan
        if second_feature is not None:
            self.second = NDB(num_bins, alpha, seed=seed, value_range=value_range, feature=second_feature).fit(
                real, distributed=False)
            self.second_null_js = expected_null_js(num_bins, self.second.bins.num_reference, self.num_samples)
        # coverage metrics on as many samples as the birthday test: a fixed real subset, chosen by content
        self._coverage_real = _subset(real, self.birthday_samples, seed)
        self.nearest_k = 5
        self.null_coverage = expected_null_coverage(self.nearest_k, self._coverage_real.shape[0], self.birthday_samples)
        # the duplicates of as many real samples at the same threshold: the level the generator's are tested against
        self.real_duplicates = int(birthday(self._coverage_real, num_pairs=1, threshold=self.duplicate_threshold,
                                            value_range=value_range, feature=self.feature).num_duplicates or 0)
        # effective mode counts (RKE) of the same real subset and each epoch's samples, at the scale that resolves the
        # real data into modes (fastndb.modes' own choice for the missing modes), fixed once
        from fastndb._core.modes import modes

        first = modes(self._coverage_real, self._coverage_real, top=0, value_range=value_range, feature=self.feature,
                      seed=seed, vendi_samples=2)
        self.modes_bandwidth = first.modes_bandwidth
        self.modes_real = modes(self._coverage_real, self._coverage_real, bandwidth=self.modes_bandwidth, top=0,
                                value_range=value_range, feature=self.feature, seed=seed, vendi_samples=2).real
        self.last_verdict: Verdict | None = None
        self.collapsed_at: int | None = None
        self.last_result: NDBResult | None = None
        self._above = 0

    def observe(self, samples: Tensor, epoch: int) -> dict:
        """Score one epoch's generated samples and update the collapse flag; call it from any training loop.

        Args:
            samples: ``(n, C, H, W)`` (or ``(n, D)``) generated samples on any device, in the range the monitor was
                built for (``value_range``); NDB scores all of them, the birthday test and the coverage metrics the
                first ``birthday_samples``.
            epoch: the epoch number (1-based); epochs up to ``warmup`` never count towards collapse.

        Returns:
            A dict of plain numbers: ``ndb``, ``ndb_ratio``, ``js``, ``p_value`` (NDB), ``num_duplicates``,
            ``duplicate_rate`` (the birthday test at :attr:`duplicate_threshold`), ``recall``, ``coverage``
            (``k = 5``; chance level :attr:`null_coverage`), ``missing_bins`` (bins under-filled beyond
            ``alpha / K``), ``emptied_bins`` (those of them below a quarter of their real share),
            ``coverage_shortfall`` (standard errors below chance), ``missing_mass``, ``missing_low``,
            ``missing_high`` (the missing mass and its 95% interval), ``decision`` (the verdict: ``"missing"``,
            ``"within tolerance"`` or ``"inconclusive"``; also as ``signal``), ``collapsed`` (whether mode dropping
            has been flagged by now), ``modes_real``, ``modes_fake``, ``modes_ratio_low``, ``modes_ratio_high``
            (the effective mode counts, RKE, of the real subset and of the first ``birthday_samples`` samples at
            :attr:`modes_bandwidth`, and the 95% interval of their ratio: :func:`fastndb.modes`), and with
            ``second_feature`` also ``feature_ndb_ratio``, ``feature_js``.
            :attr:`last_result` holds the full NDB result, :attr:`last_verdict` the verdict.
        """
        epoch = check_int(epoch, "epoch", minimum=0)
        samples = _samples(samples, "samples")
        result = self.ndb.score(samples)
        self.last_result = result
        pairs = birthday(samples[: self.birthday_samples], num_pairs=1, threshold=self.duplicate_threshold,
                         value_range=self.value_range, feature=self.feature)
        covered = prdc(self._coverage_real, samples[: self.birthday_samples], nearest_k=self.nearest_k,
                       value_range=self.value_range, feature=self.feature)
        missing, emptied, short = missing_mode_bins(result), emptied_bins(result), coverage_shortfall(covered)
        fake_subset = samples[: self.birthday_samples]
        permutation_p = duplicate_permutation_test(fake_subset, self._coverage_real, self.duplicate_threshold,
                                                   seed=self.seed + epoch, value_range=self.value_range,
                                                   feature=self.feature)
        duplicates = compare_duplicates(pairs, self.real_duplicates, self._coverage_real.shape[0],
                                        permutation_p=permutation_p)
        verdict = decide(result, coverage=covered, duplicates=duplicates, tolerance=self.tolerance)
        self.last_verdict = verdict
        counted = epoch > self.warmup
        self._above = self._above + 1 if counted and verdict.flagged else 0
        if self._above >= self.patience and self.collapsed_at is None:
            self.collapsed_at = epoch
        stats = {"ndb": result.ndb, "ndb_ratio": result.ndb_ratio, "js": result.js, "p_value": result.p_value,
                 "num_duplicates": int(pairs.num_duplicates or 0), "duplicate_rate": float(pairs.duplicate_rate or 0),
                 "recall": covered.recall, "coverage": covered.coverage, "missing_bins": missing,
                 "emptied_bins": emptied, "coverage_shortfall": short, "signal": verdict.decision,
                 "missing_mass": result.missing.estimate, "missing_low": result.missing.low,
                 "missing_high": result.missing.high, "decision": verdict.decision,
                 "collapsed": self.collapsed_at is not None}
        if self.second is not None:
            second = self.second.score(samples)
            stats.update(feature_ndb_ratio=second.ndb_ratio, feature_js=second.js)
        stats.update(self._mode_counts(fake_subset))
        return stats

    def _mode_counts(self, fake: Tensor) -> dict:
        """The RKE counts of the real subset and of ``fake`` at :attr:`modes_bandwidth`, the ratio's interval."""
        from fastndb._core.modes import modes

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a collapsed generator's samples may sit beyond the kernel's reach
            out = modes(self._coverage_real, fake, bandwidth=self.modes_bandwidth, top=0, value_range=self.value_range,
                        feature=self.feature, seed=self.seed, vendi_samples=2)
        return {"modes_real": out.real.count, "modes_fake": out.fake.count, "modes_ratio_low": out.ratio_low,
                "modes_ratio_high": out.ratio_high}

    def generate_and_observe(self, generator: Generator, epoch: int) -> dict:
        """Draw :attr:`num_samples` from ``generator`` on its device (seeded latents) and :meth:`observe` them."""
        device = next(generator.parameters()).device
        rng = torch.Generator(device=device).manual_seed(self.seed + 7919 * epoch)
        return self.observe(sample(generator, self.num_samples, generator_rng=rng), epoch)


@dataclass(frozen=True)
class GANConfig:
    """Options of :func:`train_gan` (see the module docstring)."""

    epochs: int = 10
    batch_size: int = 64
    latent_size: int = 100
    width: int = 64
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    label_flip: float = 0.0
    label_smoothing: float = 0.0
    steps_per_epoch: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", minimum=1)
        if self.steps_per_epoch is not None:
            check_int(self.steps_per_epoch, "steps_per_epoch", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=2)
        check_int(self.latent_size, "latent_size", minimum=1)
        check_int(self.width, "width", minimum=1)
        for name in ("label_flip", "label_smoothing"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ValueError(f"{name}: expected a share in [0, 1), got {value!r}")


@dataclass
class TrainingResult:
    """Outcome of :func:`train_gan`: per-epoch records, the epoch collapse was flagged (or ``None``), the models
    and the monitor (its bins, its chance levels ``null_ndb_ratio`` and ``null_js``)."""

    records: list[EpochRecord]
    collapsed_at: int | None
    generator: Generator
    discriminator: Discriminator
    config: GANConfig
    files: list[Path] = field(default_factory=list)
    monitor: CollapseMonitor | None = None


def _seeded_models(config: GANConfig, channels: int, image_size: int, device: torch.device) -> tuple:
    """Models initialised from ``config.seed`` without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):  # restores the CPU generator afterwards
        torch.default_generator.manual_seed(config.seed)  # the CPU generator only: no CUDA generator is reseeded
        generator = Generator(config.latent_size, channels, image_size, config.width)
        discriminator = Discriminator(channels, image_size, config.width)
    return generator.to(device), discriminator.to(device)


def train_gan(
    real: Tensor,
    config: GANConfig = GANConfig(),
    *,
    monitor: CollapseMonitor | None = None,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainingResult:
    """Train a DCGAN on ``real`` images ``(N, C, H, W)`` in [-1, 1], on their device, monitoring collapse.

    Args:
        real: training images in [-1, 1]; 28, 32 or 64 pixels square.
        config: :class:`GANConfig`.
        monitor: a :class:`CollapseMonitor` (``None``: losses only).
        out_dir: if given, a sample grid per epoch (``samples_epochNNN.png``), ``curves.png`` and
            ``history.json`` are written there (figures need matplotlib).
        progress: tqdm bar over epochs (``None``: only on a terminal).
        on_epoch: called with each :class:`EpochRecord` (e.g. to print a table row).

    Returns:
        :class:`TrainingResult`.
    """
    if real.dim() != 4 or real.shape[2] != real.shape[3]:
        raise ValueError(f"real: expected square images (N, C, H, W), got shape {tuple(real.shape)}")
    device = real.device
    n, channels, image_size = real.shape[0], real.shape[1], real.shape[2]
    generator, discriminator = _seeded_models(config, channels, image_size, device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=config.betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=config.betas)
    bce = nn.BCELoss()
    shuffle_rng = torch.Generator().manual_seed(config.seed)
    noise_rng = torch.Generator(device=device).manual_seed(config.seed + 1)
    fixed_noise = torch.randn(64, config.latent_size, device=device, generator=noise_rng)
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    records: list[EpochRecord] = []
    files: list[Path] = []
    real_target = 1.0 - config.label_smoothing
    with progress_bar(progress, total=config.epochs, desc="DCGAN", unit="epoch") as bar:
        for epoch in range(1, config.epochs + 1):
            start = time.perf_counter()
            d_total = torch.zeros((), device=device)
            g_total = torch.zeros((), device=device)
            steps = 0
            steps_total = config.steps_per_epoch or max(1, n // config.batch_size)
            step_bar = progress_bar(progress, total=steps_total, desc=f"epoch {epoch}", unit="batch")
            for rows in _batches(n, config, shuffle_rng, device):
                batch = real.index_select(0, rows)
                b = batch.shape[0]
                z = torch.randn(b, config.latent_size, device=device, generator=noise_rng)
                fake = generator(z)
                real_labels = torch.full((b,), real_target, device=device)
                fake_labels = torch.zeros(b, device=device)
                if config.label_flip > 0:  # flip a share of the discriminator's labels
                    flip_real = torch.rand(b, device=device, generator=noise_rng) < config.label_flip
                    flip_fake = torch.rand(b, device=device, generator=noise_rng) < config.label_flip
                    real_labels = torch.where(flip_real, 0.0, real_labels)
                    fake_labels = torch.where(flip_fake, 1.0, fake_labels)
                d_loss = bce(discriminator(batch), real_labels) + bce(discriminator(fake.detach()), fake_labels)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                g_loss = bce(discriminator(fake), torch.ones(b, device=device))
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                d_total += d_loss.detach()
                g_total += g_loss.detach()
                steps += 1
                step_bar.update(1)
            step_bar.close()
            stats = monitor.generate_and_observe(generator, epoch) if monitor is not None else {}
            record = EpochRecord(
                epoch=epoch, d_loss=float(d_total) / max(steps, 1), g_loss=float(g_total) / max(steps, 1),
                ndb=stats.get("ndb", -1), ndb_ratio=stats.get("ndb_ratio", math.nan), js=stats.get("js", math.nan),
                p_value=stats.get("p_value", math.nan), num_duplicates=stats.get("num_duplicates", -1),
                duplicate_rate=stats.get("duplicate_rate", math.nan), collapsed=stats.get("collapsed", False),
                seconds=time.perf_counter() - start, feature_ndb_ratio=stats.get("feature_ndb_ratio", math.nan),
                feature_js=stats.get("feature_js", math.nan), recall=stats.get("recall", math.nan),
                coverage=stats.get("coverage", math.nan), missing_bins=stats.get("missing_bins", -1),
                emptied_bins=stats.get("emptied_bins", -1),
                coverage_shortfall=stats.get("coverage_shortfall", math.nan), signal=stats.get("signal", ""),
                missing_mass=stats.get("missing_mass", math.nan), missing_low=stats.get("missing_low", math.nan),
                missing_high=stats.get("missing_high", math.nan), decision=stats.get("decision", ""),
            )
            records.append(record)
            logger.info("epoch %d: %s", epoch, record)
            if folder is not None:
                files.append(_save_grid(generator, fixed_noise, folder / f"samples_epoch{epoch:03d}.png", epoch))
            if on_epoch is not None:
                on_epoch(record)
            bar.update(1)
    collapsed_at = monitor.collapsed_at if monitor is not None else None
    if folder is not None:
        (folder / "history.json").write_text(json.dumps(
            {"config": asdict(config), "collapsed_at": collapsed_at, "records": [r.to_dict() for r in records],
             **({"null_ndb_ratio": monitor.null_ndb_ratio, "null_js": monitor.null_js} if monitor is not None else {})},
            indent=1))
        files.append(folder / "history.json")
        if monitor is not None:
            files.append(_save_curves(records, monitor, collapsed_at, folder / "curves.png"))
    return TrainingResult(records, collapsed_at, generator, discriminator, config, files, monitor)


def _batches(n: int, config: GANConfig, rng: torch.Generator, device: torch.device):
    """Row indices of one epoch's batches: passes over shuffled data, ``steps_per_epoch`` batches if set."""
    per_pass = max(1, n // config.batch_size)
    steps = config.steps_per_epoch or per_pass
    order = torch.empty(0, dtype=torch.int64)
    for step in range(steps):
        if step % per_pass == 0:
            order = torch.randperm(n, generator=rng).to(device)
        first = (step % per_pass) * config.batch_size
        yield order[first : first + config.batch_size]


def _save_grid(generator: Generator, noise: Tensor, path: Path, epoch: int) -> Path:
    from fastndb import plot

    images = sample(generator, noise.shape[0], latents=noise)
    fig, _ = plot.image_grid((images + 1) / 2, title=f"epoch {epoch}")
    fig.savefig(path, dpi=90)
    plot.close(fig)
    return path


def _save_curves(records: list[EpochRecord], monitor: CollapseMonitor, collapsed_at: int | None,
                 path: Path) -> Path:
    from fastndb import plot

    fig, _ = plot.training_curves([r.to_dict() for r in records], tolerance=monitor.tolerance,
                                  collapsed_at=collapsed_at, null_level=monitor.null_ndb_ratio,
                                  null_coverage=monitor.null_coverage)
    fig.savefig(path, dpi=100)
    plot.close(fig)
    return path
