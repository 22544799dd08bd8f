"""``feature=``: scoring in an embedding space equals scoring the embeddings, on every face; extractors validate.

The reference for each face is the same face fed the features computed here independently (the module applied
batch by batch under ``torch.no_grad()``), with no range mapping: bins, counts and p-values must be identical.
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from torch import nn

import fastndb
from fastndb._core.digits_net import load_digits_net
from fastndb._core.extractors import NAMES, ImageNetwork, as_images, weights_digest
from tests.conftest import mixture

BATCH = 64  # the extractor's default batch size, which the references use too


def _net(seed: int = 0, d_in: int = 24, d_out: int = 12) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(d_in, 32), nn.Tanh(), nn.Linear(32, d_out))


def _rows(x: torch.Tensor) -> int:
    """Rows the network sees for ``x``: whole batches of BATCH (the last one padded to that shape)."""
    return -(-x.shape[0] // BATCH) * BATCH


def _apply(function, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([function(b) for b in x.split(BATCH)])


def _data(d: int = 24, n_real: int = 3000, n_fake: int = 1500, seed: int = 0):
    real = torch.from_numpy(mixture(n_real, d, num_modes=8, seed=seed)).float()
    fake = torch.from_numpy(mixture(n_fake, d, num_modes=8, seed=seed + 1, keep_modes=6)).float()
    return real, fake


def _digits_images(n: int, seed: int) -> torch.Tensor:
    """Digit-like grey 8 x 8 images in [0, 1]: scikit-learn's digits with noise, clamped."""
    from fastndb.demo.runner import load_digits_tensor

    x, _ = load_digits_tensor()
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(x.shape[0], (n,), generator=g)
    return (x[picks] + 0.05 * torch.randn(n, 64, generator=g)).clamp(0, 1).reshape(n, 1, 8, 8)


def _assert_same_result(a: fastndb.NDBResult, b: fastndb.NDBResult) -> None:
    for field in ("real_counts", "fake_counts", "z", "p_values", "different"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert (a.ndb, a.js, a.p_value) == (b.ndb, b.js, b.p_value)


def _digits_features(x: torch.Tensor) -> torch.Tensor:
    net = load_digits_net()
    return _apply(net.features, x)


@pytest.mark.parametrize("kind", ["module", "callable", "digits"])
def test_score_with_a_feature_equals_score_of_the_features(kind):
    if kind == "digits":
        real, fake = _digits_images(2400, 0), _digits_images(1200, 1)
        feature, reference = "digits", _digits_features
    else:
        real, fake = _data()
        net = _net()
        feature = net if kind == "module" else (lambda x: net(x) * 2.0)
        reference = (lambda x: _apply(net, x)) if kind == "module" else (lambda x: _apply(net, x) * 2.0)
    got = fastndb.score(real, fake, num_bins=12, feature=feature, cache=False)
    expected = fastndb.score(reference(real), reference(fake), num_bins=12, cache=False)
    _assert_same_result(got, expected)
    ndb = fastndb.NDB(12, feature=feature).fit(real)  # the streaming face, fake in uneven batches
    bins = fastndb.NDB(12).fit(reference(real))
    assert torch.equal(ndb.centroids, bins.centroids) and torch.equal(ndb.real_counts, bins.real_counts)
    _assert_same_result(ndb.score(iter(fake.split(333))), bins.score(reference(fake)))
    assert torch.equal(ndb.assign(fake[:50]), bins.assign(reference(fake[:50])))


def test_birthday_and_threshold_with_a_feature_equal_them_on_the_features():
    real, fake = _data(n_real=800, n_fake=600)
    fake[500] = fake[17]
    net = _net(1)
    got = fastndb.birthday(fake, num_pairs=10, threshold=0.05, feature=net)
    expected = fastndb.birthday(_apply(net, fake), num_pairs=10, threshold=0.05)
    assert torch.equal(got.pairs, expected.pairs) and torch.equal(got.distances, expected.distances)
    assert got.num_duplicates == expected.num_duplicates >= 1 and got.pairs[0].tolist() == [17, 500]
    threshold = fastndb.duplicate_threshold(real, num_samples=None, feature=net)
    assert threshold == fastndb.duplicate_threshold(_apply(net, real), num_samples=None)
    subset = fastndb.duplicate_threshold(real, num_samples=300, feature=net)  # subset chosen before embedding
    assert subset > 0 and subset != threshold


def test_metrics_with_a_feature_equal_them_on_the_features():
    pytest.importorskip("torchmetrics")
    from fastndb.metrics import BirthdayMetric, NDBMetric

    real, fake = _data()
    net = _net(2)
    got = NDBMetric(num_bins=12, feature=net, reset_real_features=False)
    expected = NDBMetric(num_bins=12, reset_real_features=False)
    for r in real.split(700):
        got.update(r, real=True)
        expected.update(_apply(net, r), real=True)
    for f in fake.split(400):
        got.update(f, real=False)
        expected.update(_apply(net, f), real=False)
    a, b = got.compute(), expected.compute()
    assert all(torch.equal(a[k], b[k]) for k in b)
    _assert_same_result(got.result, expected.result)
    assert got.bins.feature == net_label(net) and expected.bins.feature is None
    got.reset()  # bins kept: fake only, still embedded
    got.update(fake, real=False)
    assert torch.equal(got.compute()["ndb"], b["ndb"])

    birthday_got, birthday_expected = BirthdayMetric(num_samples=500, threshold=0.1, feature=net), \
        BirthdayMetric(num_samples=500, threshold=0.1)
    for f in fake.split(250):
        birthday_got.update(f)
        birthday_expected.update(_apply(net, f))
    x, y = birthday_got.compute(), birthday_expected.compute()
    assert all(torch.equal(x[k], y[k]) for k in y)


def net_label(net: nn.Module) -> str:
    return fastndb.extractor(net).identity()


def test_metric_state_dict_keeps_the_feature_space_and_refuses_another():
    pytest.importorskip("torchmetrics")
    from fastndb.metrics import NDBMetric

    real, fake = _data(n_real=1200, n_fake=600)
    net = _net(3)
    metric = NDBMetric(num_bins=8, feature=net)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    before = metric.compute()
    metric.persistent(True)
    state = metric.state_dict()
    again = NDBMetric(num_bins=8, feature=net)
    again.load_state_dict(state)
    assert torch.equal(again.compute()["ndb"], before["ndb"])
    with pytest.raises(ValueError, match=r"load_state_dict: .*feature: 'torch.nn.*Sequential@[\w:]+' there, "
                                         r"'torch.nn.*Sequential@[\w:]+' here"):
        NDBMetric(num_bins=8, feature=_net(4)).load_state_dict(state)
    with pytest.raises(ValueError, match=r"load_state_dict: .*feature: '.*' there, None here"):
        NDBMetric(num_bins=8).load_state_dict(state)


def test_real_features_are_computed_once_and_the_cache_key_holds_the_extractor():
    real, fake = _data(n_real=2000, n_fake=500)
    net = _net(5)
    calls = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            calls.append(x.shape[0])
            return self.net(x)

    counting = Counting()
    fastndb.clear_cache()
    first = fastndb.score(real, fake, num_bins=8, feature=counting)
    assert sum(calls) == _rows(real) + _rows(fake)
    calls.clear()
    second = fastndb.score(real, fake, num_bins=8, feature=counting)
    assert sum(calls) == _rows(fake) and fastndb.cache_info()["entries"] == 1  # real features came from the cache
    _assert_same_result(first, second)
    fastndb.score(real, fake, num_bins=8)  # raw values: another entry
    fastndb.score(real, fake, num_bins=8, feature=_net(6))  # another module: another entry
    assert fastndb.cache_info()["entries"] == 3
    digest = weights_digest(counting)
    with torch.no_grad():
        net[0].weight[0, 0] += 1.0  # an in-place change of the weights changes the key
    assert weights_digest(counting) != digest
    calls.clear()
    fastndb.score(real, fake, num_bins=8, feature=counting)
    assert sum(calls) == _rows(real) + _rows(fake) and fastndb.cache_info()["entries"] == 4
    fastndb.clear_cache()


def test_modules_with_equal_weights_but_other_layers_do_not_share_a_key():
    a, b = nn.Sequential(nn.Flatten()), nn.Sequential(nn.Flatten(), nn.ReLU())
    assert fastndb.extractor(a).key() != fastndb.extractor(b).key()
    assert fastndb.extractor(a).key() == fastndb.extractor(nn.Sequential(nn.Flatten())).key()


def test_the_value_range_convention_applies_before_the_extractor_and_mismatches_are_still_refused():
    images = (torch.rand(1200, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    tanh_outputs = images[:600].float() / 127.5 - 1
    seen = []

    def record(x):
        seen.append((float(x.min()), float(x.max()), x.dtype))
        return x.flatten(1)

    with pytest.raises(ValueError, match=r"fake: values in \[-1, 0.99\d*\] but real holds integer images.*value_range=\(-1, 1\)"):
        fastndb.score(images, tanh_outputs, num_bins=5, feature=record, cache=False)
    seen.clear()
    result = fastndb.score(images, tanh_outputs, num_bins=5, feature=record, value_range=(-1, 1), cache=False)
    assert all(low >= 0 and high <= 1 and dtype == torch.float32 for low, high, dtype in seen)
    assert result.ndb <= 2  # the same images, on one scale: nothing differs
    with pytest.raises(ValueError, match=r"samples: values in \[-1, 0.99\d*\] but feature='digits' reads images in \[0, 1\]"):
        fastndb.birthday(tanh_outputs, feature="digits")
    with pytest.raises(ValueError, match="expected finite values"):
        fastndb.score(images, torch.full((10, 1, 8, 8), float("nan")), num_bins=5, feature=record, cache=False)


def test_extractors_run_in_eval_mode_without_gradients_and_restore_the_mode():
    net = nn.Sequential(nn.Linear(24, 24), nn.Dropout(0.5))
    net.train()
    ex = fastndb.extractor(net, batch_size=7)
    x = torch.randn(50, 24)
    first, second = ex(x), ex(x)
    assert torch.equal(first, second) and not first.requires_grad  # dropout off, no graph
    assert net.training  # the caller's mode is back
    with torch.inference_mode():
        inference = torch.randn(40, 24)
    assert ex(inference).shape == (40, 24)
    half = fastndb.extractor(nn.Linear(24, 6), autocast=torch.bfloat16)(x)
    assert half.dtype == torch.float32 and half.shape == (50, 6)


def test_extractor_errors_name_the_argument():
    x = torch.randn(30, 24)
    with pytest.raises(ValueError, match=r"feature: expected the callable .* one row per sample, \(B=64, d\) \(its batch of 64 rows: .*; got shape \(1, 24\)"):
        fastndb.extractor(lambda b: b[:1])(x)
    with pytest.raises(ValueError, match="feature: expected the callable .* to return a tensor of shape"):
        fastndb.extractor(lambda b: b.tolist())(x)
    with pytest.raises(ValueError, match="feature: expected floating-point features"):
        fastndb.extractor(lambda b: (b > 0).long())(x)
    with pytest.raises(ValueError, match=r"feature: expected None, a torch.nn.Module, a callable or one of \['clip"):
        fastndb.score(x, x, feature="inceptionv3")
    with pytest.raises(TypeError, match="feature: expected None, a name from"):
        fastndb.NDB(feature=3)
    with pytest.raises(ValueError, match="weights: only a named extractor"):
        fastndb.extractor(nn.Flatten(), weights="w.pt")
    with pytest.raises(ValueError, match="autocast: expected None, torch.float16 or torch.bfloat16"):
        fastndb.extractor(nn.Flatten(), autocast=torch.float64)
    with pytest.raises(ValueError, match="batch_size"):
        fastndb.extractor(nn.Flatten(), batch_size=0)
    on_meta = nn.Linear(24, 4, device="meta")
    with pytest.raises(ValueError, match=r"feature: the module's parameters are on meta but the samples on cpu"):
        fastndb.score(x, x, num_bins=2, feature=on_meta, cache=False)
    with pytest.raises(ValueError, match="has no weights to identify it by"):
        fastndb.extractor(lambda b: b).identity()


def test_load_bins_refuses_bins_of_another_feature_space():
    real, _ = _data(n_real=600)
    bins = fastndb.NDB(4, feature=_net(7)).fit(real).bins
    with pytest.raises(ValueError, match=r"feature: bins was fitted on torch.nn.*Sequential@.*, but this call's features are raw"):
        fastndb.NDB(4).load_bins(bins)
    fastndb.NDB(4, feature=_net(7)).load_bins(bins)  # same weights: accepted


@pytest.mark.parametrize("layout", ["grey", "rgb", "rgba", "uint8", "flat", "hw"])
def test_the_digits_extractor_takes_every_image_layout(layout):
    grey = _digits_images(40, 3)
    expected = _digits_features(grey)
    if layout == "grey":
        x = grey
    elif layout == "rgb":
        x = grey.expand(-1, 3, -1, -1)  # luma of equal channels is the grey image (weights sum to 1)
    elif layout == "rgba":
        x = torch.cat([grey.expand(-1, 3, -1, -1), torch.ones(40, 1, 8, 8)], dim=1)
    elif layout == "uint8":
        x = (grey * 255).round().to(torch.uint8)
        expected = _digits_features(x.float() / 255)
    elif layout == "flat":
        x = grey.reshape(40, 64)
    else:
        x = grey[:, 0]
    got = fastndb.extractor("digits")(fastndb._core.features.to_float(x))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.shape == (40, NAMES["digits"].dims)


def test_named_preprocessing_resizes_normalises_and_keeps_bytes():
    seen = {}

    class Recorder(nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x.float().mean(dim=(2, 3))

    network = ImageNetwork(Recorder(), channels=3, size=32, mode="bicubic", mean=(0.5, 0.5, 0.5), std=(0.25,) * 3)
    grey = torch.rand(3, 1, 20, 20)
    out = network(grey)
    assert seen["x"].shape == (3, 3, 32, 32) and out.shape == (3, 3)
    resized = torch.nn.functional.interpolate(grey, size=(32, 32), mode="bicubic", antialias=True).clamp(0, 1)
    torch.testing.assert_close(seen["x"][:, 1:2], (resized - 0.5) / 0.25)
    as_bytes = ImageNetwork(Recorder(), channels=3, size=None, to_uint8=True)
    pixels = torch.randint(0, 256, (2, 3, 9, 9), dtype=torch.uint8)
    as_bytes(pixels.float() / 255)
    assert seen["x"].dtype == torch.uint8 and torch.equal(seen["x"], pixels)  # uint8 images reach it as their bytes
    with pytest.raises(ValueError, match=r"feature='x': expected images \(B, C, H, W\), or flat square images"):
        as_images(torch.rand(2, 50), 3, "x")
    with pytest.raises(ValueError, match="with 1, 3 or 4 channels, got shape"):
        as_images(torch.rand(2, 5, 4, 4), 3, "x")


def test_offline_without_weights_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTNDB_OFFLINE", "1")
    monkeypatch.delenv("FASTNDB_WEIGHTS", raising=False)
    for name in ("inception", "dinov2-vits14", "dinov2-vitb14", "clip-vitb32"):
        entry = NAMES[name]
        with pytest.raises(FileNotFoundError, match=rf"feature={name!r}: no weights for the {name} network \(offline"
                                                    rf".*put the file {entry.weights_file} .*FASTNDB_WEIGHTS.*weights=PATH"):
            fastndb.extractor(name)
    with pytest.raises(FileNotFoundError, match=r"weights='.*nothing.pth' is not a file"):
        fastndb.extractor("inception", weights=tmp_path / "nothing.pth")
    from fastndb._core.extractors import weights_path

    (tmp_path / NAMES["inception"].weights_file).write_bytes(b"")
    monkeypatch.setenv("FASTNDB_WEIGHTS", str(tmp_path))
    assert weights_path(NAMES["inception"], None) == tmp_path / NAMES["inception"].weights_file


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001  (PyPI's torchvision is CUDA-built and raises RuntimeError beside a CPU torch)
        return False
    return True


def test_a_missing_package_names_the_extra(monkeypatch):
    monkeypatch.delenv("FASTNDB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # torch-fidelity absent, whether or not it is installed here (None in sys.modules makes its import fail)
    for module in ("torch_fidelity", "torch_fidelity.feature_extractor_inceptionv3"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ModuleNotFoundError, match=r"feature='inception' needs the optional package 'torch_fidelity'.*"
                                                  r"pip install fastndb\[features\]"):
        fastndb.extractor("inception")


def test_the_digits_weights_load_from_a_given_file(tmp_path):
    path = tmp_path / "digits.pt"
    net = load_digits_net()
    with torch.no_grad():
        net.classifier.bias += 1.0  # another head: the features (the body) are the same
        net.body[0].bias += 0.5     # another body: the features differ
    torch.save(net.state_dict(), path)
    shipped, given = fastndb.extractor("digits"), fastndb.extractor("digits", weights=path)
    assert shipped.identity() != given.identity()
    x = _digits_images(10, 4)
    assert not torch.allclose(shipped(x), given(x))


# --------------------------------------------------------------- package-backed networks with random weights
def _random_state(module_name: str, build) -> dict:
    if not _importable(module_name):
        pytest.skip(f"{module_name} cannot be imported here (it needs a torchvision that works with this torch)")
    return build().state_dict()


def _check_named(name: str, state: dict, tmp_path) -> None:
    path = tmp_path / NAMES[name].weights_file
    torch.save(state, path)
    ex = fastndb.extractor(name, weights=path, batch_size=2)
    for x in (torch.rand(3, 1, 20, 20), torch.rand(3, 3, 32, 32), torch.rand(3, 64)):
        assert ex(x).shape == (3, NAMES[name].dims)
    images = (torch.rand(3, 3, 16, 16) * 255).to(torch.uint8)
    assert ex(images.float() / 255).shape == (3, NAMES[name].dims)


def test_inception_with_random_weights_from_a_file(tmp_path, monkeypatch):
    def build():
        from unittest import mock

        module = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
        cls = module.FeatureExtractorInceptionV3
        with mock.patch.object(module, "load_state_dict_from_url", lambda *a, **k: None), \
                mock.patch.object(cls, "load_state_dict", lambda self, state: None):
            return cls("inception-v3-compat", ["2048"])

    _check_named("inception", _random_state("torch_fidelity.feature_extractor_inceptionv3", build), tmp_path)


@pytest.mark.parametrize("name", ["dinov2-vits14", "dinov2-vitb14"])
def test_dinov2_with_random_weights_from_a_file(name, tmp_path):
    from fastndb._core.extractors import _TIMM_NAMES

    def build():
        return importlib.import_module("timm").create_model(_TIMM_NAMES[name], pretrained=False, num_classes=0,
                                                            img_size=224)

    _check_named(name, _random_state("timm", build), tmp_path)


def test_clip_with_random_weights_from_a_file(tmp_path):
    def build():
        return importlib.import_module("open_clip").create_model("ViT-B-32", pretrained=None)

    _check_named("clip-vitb32", _random_state("open_clip", build), tmp_path)


def test_a_named_network_is_copied_to_a_device_once_per_process():
    from fastndb._core.extractors import named_on

    first, second = fastndb.extractor("digits"), fastndb.extractor("digits")  # as two score() calls resolve it
    assert first.function is second.function  # loaded once
    on_meta = named_on(first.function, torch.device("meta"))
    assert named_on(second.function, torch.device("meta")) is on_meta  # copied once, not per call
    assert next(on_meta.parameters()).device.type == "meta"
    assert next(first.function.parameters()).device.type == "cpu"  # the loaded network itself never moves


def test_bytes_survive_the_convention_for_all_256_levels():
    """docs/features.md: uint8 images read as x / 255 give their own bytes back to the Inception network (fastndb
    rounds), and torchmetrics' normalize=True truncation agrees with it at every level k / 255 in float32."""
    levels = torch.arange(256, dtype=torch.uint8)
    floats = levels.float() / 255
    net = ImageNetwork(nn.Identity(), channels=3, size=None, to_uint8=True)
    assert torch.equal(net.prepare(floats.view(1, 1, 16, 16))[0, 0].flatten(), levels)
    assert torch.equal((floats * 255).byte(), levels)
