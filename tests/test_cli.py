"""The fastndb command as a subprocess, on files made here: JSON equals the API, errors are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import fastndb
from fastndb.demo.synthetic import gaussian_mixture
from fastndb.report import verdict

PIL_Image = pytest.importorskip("PIL.Image")


def run(*argv: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "fastndb", *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    real = gaussian_mixture(2000, 48, seed=0)
    fake = gaussian_mixture(1000, 48, seed=1, keep_modes=6)
    np.save(root / "real.npy", real)
    np.save(root / "fake.npy", fake)
    np.savez(root / "both.npz", real=real, fake=fake)
    torch.save({"fake": torch.from_numpy(fake)}, root / "fake.pt")
    torch.save(torch.from_numpy(real), root / "real.pt")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
    images[50] = images[3]  # a duplicate for the birthday grid
    folder = root / "images"
    (folder / "sub").mkdir(parents=True)
    for i, image in enumerate(images):
        PIL_Image.fromarray(image).save(folder / ("sub" if i % 2 else "") / f"{i:03d}.png")
    return root, torch.from_numpy(real), torch.from_numpy(fake), images


def _png_ok(path) -> None:
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels[..., :3].std() > 0.05


def test_score_json_equals_the_api_for_every_file_form(files):
    root, real, fake, _ = files
    result = fastndb.score(real, fake, num_bins=16, seed=2, correction="holm", cache=False)
    expected = result.to_dict(python=True)
    coverage = fastndb.prdc(real, fake, nearest_k=5, num_samples=10_000, seed=2)
    decided = verdict(result, coverage).to_dict(python=True)
    decided.pop("missing")
    for real_arg, fake_arg in [("real.npy", "fake.npy"), ("both.npz:real", "both.npz:fake"), ("real.pt", "fake.pt:fake")]:
        out = run("score", real_arg, fake_arg, "--num-bins", "16", "--seed", "2", "--correction", "holm", "--json",
                  cwd=root)
        assert out.returncode == 0, out.stderr
        payload = json.loads(out.stdout)
        prdc = payload.pop("prdc")
        assert payload.pop("verdict") == decided  # the verdict the report and the monitor read
        assert payload == expected
        assert {k: prdc[k] for k in coverage.scores()} == coverage.scores()
        assert tuple(prdc["coverage_interval"]) == coverage.coverage_interval
        assert prdc["expected_null_coverage"] == coverage.expected_null_coverage and prdc["nearest_k"] == 5


def test_score_prints_the_coverage_metrics_and_can_skip_them(files):
    root, real, fake, _ = files
    out = run("score", "real.npy", "fake.npy", "--num-bins", "16", "--nearest-k", "3", "--prdc-samples", "500",
              cwd=root)
    expected = fastndb.prdc(real, fake, nearest_k=3, num_samples=500)
    assert out.returncode == 0, out.stderr
    low, high = expected.precision_interval
    assert f"precision {expected.precision:.3f} ({low:.3f}-{high:.3f}), recall {expected.recall:.3f}" in out.stdout
    assert "k = 3, on 500 real and 500 fake samples" in out.stdout and "coverage about" in out.stdout
    skipped = run("score", "real.npy", "fake.npy", "--num-bins", "16", "--prdc-samples", "0", "--json", cwd=root)
    assert "prdc" not in json.loads(skipped.stdout)


def test_score_summary_plot_and_cache(files, tmp_path):
    root, *_ = files
    cache = tmp_path / "cache"
    first = run("score", "real.npy", "fake.npy", "--num-bins", "16", "--plot", str(tmp_path / "bins.png"),
                "--cache", str(cache), "--quiet", cwd=root)
    assert first.returncode == 0, first.stderr
    assert "NDB = " in first.stdout and "expected by chance 0.80" in first.stdout and "saved to" in first.stdout
    _png_ok(tmp_path / "bins.png")
    entries = list(cache.iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("bins-")  # no temporary file left behind
    second = run("score", "real.npy", "fake.npy", "--num-bins", "16", "--cache", str(cache), cwd=root)
    assert "loaded from" in second.stdout and second.stdout.splitlines()[0] == first.stdout.splitlines()[0]
    other_seed = run("score", "real.npy", "fake.npy", "--num-bins", "16", "--seed", "1", "--cache", str(cache),
                     cwd=root)
    assert "saved to" in other_seed.stdout  # options are part of the key
    changed = np.load(root / "real.npy")
    changed[0, 0] += 1.0
    np.save(tmp_path / "real.npy", changed)  # same file name, new content: never a stale hit
    renamed = run("score", str(tmp_path / "real.npy"), "fake.npy", "--num-bins", "16", "--cache", str(cache),
                  cwd=root)
    assert "saved to" in renamed.stdout and len(list(cache.iterdir())) == 3
    entries[0].write_bytes(b"garbage")  # a corrupt entry is a miss with a warning, never a crash
    corrupt = run("score", "real.npy", "fake.npy", "--num-bins", "16", "--cache", str(cache), cwd=root)
    assert corrupt.returncode == 0 and "saved to" in corrupt.stdout


def test_image_folder_equals_the_same_images_as_an_array(files, tmp_path):
    root, _, _, images = files
    order = sorted(range(60), key=lambda i: (f"sub/{i:03d}.png" if i % 2 else f"{i:03d}.png"))
    as_array = images[order].transpose(0, 3, 1, 2)  # the folder is read in sorted path order, as (N, C, H, W)
    np.save(tmp_path / "images.npy", as_array)
    from_folder = run("birthday", str(root / "images"), "--num-pairs", "3", "--threshold", "0", "--json",
                      "--grid", str(tmp_path / "pairs.png"))
    from_array = run("birthday", str(tmp_path / "images.npy"), "--num-pairs", "3", "--threshold", "0", "--json")
    assert from_folder.returncode == 0, from_folder.stderr
    assert json.loads(from_folder.stdout) == json.loads(from_array.stdout)
    result = json.loads(from_folder.stdout)
    assert result["num_duplicates"] == 1 and result["distances"][0] == 0.0
    _png_ok(tmp_path / "pairs.png")
    grey = run("birthday", str(root / "images"), "--channels", "1", "--image-size", "4", "4", "--json")
    assert grey.returncode == 0 and json.loads(grey.stdout)["num_samples"] == 60


def test_birthday_threshold_from_real_and_elbow(files, tmp_path):
    root, real, fake, _ = files
    out = run("birthday", "fake.npy", "--threshold-from", "real.npy", "--json", cwd=root)
    threshold = fastndb.duplicate_threshold(real, num_samples=fake.shape[0])
    expected = fastndb.birthday(fake, threshold=threshold).to_dict(python=True)
    got = json.loads(out.stdout)
    assert got["threshold"] == expected["threshold"] and got["num_duplicates"] == expected["num_duplicates"]
    elbow = run("elbow", "real.npy", "--ks", "2,4,6,12,24", "--plot", str(tmp_path / "elbow.png"), "--json",
                cwd=root)
    assert elbow.returncode == 0, elbow.stderr
    from fastndb._core.elbow import elbow as elbow_api

    assert json.loads(elbow.stdout) == elbow_api(real, [2, 4, 6, 12, 24]).to_dict()
    _png_ok(tmp_path / "elbow.png")


@pytest.mark.parametrize("argv, message", [
    (["score", "missing.npy", "fake.npy"], "missing.npy: no such file or folder"),
    (["score", "real.npy", "notes.txt"], "notes.txt: expected an image folder or a .npy"),
    (["score", "real.npy", "both.npz"], "holds arrays ['real', 'fake']; name one as both.npz:NAME"),
    (["score", "real.npy", "both.npz:nope"], "no array named 'nope'"),
    (["score", "real.npy", "small.npy"], "small.npy: samples of shape (10,), but real.npy's are (48,)"),
    (["score", "real.npy", "fake.npy", "--num-bins", "5000"], "need at least 10000 real samples, or fewer bins"),
    (["score", "real.npy", "images"], "images: samples of shape (3, 8, 8), but real.npy's are (48,)"),
    (["score", "mixed", "fake.npy"], "mixed image sizes"),
    (["score", "broken", "fake.npy"], "not a readable image"),
    (["score", "empty", "fake.npy"], "expected image files"),
    (["birthday", "fake.npy", "--threshold", "1", "--threshold-from", "real.npy"], "exclude each other"),
    (["birthday", "fake.npy", "--grid", "x.png", "--grid-shape", "5", "5"], "--grid-shape: expected (C, H, W)"),
    (["birthday", "small.npy", "--grid", "x.png"], "--grid-shape: samples have 10 features"),
    (["elbow", "real.npy", "--ks", "1,x"], "--ks: expected comma-separated integers"),
    (["score", "real.npy", "fake.npy", "--device", "cuda"] if not torch.cuda.is_available() else ["elbow", "real.npy", "--ks", "2,3"],
     "--device cuda: no CUDA device here" if not torch.cuda.is_available() else "ks: expected at least 3"),
])
def test_errors_are_one_line_with_a_nonzero_exit(files, argv, message, capsys, monkeypatch):
    """In-process through cli.main (the same code the console script runs), for speed; the subprocess tests
    below check the real process boundary."""
    from fastndb import cli

    root, *_ = files
    monkeypatch.chdir(root)
    (root / "notes.txt").write_text("hello")
    np.save(root / "small.npy", np.arange(100, dtype=np.float32).reshape(10, 10))
    for name, sizes in {"mixed": [(8, 8), (9, 8)], "broken": [], "empty": []}.items():
        (root / name).mkdir(exist_ok=True)
        for i, size in enumerate(sizes):
            PIL_Image.new("L", size).save(root / name / f"{i}.png")
    (root / "broken" / "bad.png").write_bytes(b"not a png")
    code = cli.main([*argv, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastndb: error: ") and message in lines[0], err


def test_process_exit_codes_bad_options_and_debug(files):
    root, *_ = files
    missing = run("score", "missing.npy", "fake.npy", cwd=root)
    assert missing.returncode == 1 and missing.stderr.strip() == "fastndb: error: missing.npy: no such file or folder"
    bad = run("score", "real.npy", "fake.npy", "--alpha", "2", cwd=root)  # validated by the options model, once
    assert bad.returncode == 1 and bad.stderr.strip() == "fastndb: error: alpha: expected a number in (0, 1), got 2.0"
    malformed = run("score", "real.npy", "fake.npy", "--alpha", "two", cwd=root)  # argparse's own rejection
    assert malformed.returncode == 2 and "invalid float value: 'two'" in malformed.stderr
    debug = run("score", "missing.npy", "fake.npy", "--debug", cwd=root)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


def test_every_option_with_a_default_shows_it_in_help():
    import argparse

    from fastndb.cli import build_parser

    missing = []
    for name, sub in build_parser()._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)):
                continue
            if action.default not in (None, False) and "default" not in (action.help or ""):
                missing.append(f"{name} {action.option_strings[0]}")
    assert not missing, missing


def test_warnings_print_as_one_line(tmp_path):
    real, fake = gaussian_mixture(300, 4, seed=0), gaussian_mixture(200, 4, seed=1)
    np.save(tmp_path / "real.npy", real)
    np.save(tmp_path / "fake.npy", fake)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    out = subprocess.run([sys.executable, "-m", "fastndb", "score", "real.npy", "fake.npy", "--prdc-samples", "0",
                          "--num-bins", "100"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines and all(line.startswith("fastndb: warning: ") for line in lines), out.stderr  # K=100 on 150


def test_the_default_k_comes_from_the_number_of_real_samples(files):
    root, real, fake, _ = files
    out = run("score", "real.npy", "fake.npy", "--json", "--prdc-samples", "0", cwd=root)
    assert json.loads(out.stdout)["num_bins"] == 2000 // 40  # min(100, N/40) for N = 2000 real samples


def test_birthday_lists_file_names_for_an_image_folder(files):
    root, *_ = files
    out = run("birthday", "images", "--num-pairs", "2", cwd=root)
    assert out.returncode == 0, out.stderr
    assert ".png" in out.stdout.splitlines()[1]
