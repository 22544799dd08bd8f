"""The metrics by torchmetrics' own rules (issue 25): merge_state, MetricCollection compute groups, forward per
batch, state_dict with and without persistent, strict loading, checkpoints into other settings, plot, set_dtype,
pickling, and the real side (fitted on the whole set, also under Lightning's sanity check).

Written for this project after the checks of torchmetrics' unit-test harness (class against functional per batch and
accumulated, merge, collections, persistence, dtype moves); the 1- and 2-process gloo checks are in
tests/test_distributed.py."""

from __future__ import annotations

import io
import pickle
import warnings

import pytest
import torch

import fastndb
from fastndb.metrics import BirthdayMetric, NDBMetric, PRDCMetric
from tests.conftest import mixture

torchmetrics = pytest.importorskip("torchmetrics")
K = 8


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    real = torch.from_numpy(mixture(1600, 6, seed=31))
    fake = torch.from_numpy(mixture(800, 6, seed=32, keep_modes=5))
    return real, fake


def _same(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ merge_state
def test_merge_state_takes_the_other_metrics_samples(data):
    """Item 1: two metrics fed halves, merged, equal one metric fed everything (all three metrics)."""
    real, fake = data
    a, b, whole = PRDCMetric(nearest_k=3), PRDCMetric(nearest_k=3), PRDCMetric(nearest_k=3)
    a.update(real[:200], real=True), a.update(fake[:100], real=False)
    b.update(real[200:400], real=True), b.update(fake[100:200], real=False)
    whole.update(real[:400], real=True), whole.update(fake[:200], real=False)
    a.merge_state(b)
    merged = a.compute()
    assert (a.result.num_real, a.result.num_fake) == (400, 200)
    assert _same(merged, whole.compute())

    a, b, whole = NDBMetric(num_bins=K), NDBMetric(num_bins=K), NDBMetric(num_bins=K)
    for metric, part in ((a, slice(0, 800)), (b, slice(800, 1600))):
        metric.update(real[part], real=True)
        metric.update(fake[part.start // 2 : part.stop // 2], real=False)
    whole.update(real, real=True), whole.update(fake, real=False)
    a.merge_state(b)
    assert _same(a.compute(), whole.compute()) and int(a.result.fake_counts.sum()) == 800

    ndb = fastndb.NDB(K, seed=1).fit(real)
    a, b = NDBMetric(bins=ndb), NDBMetric(bins=ndb)
    a.update(fake[:300], real=False), b.update(fake[300:], real=False)
    a.merge_state(b)
    assert int(a.compute()["ndb"]) == ndb.score(fake).ndb

    a, b, whole = BirthdayMetric(num_samples=500), BirthdayMetric(num_samples=500), BirthdayMetric(num_samples=500)
    a.update(fake[:250]), b.update(fake[250:500]), whole.update(fake[:500])
    a.merge_state(b)
    a.compute()
    assert a.samples.shape[0] == 500 and _same(a.compute(), whole.compute())


def test_merge_state_refuses_what_it_cannot_merge(data):
    real, fake = data
    pixel = NDBMetric(bins=fastndb.NDB(K, seed=1).fit(real))
    other = NDBMetric(bins=fastndb.NDB(K, seed=2).fit(real))
    with pytest.raises(ValueError, match=r"merge_state: .*fixed_bins"):
        pixel.merge_state(other)  # counts over two bin sets would mean nothing
    with pytest.raises(ValueError, match=r"merge_state: .*num_bins: 12 there, 8 here"):
        NDBMetric(num_bins=K).merge_state(NDBMetric(num_bins=12))
    with pytest.raises(TypeError, match="pass the other metric itself"):
        NDBMetric(num_bins=K).merge_state({"fake_counts": torch.zeros(K, dtype=torch.int64)})
    with pytest.raises(TypeError, match="expected a PRDCMetric, got BirthdayMetric"):
        PRDCMetric().merge_state(BirthdayMetric())
    with pytest.raises(ValueError, match=r"merge_state: .*seed"):
        BirthdayMetric(seed=0).merge_state(BirthdayMetric(seed=1))


# ------------------------------------------------------------------------------------------- MetricCollection
def test_a_collection_of_differently_configured_metrics_matches_each_alone(data):
    """Item 2: no two fastndb metrics share a compute group; each reports what it reports alone."""
    real, fake = data
    pixel_bins, other_bins = fastndb.NDB(K, seed=1).fit(real), fastndb.NDB(K, seed=9, mode="original").fit(real)
    members = {"a": lambda: NDBMetric(num_bins=5), "b": lambda: NDBMetric(num_bins=5, alpha=0.2),
               "c": lambda: NDBMetric(bins=pixel_bins), "d": lambda: NDBMetric(bins=other_bins)}
    collection = torchmetrics.MetricCollection({name: make() for name, make in members.items()})
    alone = {name: make() for name, make in members.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # real batches ignored by the fixed references
        for start in range(0, 1600, 400):
            collection.update(real[start : start + 400], real=True)
            collection.update(fake[start // 2 : start // 2 + 200], real=False)
            for metric in alone.values():
                metric.update(real[start : start + 400], real=True)
                metric.update(fake[start // 2 : start // 2 + 200], real=False)
    got = collection.compute()
    assert len(collection.compute_groups) == len(members)
    for name, metric in alone.items():
        expected = metric.compute()
        for key, value in expected.items():
            assert torch.equal(got[f"{name}_{key}"], value), (name, key)


# ----------------------------------------------------------------------------------------- the real side
def test_real_samples_after_a_fit_refit_the_bins_and_say_so(data):
    """Item 3: a fit on the first batches (a sanity check) does not freeze the bins; re-sent batches are ignored."""
    real, fake = data
    metric = NDBMetric(num_bins=K, reset_real_features=False)
    metric.update(real[:400], real=True), metric.update(fake[:100], real=False)
    metric.compute()  # the "sanity check": bins on 400
    metric.reset()
    for start in range(0, 1600, 400):  # the epoch: the first batch again, then the rest
        metric.update(real[start : start + 400], real=True)
        metric.update(fake[start // 2 : start // 2 + 200], real=False)
    with pytest.warns(UserWarning, match=r"1200 real samples the bins had not seen .* refitting on all 1600"):
        values = metric.compute()
    assert metric.bins.num_fit + metric.bins.num_reference == 1600
    assert int(values["ndb"]) == fastndb.NDB(K).fit(real).score(fake).ndb
    metric.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the next epoch sends the same real set: nothing new, no refit
        for start in range(0, 1600, 400):
            metric.update(real[start : start + 400], real=True)
        metric.update(fake, real=False)
        assert _same(metric.compute(), values)


def test_real_up_front_is_fitted_once_and_survives_reset(data, tmp_path, monkeypatch):
    real, fake = data
    expected = fastndb.NDB(K, seed=4).fit(real).score(fake)
    for given in (real, list(torch.split(real, 300))):  # a tensor, or an iterable of batches (a loader)
        metric = NDBMetric(num_bins=K, seed=4, real=given)
        assert metric.fixed_reference and metric.buffered_samples == {"real": 0, "fake": 0}
        metric.update(fake, real=False)
        assert int(metric.compute()["ndb"]) == expected.ndb
        metric.reset()
        with pytest.warns(UserWarning, match=r"update\(imgs, real=True\) is ignored"):
            metric.update(real[:10], real=True)
        assert metric.is_fitted and metric.bins.num_fit + metric.bins.num_reference == 1600
    monkeypatch.setenv("FASTNDB_HOME", str(tmp_path))
    fastndb.save_reference("mix", real, num_bins=K, seed=4)
    named = NDBMetric(real="mix", alpha=0.05)
    named.update(fake, real=False)
    assert int(named.compute()["ndb"]) == expected.ndb
    with pytest.raises(ValueError, match="seed: reference 'mix' was fitted with its own bin options"):
        NDBMetric(real="mix", num_bins=K, seed=5)
    with pytest.raises(ValueError, match="real, bins: pass one of them"):
        NDBMetric(real=real, bins=fastndb.NDB(K).fit(real))

    coverage = PRDCMetric(nearest_k=3, real=real[:400])
    coverage.update(fake[:300], real=False)
    first = coverage.compute()
    coverage.reset()  # reset_real_features=True, yet the real side given up front stays
    coverage.update(fake[:300], real=False)
    assert _same(coverage.compute(), first)
    assert _same(first, PRDCMetric(nearest_k=3, real=real[:400])(fake[:300], real=False))


def test_prdc_real_set_sent_every_epoch_is_not_counted_twice(data):
    real, fake = data
    once, every = PRDCMetric(nearest_k=3, reset_real_features=False), PRDCMetric(nearest_k=3,
                                                                                 reset_real_features=False)
    once.update(real[:500], real=True)
    every.update(real[:500], real=True)
    for metric in (once, every):
        metric.update(fake[:300], real=False)
        metric.compute()
        metric.reset()
    every.update(real[:500], real=True)  # the same real set again
    for metric in (once, every):
        metric.update(fake[300:600], real=False)
    assert _same(once.compute(), every.compute()) and every.result.num_real == 500


def test_lightning_sanity_check_does_not_freeze_the_bins():
    """Item 3 under Lightning's default sanity check (2 validation batches): the README's loop, both ways."""
    pl = pytest.importorskip("pytorch_lightning")
    from fastndb.demo.runner import load_digits_tensor

    digits, _ = load_digits_tensor()
    images = (digits.reshape(-1, 1, 8, 8) * 255).round().to(torch.uint8)
    noise = torch.randn(images.shape[0], 16, generator=torch.Generator().manual_seed(0))

    class GAN(pl.LightningModule):
        def __init__(self, metric, send_real):
            super().__init__()
            self.generator = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(),
                                                 torch.nn.Unflatten(1, (1, 8, 8)))
            self.ndb, self.send_real, self.fits = metric, send_real, []

        def training_step(self, batch, batch_idx):
            return self.generator(batch[0]).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def validation_step(self, batch, batch_idx):
            if self.send_real:
                self.ndb.update(batch[1], real=True)
            self.ndb.update(self.generator(batch[0]), real=False)

        def on_validation_epoch_end(self):
            self.log_dict({f"ndb/{k}": v.float() for k, v in self.ndb.compute().items()})
            self.fits.append(self.ndb.bins.num_fit + self.ndb.bins.num_reference)
            self.ndb.reset()

    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(noise, images), batch_size=300)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(noise), batch_size=300)
    for metric, send_real in ((NDBMetric(real=images, feature="digits", value_range=(-1, 1), num_bins=20), False),
                              (NDBMetric(feature="digits", value_range=(-1, 1), num_bins=20,
                                         reset_real_features=False), True)):
        module = GAN(metric, send_real)
        trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
        refits = [w for w in caught if "refitting on all" in str(w.message)]
        assert module.fits[0] == (1797 if not send_real else 600)  # the sanity check: 2 batches of 300
        assert module.fits[1:] == [1797, 1797], module.fits  # every epoch: all 1,797 digits
        assert len(refits) == (1 if send_real else 0)


# ------------------------------------------------------------------------------------- forward, per batch
def test_forward_per_batch_equals_the_functional_and_accumulates(data):
    real, fake = data
    g = torch.Generator().manual_seed(5)
    support = torch.randn(60, 6, generator=g)
    pairs = BirthdayMetric(num_samples=1000, threshold=1e-6)
    batches = [support[torch.randint(60, (120,), generator=g)] for _ in range(3)]
    for batch in batches:
        got = pairs(batch)
        assert float(got["num_duplicates"]) == fastndb.birthday(batch, threshold=1e-6).num_duplicates
    assert float(pairs.compute()["num_duplicates"]) == fastndb.birthday(torch.cat(batches),
                                                                          threshold=1e-6).num_duplicates
    coverage = PRDCMetric(nearest_k=3)
    assert coverage(real[:500], real=True) is None
    got = coverage(fake[:300], real=False)
    expected = fastndb.prdc(real[:500], fake[:300], nearest_k=3)
    assert float(got["coverage"]) == expected.coverage and float(got["density"]) == expected.density
    assert coverage(fake[300:301], real=False) is None  # one sample: no radii to compare with


# ----------------------------------------------------------------------------------------------- state_dict
def _checkpoint(module: torch.nn.Module) -> tuple[dict, int]:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True), buffer.getbuffer().nbytes


def test_state_dict_follows_persistent_and_strict_loading_of_older_checkpoints(data):
    """Item 5: nothing in the state dict by default (torchmetrics' rule), everything with persistent(True), and a
    checkpoint saved before the metric was added loads strictly."""
    real, fake = data
    for make in (lambda: NDBMetric(num_bins=K), lambda: PRDCMetric(), lambda: BirthdayMetric()):
        model = torch.nn.Linear(6, 2)
        older, _ = _checkpoint(model)  # before the metric was added
        model.metric = make()
        model.load_state_dict(older, strict=True)
        metric = model.metric
        if isinstance(metric, BirthdayMetric):
            metric.update(fake)
        else:
            metric.update(real, real=True), metric.update(fake, real=False)
        light, light_bytes = _checkpoint(model)
        assert sorted(light) == ["bias", "weight"] and light_bytes < 2_000  # no held samples by default
        metric.persistent(True)
        heavy, heavy_bytes = _checkpoint(model)
        assert "metric.fastndb_state" in heavy and heavy_bytes > real.numel() * 4
        fresh = torch.nn.Linear(6, 2)
        fresh.metric = make()
        fresh.load_state_dict(heavy, strict=True)
        assert _same(fresh.metric.compute(), metric.compute())
        metric.persistent(False)
        assert sorted(model.state_dict()) == ["bias", "weight"]


def test_checkpoints_into_other_settings_are_cut_or_refused(data):
    """Issue 26 item 5: caps are honoured (the smallest keys, as a metric with that cap keeps), other bins or
    feature spaces refused naming both sides."""
    real, fake = data
    wide = BirthdayMetric(num_samples=500)
    wide.update(fake)
    wide.persistent(True)
    narrow, direct = BirthdayMetric(num_samples=100), BirthdayMetric(num_samples=100)
    narrow.load_state_dict(wide.state_dict())
    direct.update(fake)
    narrow.compute(), direct.compute()
    assert narrow.samples.shape[0] == 100 and torch.equal(narrow.samples.sort(0).values,
                                                          direct.samples.sort(0).values)
    big = NDBMetric(num_bins=K, max_real_samples=1500)
    big.update(real, real=True)
    big.persistent(True)
    small = NDBMetric(num_bins=K, max_real_samples=500)
    small.load_state_dict(big.state_dict())
    assert small.buffered_samples["real"] == 500
    with pytest.raises(ValueError, match=r"load_state_dict: .*num_bins: 8 there, 12 here"):
        NDBMetric(num_bins=12).load_state_dict(big.state_dict())
    covered = PRDCMetric(max_samples=1000)
    covered.update(real, real=True), covered.update(fake, real=False)
    covered.persistent(True)
    cut, fed = PRDCMetric(max_samples=300), PRDCMetric(max_samples=300)
    cut.load_state_dict(covered.state_dict())
    fed.update(real, real=True), fed.update(fake, real=False)
    assert _same(cut.compute(), fed.compute())
    with pytest.raises(ValueError, match=r"load_state_dict: .*value_range"):
        PRDCMetric(value_range=(-1, 1)).load_state_dict(covered.state_dict())


def test_pickling_keeps_everything(data):
    real, fake = data
    for metric in (NDBMetric(num_bins=K), PRDCMetric(nearest_k=3)):
        metric.update(real, real=True), metric.update(fake, real=False)
        assert _same(pickle.loads(pickle.dumps(metric)).compute(), metric.compute())


# --------------------------------------------------------------------------------------------- plot and dtype
def test_plot_before_compute_and_for_every_metric(data):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    real, fake = data
    ndb = NDBMetric(num_bins=K)
    ndb.update(real, real=True), ndb.update(fake, real=False)
    fig, ax = ndb.plot()  # computes first, as torchmetrics does with val=None
    assert len(ax.patches) >= 2 * K
    coverage = PRDCMetric(nearest_k=3)
    coverage.update(real[:400], real=True), coverage.update(fake[:300], real=False)
    fig, ax = coverage.plot()
    assert len(ax.patches) == 4
    fig, ax = coverage.plot([coverage.compute(), coverage.compute()])
    assert len(ax.lines) == 4
    images = BirthdayMetric(num_samples=100)
    images.update(torch.rand(40, 10))  # flat 2 x 5 images: no square to guess
    with pytest.raises(ValueError, match="image_shape"):
        images.plot()
    fig, ax = images.plot(image_shape=(2, 5))
    assert ax.images


def test_set_dtype_keeps_counts_exact(data):
    """Item 8: set_dtype(torch.half) moves float state only; int64 counts stay exact past 2,048."""
    real, _ = data
    ndb = fastndb.NDB(4, seed=0).fit(real)
    metric = NDBMetric(bins=ndb).set_dtype(torch.half)
    batch = real[:1].repeat(6001, 1)
    metric.update(batch, real=False)
    assert metric.fake_counts.dtype == torch.int64 and int(metric.fake_counts.sum()) == 6001
    metric.set_dtype(torch.float64)
    assert int(metric.compute()["ndb"]) == ndb.score(batch).ndb
