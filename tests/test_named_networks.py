"""The named networks against the packages they come from, on random weights saved to a file (issue 25).

These need torch-fidelity, timm, open_clip and torchvision, which cannot load beside the CPU build of torch: they
skip in the main suite and run in the second environment of ``.ci/run`` (torch 2.14.1 + torchvision 0.29.1, the
``features`` extra), where ``FASTNDB_REQUIRE_ALL=1`` turns any skip into a failure. Nothing is downloaded: each
network is built with random weights (scaled so that activations stay of order one), saved, and loaded from the file
by fastndb, by the package itself, and by torchmetrics.

What is checked, with the tolerance each comparison earns:

* ``"inception"``: equal to torch-fidelity's own extractor and to torchmetrics' ``FrechetInceptionDistance``
  network (``antialias=False``, torch-fidelity's TensorFlow-compatible resize) to float32 rounding, for uint8 and
  float images at several sizes; torchmetrics' default ``antialias=True`` resizes with PyTorch's antialiased bilinear
  filter instead, so it is equal at 299 x 299 only (the difference elsewhere is measured, and documented in
  docs/features.md);
* ``"dinov2-*"`` and ``"clip-vitb32"``: fastndb's tensor preprocessing against timm's and open_clip's own PIL
  transforms (at 224 x 224: timm's DINOv2 config says 518, fastndb uses 224 on purpose, docs/features.md);
* features that do not depend on the batch size beyond float32 rounding;
* the README's FID swap, FID and NDB side by side in one Lightning loop, run as written.
"""

from __future__ import annotations

import importlib
import warnings
from unittest import mock

import pytest
import torch
from torch import nn

import fastndb
from fastndb._core.extractors import NAMES


def _require(module: str):
    try:
        return importlib.import_module(module)
    except Exception as err:  # noqa: BLE001  (PyPI's torchvision raises RuntimeError beside a CPU torch)
        pytest.skip(f"{module} cannot be imported here ({type(err).__name__}); it runs in .ci/run's features env")


def _scaled(net: nn.Module, seed: int) -> nn.Module:
    """He-scaled random weights: a default-initialised Inception gives features of about 1e-8, too small to compare."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / fan) ** 0.5)
    return net


def _images(n: int, size: int, seed: int, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# ------------------------------------------------------------------------------------------------- Inception
@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    module = _require("torch_fidelity.feature_extractor_inceptionv3")
    cls = module.FeatureExtractorInceptionV3
    with mock.patch.object(module, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(cls, "load_state_dict", lambda self, state: None):
        net = _scaled(cls("inception-v3-compat", ["2048"]), seed=0)
    path = tmp_path_factory.mktemp("weights") / NAMES["inception"].weights_file
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.parametrize("size", [299, 64, 21])
def test_inception_equals_torch_fidelity_and_torchmetrics(inception_file, size):
    fidelity = _require("torch_fidelity.feature_extractor_inceptionv3")
    fid = _require("torchmetrics.image.fid")
    images = _images(4, size, seed=size)
    ours = fastndb.extractor("inception", weights=inception_file)
    from_bytes = ours(images.float() / 255)  # the value-range convention: uint8 as x / 255
    theirs = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                  feature_extractor_weights_path=str(inception_file)).eval()
    metric = fid.FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(inception_file),
                                          antialias=False)
    default = fid.FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(inception_file))
    with torch.no_grad():
        expected = theirs(images)[0]
        tm = metric.inception(images)
        tm_default = default.inception(images)
    assert from_bytes.shape == (4, 2048) and float(expected.abs().mean()) > 1e-2  # features of order one
    assert _relative(from_bytes, expected) < 1e-6
    assert _relative(tm, expected) < 1e-6
    # float images: round(255 x) gives the same bytes back (torchmetrics' normalize=True truncates instead, which
    # agrees for x = k / 255 in float32, checked here, and can differ by one level for other floats)
    floats = images.float() / 255
    assert torch.equal((floats * 255).byte(), images)
    assert _relative(ours(floats), expected) < 1e-6
    shifted = (floats + 0.4 / 255).clamp(0, 1)  # between the levels: rounds to the same bytes
    assert _relative(ours(shifted), expected) < 1e-6
    gap = _relative(tm_default, expected)
    if size == 299:
        assert gap < 1e-6  # no resize: torchmetrics' default is the same network on the same bytes
    else:
        assert gap > 1e-4  # another resize filter: documented, not hidden
    # the same through the scoring path: the uint8 images under the value-range convention
    features = fastndb.extractor("inception", weights=inception_file, batch_size=4)
    assert _relative(features(images.float() / 255), expected) < 1e-6


def test_inception_features_do_not_depend_on_the_batch_size(inception_file):
    images = _images(6, 40, seed=3).float() / 255
    whole = fastndb.extractor("inception", weights=inception_file, batch_size=6)(images)
    for batch_size in (1, 4):
        got = fastndb.extractor("inception", weights=inception_file, batch_size=batch_size)(images)
        assert _relative(got, whole) < 1e-5, batch_size  # float32 rounding of another conv schedule, no more


# ------------------------------------------------------------------------------------------- DINOv2 and CLIP
def _pil_batch(images: torch.Tensor, transform) -> torch.Tensor:
    from PIL import Image

    return torch.stack([transform(Image.fromarray(x.permute(1, 2, 0).numpy())) for x in images])


@pytest.mark.parametrize("name", ["dinov2-vits14", "clip-vitb32"])
def test_preprocessing_equals_the_packages_own_transforms(name, tmp_path):
    if name.startswith("dinov2"):
        timm = _require("timm")
        from fastndb._core.extractors import _TIMM_NAMES

        network = timm.create_model(_TIMM_NAMES[name], pretrained=False, num_classes=0, img_size=224)
        config = timm.data.resolve_data_config({}, model=network)
        assert config["input_size"] == (3, 518, 518)  # timm's own size for these weights; fastndb uses 224
        config = timm.data.resolve_data_config({"input_size": (3, 224, 224)}, model=network)
        transform = timm.data.create_transform(**config)
        state = network.state_dict()
    else:
        open_clip = _require("open_clip")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _, transform = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
        state = model.state_dict()
    path = tmp_path / NAMES[name].weights_file
    torch.save(state, path)
    ours = fastndb.extractor(name, weights=path, batch_size=8)
    network = ours.function
    for size in (224, 64, 300):
        images = _smooth_images(3, size, seed=size)
        prepared = network.prepare(images.float() / 255)
        # the package's own transform on the images as tensors: the same resize filter, crop and normalisation
        on_tensors = torch.stack([transform(x.float() / 255) for x in images])
        assert prepared.shape == on_tensors.shape == (3, 3, 224, 224)
        assert float((prepared - on_tensors).abs().max()) < 1e-5, size
        # its transform on PIL images, the packages' usual input: PIL resizes 8-bit images in two passes rounded to
        # bytes; on images with natural smoothness that is about one level of 255 at most, here in std units
        error = (prepared - _pil_batch(images, transform)).abs()
        assert float(error.max()) < (1e-5 if size == 224 else 1.6 / 255 / 0.22), (size, error.max())
        with torch.no_grad():
            got, reference = network.network(prepared), network.network(on_tensors)
        got = got[0] if isinstance(got, (tuple, list)) else got
        reference = reference[0] if isinstance(reference, (tuple, list)) else reference
        assert _relative(got, reference) < 1e-5, (size, _relative(got, reference))


def _smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """uint8 images with the smoothness of natural ones (bilinear from 6 x 6 random colours, in [0.1, 0.9]): on pure
    noise PIL's 8-bit two-pass bicubic differs from any float resize by up to 20 levels where it clips overshoots."""
    g = torch.Generator().manual_seed(seed)
    low = 0.1 + 0.8 * torch.rand(n, 3, 6, 6, generator=g)
    smooth = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (smooth * 255).round().to(torch.uint8)


def test_vision_transformer_features_do_not_depend_on_the_batch_size(tmp_path):
    timm = _require("timm")
    from fastndb._core.extractors import _TIMM_NAMES

    path = tmp_path / NAMES["dinov2-vits14"].weights_file
    torch.save(timm.create_model(_TIMM_NAMES["dinov2-vits14"], pretrained=False, num_classes=0,
                                 img_size=224).state_dict(), path)
    images = _images(5, 32, seed=9).float() / 255
    whole = fastndb.extractor("dinov2-vits14", weights=path, batch_size=5)(images)
    for batch_size in (1, 2):
        got = fastndb.extractor("dinov2-vits14", weights=path, batch_size=batch_size)(images)
        assert _relative(got, whole) < 1e-5, batch_size


# ------------------------------------------------------------------------------------ the README's FID swap
def test_the_readme_fid_swap_runs_as_written(inception_file, monkeypatch):
    """FID and NDB side by side in one Lightning loop, the lines of the README's diff as written; the
    torchmetrics side loads the same random weights through torch-fidelity's download hook."""
    pl = _require("pytorch_lightning")
    fidelity = _require("torch_fidelity.feature_extractor_inceptionv3")
    from torchmetrics.image.fid import FrechetInceptionDistance

    from fastndb.metrics import NDBMetric

    state = torch.load(inception_file, weights_only=True)
    monkeypatch.setattr(fidelity, "load_state_dict_from_url", lambda *a, **k: state)
    monkeypatch.setenv("FASTNDB_WEIGHTS", str(inception_file.parent))
    real_images = _images(24, 16, seed=1)
    noise = torch.randn(24, 8, generator=torch.Generator().manual_seed(0))

    class GAN(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.generator = nn.Sequential(nn.Linear(8, 3 * 16 * 16), nn.Tanh(), nn.Unflatten(1, (3, 16, 16)))
            self.fid = FrechetInceptionDistance(feature=2048, normalize=True, reset_real_features=False)
            self.ndb = NDBMetric(feature="inception", value_range=(-1, 1), real=real_images, num_bins=3)
            self.logged = []

        def training_step(self, batch, batch_idx):
            return self.generator(batch[0]).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def validation_step(self, batch, batch_idx):
            fake = self.generator(batch[0])
            self.fid.update(real_images[batch_idx * 12 : (batch_idx + 1) * 12], real=True)
            self.fid.update((fake + 1) / 2, real=False)
            self.ndb.update(fake, real=False)

        def on_validation_epoch_end(self):
            values = {f"ndb/{k}": v.float() for k, v in self.ndb.compute().items()}
            values["fid"] = self.fid.compute()
            self.log_dict(values)
            self.logged.append({k: float(v) for k, v in values.items()})
            self.fid.reset()
            self.ndb.reset()

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(noise), batch_size=12)
    module = GAN()
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's own advice on workers and logging
        trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    assert len(module.logged) == 2  # the sanity check and one epoch
    last = module.logged[-1]
    assert last["fid"] > 0 and 0 <= last["ndb/ndb"] <= 3
    # NDB's side equals the functional call on the same generator output, in the same feature space
    with torch.no_grad():
        fake = module.generator(noise)
    expected = fastndb.score(real_images, fake, feature="inception", value_range=(-1, 1), num_bins=3, cache=False)
    assert last["ndb/ndb"] == expected.ndb and last["ndb/js"] == pytest.approx(expected.js, rel=1e-6)
