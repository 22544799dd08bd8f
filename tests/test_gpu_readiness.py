"""GPU readiness checked on the CPU: settings that break CUDA-only paths, determinism, host waits, device of state."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import fastndb
from tests.conftest import mixture


def _run(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("setting", [
    "torch.backends.cuda.matmul.fp32_precision = 'tf32'",
    "torch.backends.mkldnn.matmul.fp32_precision = 'bf16'",
    "torch.set_float32_matmul_precision('medium')",
])
def test_matmul_precision_settings_never_break_scoring(setting):
    out = _run(f"""
        import json, torch, fastndb
        {setting}
        g = torch.Generator().manual_seed(0)
        real, fake = torch.randn(2000, 8, generator=g), torch.randn(1000, 8, generator=g)
        x = torch.randn(300, 8, generator=g); x[200] = x[3]
        result = fastndb.score(real, fake, num_bins=5)
        pairs = fastndb.birthday(x, threshold=0.0)
        print(json.dumps({{"precision": result.precision, "dups": pairs.num_duplicates, "ndb": result.ndb}}))
    """)
    assert out["dups"] == 1
    if "mkldnn" in setting or "medium" in setting:
        assert "BF16" in out["precision"]  # said in the result, and the birthday band widened to match
    else:
        assert out["precision"] == "float32"  # a CUDA setting does not change CPU arithmetic


def test_birthday_band_follows_the_matmul_precision():
    from fastndb._core.birthday import _rounding_band

    out = _run("""
        import json, torch
        torch.backends.mkldnn.matmul.fp32_precision = 'bf16'
        from fastndb._core.birthday import _rounding_band
        x = torch.randn(100, 16, generator=torch.Generator().manual_seed(0))
        print(json.dumps({"band": _rounding_band(x)}))
    """)
    x = torch.randn(100, 16, generator=torch.Generator().manual_seed(0))
    assert out["band"] == pytest.approx(_rounding_band(x) * 2.0**16)  # 2^-7 against 2^-23: the same data


# ------------------------------------------------------------------------------------- host-wait budget
from tests.host_waits import HostWaits  # noqa: E402

BUDGET = {"update_batch": 1, "lloyd_iteration": 1, "cached_score": 2, "metric_compute": 1,  # docs/gpu.md
          "held_update": 2, "held_compute": 2}


@pytest.fixture(scope="module")
def data():
    return torch.from_numpy(mixture(4000, 16, seed=0)), torch.from_numpy(mixture(2000, 16, seed=1, keep_modes=7))


def test_streamed_batches_cost_one_host_read_each(data):
    real, fake = data
    ndb = fastndb.NDB(10).fit(real)
    with HostWaits() as one:
        ndb.update(fake[:500])
    with HostWaits() as four:
        ndb.update(list(torch.split(fake, 500)))
    assert one.total <= BUDGET["update_batch"] and four.total <= 4 * BUDGET["update_batch"], (one.waits, four.waits)


@pytest.mark.filterwarnings("ignore:k-means stopped at max_iter")
def test_lloyd_iterations_cost_one_host_read_each():
    x = torch.rand(3000, 8, generator=torch.Generator().manual_seed(0))  # uniform: no early convergence
    counts = {}
    for iterations in (2, 7):
        with HostWaits() as waits:
            result = fastndb.kmeans(x, 40, seed=0, max_iter=iterations, tol=0.0)
        assert result.n_iter == iterations
        counts[iterations] = waits.total
    assert counts[7] - counts[2] <= 5 * BUDGET["lloyd_iteration"], counts


def test_cached_score_and_metric_compute_cost_a_constant(data):
    from fastndb.metrics import NDBMetric

    real, fake = data
    fastndb.clear_cache()
    fastndb.score(real, fake, num_bins=10)
    with HostWaits() as cached:
        fastndb.score(real, fake, num_bins=10)
    assert cached.total <= BUDGET["cached_score"], cached.waits
    metric = NDBMetric(num_bins=10, real=real)  # the real side up front: fake batches become counts
    metric.update(fake, real=False)
    metric.compute()
    metric.reset()
    with HostWaits() as update:
        metric.update(fake, real=False)
    with HostWaits() as compute:
        metric.compute()
    assert update.total <= BUDGET["update_batch"] and compute.total <= BUDGET["metric_compute"], (update.waits,
                                                                                                   compute.waits)
    held = NDBMetric(num_bins=10, reset_real_features=False)  # FID-style: fake samples held until compute()
    held.update(real, real=True)
    held.update(fake, real=False)
    held.compute()
    held.reset()
    with HostWaits() as update:
        held.update(fake, real=False)
    with HostWaits() as compute:
        held.compute()
    assert update.total <= BUDGET["held_update"] and compute.total <= BUDGET["held_compute"], (update.waits,
                                                                                                compute.waits)
    fastndb.clear_cache()


def test_nothing_that_deterministic_mode_refuses_on_cuda_is_called(data):
    from fastndb.metrics import BirthdayMetric, NDBMetric

    real, fake = data
    torch.use_deterministic_algorithms(True)
    try:
        with HostWaits() as waits:
            ndb = fastndb.NDB(10, mode="holdout").fit(real)
            ndb.score(fake)
            fastndb.NDB(10, mode="original", whitening=True, max_dims=8).fit(real).score(fake)
            fastndb.score(real, fake, num_bins=10, cache=False, correction="bh")
            fastndb.kmeans(real, 12, seed=1)
            fastndb.birthday(fake, threshold=fastndb.duplicate_threshold(real, num_samples=500))
            metric = NDBMetric(num_bins=10)
            metric.update(real, real=True)
            metric.update(fake, real=False)
            metric.compute()
            pairs = BirthdayMetric(num_samples=300, threshold=0.5)
            pairs.update(fake)
            pairs.compute()
    finally:
        torch.use_deterministic_algorithms(False)
    assert waits.forbidden == []


def test_the_deterministic_mode_check_can_fail():
    with HostWaits() as waits:
        torch.cumsum(torch.rand(5), 0)
        torch.kthvalue(torch.rand(5), 2)
        torch.cumsum(torch.arange(5), 0)  # integer cumsum is deterministic
    assert len(waits.forbidden) == 2


def test_fits_are_bit_identical_over_repeated_runs(data):
    real, _ = data
    first = fastndb.NDB(10, seed=2).fit(real).bins
    for _ in range(2):
        again = fastndb.NDB(10, seed=2).fit(real).bins
        assert torch.equal(again.centroids, first.centroids) and torch.equal(again.real_counts, first.real_counts)


def test_training_never_reseeds_the_callers_cuda_generators(monkeypatch):
    from fastndb.demo.training import GANConfig, train_gan

    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(seed))
    images = torch.rand(64, 1, 28, 28) * 2 - 1
    train_gan(images, GANConfig(epochs=1, steps_per_epoch=1, width=4, latent_size=4, batch_size=16, seed=3),
              progress=False)
    assert calls == []


def test_metric_state_follows_the_metric_device(data):
    """CPU tensors standing in: whatever device a batch or a checkpoint comes from, held samples, counts and the
    restored bins live on the metric's device, so no collective can see a tensor on another device."""
    from fastndb.metrics import BirthdayMetric, NDBMetric

    real, fake = data
    metric = NDBMetric(num_bins=10, reset_real_features=False)
    metric.update(real.double(), real=True)
    metric.update(fake, real=False)
    assert metric._real.samples.device == metric.device == metric._pending_fake.samples.device
    metric.compute()
    metric.persistent(True)
    state = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in metric.state_dict().items()}
    restored = NDBMetric(num_bins=10, reset_real_features=False)
    restored.load_state_dict(state)
    assert restored.bins.centroids.device == restored.device and restored.fake_counts.device == restored.device
    pairs = BirthdayMetric(num_samples=100)
    pairs.update(fake[:50])
    assert pairs._buffer.samples.device == pairs.device


def test_the_gemm_update_matches_index_add_and_repeats_bit_for_bit():
    from fastndb.kernels import lloyd_step

    g = torch.Generator().manual_seed(0)
    x, labels = torch.randn(5000, 12, generator=g), torch.randint(7, (5000,), generator=g)
    sums, counts = lloyd_step(x, torch.zeros(7, 12), labels, method="index_add")
    gemm_sums, gemm_counts = lloyd_step(x, torch.zeros(7, 12), labels, method="gemm")
    torch.testing.assert_close(gemm_sums, sums, rtol=1e-5, atol=1e-4)
    assert torch.equal(gemm_counts, counts)
    assert torch.equal(lloyd_step(x, torch.zeros(7, 12), labels, method="gemm")[0], gemm_sums)


@pytest.mark.cuda
def test_on_cuda_fits_repeat_bit_for_bit_and_deterministic_mode_runs(data):
    real, fake = (t.cuda() for t in data)
    first = fastndb.NDB(10, seed=2).fit(real).bins
    again = fastndb.NDB(10, seed=2).fit(real).bins
    assert torch.equal(first.centroids, again.centroids) and torch.equal(first.real_counts, again.real_counts)
    torch.use_deterministic_algorithms(True)
    try:
        result = fastndb.score(real, fake, num_bins=10, cache=False)
        pairs = fastndb.birthday(fake, threshold=0.5)
    finally:
        torch.use_deterministic_algorithms(False)
    assert result.fake_counts.is_cuda and pairs.pairs.is_cuda


def test_full_sample_buffer_takes_batches_with_one_host_wait_and_stays_exact():
    from fastndb._core.sampling import SmallestKeyBuffer

    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        n, capacity = int(torch.randint(1, 80, (1,), generator=g)), int(torch.randint(1, 30, (1,), generator=g))
        pool = torch.randn(int(torch.randint(1, 10, (1,), generator=g)), 3, generator=g)
        x = pool[torch.randint(pool.shape[0], (n,), generator=g)] if trial % 2 else torch.randn(n, 3, generator=g)
        whole = SmallestKeyBuffer(capacity, 0, 1)
        whole.add(x)
        pieces = SmallestKeyBuffer(capacity, 0, 1)
        shuffled, start = x[torch.randperm(n, generator=g)], 0
        while start < n:
            step = int(torch.randint(1, 20, (1,), generator=g))
            if len(pieces) == capacity:
                with HostWaits() as waits:
                    pieces.add(shuffled[start : start + step])
                assert waits.total <= 1, waits.waits  # one read (new distinct samples); rows replaced at fixed size
            else:
                pieces.add(shuffled[start : start + step])
            start += step
        assert sorted(map(tuple, whole.samples.tolist())) == sorted(map(tuple, pieces.samples.tolist()))


def test_restored_metric_state_goes_to_the_metric_device(data):
    """The meta device stands in for a GPU: a checkpoint loaded with map_location="cpu" into a metric on another
    device puts its bins and held samples on the metric's device, next to ``fake_counts``."""
    from fastndb.metrics import NDBMetric

    real, fake = data
    metric = NDBMetric(num_bins=10, reset_real_features=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    metric.compute()
    metric.persistent(True)
    restored = NDBMetric(num_bins=10, reset_real_features=False).to("meta")
    restored.load_state_dict(metric.state_dict())
    assert restored.fake_counts.device.type == "meta"
    assert restored.bins.centroids.device.type == "meta" and restored.bins.real_counts.device.type == "meta"
