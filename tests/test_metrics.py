"""NDBMetric: agrees with NDB, is invariant to batching, round-trips, keeps O(K) state, and fails clearly."""

from __future__ import annotations

import copy
import importlib
import io
import pickle
import sys

import numpy as np
import pytest
import torch

import fastndb
from fastndb.metrics import NDBMetric
from tests.conftest import mixture

K = 12


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    real = torch.from_numpy(mixture(2400, 16, seed=21))
    fake = torch.from_numpy(mixture(1200, 16, seed=22, keep_modes=7))
    return real, fake


def _feed(metric: NDBMetric, x: torch.Tensor, real: bool, batch: int) -> None:
    for start in range(0, x.shape[0], batch):
        metric.update(x[start : start + batch], real=real)


def _values_equal(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_compute_equals_ndb_fit_and_score(data):
    real, fake = data
    metric = NDBMetric(num_bins=K, seed=3, correction="holm")
    _feed(metric, real, True, 500)
    _feed(metric, fake, False, 300)
    values = metric.compute()
    reference = fastndb.NDB(K, seed=3, correction="holm").fit(real).score(fake)
    assert int(values["ndb"]) == reference.ndb
    assert float(values["js"]) == reference.js and float(values["p_value"]) == reference.p_value
    assert float(values["ndb_ratio"]) == reference.ndb_ratio
    assert torch.equal(metric.result.fake_counts, reference.fake_counts)
    assert values["ndb"].dtype == torch.int64 and values["js"].dtype == torch.float64
    assert all(v.dim() == 0 for v in values.values())


def test_batch_order_and_size_do_not_change_the_result(data):
    real, fake = data
    first = NDBMetric(num_bins=K, seed=3)
    _feed(first, real, True, 1000)
    _feed(first, fake, False, 1200)
    g = torch.Generator().manual_seed(0)
    second = NDBMetric(num_bins=K, seed=3)
    _feed(second, real[torch.randperm(real.shape[0], generator=g)], True, 97)
    shuffled_fake = fake[torch.randperm(fake.shape[0], generator=g)]
    for start in range(0, fake.shape[0], 211):  # fake interleaved with more real batches would be the same too
        second.update(shuffled_fake[start : start + 211], real=False)
    assert _values_equal(first.compute(), second.compute())
    assert torch.equal(first.bins.centroids, second.bins.centroids)


def test_fitted_bins_passed_in_stream_fake_only(data):
    real, fake = data
    ndb = fastndb.NDB(K, seed=1).fit(real)
    metric = NDBMetric(bins=ndb)
    _feed(metric, fake, False, 256)
    assert metric.buffered_samples == {"real": 0, "fake": 0}  # counted on arrival
    assert int(metric.compute()["ndb"]) == ndb.score(fake).ndb
    metric.reset()  # reset_real_features=True still keeps bins you passed
    assert metric.is_fitted and metric.bins is ndb.bins
    with pytest.raises(ValueError, match=r"bins: the options \['mode'\] belong to the NDB you passed"):
        NDBMetric(bins=ndb, mode="original")
    with pytest.raises(ValueError, match="bins: the NDB passed has no bins yet"):
        NDBMetric(bins=fastndb.NDB(K))
    with pytest.raises(TypeError, match="bins: expected a fitted fastndb.NDB, got Tensor"):
        NDBMetric(bins=real)  # type: ignore[arg-type]


def test_reset_real_features(data):
    real, fake = data
    keep = NDBMetric(num_bins=K, reset_real_features=False)
    keep.update(real, real=True)
    keep.update(fake, real=False)
    first = keep.compute()
    centroids = keep.bins.centroids
    keep.reset()
    assert int(keep.fake_counts.sum()) == 0 and keep.is_fitted
    keep.update(real[:10], real=True)  # ignored: the bins exist
    keep.update(fake, real=False)
    assert _values_equal(keep.compute(), first) and keep.bins.centroids is centroids

    drop = NDBMetric(num_bins=K)
    drop.update(real, real=True)
    drop.update(fake, real=False)
    drop.compute()
    drop.reset()
    assert not drop.is_fitted and drop.buffered_samples == {"real": 0, "fake": 0}
    drop.update(fake, real=False)
    with pytest.raises(ValueError, match=r"compute: no real samples to fit the bins on"):
        drop.compute()


def test_state_dict_and_pickle_round_trips_before_and_after_fitting(data):
    real, fake = data
    before = NDBMetric(num_bins=K, seed=2)
    before.update(real, real=True)
    before.update(fake[:600], real=False)  # held until the bins exist
    after = copy.deepcopy(before)
    after.compute()
    after.update(fake[600:], real=False)

    for original in (before, after):
        original.persistent(True)  # torchmetrics' default is False: nothing in the state dict
        restored = NDBMetric(num_bins=K, seed=2)
        buffer = io.BytesIO()
        torch.save(original.state_dict(), buffer)
        buffer.seek(0)
        restored.load_state_dict(torch.load(buffer, weights_only=True))
        unpickled = pickle.loads(pickle.dumps(original))
        expected = copy.deepcopy(original).compute()
        assert _values_equal(restored.compute(), expected)
        assert _values_equal(unpickled.compute(), expected)


def test_real_samples_are_capped_by_content(data):
    real, fake = data
    capped = NDBMetric(num_bins=K, max_real_samples=700)
    _feed(capped, real, True, 250)
    assert capped.buffered_samples["real"] == 700
    other = NDBMetric(num_bins=K, max_real_samples=700)
    _feed(other, real.flip(0), True, 333)
    kept = capped._real.samples
    assert {tuple(r) for r in kept.tolist()} == {tuple(r) for r in other._real.samples.tolist()}
    capped.update(fake, real=False)
    capped.compute()
    assert capped.bins.num_fit + capped.bins.num_reference == 700
    assert capped.buffered_samples == {"real": 700, "fake": 700}  # kept: a later real batch may refit


def test_memory_stays_flat_over_a_million_fake_samples(data):
    real, _ = data
    metric = NDBMetric(num_bins=K, real=real)  # the real side up front: fake samples become counts on arrival
    metric.update(torch.from_numpy(mixture(100, 16, seed=5)), real=False)
    metric.compute()

    def state_bytes() -> int:
        return metric.fake_counts.numel() * metric.fake_counts.element_size() + metric.buffered_nbytes

    size_after_fit = state_bytes()
    assert size_after_fit == K * 8  # K int64 counts, nothing else
    g = torch.Generator().manual_seed(0)
    batch = torch.randn(50_000, 16, generator=g)
    for _ in range(20):
        metric.update(batch, real=False)
    assert state_bytes() == size_after_fit
    assert int(metric.fake_counts.sum()) == 100 + 1_000_000


def test_forward_accumulates_and_returns_the_batch_value(data):
    """Issue 25 item 4: forward accumulates like update and returns the metric of the batch alone."""
    real, fake = data
    metric = NDBMetric(num_bins=K)
    assert metric(real, real=True) is None
    assert metric(fake, real=False) is None  # no bins yet: nothing to compare the batch with
    assert metric.buffered_samples == {"real": real.shape[0], "fake": fake.shape[0]}
    ndb = fastndb.NDB(K).fit(real)
    assert int(metric.compute()["ndb"]) == ndb.score(fake).ndb
    batch = metric(fake[:400], real=False)
    expected = ndb.score(fake[:400])
    assert int(batch["ndb"]) == expected.ndb and float(batch["js"]) == expected.js
    assert int(metric.compute()["ndb"]) == ndb.score(torch.cat([fake, fake[:400]])).ndb  # and it accumulated
    fixed = NDBMetric(bins=ndb)
    first = fixed(fake[:600], real=False)
    assert int(first["ndb"]) == ndb.score(fake[:600]).ndb and fixed.forward(real, real=True) is None


def test_inputs_and_errors(data):
    real, fake = data
    metric = NDBMetric(num_bins=K)
    with pytest.raises(TypeError, match="real: expected True or False, got 1"):
        metric.update(real, real=1)  # type: ignore[arg-type]
    metric.update(real.numpy(), real=True)  # numpy works like torch
    with pytest.raises(ValueError, match=r"imgs \(fake\): expected 16 features per sample like earlier real "
                                         r"samples, got 15"):
        metric.update(fake[:, :15], real=False)
    with pytest.raises(ValueError, match="compute: no fake samples yet"):
        metric.compute()
    metric.update(fake, real=False)
    metric.compute()
    with pytest.raises(ValueError, match=r"imgs \(fake\): expected 16 features per sample like the bins, got 4"):
        metric.update(fake[:, :4], real=False)
    with pytest.raises(ValueError, match="max_real_samples"):
        NDBMetric(max_real_samples=0)
    with pytest.raises(TypeError, match="reset_real_features: expected a bool"):
        NDBMetric(reset_real_features="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode: expected one of"):
        NDBMetric(mode="fast")
    with pytest.raises(ValueError, match="result: call compute"):
        _ = NDBMetric().result


def test_uint8_images_and_metric_attributes():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (1500, 1, 8, 8), dtype=np.uint8)
    metric = NDBMetric(num_bins=8)
    metric.update(torch.from_numpy(images), real=True)
    metric.update(torch.from_numpy(images[:500]), real=False)
    as_float = NDBMetric(num_bins=8)
    as_float.update(torch.from_numpy(images.astype(np.float32) / 255), real=True)
    as_float.update(torch.from_numpy(images[:500].astype(np.float32) / 255), real=False)
    assert _values_equal(metric.compute(), as_float.compute())
    assert NDBMetric.higher_is_better is False and NDBMetric.full_state_update is False


def test_plot_returns_figure_and_axes(data):
    real, fake = data
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    metric = NDBMetric(num_bins=K)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    values = metric.compute()
    fig, ax = metric.plot()
    assert len(ax.patches) >= 2 * K and fig is ax.figure
    fig, ax = metric.plot([values, values])
    assert len(ax.lines) == 1


def test_missing_torchmetrics_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    monkeypatch.delitem(sys.modules, "fastndb.metrics")
    with pytest.raises(ModuleNotFoundError, match=r"pip install fastndb\[torchmetrics\]"):
        importlib.import_module("fastndb.metrics")


@pytest.mark.cuda
def test_to_cuda_moves_state_and_matches_cpu(data):
    real, fake = data
    cpu = NDBMetric(num_bins=K)
    cpu.update(real, real=True)
    gpu = NDBMetric(num_bins=K)
    gpu.update(real, real=True)  # held on the CPU ...
    gpu = gpu.to("cuda")  # ... and moved with the metric
    assert gpu._real.samples.is_cuda and gpu.fake_counts.is_cuda
    cpu.update(fake, real=False)
    gpu.update(fake.cuda(), real=False)
    got = gpu.compute()
    assert all(v.is_cuda for v in got.values())
    assert int(got["ndb"]) == int(cpu.compute()["ndb"])


# ------------------------------------------------------------------ BirthdayMetric
def test_birthday_metric_equals_the_function_and_ignores_batching():
    from fastndb.metrics import BirthdayMetric

    g = torch.Generator().manual_seed(4)
    support = torch.randn(400, 6, generator=g)
    draws = support[torch.randint(400, (900,), generator=g)]
    metric = BirthdayMetric(num_samples=1000, threshold=1e-6, num_pairs=5)
    for chunk in torch.split(draws, 128):
        metric.update(chunk)
    got = metric.compute()
    expected = fastndb.birthday(draws, num_pairs=5, threshold=1e-6)
    assert float(got["num_duplicates"]) == expected.num_duplicates
    assert float(got["support_estimate"]) == pytest.approx(expected.support_estimate)
    assert torch.equal(metric.result.distances, expected.distances)

    capped = BirthdayMetric(num_samples=300, threshold=1e-6)
    shuffled = BirthdayMetric(num_samples=300, threshold=1e-6)
    capped.update(draws)
    for chunk in torch.split(draws.flip(0), 77):
        shuffled.update(chunk)
    assert _values_equal(capped.compute(), shuffled.compute())  # the same 300 samples, whatever the order
    assert capped.samples.shape == (300, 6)

    restored = BirthdayMetric(num_samples=300, threshold=1e-6)
    capped.persistent(True)
    restored.load_state_dict(capped.state_dict())
    assert _values_equal(restored.compute(), capped.compute())
    assert _values_equal(pickle.loads(pickle.dumps(capped)).compute(), capped.compute())
    capped.reset()
    with pytest.warns(UserWarning, match="called before the ``update``"), \
            pytest.raises(ValueError, match="compute: expected at least 2 samples"):
        capped.compute()  # torchmetrics warns, then the metric says what is missing


def test_birthday_metric_errors():
    from fastndb.metrics import BirthdayMetric

    with pytest.raises(ValueError, match="threshold: expected a distance >= 0, got -0.5"):
        BirthdayMetric(threshold=-0.5)
    with pytest.raises(ValueError, match="metric: expected one of"):
        BirthdayMetric(metric="hamming")
    with pytest.raises(ValueError, match="num_samples"):
        BirthdayMetric(num_samples=1)
    metric = BirthdayMetric()
    metric.update(torch.randn(5, 3))
    with pytest.raises(ValueError, match="samples: expected 3 features per sample like earlier ones, got 4"):
        metric.update(torch.randn(5, 4))


def test_held_samples_live_on_the_metric_device(data):
    real, fake = data
    metric = NDBMetric(num_bins=K)
    metric.update(real.double(), real=True)
    metric.update(fake, real=False)
    assert metric._real.samples.device == metric.device and metric._pending_fake.samples.device == metric.device
    assert metric._real.samples.dtype == torch.float64  # devices follow the metric, dtypes stay
    metric.to("cpu")
    assert int(metric.compute()["ndb"]) == fastndb.score(real, fake, num_bins=K, cache=False).ndb




def test_loaded_checkpoint_computes_without_a_torchmetrics_warning(data):
    """Guards the one private torchmetrics hook used (``Metric._update_count``, set when a checkpoint is loaded) on
    the torchmetrics installed here (CI installs the newest release)."""
    import warnings

    real, fake = data
    metric = NDBMetric(num_bins=K, reset_real_features=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    expected = metric.compute()
    metric.persistent(True)
    restored = NDBMetric(num_bins=K, reset_real_features=False)
    restored.load_state_dict(metric.state_dict())
    assert hasattr(restored, "_update_count") and restored._update_count >= 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = restored.compute()
    assert torch.equal(got["ndb"], expected["ndb"]) and torch.equal(got["js"], expected["js"])


def test_attributes_that_need_compute_raise_attribute_errors_with_their_message():
    """Issue 25 item 6: ``hasattr``/``getattr(..., None)`` work before compute(), and the message says what to do
    (an ``AttributeError`` from a property would otherwise be replaced by nn.Module's bare one)."""
    from fastndb.metrics import BirthdayMetric, NDBMetric, NotReadyError, PRDCMetric

    for metric, names in ((NDBMetric(num_bins=4), ("bins", "result")), (BirthdayMetric(num_samples=8),
                                                                         ("result", "samples")),
                          (PRDCMetric(), ("result",))):
        for name in names:
            assert not hasattr(metric, name) and getattr(metric, name, None) is None
            with pytest.raises(NotReadyError, match=rf"{name}: .*compute\(\)"):
                getattr(metric, name)
            with pytest.raises(ValueError):  # still a ValueError, as before
                getattr(metric, name)
        with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
            metric.nonexistent  # noqa: B018
    metric = NDBMetric(num_bins=4)
    metric.update(torch.randn(400, 3), real=True)
    metric.update(torch.randn(200, 3), real=False)
    metric.compute()
    assert hasattr(metric, "bins") and hasattr(metric, "result") and metric.result.missing is not None
