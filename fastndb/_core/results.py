"""Results: typed, frozen outcome of an NDB comparison."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor


def fields_as_dict(result: object, *, python: bool = False) -> dict:
    """A dataclass's fields as a dict; ``python=True`` turns tensors into lists (JSON-ready)."""
    out = {}
    for f in fields(result):  # type: ignore[arg-type]
        value = getattr(result, f.name)
        out[f.name] = value.tolist() if python and isinstance(value, Tensor) else value
    return out


@dataclass(frozen=True)
class MissingMass:
    r"""How much of the real mass the generator under-fills, over the bins: :math:`\theta = \sum_k (r_k - f_k)_+`,
    the total-variation distance of the two bin histograms (what is missing in some bins is in excess in others).

    What it means: the share of the real data that lies in regions (bins) the generator fills less than the data
    does, corrected for sampling noise (:mod:`fastndb._core.effects`); 0.19 reads "about 19% of the real data is in
    regions the generator under-fills". What it does not mean: it is measured at the resolution of the bins (a
    mode smaller than a bin, or a deficit spread thinly over many bins, is not seen: the estimate is then low), in
    the chosen feature space, and it says nothing about sample quality inside the filled regions.

    Attributes:
        estimate: the chance-corrected estimate :math:`\hat\theta` (it can be slightly below 0 when nothing is
            missing: an unbiased estimate near 0 must be).
        low, high: its interval at ``confidence`` (``low`` is 0 unless the estimate is beyond chance).
        confidence: level of the intervals.
        p_value: test of "nothing is missing" (fake drawn like real): the share of null histograms (drawn from the
            pooled shares) with an estimate at least as large.
        chance_sd: the estimate's standard deviation when nothing is missing, at these sizes.
        plug_in: the raw :math:`\sum_k (\hat r_k - \hat f_k)_+`, biased upwards by noise.
        plug_in_chance: ``plug_in``'s mean when nothing is missing (its chance level).
        emptied_mass: the real share in emptied bins (under-filled beyond ``alpha / K`` and below a quarter of the
            real share): the part that points at dropped modes rather than shifted ones.
        emptied_low, emptied_high: its interval (a Poissonised bootstrap of the emptied-bin rule; Wilson's where
            nothing is emptied).
        emptied_bins: how many bins are emptied.
        affected_bins: bins the estimator found under- or over-filled against the common fill ratio.
        num_bins, num_real, num_fake: ``K``, :math:`n_r`, :math:`n_f`.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    p_value: float
    chance_sd: float
    plug_in: float
    plug_in_chance: float
    emptied_mass: float
    emptied_low: float
    emptied_high: float
    emptied_bins: int
    affected_bins: int
    num_bins: int
    num_real: int
    num_fake: int

    def to_dict(self, *, python: bool = False) -> dict:
        """Fields as a dict (already plain Python values)."""
        return fields_as_dict(self, python=python)

    def __str__(self) -> str:
        return f"{100 * max(self.estimate, 0):.1f}% ({100 * self.low:.1f}-{100 * self.high:.1f}%)"


@dataclass(frozen=True)
class NDBResult:
    """The NDB comparison of a fake sample's bin histogram against the real one.

    Scalars are Python numbers; per-bin fields are ``(K,)`` tensors on the device the work ran on.

    What the numbers mean: ``ndb`` counts bins whose share of fake samples differs from the real share by more
    than chance would explain at level ``alpha`` (two-sided pooled two-proportion z-test per bin). Under the null
    (fake drawn like real) and with independent reference proportions (``mode="holdout"``) about ``alpha * K``
    bins are flagged by chance: compare ``ndb`` with ``expected_false_positives``, or use ``correction`` or the
    overall ``p_value``. What they do not mean: a low NDB does not show that samples are good (a model that
    copies the training set scores perfectly), and the bins only see differences large enough to move samples
    between k-means cells in the chosen feature space.

    Attributes:
        ndb: number of statistically different bins.
        ndb_ratio: ``ndb / num_bins``.
        js: Jensen-Shannon divergence (natural log, in ``[0, ln 2]``) of the two bin histograms.
        num_bins: ``K``.
        alpha: significance level of each per-bin test.
        num_real: reference (real) sample size ``n_r`` behind ``real_counts``.
        num_fake: fake sample size ``n_f``.
        real_counts: ``(K,)`` int64 reference counts.
        fake_counts: ``(K,)`` int64 fake counts.
        real_proportions: ``(K,)`` float64 ``real_counts / n_r``.
        fake_proportions: ``(K,)`` float64 ``fake_counts / n_f``.
        z: ``(K,)`` float64 z statistics; ``z > 0``: the bin is over-represented in the fake sample.
        p_values: ``(K,)`` float64 two-sided p-values of the per-bin tests, uncorrected.
        p_values_adjusted: ``(K,)`` float64 p-values after ``correction`` (equal to ``p_values`` without one).
        different: ``(K,)`` bool, the bins counted in ``ndb``.
        correction: ``None``, ``"holm"`` or ``"bh"``.
        z_threshold: if set, ``different`` is ``|z| > z_threshold`` instead of the p-value rule.
        expected_false_positives: ``alpha * K``, the mean of ``ndb`` under the null without correction.
        expected_null_js: the mean ``js`` under the null at these sample sizes, ``(K - 1) / 8 * (1/n_r + 1/n_f)``
            (:func:`~fastndb._core.statistics.expected_null_js`; for ``mode="holdout"``, whose reference counts are
            independent of the bins): a ``js`` near it is sampling noise, one many times larger a real difference.
        chi2: chi-square statistic of the 2 x K test of homogeneity (bins empty in both samples dropped).
        chi2_dof: its degrees of freedom (non-empty bins - 1).
        p_value: the chi-square test's p-value for "the two histograms differ".
        mode: ``"holdout"`` or ``"original"``: how the reference proportions were obtained.
        precision: arithmetic of the bin assignment, e.g. ``"float32"``, ``"float64"``, or a note that TF32 /
            reduced-precision matmul was allowed (which can move near-tie samples between bins).
        missing: how much of the real mass the generator under-fills, with its interval and chance level
            (:class:`MissingMass`); the effect size to read first.
        ndb_p_value: the chance of as many bins below ``alpha`` (uncorrected per-bin rule) when fake is drawn like
            real, from the missing mass's null draws (histograms drawn from the pooled shares): NDB's count as a
            test, without assuming the bins independent.
        strongest_p_value: the chance, on the same draws, of a smallest per-bin p-value at least as small as the
            observed one (Westfall and Young's min-p): the strongest bin as a test over all ``K``.
        tolerance: the missing mass the verdict accepts (:class:`TestOptions`).
        difference: ``(K,)`` float64 ``fake_proportions - real_proportions`` (negative: under-filled).
        difference_low, difference_high: ``(K,)`` float64, its 95% interval per bin (Newcombe's hybrid score
            interval, :func:`~fastndb._core.effects.bin_differences`).
    """

    ndb: int
    ndb_ratio: float
    js: float
    num_bins: int
    alpha: float
    num_real: int
    num_fake: int
    real_counts: Tensor
    fake_counts: Tensor
    real_proportions: Tensor
    fake_proportions: Tensor
    z: Tensor
    p_values: Tensor
    p_values_adjusted: Tensor
    different: Tensor
    correction: str | None
    z_threshold: float | None
    expected_false_positives: float
    expected_null_js: float
    chi2: float
    chi2_dof: int
    p_value: float
    mode: str
    precision: str
    missing: MissingMass | None = None
    ndb_p_value: float | None = None
    strongest_p_value: float | None = None
    tolerance: float = 0.01
    difference: Tensor | None = None
    difference_low: Tensor | None = None
    difference_high: Tensor | None = None

    def to_dict(self, *, python: bool = False) -> dict:
        """Fields as a dict (``missing`` as its own dict).

        Args:
            python: convert tensors to lists (JSON-ready) instead of keeping them as tensors.
        """
        out = fields_as_dict(self, python=python)
        out["missing"] = None if self.missing is None else self.missing.to_dict(python=python)
        return out

    def __repr__(self) -> str:
        return (
            f"NDBResult(ndb={self.ndb}, ndb_ratio={self.ndb_ratio:.4f}, js={self.js:.6f}, num_bins={self.num_bins}, "
            f"alpha={self.alpha}, expected_false_positives={self.expected_false_positives:.2f}, "
            f"p_value={self.p_value:.4g}, missing={self.missing}, num_real={self.num_real}, "
            f"num_fake={self.num_fake}, mode={self.mode!r})"
        )


@dataclass(frozen=True)
class BirthdayResult:
    r"""The closest pairs among ``s`` samples and, with a threshold, the birthday-paradox support estimate.

    Arora & Zhang (2017): if a sample of size ``s`` from a distribution with ``N`` equally likely outcomes has
    :math:`C` pairs that coincide, :math:`E[C] = s (s - 1) / (2 N)`, so :math:`\hat N = s (s - 1) / (2 C)`. What
    it means: ``support_estimate`` is the size of a uniform distribution that would produce as many near-duplicate
    pairs; for a non-uniform distribution it is an *effective* support size (collisions come mostly from its
    heavy parts), so it is a lower-bound-like figure, and it counts outcomes at the resolution of ``threshold``.
    What it does not mean: many duplicates show a small support (collapse or memorisation); few duplicates do not
    show a large or diverse support beyond what ``s`` can resolve (about :math:`s^2`).

    Attributes:
        pairs: ``(P, 2)`` int64 sample indices ``i < j`` of the closest pairs.
        distances: ``(P,)`` float64, ascending, computed exactly from the differences: Euclidean distance for
            ``metric="l2"``, cosine distance ``1 - cos`` for ``metric="cosine"``.
        metric: ``"l2"`` or ``"cosine"``.
        num_samples: ``s``.
        threshold: duplicate threshold (same units as ``distances``), or ``None``.
        num_duplicates: pairs with distance ``<= threshold`` among all ``s (s - 1) / 2`` pairs, or ``None``.
        duplicate_rate: ``num_duplicates / (s (s - 1) / 2)``, the share of pairs that are duplicates, or ``None``.
        support_estimate: :math:`s (s - 1) / (2 C)` (``inf`` when ``C = 0``), or ``None``.
        support_interval: ``(low, high)`` from the exact Poisson interval of ``C`` at ``confidence``, or ``None``.
        confidence: level of ``support_interval`` and ``duplicate_rate_interval``.
        precision: arithmetic of the candidate search (distances themselves are always recomputed in float64).
        duplicate_rate_interval: ``(low, high)`` of ``duplicate_rate`` from the exact (Garwood) Poisson interval
            of the count, or ``None``. Pairs sharing a sample are not independent (a cluster of ``c`` copies makes
            ``c (c - 1) / 2`` pairs), so when duplicates come in clusters the interval is too narrow.
    """

    pairs: Tensor
    distances: Tensor
    metric: str
    num_samples: int
    threshold: float | None
    num_duplicates: int | None
    duplicate_rate: float | None
    support_estimate: float | None
    support_interval: tuple[float, float] | None
    confidence: float
    precision: str
    duplicate_rate_interval: tuple[float, float] | None = None

    def to_dict(self, *, python: bool = False) -> dict:
        """Fields as a dict (``python=True``: tensors as lists, JSON-ready)."""
        return fields_as_dict(self, python=python)

    def __repr__(self) -> str:
        closest = float(self.distances[0]) if self.distances.numel() else float("nan")
        return (
            f"BirthdayResult(num_samples={self.num_samples}, metric={self.metric!r}, closest={closest:.6g}, "
            f"threshold={self.threshold}, num_duplicates={self.num_duplicates}, "
            f"support_estimate={self.support_estimate}, support_interval={self.support_interval})"
        )


@dataclass(frozen=True)
class ElbowResult:
    """k-means inertia against K, and the K the knee rule picks.

    Attributes:
        ks: the K values tried, ascending.
        inertias: k-means inertia (sum of squared distances to the nearest centre) for each K.
        chosen_k: the K at the knee: the point farthest from the straight line through the first and last points
            of the curve, after scaling both axes to [0, 1] (the "Kneedle" rule of Satopaa et al. 2011).
        rule: the rule, in words.
    """

    ks: tuple[int, ...]
    inertias: tuple[float, ...]
    chosen_k: int
    rule: str

    def to_dict(self, *, python: bool = False) -> dict:
        """Fields as a dict (already plain Python values)."""
        out = fields_as_dict(self, python=python)
        out["ks"], out["inertias"] = list(self.ks), list(self.inertias)
        return out


@dataclass(frozen=True)
class PRDCResult:
    r"""Precision, recall, density and coverage of fake samples against real ones (Kynkäänniemi et al. 2019,
    Naeem et al. 2020), with the per-sample outcomes behind them.

    With :math:`r_i` the distance from real sample :math:`x_i` to its :math:`k`-th nearest other real sample,
    :math:`s_j` the same for fake sample :math:`y_j` among the fakes, and :math:`[\cdot]` the test
    :math:`d < r` (``<=`` with ``inclusive=True``):

    .. math::
        \text{precision} = \frac{1}{M} \sum_j \big[\exists i: d(x_i, y_j) < r_i\big], \quad
        \text{recall} = \frac{1}{N} \sum_i \big[\exists j: d(x_i, y_j) < s_j\big],

        \text{density} = \frac{1}{kM} \sum_j \sum_i \big[d(x_i, y_j) < r_i\big], \quad
        \text{coverage} = \frac{1}{N} \sum_i \big[\exists j: d(x_i, y_j) < r_i\big].

    What they answer: precision, the share of fake samples that look real (inside the real manifold); recall, the
    share of real samples the fakes reach (inside the fake manifold); density, how crowded the real neighbourhoods
    of the fakes are (1 on average when fake is drawn like real; above 1 where fakes pile up near real samples);
    coverage, the share of real samples with a fake sample in their own neighbourhood: the real regions, hence
    modes, that the generator reaches. Recall is inflated by fake outliers (their large balls swallow real
    samples); coverage is not, which is why Naeem et al. prefer it.

    Attributes:
        precision, recall, density, coverage: the four numbers (density may exceed 1).
        nearest_k: ``k``.
        num_real, num_fake: ``N``, ``M``.
        inclusive: whether the tests were ``<=`` (torch-fidelity, the papers' text) rather than ``<`` (``prdc``).
        real_radii: ``(N,)`` float64 :math:`r_i`, in the samples' units.
        fake_radii: ``(M,)`` float64 :math:`s_j`.
        real_covered: ``(N,)`` bool: some fake sample lies in this real sample's ball (coverage); the real samples
            where it is ``False`` are the regions the generator misses.
        real_recalled: ``(N,)`` bool: this real sample lies in some fake sample's ball (recall).
        fake_realistic: ``(M,)`` bool: this fake sample lies in some real sample's ball (precision).
        fake_density: ``(M,)`` int64: how many real balls hold this fake sample (density, times ``k``).
        precision_mode: arithmetic of the candidate search (every boundary case is re-tested in float64).
        precision_interval, recall_interval, density_interval, coverage_interval: ``(low, high)`` at
            ``confidence``, by split halves (:func:`~fastndb._core.coverage.split_half_intervals`: both sets
            halved at random ``interval_subsets`` times, the four numbers on independent half-size pairs, their
            differences scaled to full size; a Student interval on the angular scale
            :math:`\arcsin\sqrt{p}` for precision, recall and coverage), or ``None`` when the samples are too few.
        coverage_se: coverage's standard error on its own scale (delta method; ``None`` without intervals).
        interval_se: the four standard errors on the intervals' scale (angular for precision, recall and
            coverage; density's own), ``None`` without intervals.
        interval_df: their Student degrees of freedom (Satterthwaite's, between ``R`` and ``2R - 1``; density's up
            to ``M - 1``), ``None`` without intervals.
        interval_subsets: ``R``, the number of random halvings (0: no intervals).
        confidence: level of the intervals.
    """

    precision: float
    recall: float
    density: float
    coverage: float
    nearest_k: int
    num_real: int
    num_fake: int
    inclusive: bool
    real_radii: Tensor
    fake_radii: Tensor
    real_covered: Tensor
    real_recalled: Tensor
    fake_realistic: Tensor
    fake_density: Tensor
    precision_mode: str
    precision_interval: tuple[float, float] | None = None
    recall_interval: tuple[float, float] | None = None
    density_interval: tuple[float, float] | None = None
    coverage_interval: tuple[float, float] | None = None
    coverage_se: float | None = None
    interval_se: tuple[float, float, float, float] | None = None
    interval_df: tuple[int, int, int, int] | None = None
    interval_subsets: int = 0
    confidence: float = 0.95

    def to_dict(self, *, python: bool = False) -> dict:
        """Fields as a dict (``python=True``: tensors as lists, JSON-ready)."""
        return fields_as_dict(self, python=python)

    @property
    def expected_null_coverage(self) -> float:
        """The coverage expected by chance alone, for fake drawn like real at these sizes
        (:func:`~fastndb._core.statistics.expected_null_coverage`); density's is 1."""
        from fastndb._core.statistics import expected_null_coverage

        return expected_null_coverage(self.nearest_k, self.num_real, self.num_fake)

    @property
    def coverage_p_value(self) -> float | None:
        """One-sided p-value of "coverage is at its chance level" against "below it":
        :math:`F_\\nu((\\phi(c) - \\phi(c_0)) / \\mathrm{se}_\\phi)`, with :math:`\\phi(p) = \\arcsin\\sqrt p`,
        the Student distribution function on the degrees of freedom :math:`\\nu` of the split-half standard
        error (``interval_df``; ``None`` without intervals)."""
        if self.interval_se is None:
            return None
        from fastndb._core.coverage import student_cdf

        t = (math.asin(math.sqrt(self.coverage)) - math.asin(math.sqrt(self.expected_null_coverage))) / max(
            self.interval_se[3], 1e-12)
        return student_cdf(t, self.interval_df[3])

    def scores(self) -> dict:
        """The four numbers alone."""
        return {"precision": self.precision, "recall": self.recall, "density": self.density,
                "coverage": self.coverage}

    def __repr__(self) -> str:
        return (f"PRDCResult(precision={self.precision:.4f}, recall={self.recall:.4f}, density={self.density:.4f}, "
                f"coverage={self.coverage:.4f}, nearest_k={self.nearest_k}, num_real={self.num_real}, "
                f"num_fake={self.num_fake})")


@dataclass(frozen=True)
class ModeCount:
    r"""An effective mode count: the RKE count :math:`1 / \hat U` (:mod:`fastndb._core.modes`) with its interval.

    Attributes:
        count: :math:`1/\hat U`, :math:`\hat U` the mean of :math:`k(x_i, x_j)^2` over pairs ``i != j``; it estimates
            :math:`1 / E[k(X, X')^2]` (``M`` for ``M`` equal, separated modes) and does not grow with ``n``.
        low, high: its interval at the result's confidence (delta method on the log scale).
        published: the estimator as Jalali et al. publish it, :math:`n^2 / \sum_{ij} k^2` with the diagonal
            (pulled towards ``n`` at small ``n``: compare it only at equal ``n``).
        num_samples: ``n``.
        log_se: standard error of :math:`\log` count.
    """

    count: float
    low: float
    high: float
    published: float
    num_samples: int
    log_se: float

    def to_dict(self, *, python: bool = False) -> dict:
        """Fields as a dict (already plain Python values)."""
        return fields_as_dict(self, python=python)

    def __str__(self) -> str:
        return f"{self.count:.3g} ({self.low:.3g}-{self.high:.3g})"


@dataclass(frozen=True)
class Mode:
    r"""One mode one side has and the other lacks: an eigenvector :math:`v` of :math:`C_r - C_f` (missing) or
    :math:`C_f - C_r` (invented) in the shared random Fourier space (:mod:`fastndb._core.modes`).

    Attributes:
        weight: its eigenvalue, :math:`v^\top C_r v - v^\top C_f v` (missing; swapped for invented): about the mass
            the mode lacks on the other side, for separated modes.
        real_share, fake_share: :math:`v^\top C v` of each side: about the mode's weight in the real and in the fake
            data.
        real_share_se, fake_share_se: their standard errors (the loadings' spread over :math:`\sqrt n`, ``v`` held).
        examples: ``(examples,)`` int64 indices of the samples that load the mode most (real samples for a missing
            mode, fake samples for an invented one), on the device the work ran on.
        example_loadings: ``(examples,)`` float64 their loadings :math:`(\phi(x)^\top v)^2`.
    """

    weight: float
    real_share: float
    fake_share: float
    real_share_se: float
    fake_share_se: float
    examples: Tensor
    example_loadings: Tensor

    def swapped(self) -> Mode:
        """The same mode with the sides' shares exchanged (a mode found with fake as the first side)."""
        return Mode(weight=self.weight, real_share=self.fake_share, fake_share=self.real_share,
                    real_share_se=self.fake_share_se, fake_share_se=self.real_share_se, examples=self.examples,
                    example_loadings=self.example_loadings)

    def to_dict(self, *, python: bool = False) -> dict:
        """Fields as a dict (``python=True``: tensors as lists)."""
        return fields_as_dict(self, python=python)


@dataclass(frozen=True)
class ModesResult:
    r"""How many modes each side has, and which the generator misses or invents (:func:`fastndb.modes`).

    What it means: at the kernel's bandwidth, the real data have about ``real.count`` modes of equal weight, the
    generator about ``fake.count``; ``ratio`` below 1 says the generator spreads over fewer (its interval says
    whether that is beyond sampling noise). ``missing`` lists directions the real data load and the generator does
    not, with the real samples that show them. What it does not mean: a count is not a number of classes; it
    depends on the bandwidth (compare only at one bandwidth, which is why the fake side uses the real side's) and on
    the feature space, and a generator that copies the training set gets the real count.

    Attributes:
        real, fake: :class:`ModeCount` of each side.
        ratio, ratio_low, ratio_high: ``fake.count / real.count`` with its interval (the sides independent).
        vendi_real, vendi_fake: the Vendi counts (order 1) on ``vendi_samples`` samples of each side.
        vendi_samples: samples per side behind them (equal, so they compare). vendi_method: ``"exact"`` or
            ``"fourier"`` (random Fourier features).
        bandwidth: :math:`\sigma`, in the samples' units (after ``feature=``). bandwidth_rule: ``"plateau"`` or
            ``"given"``.
        missing: modes the real data have and the generator lacks, strongest first. invented: the reverse.
        num_features: ``r`` random Fourier frequencies behind ``missing``, ``invented`` and a ``"fourier"`` Vendi.
        confidence: level of the intervals.
        curve_bandwidths: ``bandwidth`` and its halvings, five times. curve_real, curve_fake: the RKE counts of
            each side there (on at most 2,000 samples per side): how the counts depend on the scale; compare the two
            sides at one bandwidth, never across.
        modes_bandwidth: the bandwidth of ``missing`` and ``invented``: ``bandwidth``, or where the real data count as
            one mode there, the first of ``curve_bandwidths`` at which their count reaches 10 (a kernel that sees one
            mode cannot tell which part of it is missing).
    """

    real: ModeCount
    fake: ModeCount
    ratio: float
    ratio_low: float
    ratio_high: float
    vendi_real: float
    vendi_fake: float
    vendi_samples: int
    vendi_method: str
    bandwidth: float
    bandwidth_rule: str
    missing: tuple[Mode, ...]
    invented: tuple[Mode, ...]
    num_features: int
    confidence: float
    curve_bandwidths: tuple[float, ...] = ()
    curve_real: tuple[float, ...] = ()
    curve_fake: tuple[float, ...] = ()
    modes_bandwidth: float = math.nan

    def to_dict(self, *, python: bool = False) -> dict:
        """Fields as a dict, counts and modes as their own dicts (``python=True``: JSON-ready)."""
        out = fields_as_dict(self, python=python)
        out["real"], out["fake"] = self.real.to_dict(), self.fake.to_dict()
        out["missing"] = [mode.to_dict(python=python) for mode in self.missing]
        out["invented"] = [mode.to_dict(python=python) for mode in self.invented]
        return out

    def __repr__(self) -> str:
        return (f"ModesResult(real={self.real}, fake={self.fake}, ratio={self.ratio:.3g} "
                f"({self.ratio_low:.3g}-{self.ratio_high:.3g}), vendi={self.vendi_real:.3g} vs {self.vendi_fake:.3g}, "
                f"bandwidth={self.bandwidth:.4g}, missing={len(self.missing)}, invented={len(self.invented)})")


@dataclass(frozen=True)
class MemorizationResult:
    r"""Which generated samples copy a training sample, and how many (:func:`fastndb.memorization`).

    What it means: ``copy[j]`` says generated sample ``j`` lies closer to one training sample, relative to the
    second-nearest, than held-out real data come (a conformal p-value at most ``alpha``); a generator that makes no
    copies has about ``chance_level`` of its samples flagged, and ``copy_share`` is the share beyond that. What it
    does not mean: a copy is judged in the feature space given (pixels see pixel copies; an embedding sees copies of
    content), a copy perturbed beyond the spread of held-out data is not flagged (``copy_share`` is then a lower
    bound), and a generator can memorise without copying (samples that blend a few training samples).

    Attributes:
        num_train, num_fake, num_test: the samples behind it (``num_test`` 0: no test set).
        calibration: ``"test"`` (the held-out samples calibrate the flags) or ``"train"`` (each training sample
            against the others).
        alpha: the flags' false-alarm rate on samples that are no copies. confidence: level of the intervals.
        nearest_train: ``(M,)`` int64 index of each generated sample's nearest training sample.
        nearest_distance, second_distance: ``(M,)`` float64 distances to the nearest and second-nearest training
            samples, in the samples' units (after ``feature=``).
        ratio: ``(M,)`` float64 ``nearest_distance / second_distance`` (0 when both are 0).
        p_value: ``(M,)`` float64 conformal p-value of each ratio against the calibration set's.
        copy: ``(M,)`` bool, ``p_value <= alpha``.
        num_copies: how many are flagged. flagged_share: ``num_copies / num_fake``, flagged_interval its Wilson
            interval.
        chance_level: the share flagged when the generator makes no copies: ``floor(alpha (T + 1)) / (T + 1)``.
        copy_share: ``(flagged_share - chance_level) / (1 - chance_level)``, the share of copies; its
            copy_share_interval adds the calibration's uncertainty.
        copying_p_value: exact test of "no copies" (the flags' Beta-binomial null); copying: it is below
            ``(1 - confidence) / 2``.
        authpct: AuthPct (Alaa et al. 2022), the percentage of authentic generated samples, with its Wilson
            authpct_interval; authpct_chance: the same number for the held-out samples (about 50 for data that are
            no copies; 0 for a generator that copies everything).
        ct: the C_T score (Meehan et al. 2020; below 0: copying; ``None`` without a test set or when no cell holds
            more than 20 generated samples), ct_null_sd its standard deviation under "no copying", ct_p_value the
            one-sided test of copying; ct_cells: k-means cells, ct_cells_used: those that enter it.
        precision_mode: the matmul precision of the candidate search (answers are exact either way).
    """

    num_train: int
    num_fake: int
    num_test: int
    calibration: str
    alpha: float
    confidence: float
    nearest_train: Tensor
    nearest_distance: Tensor
    second_distance: Tensor
    ratio: Tensor
    p_value: Tensor
    copy: Tensor
    num_copies: int
    flagged_share: float
    flagged_interval: tuple[float, float]
    chance_level: float
    copy_share: float
    copy_share_interval: tuple[float, float]
    copying_p_value: float
    copying: bool
    authpct: float
    authpct_interval: tuple[float, float]
    authpct_chance: float
    ct: float | None
    ct_null_sd: float | None
    ct_p_value: float | None
    ct_cells: int
    ct_cells_used: int
    precision_mode: str

    def closest(self, count: int = 16) -> Tensor:
        """Indices ``(min(count, M),)`` of the generated samples most like copies (smallest ratio, then the smallest
        distance), for pictures: show ``fake[i]`` next to ``train[nearest_train[i]]``."""
        order = torch.argsort(self.nearest_distance, stable=True)
        order = order[torch.argsort(self.ratio[order], stable=True)]
        return order[:count]

    def scores(self) -> dict:
        """The headline numbers: ``copy_share``, ``flagged_share``, ``chance_level``, ``authpct``, ``ct`` (NaN
        without)."""
        return {"copy_share": self.copy_share, "flagged_share": self.flagged_share, "chance_level": self.chance_level,
                "authpct": self.authpct, "ct": math.nan if self.ct is None else self.ct}

    def summary(self) -> str:
        """One paragraph in words, as the CLI and the report print it."""
        lo, hi = self.copy_share_interval
        text = (f"{self.num_copies} of {self.num_fake} generated samples ({100 * self.flagged_share:.1f}%) are closer "
                f"to a training sample than {100 * (1 - self.alpha):.3g}% of held-out samples come (calibrated on "
                f"{self._calibrated_on()}; chance level "
                f"{100 * self.chance_level:.2f}%): copies about {100 * self.copy_share:.1f}% "
                f"({100 * lo:.1f}-{100 * hi:.1f}%), ")
        verdict = "more than chance" if self.copying else "not beyond chance"
        text += f"{verdict} (p = {self.copying_p_value:.2g})."
        text += (f" AuthPct {self.authpct:.1f} ({self.authpct_interval[0]:.1f}-{self.authpct_interval[1]:.1f}; "
                 f"held-out data: {self.authpct_chance:.1f}).")
        if self.ct is None and self.num_test:
            text += " There is no C_T: no k-means cell holds more than 20 generated samples."
        if self.ct is not None:
            text += (f" C_T {self.ct:+.2f} (sd {self.ct_null_sd:.2f} without copying; below 0: closer to the "
                     f"training set than test data; {self.ct_cells_used} of {self.ct_cells} cells).")
        return text

    def _calibrated_on(self) -> str:
        if self.calibration == "test":
            return f"{self.num_test} held-out test samples"
        return f"the {self.num_train} training samples, each against the others"

    def to_dict(self, *, python: bool = False) -> dict:
        """Fields as a dict (``python=True``: JSON-ready lists)."""
        return fields_as_dict(self, python=python)

    def __repr__(self) -> str:
        ct = "none" if self.ct is None else f"{self.ct:.3g}"
        return (f"MemorizationResult(copies={self.num_copies}/{self.num_fake}, copy_share={self.copy_share:.3g} "
                f"({self.copy_share_interval[0]:.3g}-{self.copy_share_interval[1]:.3g}), "
                f"chance={self.chance_level:.3g}, authpct={self.authpct:.3g}, ct={ct})")
