"""Hostile inputs, round two (issue 26): one regression test per cause, each failing on the code before its fix.

Feature networks that change after a fit, in-place changes a cache could miss, threads, concurrent writers, files
that lie (tests/test_references.py), checkpoints into other settings (tests/test_metric_contract.py), and the newer
entry points' tracebacks, messages, memory and output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from torch import nn

import fastndb
from tests.conftest import mixture

torchmetrics = pytest.importorskip("torchmetrics")
from fastndb.metrics import BirthdayMetric, NDBMetric, PRDCMetric  # noqa: E402


class Lin(nn.Module):
    def __init__(self, d_in: int = 12, d_out: int = 6, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.lin = nn.Linear(d_in, d_out)
        self.register_buffer("shift", torch.zeros(d_out), persistent=False)
        self.gain = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.gain + self.shift


def _data(n_real: int = 3000, n_fake: int = 1500):
    real = torch.from_numpy(mixture(n_real, 12, num_modes=8, seed=0)).float()
    fake = torch.from_numpy(mixture(n_fake, 12, num_modes=8, seed=1)).float()
    return real, fake


def _step(module: nn.Module, x: torch.Tensor) -> None:
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    module(x).square().mean().backward()
    optimizer.step()


CHANGED = r"changed|computed by .* but the network is now"


# ------------------------------------------------------------------ 1. a feature network that changes after the fit
def test_a_network_stepped_after_the_fit_is_refused_everywhere():
    real, fake = _data()
    m = Lin()
    ndb = fastndb.NDB(20, feature=m).fit(real)
    assert ndb.score(real[:1500] + 0.001).ndb == 0
    _step(m, real)
    with pytest.raises(ValueError, match=r"bins was fitted on .*Lin@.*weights, buffers or attributes changed"):
        ndb.score(real[:1500])

    m = Lin()
    metric = NDBMetric(num_bins=20, feature=m, reset_real_features=False)
    metric.update(real, real=True), metric.update(fake, real=False)
    metric.compute()
    _step(m, real)
    with pytest.raises(ValueError, match=CHANGED):
        metric.update(fake, real=False)
    fixed = NDBMetric(num_bins=20, feature=m, real=real)
    _step(m, real)
    with pytest.raises(ValueError, match=r"build the metric again"):
        fixed.update(fake, real=False)

    m = Lin()
    coverage = PRDCMetric(nearest_k=3, feature=m, reset_real_features=False)
    coverage.update(real[:500], real=True), coverage.update(fake[:300], real=False)
    coverage.compute()
    coverage.reset()  # real features kept from the old network
    _step(m, real)
    with pytest.raises(ValueError, match=r"reset_real_features=True"):
        coverage.update(fake[:300], real=False)

    m = Lin()
    pairs = BirthdayMetric(num_samples=1000, threshold=0.0, feature=m)
    pairs.update(fake[:250])
    _step(m, real)
    with pytest.raises(ValueError, match=CHANGED):
        pairs.update(fake[:250])
    pairs.reset()  # the remedy the message names
    pairs.update(fake[:250]), pairs.update(fake[:250])
    assert float(pairs.compute()["num_duplicates"]) == 250

    from fastndb.demo.training import CollapseMonitor

    m = Lin()
    monitor = CollapseMonitor(real, num_bins=10, num_samples=600, birthday_samples=200, feature=m)
    monitor.observe(fake[:600], epoch=1)
    _step(m, real)
    with pytest.raises(ValueError, match=CHANGED):
        monitor.observe(fake[:600], epoch=2)


# -------------------------------------------------------------------- 2. in-place changes the cache does not see
@pytest.mark.parametrize("change", ["data", "buffer", "attribute"])
def test_in_place_changes_refit_the_cached_bins(change):
    real, fake = _data()
    m = Lin()
    fastndb.score(real, fake, num_bins=16, feature=m)
    with torch.no_grad():
        if change == "data":
            m.lin.weight.data.copy_(torch.randn(6, 12, generator=torch.Generator().manual_seed(3)))
        elif change == "buffer":
            m.shift.data.add_(torch.arange(6.0) * 3)  # non-persistent: not in the state dict
        else:
            m.gain = -2.0  # a plain attribute the forward reads
    cached = fastndb.score(real, fake, num_bins=16, feature=m)
    fresh = fastndb.score(real, fake, num_bins=16, feature=m, cache=False)
    assert torch.equal(cached.real_counts, fresh.real_counts) and torch.equal(cached.fake_counts, fresh.fake_counts)


# ------------------------------------------------------------------------------------------------- 3. threads
def test_threads_sharing_a_module_in_train_mode_get_eval_features():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(12, 32), nn.BatchNorm1d(32), nn.Dropout(0.5), nn.Linear(32, 8)).train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    batches = [torch.randn(300, 12, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    extractor = fastndb.extractor(module, batch_size=7)
    serial = [extractor(b) for b in batches]
    got: list = [None] * 6

    def run(i: int) -> None:
        for _ in range(3):
            got[i] = extractor(batches[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(a, b) for a, b in zip(got, serial, strict=True))
    assert module.training and all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


# --------------------------------------------------------------------------------- 4. concurrent fit --name
def test_concurrent_fits_of_one_name_leave_one_winner(tmp_path):
    env = {**os.environ, "FASTNDB_HOME": str(tmp_path / "home"), "PYTHONWARNINGS": "ignore"}
    for i in range(2):  # large enough that both fits run while neither has written
        np.save(tmp_path / f"real{i}.npy", mixture(30_000, 64, seed=i).astype(np.float32))
    runs = [subprocess.Popen([sys.executable, "-m", "fastndb", "fit", str(tmp_path / f"real{i}.npy"), "--name",
                              "same", "--num-bins", "50"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env) for i in range(2)]
    outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in outcomes)
    assert codes[0] == 0 and codes[1] != 0, outcomes
    assert any("exists" in err for code, err in outcomes if code != 0)


# ------------------------------------------------------------------------ 8. counts independent of the batching
def test_metric_counts_with_a_feature_do_not_depend_on_the_update_batch_size():
    from fastndb.demo.runner import load_digits_tensor

    digits, _ = load_digits_tensor()
    images = digits.reshape(-1, 1, 8, 8)
    real, fake = images[:1200], images[1200:1500]
    expected = fastndb.score(real, fake, num_bins=12, feature="digits", cache=False)
    for size in (1, 7, 300):
        metric = NDBMetric(num_bins=12, feature="digits", real=real)
        for batch in fake.split(size):
            metric.update(batch, real=False)
        assert torch.equal(metric.fake_counts, expected.fake_counts), size
    # the features themselves: the same bits whatever the batching (every call runs batches of batch_size rows)
    ex = fastndb.extractor("digits")
    whole = ex(fake)
    assert torch.equal(torch.cat([ex(b) for b in fake.split(1)]), whole)
    assert torch.equal(torch.cat([ex(b) for b in fake.split(13)]), whole)


# --------------------------------------------------------------------------- 7. the report's format from -o
def test_report_output_suffix_decides_the_format(tmp_path):
    np.save(tmp_path / "real.npy", mixture(1200, 8, seed=0))
    np.save(tmp_path / "fake.npy", mixture(600, 8, seed=1))
    out = subprocess.run([sys.executable, "-m", "fastndb", "report", "real.npy", "fake.npy", "-o", "r.md",
                          "--num-bins", "10", "--birthday-samples", "0", "--prdc-samples", "0"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "r.md").read_text()
    assert text.startswith("#") and "<html" not in text.lower()


# ------------------------------------------------------------------------- tracebacks and unclear messages
def _cli(*argv: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastndb", *argv], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "default", "MPLBACKEND": "Agg", **(env or {})},
                          timeout=300)


def test_the_command_line_validates_arrays_before_indexing_them(tmp_path):
    np.save(tmp_path / "z.npy", np.float32(3))
    np.save(tmp_path / "empty.npy", np.zeros((0, 8), np.float32))
    np.save(tmp_path / "real.npy", mixture(600, 8, seed=0).astype(np.float32))
    np.save(tmp_path / "big.npy", mixture(300, 8, seed=1).astype(">f4"))  # big-endian, as the Python API takes
    for argv, message in ((("score", "z.npy", "real.npy"), "z.npy: expected samples (N, ...), got a 0-d array"),
                          (("fit", "z.npy", "--name", "x"), "z.npy: expected samples (N, ...), got a 0-d array"),
                          (("birthday", "real.npy", "--threshold-from", "empty.npy"), "empty.npy: holds no samples"),
                          (("birthday", "real.npy", "--threshold-from", "z.npy"), "got a 0-d array")):
        out = _cli(*argv, cwd=tmp_path, env={"FASTNDB_HOME": str(tmp_path / "home")})
        assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr, (argv, out.stderr)
    out = _cli("score", "real.npy", "big.npy", "--num-bins", "5", "--prdc-samples", "0", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    import json

    expected = fastndb.score(torch.from_numpy(np.load(tmp_path / "real.npy")),
                             torch.from_numpy(np.load(tmp_path / "big.npy").astype(np.float32)), num_bins=5)
    assert json.loads(out.stdout)["ndb"] == expected.ndb


def test_compressed_inputs_are_guarded_like_png_bombs(tmp_path):
    import gzip
    import io
    import zipfile

    from fastndb._core.files import load_samples
    from fastndb.demo.runner import load_training_images

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**9,)})
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", compression=zipfile.ZIP_DEFLATED) as archive, \
            archive.open("x.npy", "w", force_zip64=True) as member:
        member.write(header.getvalue() + bytes(1 << 22))
    with pytest.raises(ValueError, match=r"bomb.npz:x: declares 3.73 GiB .* refused as a decompression bomb"):
        load_samples(str(tmp_path / "bomb.npz"))
    with gzip.open(tmp_path / "images-idx3-ubyte.gz", "wb") as f:
        f.write(b"".join(v.to_bytes(4, "big") for v in (0x803, 100_000, 200, 200)) + bytes(1 << 20))
    with pytest.raises(ValueError, match=r"declares 3.73 GiB .* decompression bomb"):
        load_training_images(str(tmp_path / "images-idx3-ubyte.gz"))
    np.save(tmp_path / "my-idx-run.npy", np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32))
    assert load_training_images(str(tmp_path / "my-idx-run.npy"), image_size=8).shape == (20, 1, 8, 8)  # not IDX
    genuine = np.random.default_rng(1).integers(0, 256, (50, 1, 8, 8), dtype=np.uint8)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"".join(v.to_bytes(4, "big") for v in (0x803, 50, 8, 8)) + genuine.tobytes())
    loaded = load_training_images(str(tmp_path / "t10k-images-idx3-ubyte.gz"), image_size=8)
    assert loaded.shape == (50, 1, 8, 8)
    assert torch.allclose(loaded, torch.from_numpy(genuine).float() / 255 * 2 - 1)


def test_the_monitor_takes_what_score_takes_and_names_epoch():
    from fastndb.demo.training import CollapseMonitor

    real = torch.rand(1500, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(real), batch_size=400)
    bins = [CollapseMonitor(form, num_samples=500, birthday_samples=100).ndb.bins.centroids
            for form in (real, real.numpy(), list(real.split(500)), loader)]
    assert all(torch.equal(b, bins[0]) for b in bins)
    monitor = CollapseMonitor(real, num_samples=500, birthday_samples=100)
    with pytest.raises(TypeError, match=r"epoch: expected an integer, got str '1'"):
        monitor.observe(real[:500], "1")
    assert monitor.observe(real[:500].numpy(), 1)["ndb"] >= 0


def test_report_names_are_checked_against_the_samples():
    from fastndb import report

    real, fake = _data(1200, 400)
    with pytest.raises(TypeError, match=r"names: expected file names as strings, got a int \(0\)"):
        report.build(real, fake, names=list(range(1200)), pictures=False, birthday_samples=None,
                     coverage_samples=None)
    with pytest.raises(ValueError, match=r"fake_names: expected one name per sample \(400\), got 399"):
        report.build(real, fake, fake_names=[f"{i}.png" for i in range(399)], pictures=False,
                     birthday_samples=None, coverage_samples=None)


def test_feature_callables_and_module_dtypes():
    from dataclasses import dataclass

    @dataclass
    class Scale:  # a dataclass is unhashable: the cache keys it by identity
        k: float = 2.0

        def __call__(self, x):
            return x * self.k

    real, fake = _data(2000, 600)
    assert fastndb.score(real, fake, num_bins=8, feature=Scale()).ndb == fastndb.score(
        real * 2, fake * 2, num_bins=8, cache=False).ndb
    u8 = (torch.rand(2000, 12, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        lin = nn.Linear(12, 4).to(dtype)  # the samples reach it in its own dtype
        expected = fastndb.score(lin(u8.to(dtype) / 255).detach().float(), lin(u8[:600].to(dtype) / 255).detach()
                                 .float(), num_bins=8, cache=False)
        assert fastndb.score(u8, u8[:600], num_bins=8, feature=lin, cache=False).ndb == expected.ndb, dtype
    with pytest.raises(ValueError, match=r"feature: the callable .* returned NaN or infinite features for real; the "
                                         r"samples themselves are finite"):
        fastndb.score(real, fake, num_bins=8, feature=lambda x: torch.log(x))
    with pytest.raises(ValueError, match=r"feature='digits': expected images"):
        fastndb.score(torch.rand(500, 7), torch.rand(100, 7), feature="digits", num_bins=5)


def test_small_fake_sets_degrade_instead_of_failing(tmp_path):
    np.save(tmp_path / "real.npy", mixture(2000, 8, seed=0).astype(np.float32))
    for n in (5, 6):
        np.save(tmp_path / f"fake{n}.npy", mixture(n, 8, seed=n).astype(np.float32))
        scored = _cli("score", "real.npy", f"fake{n}.npy", "--num-bins", "2", cwd=tmp_path)
        reported = _cli("report", "real.npy", f"fake{n}.npy", "--num-bins", "2", "-o", "r.html", cwd=tmp_path)
        for out in (scored, reported):
            assert out.returncode == 0, out.stderr
            assert "coverage metrics skipped" in out.stderr or n > 5
            assert "(0.0-" in out.stdout and "nan" not in out.stdout.lower()


def test_small_samples_get_an_interval_that_covers():
    """Below 10 samples per bin the two-group interval covered 10-17% of planted drops; the distribution-free
    interval that replaces it there covers them."""
    from fastndb._core.effects import missing_mass

    g = torch.Generator().manual_seed(0)
    real_shares = torch.full((10,), 0.1, dtype=torch.float64)
    fake_shares = torch.cat([torch.zeros(3, dtype=torch.float64), torch.full((7,), 1 / 7, dtype=torch.float64)])
    covered = 0
    for i in range(60):
        r = torch.multinomial(real_shares, 1000, replacement=True, generator=g).bincount(minlength=10)
        f = torch.multinomial(fake_shares, 30, replacement=True, generator=g).bincount(minlength=10)
        m = missing_mass(r, f, seed=i)
        covered += m.low <= 0.3 <= m.high
    assert covered >= 57, covered


def test_flags_and_folders_are_named_as_the_user_typed_them(tmp_path):
    np.save(tmp_path / "real.npy", mixture(1000, 8, seed=0).astype(np.float32))
    np.save(tmp_path / "fake.npy", mixture(400, 8, seed=1).astype(np.float32))
    out = _cli("report", "real.npy", "fake.npy", "--birthday-samples", "-3", cwd=tmp_path)
    assert out.returncode == 2 and "--birthday-samples: expected 0 (skip) or a positive number" in out.stderr
    out = _cli("report", "real.npy", "fake.npy", "--prdc-samples", "3", "--birthday-samples", "0", "--num-bins", "5",
               "-o", "r.html", cwd=tmp_path)
    assert out.returncode == 0 and "--prdc-samples 3 leaves no 6 samples a side for --nearest-k 5" in out.stderr
    out = _cli("birthday", "fake.npy", "--grid", "g.png", "--grid-shape", "3", "3", "3", cwd=tmp_path)
    assert out.returncode == 1 and "--grid-shape: expected" in out.stderr and "image_shape" not in out.stderr
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for home, reason in (("dangling", "is a symbolic link to"), ("a-file", "is a file, not a folder")):
        out = _cli("fit", "real.npy", "--name", "r", "--num-bins", "5", cwd=tmp_path,
                   env={"FASTNDB_HOME": str(tmp_path / home)})
        assert out.returncode == 1 and "$FASTNDB_HOME:" in out.stderr and reason in out.stderr, out.stderr
    out = _cli("score", "real.npy", "fake.npy", "--num-bins", "5", "--cache", "a-file", cwd=tmp_path)
    assert out.returncode == 1 and "--cache: a-file cannot be used as a folder" in out.stderr


def test_folders_of_other_shapes_are_refused_before_the_fit_with_the_flag_that_aligns_them(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder, mode, shape in (("grey", "L", (8, 8)), ("rgb", "RGB", (8, 8, 3)), ("big", "L", (16, 16))):
        (tmp_path / folder).mkdir()
        for i in range(120):
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(tmp_path / folder / f"{i}.png")
    out = _cli("score", "grey", "rgb", "--num-bins", "3", cwd=tmp_path)
    assert out.returncode == 1 and "rgb: samples of shape (3, 8, 8), but grey's are (1, 8, 8)" in out.stderr
    assert "--channels" in out.stderr
    out = _cli("score", "grey", "big", "--num-bins", "3", cwd=tmp_path)
    assert "--image-size 8 8" in out.stderr
    assert _cli("score", "grey", "rgb", "--num-bins", "3", "--prdc-samples", "0", "--features", "digits",
                cwd=tmp_path).returncode == 0  # a named network reads both alike
    np.save(tmp_path / "flat.npy", rng.integers(0, 255, (120, 64), dtype=np.uint8))
    flat = _cli("score", "grey", "flat.npy", "--num-bins", "3", "--prdc-samples", "0", cwd=tmp_path)
    assert flat.returncode == 0, flat.stderr  # 1 x 8 x 8 images against flat 64-value samples: both flatten alike


def test_the_metric_names_its_cap_when_it_leaves_too_few_real_samples():
    metric = NDBMetric(num_bins=100, max_real_samples=150)
    metric.update(torch.randn(10_000, 4), real=True)
    metric.update(torch.randn(500, 4), real=False)
    with pytest.raises(ValueError, match=r"max_real_samples=150 keeps 150 of the 10000 real samples offered"):
        metric.compute()


# ------------------------------------------------------------------------------------------- memory and output
def test_memory_of_a_feature_and_of_a_large_k_is_bounded():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from _common import peak_memory_during

    images = (torch.rand(20_000, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    fastndb.extractor("digits")(images[:64].float() / 255)  # loaded before the baseline
    _, peak = peak_memory_during(lambda: fastndb.score(images[:16_000], images[16_000:], num_bins=10,
                                                       feature="digits", cache=False))
    as_float = images.numel() * 4
    assert peak < as_float / 3, (peak, as_float)  # converted per batch: never the whole input as float32

    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(2000, 32, generator=g), torch.randn(2000, 32, generator=g)
    _, small = peak_memory_during(lambda: fastndb.prdc(real, fake, nearest_k=5, subsets=0))
    with pytest.warns(UserWarning, match=r"prdc: no intervals: nearest_k=1999"):
        _, large = peak_memory_during(lambda: fastndb.prdc(real, fake, nearest_k=1999))
    assert large < small + 200 * 2**20, (small, large)  # was an N x N array in effect (N^2 x 20 bytes and more)


def test_file_names_cannot_inject_markup_or_terminal_control(tmp_path):
    from PIL import Image

    from fastndb import report

    evil = ["a|b<img src=x onerror=alert(1)>.png", "c<svg onload=alert(1)>.png", "line\nforged: 0 duplicates.png",
            "esc\x1b[2Jclear.png"]
    real, fake = _data(1200, 400)
    names = [f"{i}.png" for i in range(400)]
    names[:4] = evil
    fake = fake.clone()
    fake[1], fake[3] = fake[0], fake[2]  # exact copies: the closest pairs name the first four files
    built = report.build(real, fake, fake_names=names, pictures=False, coverage_samples=None, birthday_samples=400)
    text = built.to_markdown()
    assert "<img" not in text and "<svg" not in text and "\x1b" not in text and "a\\|b" in text
    folder = tmp_path / "fakes"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)
    for name in ("x\x1b[31mred.png", "y\nforged line.png"):
        Image.fromarray(pixels, "L").save(folder / name)  # two copies: the closest pair names both files
    out = _cli("birthday", str(folder), "--num-pairs", "1")
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\\x1b" in out.stdout and "\\n" in out.stdout
