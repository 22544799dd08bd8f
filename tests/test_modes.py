"""Mode counts (RKE, Vendi) and the missing modes: exact against float64 full-matrix references, the separated-modes
limits, degenerate inputs, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import fastndb
from fastndb._core.modes import (
    _frequencies,
    count_curve,
    differential_modes,
    fourier_covariance,
    plateau_bandwidth,
    rke_count,
    vendi_count,
)
from fastndb.kernels.kernel_sums import gaussian_pair_sums


def _mixture(num_modes: int, dim: int, n: int, seed: int, *, spread: float = 1.0, separation: float = 300.0,
             weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_modes, dim, generator=g, dtype=torch.float64) * separation
    w = torch.full((num_modes,), 1.0 / num_modes, dtype=torch.float64) if weights is None else weights
    labels = torch.multinomial(w, n, replacement=True, generator=g)
    return centres[labels] + spread * torch.randn(n, dim, generator=g, dtype=torch.float64), labels


def _reference_sums(x: np.ndarray, sigma: float) -> tuple[float, float, np.ndarray]:
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    k2 = np.exp(-d2 / sigma**2)
    np.fill_diagonal(k2, 0.0)
    return k2.sum(), (k2**2).sum(), k2.sum(1)


@pytest.mark.parametrize("n, dim, block", [(257, 5, 64), (300, 33, 1000), (129, 1, 7)])
def test_tiled_sums_equal_float64_full_matrix(n: int, dim: int, block: int) -> None:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * 3
    sigma = 2.5
    total, total_sq, rows = _reference_sums(x.numpy(), sigma)
    out = gaussian_pair_sums(x, 1 / sigma**2, block_rows=block)
    assert abs(float(out.total) - total) <= 1e-9 * total
    assert abs(float(out.total_squared) - total_sq) <= 1e-9 * total_sq
    np.testing.assert_allclose(out.row_sums.numpy(), rows, rtol=1e-9)


def test_rke_count_equals_reference_and_published_formula() -> None:
    x, _ = _mixture(6, 4, 400, 1, separation=4.0)
    sigma = 3.0
    total, _, _ = _reference_sums(x.numpy(), sigma)
    n = x.shape[0]
    out = rke_count(x, sigma, block_rows=97)
    assert out.count == pytest.approx(n * (n - 1) / total, rel=1e-9)
    assert out.published == pytest.approx(n * n / (total + n), rel=1e-9)  # Jalali et al.: n^2 / ||K||_F^2
    assert out.low < out.count < out.high


def test_rke_interval_variance_matches_u_statistic_formula() -> None:
    """The standard error is Hoeffding's: checked against a direct float64 computation of zeta_1 and zeta_2."""
    x, _ = _mixture(5, 3, 200, 2, separation=3.0)
    sigma = 2.0
    n = x.shape[0]
    d2 = torch.cdist(x, x) ** 2
    k2 = torch.exp(-d2 / sigma**2)
    k2.fill_diagonal_(0)
    u = k2.sum() / (n * (n - 1))
    zeta2 = (k2**2).sum() / (n * (n - 1)) - u**2
    h = k2.sum(1) / (n - 1)
    zeta1 = (h.var() - zeta2 / (n - 1)) / (1 - 1 / (n - 1))
    var = 4 * (n - 2) / (n * (n - 1)) * zeta1 + 2 / (n * (n - 1)) * zeta2
    assert rke_count(x, sigma).log_se == pytest.approx(float(var.sqrt() / u), rel=1e-9)


@pytest.mark.parametrize("num_modes", [1, 8, 25])
def test_separated_equal_modes_count_m(num_modes: int) -> None:
    x, _ = _mixture(num_modes, 8, 3000, num_modes)
    sigma = plateau_bandwidth(x)
    count = rke_count(x, sigma).count
    assert abs(count - num_modes) <= 0.1 * num_modes
    vendi, method = vendi_count(x[:1500], sigma)
    assert method == "exact" and abs(vendi - num_modes) <= 0.15 * num_modes + 0.2


def test_unequal_weights_count_inverse_sum_of_squares() -> None:
    w = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.05], dtype=torch.float64)
    x, _ = _mixture(6, 4, 4000, 3, weights=w, spread=0.01)
    out = rke_count(x, 1.0)
    truth = 1 / float((w**2).sum())
    assert abs(math.log(out.count / truth)) <= 3 * out.log_se  # within 3 standard errors (coverage: benchmarks)
    assert out.count == pytest.approx(truth, rel=0.06)


@pytest.mark.parametrize("n", [2, 3, 100])
def test_identical_samples_count_one(n: int) -> None:
    x = torch.full((n, 7), 0.3)
    out = rke_count(x, 0.5)
    assert out.count == 1.0 and out.low == 1.0 and out.high == 1.0 and out.published == pytest.approx(1.0)
    assert vendi_count(x, 0.5)[0] == pytest.approx(1.0, abs=1e-9)
    assert plateau_bandwidth(x) > 0
    result = fastndb.modes(x, x)
    assert result.real.count == 1.0 and result.ratio == 1.0 and result.missing == ()


def test_vendi_exact_equals_eigen_reference() -> None:
    x, _ = _mixture(4, 3, 300, 4, separation=3.0)
    sigma = 1.7
    d2 = ((x.numpy()[:, None] - x.numpy()[None]) ** 2).sum(-1)
    lam = np.linalg.eigvalsh(np.exp(-d2 / (2 * sigma**2)) / len(x))
    lam = lam[lam > 1e-300]
    reference = math.exp(-(lam * np.log(lam)).sum())
    count, method = vendi_count(x, sigma)
    assert method == "exact" and count == pytest.approx(reference, rel=1e-9)
    order_two, _ = vendi_count(x, sigma, order=2)
    assert order_two == pytest.approx(rke_count(x, sigma).published, rel=1e-9)  # order 2 is the published RKE


def test_vendi_fourier_approaches_exact_as_features_grow() -> None:
    x, _ = _mixture(10, 4, 1000, 5, separation=4.0, spread=0.5)
    sigma = 1.5
    exact, _ = vendi_count(x, sigma)
    errors = [abs(vendi_count(x, sigma, num_features=r, exact_limit=10, seed=1)[0] - exact) / exact
              for r in (16, 256, 1024)]
    assert errors[2] < errors[1] < errors[0] and errors[2] < 0.06  # the bias shrinks as 1/sqrt(r): benchmarks


def test_fourier_features_approximate_the_kernel() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64)
    omega = _frequencies(3, 20000, 1.3, 0, x.device, x.dtype)
    from fastndb._core.modes import _features

    phi = _features(x, omega)
    exact = torch.exp(-torch.cdist(x, x) ** 2 / (2 * 1.3**2))
    assert float((phi @ phi.T - exact).abs().max()) < 0.03
    small = _frequencies(3, 64, 1.3, 0, x.device, x.dtype)
    assert torch.allclose(fourier_covariance(x, small).trace(), torch.tensor(1.0, dtype=torch.float64))


def test_missing_and_invented_modes_point_at_the_dropped_and_added_modes() -> None:
    g = torch.Generator().manual_seed(6)
    centres = torch.randn(6, 5, generator=g) * 40
    real_labels = torch.arange(1200) % 6
    fake_labels = torch.cat([torch.arange(900) % 4, torch.full((300,), 5)])  # modes 4 dropped, mode 5 over-filled
    real = centres[real_labels] + torch.randn(1200, 5, generator=g)
    fake = centres[fake_labels] + torch.randn(1200, 5, generator=g)
    out = fastndb.modes(real, fake, bandwidth=8.0, top=2)
    top = out.missing[0]
    assert (real_labels[top.examples] == 4).all()
    assert top.real_share == pytest.approx(1 / 6, abs=0.03) and top.fake_share < 0.01
    assert top.weight == pytest.approx(top.real_share - top.fake_share, abs=1e-6)
    invented = out.invented[0]
    assert (fake_labels[invented.examples] == 5).all() and invented.fake_share > invented.real_share
    assert out.ratio < 1 and out.ratio_high < 1


def test_no_missing_modes_when_fake_equals_real() -> None:
    x, _ = _mixture(5, 4, 600, 7, separation=40.0)
    out = fastndb.modes(x, x, bandwidth=8.0)
    assert out.ratio == 1.0 and out.missing == () and out.invented == ()


def test_invariances() -> None:
    """Row order, translation and a common scale (bandwidth scaled alike) leave the counts unchanged."""
    x, _ = _mixture(4, 3, 500, 8, separation=10.0)
    base = rke_count(x, 2.0).count
    perm = torch.randperm(500, generator=torch.Generator().manual_seed(0))
    assert rke_count(x[perm], 2.0).count == pytest.approx(base, rel=1e-10)
    assert rke_count(x + 1e3, 2.0).count == pytest.approx(base, rel=1e-6)
    assert rke_count(x * 1e-6, 2e-6).count == pytest.approx(base, rel=1e-9)
    assert rke_count(x * 1e6, 2e6).count == pytest.approx(base, rel=1e-9)
    assert plateau_bandwidth(x * 4) == pytest.approx(4 * plateau_bandwidth(x), rel=1e-6)


def test_float32_close_to_float64() -> None:
    x, _ = _mixture(8, 16, 2000, 9, separation=5.0)
    ref = rke_count(x, 4.0).count
    assert rke_count(x.float(), 4.0).count == pytest.approx(ref, rel=1e-5)


def test_count_curve_rises_as_the_bandwidth_shrinks() -> None:
    x, _ = _mixture(3, 4, 300, 10, separation=10.0)
    curve = count_curve(x, [20.0, 5.0, 1.0, 0.2])
    assert all(a <= b for a, b in zip(curve, curve[1:], strict=False))


def test_modes_api_result_and_json() -> None:
    x, _ = _mixture(8, 6, 800, 11)
    y, _ = _mixture(8, 6, 800, 12)
    out = fastndb.modes(x, y, top=3, examples=4)
    assert out.bandwidth_rule == "plateau" and len(out.curve_bandwidths) == 6
    payload = json.loads(json.dumps(out.to_dict(python=True)))
    assert payload["real"]["count"] == out.real.count and isinstance(payload["missing"], list)
    assert "ModesResult(" in repr(out)
    # the same centres: the counts agree within their intervals
    assert out.ratio_low <= 1.0 <= out.ratio_high


def test_modes_in_a_feature_space_and_images() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 8, 8), generator=g, dtype=torch.uint8)
    out = fastndb.modes(images, images[:40], feature=lambda x: x.flatten(1)[:, :10], top=1)
    assert out.real.num_samples == 64 and out.fake.num_samples == 40


def test_bandwidth_is_reported_in_the_samples_units() -> None:
    x, _ = _mixture(3, 2, 300, 13, separation=1e-20, spread=1e-22)
    out = fastndb.modes(x, x, bandwidth=5e-22)
    assert out.bandwidth == 5e-22 and math.isfinite(out.real.count)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, True, "wide"])
def test_bad_bandwidth_refused(bad: object) -> None:
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="bandwidth"):
        fastndb.modes(x, x, bandwidth=bad)


def test_too_few_samples_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        fastndb.modes(torch.randn(1, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        rke_count(torch.randn(1, 3), 1.0)


def test_nan_and_mismatched_inputs_refused() -> None:
    x = torch.randn(10, 3)
    bad = x.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError):
        fastndb.modes(x, bad)
    with pytest.raises(ValueError, match="features"):
        fastndb.modes(x, torch.randn(10, 4))


def test_far_apart_samples_warn_and_count_infinite() -> None:
    x = torch.arange(5, dtype=torch.float64)[:, None] * 1e3
    with pytest.warns(UserWarning, match="own mode"):
        out = rke_count(x, 1e-3)
    assert out.count == math.inf


def test_differential_modes_handles_empty_top() -> None:
    x = torch.randn(20, 2, dtype=torch.float64)
    omega = _frequencies(2, 8, 1.0, 0, x.device, x.dtype)
    assert differential_modes(x, x, omega, top=0, examples=3) == ()


def _separated_pair(seed: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, 4, generator=g) * 50
    real_labels, fake_labels = torch.arange(600) % 6, torch.arange(600) % 4
    real = centres[real_labels] + torch.randn(600, 4, generator=g)
    fake = centres[fake_labels] + torch.randn(600, 4, generator=g)
    return real, fake, real_labels, fake_labels


def test_metric_equals_the_function_and_follows_the_contract() -> None:
    pytest.importorskip("torchmetrics")
    from fastndb.metrics import ModesMetric, NotReadyError

    real, fake, _, _ = _separated_pair()
    metric = ModesMetric(top=2)
    with pytest.raises(NotReadyError):
        metric.result  # noqa: B018
    for start in range(0, 600, 200):
        metric.update(real[start : start + 200], real=True)
        metric.update(fake[start : start + 200], real=False)
    out = metric.compute()
    expected = fastndb.modes(real, fake, top=2)
    assert float(out["real_count"]) == pytest.approx(expected.real.count, rel=1e-9)
    assert float(out["fake_count"]) == pytest.approx(expected.fake.count, rel=1e-9)
    assert float(out["ratio_high"]) < 1
    # merge_state: two halves equal one metric fed both
    a, b = ModesMetric(top=2), ModesMetric(top=2)
    a.update(real[:300], real=True), a.update(fake[:300], real=False)
    b.update(real[300:], real=True), b.update(fake[300:], real=False)
    a.merge_state(b)
    merged = a.compute()
    assert all(torch.allclose(merged[k], out[k], rtol=1e-9) for k in out)
    with pytest.raises(ValueError):
        a.merge_state(ModesMetric(bandwidth=3.0))
    # forward: the batch's counts against the held real samples
    fresh = ModesMetric(bandwidth=10.0, real=real)
    batch = fresh(fake[:300], real=False)
    assert float(batch["fake_count"]) == pytest.approx(fastndb.modes(real, fake[:300], bandwidth=10.0).fake.count)
    fresh.reset()
    assert fresh(real[:10], real=True) is None  # real given up front: ignored, with a warning once


def test_metric_plot() -> None:
    pytest.importorskip("torchmetrics")
    pytest.importorskip("matplotlib")
    from fastndb import plot
    from fastndb.metrics import ModesMetric

    real, fake, _, _ = _separated_pair()
    metric = ModesMetric(real=real)
    metric.update(fake, real=False)
    fig, ax = metric.plot()
    assert len(ax.lines) >= 2
    plot.close(fig)
    fig, ax = metric.plot([metric.compute(), metric.compute()])
    plot.close(fig)


def test_missing_modes_picture_has_one_row_per_mode() -> None:
    pytest.importorskip("matplotlib")
    from fastndb import plot

    real, fake, _, _ = _separated_pair()
    real = torch.sigmoid(real.repeat(1, 4) / 50)  # 16 values in [0, 1]: 4 x 4 images
    fake = torch.sigmoid(fake.repeat(1, 4) / 50)
    out = fastndb.modes(real, fake, bandwidth=0.05, value_range=(0, 1))
    fig, ax = plot.missing_modes(out, real, image_shape=(1, 4, 4))
    assert len(ax.get_yticklabels()) == len(out.missing) > 0
    plot.close(fig)
    with pytest.raises(ValueError, match="fake"):
        plot.missing_modes(out, real, image_shape=(1, 4, 4), invented=True)


def test_cli_modes(tmp_path, capsys) -> None:
    from fastndb import cli

    real, fake, _, _ = _separated_pair()
    np.save(tmp_path / "real.npy", real.numpy())
    np.save(tmp_path / "fake.npy", fake.numpy())
    assert cli.main(["modes", str(tmp_path / "real.npy"), str(tmp_path / "fake.npy"), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "effective modes (RKE)" in text and "modes missing (real has, fake lacks): 2" in text
    assert cli.main(["modes", str(tmp_path / "real.npy"), str(tmp_path / "fake.npy"), "--quiet", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert round(payload["real"]["count"]) == 6 and len(payload["missing"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["modes", str(tmp_path / "real.npy"), str(tmp_path / "fake.npy"), "--bandwidth", "0"])


def test_missing_digit_found_in_the_digits_network_space() -> None:
    """On data without separated modes (the rule finds the one-mode plateau) the differential modes are read at a
    finer scale; an oracle that drops the 4s has its top missing mode's examples read as 4 by the digits network."""
    pytest.importorskip("sklearn")
    import warnings

    from fastndb._core.digits_net import load_digits_net
    from fastndb.demo.runner import load_digits_tensor

    images, labels = load_digits_tensor()
    images = images.reshape(-1, 1, 8, 8)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
    a, b = order[:898], order[898:]
    keep = b[labels[b] != 4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fastndb.modes(images[a], images[keep], feature="digits", value_range=(0, 1), top=1)
    assert out.real.count < 2 and out.modes_bandwidth < out.bandwidth
    with torch.no_grad():
        read = load_digits_net()(images[a][out.missing[0].examples]).argmax(1)
    assert (read == 4).float().mean() >= 0.8


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(2, 60), dim=st.integers(1, 5), scale=st.sampled_from([1e-6, 1.0, 1e6]),
       duplicates=st.booleans(), bandwidth_factor=st.sampled_from([0.01, 1.0, 100.0]),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 10_000))
def test_counts_stay_in_their_ranges(n, dim, scale, duplicates, bandwidth_factor, dtype, seed) -> None:
    """Whatever the data (duplicated, tiny or huge scales, few samples): 1 <= published <= n, the count at least 1
    and equal to a float64 reference, the interval around it, Vendi between 1 and n; samples all beyond each other's
    reach count as infinitely many modes, with a warning."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * scale
    if duplicates:
        x[n // 2:] = x[0]
    x = x.to(dtype)
    sigma = bandwidth_factor * scale
    d2 = torch.cdist(x.double(), x.double()) ** 2
    k2 = torch.exp(-d2 / sigma**2)
    k2.fill_diagonal_(0)
    total = float(k2.sum())
    if total < 1e-30 * n * n:  # every pair beyond the kernel's reach (float32's exp underflows there): refused as such
        with pytest.warns(UserWarning, match="own mode"):
            out = rke_count(x, sigma)
        assert out.count == math.inf
        return
    out = rke_count(x, sigma)
    # float32 distances carry eps_32 relative rounding, magnified d^2 / sigma^2 times in exp(-d^2 / sigma^2): far
    # below the typical distance (a count near n) the count keeps about 3 digits, at the rule's scales about 5
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4 if bandwidth_factor >= 1 else 1e-2
    assert out.count == pytest.approx(n * (n - 1) / total, rel=tolerance)
    assert out.count >= 1 - 1e-9 and 1 - 1e-9 <= out.published <= n + 1e-9
    assert out.low <= out.count <= out.high
    vendi, _ = vendi_count(x, sigma)
    assert 1 - 1e-6 <= vendi <= n + 1e-6


def test_inference_mode_and_uint8_inputs() -> None:
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (300, 1, 4, 4), generator=g, dtype=torch.uint8)
    with torch.inference_mode():
        held = images.clone()
        out = fastndb.modes(held, held[:200], top=1)
    again = fastndb.modes(images.float() / 255, images[:200].float() / 255, value_range=(0, 1), top=1)
    assert out.real.count == pytest.approx(again.real.count, rel=1e-6)
    assert out.bandwidth == pytest.approx(again.bandwidth, rel=1e-6)
