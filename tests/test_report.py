"""The report: its numbers are the API's, it works without images and at large K, it is self-contained, and it
renders in a real browser with its pictures."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import torch

import fastndb
from fastndb import report
from fastndb.demo.runner import load_digits_tensor
from tests.conftest import mixture

pytest.importorskip("matplotlib")


def _digits_without(dropped=(3, 8)):
    x, y = load_digits_tensor()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    real = x[order[:1000]].reshape(-1, 1, 8, 8)
    pool, labels = x[order[1000:]], y[order[1000:]]
    return real, pool[~torch.isin(labels, torch.tensor(dropped))].reshape(-1, 1, 8, 8)


@pytest.fixture(scope="module")
def digits_report():
    real, fake = _digits_without()
    return real, fake, report.build(real, fake, num_bins=20, names=[f"r{i}.png" for i in range(len(real))])


def test_the_numbers_are_the_apis(digits_report):
    real, fake, built = digits_report
    expected = fastndb.NDB(20).fit(real).score(fake)
    assert torch.equal(built.ndb.fake_counts, expected.fake_counts) and built.ndb.p_value == expected.p_value
    assert built.coverage.scores() == fastndb.prdc(real, fake, num_samples=5000).scores()
    threshold = fastndb.duplicate_threshold(real, num_samples=len(fake))
    assert built.birthday.num_duplicates == fastndb.birthday(fake, threshold=threshold).num_duplicates
    assert built.decision.decision == "missing" and built.decision.differs  # digits 3 and 8 dropped: 20% of the data
    assert built.verdict[0].startswith("Missing modes: about") and "region(s) are empty" in built.verdict[0]
    assert built.decision.missing.low > 0.05 and built.decision.missing == expected.missing
    assert built.duplicates is not None and built.decision.tests["duplicates"] == built.duplicates.p_value
    flagged = [b.index for b in built.flagged]
    z = expected.z.abs()
    assert flagged == sorted(flagged, key=lambda i: -float(z[i]))  # most different first
    empty = next(b for b in built.flagged if b.fake_count == 0)
    x, y = load_digits_tensor()
    labels = y[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:1000]]
    assert {int(labels[i]) for i in empty.real_examples} <= {3, 8}  # the empty bin holds the dropped digits
    text = built.to_markdown()
    assert f"| {empty.index} | {empty.z:+.2f} |" in text and "r" + str(empty.real_examples[0]) + ".png" in text
    # the modes section: the top missing mode's examples (mapped back to the samples given) are the dropped digits
    top = built.modes.missing[0]
    assert sum(int(labels[i]) in (3, 8) for i in top.examples.tolist()) >= 0.8 * top.examples.numel()
    assert "## Modes" in text and f"r{top.examples[0]}.png" in text


def test_the_html_is_self_contained(digits_report, tmp_path):
    _, _, built = digits_report
    page = built.to_html()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    modes = 1 + bool(built.modes.missing) + bool(built.modes.invented)  # the count curves, the modes' examples
    modes += bool(built.copies)  # the samples most like copies
    assert page.count('src="data:image/png;base64,') == 2 + len(built.flagged) + modes  # bins, pairs, a strip a bin
    assert built.save(tmp_path / "r.md").read_text().startswith("# fastndb report")


def test_arrays_without_images_and_large_k():
    real = torch.from_numpy(mixture(6000, 5, seed=0))
    fake = torch.from_numpy(mixture(3000, 5, seed=1, keep_modes=5))
    built = report.build(real, fake, num_bins=60, max_flagged=3, examples=2, birthday_samples=None)
    assert len(built.flagged) == 3 and built.flagged_not_shown == built.ndb.ndb - 3 > 10
    assert not built.examples_as_images and "bin-" not in "".join(built.images)
    page = built.to_html()
    assert f"{built.flagged_not_shown} more flagged bins are not shown" in page and "<table><tr><td>" in page
    assert built.birthday is None and "Closest pairs" not in built.to_markdown()


def test_the_default_k_follows_the_number_of_real_samples():
    from fastndb._core.options import default_num_bins

    assert default_num_bins(1000) == 25 and default_num_bins(100) == 2 and default_num_bins(1_000_000) == 100
    real = torch.from_numpy(mixture(1200, 4, seed=0))
    built = report.build(real, real[:600], pictures=False, birthday_samples=None, coverage_samples=None)
    assert built.ndb.num_bins == 30 and "min(100, N/40)" in built.settings["default K rule"]
    assert not built.decision.differs and built.decision.decision != "missing"
    assert built.verdict[0].startswith(("No difference beyond chance", "Nothing missing beyond the tolerance"))


def test_the_command_line_writes_html_and_markdown(tmp_path):
    import numpy as np

    real, fake = _digits_without()
    np.save(tmp_path / "real.npy", real.numpy())
    np.save(tmp_path / "fake.npy", fake.numpy())
    for fmt in ("html", "md"):
        out = subprocess.run([sys.executable, "-m", "fastndb", "report", str(tmp_path / "real.npy"),
                              str(tmp_path / "fake.npy"), "-o", str(tmp_path / f"r.{fmt}"), "--format", fmt,
                              "--num-bins", "20"], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("Missing modes: about") and (tmp_path / f"r.{fmt}").exists()


def _browser() -> str | None:
    return next((shutil.which(name) for name in ("chromium-headless-shell", "chromium", "chromium-browser",
                                                 "google-chrome") if shutil.which(name)), None)


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium installed")
def test_the_report_renders_in_a_real_browser(digits_report, tmp_path):
    from PIL import Image

    _, _, built = digits_report
    page = built.save(tmp_path / "report.html")
    text_only = tmp_path / "text.html"
    text_only.write_text(re.sub(r"<img[^>]*>", "", page.read_text()))

    def dark_share(html_path):
        shot = html_path.with_suffix(".png")
        done = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                               "--window-size=1100,1800", html_path.as_uri()], capture_output=True, text=True,
                              timeout=120)
        assert shot.exists(), done.stderr[-2000:]
        image = Image.open(shot).convert("L")
        assert image.size == (1100, 1800)
        return sum(image.histogram()[:16]) / (image.size[0] * image.size[1])  # black: the digits, not the text (#222)

    with_images, without = dark_share(page), dark_share(text_only)
    assert with_images > 10 * without + 0.01, (with_images, without)  # the pictures rendered
    dom = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    modes = 1 + bool(built.modes.missing) + bool(built.modes.invented) + bool(built.copies)
    assert dom.count("<img") == 2 + len(built.flagged) + modes and "Flagged bins" in dom and "Modes" in dom


def test_score_writes_the_flagged_bins_examples(tmp_path):
    import numpy as np

    real, fake = _digits_without()
    np.save(tmp_path / "real.npy", real.numpy())
    np.save(tmp_path / "fake.npy", fake.numpy())
    out = subprocess.run([sys.executable, "-m", "fastndb", "score", "real.npy", "fake.npy", "--num-bins", "20",
                          "--prdc-samples", "0", "--examples", "strips"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    expected = fastndb.NDB(20).fit(real).score(fake)
    strips = sorted((tmp_path / "strips").glob("bin-*.png"))
    assert len(strips) == expected.ndb and f"wrote {expected.ndb} strips" in out.stdout
    np.save(tmp_path / "flat.npy", np.random.default_rng(0).normal(size=(600, 5)).astype(np.float32))
    refused = subprocess.run([sys.executable, "-m", "fastndb", "score", "flat.npy", "flat.npy", "--examples", "x",
                              "--prdc-samples", "0"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert refused.returncode == 1 and "--examples: the samples (5,) are not images" in refused.stderr


def test_one_missing_mode_among_many_bins_is_reported():
    from fastndb.demo.ground_truth import GRID

    real = GRID.sample(20_000, seed=1)
    weights = torch.ones(25, dtype=torch.float64)
    weights[0] = 0.0  # a generator that misses exactly one of 25 modes
    missing = report.build(real, GRID.sample(2000, seed=2, weights=weights), num_bins=25, pictures=False,
                           birthday_samples=None, coverage_samples=None)
    assert missing.ndb.ndb <= 3  # the count alone is near chance (about 1.25 of 25 bins) ...
    assert missing.decision.decision == "missing" and "1 region(s) are empty" in missing.verdict[0]  # ... not the bin
    assert missing.decision.missing.low <= 1 / 25 <= missing.decision.missing.high  # one mode of 25: 4% missing
    full = report.build(real, GRID.sample(2000, seed=3), num_bins=25, pictures=False, birthday_samples=None,
                        coverage_samples=None)
    assert not full.decision.differs and full.decision.decision != "missing"
