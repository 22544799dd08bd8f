"""Regression tests for inputs that once gave confident wrong answers, tracebacks or gigabytes (one test per cause).

Each test here failed on the code before its fix; the property-style sweep lives in ``test_properties.py``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import fastndb
from fastndb import NDB

HERE = Path(__file__).parent


def _run_cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "fastndb", *argv], capture_output=True, text=True, env=env,
                          timeout=300)


# ------------------------------------------------------------------------------ 1. duplicate-heavy holdout
def test_holdout_split_divides_the_copies_of_a_sample():
    real = torch.cat([torch.zeros(1000, 8), torch.ones(1000, 8)])
    fake = torch.zeros(1000, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = fastndb.score(real, fake, num_bins=2, cache=False)
    assert result.ndb == 2 and result.p_value < 1e-100
    assert 400 < int(result.real_counts[0]) < 600 and 400 < int(result.real_counts[1]) < 600


def test_duplicate_heavy_null_is_calibrated():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(10, 16, generator=g)
    flagged, p_values = 0, []
    for trial in range(10):
        real = points[torch.randint(10, (4000,), generator=g)]
        fake = points[torch.randint(10, (2000,), generator=g)]
        result = fastndb.score(real, fake, num_bins=10, seed=trial, cache=False)
        flagged += result.ndb
        p_values.append(result.p_value)
    assert flagged <= 15  # 10 trials x 10 bins x alpha 0.05 = 5 expected
    assert min(p_values) > 1e-4


def test_distinct_points_warning_is_true_when_it_fires():
    real = torch.cat([torch.zeros(500, 4), torch.ones(500, 4), torch.full((500, 4), 2.0)])
    with pytest.warns(RuntimeWarning, match="3 distinct"):
        NDB(num_bins=5).fit(real)
    g = torch.Generator().manual_seed(0)
    distinct = torch.randn(10, 4, generator=g)[torch.arange(2000) % 10]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        NDB(num_bins=10).fit(distinct)  # 10 distinct points, 10 bins: every bin holds one point, no warning


def test_birthday_metric_buffer_samples_copies_uniformly():
    from fastndb.metrics import BirthdayMetric

    g = torch.Generator().manual_seed(0)
    points = torch.randn(2, 8, generator=g)
    metric = BirthdayMetric(num_samples=300, threshold=0.0)
    for _ in range(10):
        metric.update(points[torch.randint(2, (100,), generator=g)])
    kept = metric.compute()
    rate = float(kept["duplicate_rate"])
    assert 0.4 < rate < 0.6  # two equally likely outputs: about half of all pairs are copies (not all of them)


# ----------------------------------------------------------------------------------- 2. birthday memory
def test_birthday_memory_on_a_collapsed_generator_is_bounded():
    out = subprocess.run([sys.executable, str(HERE / "birthday_memory.py"), "2000", "64", "collapsed", "0"],
                         capture_output=True, text=True, timeout=300, check=True)
    measured = json.loads(out.stdout)
    assert measured["num_duplicates"] == 2000 * 1999 // 2
    assert measured["peak_increase_bytes"] < 256 * 2**20  # the bound docs/reliability.md states


@pytest.mark.parametrize("threshold", [0.0, 1e-3, 0.5])
def test_birthday_counts_stay_exact_under_heavy_duplication(threshold):
    g = torch.Generator().manual_seed(1)
    support = torch.randn(5, 6, generator=g)
    x = support[torch.randint(5, (700,), generator=g)]
    x[::7] += 1e-4 * torch.randn(100, 6, generator=g)
    result = fastndb.birthday(x, threshold=threshold, block_rows=256)
    d = torch.cdist(x.double(), x.double())
    expected = int((d[torch.triu_indices(700, 700, 1).unbind()] <= threshold).sum())
    assert result.num_duplicates == expected


# --------------------------------------------------------------------------------------- 3. image depth
def _save_images(folder: Path, arrays: list[np.ndarray], mode: str) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, array in enumerate(arrays):
        image = Image.fromarray(array)  # uint16 -> "I;16", float32 -> "F"
        assert image.mode == mode
        image.save(folder / f"{i:02d}.{'tif' if mode == 'F' else 'png'}")


def test_16_bit_png_keeps_its_range(tmp_path):
    pytest.importorskip("PIL")
    from fastndb._core.files import load_samples

    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, (6, 5, 7), dtype=np.uint16)
    _save_images(tmp_path / "deep", [a * 257 for a in eight], "I;16")
    loaded = load_samples(str(tmp_path / "deep"))
    assert loaded.dtype == torch.float32
    np.testing.assert_allclose(loaded[:, 0].numpy(), eight / 255.0, atol=1e-6)


def test_float_tiff_keeps_its_values(tmp_path):
    pytest.importorskip("PIL")
    from fastndb._core.files import load_samples

    values = np.random.default_rng(1).random((4, 5, 6)).astype(np.float32)
    _save_images(tmp_path / "float", list(values), "F")
    loaded = load_samples(str(tmp_path / "float"))
    np.testing.assert_allclose(loaded[:, 0].numpy(), values, atol=1e-7)


# --------------------------------------------------------------------------------------- 4. value range
def _digits_like(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    modes = torch.randint(0, 256, (10, 64), generator=g).float()
    x = modes[torch.randint(10, (n,), generator=g)] + 20 * torch.randn(n, 64, generator=g)
    return x.clamp(0, 255).round().to(torch.uint8)


def test_uint8_against_tanh_output_is_refused_without_a_range():
    real = _digits_like(3000, 0)
    fake_tanh = _digits_like(1500, 0).float() / 127.5 - 1
    with pytest.raises(ValueError, match=r"value_range"):
        fastndb.score(real, fake_tanh, num_bins=10, cache=False)
    stated = fastndb.score(real, fake_tanh, num_bins=10, cache=False, value_range=(-1, 1))
    assert stated.ndb <= 3  # same distribution, once the range is stated


def test_uint8_against_float_0_255_is_refused_without_a_range():
    real = _digits_like(3000, 0)
    with pytest.raises(ValueError, match=r"value_range=\(0, 255\)"):
        fastndb.score(real, _digits_like(1500, 0).float(), num_bins=10, cache=False)
    assert fastndb.score(real, _digits_like(1500, 0).float(), num_bins=10, cache=False,
                         value_range=(0, 255)).ndb <= 3


def test_float_ranges_far_apart_warn():
    real = torch.rand(3000, 16)
    with pytest.warns(RuntimeWarning, match="value range"):
        fastndb.score(real, torch.rand(1500, 16) * 255, num_bins=10, cache=False)


def test_metric_and_monitor_share_the_convention():
    from fastndb.metrics import NDBMetric

    real = _digits_like(3000, 0)
    fake = _digits_like(1500, 0).float() / 127.5 - 1
    metric = NDBMetric(num_bins=10, value_range=(-1, 1))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert int(metric.compute()["ndb"]) == fastndb.score(real, fake, num_bins=10, value_range=(-1, 1)).ndb


# ----------------------------------------------------------------------------------- 5. inference mode
def test_score_accepts_inference_mode_tensors():
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        real = torch.randn(2000, 8, generator=g)
        fake = torch.randn(1000, 8, generator=g) + 1
    first = fastndb.score(real, fake, num_bins=10)
    again = fastndb.score(real, fake, num_bins=10)
    assert first.ndb == again.ndb >= 5
    with torch.inference_mode():
        real.add_(5.0)  # changed in place where no version counter is kept: must not give a stale hit
    moved = fastndb.score(real, fake + 5.0, num_bins=10)  # real and fake shifted alike: the same distribution
    assert moved.ndb == fastndb.score(real.clone(), fake + 5.0, num_bins=10, cache=False).ndb


def test_inference_tensor_edit_is_seen_by_the_cache():
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        real = torch.randn(2000, 8, generator=g)
    fake = real[:1000].clone() + 0.0
    fastndb.score(real, fake, num_bins=10)
    with torch.inference_mode():
        real[:, 0] += 100.0
    uncached = fastndb.score(real.clone(), fake, num_bins=10, cache=False)
    assert fastndb.score(real, fake, num_bins=10).ndb == uncached.ndb


def test_every_face_takes_inference_tensors():
    from fastndb.metrics import BirthdayMetric, NDBMetric

    g = torch.Generator().manual_seed(0)
    draw = lambda n: torch.randn(n, 8, generator=g)  # noqa: E731
    metric, pairs, ndb = NDBMetric(num_bins=5), BirthdayMetric(num_samples=100, threshold=0.0), NDB(num_bins=5)
    with torch.inference_mode():
        metric.update(draw(500), real=True)
        metric.update(draw(300), real=False)
        pairs.update(draw(80))
        ndb.fit(draw(1000)).update(draw(100))
        inside = (fastndb.birthday(draw(100), threshold=0.1), fastndb.kmeans(draw(100), 3))
    metric.update(draw(500), real=True)
    metric.update(draw(300), real=False)
    pairs.update(draw(80))
    ndb.update(draw(100))
    assert int(metric.compute()["ndb"]) <= 2 and metric.result.num_fake == 600
    assert float(pairs.compute()["num_duplicates"]) == 0 and ndb.result().num_fake == 200
    assert inside[0].num_duplicates is not None and inside[1].inertia > 0


def test_assign_checks_the_value_range_too():
    real = _digits_like(2000, 0)
    bins = NDB(num_bins=5).fit(real)
    with pytest.raises(ValueError, match="value_range"):
        bins.assign(_digits_like(10, 1).float() / 127.5 - 1)


# ---------------------------------------------------------------------- 6-7. the command line's errors
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    g = np.random.default_rng(0)
    np.save(root / "s4.npy", g.normal(size=(300, 4)).astype(np.float32))
    np.save(root / "r16.npy", g.normal(size=(300, 16)).astype(np.float32))
    (root / "garbage.pt").write_bytes(b"\x80\x04this is not a pickle at all" * 5)
    buffer = io.BytesIO()
    np.savez(buffer, x=g.normal(size=(300, 4)))
    (root / "truncated.npz").write_bytes(buffer.getvalue()[:200])
    return root


def test_threshold_from_real_with_other_features_is_refused(bad_files):
    done = _run_cli("birthday", str(bad_files / "s4.npy"), "--threshold-from", str(bad_files / "r16.npy"))
    assert done.returncode == 1
    assert "--threshold-from" in done.stderr and "16" in done.stderr and "4" in done.stderr


@pytest.mark.parametrize("argv,needle", [
    (("score", "{d}/garbage.pt", "{d}/s4.npy"), "garbage.pt"),
    (("score", "{d}/truncated.npz", "{d}/s4.npy"), "truncated.npz"),
    (("score", "{d}/s4.npy", "{d}/s4.npy", "--device", "cuda:0"), "--device"),
    (("score", "{d}/s4.npy", "{d}/s4.npy", "--device", "tpu"), "--device"),
    (("birthday", "{d}/s4.npy", "--threshold", "1e400"), "--threshold"),
])
def test_cli_errors_are_one_line(bad_files, argv, needle):
    done = _run_cli(*(a.format(d=bad_files) for a in argv))
    assert done.returncode in (1, 2), done.stderr
    assert "Traceback" not in done.stderr and needle in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 or done.returncode == 2


def test_huge_threshold_counts_every_pair(bad_files):
    done = _run_cli("birthday", str(bad_files / "s4.npy"), "--threshold", "1e300", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["num_duplicates"] == 300 * 299 // 2


def test_decompression_bomb_is_one_line(tmp_path):
    from PIL import Image

    folder = tmp_path / "bomb"
    folder.mkdir()
    Image.new("L", (100, 100)).save(folder / "a.png")
    script = ("import sys, PIL.Image; PIL.Image.MAX_IMAGE_PIXELS = 1000; from fastndb.cli import main; "
              f"sys.exit(main(['score', {str(folder)!r}, {str(folder)!r}]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "a.png" in done.stderr


def test_zip_errors_name_the_file(bad_files):
    from fastndb._core.files import load_samples

    with pytest.raises(ValueError, match="truncated.npz"):
        load_samples(str(bad_files / "truncated.npz"))
    assert zipfile.is_zipfile(bad_files / "truncated.npz") is False


# --------------------------------------------------------------------------------------- 8. extreme scales
@pytest.mark.parametrize("scale", [1e-25, 1e25, 1e-40, 1e35])
def test_extreme_scales_give_the_unit_scale_answer(scale):
    g = torch.Generator().manual_seed(0)
    real = torch.randn(3000, 16, generator=g)
    fake = torch.randn(1500, 16, generator=g) + 3.0
    reference = fastndb.score(real, fake, num_bins=10, cache=False)
    scaled = fastndb.score((real.double() * scale).float(), (fake.double() * scale).float(), num_bins=10,
                           cache=False)
    assert reference.ndb >= 8 and scaled.ndb >= 8
    assert scaled.p_value < 1e-10


@pytest.mark.parametrize("scale", [1e-25, 1e25])
def test_birthday_and_kmeans_at_extreme_scales(scale):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g)
    x[300] = x[10]
    scaled = (x.double() * scale).float()
    result = fastndb.birthday(scaled, num_pairs=3, threshold=0.0)
    assert result.pairs[0].tolist() == [10, 300] and result.num_duplicates == 1
    d = torch.nn.functional.pdist(scaled.double())
    assert float(result.distances[1]) == pytest.approx(float(d[d > 0].min()), rel=1e-6)
    fitted = fastndb.kmeans(scaled, 3, seed=0)
    assert torch.isfinite(fitted.centroids).all() and 0 < fitted.inertia < float("inf")
    plain = fastndb.kmeans(x, 3, seed=0)
    assert fitted.inertia == pytest.approx(plain.inertia * scale**2, rel=0.1)  # rounding moves the seeding sample


# -------------------------------------------------------------------------- 9. messages name the argument
def test_huge_seed_names_the_argument():
    with pytest.raises(ValueError, match=r"seed: expected an integer in \[0, 2\*\*63\)"):
        NDB(num_bins=10, seed=2**70)
    with pytest.raises(ValueError, match="seed"):
        fastndb.kmeans(torch.randn(100, 2), 2, seed=2**70)


def test_longdouble_names_the_argument():
    with pytest.raises(TypeError, match=r"real: expected .*longdouble|real: .*float128"):
        fastndb.score(np.zeros((100, 4), dtype=np.longdouble), np.zeros((100, 4)), num_bins=2)


def test_metrics_accept_mixed_float_dtypes():
    from fastndb.metrics import BirthdayMetric, NDBMetric

    g = torch.Generator().manual_seed(0)
    metric = NDBMetric(num_bins=5)
    metric.update(torch.randn(500, 4, generator=g), real=True)
    metric.update(torch.randn(500, 4, generator=g).double(), real=True)
    metric.update(torch.randn(300, 4, generator=g).double(), real=False)
    metric.update(torch.randn(300, 4, generator=g), real=False)
    assert int(metric.compute()["ndb"]) >= 0
    birthday = BirthdayMetric(num_samples=50)
    birthday.update(torch.randn(30, 4, generator=g))
    birthday.update(torch.randn(30, 4, generator=g).double())
    assert float(birthday.compute()["closest_distance"]) > 0


def test_unsigned_integer_arrays_of_every_width_are_scored():
    x = np.random.default_rng(0).integers(0, 65535, (2000, 8)).astype(np.uint16)
    assert fastndb.score(x, x[:1000], num_bins=5, cache=False).ndb <= 2  # uint16: 16-bit images, x / 65535
    assert fastndb.birthday(x[:300], threshold=0.0).num_duplicates == 0
    for dtype in (np.uint32, np.uint64):
        y = (x % 100).astype(dtype)
        assert fastndb.score(y, y[:1000], num_bins=5, cache=False).ndb <= 2


def test_half_precision_tensors_are_scored_like_float32():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(2000, 8, generator=g), torch.randn(1000, 8, generator=g) + 1.0
    for dtype in (torch.bfloat16, torch.float16):
        low = fastndb.score(real.to(dtype), fake.to(dtype), num_bins=5, cache=False)
        assert low.ndb == fastndb.score(real.to(dtype).float(), fake.to(dtype).float(), num_bins=5, cache=False).ndb
