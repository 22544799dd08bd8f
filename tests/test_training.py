"""The DCGAN, the training loop and the collapse monitor on tiny configurations (a few steps each)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from fastndb.demo.models import Discriminator, Generator
from fastndb.demo.runner import load_training_images, read_idx_images
from fastndb.demo.synthetic import gaussian_mixture
from fastndb.demo.training import CollapseMonitor, GANConfig, train_gan
from tests.device_copies import CrossDeviceCopies


@pytest.mark.parametrize("image_size, channels", [(28, 1), (32, 3), (64, 2)])
def test_dcgan_shapes_and_initialisation(image_size, channels):
    g = Generator(latent_size=10, channels=channels, image_size=image_size, width=8)
    d = Discriminator(channels=channels, image_size=image_size, width=8)
    with torch.no_grad():
        images = g(torch.randn(3, 10))
    assert images.shape == (3, channels, image_size, image_size)
    assert float(images.abs().max()) <= 1.0  # Tanh
    with torch.no_grad():
        scores = d(images)
    assert scores.shape == (3,) and bool(((scores > 0) & (scores < 1)).all())  # Sigmoid
    convs = [m.weight.detach() for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert all(abs(float(w.std()) - 0.02) < 0.006 for w in convs if w.numel() > 1000)
    kinds = {type(m).__name__ for m in d.modules()}
    assert {"Conv2d", "BatchNorm2d", "LeakyReLU", "Sigmoid"} <= kinds


def test_unsupported_image_size():
    with pytest.raises(ValueError, match=r"image_size: expected one of \[28, 32, 64\], got 48"):
        Generator(image_size=48)


def _tiny_real(n: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1


def test_training_loop_records_files_determinism_and_no_global_rng(tmp_path):
    pytest.importorskip("matplotlib")
    real = _tiny_real()
    config = GANConfig(epochs=2, batch_size=16, latent_size=8, width=4, steps_per_epoch=3, seed=5)
    monitor = CollapseMonitor(real, num_bins=4, num_samples=64, birthday_samples=32, warmup=0)
    state = torch.get_rng_state()
    first = train_gan(real, config, monitor=monitor, out_dir=tmp_path, progress=False)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never used
    assert [r.epoch for r in first.records] == [1, 2]
    assert all(0 <= r.ndb_ratio <= 1 and r.d_loss > 0 and r.g_loss > 0 for r in first.records)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["curves.png", "history.json", "samples_epoch001.png", "samples_epoch002.png"]
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["config"]["seed"] == 5 and len(history["records"]) == 2
    again = train_gan(real, config, monitor=CollapseMonitor(real, num_bins=4, num_samples=64, birthday_samples=32))
    assert [r.d_loss for r in again.records] == [r.d_loss for r in first.records]


def test_label_flipping_and_smoothing_change_the_discriminator_targets():
    real = _tiny_real()
    base = GANConfig(epochs=1, batch_size=16, latent_size=8, width=4, steps_per_epoch=4, seed=1)
    plain = train_gan(real, base).records[0].d_loss
    flipped = train_gan(real, GANConfig(**{**base.__dict__, "label_flip": 0.5})).records[0].d_loss
    smoothed = train_gan(real, GANConfig(**{**base.__dict__, "label_smoothing": 0.1})).records[0].d_loss
    assert plain != flipped and plain != smoothed
    with pytest.raises(ValueError, match=r"label_flip: expected a share in \[0, 1\), got 1.5"):
        GANConfig(label_flip=1.5)
    with pytest.raises(ValueError, match="real: expected square images"):
        train_gan(torch.zeros(10, 1, 28, 20), base)


def test_monitor_flags_collapse_after_warmup_and_patience():
    modes = torch.from_numpy(gaussian_mixture(4000, 16, num_modes=8, seed=0)).reshape(4000, 1, 4, 4)
    monitor = CollapseMonitor(modes, num_bins=16, num_samples=2000, birthday_samples=500, warmup=1, patience=2,
                              value_range=None)  # mixture features, not images
    healthy = torch.from_numpy(gaussian_mixture(2000, 16, num_modes=8, seed=1)).reshape(2000, 1, 4, 4)
    collapsed = torch.from_numpy(gaussian_mixture(2000, 16, num_modes=8, seed=2, keep_modes=1)).reshape(2000, 1, 4, 4)
    flags = []
    assert monitor.last_result is None
    for epoch, samples in enumerate([collapsed, healthy, collapsed, collapsed, collapsed], start=1):
        stats = monitor.observe(samples, epoch)
        flags.append(stats["collapsed"])
        assert (stats["ndb_ratio"] > 0.5) == (samples is collapsed)
        assert monitor.last_result.ndb == stats["ndb"] and int(monitor.last_result.fake_counts.sum()) == 2000
    # epoch 1 is warm-up; 3 and 4 are the first two in a row above the threshold
    assert flags == [False, False, False, True, True] and monitor.collapsed_at == 4
    assert monitor.observe(healthy, 6)["num_duplicates"] <= monitor.observe(collapsed, 7)["num_duplicates"]


def test_monitor_flags_partial_mode_dropping_that_ndb_k_misses():
    """One of 8 modes missing (12.5% of the data): NDB/K stays far below 0.8, the verdict decides "missing" with
    the mode's mass inside the interval; a generator that samples like the data is never decided "missing"."""
    modes = torch.from_numpy(gaussian_mixture(4000, 16, num_modes=8, seed=0))
    monitor = CollapseMonitor(modes, num_samples=2000, birthday_samples=500, warmup=1, patience=2, value_range=None)
    assert monitor.ndb.num_bins == 100  # the library's default rule: min(100, N / 40)
    healthy = [torch.from_numpy(gaussian_mixture(2000, 16, num_modes=8, seed=s)) for s in (1, 2, 3)]
    dropped = [torch.from_numpy(gaussian_mixture(2000, 16, num_modes=8, seed=s, keep_modes=7)) for s in (4, 5)]
    records = [monitor.observe(x, epoch) for epoch, x in enumerate([*healthy, *dropped], start=1)]
    assert all(r["decision"] != "missing" for r in records[:3]) and not records[2]["collapsed"]
    assert all(r["ndb_ratio"] < 0.5 for r in records[3:])  # NDB/K alone would not see it
    assert all(r["emptied_bins"] >= 1 and r["decision"] == r["signal"] == "missing" for r in records[3:])
    assert all(r["missing_low"] <= 1 / 8 <= r["missing_high"] for r in records[3:])
    assert all(r["coverage_shortfall"] > 3 for r in records[3:])  # recorded, and it sees the drop too
    assert monitor.collapsed_at == 5


def idx_bytes(pixels: np.ndarray) -> bytes:
    """An IDX image file (magic 0x803, uint8, big-endian sizes) holding ``pixels (N, H, W)``."""
    return (0x803).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in pixels.shape) + pixels.tobytes()


def test_idx_reader_and_training_images(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(pixels))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(pixels)))
    for name in ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"):
        assert torch.equal(read_idx_images(tmp_path / name)[:, 0], torch.from_numpy(pixels))
    (tmp_path / "bad-idx").write_bytes(b"\x00\x00\x08\x01" + bytes(12))
    with pytest.raises(ValueError, match="not an IDX image file"):
        read_idx_images(tmp_path / "bad-idx")
    images = load_training_images(str(tmp_path / "train-images-idx3-ubyte"), image_size=28)
    assert images.shape == (5, 1, 28, 28) and float(images.min()) >= -1 and float(images.max()) <= 1
    digits = load_training_images(None, digit=3, image_size=32)
    assert digits.shape[1:] == (1, 32, 32) and 150 < digits.shape[0] < 200


def test_demo_command_prints_a_row_per_epoch(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from fastndb import cli

    code = cli.main(["demo", "--epochs", "2", "--steps-per-epoch", "2", "--width", "4", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 2 and "NDB/K" in out and "no missing modes flagged" in out
    assert (tmp_path / "curves.png").exists()
    # chance levels: K = min(100, 1797 / 40) = 44 bins, about 900 held-out digits, 2000 samples:
    # (K - 1) / 8 * (1/900 + 1/2000)
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["null_ndb_ratio"] == 0.05 and 0.0085 < history["null_js"] < 0.0089
    assert f"NDB/K about 0.05, JS about {history['null_js']:.4f}" in out


def test_demo_with_data_takes_the_full_size_defaults(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from fastndb import cli

    pixels = np.random.default_rng(1).integers(0, 256, (130, 28, 28), dtype=np.uint8)
    (tmp_path / "images-idx3-ubyte").write_bytes(idx_bytes(pixels))
    code = cli.main(["demo", "--data", str(tmp_path / "images-idx3-ubyte"), "--image-size", "28", "--epochs", "1",
                     "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert "DCGAN (width 64)" in out and "1 epochs of one pass over the data (batch 64)" in out
    assert "K = min(100, N/40) bins" in out
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert history["config"]["steps_per_epoch"] is None and history["config"]["width"] == 64


def test_copy_recorder_sees_every_kind_of_cross_device_copy():
    # the recorder behind the CUDA test below, checked where CI can run it: CPU -> meta is a cross-device copy
    x = torch.arange(12.0).reshape(3, 4)
    with CrossDeviceCopies() as recorder:
        x.to("meta")
        torch.empty(4, device="meta").copy_(x[0])
        x.sum().item()  # CPU scalar: not a transfer
        x.clone()
    assert [(c.op, c.source, c.target, c.numel) for c in recorder.copies] == [
        ("_to_copy", "cpu", "meta", 12), ("copy_", "cpu", "meta", 4)]
    assert recorder.to_host() == []


@pytest.mark.cuda
def test_monitor_makes_no_device_to_host_copy_of_samples_on_cuda(tmp_path):
    from torch.profiler import ProfilerActivity, profile

    real = _tiny_real(512).cuda()
    monitor = CollapseMonitor(real, num_bins=8, num_samples=512, birthday_samples=128)
    generator = Generator(latent_size=8, channels=1, image_size=28, width=8).cuda()
    monitor.generate_and_observe(generator, 1)  # warm up
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof, CrossDeviceCopies() as recorder:
        monitor.generate_and_observe(generator, 2)
    sample_elements, sample_bytes = 512 * 28 * 28, 512 * 28 * 28 * 4
    # every ATen-level transfer to the host is of K counts or a few scalars; the samples would be >= 1/8 of them
    to_host = recorder.to_host()
    assert to_host, "the statistics are read on the host at the end: no transfer at all means nothing was recorded"
    assert max(c.numel for c in to_host) < sample_elements // 8, sorted(to_host, key=lambda c: c.numel)[-3:]
    # and the profiler's device-side memcpy records agree, in bytes
    trace = tmp_path / "trace.json"
    prof.export_chrome_trace(str(trace))
    memcpy = [e for e in json.loads(trace.read_text())["traceEvents"]
              if e.get("cat") == "gpu_memcpy" and "DtoH" in e.get("name", "")]
    assert memcpy, "no device-to-host memcpy in the trace: the profiler did not record the CUDA activity"
    sizes = [int(e["args"]["bytes"]) for e in memcpy]
    assert max(sizes) < sample_bytes // 8, sorted(sizes)[-5:]
