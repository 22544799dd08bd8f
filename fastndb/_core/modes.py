r"""How many modes, and which are missing: kernel mode counts (RKE, Vendi) and differential eigen-analysis (FINC).

One kernel throughout, the Gaussian kernel of bandwidth :math:`\sigma`,

.. math:: k(x, y) = \exp\!\big(-\|x - y\|^2 / (2\sigma^2)\big), \qquad k(x, x) = 1 .

**RKE mode count** (Jalali et al., NeurIPS 2023): the order-2 Rényi entropy of the kernel's spectrum,
:math:`\mathrm{RKE} = 1 / \|K/n\|_F^2 = n^2 / \sum_{ij} k(x_i, x_j)^2`. It estimates
:math:`1 / E[k(X, X')^2]`, which for ``M`` separated modes of weights :math:`w_m` (each much tighter than
:math:`\sigma`, pairwise much farther apart) is :math:`1 / \sum_m w_m^2`: ``M`` for equal weights. The published
estimator includes the diagonal (:math:`i = j`, each 1), which biases it towards ``n``; the count here is the
U-statistic :math:`\hat U = \frac{1}{n(n-1)} \sum_{i \ne j} k^2`, unbiased for :math:`E[k^2]`, so
:math:`1/\hat U` does not grow with ``n`` (the published value is kept beside it). Its variance is Hoeffding's
decomposition, :math:`\mathrm{Var}\,\hat U = \frac{4(n-2)}{n(n-1)}\zeta_1 + \frac{2}{n(n-1)}\zeta_2` with
:math:`\zeta_1 = \mathrm{Var}\,E[k^2(X, X') \mid X]` (from the row sums) and :math:`\zeta_2 = \mathrm{Var}\,k^2`
(from the sum of :math:`k^4`), all read from one tiled pass (:func:`fastndb.kernels.kernel_sums.gaussian_pair_sums`);
the interval is the delta method on the log scale.

**Vendi count** (Friedman & Dieng 2023): the exponential of the Shannon entropy of the eigenvalues of
:math:`K/n`. Unlike RKE it needs the spectrum: exact (an ``n x n`` eigendecomposition) up to
``EXACT_VENDI_LIMIT`` samples, beyond that from ``r`` random Fourier features (Rahimi & Recht:
:math:`\phi(x) = r^{-1/2} [\cos \omega^\top x, \sin \omega^\top x]`, :math:`\omega \sim N(0, \sigma^{-2} I)`,
:math:`k(x, y) \approx \phi(x)^\top \phi(y)`), whose ``2r x 2r`` covariance :math:`\Phi^\top \Phi / n` has the
same non-zero spectrum as :math:`\tilde K / n` (FKEA, Ospanov et al. 2024). The Vendi count of a sample grows with
``n`` (a finite sample's spectrum has at most ``n`` terms): it is computed on equal numbers of real and fake samples.

**Which modes** (FINC, Jalali et al. 2024): in the shared Fourier space, the eigenvectors of
:math:`C_r - \eta C_f` (:math:`C = \Phi^\top\Phi/n`) with the largest eigenvalues are directions the real data
load and the generator does not: for separated modes, the mean embedding of a real mode the generator drops, with
eigenvalue about the mode's real weight. Each is reported with its real share :math:`v^\top C_r v`, its fake share
:math:`v^\top C_f v` (each with its standard error) and the real samples that load it most
(:math:`(\phi(x)^\top v)^2`); the same with the sides swapped gives the modes the generator invents.

**Bandwidth.** The counts depend on :math:`\sigma` strongly: too small and every sample is its own mode, too large
and everything is one. The default rule (:func:`plateau_bandwidth`) takes the smallest :math:`\sigma` at which the
RKE count stops depending on it, the first plateau of :math:`\log \mathrm{RKE}` against :math:`\log\sigma`
(slope within ``PLATEAU_SLOPE``), on a seeded subset of the real samples; the fake side uses the same
:math:`\sigma`. docs/modes.md shows the measurements behind it.
"""

from __future__ import annotations

import logging
import math
import warnings

import torch
from torch import Tensor

from fastndb._core.checks import check_int, check_open_unit, check_seed
from fastndb._core.collectives import Collective, resolve_collective
from fastndb._core.progress import progress_bar
from fastndb._core.results import Mode, ModeCount, ModesResult
from fastndb._core.sync import host_values
from fastndb.kernels.assign import squared_norms
from fastndb.kernels.kernel_sums import PairSums, gaussian_pair_sums
from fastndb.kernels.pairwise import _block_squared_distances

logger = logging.getLogger(__name__)

EXACT_VENDI_LIMIT = 2048  # samples up to which the Vendi count is exact (a 32 MiB float64 matrix at the limit)
NUM_FEATURES = 1024  # random Fourier frequencies (2r = 2048 features) of the Vendi approximation and of FINC
BANDWIDTH_SAMPLES = 2000  # real samples the bandwidth rule looks at
SHOULDER_SLOPE = 0.25  # a local minimum of |slope| this flat, above one mode, also counts as the modes' plateau
PLATEAU_SLOPE = 0.05  # |d log RKE / d log sigma| below which the count counts as settled
ONE_MODE = 2.0  # a real count below this at the rule's bandwidth: the one-mode plateau (no separated modes)
MODES_RESOLUTION = 10.0  # the real count the differential modes' kernel resolves when the counts' own sees one mode
RELATIVE_WEIGHT = 0.05  # a missing (invented) mode is reported when its weight is at least this share of the top one's
GRID_TOP = 8.0  # the rule's largest bandwidth, in units of the largest distance (one blob settles below it)
_GRID = 64  # bandwidths the rule tries, log-spaced
_ROWS = 4096  # rows of Fourier features formed at once


def _subset_rows(x: Tensor, size: int, seed: int) -> Tensor:
    """At most ``size`` rows of ``x`` chosen at random with a seeded generator on its device."""
    if x.shape[0] <= size:
        return x
    generator = torch.Generator(device=x.device).manual_seed(seed)
    return x.index_select(0, torch.randperm(x.shape[0], generator=generator, device=x.device)[:size])


def _pair_sq_distances(x: Tensor) -> Tensor:
    """``(s, s)`` float64 squared distances of a small set (the bandwidth rule's subset, at most
    ``BANDWIDTH_SAMPLES``), centred and computed in float64: the nearest-neighbour distances the rule starts from
    are then free of the expansion's float32 rounding (which depends on the rows' order)."""
    x = x.to(torch.float64)
    x = x - x.mean(0)
    norms = squared_norms(x)
    return _block_squared_distances(x, norms, x, norms)


def _upper(d2: Tensor) -> Tensor:
    """The strictly upper triangle of a square matrix, flat."""
    rows, cols = torch.triu_indices(d2.shape[0], d2.shape[0], offset=1, device=d2.device)
    return d2[rows, cols]


def plateau_bandwidth(x: Tensor, *, samples: int = BANDWIDTH_SAMPLES, seed: int = 0) -> float:
    r"""The bandwidth rule: the smallest :math:`\sigma` at which the RKE count of ``x`` stops depending on it.

    On a seeded subset of at most ``samples`` rows, :math:`\log(1/\hat U(\sigma))` is evaluated on ``_GRID``
    log-spaced bandwidths from the median nearest-neighbour distance to ``GRID_TOP`` times the largest distance;
    the result is the first :math:`\sigma` where the slope :math:`|d \log \mathrm{RKE} / d \log \sigma|` falls
    below ``PLATEAU_SLOPE``, or has a local minimum below ``SHOULDER_SLOPE`` with a count of at least 2 (modes
    separated, though not by much), the flattest one when none does. For separated modes that is the scale at
    which each mode counts as one and distinct modes stay distinct.

    Args:
        x: ``(n, D)`` floating samples (``n >= 2``), any device.
        samples: size of the subset. seed: its seed.

    Returns:
        :math:`\sigma`, in the units of ``x``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> centres = torch.randn(4, 2, generator=g) * 100
        >>> x = centres[torch.arange(400) % 4] + torch.randn(400, 2, generator=g)
        >>> 5 < plateau_bandwidth(x) < 50
        True
    """
    d2 = _pair_sq_distances(_subset_rows(x, samples, seed))
    s = d2.shape[0]
    values = _upper(d2)  # each pair once: the mean over i != j is the mean over i < j
    positive = values[values > 0]
    if positive.numel() == 0:
        return 1.0  # all samples identical: every bandwidth gives one mode
    nearest = torch.where(torch.eye(s, dtype=torch.bool, device=d2.device), math.inf, d2).min(1).values
    nearest = nearest[nearest > 0]
    low = float(nearest.median().sqrt()) if nearest.numel() else float(positive.min().sqrt())
    high = GRID_TOP * float(positive.max().sqrt())
    if not high > low:
        return high
    grid = torch.logspace(math.log10(low), math.log10(high), _GRID, dtype=torch.float64, device=d2.device)
    mean_k2 = torch.stack([torch.exp(-values / (sigma * sigma)).mean() for sigma in grid])
    log_count = -torch.log(mean_k2.clamp_min(1e-300))
    log_sigma = torch.log(grid)
    slope = (log_count[2:] - log_count[:-2]) / (log_sigma[2:] - log_sigma[:-2])
    steep = slope.abs()
    counts = torch.exp(log_count[1:-1])
    # a shoulder: a local minimum of the slope, flat enough, above one mode (modes that are separated, not far apart)
    shoulder = torch.zeros_like(steep, dtype=torch.bool)
    shoulder[1:-1] = (steep[1:-1] <= steep[:-2]) & (steep[1:-1] <= steep[2:])
    shoulder &= (steep <= SHOULDER_SLOPE) & (counts >= ONE_MODE)
    flat = ((steep <= PLATEAU_SLOPE) | shoulder).nonzero()
    index = int(flat[0, 0]) if flat.numel() else int(steep.argmin())
    return float(grid[index + 1])


CURVE_STEPS = 6  # bandwidths of the count curve: sigma, sigma / 2, ..., sigma / 32


def count_curve(x: Tensor, bandwidths: list[float], *, samples: int = BANDWIDTH_SAMPLES, seed: int = 0
                ) -> tuple[float, ...]:
    """The RKE count :math:`1/\\hat U` of ``x`` at each of ``bandwidths``, on a seeded subset of at most ``samples``
    rows (one ``samples^2`` distance matrix for all of them): how the count depends on the scale.

    Example:
        >>> x = torch.cat([torch.zeros(50, 3), torch.full((50, 3), 100.0)])
        >>> [round(c, 2) for c in count_curve(x, [1.0, 1e5])]
        [2.02, 1.0]
    """
    values = _upper(_pair_sq_distances(_subset_rows(x, samples, seed)))
    means = torch.stack([torch.exp(-values / (sigma * sigma)).mean() for sigma in bandwidths])
    return tuple(1.0 / v if v > 0 else math.inf for v in host_values(means))


def rke_count(x: Tensor, bandwidth: float, *, confidence: float = 0.95, block_rows: int | None = None,
              on_block=None, comm: Collective | None = None) -> ModeCount:
    r"""The RKE mode count of ``x`` at ``bandwidth`` with its interval (module docstring), exact and tiled.

    Args:
        x: ``(n, D)`` floating samples, ``n >= 2``, any device; the work runs there.
        bandwidth: :math:`\sigma > 0`, in the units of ``x``.
        confidence: level of the interval.
        block_rows: tile edge. on_block: progress callback.
        comm: a :class:`~fastndb._core.collectives.Collective` whose ranks all hold the same ``x``: each sums
            ``1 / world_size`` of the tiles, and one all-reduce of ``n + 2`` float64 values combines them (equal to one
            process up to the order of float64 additions).

    Memory: ``x``, one ``block_rows^2`` tile, ``n`` float64 row sums.

    Example:
        >>> x = torch.cat([torch.zeros(50, 3), torch.full((50, 3), 100.0)])  # two tight, equal modes
        >>> out = rke_count(x, 1.0)
        >>> round(out.count, 4), round(out.published, 4)  # 49 of the 99 others share a sample's mode: 99 / 49
        (2.0204, 2.0)
    """
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x: expected at least 2 samples for a mode count, got {n}")
    centred = x - x.mean(0, dtype=torch.float64).to(x.dtype)
    gamma = 1.0 / (bandwidth * bandwidth)  # k^2 = exp(-d^2 / sigma^2)
    if comm is not None and comm.world_size > 1:
        part = gaussian_pair_sums(centred, gamma, block_rows=block_rows, on_block=on_block,
                                  shard=(comm.rank, comm.world_size))
        packed = comm.all_reduce_sum(torch.cat([part.total.view(1), part.total_squared.view(1), part.row_sums]))
        sums = PairSums(packed[0], packed[1], packed[2:])
    else:
        sums = gaussian_pair_sums(centred, gamma, block_rows=block_rows, on_block=on_block)
    pairs = n * (n - 1)
    u = sums.total / pairs
    zeta2 = (sums.total_squared / pairs - u * u).clamp_min(0)
    rows = sums.row_sums / (n - 1)
    spread = rows.var() if n > 2 else torch.zeros((), dtype=torch.float64, device=x.device)
    zeta1 = ((spread - zeta2 / (n - 1)) / (1 - 1 / (n - 1)) if n > 2 else spread).clamp_min(0)
    variance = 4 * (n - 2) / pairs * zeta1 + 2 / pairs * zeta2
    u_value, variance_value, total = host_values(torch.stack([u, variance, sums.total]))
    z = _normal_quantile(0.5 + confidence / 2)
    published = n * n / (total + n)
    if u_value <= 0:
        warnings.warn(f"rke_count: no two of the {n} samples are within reach of the bandwidth {bandwidth:.4g}: "
                      "every sample counts as its own mode (pass a larger bandwidth)", UserWarning, stacklevel=3)
        return ModeCount(count=math.inf, low=float(published), high=math.inf, published=published, num_samples=n,
                         log_se=math.inf)
    log_se = math.sqrt(variance_value) / u_value
    count = 1.0 / u_value
    return ModeCount(count=count, low=count * math.exp(-z * log_se), high=count * math.exp(z * log_se),
                     published=published, num_samples=n, log_se=log_se)


def _normal_quantile(q: float) -> float:
    from fastndb._core.effects import normal_quantile

    return normal_quantile(q)


def _frequencies(dim: int, num_features: int, bandwidth: float, seed: int, device: torch.device,
                 dtype: torch.dtype) -> Tensor:
    """``(D, r)`` frequencies :math:`\\omega \\sim N(0, \\sigma^{-2} I)`, seeded, on ``device``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    omega = torch.randn(dim, num_features, generator=generator, device=device, dtype=torch.float64)
    return (omega / bandwidth).to(dtype)


def _features(x: Tensor, omega: Tensor) -> Tensor:
    """``(n, 2r)`` random Fourier features :math:`r^{-1/2}[\\cos \\omega^\\top x, \\sin \\omega^\\top x]` in ``x``'s
    dtype (the projection's rounding, about ``eps |omega^T x|``, is far below the features' sampling error)."""
    projected = x @ omega
    return torch.cat([projected.cos(), projected.sin()], dim=1) / math.sqrt(omega.shape[1])


def fourier_covariance(x: Tensor, omega: Tensor) -> Tensor:
    r"""``(2r, 2r)`` float64 :math:`\Phi^\top \Phi / n` of ``x``'s random Fourier features, in row tiles."""
    width = 2 * omega.shape[1]
    out = torch.zeros(width, width, dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], _ROWS):
        phi = _features(x[start : start + _ROWS], omega)
        out += (phi.T @ phi).to(torch.float64)
    return out / x.shape[0]


def _entropy_count(eigenvalues: Tensor, order: float) -> float:
    """:math:`\\exp` of the order-``q`` Rényi entropy of a spectrum (normalised to sum 1; q = 1: Shannon)."""
    lam = eigenvalues.clamp_min(0)
    lam = lam / lam.sum()
    if order == 1:
        positive = lam[lam > 0]
        return float(torch.exp(-(positive * positive.log()).sum()))
    return float(torch.exp(torch.log((lam**order).sum()) / (1 - order)))


def vendi_count(x: Tensor, bandwidth: float, *, order: float = 1.0, num_features: int = NUM_FEATURES,
                exact_limit: int = EXACT_VENDI_LIMIT, seed: int = 0) -> tuple[float, str]:
    r"""The Vendi count of order ``order`` of ``x`` at ``bandwidth``: exact up to ``exact_limit`` samples, from
    ``num_features`` random Fourier frequencies beyond (module docstring).

    Returns:
        ``(count, method)``, ``method`` ``"exact"`` or ``"fourier"``.

    Example:
        >>> x = torch.cat([torch.zeros(50, 3), torch.full((50, 3), 100.0)])
        >>> count, method = vendi_count(x, 1.0)
        >>> round(count, 6), method
        (2.0, 'exact')
    """
    n = x.shape[0]
    centred = x - x.mean(0, dtype=torch.float64).to(x.dtype)
    if n <= exact_limit:
        norms = squared_norms(centred)
        d2 = _block_squared_distances(centred, norms, centred, norms).to(torch.float64)
        d2.fill_diagonal_(0.0)
        kernel = torch.exp(-d2 / (2 * bandwidth * bandwidth)) / n
        return _entropy_count(torch.linalg.eigvalsh(kernel), order), "exact"
    omega = _frequencies(x.shape[1], num_features, bandwidth, seed, x.device, x.dtype)
    return _entropy_count(torch.linalg.eigvalsh(fourier_covariance(centred, omega)), order), "fourier"


def differential_modes(x: Tensor, y: Tensor, omega: Tensor, *, top: int, examples: int, eta: float = 1.0,
                       cov_x: Tensor | None = None, cov_y: Tensor | None = None,
                       spectrum: tuple[Tensor, Tensor] | None = None) -> tuple[Mode, ...]:
    r"""The ``top`` modes ``x`` loads and ``y`` does not: eigenvectors of :math:`C_x - \eta C_y` with the largest
    positive eigenvalues, each with its shares on both sides and the ``examples`` rows of ``x`` that load it most.
    A direction is kept only when its share on ``x`` exceeds that on ``y`` beyond chance: by more than
    :math:`z \sqrt{\mathrm{se}_x^2 + \mathrm{se}_y^2}`, :math:`z` the two-sided 5% quantile Bonferroni-corrected
    over the ``2r`` directions the eigenvector was chosen from; and when its weight is at least ``RELATIVE_WEIGHT``
    of the strongest one's (the directions after a dropped mode's own one describe its inner structure).

    Args:
        x, y: ``(n, D)`` and ``(m, D)`` samples (centred alike). omega: ``(D, r)`` shared frequencies.
        top: modes returned at most (those with a positive eigenvalue). examples: indices of rows of ``x`` kept.
        eta: :math:`\eta`, the weight of ``y``'s covariance (FINC's; 1: a mode counts when ``x`` loads it more).
        cov_x, cov_y: the covariances when already formed.
        spectrum: ``torch.linalg.eigh(cov_x - eta * cov_y)`` when already computed (with ``eta = 1`` the modes of
            the reverse direction are the same eigenvectors with the signs of the eigenvalues flipped).
    """
    cov_x = fourier_covariance(x, omega) if cov_x is None else cov_x
    cov_y = fourier_covariance(y, omega) if cov_y is None else cov_y
    values, vectors = torch.linalg.eigh(cov_x - eta * cov_y) if spectrum is None else spectrum
    order = torch.argsort(values, descending=True)[:top]
    values, vectors = values[order], vectors[:, order]
    keep = values > 0
    values, vectors = values[keep], vectors[:, keep]
    if values.numel() == 0:
        return ()
    loads_x = _loadings(x, omega, vectors)  # (n, t)
    loads_y = _loadings(y, omega, vectors)
    count = min(examples, x.shape[0])
    best = torch.topk(loads_x, count, dim=0)
    stats = torch.stack([values, loads_x.mean(0), loads_y.mean(0), loads_x.std(0) / math.sqrt(x.shape[0]),
                         loads_y.std(0) / math.sqrt(y.shape[0])])
    stats_host = host_values(stats.reshape(-1))
    t = values.numel()
    # the eigenvector is the direction of largest difference among the 2r: a mode is kept when its difference
    # passes a two-sided test at 5% Bonferroni-corrected over those 2r directions (noise directions drop out)
    z = _normal_quantile(1 - 0.05 / (2 * 2 * omega.shape[1]))
    modes = []
    for i in range(t):
        eig, share_x, share_y, se_x, se_y = (stats_host[j * t + i] for j in range(5))
        if share_x - share_y <= z * math.hypot(se_x, se_y) or eig < RELATIVE_WEIGHT * stats_host[0]:
            continue
        modes.append(Mode(weight=eig, real_share=share_x, fake_share=share_y, real_share_se=se_x,
                          fake_share_se=se_y, examples=best.indices[:, i], example_loadings=best.values[:, i]))
    return tuple(modes)


def _loadings(x: Tensor, omega: Tensor, vectors: Tensor) -> Tensor:
    """``(n, t)`` float64 :math:`(\\phi(x_i)^\\top v_j)^2`, in row tiles."""
    parts = [(_features(x[s : s + _ROWS], omega).to(torch.float64) @ vectors).square()
             for s in range(0, x.shape[0], _ROWS)]
    return torch.cat(parts)


def differential_bandwidth(bandwidths: list[float], real_counts: tuple[float, ...]) -> float:
    """The bandwidth of the differential modes: the counts' own, unless the real data count as one mode there (the
    rule found only the one-mode plateau: no separated modes), then the largest of ``bandwidths`` (the count curve's
    halvings) at which the real count reaches ``MODES_RESOLUTION``, the smallest when none does. A kernel that sees
    one mode cannot tell which part of it the generator misses (measured on the digits: docs/modes.md).

    Example:
        >>> differential_bandwidth([8.0, 4.0, 2.0, 1.0], (1.1, 3.0, 12.0, 90.0))
        2.0
        >>> differential_bandwidth([8.0, 4.0], (8.2, 30.0))
        8.0
    """
    if real_counts[0] >= ONE_MODE:
        return bandwidths[0]
    for bandwidth, count in zip(bandwidths, real_counts, strict=True):
        if count >= MODES_RESOLUTION:
            return bandwidth
    return bandwidths[-1]


def mode_analysis(x: Tensor, y: Tensor, *, bandwidth: float | None, confidence: float, vendi_samples: int | None,
                  num_features: int, top: int, examples: int, seed: int, unit: float, block_rows: int | None,
                  progress: bool | None, comm: Collective | None = None) -> ModesResult:
    """The counts, the ratio and the differential modes of prepared samples (:func:`fastndb.modes` does the
    preparing); ``unit`` is the power-of-two scale applied to both, undone in the reported bandwidth. With ``comm``
    every rank holds the same ``x`` and ``y`` and the RKE counts' tiles are split between the ranks."""
    rule = "given" if bandwidth is not None else "plateau"
    sigma = bandwidth * unit if bandwidth is not None else plateau_bandwidth(x, seed=seed)
    centre = x.mean(0, dtype=torch.float64).to(x.dtype)
    x, y = x - centre, y - centre
    n, m = x.shape[0], y.shape[0]
    with progress_bar(progress, total=n + m, desc="mode counts", unit="row") as bar:
        real = rke_count(x, sigma, confidence=confidence, block_rows=block_rows, on_block=bar.update, comm=comm)
        fake = rke_count(y, sigma, confidence=confidence, block_rows=block_rows, on_block=bar.update, comm=comm)
    z = _normal_quantile(0.5 + confidence / 2)
    ratio = fake.count / real.count
    log_se = math.hypot(real.log_se, fake.log_se)
    ratio_low, ratio_high = (ratio * math.exp(-z * log_se), ratio * math.exp(z * log_se)) if math.isfinite(
        log_se) else (0.0, math.inf)
    size = min(n, m) if vendi_samples is None else min(n, m, vendi_samples)
    vendi_real, method = vendi_count(_subset_rows(x, size, seed), sigma, num_features=num_features, seed=seed)
    vendi_fake, _ = vendi_count(_subset_rows(y, size, seed + 1), sigma, num_features=num_features, seed=seed)
    curve = [sigma / 2**j for j in range(CURVE_STEPS)]
    curve_real, curve_fake = count_curve(x, curve, seed=seed), count_curve(y, curve, seed=seed)
    modes_sigma = differential_bandwidth(curve, curve_real)
    missing = invented = ()
    if top > 0:
        omega = _frequencies(x.shape[1], num_features, modes_sigma, seed, x.device, x.dtype)
        cov_x, cov_y = fourier_covariance(x, omega), fourier_covariance(y, omega)
        values, vectors = torch.linalg.eigh(cov_x - cov_y)  # one decomposition serves both directions
        missing = differential_modes(x, y, omega, top=top, examples=examples, cov_x=cov_x, cov_y=cov_y,
                                     spectrum=(values, vectors))
        invented = differential_modes(y, x, omega, top=top, examples=examples, cov_x=cov_y, cov_y=cov_x,
                                      spectrum=(-values, vectors))
        invented = tuple(mode.swapped() for mode in invented)
    logger.info("modes: n=%d, m=%d, sigma=%.4g (%s), RKE %.3g vs %.3g", n, m, sigma / unit, rule, real.count,
                fake.count)
    return ModesResult(real=real, fake=fake, ratio=ratio, ratio_low=ratio_low, ratio_high=ratio_high,
                       vendi_real=vendi_real, vendi_fake=vendi_fake, vendi_samples=size, vendi_method=method,
                       bandwidth=sigma / unit, bandwidth_rule=rule, missing=missing, invented=invented,
                       num_features=num_features, confidence=confidence,
                       curve_bandwidths=tuple(b / unit for b in curve), curve_real=curve_real, curve_fake=curve_fake,
                       modes_bandwidth=modes_sigma / unit)


def check_bandwidth(bandwidth: object) -> float | None:
    """``bandwidth`` as a float, or ``None``.

    Raises:
        ValueError: not a positive finite number or ``None``.
    """
    if bandwidth is None:
        return None
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, int | float) or not (
            math.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"bandwidth: expected a positive finite number or None, got {bandwidth!r}")
    return float(bandwidth)


def modes(
    real: object,
    fake: object,
    *,
    bandwidth: float | None = None,
    feature: object = None,
    value_range: tuple[float, float] | None = None,
    num_samples: int | None = None,
    vendi_samples: int | None = None,
    num_features: int = NUM_FEATURES,
    top: int = 5,
    examples: int = 8,
    confidence: float = 0.95,
    seed: int = 0,
    block_rows: int | None = None,
    progress: bool | None = None,
    distributed: bool | None = None,
    group: object = None,
) -> ModesResult:
    r"""Effective mode counts of the real and the fake samples, their ratio, and the modes the generator misses and
    invents (see :class:`~fastndb.ModesResult` and :mod:`fastndb._core.modes`).

    Args:
        real: ``(N, D)`` or ``(N, C, H, W)`` real samples, every form :func:`fastndb.score` takes; the work runs on
            their device.
        fake: ``(M, ...)`` generated samples, same forms.
        bandwidth: :math:`\sigma` of the Gaussian kernel, in the samples' units (after ``feature=``); ``None``:
            the plateau rule on the real samples (:func:`plateau_bandwidth`). Compare counts only at one bandwidth.
        feature: embed both sets first, as everywhere.
        value_range: the value-range convention's range for float samples.
        num_samples: use at most this many samples of each set (content keys with ``seed``); the RKE counts cost
            ``(N^2 + M^2) D / 2`` multiply-adds.
        vendi_samples: samples per side for the Vendi counts (equal on both sides; ``None``: as many as the smaller
            set holds, then from random Fourier features beyond ``EXACT_VENDI_LIMIT``).
        num_features: ``r``, random Fourier frequencies of the Vendi approximation and the differential modes.
        top: missing and invented modes reported at most (0: none, and no Fourier covariances formed).
        examples: sample indices kept per mode.
        confidence: level of the intervals. seed: seed of every random choice.
        block_rows: tile edge. progress: tqdm bar.
        distributed: ``None`` (default): when ``torch.distributed`` is initialised with several processes, ``real``
            and ``fake`` are this rank's shards (as :func:`fastndb.kmeans` takes them): each rank embeds its own,
            the union (in rank order) is gathered on every rank, and the RKE counts' tiles are split between the
            ranks; the result equals one process fed the union (float64 sums up to their order). ``False``: this
            process alone. ``True``: require a process group.
        group: the ``torch.distributed`` process group (``None``: the default group).

    Memory: the samples, one tile, a ``(2r)^2`` float64 covariance per side, the Vendi kernel matrix of
    ``vendi_samples`` (at most ``EXACT_VENDI_LIMIT``) rows, the bandwidth rule's ``BANDWIDTH_SAMPLES^2`` distances:
    never an ``N x N`` matrix of the whole sets.

    Raises:
        ValueError: fewer than 2 samples on a side; invalid samples; a non-positive bandwidth.
        TypeError: non-array input or non-integer counts.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> centres = torch.randn(8, 2, generator=g) * 100
        >>> real = centres[torch.arange(800) % 8] + torch.randn(800, 2, generator=g)
        >>> fake = centres[torch.arange(800) % 4] + torch.randn(800, 2, generator=g)  # half the modes
        >>> out = modes(real, fake, bandwidth=10.0)
        >>> round(out.real.count), round(out.fake.count), len(out.missing) > 0
        (8, 4, True)
    """
    from fastndb._core.coverage import prepare_shards

    bandwidth = check_bandwidth(bandwidth)
    if num_samples is not None:
        num_samples = check_int(num_samples, "num_samples", minimum=2)
    if vendi_samples is not None:
        vendi_samples = check_int(vendi_samples, "vendi_samples", minimum=2)
    num_features = check_int(num_features, "num_features", minimum=1)
    top = check_int(top, "top", minimum=0)
    examples = check_int(examples, "examples", minimum=1)
    confidence = check_open_unit(confidence, "confidence")
    seed = check_seed(seed)
    comm = resolve_collective(distributed, group)
    sharded = comm.world_size > 1
    x, y, unit = prepare_shards(real, fake, comm, feature=feature, value_range=value_range, num_samples=num_samples,
                                seed=seed)
    for name, count in (("real", x.shape[0]), ("fake", y.shape[0])):
        if count < 2:
            raise ValueError(f"{name}: expected at least 2 samples for a mode count, got {count}")
    if x.dtype not in (torch.float32, torch.float64):
        x, y = x.float(), y.float()
    return mode_analysis(x, y, bandwidth=bandwidth, confidence=confidence, vendi_samples=vendi_samples,
                         num_features=num_features, top=top, examples=examples, seed=seed, unit=unit,
                         block_rows=block_rows, progress=progress, comm=comm if sharded else None)
