r"""Signs of missing modes in one result, defined once: the report's verdict and the collapse monitor read them.

* **Missing-mode bins** (:func:`missing_mode_bins`): bins the generated samples under-fill with a two-proportion
  p-value below :math:`\alpha / K` (Holm's first step, family-wise error at most :math:`\alpha` under the null).
  NDB's count cannot see one strongly under-filled bin among many (its binomial tail needs several), this can: a
  dropped mode empties the bins that hold it.
* **Coverage shortfall** (:func:`coverage_shortfall`): how many binomial standard errors
  :math:`\sqrt{c_0 (1 - c_0) / N}` the coverage lies below its chance level :math:`c_0` (what a generator that
  samples like the data gets at these sample sizes). Coverage indicators are not independent, so 3 standard errors
  is a guide, not an exact test; ``benchmarks/monitor_rule.py`` measures its false-alarm rate.
"""

from __future__ import annotations

import math

from fastndb._core.results import NDBResult, PRDCResult

COVERAGE_SIGMAS = 3.0  # coverage this many standard errors below chance counts as a sign of missing modes
EMPTIED_SHARE = 0.25  # a missing-mode bin "emptied": the generated share below a quarter of the real share


def missing_mode_bins(result: NDBResult) -> int:
    """Under-filled bins of ``result`` with a p-value below ``alpha / K``.

    Example:
        >>> import torch, fastndb
        >>> g = torch.Generator().manual_seed(0)
        >>> blob = lambda centre: torch.randn(500, 2, generator=g) + centre
        >>> real, fake = torch.cat([blob(8), blob(-8)]), blob(8)  # the generator never samples the second blob
        >>> result = fastndb.score(real, fake, num_bins=4, seed=0)
        >>> result.fake_counts.tolist(), missing_mode_bins(result)  # the second blob's bin is empty
        ([0, 176, 151, 173], 1)
    """
    return int(((result.p_values < result.alpha / result.num_bins) & (result.z < 0)).sum())


def emptied_bins(result: NDBResult) -> int:
    """Missing-mode bins (:func:`missing_mode_bins`) that the generated samples fill to less than a quarter of the
    real share: what a dropped mode does to the bins that hold it, where a generator that is merely off
    (blurred, shifted) under-fills bins without emptying them.

    Example:
        >>> import torch, fastndb
        >>> g = torch.Generator().manual_seed(0)
        >>> blob = lambda centre: torch.randn(500, 2, generator=g) + centre
        >>> emptied_bins(fastndb.score(torch.cat([blob(8), blob(-8)]), blob(8), num_bins=4, seed=0))
        1
    """
    low = result.fake_proportions < EMPTIED_SHARE * result.real_proportions
    return int(((result.p_values < result.alpha / result.num_bins) & (result.z < 0) & low).sum())


def coverage_shortfall(result: PRDCResult) -> float:
    """Standard errors by which ``result.coverage`` lies below ``result.expected_null_coverage`` (negative: above)."""
    null = result.expected_null_coverage
    return (null - result.coverage) / math.sqrt(max(null * (1 - null), 1e-12) / result.num_real)
