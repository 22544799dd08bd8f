"""Named references: stored bins score exactly as freshly fitted ones; versioned, atomic, refuse other features."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import fastndb
from fastndb._core import references
from tests.conftest import mixture


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNDB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _net() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 8), nn.Tanh())


def _data():
    real = torch.from_numpy(mixture(2000, 16, seed=0)).float()
    fake = torch.from_numpy(mixture(800, 16, seed=1, keep_modes=6)).float()
    return real, fake


def test_a_stored_reference_scores_as_the_bins_it_was_fitted_with(home):
    real, fake = _data()
    ref = fastndb.save_reference("mix", real, num_bins=10, seed=3, feature=_net())
    assert ref.path == home / "references" / "mix.pt" and ref.num_real == 2000 and ref.feature.startswith("torch.nn")
    expected = fastndb.score(real, fake, num_bins=10, seed=3, feature=_net(), cache=False)
    loaded = fastndb.load_reference("mix")
    got = fastndb.score(loaded, fake, feature=_net(), alpha=0.05)
    assert torch.equal(got.fake_counts, expected.fake_counts) and torch.equal(got.p_values, expected.p_values)
    assert torch.equal(loaded.bins.centroids, ref.bins.centroids)
    assert [r.name for r in fastndb.list_references()] == ["mix"]
    holm = loaded.score(fake, feature=_net(), correction="holm")
    assert holm.correction == "holm"


def test_a_reference_refuses_other_features_and_bin_options():
    real, fake = _data()
    fastndb.save_reference("mix", real, num_bins=6, feature=_net())
    ref = fastndb.load_reference("mix")
    with pytest.raises(ValueError, match=r"feature: reference 'mix' was fitted on the features of torch.nn.*; pass that "
                                         r"module as feature="):
        fastndb.score(ref, fake)
    other = _net()
    with torch.no_grad():
        other[0].bias += 1  # other weights: another feature space
    with pytest.raises(ValueError, match=r"feature: reference 'mix' was fitted on .*@.*, but this call's features are"):
        fastndb.score(ref, fake, feature=other)
    with pytest.raises(ValueError, match=r"num_bins: reference 'mix' was fitted with its own bin options \(num_bins=6\)"):
        fastndb.score(ref, fake, feature=_net(), num_bins=4)
    raw = fastndb.save_reference("raw", real, num_bins=6)
    with pytest.raises(ValueError, match=r"fitted on raw values \(feature=None\), but this call's features are torch"):
        raw.score(fake, feature=_net())


def test_named_extractors_are_reloaded_by_name():
    from fastndb.demo.runner import load_digits_tensor

    x, _ = load_digits_tensor()
    images = x.reshape(-1, 1, 8, 8)
    ref = fastndb.save_reference("digits", images[:1200], num_bins=8, feature="digits")
    assert ref.feature.startswith("digits@")
    result = fastndb.score(fastndb.load_reference("digits"), images[1200:])  # the digits network, by its name
    expected = fastndb.score(images[:1200], images[1200:], num_bins=8, feature="digits", cache=False)
    assert torch.equal(result.fake_counts, expected.fake_counts)


def test_names_versions_damage_and_overwrite(home):
    real, _ = _data()
    for bad in ("", "../up", ".hidden", "a b", "x" * 200):
        with pytest.raises(ValueError, match="name: expected letters, digits"):
            fastndb.save_reference(bad, real, num_bins=4)
    with pytest.raises(TypeError, match="name: expected a string"):
        fastndb.load_reference(3)
    fastndb.save_reference("r", real, num_bins=4)
    with pytest.raises(FileExistsError, match=r"reference 'r' exists .*overwrite=True"):
        fastndb.save_reference("r", real, num_bins=5)
    assert fastndb.save_reference("r", real, num_bins=5, overwrite=True).bins.num_bins == 5
    with pytest.raises(TypeError, match="test option"):
        fastndb.save_reference("s", real, num_bins=4, alpha=0.01)
    with pytest.raises(ValueError, match="has no weights to identify it by"):
        fastndb.save_reference("s", real, num_bins=4, feature=lambda x: x)
    assert not (home / "references" / "s.pt").exists()  # refused before fitting: nothing written
    path = home / "references" / "r.pt"
    entry = torch.load(path, weights_only=True)
    torch.save({**entry, "version": 99}, path)
    with pytest.raises(ValueError, match="has format version 99, this fastndb reads version 1"):
        fastndb.load_reference("r")
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"reference 'r' \(.*\): cannot be read"):
        fastndb.load_reference("r")
    assert fastndb.list_references() == []  # unreadable files are skipped
    with pytest.raises(FileNotFoundError, match=r"reference 'nope': not found .*references there: r"):
        fastndb.load_reference("nope")
    assert fastndb.remove_reference("r") == path and not path.exists()
    with pytest.raises(FileNotFoundError, match="not found"):
        fastndb.remove_reference("r")
    assert not list((home / "references").glob(".*.tmp"))  # atomic writes leave no temporary file


def _cli(*argv: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "FASTNDB_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "fastndb", *argv], capture_output=True, text=True, env=env,
                          timeout=300)


def test_the_command_line_fits_lists_scores_and_removes(tmp_path, home):
    real, fake = mixture(2000, 16, seed=0), mixture(800, 16, seed=1, keep_modes=6)
    np.save(tmp_path / "real.npy", real)
    np.save(tmp_path / "fake.npy", fake)
    fit = _cli("fit", str(tmp_path / "real.npy"), "--name", "mix", "--num-bins", "10", "--seed", "2", "--json",
               home=home)
    assert fit.returncode == 0, fit.stderr
    assert json.loads(fit.stdout)["num_bins"] == 10
    listed = _cli("refs", home=home)
    assert "mix" in listed.stdout and "raw values" in listed.stdout
    scored = _cli("score", "mix", str(tmp_path / "fake.npy"), "--json", "--alpha", "0.01", home=home)
    assert scored.returncode == 0, scored.stderr
    expected = fastndb.score(torch.from_numpy(real), torch.from_numpy(fake), num_bins=10, seed=2, alpha=0.01,
                             cache=False)
    assert json.loads(scored.stdout)["fake_counts"] == expected.fake_counts.tolist()
    refused = _cli("score", "mix", str(tmp_path / "fake.npy"), "--num-bins", "5", home=home)
    assert refused.returncode == 1 and "--num-bins: reference 'mix' was fitted with its own bin options" in refused.stderr
    again = _cli("fit", str(tmp_path / "real.npy"), "--name", "mix", home=home)
    assert again.returncode == 1 and "exists" in again.stderr and "--overwrite" in again.stderr
    removed = _cli("refs", "--remove", "mix", home=home)
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert "no references" in _cli("refs", home=home).stdout


def test_the_command_line_scores_in_the_digits_feature_space(tmp_path, home):
    from fastndb.demo.runner import load_digits_tensor

    x, _ = load_digits_tensor()
    images = x.reshape(-1, 1, 8, 8).numpy()
    np.save(tmp_path / "real.npy", images[:1200])
    np.save(tmp_path / "fake.npy", images[1200:])
    done = _cli("score", str(tmp_path / "real.npy"), str(tmp_path / "fake.npy"), "--features", "digits",
                "--num-bins", "8", "--json", home=home)
    assert done.returncode == 0, done.stderr
    expected = fastndb.score(torch.from_numpy(images[:1200]), torch.from_numpy(images[1200:]), num_bins=8,
                             feature="digits", cache=False)
    assert json.loads(done.stdout)["fake_counts"] == expected.fake_counts.tolist()
    cached = _cli("score", str(tmp_path / "real.npy"), str(tmp_path / "fake.npy"), "--features", "digits",
                  "--num-bins", "8", "--cache", str(tmp_path / "c"), home=home)
    assert cached.returncode == 0 and "features digits@" in cached.stdout
    raw = _cli("score", str(tmp_path / "real.npy"), str(tmp_path / "fake.npy"), "--num-bins", "8", "--cache",
               str(tmp_path / "c"), home=home)
    assert "fitted, saved" in raw.stdout  # another feature space: another disk entry, not the digits one
    birthday = _cli("birthday", str(tmp_path / "fake.npy"), "--features", "digits", "--threshold", "0", home=home)
    assert birthday.returncode == 0 and "duplicates:" in birthday.stdout
    offline = _cli("score", str(tmp_path / "real.npy"), str(tmp_path / "fake.npy"), "--features", "inception",
                   home=home)
    assert offline.returncode == 1 and offline.stderr.count("\n") == 1 and "inception" in offline.stderr
    weights = _cli("score", str(tmp_path / "real.npy"), str(tmp_path / "fake.npy"), "--weights", "w.pt", home=home)
    assert weights.returncode == 1 and "--weights: give --features NAME too" in weights.stderr
    assert references.reference_dir() == home / "references"


# ------------------------------------------------------------ what a reference records, and files that lie (#25, #26)
def _rewrite(path, change) -> None:
    entry = torch.load(path, weights_only=True)
    change(entry)
    torch.save(entry, path)


def test_a_reference_records_the_extractor_and_refuses_features_computed_otherwise(home):
    real, fake = _data()
    net = _net()
    ref = fastndb.save_reference("mix", real, num_bins=8, feature=net)
    record = ref.extractor
    assert record["identity"] == ref.feature and record["dtype"] == "torch.float32"
    assert record["versions"] == {"torch": str(torch.__version__)} and "module's own" in record["preprocessing"]
    with pytest.raises(ValueError, match=r"computed otherwise \(dtype: 'torch.float32' there, "
                                         r"'torch.float32 under autocast\(torch.bfloat16\)' here\)"):
        fastndb.score(fastndb.load_reference("mix"), fake, feature=fastndb.extractor(net, autocast=torch.bfloat16))
    _rewrite(ref.path, lambda e: e["extractor"].update(preprocessing="resized to 32 x 32"))
    with pytest.raises(ValueError, match=r"preprocessing: 'resized to 32 x 32' there, \"the module's own"):
        fastndb.score(fastndb.load_reference("mix"), fake, feature=net)
    _rewrite(ref.path, lambda e: e["extractor"].update(preprocessing=record["preprocessing"],
                                                        versions={"torch": "1.0.0"}))
    with pytest.warns(UserWarning, match=r"other package versions \(torch 1.0.0 there, .* here\)"):
        got = fastndb.score(fastndb.load_reference("mix"), fake, feature=net)
    assert got.ndb == fastndb.score(real, fake, num_bins=8, feature=net, cache=False).ndb
    named = fastndb.save_reference("digits8", torch.rand(400, 64), num_bins=4, feature="digits")
    assert named.extractor["preprocessing"].startswith("grey") and named.extractor["identity"].startswith("digits@")


@pytest.mark.parametrize("damage, message", [
    (lambda e: e["bins"]["centroids"].__setitem__((0, 0), float("nan")), r"centroids: expected finite values"),
    (lambda e: e["bins"].pop("real_counts"), r"missing real_counts"),
    (lambda e: e.pop("options"), r"missing options"),
    (lambda e: e["bins"].update(real_counts=e["bins"]["real_counts"][:-1]), r"real_counts: expected 6 counts"),
    (lambda e: e["bins"].update(centroids=torch.randn(6, 17)), r"centroids: expected \(K, 16\) centres"),
    (lambda e: e["bins"].update(real_counts=e["bins"]["real_counts"] * 2), r"real_counts: expected non-negative counts adding up to num_reference"),
    (lambda e: e["bins"]["feature_map"].update(scale=torch.zeros(16)), r"feature_map.scale: expected positive"),
    (lambda e: e.update(num_real="many"), r"num_real: expected an integer"),
])
def test_a_damaged_reference_is_refused_naming_the_file_and_the_field(home, damage, message):
    real, fake = _data()
    ref = fastndb.save_reference("mix", real, num_bins=6, whitening=True)
    _rewrite(ref.path, damage)
    with pytest.raises(ValueError, match=r"reference 'mix' \(.*mix.pt\): " + message):
        fastndb.load_reference("mix")
    fastndb.save_reference("good", real, num_bins=6)
    assert [r.name for r in fastndb.list_references()] == ["good"]  # the damaged one is skipped
    listed = subprocess.run([sys.executable, "-m", "fastndb", "refs", "--json"], capture_output=True, text=True,
                            env={**os.environ, "FASTNDB_HOME": str(home)}, timeout=120)
    assert listed.returncode == 0 and [r["name"] for r in json.loads(listed.stdout)["references"]] == ["good"]


def test_a_damaged_cache_entry_is_refitted_not_used(tmp_path):
    real, fake = _data()
    np.save(tmp_path / "real.npy", real.numpy())
    np.save(tmp_path / "fake.npy", fake.numpy())

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fastndb", "score", "real.npy", "fake.npy", "--num-bins", "8",
                               "--prdc-samples", "0", "--cache", "bins", "--json"], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)

    first = run()
    assert first.returncode == 0, first.stderr
    (entry,) = (tmp_path / "bins").glob("bins-*.pt")
    _rewrite(entry, lambda e: e["bins"]["centroids"].fill_(float("nan")))
    again = run()
    assert again.returncode == 0 and "centroids: expected finite values" in again.stderr, again.stderr
    assert json.loads(again.stdout)["ndb"] == json.loads(first.stdout)["ndb"]
