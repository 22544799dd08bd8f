r"""One verdict, calibrated and graded by size: the report, the CLI, the collapse monitor and the Lightning callback
read it (:func:`decide`).

**Is there a difference beyond chance?** Each sign present gives a p-value under "fake drawn like real":

* *histograms*: the chi-square test of the two bin histograms (what JS measures);
* *strongest bin*: the chance of a smallest per-bin p-value at least as small (min-p over the ``K`` bins);
* *NDB count*: the chance of ``ndb`` or more bins below ``alpha`` (both on the missing mass's null draws:
  histograms drawn from the pooled shares, so the bins' dependence is accounted for);
* *missing mass*: its bootstrap test (:func:`~fastndb._core.effects.missing_mass`);
* *coverage*: coverage below its chance level, with the split-half standard error (when computed);
* *duplicates*: the fake samples' duplicate rate against as many real samples' (a permutation test of the pooled
  samples' duplicate graph, :func:`duplicate_permutation_test`, when the birthday test ran).

The combined p-value is Bonferroni's, :math:`\min(1, m \min_i p_i)` over the :math:`m` signs: whatever their
dependence, the chance of any false alarm is at most ``alpha``.

**How much is missing, against a tolerance?** The decision reads the missing mass's interval :math:`[L, U]`:

* ``"missing"``: the difference is beyond chance and :math:`L >` ``tolerance``;
* ``"within tolerance"``: :math:`U \le` ``tolerance`` (the samples may still differ in other ways: the lines say);
* ``"inconclusive"``: otherwise, with about how many more samples would decide.

The default tolerance, 1% of the real mass, is the smallest that the default sizes resolve: at 2,500 real and
2,500 generated samples (62 bins) a 5% drop is decided in at least 80% of draws at it (docs/statistics.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fastndb._core.effects import detectable_missing_mass, missing_mass, samples_factor
from fastndb._core.results import BirthdayResult, MissingMass, NDBResult, PRDCResult, fields_as_dict
from fastndb._core.statistics import _binomial_upper_tail, compare_rates
from fastndb._core.sync import host_values

DEFAULT_TOLERANCE = 0.01  # TestOptions' default; docs/statistics.md has the measurements behind it
DECISIONS = ("missing", "within tolerance", "inconclusive")


def binomial_tail(count: int, trials: int, p: float) -> float:
    """``P(X >= count)`` for ``X ~ Binomial(trials, p)``.

    Example:
        >>> round(binomial_tail(3, 20, 0.05), 4)
        0.0755
    """
    return _binomial_upper_tail(count, trials, p)


@dataclass(frozen=True)
class DuplicateComparison:
    """The fake samples' near-duplicate pairs against as many real samples' at the same threshold.

    Attributes:
        count, pairs: duplicate pairs among the fake samples and the number of pairs they were counted over.
        reference_count, reference_pairs: the same for the real samples.
        ratio: the ratio of the two duplicate rates (``inf`` with no real duplicate, ``nan`` with none at all).
        ratio_low, ratio_high: its exact interval at ``confidence`` (Clopper-Pearson, conditional on the total).
        p_value: one-sided test of "the fake rate is no higher than the real one": the permutation test of
            :func:`duplicate_permutation_test` when the samples were given (exact under exchangeability, whatever
            clusters of copies the data hold), else the exact conditional test of two Poisson counts
            (:func:`~fastndb._core.statistics.compare_rates`), which assumes independent pairs: pairs that share
            samples (a cluster of ``c`` copies makes ``c (c - 1) / 2``) make it too eager.
        confidence: level of the interval.
        test: ``"permutation"`` or ``"Poisson"``, which test gave ``p_value``.
    """

    count: int
    pairs: int
    reference_count: int
    reference_pairs: int
    ratio: float
    ratio_low: float
    ratio_high: float
    p_value: float
    confidence: float
    test: str = "Poisson"

    def to_dict(self, *, python: bool = False) -> dict:
        """Fields as a dict."""
        return fields_as_dict(self, python=python)


def duplicate_permutation_test(fake: Tensor, real: Tensor, threshold: float, *, draws: int = 2000, seed: int = 0,
                               max_pairs: int = 1_000_000, **birthday_options: Any) -> float | None:
    r"""One-sided permutation test that ``fake`` holds more near-duplicate pairs than ``real`` (duplicate rates:
    pairs at distance ``<= threshold`` over all pairs of a set).

    Under the null the ``s_f + s_r`` samples are exchangeable, so the labels are permuted: the duplicate graph of
    the pooled samples is found once (:func:`~fastndb._core.birthday.birthday`, all its pairs at or below the
    threshold), and each permutation's statistic, :math:`C_{ff} / \binom{s_f}{2} - C_{rr} / \binom{s_r}{2}`, is
    a count over its edges. Clusters of copies stay together in the pooled graph, which is what the Poisson test
    gets wrong. Memory: the edges and one chunk of 64 permutations over them.

    Returns:
        the p-value :math:`(1 + \#\{T^* \ge T\}) / (1 + \text{draws})`, or ``None`` when the pooled samples
        hold more than ``max_pairs`` duplicate pairs (the rates then differ so much that no test is needed, or
        the threshold is too loose).
    """
    from fastndb._core.birthday import birthday

    s_f, s_r = fake.shape[0], real.shape[0]
    pooled = torch.cat([fake, real.to(device=fake.device, dtype=fake.dtype)])
    count = birthday(pooled, num_pairs=1, threshold=threshold, **birthday_options).num_duplicates or 0
    if count == 0:
        return 1.0
    if count > max_pairs:
        return None
    edges = birthday(pooled, num_pairs=count, threshold=threshold, **birthday_options).pairs
    pairs_f, pairs_r = s_f * (s_f - 1) / 2, s_r * (s_r - 1) / 2

    def statistic(is_fake: Tensor) -> Tensor:
        a, b = is_fake[..., edges[:, 0]], is_fake[..., edges[:, 1]]
        return (a & b).sum(-1) / pairs_f - (~a & ~b).sum(-1) / pairs_r

    labels = torch.arange(s_f + s_r, device=edges.device) < s_f
    observed = statistic(labels)
    generator = torch.Generator(device=edges.device).manual_seed(seed)
    beyond = torch.zeros((), dtype=torch.int64, device=edges.device)
    for start in range(0, draws, 64):
        chunk = min(64, draws - start)
        ranks = torch.rand(chunk, s_f + s_r, generator=generator, device=edges.device).argsort(1).argsort(1)
        beyond += (statistic(ranks < s_f) >= observed - 1e-15).sum()
    return float(host_values((beyond + 1).to(torch.float64))) / (draws + 1)


def compare_duplicates(fake: BirthdayResult, reference_count: int, reference_samples: int, *,
                       confidence: float = 0.95, permutation_p: float | None = None) -> DuplicateComparison:
    """:class:`DuplicateComparison` of a birthday result with a threshold and the real samples' count
    (``permutation_p``: the p-value of :func:`duplicate_permutation_test`, used instead of the Poisson test's).

    Example:
        >>> import torch, fastndb
        >>> x = torch.cat([torch.zeros(5, 2), torch.randn(95, 2, generator=torch.Generator().manual_seed(0)) * 9])
        >>> c = compare_duplicates(fastndb.birthday(x, threshold=1e-3), reference_count=0, reference_samples=100)
        >>> c.count, c.p_value < 0.01  # ten pairs among five identical samples, none in the real data
        (10, True)
    """
    if fake.num_duplicates is None:
        raise ValueError("fake: expected a birthday result with a threshold (num_duplicates set), got none")
    pairs = fake.num_samples * (fake.num_samples - 1) // 2
    reference_pairs = reference_samples * (reference_samples - 1) // 2
    if reference_pairs <= 0:
        raise ValueError(f"reference_samples: expected at least 2, got {reference_samples}")
    p, ratio, low, high = compare_rates(fake.num_duplicates, pairs, reference_count, reference_pairs,
                                        confidence=confidence)
    return DuplicateComparison(count=fake.num_duplicates, pairs=pairs, reference_count=reference_count,
                               reference_pairs=reference_pairs, ratio=ratio, ratio_low=low, ratio_high=high,
                               p_value=p if permutation_p is None else permutation_p, confidence=confidence,
                               test="Poisson" if permutation_p is None else "permutation")


@dataclass(frozen=True)
class Verdict:
    """The decision and the numbers behind it (see the module docstring).

    Attributes:
        decision: ``"missing"``, ``"within tolerance"`` or ``"inconclusive"``.
        differs: the combined test rejects "fake drawn like real" at ``alpha``.
        p_value: the combined (Bonferroni) p-value.
        tests: each sign's p-value by name.
        missing: the :class:`~fastndb.MissingMass`.
        tolerance: the missing mass accepted.
        alpha: the level of the combined test.
        detectable: the smallest missing mass these sizes decide with 80% power at ``tolerance``.
        samples_factor: by about what factor both sample sizes would have to grow to decide (``inconclusive``
            only; ``None`` otherwise).
        headline: one sentence.
        lines: the evidence, one line per sign.
    """

    decision: str
    differs: bool
    p_value: float
    tests: dict
    missing: MissingMass
    tolerance: float
    alpha: float
    detectable: float
    samples_factor: float | None
    headline: str
    lines: tuple[str, ...]

    @property
    def flagged(self) -> bool:
        """Whether the decision is ``"missing"`` (what the collapse monitor counts)."""
        return self.decision == "missing"

    def to_dict(self, *, python: bool = False) -> dict:
        """Fields as a dict; ``missing`` as its own dict."""
        out = fields_as_dict(self, python=python)
        out["missing"] = self.missing.to_dict(python=python)
        out["lines"] = list(self.lines)
        return out

    def __str__(self) -> str:
        return "\n".join([self.headline, *("  " + line for line in self.lines)])


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def check_tolerance(tolerance: object) -> float:
    """``tolerance`` as a float in ``[0, 1)`` (raises ``TypeError``/``ValueError`` naming it)."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
        raise TypeError(f"tolerance: expected a missing mass in [0, 1), got {tolerance!r}")
    if not 0 <= tolerance < 1 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance: expected a missing mass in [0, 1) (0.05 accepts 5% of the real data "
                         f"under-filled), got {tolerance}")
    return float(tolerance)


def decide(ndb: NDBResult, *, coverage: PRDCResult | None = None, duplicates: DuplicateComparison | None = None,
           tolerance: float | None = None, alpha: float | None = None, seed: int = 0) -> Verdict:
    """The verdict on one comparison (module docstring).

    Args:
        ndb: the NDB result (its ``missing`` is used when set, else computed).
        coverage: a coverage result with intervals, or ``None``.
        duplicates: the duplicate comparison, or ``None``.
        tolerance: the missing mass accepted, in ``[0, 1)`` (default: ``ndb.tolerance``, the option's).
        alpha: level of the combined test (default: ``ndb.alpha``).
        seed: seed of the missing mass's null draws when it has to be computed.

    Example:
        >>> import torch
        >>> from fastndb._core.statistics import compare_histograms
        >>> real = torch.full((20,), 250)
        >>> fake = torch.cat([torch.zeros(2, dtype=torch.long), torch.full((18,), 278)])
        >>> v = decide(compare_histograms(real, fake, alpha=0.05))
        >>> v.decision, v.headline[:40]
        ('missing', 'Missing modes: about 9.8% (8.7-11.1%) of')
    """
    tolerance = check_tolerance(ndb.tolerance if tolerance is None else tolerance)
    alpha = ndb.alpha if alpha is None else alpha
    mass = ndb.missing if ndb.missing is not None else missing_mass(ndb.real_counts, ndb.fake_counts, seed=seed,
                                                                  alpha=ndb.alpha)
    k = ndb.num_bins
    smallest = float(ndb.p_values.min()) if k else 1.0
    tests = {
        "histograms": ndb.p_value,
        "strongest bin": ndb.strongest_p_value if ndb.strongest_p_value is not None else min(1.0, k * smallest),
        "NDB count": ndb.ndb_p_value if ndb.ndb_p_value is not None else binomial_tail(ndb.ndb, k, ndb.alpha),
        "missing mass": mass.p_value,
    }
    under = int((ndb.different & (ndb.z < 0)).sum())
    lines = [
        f"missing mass {mass} of the real data in under-filled regions (chance-corrected; raw histogram distance "
        f"{mass.plug_in:.3f} against {mass.plug_in_chance:.3f} by chance)" + (
            f"; {mass.emptied_bins} emptied bin(s) hold {_percent(mass.emptied_mass)} "
            f"({_percent(mass.emptied_low)}-{_percent(mass.emptied_high)})" if mass.emptied_bins else ""),
        f"NDB: {ndb.ndb} of {k} bins differ ({under} under-filled), about {ndb.expected_false_positives:.1f} by "
        f"chance (p = {tests['NDB count']:.2g}); strongest bin p = {smallest:.2g}, over all {k} bins "
        f"p = {tests['strongest bin']:.2g}",
        f"JS {ndb.js:.4g} against {ndb.expected_null_js:.2g} by chance; chi-square test of the histograms "
        f"p = {ndb.p_value:.3g}",
    ]
    if coverage is not None:
        null = coverage.expected_null_coverage
        text = f"coverage {coverage.coverage:.3f}"
        if coverage.coverage_interval is not None:
            low, high = coverage.coverage_interval
            text += f" ({low:.3f}-{high:.3f})"
            tests["coverage"] = coverage.coverage_p_value
        lines.append(f"{text} against {null:.3f} by chance" + (
            f" (p = {tests['coverage']:.2g})" if "coverage" in tests else "") +
            f"; recall {coverage.recall:.3f}, precision {coverage.precision:.3f}, density {coverage.density:.3f}")
    if duplicates is not None:
        tests["duplicates"] = duplicates.p_value
        ratio = "no duplicates in either" if math.isnan(duplicates.ratio) else (
            f"rate ratio {duplicates.ratio:.3g} ({duplicates.ratio_low:.3g}-{duplicates.ratio_high:.3g})")
        lines.append(f"duplicates: {duplicates.count} near-duplicate pairs against {duplicates.reference_count} "
                     f"among as many real samples; {ratio}, p = {duplicates.p_value:.2g} ({duplicates.test} test)")
    combined = min(1.0, len(tests) * min(tests.values()))
    differs = combined < alpha
    lines.append(f"combined test (Bonferroni over {len(tests)} signs): p = {combined:.2g}, "
                 + ("different from the real data" if differs else "no difference beyond chance")
                 + f" at alpha = {alpha}")
    detectable = detectable_missing_mass(k, ndb.num_real, ndb.num_fake, tolerance=tolerance, seed=seed)
    factor = None
    if differs and mass.low > tolerance:
        decision = "missing"
        headline = (f"Missing modes: about {mass} of the real data lies in regions the generator under-fills, "
                    f"beyond the tolerance of {_percent(tolerance)}")
        if mass.emptied_bins:
            headline += f"; {mass.emptied_bins} region(s) are empty ({_percent(mass.emptied_mass)} of the data)"
        headline += "."
    elif mass.high <= tolerance:
        decision = "within tolerance"
        headline = (f"Nothing missing beyond the tolerance of {_percent(tolerance)}: {mass} of the real data lies "
                    f"in under-filled regions")
        headline += (" (the samples still differ from the data: see below)." if differs else ".")
    else:
        decision = "inconclusive"
        factor = samples_factor(mass, tolerance)
        if differs:
            headline = (f"Inconclusive: different from the real data, but these sizes cannot tell whether more than "
                        f"{_percent(tolerance)} is missing: {mass} of the real data lies in under-filled regions")
        else:
            headline = (f"No difference beyond chance, but these sizes cannot show that less than "
                        f"{_percent(tolerance)} is missing: {mass} of the real data lies in under-filled regions")
        if factor is not None:
            headline += (f"; about {factor:.1f}x the samples ({math.ceil(factor * ndb.num_fake):,} generated) "
                         f"would decide")
        headline += "."
    lines.append(f"power: these sizes ({k} bins, {ndb.num_real} reference and {ndb.num_fake} generated samples) "
                 f"decide a missing mass of {_percent(detectable)} or more with 80% power")
    return Verdict(decision=decision, differs=differs, p_value=combined, tests=tests, missing=mass,
                   tolerance=tolerance, alpha=alpha, detectable=detectable, samples_factor=factor,
                   headline=headline, lines=tuple(lines))
