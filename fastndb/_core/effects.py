r"""Effect sizes: how much of the real mass the generator under-fills, with intervals. Pure tensors in and out.

**Missing mass.** With true bin shares :math:`r_k` (real) and :math:`f_k` (generated),

.. math:: \theta = \sum_k (r_k - f_k)_+ = \tfrac12 \sum_k |r_k - f_k| ,

the total-variation distance of the two histograms: the real mass the generator would have to move to match.
The plug-in :math:`\sum_k (\hat r_k - \hat f_k)_+` is biased upwards by sampling noise (about
:math:`0.4 \sqrt{K (1/n_r + 1/n_f)}` under the null, as large as the effects it should measure), and half of it
sits on the bins the generator over-fills, where the excess of a dropped mode is spread thinly over many bins.

The estimator here, *two-group*, reads the histograms the way mode dropping writes them: most bins are filled
in proportion to the real shares, :math:`f_k = w\,r_k` (one common fill ratio :math:`w`), and a few bins are
affected (emptied, under- or over-filled). It finds the affected set :math:`A` by iterating

.. math:: w = \frac{\sum_{k \notin A} \hat f_k}{\sum_{k \notin A} \hat r_k},\qquad
          A = \{k : |z_k| > c\},\quad
          z_k = \frac{F_k - t_k \pi}{\sqrt{t_k \pi (1 - \pi)}},\quad \pi = \frac{w n_f}{w n_f + n_r},

(:math:`z_k` is the exact conditional binomial score of bin :math:`k`'s :math:`t_k = R_k + F_k` samples under the
common ratio), fits :math:`\tilde f_k = w \hat r_k` outside :math:`A` and :math:`\tilde f_k = \hat f_k` in it, and
estimates :math:`\hat\theta = \sum_k (\hat r_k - \tilde f_k)_+ - \beta` with the chance correction
:math:`\beta = \varphi(c) \sum_k \sigma_k`, the expected contribution of bins selected by noise alone
(:math:`E[-Z; Z < -c] = \varphi(c)` per bin, :math:`\sigma_k` the standard deviation of
:math:`\hat r_k - \hat f_k`). Its interval's lower end is a score interval on the selected bins
(:func:`_score_solve`, with the boundary rule of the test of "nothing missing"); its upper end is the larger of
that score end and the *hidden-deficit* end (:func:`_hidden_deficit_end`), a parametric bootstrap from a model
that keeps the bins under-filled beyond :math:`z < -c_h` (``HIDDEN_Z`` = 2, below the selection's 2.5) at their
observed shares: a mode that shares its bin with kept ones leaves it half-filled near the threshold, where the
selection misses it about half the time and the estimate runs low. docs/statistics.md states the model, the
measured bias and coverage, and what the number does not mean.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
from torch import Tensor

from fastndb._core.results import MissingMass
from fastndb._core.signals import EMPTIED_SHARE
from fastndb._core.statistics import two_proportion_z_test
from fastndb._core.sync import host_values

AFFECTED_Z = 2.5  # |z| beyond which a bin counts as affected (emptied, under- or over-filled)
HIDDEN_Z = 2.0  # z below which an under-filled bin may hide a deficit the selection misses (upper end only)
_ITERATIONS = 6


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def two_group_fit(real_counts: Tensor, fake_counts: Tensor, *, affected_z: float = AFFECTED_Z
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""The two-group fit of one or a batch of histogram pairs (see the module docstring).

    Args:
        real_counts: ``(..., K)`` real counts (any numeric dtype), rows summing to :math:`n_r > 0`.
        fake_counts: ``(..., K)`` fake counts, rows summing to :math:`n_f > 0`.
        affected_z: the selection threshold :math:`c`.

    Returns:
        ``estimate (...)`` the chance-corrected missing mass :math:`\hat\theta` (it can be slightly negative:
        an unbiased estimate of a mass near 0 has to be), ``raw (...)`` the same before the chance correction
        (:math:`\sum_k (\hat r_k - \tilde f_k)_+`, exactly 0 when no bin is affected), ``fitted_fake (..., K)``
        the shares :math:`\tilde f`,
        ``real_shares (..., K)`` :math:`\hat r`, and ``affected (..., K)`` bool, the set :math:`A`. float64.

    Example:
        >>> real = torch.tensor([100, 100, 100, 100, 100])
        >>> fake = torch.tensor([125, 125, 125, 125, 0])  # the last bin is emptied
        >>> estimate, raw, fitted, shares, affected = two_group_fit(real, fake)
        >>> round(float(estimate), 3), affected.tolist()
        (0.198, [False, False, False, False, True])
    """
    r = real_counts.to(torch.float64)
    f = fake_counts.to(torch.float64)
    n_r = r.sum(-1, keepdim=True)
    n_f = f.sum(-1, keepdim=True)
    real_shares = r / n_r
    fake_shares = f / n_f
    total = r + f
    affected = torch.zeros_like(r, dtype=torch.bool)
    for _ in range(_ITERATIONS):
        ratio = _common_ratio(real_shares, fake_shares, affected)
        affected = _conditional_scores(r, f, ratio).abs() > affected_z
    fitted = torch.where(affected, fake_shares, ratio * real_shares)
    raw = (real_shares - fitted).clamp_min(0).sum(-1)
    pooled = total / (n_r + n_f)
    sigma = torch.sqrt(pooled * (1 - pooled) * (1 / n_r + 1 / n_f))
    correction = _phi(affected_z) * sigma.sum(-1)
    return raw - correction, raw, fitted, real_shares, affected


def _common_ratio(real_shares: Tensor, fake_shares: Tensor, affected: Tensor) -> Tensor:
    """``(..., 1)``: the common fill ratio :math:`w` of the bins outside ``affected`` (1 where none is left)."""
    kept_real = torch.where(affected, 0.0, real_shares).sum(-1, keepdim=True)
    kept_fake = torch.where(affected, 0.0, fake_shares).sum(-1, keepdim=True)
    return torch.where(kept_real > 0, kept_fake / kept_real.clamp_min(1e-300), 1.0)


def _conditional_scores(r: Tensor, f: Tensor, ratio: Tensor) -> Tensor:
    r"""``(..., K)`` exact conditional binomial scores :math:`z_k` of the fake counts ``f`` given the bins' totals,
    under the common fill ratio ``ratio`` (``(..., 1)``); 0 for an empty bin."""
    n_r, n_f = r.sum(-1, keepdim=True), f.sum(-1, keepdim=True)
    total = r + f
    pi = (ratio * n_f / (ratio * n_f + n_r)).clamp(1e-12, 1 - 1e-12)
    sd = torch.sqrt(total * pi * (1 - pi))
    return torch.where(total > 0, (f - total * pi) / sd.clamp_min(1e-300), 0.0)


def _hidden_deficit_end(r: Tensor, f: Tensor, estimate: Tensor, fitted: Tensor, affected: Tensor, z: float,
                        draws: int, generator: torch.Generator) -> Tensor:
    r"""The interval's upper end allowing for deficits the selection can miss (bins under-filled by less than its
    threshold :math:`c`: a mode sharing its bin with kept ones, half of the bin emptied, sits near :math:`z = -c`).

    A parametric bootstrap from a model that keeps them: the generated shares :math:`g_k = \hat f_k` in the
    affected bins and in the under-filled ones with :math:`z_k < -c_h` (``HIDDEN_Z``, below ``AFFECTED_Z``),
    :math:`w \hat r_k` elsewhere (normalised), with the truth :math:`\theta_g = \sum_k (\hat r_k - g_k)_+`.
    ``draws`` Poissonised histogram pairs from :math:`(\hat r, g)` give the estimator's bias :math:`b` and spread
    :math:`s` there; the end is :math:`\hat\theta - b + z s`."""
    n_r, n_f = r.sum(), f.sum()
    real_shares, fake_shares = r / n_r.clamp_min(1), f / n_f.clamp_min(1)
    ratio = _common_ratio(real_shares, fake_shares, affected)
    hidden = (_conditional_scores(r, f, ratio) < -HIDDEN_Z) & ~affected
    shares = torch.where(affected | hidden, fake_shares, fitted).nan_to_num(0.0)  # NaN only for an empty side,
    shares = shares / shares.sum().clamp_min(1e-300)  # which the callers refuse
    truth = (real_shares - shares).clamp_min(0).sum()
    boot = two_group_fit(_poisson_histograms(real_shares, n_r, draws, generator),
                         _poisson_histograms(shares, n_f, draws, generator))[0]
    return estimate - (boot.nanmean() - truth) + z * _finite_std(boot)


def _poisson_histograms(shares: Tensor, total: Tensor, draws: int, generator: torch.Generator) -> Tensor:
    """``(draws, K)`` Poissonised histograms of ``total`` samples over ``shares`` (``(K,)``): independent Poisson
    counts with means ``total * shares``, which given their sum are exactly multinomial. One kernel, cost
    ``O(draws K)`` whatever the sample size."""
    rates = (shares.clamp_min(0) * total).expand(draws, shares.numel()).contiguous()
    return torch.poisson(rates, generator=generator)


def _score_solve(estimate: Tensor, under_fake: Tensor, n_r: Tensor, n_f: Tensor, chance_sd: Tensor,
                 z: float, sign: float) -> Tensor:
    r"""The interval end :math:`\theta` solving :math:`\theta = \hat\theta \pm z\,\mathrm{se}(\theta)` (a score
    interval: the standard error evaluated at the end itself, as Wilson's is), with
    :math:`\mathrm{se}^2(\theta) = s (1 - s) / n_r + t (1 - t) / n_f + (\lambda \sigma_0 (1 - s))^2`,
    :math:`s = \theta + t` the real mass of the under-filled bins, :math:`t` their generated mass,
    :math:`\sigma_0` the estimate's chance standard deviation (noise selected from the bins the generator fills
    as the data does: their share :math:`1 - s` scales it). Fixed-point iteration (a contraction:
    :math:`|d\,\mathrm{se}/d\theta| < 1/z`)."""
    theta = estimate.clone()
    for _ in range(40):
        s = (theta + under_fake).clamp(0, 1)
        chance = CHANCE_WEIGHT * chance_sd * (1 - s)
        se = torch.sqrt(s * (1 - s) / n_r + under_fake * (1 - under_fake) / n_f + chance**2)
        theta = estimate + sign * z * se
    return theta


def _tv_deviation(n: Tensor, k: int, confidence: float) -> Tensor:
    r"""How far the total-variation distance of an empirical ``k``-bin histogram of ``n`` samples strays from its
    distribution's, with probability at least :math:`1 - (1 - c)/2`, whatever the distribution: the TV distance is the
    largest deviation over the :math:`2^k` unions of bins, each bounded by Hoeffding's inequality, so
    :math:`\varepsilon = \sqrt{(k \ln 2 + \ln(4 / (1 - c))) / (2n)}` (the two histograms share :math:`1 - c`)."""
    return torch.sqrt((k * math.log(2.0) + math.log(4.0 / (1.0 - confidence))) / (2.0 * n.clamp_min(1)))


def _finite_std(values: Tensor) -> Tensor:
    """The standard deviation of the finite entries of ``values`` (a null draw of a tiny sample can hold no sample at
    all, and its estimate is then NaN); 0 with fewer than two. On the values' device, without a host read."""
    finite = torch.isfinite(values)
    kept = torch.where(finite, values, 0.0)
    count = finite.sum()
    mean = kept.sum() / count.clamp_min(1)
    masked = torch.sqrt(((kept - mean) ** 2 * finite).sum() / (count - 1).clamp_min(1))
    return torch.where(finite.all(), values.std(), masked)  # all finite: torch's own std, bit for bit


SMALL_SAMPLE_COUNT = 10  # samples per bin below which the distribution-free interval is used (simulated)
CHANCE_WEIGHT = 0.85  # lambda: the share of the chance spread added to the interval (calibrated by simulation)
BOOTSTRAP_DRAWS = 500
BOUNDARY_LEVEL = 0.95  # the interval excludes 0 only when the test of "nothing missing" rejects at 1 - this


def normal_quantile(q: float) -> float:
    """The standard normal quantile :math:`\\Phi^{-1}(q)`, ``0 < q < 1``.

    Example:
        >>> round(normal_quantile(0.975), 4)
        1.96
    """
    return NormalDist().inv_cdf(q)


def wilson_interval(count: Tensor, total: Tensor, z: float) -> tuple[Tensor, Tensor]:
    """Wilson score interval of a binomial share ``count / total`` (tensors, broadcast)."""
    count = count.to(torch.float64)
    total = total.to(torch.float64).clamp_min(1)
    p = count / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * torch.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return (centre - half).clamp(0, 1), (centre + half).clamp(0, 1)


def bin_differences(real_counts: Tensor, fake_counts: Tensor, *, confidence: float = 0.95
                    ) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per-bin difference of the two shares, :math:`\hat f_k - \hat r_k`, with Newcombe's hybrid score interval
    (his method 10: the Wilson intervals :math:`[l_r, u_r]`, :math:`[l_f, u_f]` of the two shares combined as
    :math:`\hat d - \sqrt{(\hat f - l_f)^2 + (u_r - \hat r)^2}` and
    :math:`\hat d + \sqrt{(u_f - \hat f)^2 + (\hat r - l_r)^2}`), which keeps its level for empty bins where the
    Wald interval collapses to a point.

    Returns:
        ``difference, low, high``: ``(K,)`` float64 (negative: the generator under-fills the bin).

    Example:
        >>> d, low, high = bin_differences(torch.tensor([50, 50]), torch.tensor([70, 30]))
        >>> [round(v, 3) for v in d.tolist()], [round(v, 3) for v in low.tolist()]
        ([0.2, -0.2], [0.064, -0.326])
    """
    z = normal_quantile(0.5 + confidence / 2)
    n_r, n_f = real_counts.sum(), fake_counts.sum()
    r = real_counts.to(torch.float64) / n_r.clamp_min(1)
    f = fake_counts.to(torch.float64) / n_f.clamp_min(1)
    low_r, high_r = wilson_interval(real_counts, n_r, z)
    low_f, high_f = wilson_interval(fake_counts, n_f, z)
    d = f - r
    low = d - torch.sqrt((f - low_f) ** 2 + (high_r - r) ** 2)
    high = d + torch.sqrt((high_f - f) ** 2 + (r - low_r) ** 2)
    return d, low, high


def missing_mass(real_counts: Tensor, fake_counts: Tensor, *, confidence: float = 0.95, alpha: float = 0.05,
                 draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> MissingMass:
    r"""The missing mass of two bin histograms: estimate, interval, chance level and test (module docstring).

    The interval's lower end is 0 unless the test of "nothing missing" rejects at 5% (the statistic beyond the
    95th percentile of its distribution under the null, histograms drawn from the pooled shares): the boundary
    rule of a Feldman-Cousins interval, so that when nothing is missing the interval excludes 0 in about 5% of the
    cases, as a 95% interval must.

    Args:
        real_counts: ``(K,)`` reference counts, ``fake_counts``: ``(K,)`` fake counts; any device.
        confidence: level of the intervals.
        alpha: level of the "emptied bin" rule (:func:`~fastndb._core.signals.emptied_bins`).
        draws: null histograms drawn (Poissonised) for the chance level and the test.
        seed: seed of those draws (a generator on the counts' device; no global RNG).

    Returns:
        :class:`~fastndb.MissingMass`. One host read.

    Example:
        >>> real = torch.full((20,), 250)
        >>> fake = torch.cat([torch.zeros(2, dtype=torch.long), torch.full((18,), 278)])  # two bins emptied
        >>> m = missing_mass(real, fake)
        >>> round(m.estimate, 3), round(m.emptied_mass, 3), m.p_value < 0.01
        (0.098, 0.1, True)
    """
    values = missing_mass_values(real_counts, fake_counts, confidence=confidence, alpha=alpha, draws=draws,
                                 seed=seed)
    return mass_from_values(host_values(values))


def _emptied(r: Tensor, f: Tensor, alpha: float) -> Tensor:
    """Which bins of ``(..., K)`` histograms are emptied: under-filled beyond ``alpha / K`` and below
    ``EMPTIED_SHARE`` of their real share (:func:`~fastndb._core.signals.emptied_bins`'s rule)."""
    real_shares = r / r.sum(-1, keepdim=True).clamp_min(1)
    fake_shares = f / f.sum(-1, keepdim=True).clamp_min(1)
    return ((_bin_p_values(r, f) < alpha / r.shape[-1]) & (fake_shares < real_shares)
            & (fake_shares < EMPTIED_SHARE * real_shares))


def _bin_p_values(r: Tensor, f: Tensor) -> Tensor:
    """Per-bin two-sided p-values of :func:`~fastndb._core.statistics.two_proportion_z_test` for ``(..., K)``
    histograms, each row with its own totals."""
    return two_proportion_z_test(r, r.sum(-1, keepdim=True).clamp_min(1), f, f.sum(-1, keepdim=True).clamp_min(1))[1]


def missing_mass_values(real_counts: Tensor, fake_counts: Tensor, *, confidence: float = 0.95,
                        alpha: float = 0.05, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> Tensor:
    """:func:`missing_mass` as a ``(18,)`` float64 tensor on the counts' device, without host reads (read the first
    16 with :func:`mass_from_values`). The last two are the null draws' p-values of NDB's count (bins with a
    per-bin p below ``alpha``, at least as many as observed) and of the strongest bin (a smallest per-bin p-value
    at least as small: Westfall and Young's min-p), calibrated on the same draws as the missing mass's test."""
    device = fake_counts.device
    real_counts = real_counts.to(device)
    z = normal_quantile(0.5 + confidence / 2)
    r = real_counts.to(torch.float64)
    f = fake_counts.to(torch.float64)
    n_r, n_f = r.sum(), f.sum()
    k = r.numel()
    estimate, raw, fitted, real_shares, affected = two_group_fit(r, f)
    fake_shares = f / n_f.clamp_min(1)
    plug_in = (real_shares - fake_shares).clamp_min(0).sum()
    generator = torch.Generator(device=device).manual_seed(seed)
    pooled = (r + f) / (n_r + n_f)
    null_r = _poisson_histograms(pooled, n_r, draws, generator)
    null_f = _poisson_histograms(pooled, n_f, draws, generator)
    null_estimates, null_raw, *_ = two_group_fit(null_r, null_f)
    null_plug = (null_r / null_r.sum(-1, keepdim=True).clamp_min(1)
                 - null_f / null_f.sum(-1, keepdim=True).clamp_min(1)).clamp_min(0).sum(-1)
    chance_sd = _finite_std(null_estimates)
    # the test of "nothing missing" compares the uncorrected statistic, exactly 0 when no bin is affected (ties at 0
    # count against the data: p = 1 then), with its null draws
    p_value = ((null_raw >= raw).sum() + 1) / (draws + 1)
    under = affected & (real_shares > fake_shares)
    under_fake = torch.where(under, fake_shares, 0.0).sum()
    low = _score_solve(estimate, under_fake, n_r, n_f, chance_sd, z, -1.0).clamp_min(0)
    low = torch.where(p_value <= 1 - BOUNDARY_LEVEL, low, 0.0)
    high = _score_solve(estimate, under_fake, n_r, n_f, chance_sd, z, +1.0).clamp(0, 1)
    # below SMALL_SAMPLE_COUNT samples per bin on either side the selection has no power and the score interval
    # under-covers (down to 10-17% at 2-5 per bin): a distribution-free interval takes its place there
    small = torch.minimum(n_r, n_f) < SMALL_SAMPLE_COUNT * k
    slack = _tv_deviation(n_r, k, confidence) + _tv_deviation(n_f, k, confidence)
    low = torch.where(small, torch.where(p_value <= 1 - BOUNDARY_LEVEL, (plug_in - slack).clamp_min(0), 0.0), low)
    high = torch.where(small, (plug_in + slack).clamp(0, 1), high)
    # the real mass of emptied bins: under-filled beyond alpha / K and below a quarter of the real share
    emptied = _emptied(r, f, alpha)
    emptied_count = torch.where(emptied, r, 0.0).sum()
    emptied_low, emptied_high = wilson_interval(emptied_count, n_r, z)
    # which bins count as emptied is itself read from the counts, which Wilson's interval (the set held fixed) does
    # not see: the spread of the whole rule under a Poissonised bootstrap from the observed shares takes its place
    # (Wilson's stays where nothing is emptied: the bootstrap cannot leave 0 there)
    boot_r = _poisson_histograms(r / n_r.clamp_min(1), n_r, draws, generator)  # an empty side is refused later
    boot_f = _poisson_histograms(fake_shares, n_f, draws, generator)
    boot = torch.where(_emptied(boot_r, boot_f, alpha), boot_r, 0.0).sum(-1) / boot_r.sum(-1).clamp_min(1)
    spread = z * boot.std()
    # the score interval sees the bins the selection found; deficits it can miss raise the upper end (drawn after the
    # emptied mass's bootstrap, whose draws stay as they were)
    hidden_end = _hidden_deficit_end(r, f, estimate, fitted, affected, z, draws, generator)
    high = torch.where(small, high, torch.fmax(high, hidden_end).clamp(0, 1))  # fmax: a NaN end never wins
    emptied_share = emptied_count / n_r
    some = emptied_count > 0
    emptied_low = torch.where(some, (emptied_share - spread).clamp_min(0), emptied_low)
    emptied_high = torch.where(some, (emptied_share + spread).clamp_max(1), emptied_high)
    null_bins, data_bins = _bin_p_values(null_r, null_f), _bin_p_values(r, f)
    ndb_p = (((null_bins < alpha).sum(-1) >= (data_bins < alpha).sum()).sum() + 1) / (draws + 1)
    strongest_p = ((null_bins.min(-1).values <= data_bins.min()).sum() + 1) / (draws + 1)
    return torch.stack([
        estimate, low, high, p_value.to(torch.float64), chance_sd, plug_in, null_plug.mean(), emptied_count / n_r,
        emptied_low, emptied_high, emptied.sum().to(torch.float64), affected.sum().to(torch.float64),
        n_r, n_f, torch.tensor(float(k), dtype=torch.float64, device=device),
        torch.tensor(confidence, dtype=torch.float64, device=device), ndb_p.to(torch.float64),
        strongest_p.to(torch.float64),
    ])


def mass_from_values(values: list[float]) -> MissingMass:
    """The :class:`~fastndb.MissingMass` of :func:`missing_mass_values`' numbers, read to the host."""
    (estimate, low, high, p_value, sd, plug, plug_null, emptied, emptied_low, emptied_high, emptied_n, affected_n,
     n_r, n_f, k, confidence) = values[:16]
    return MissingMass(
        estimate=estimate, low=min(low, max(estimate, 0.0)), high=max(high, 0.0), confidence=confidence,
        p_value=p_value, chance_sd=sd, plug_in=plug, plug_in_chance=plug_null, emptied_mass=emptied,
        emptied_low=emptied_low, emptied_high=emptied_high, emptied_bins=int(emptied_n),
        affected_bins=int(affected_n), num_bins=int(k), num_real=int(n_r), num_fake=int(n_f),
    )


def chance_sd(num_bins: int, num_real: int, num_fake: int, *, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> float:
    """The standard deviation of the missing-mass estimate when nothing is missing, for ``num_bins`` equally
    filled bins at these sample sizes (simulated: Poissonised histograms, seeded)."""
    generator = torch.Generator().manual_seed(seed)
    shares = torch.full((num_bins,), 1.0 / num_bins, dtype=torch.float64)
    null_r = _poisson_histograms(shares, torch.tensor(float(num_real)), draws, generator)
    null_f = _poisson_histograms(shares, torch.tensor(float(num_fake)), draws, generator)
    return float(_finite_std(two_group_fit(null_r, null_f)[0]))


def detectable_missing_mass(num_bins: int, num_real: int, num_fake: int, *, tolerance: float = 0.0,
                            power: float = 0.8, confidence: float = 0.95, seed: int = 0) -> float:
    r"""The smallest missing mass (in emptied bins) these sizes decide as missing with probability ``power``:
    the :math:`\theta` with :math:`\theta - z_{power}\,\mathrm{se}(\theta) = ` the interval's lower end at
    ``tolerance``, that is :math:`\theta = \text{tolerance} + (z_{1-(1-c)/2} + z_{power})\,\mathrm{se}(\theta)`,
    with the interval's :math:`\mathrm{se}` (chance part simulated for equally filled bins).

    Args:
        num_bins: ``K``; num_real: reference counts :math:`n_r` (the held-out part in ``holdout`` mode);
        num_fake: :math:`n_f`. tolerance: the missing mass the decision accepts. power: target power.

    Example:
        >>> 0.02 < detectable_missing_mass(62, 1250, 2500, tolerance=0.01) < 0.06
        True
    """
    if min(num_real, num_fake) < SMALL_SAMPLE_COUNT * num_bins:
        # the distribution-free interval: its lower end passes the tolerance once the plug-in distance, whose sd is at
        # most 1/2 sqrt(1/n_r + 1/n_f) for the set that attains it, exceeds the tolerance by the slack
        slack = float(_tv_deviation(torch.tensor(float(num_real)), num_bins, confidence)
                      + _tv_deviation(torch.tensor(float(num_fake)), num_bins, confidence))
        spread = 0.5 * math.sqrt(1 / max(num_real, 1) + 1 / max(num_fake, 1))
        return min(1.0, tolerance + slack + normal_quantile(power) * spread)
    sd0 = torch.tensor(chance_sd(num_bins, num_real, num_fake, seed=seed), dtype=torch.float64)
    z = normal_quantile(0.5 + confidence / 2) + normal_quantile(power)
    n_r = torch.tensor(float(num_real), dtype=torch.float64)
    n_f = torch.tensor(float(num_fake), dtype=torch.float64)
    return float(_score_solve(torch.tensor(float(tolerance), dtype=torch.float64),
                              torch.tensor(0.0, dtype=torch.float64), n_r, n_f, sd0, z, +1.0).clamp(0, 1))


def samples_factor(mass: MissingMass, tolerance: float, *, power: float = 0.8) -> float | None:
    r"""By about what factor both sample sizes would have to grow to decide whether the missing mass exceeds
    ``tolerance``, if it is what was estimated (the standard error read from the interval's upper side, which
    is never cut at 0): every part of the interval's standard error scales as
    :math:`1/\sqrt n`, so the factor is :math:`((z_c + z_{power})\,\mathrm{se} / |\hat\theta - \text{tol}|)^2`
    (at least 1). ``None`` when the estimate sits on the tolerance (no finite size decides), or below
    ``SMALL_SAMPLE_COUNT`` samples per bin (the interval is then the distribution-free one, which this rule does not
    describe).

    Example:
        >>> m = missing_mass(torch.full((20,), 50), torch.full((20,), 100))
        >>> samples_factor(m, 0.01) > 1
        True
    """
    gap = abs(max(mass.estimate, 0.0) - tolerance)
    if gap < 1e-6 or not (math.isfinite(mass.estimate) and math.isfinite(mass.high)):
        return None
    if min(mass.num_real, mass.num_fake) < SMALL_SAMPLE_COUNT * mass.num_bins:
        return None  # the distribution-free interval's width does not shrink as 1 / sqrt(n) from here
    z_c = normal_quantile(0.5 + mass.confidence / 2)
    se = max((mass.high - max(mass.estimate, 0.0)) / z_c, 1e-9)  # the upper side: the lower end may sit at 0
    return max(((z_c + normal_quantile(power)) * se / gap) ** 2, 1.0)
