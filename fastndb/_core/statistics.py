r"""Statistics: pure, vectorised tests on two bin histograms, in float64 on the histograms' device.

For bin :math:`k` with real count :math:`r_k` out of :math:`n_r` and fake count :math:`f_k` out of :math:`n_f`:

.. math::

    \hat p_r = r_k / n_r,\quad \hat p_f = f_k / n_f,\quad
    \bar p = \frac{r_k + f_k}{n_r + n_f},\quad
    z_k = \frac{\hat p_f - \hat p_r}{\sqrt{\bar p (1 - \bar p)(1/n_r + 1/n_f)}},\quad
    p_k = 2\,\Phi(-|z_k|) = \operatorname{erfc}(|z_k| / \sqrt 2),

the pooled two-proportion z-test of the original NDB (with the sign flipped so that :math:`z > 0` means the bin
is over-represented among fake samples). A bin with :math:`\bar p \in \{0, 1\}` has no variance and gets
:math:`z = 0, p = 1`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from fastndb._core.results import NDBResult
from fastndb._core.sync import host_values

CORRECTIONS = (None, "holm", "bh")


def two_proportion_z_test(
    real_counts: Tensor, num_real: int, fake_counts: Tensor, num_fake: int
) -> tuple[Tensor, Tensor]:
    """Per-bin pooled two-proportion z statistics and two-sided p-values (see the module docstring).

    Args:
        real_counts: ``(K,)`` counts out of ``num_real``.
        num_real: real sample size ``n_r > 0``.
        fake_counts: ``(K,)`` counts out of ``num_fake``.
        num_fake: fake sample size ``n_f > 0``.

    Returns:
        ``z (K,)`` and ``p_values (K,)``, float64.

    Example:
        >>> z, p = two_proportion_z_test(torch.tensor([50, 50]), 100, torch.tensor([70, 30]), 100)
        >>> [round(v, 4) for v in z.tolist()], [round(v, 4) for v in p.tolist()]
        ([2.8868, -2.8868], [0.0039, 0.0039])
    """
    r = real_counts.to(torch.float64)
    f = fake_counts.to(torch.float64)
    p_real = r / num_real
    p_fake = f / num_fake
    pooled = (r + f) / (num_real + num_fake)
    se = torch.sqrt(pooled * (1 - pooled) * (1.0 / num_real + 1.0 / num_fake))
    z = torch.where(se > 0, (p_fake - p_real) / torch.where(se > 0, se, 1.0), 0.0)
    p_values = torch.special.erfc(z.abs() / math.sqrt(2.0))
    return z, p_values


def adjust_p_values(p_values: Tensor, correction: str | None) -> Tensor:
    """Multiple-testing adjusted p-values.

    ``"holm"``: Holm-Bonferroni step-down, controls the family-wise error rate (chance of any false positive)
    at ``alpha``. ``"bh"``: Benjamini-Hochberg step-up, controls the false discovery rate (expected share of
    false positives among flagged bins) for independent or positively dependent tests. ``None``: unchanged.

    Example:
        >>> adjust_p_values(torch.tensor([0.01, 0.04, 0.03], dtype=torch.float64), "holm").tolist()
        [0.03, 0.06, 0.06]
        >>> [round(v, 6) for v in adjust_p_values(torch.tensor([0.01, 0.04, 0.03], dtype=torch.float64), "bh").tolist()]
        [0.03, 0.04, 0.04]
    """
    if correction is None:
        return p_values
    if correction not in CORRECTIONS:
        raise ValueError(f"correction: expected one of {CORRECTIONS}, got {correction!r}")
    m = p_values.numel()
    order = torch.argsort(p_values, stable=True)
    ranked = p_values[order]
    rank = torch.arange(1, m + 1, dtype=torch.float64, device=p_values.device)
    if correction == "holm":
        adjusted_sorted = torch.cummax(ranked * (m - rank + 1), 0).values
    else:
        adjusted_sorted = torch.cummin((ranked * m / rank).flip(0), 0).values.flip(0)
    adjusted = torch.empty_like(p_values)
    adjusted[order] = adjusted_sorted.clamp_max(1.0)
    return adjusted


def chi2_homogeneity(real_counts: Tensor, fake_counts: Tensor) -> tuple[float, int, float]:
    r"""Chi-square test that two count vectors come from the same categorical distribution.

    .. math:: X^2 = \sum_{s \in \{r, f\}} \sum_k \frac{(O_{sk} - E_{sk})^2}{E_{sk}},\quad
              E_{sk} = \frac{n_s (r_k + f_k)}{n_r + n_f},

    with ``K' - 1`` degrees of freedom over the ``K'`` bins that are non-empty in at least one sample; the
    p-value is the chi-square survival function, ``Q(dof / 2, X^2 / 2)`` (regularised upper incomplete gamma).

    Returns:
        ``(statistic, dof, p_value)``; ``(0.0, 0, 1.0)`` when fewer than two bins are non-empty.

    Example:
        >>> stat, dof, p = chi2_homogeneity(torch.tensor([50, 50]), torch.tensor([70, 30]))
        >>> round(stat, 4), dof, round(p, 5)
        (8.3333, 1, 0.00389)
    """
    statistic, dof, p_value = _chi2(real_counts, fake_counts)
    values = host_values(torch.stack([statistic, dof.to(torch.float64), p_value]))
    return float(values[0]), int(values[1]), float(values[2])


def _chi2(real_counts: Tensor, fake_counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`chi2_homogeneity` as 0-d tensors on the counts' device, without host reads (empty bins are masked
    arithmetically, not by boolean indexing)."""
    r = real_counts.to(torch.float64)
    f = fake_counts.to(torch.float64)
    total = r + f
    keep = total > 0
    dof = keep.sum() - 1
    n_r, n_f = r.sum(), f.sum()
    grand = (n_r + n_f).clamp_min(1)
    expected_r = torch.where(keep, n_r * total / grand, 1.0)
    expected_f = torch.where(keep, n_f * total / grand, 1.0)
    terms = (r - expected_r) ** 2 / expected_r.clamp_min(1e-300) + (f - expected_f) ** 2 / expected_f.clamp_min(1e-300)
    statistic = torch.where(keep, terms, 0.0).sum()
    valid = (dof >= 1) & (n_r > 0) & (n_f > 0)
    p_value = torch.special.gammaincc(dof.clamp_min(1).to(torch.float64) / 2, statistic / 2)
    return (torch.where(valid, statistic, 0.0), torch.where(valid, dof, 0),
            torch.where(valid, p_value, 1.0))


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    r"""Jensen-Shannon divergence of two discrete distributions, natural log.

    .. math:: \mathrm{JS}(p, q) = \tfrac12 \mathrm{KL}(p \,\|\, m) + \tfrac12 \mathrm{KL}(q \,\|\, m),\quad
              m = \tfrac12 (p + q),

    with :math:`0 \log 0 = 0`; between 0 (equal) and :math:`\ln 2` (disjoint supports).

    Example:
        >>> round(float(js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))), 6) == round(math.log(2), 6)
        True
    """
    p = p.to(torch.float64)
    q = q.to(torch.float64)
    m = (p + q) / 2

    def kl_to_m(a: Tensor) -> Tensor:
        ratio = torch.where(a > 0, a / torch.where(m > 0, m, 1.0), 1.0)
        return (a * torch.log(ratio)).sum()

    return (kl_to_m(p) + kl_to_m(q)) / 2


def expected_null_js(num_bins: int, num_real: int, num_fake: int) -> float:
    r"""The Jensen-Shannon divergence two histograms show by chance alone: fake drawn like real.

    To second order in :math:`\delta = (\hat p_f - \hat p_r) / 2`,
    :math:`\mathrm{JS} \approx \sum_k (\hat p_{f,k} - \hat p_{r,k})^2 / (8 m_k)`, and under the null
    :math:`E[(\hat p_{f,k} - \hat p_{r,k})^2] = \pi_k (1 - \pi_k)(1/n_r + 1/n_f)`, so

    .. math:: E[\mathrm{JS}] \approx \frac{K - 1}{8} \Bigl(\frac{1}{n_r} + \frac{1}{n_f}\Bigr),

    whatever the bin shares :math:`\pi_k`. It holds when most bins hold tens of samples (checked against
    simulation in the tests); a JS several times larger is a real difference, one near it is noise.

    Example:
        >>> round(expected_null_js(20, 900, 2000), 5)
        0.00383
    """
    return (num_bins - 1) / 8 * (1 / num_real + 1 / num_fake)


def expected_null_coverage(nearest_k: int, num_real: int, num_fake: int) -> float:
    r"""The coverage (Naeem et al. 2020) expected when fake samples are drawn like real ones.

    Under the null the ``N + M`` samples are exchangeable, so real sample :math:`x_i`'s ``k`` nearest others are
    all real (its ball holds no fake) with probability :math:`\binom{N-1}{k} / \binom{N+M-1}{k}`:

    .. math:: E[\text{coverage}] = 1 - \prod_{j=1}^{k} \frac{N - j}{N + M - j},

    about :math:`1 - 2^{-k}` for ``M = N`` (0.969 at ``k = 5``). Density's null expectation is 1 at any size.

    Example:
        >>> round(expected_null_coverage(5, 10_000, 10_000), 4)
        0.9688
    """
    product = 1.0
    for j in range(1, nearest_k + 1):
        product *= (num_real - j) / (num_real + num_fake - j)
    return 1.0 - product


def compare_histograms(
    real_counts: Tensor,
    fake_counts: Tensor,
    *,
    alpha: float,
    correction: str | None = None,
    z_threshold: float | None = None,
    mode: str = "holdout",
    precision: str = "not recorded",
    seed: int = 0,
    tolerance: float = 0.01,
) -> NDBResult:
    """All NDB statistics of a real and a fake bin histogram.

    Args:
        real_counts: ``(K,)`` int64 reference counts (``n_r = sum > 0``).
        fake_counts: ``(K,)`` int64 fake counts (``n_f = sum > 0``).
        alpha: per-bin significance level.
        correction: ``None`` | ``"holm"`` | ``"bh"`` (see :func:`adjust_p_values`).
        z_threshold: flag ``|z| > z_threshold`` instead of ``p < alpha`` (the original's option).
        mode: recorded in the result.
        precision: arithmetic of the assignment that produced the counts, recorded in the result (the caller
            knows it; this function only sees counts).
        seed: seed of the missing mass's null draws (:func:`~fastndb._core.effects.missing_mass`).
        tolerance: recorded in the result, for the verdict.

    Example:
        >>> result = compare_histograms(torch.tensor([500, 500]), torch.tensor([700, 300]), alpha=0.05)
        >>> result.ndb, result.different.tolist()
        (2, [True, True])
    """
    num_bins = real_counts.numel()
    n_r, n_f = real_counts.sum(), fake_counts.sum()
    n_r64, n_f64 = n_r.clamp_min(1).to(torch.float64), n_f.clamp_min(1).to(torch.float64)
    z, p_values = two_proportion_z_test(real_counts, n_r64, fake_counts, n_f64)  # type: ignore[arg-type]
    adjusted = adjust_p_values(p_values, correction)
    different = z.abs() > z_threshold if z_threshold is not None else adjusted < alpha
    real_proportions = real_counts.to(torch.float64) / n_r64
    fake_proportions = fake_counts.to(torch.float64) / n_f64
    chi2_t, dof_t, p_value_t = _chi2(real_counts, fake_counts)
    from fastndb._core.effects import bin_differences, mass_from_values, missing_mass_values

    mass_values = missing_mass_values(real_counts, fake_counts.to(real_counts.device), alpha=alpha, seed=seed)
    scalars = torch.cat([torch.stack([n_r.to(torch.float64), n_f.to(torch.float64), different.sum().to(torch.float64),
                           js_divergence(real_proportions, fake_proportions), chi2_t, dof_t.to(torch.float64),
                           p_value_t]), mass_values])
    values = host_values(scalars)  # the one host read
    num_real_f, num_fake_f, ndb_f, js, chi2, dof_f, p_value = values[:7]
    num_real, num_fake, ndb, chi2_dof = int(num_real_f), int(num_fake_f), int(ndb_f), int(dof_f)
    for name, total in (("real_counts", num_real), ("fake_counts", num_fake)):
        if total <= 0:
            raise ValueError(f"{name}: expected counts with a positive total, got a total of {total}")
    difference, difference_low, difference_high = bin_differences(real_counts, fake_counts)
    return NDBResult(
        ndb=ndb,
        ndb_ratio=ndb / num_bins,
        js=js,
        num_bins=num_bins,
        alpha=alpha,
        num_real=num_real,
        num_fake=num_fake,
        real_counts=real_counts,
        fake_counts=fake_counts,
        real_proportions=real_proportions,
        fake_proportions=fake_proportions,
        z=z,
        p_values=p_values,
        p_values_adjusted=adjusted,
        different=different,
        correction=correction,
        z_threshold=z_threshold,
        expected_false_positives=alpha * num_bins,
        expected_null_js=expected_null_js(num_bins, num_real, num_fake),
        chi2=chi2,
        chi2_dof=chi2_dof,
        p_value=p_value,
        mode=mode,
        precision=precision,
        missing=mass_from_values(values[7:23]) if num_real > 0 and num_fake > 0 else None,
        ndb_p_value=values[23],
        strongest_p_value=values[24],
        tolerance=tolerance,
        difference=difference,
        difference_low=difference_low,
        difference_high=difference_high,
    )


def _gammainc_inverse(a: float, q: float) -> float:
    """``x`` with ``P(a, x) = q`` for the regularised lower incomplete gamma ``P`` (bisection, float64)."""
    low, high = 0.0, max(1.0, a)
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    while float(torch.special.gammainc(as_tensor(a), as_tensor(high))) < q:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if float(torch.special.gammainc(as_tensor(a), as_tensor(middle))) < q:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def poisson_interval(count: int, confidence: float = 0.95) -> tuple[float, float]:
    r"""Exact (Garwood) two-sided confidence interval for the mean of a Poisson count.

    .. math:: \lambda_{lo} = \tfrac12 \chi^2_{2c}(\tfrac{1-\gamma}{2}), \qquad
              \lambda_{hi} = \tfrac12 \chi^2_{2c+2}(\tfrac{1+\gamma}{2}),

    with :math:`\lambda_{lo} = 0` when :math:`c = 0`; :math:`\chi^2_\nu(q)` is the chi-square quantile, computed
    here as :math:`2 P^{-1}(\nu / 2, q)` by bisection on the regularised incomplete gamma function.

    Example:
        >>> [round(v, 4) for v in poisson_interval(0)]  # scipy.stats.chi2.ppf(0.975, 2) / 2 = 3.6889
        [0.0, 3.6889]
        >>> [round(v, 3) for v in poisson_interval(10)]
        [4.795, 18.39]
    """
    tail = (1.0 - confidence) / 2.0
    lower = 0.0 if count == 0 else _gammainc_inverse(float(count), tail)
    upper = _gammainc_inverse(float(count) + 1.0, 1.0 - tail)
    return lower, upper


def _binomial_upper_tail(count: int, trials: int, p: float) -> float:
    """``P(X >= count)`` for ``X ~ Binomial(trials, p)``: exact (log-space terms) up to 5,000 trials, the
    continuity-corrected normal approximation beyond."""
    if count <= 0:
        return 1.0
    if count > trials or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    if trials > 5000:
        sd = math.sqrt(trials * p * (1 - p))
        return 0.5 * math.erfc((count - 0.5 - trials * p) / (sd * math.sqrt(2)))
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(trials + 1)
    terms = [base - math.lgamma(j + 1) - math.lgamma(trials - j + 1) + j * log_p + (trials - j) * log_q
             for j in range(count, trials + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def _clopper_pearson(count: int, trials: int, confidence: float) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial share, by bisection on the binomial tails."""
    tail = (1 - confidence) / 2

    def solve(target: Callable[[float], float]) -> float:
        low, high = 0.0, 1.0
        for _ in range(60):
            middle = (low + high) / 2
            if target(middle) < 0:
                low = middle
            else:
                high = middle
        return (low + high) / 2

    lower = 0.0 if count == 0 else solve(lambda p: _binomial_upper_tail(count, trials, p) - tail)
    upper = 1.0 if count == trials else solve(lambda p: tail - (1 - _binomial_upper_tail(count + 1, trials, p)))
    return lower, upper


def compare_rates(count: int, exposure: float, reference_count: int, reference_exposure: float, *,
                  confidence: float = 0.95) -> tuple[float, float, float, float]:
    r"""Exact conditional test that a Poisson count's rate exceeds a reference count's, with the ratio's interval.

    Given :math:`n = c + c_0`, :math:`c \sim \mathrm{Binomial}(n, \pi)` with
    :math:`\pi = \rho E / (\rho E + E_0)` for the rate ratio :math:`\rho` and exposures :math:`E, E_0` (here:
    the numbers of pairs). The one-sided p-value of :math:`\rho \le 1` is :math:`P(X \ge c)` at :math:`\rho = 1`;
    the ratio's interval maps the Clopper-Pearson interval :math:`[\pi_l, \pi_u]` of :math:`\pi` through
    :math:`\rho = \pi E_0 / ((1 - \pi) E)`.

    Returns:
        ``(p_value, ratio, ratio_low, ratio_high)``; the ratio is ``inf`` when the reference count is 0 and
        ``nan`` when both are.

    Example:
        >>> p, ratio, low, high = compare_rates(5, 1.0, 0, 1.0)
        >>> round(p, 4), ratio, round(low, 3), high  # five pairs against none: 0.5 ** 5
        (0.0312, inf, 0.916, inf)
    """
    n = count + reference_count
    if n == 0:
        return 1.0, math.nan, 0.0, math.inf
    share = exposure / (exposure + reference_exposure)
    p_value = _binomial_upper_tail(count, n, share)
    low_pi, high_pi = _clopper_pearson(count, n, confidence)
    to_ratio = lambda pi: math.inf if pi >= 1 else pi * reference_exposure / ((1 - pi) * exposure)  # noqa: E731
    ratio = math.inf if reference_count == 0 else (count / exposure) / (reference_count / reference_exposure)
    return p_value, ratio, to_ratio(low_pi), to_ratio(high_pi)
